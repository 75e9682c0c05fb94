package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/migu"
)

// The AdamW loops (vector ones when built with GOEXPERIMENT=simd: 16
// lanes with AVX-512, else 8) give
// bit for bit what PyTorch's order of float32 operations gives, written
// out here one value at a time, with and without a column factor, for
// lengths that leave a tail.
func TestAdamWLoopsMatchScalarFormula(t *testing.T) {
	k := adamConsts{decay: 0.999, negStep: -1.3e-3, bc2Sqrt: 0.0447, eps: 1e-8, b1: 0.9, b2: 0.999, ob1: 0.1, ob2: 0.001}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 33, 64, 1003} {
		for _, withFactor := range []bool{false, true} {
			p, g, m, v, f := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range p {
				p[i], g[i], m[i] = rng.Float32()-0.5, (rng.Float32()-0.5)*1e-2, (rng.Float32()-0.5)*1e-3
				v[i] = rng.Float32() * 1e-5
				if rng.IntN(3) > 0 {
					f[i] = 1
				}
			}
			const scale = 0.75
			wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
			for i := range wp {
				gi := g[i] * scale
				if withFactor {
					gi *= f[i]
				}
				pi := wp[i] * k.decay
				mi := wm[i]*k.b1 + gi*k.ob1
				vi := wv[i]*k.b2 + gi*gi*k.ob2
				denom := float32(math.Sqrt(float64(vi)))/k.bc2Sqrt + k.eps
				wp[i], wm[i], wv[i] = pi+k.negStep*(mi/denom), mi, vi
			}
			if withFactor {
				k.updateFactor(p, g, m, v, f, scale)
			} else {
				k.update(p, g, m, v, scale)
			}
			for i := range p {
				if p[i] != wp[i] || m[i] != wm[i] || v[i] != wv[i] {
					t.Fatalf("n %d factor %v, value %d: got (%v %v %v), want (%v %v %v)", n, withFactor, i, p[i], m[i], v[i], wp[i], wm[i], wv[i])
				}
			}
		}
	}
}

// A vector masked as one row of columns (DoRA's magnitude): in update mode
// its masked elements do not move; in grad mode they move only by weight
// decay on the first step (zero gradient, zero momentum); kept elements
// move as unmasked ones do.
func TestAdamWMasksVectors(t *testing.T) {
	keepFeatures := []bool{true, false, true, false}
	for _, c := range []struct {
		mode   migu.Mode
		masked func(v0 float32) float32
	}{
		{migu.ModeUpdate, func(v0 float32) float32 { return v0 }},
		{migu.ModeGrad, func(v0 float32) float32 { return v0 * float32(1-0.1*0.5) }},
	} {
		opt, err := NewAdamW(AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		newTensor := func() *Tensor {
			return &Tensor{Name: "m", Shape: []int64{4}, Value: []float32{1, 2, 3, 4}, Grad: []float32{0.5, -0.5, 0.25, 1},
				M: make([]float32, 4), V: make([]float32, 4)}
		}
		masked, plain := newTensor(), newTensor()
		opt.Step([]*Tensor{masked}, 0.1, map[*Tensor]*migu.Keep{masked: {Features: keepFeatures, Axis: 1, Rows: 1, Cols: 4}}, c.mode)
		ref, _ := NewAdamW(AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.5})
		ref.Step([]*Tensor{plain}, 0.1, nil, migu.ModeNone)
		for j, keep := range keepFeatures {
			want := plain.Value[j]
			if !keep {
				want = c.masked(float32(j + 1))
			}
			if masked.Value[j] != want {
				t.Errorf("%s mode, element %d (kept %v): %v, want %v", c.mode, j, keep, masked.Value[j], want)
			}
		}
	}
}

// In update mode by column, over rows wide enough for the vector loops
// and with tails: a kept column's values and moments are bit for bit
// those of an unmasked step, a masked column's do not change, over three
// steps (nonzero moments).
func TestAdamWUpdateModeByColumn(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, cols := range []int{16, 37, 512} {
		rows := 5
		n := rows * cols
		feat := make([]bool, cols)
		for j := range feat {
			feat[j] = rng.IntN(10) < 3
		}
		masked := &Tensor{Name: "w", Shape: []int64{int64(rows), int64(cols)}, Value: make([]float32, n), Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		for i := range masked.Value {
			masked.Value[i] = rng.Float32() - 0.5
		}
		plain := &Tensor{Name: "w", Shape: masked.Shape, Value: slices.Clone(masked.Value), Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		keep := map[*Tensor]*migu.Keep{masked: {Features: feat, Axis: 1, Rows: int64(rows), Cols: int64(cols)}}
		optM, _ := NewAdamW(DefaultAdamW())
		optP, _ := NewAdamW(DefaultAdamW())
		for range 3 {
			before, beforeM, beforeV := slices.Clone(masked.Value), slices.Clone(masked.M), slices.Clone(masked.V)
			for i := range masked.Grad {
				masked.Grad[i] = (rng.Float32() - 0.5) * 1e-2
			}
			// The unmasked reference starts from the masked tensor's state.
			copy(plain.Value, masked.Value)
			copy(plain.M, masked.M)
			copy(plain.V, masked.V)
			copy(plain.Grad, masked.Grad)
			plain.Steps = masked.Steps
			optM.Step([]*Tensor{masked}, 1e-3, keep, migu.ModeUpdate)
			optP.Step([]*Tensor{plain}, 1e-3, nil, migu.ModeNone)
			for i := range n {
				want, wantM, wantV := plain.Value[i], plain.M[i], plain.V[i]
				if !feat[i%cols] {
					want, wantM, wantV = before[i], beforeM[i], beforeV[i]
				}
				if math.Float32bits(masked.Value[i]) != math.Float32bits(want) || masked.M[i] != wantM || masked.V[i] != wantV {
					t.Fatalf("%d columns, element %d (kept %v): value %v m %v v %v, want %v %v %v", cols, i, feat[i%cols], masked.Value[i], masked.M[i], masked.V[i], want, wantM, wantV)
				}
			}
		}
	}
}

// GradNorm reads four chunks at a time (sumSquaresVec4) and gives the
// bits of summing each chunk alone in order: tensors shorter than a
// chunk, with tails off the vector widths, counts of chunks that do and
// do not fill groups of four, and chunks of different lengths in a group.
func TestGradNormKeepsBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, lengths := range [][]int{{5}, {31, 33, 1000}, {4 * chunkSize}, {5*chunkSize + 17, 3, chunkSize - 1, 2*chunkSize + 64}} {
		var ts []*Tensor
		want := 0.0
		for _, n := range lengths {
			g := make([]float32, n)
			for i := range g {
				g[i] = (rng.Float32() - 0.5) * 1e-2
			}
			ts = append(ts, &Tensor{Grad: g})
			for lo := 0; lo < n; lo += chunkSize {
				want += sumSquares(g[lo:min(lo+chunkSize, n)])
			}
		}
		if got := GradNorm(ts); math.Float64bits(got) != math.Float64bits(math.Sqrt(want)) {
			t.Errorf("lengths %v: GradNorm %.17g, chunk by chunk %.17g", lengths, got, math.Sqrt(want))
		}
	}
}

// StepNorm returns GradNorm's norm of the gradients it was given (summed
// in another order: within 1e-12) and updates exactly as Step does, for
// tensors larger and smaller than a chunk and one masked by column.
func TestStepNormIsGradNormAndStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	tensors := func() []*Tensor {
		var ts []*Tensor
		for _, n := range []int{3 * chunkSize / 2, 100, 4096} {
			tt := &Tensor{Name: "t", Shape: []int64{int64(n / 4), 4}, Value: make([]float32, n), Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
			for i := range tt.Value {
				tt.Value[i], tt.Grad[i] = rng.Float32()-0.5, (rng.Float32()-0.5)*1e-2
			}
			ts = append(ts, tt)
		}
		return ts
	}
	a := tensors()
	b := make([]*Tensor, len(a))
	for i, tt := range a {
		c := *tt
		c.Value, c.Grad, c.M, c.V = slices.Clone(tt.Value), slices.Clone(tt.Grad), slices.Clone(tt.M), slices.Clone(tt.V)
		b[i] = &c
	}
	keepA := map[*Tensor]*migu.Keep{a[2]: {Features: []bool{true, false, false, true}, Axis: 1, Rows: 1024, Cols: 4}}
	keepB := map[*Tensor]*migu.Keep{b[2]: keepA[a[2]]}
	want := GradNorm(a)
	optA, _ := NewAdamW(DefaultAdamW())
	optB, _ := NewAdamW(DefaultAdamW())
	got := optA.StepNorm(a, 1e-3, keepA, migu.ModeGrad)
	optB.Step(b, 1e-3, keepB, migu.ModeGrad)
	if math.Abs(got-want) > 1e-12*want {
		t.Errorf("norm %.17g, GradNorm %.17g", got, want)
	}
	for i := range a {
		if !slices.Equal(a[i].Value, b[i].Value) || !slices.Equal(a[i].M, b[i].M) || !slices.Equal(a[i].V, b[i].V) {
			t.Errorf("tensor %d: StepNorm and Step update differently", i)
		}
	}
}

// StepNorm's pass that sums the norm while it updates (updateNormVec,
// AVX-512 builds with GOEXPERIMENT=simd) gives the norm and the values of
// the sum first and then the update, bit for bit: tensors whole and with a
// tail beyond the vector loop's 32 values, masked by column in rows of
// multiples of 32 (fused) and of 4 (summed first), and by row.
func TestStepNormFusedKeepsBits(t *testing.T) {
	if !normVec {
		t.Skip("no fused norm in this build or on this CPU (needs GOEXPERIMENT=simd and AVX-512)")
	}
	shapes := [][2]int64{{3 * chunkSize / 64, 32}, {37, 3}, {513, 64}, {100, 96}, {1024, 4}, {40, 128}}
	tensors := func() ([]*Tensor, map[*Tensor]*migu.Keep) {
		rng := rand.New(rand.NewPCG(9, 10))
		var ts []*Tensor
		keep := map[*Tensor]*migu.Keep{}
		for i, sh := range shapes {
			n := sh[0] * sh[1]
			tt := &Tensor{Name: fmt.Sprint("t", i), Shape: sh[:], Value: make([]float32, n), Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
			for j := range tt.Value {
				tt.Value[j], tt.Grad[j] = rng.Float32()-0.5, float32(rng.NormFloat64())*float32(math.Pow(10, float64(rng.IntN(5)-4)))
				tt.M[j], tt.V[j] = (rng.Float32()-0.5)*1e-3, rng.Float32()*1e-6
			}
			ts = append(ts, tt)
			axis, feats := int64(1), sh[1]
			if i == len(shapes)-1 {
				axis, feats = 0, sh[0]
			}
			if i >= 2 {
				f := make([]bool, feats)
				for j := range f {
					f[j] = rng.Float64() < 0.3
				}
				keep[tt] = &migu.Keep{Features: f, Axis: int(axis), Rows: sh[0], Cols: sh[1]}
			}
		}
		return ts, keep
	}
	run := func(fused bool) ([]*Tensor, []float64) {
		defer func(v bool) { normVec = v }(normVec)
		normVec = fused
		ts, keep := tensors()
		opt, _ := NewAdamW(DefaultAdamW())
		var norms []float64
		for range 3 {
			norms = append(norms, opt.StepNorm(ts, 1e-3, keep, migu.ModeGrad))
		}
		return ts, norms
	}
	a, na := run(true)
	b, nb := run(false)
	if !slices.Equal(na, nb) {
		t.Errorf("norms fused %v, summed first %v", na, nb)
	}
	for i := range a {
		if !slices.Equal(a[i].Value, b[i].Value) || !slices.Equal(a[i].M, b[i].M) || !slices.Equal(a[i].V, b[i].V) {
			t.Errorf("tensor %v: the fused pass updates differently", shapes[i])
		}
	}
}

// roundBF16 (16 lanes at a time when built with GOEXPERIMENT=simd on an
// AVX-512 machine, the tail one by one) rounds as half.F32ToBF16, bit for
// bit: ties to even, NaNs quiet (one with its payload only in the low
// half too), the largest floats to infinity, subnormals, signed zeros, and
// random bits of every exponent.
func TestRoundBF16(t *testing.T) {
	bits := []uint32{0, 0x80000000, 0x3f800000, 0x3f808000, 0x3f818000, 0x3f80ffff, 0x3f807fff, 0x7f7fffff, 0xff7fffff,
		0x00000001, 0x007fffff, 0x80400000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x7fffffff}
	rng := rand.New(rand.NewPCG(8, 9))
	for range 1000 {
		bits = append(bits, rng.Uint32())
	}
	src := make([]float32, len(bits))
	for i, b := range bits {
		src[i] = math.Float32frombits(b)
	}
	for _, n := range []int{0, 5, 16, 17, len(src)} {
		dst := make([]uint16, n)
		roundBF16(dst, src[:n])
		for i, v := range src[:n] {
			if want := half.F32ToBF16(v); dst[i] != want {
				t.Fatalf("n %d: %#08x rounds to %#04x, want %#04x", n, bits[i], dst[i], want)
			}
		}
	}
}

// sumSquares (32, 16 or 1 values at a time, as the build and the CPU
// allow) sums g[i]² in float64 to within 1e-13 of a plain float64 loop,
// for lengths around every vector width.
func TestSumSquares(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 7))
	g := make([]float32, 100003)
	for i := range g {
		g[i] = float32(rng.NormFloat64()) * float32(math.Pow(10, float64(rng.IntN(7)-3)))
	}
	for _, n := range []int{0, 5, 15, 16, 31, 32, 33, 1000, len(g)} {
		want := 0.0
		for _, v := range g[:n] {
			want += float64(v) * float64(v)
		}
		if got := sumSquares(g[:n]); math.Abs(got-want) > 1e-13*want {
			t.Fatalf("n %d: %.17g, want %.17g", n, got, want)
		}
	}
}

// addScaled gives the bits of Grad[i] += src[i]·scale (gradient
// accumulation) and of Grad[i] *= scale (src nil), value by value, for
// tensors shorter and longer than a chunk, with tails off the vector
// widths; a tensor without a source is left alone.
func TestAddScaledMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const scale = 0.3
	for _, accumulate := range []bool{true, false} {
		var ts []*Tensor
		src := map[*Tensor][]float32{}
		var want [][]float32
		for k, n := range []int{1, 15, 17, 1000, chunkSize + 33, 3 * chunkSize} {
			tt := &Tensor{Grad: make([]float32, n)}
			g := make([]float32, n)
			for i := range n {
				tt.Grad[i], g[i] = rng.Float32()-0.5, rng.Float32()-0.5
			}
			w := slices.Clone(tt.Grad)
			switch {
			case !accumulate:
				for i := range w {
					w[i] *= scale
				}
			case k != 2:
				src[tt] = g
				for i := range w {
					w[i] += g[i] * scale
				}
			}
			ts, want = append(ts, tt), append(want, w)
		}
		if !accumulate {
			src = nil
		}
		addScaled(ts, src, scale)
		for k, tt := range ts {
			for i := range tt.Grad {
				if math.Float32bits(tt.Grad[i]) != math.Float32bits(want[k][i]) {
					t.Fatalf("accumulate %v, tensor %d [%d]: %v, want %v", accumulate, k, i, tt.Grad[i], want[k][i])
				}
			}
		}
	}
}
