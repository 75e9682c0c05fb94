//go:build goexperiment.simd && amd64

package train

import "simd/archsimd"

// hasAVX2 selects the 8-lane AdamW loops (built with GOEXPERIMENT=simd),
// hasAVX512 (below) the 16-lane ones.
var hasAVX2 = archsimd.X86.AVX2()

// updateVec runs update (f nil) or updateFactor on the longest prefix of
// p that is a multiple of 16 values (AVX-512) or 8 (AVX2), that many at a
// time, with the same float32 operations in the same order (so the same
// rounding) as the scalar loop, and returns its length. Sixteen lanes took
// BenchmarkAdamW's passes 7 % less time than eight on a Xeon with AMX.
func (k *adamConsts) updateVec(p, g, m, v, f []float32, scale float32) int {
	switch {
	case hasAVX512:
		return k.updateVec512(p, g, m, v, f, scale)
	case !hasAVX2:
		return 0
	}
	n := len(p) &^ 7
	g, m, v = g[:n], m[:n], v[:n]
	if f != nil {
		f = f[:n]
	}
	s := archsimd.BroadcastFloat32x8(scale)
	decay, b1, b2 := archsimd.BroadcastFloat32x8(k.decay), archsimd.BroadcastFloat32x8(k.b1), archsimd.BroadcastFloat32x8(k.b2)
	ob1, ob2 := archsimd.BroadcastFloat32x8(k.ob1), archsimd.BroadcastFloat32x8(k.ob2)
	bc2, eps, neg := archsimd.BroadcastFloat32x8(k.bc2Sqrt), archsimd.BroadcastFloat32x8(k.eps), archsimd.BroadcastFloat32x8(k.negStep)
	for i := 0; i < n; i += 8 {
		gi := archsimd.LoadFloat32x8Slice(g[i:]).Mul(s)
		if f != nil {
			gi = gi.Mul(archsimd.LoadFloat32x8Slice(f[i:]))
		}
		pi := archsimd.LoadFloat32x8Slice(p[i:]).Mul(decay)
		mi := archsimd.LoadFloat32x8Slice(m[i:]).Mul(b1).Add(gi.Mul(ob1))
		vi := archsimd.LoadFloat32x8Slice(v[i:]).Mul(b2).Add(gi.Mul(gi).Mul(ob2))
		denom := vi.Sqrt().Div(bc2).Add(eps)
		pi.Add(neg.Mul(mi.Div(denom))).StoreSlice(p[i:])
		mi.StoreSlice(m[i:])
		vi.StoreSlice(v[i:])
	}
	return n
}

// updateVec512 is updateVec's loop in AVX-512's sixteen lanes.
func (k *adamConsts) updateVec512(p, g, m, v, f []float32, scale float32) int {
	n := len(p) &^ 15
	g, m, v = g[:n], m[:n], v[:n]
	if f != nil {
		f = f[:n]
	}
	s := archsimd.BroadcastFloat32x16(scale)
	decay, b1, b2 := archsimd.BroadcastFloat32x16(k.decay), archsimd.BroadcastFloat32x16(k.b1), archsimd.BroadcastFloat32x16(k.b2)
	ob1, ob2 := archsimd.BroadcastFloat32x16(k.ob1), archsimd.BroadcastFloat32x16(k.ob2)
	bc2, eps, neg := archsimd.BroadcastFloat32x16(k.bc2Sqrt), archsimd.BroadcastFloat32x16(k.eps), archsimd.BroadcastFloat32x16(k.negStep)
	for i := 0; i < n; i += 16 {
		gi := archsimd.LoadFloat32x16Slice(g[i:]).Mul(s)
		if f != nil {
			gi = gi.Mul(archsimd.LoadFloat32x16Slice(f[i:]))
		}
		pi := archsimd.LoadFloat32x16Slice(p[i:]).Mul(decay)
		mi := archsimd.LoadFloat32x16Slice(m[i:]).Mul(b1).Add(gi.Mul(ob1))
		vi := archsimd.LoadFloat32x16Slice(v[i:]).Mul(b2).Add(gi.Mul(gi).Mul(ob2))
		denom := vi.Sqrt().Div(bc2).Add(eps)
		pi.Add(neg.Mul(mi.Div(denom))).StoreSlice(p[i:])
		mi.StoreSlice(m[i:])
		vi.StoreSlice(v[i:])
	}
	return n
}

// updateSelectVec runs updateSelect on the longest prefix of p that is a
// multiple of 16 values, sixteen at a time (AVX-512; 0 elsewhere): every
// value updated as updateVec does, the masked ones' old value and moments
// stored back. Run by run of kept columns (random masks make runs of one
// or two) BenchmarkAdamW's migu-update took 450 ms on a Xeon with AMX.
func (k *adamConsts) updateSelectVec(p, g, m, v, f []float32, scale float32) int {
	if !hasAVX512 {
		return 0
	}
	n := len(p) &^ 15
	g, m, v, f = g[:n], m[:n], v[:n], f[:n]
	s, zero := archsimd.BroadcastFloat32x16(scale), archsimd.BroadcastFloat32x16(0)
	decay, b1, b2 := archsimd.BroadcastFloat32x16(k.decay), archsimd.BroadcastFloat32x16(k.b1), archsimd.BroadcastFloat32x16(k.b2)
	ob1, ob2 := archsimd.BroadcastFloat32x16(k.ob1), archsimd.BroadcastFloat32x16(k.ob2)
	bc2, eps, neg := archsimd.BroadcastFloat32x16(k.bc2Sqrt), archsimd.BroadcastFloat32x16(k.eps), archsimd.BroadcastFloat32x16(k.negStep)
	for i := 0; i < n; i += 16 {
		kept := archsimd.LoadFloat32x16Slice(f[i:]).NotEqual(zero)
		gi := archsimd.LoadFloat32x16Slice(g[i:]).Mul(s)
		p0, m0, v0 := archsimd.LoadFloat32x16Slice(p[i:]), archsimd.LoadFloat32x16Slice(m[i:]), archsimd.LoadFloat32x16Slice(v[i:])
		mi := m0.Mul(b1).Add(gi.Mul(ob1))
		vi := v0.Mul(b2).Add(gi.Mul(gi).Mul(ob2))
		denom := vi.Sqrt().Div(bc2).Add(eps)
		p0.Mul(decay).Add(neg.Mul(mi.Div(denom))).Merge(p0, kept).StoreSlice(p[i:])
		mi.Merge(m0, kept).StoreSlice(m[i:])
		vi.Merge(v0, kept).StoreSlice(v[i:])
	}
	return n
}

// sumSquaresVec sums g[i]² in float64 over the longest prefix of g that
// is a multiple of 16 values, four at a time in four accumulators, and
// returns the sum and the prefix's length. A float32 value's square is
// exact in float64, so only the order of the sums differs from the scalar
// loop's.
func sumSquaresVec(g []float32) (float64, int) {
	if hasAVX512 {
		return sumSquaresVec512(g)
	}
	if !hasAVX2 {
		return 0, 0
	}
	n := len(g) &^ 15
	var s0, s1, s2, s3 archsimd.Float64x4
	for i := 0; i < n; i += 16 {
		a := archsimd.LoadFloat32x4Slice(g[i:]).ConvertToFloat64()
		b := archsimd.LoadFloat32x4Slice(g[i+4:]).ConvertToFloat64()
		c := archsimd.LoadFloat32x4Slice(g[i+8:]).ConvertToFloat64()
		d := archsimd.LoadFloat32x4Slice(g[i+12:]).ConvertToFloat64()
		s0, s1, s2, s3 = s0.Add(a.Mul(a)), s1.Add(b.Mul(b)), s2.Add(c.Mul(c)), s3.Add(d.Mul(d))
	}
	var lanes [4]float64
	s0.Add(s1).Add(s2.Add(s3)).Store(&lanes)
	return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]), n
}

// sumSquaresVec512 is sumSquaresVec with AVX-512's eight float64 lanes:
// 32 values at a time in four accumulators (a fused multiply-add adds the
// exact square, so the sums are those of a multiply and an add), over
// the longest prefix that is a multiple of 32. On a Xeon with AMX it cut
// what summing the norm adds to the AdamW pass (BenchmarkAdamW,
// step-norm against plain, the small llama's 26.5 M gradients) from
// 10.2 to 6.5 ms a step.
func sumSquaresVec512(g []float32) (float64, int) {
	n := len(g) &^ 31
	var s0, s1, s2, s3 archsimd.Float64x8
	for i := 0; i < n; i += 32 {
		a := archsimd.LoadFloat32x8Slice(g[i:]).ConvertToFloat64()
		b := archsimd.LoadFloat32x8Slice(g[i+8:]).ConvertToFloat64()
		c := archsimd.LoadFloat32x8Slice(g[i+16:]).ConvertToFloat64()
		d := archsimd.LoadFloat32x8Slice(g[i+24:]).ConvertToFloat64()
		s0, s1, s2, s3 = a.MulAdd(a, s0), b.MulAdd(b, s1), c.MulAdd(c, s2), d.MulAdd(d, s3)
	}
	var lanes [8]float64
	s0.Add(s1).Add(s2.Add(s3)).Store(&lanes)
	return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])), n
}

// sumSquaresVec4 is sumSquaresVec over four slices at once, for GradNorm:
// one stream per core read at about 10 GB/s on a Xeon with AMX, four
// interleaved at about 15 (BenchmarkAdamW/grad-norm, 26.5 M gradients on
// two cores: 5.5 → 3.6 ms). Each slice's sum is
// sumSquaresVec512's, bit for bit (its accumulators take its values in
// the same order), and done its prefix's length; without AVX-512 each
// slice goes to sumSquaresVec.
func sumSquaresVec4(g *[4][]float32) (sums [4]float64, done [4]int) {
	if !hasAVX512 {
		for k := range g {
			sums[k], done[k] = sumSquaresVec(g[k])
		}
		return sums, done
	}
	n := len(g[0])
	for _, x := range g[1:] {
		n = min(n, len(x))
	}
	n &^= 31
	var acc [4]squares
	a, b, c, d := g[0][:n], g[1][:n], g[2][:n], g[3][:n]
	for i := 0; i < n; i += 32 {
		acc[0].add(a[i:])
		acc[1].add(b[i:])
		acc[2].add(c[i:])
		acc[3].add(d[i:])
	}
	for k := range g {
		end := len(g[k]) &^ 31
		for i := n; i < end; i += 32 {
			acc[k].add(g[k][i:])
		}
		sums[k], done[k] = acc[k].sum(), end
	}
	return sums, done
}

// add adds the squares of g[0:32] as sumSquaresVec512's loop does.
func (s *squares) add(g []float32) {
	w := archsimd.LoadFloat32x8Slice(g).ConvertToFloat64()
	s[0] = w.MulAdd(w, s[0])
	w = archsimd.LoadFloat32x8Slice(g[8:]).ConvertToFloat64()
	s[1] = w.MulAdd(w, s[1])
	w = archsimd.LoadFloat32x8Slice(g[16:]).ConvertToFloat64()
	s[2] = w.MulAdd(w, s[2])
	w = archsimd.LoadFloat32x8Slice(g[24:]).ConvertToFloat64()
	s[3] = w.MulAdd(w, s[3])
}

// addScaledVec runs addScaled's loop on the longest prefix of dst that
// is a multiple of 16 values (AVX-512) or 8 (AVX2), and returns its
// length: dst += src·scale, or dst *= scale with src nil.
func addScaledVec(dst, src []float32, scale float32) int {
	switch {
	case hasAVX512:
		n := len(dst) &^ 15
		s := archsimd.BroadcastFloat32x16(scale)
		for i := 0; i < n; i += 16 {
			d := archsimd.LoadFloat32x16Slice(dst[i:])
			if src == nil {
				d.Mul(s).StoreSlice(dst[i:])
			} else {
				d.Add(archsimd.LoadFloat32x16Slice(src[i:]).Mul(s)).StoreSlice(dst[i:])
			}
		}
		return n
	case hasAVX2:
		n := len(dst) &^ 7
		s := archsimd.BroadcastFloat32x8(scale)
		for i := 0; i < n; i += 8 {
			d := archsimd.LoadFloat32x8Slice(dst[i:])
			if src == nil {
				d.Mul(s).StoreSlice(dst[i:])
			} else {
				d.Add(archsimd.LoadFloat32x8Slice(src[i:]).Mul(s)).StoreSlice(dst[i:])
			}
		}
		return n
	}
	return 0
}

// normVec tells whether updateNormVec runs (AdamW.chunk sums the norm in
// its update pass).
var normVec = hasAVX512

// squares holds the running sums of sumSquaresVec512's four accumulators,
// so that a pass that updates a chunk row by row (updateNormVec) sums the
// gradient's squares in the order one sumSquares over the chunk would.
type squares [4]archsimd.Float64x8

// sum is sumSquaresVec512's reduction of its accumulators.
func (s *squares) sum() float64 {
	var lanes [8]float64
	s[0].Add(s[1]).Add(s[2].Add(s[3])).Store(&lanes)
	return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
}

// updateNormVec is update (scale 1) with each value's gradient also
// multiplied by f[j] where f is not nil (updateFactor), that adds the
// squares of the gradient (before f) to sq as sumSquaresVec512 does, over
// the longest prefix of p that is a multiple of 32 values, and returns
// its length; 0 without AVX-512. One pass reads the four streams at once:
// summing the norm first, over the gradient alone, then updating from
// cache took about 30 % longer than the update alone (BenchmarkAdamW).
func (k *adamConsts) updateNormVec(p, g, m, v, f []float32, sq *squares) int {
	if !hasAVX512 {
		return 0
	}
	n := len(p) &^ 31
	g, m, v = g[:n], m[:n], v[:n]
	if f != nil {
		f = f[:n]
	}
	decay, b1, b2 := archsimd.BroadcastFloat32x16(k.decay), archsimd.BroadcastFloat32x16(k.b1), archsimd.BroadcastFloat32x16(k.b2)
	ob1, ob2 := archsimd.BroadcastFloat32x16(k.ob1), archsimd.BroadcastFloat32x16(k.ob2)
	bc2, eps, neg := archsimd.BroadcastFloat32x16(k.bc2Sqrt), archsimd.BroadcastFloat32x16(k.eps), archsimd.BroadcastFloat32x16(k.negStep)
	s0, s1, s2, s3 := sq[0], sq[1], sq[2], sq[3]
	for i := 0; i < n; i += 32 {
		// The squares of values i…i+7, i+8…, i+16…, i+24… go to s0…s3,
		// as in sumSquaresVec512.
		g0 := archsimd.LoadFloat32x16Slice(g[i:])
		w := g0.GetLo().ConvertToFloat64()
		s0 = w.MulAdd(w, s0)
		w = g0.GetHi().ConvertToFloat64()
		s1 = w.MulAdd(w, s1)
		g1 := archsimd.LoadFloat32x16Slice(g[i+16:])
		w = g1.GetLo().ConvertToFloat64()
		s2 = w.MulAdd(w, s2)
		w = g1.GetHi().ConvertToFloat64()
		s3 = w.MulAdd(w, s3)
		if f != nil {
			g0 = g0.Mul(archsimd.LoadFloat32x16Slice(f[i:]))
			g1 = g1.Mul(archsimd.LoadFloat32x16Slice(f[i+16:]))
		}
		// The two updates written out: a loop over the gradients made
		// BenchmarkAdamW's step-norm 3-5 % slower (8 lanes), a helper
		// taking the constants in a struct (inlined, but reading them
		// from memory) 13 %.
		p0 := archsimd.LoadFloat32x16Slice(p[i:]).Mul(decay)
		m0 := archsimd.LoadFloat32x16Slice(m[i:]).Mul(b1).Add(g0.Mul(ob1))
		v0 := archsimd.LoadFloat32x16Slice(v[i:]).Mul(b2).Add(g0.Mul(g0).Mul(ob2))
		p0.Add(neg.Mul(m0.Div(v0.Sqrt().Div(bc2).Add(eps)))).StoreSlice(p[i:])
		m0.StoreSlice(m[i:])
		v0.StoreSlice(v[i:])
		p1 := archsimd.LoadFloat32x16Slice(p[i+16:]).Mul(decay)
		m1 := archsimd.LoadFloat32x16Slice(m[i+16:]).Mul(b1).Add(g1.Mul(ob1))
		v1 := archsimd.LoadFloat32x16Slice(v[i+16:]).Mul(b2).Add(g1.Mul(g1).Mul(ob2))
		p1.Add(neg.Mul(m1.Div(v1.Sqrt().Div(bc2).Add(eps)))).StoreSlice(p[i+16:])
		m1.StoreSlice(m[i+16:])
		v1.StoreSlice(v[i+16:])
	}
	sq[0], sq[1], sq[2], sq[3] = s0, s1, s2, s3
	return n
}

// hasAVX512 selects the 16-lane bfloat16 rounding (roundBF16Vec), which
// narrows with AVX-512's VPMOVDW; the CPUs whose bf16 products round
// once (AMX, Zen 4) all have AVX-512.
var hasAVX512 = archsimd.X86.AVX512()

// roundBF16Vec runs roundBF16 on the longest prefix of src that is a
// multiple of 16 values, sixteen at a time, and returns its length: the
// same integer rounding as half.F32ToBF16.
func roundBF16Vec(dst []uint16, src []float32) int {
	if !hasAVX512 {
		return 0
	}
	n := len(src) &^ 15
	dst = dst[:n]
	bias, one := archsimd.BroadcastUint32x16(0x7fff), archsimd.BroadcastUint32x16(1)
	abs, inf, quiet := archsimd.BroadcastUint32x16(0x7fffffff), archsimd.BroadcastUint32x16(0x7f800000), archsimd.BroadcastUint32x16(0x40)
	// Shifts by a vector of counts: ShiftAllRight(16) moved its count into
	// an XMM register with a legacy SSE instruction on every iteration,
	// which made the loop 55 times slower on a Xeon with AMX.
	sixteen := archsimd.BroadcastUint32x16(16)
	for i := 0; i < n; i += 16 {
		b := archsimd.LoadFloat32x16Slice(src[i:]).AsUint32x16()
		high := b.ShiftRight(sixteen)
		r := b.Add(bias).Add(high.And(one)).ShiftRight(sixteen)
		r = high.Or(quiet).Merge(r, b.And(abs).Greater(inf))
		r.TruncateToUint16().StoreSlice(dst[i:])
	}
	return n
}

// VectorizedAdamW reports whether AdamW runs its vector loops (a build
// with GOEXPERIMENT=simd on an AVX2 machine: 8 lanes, 16 with AVX-512),
// for benchmark reports.
func VectorizedAdamW() bool { return hasAVX2 }
