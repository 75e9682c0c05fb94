package gguf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/migu-ml/migu/internal/half"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// quantTypes are the types Quantize writes.
var quantTypes = []Type{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1}

// edgeBlocks are 32-value blocks at the corners of the quantizers: signed
// zeros, exact rounding ties for each type's scale, scales that overflow
// f16 or whose inverse overflows float32, subnormals, infinities, NaN.
func edgeBlocks() [][]float32 {
	fill := func(f func(j int) float32) []float32 {
		b := make([]float32, 32)
		for j := range b {
			b[j] = f(j)
		}
		return b
	}
	inf := float32(math.Inf(1))
	nan := nan32()
	sub := math.Float32frombits(1) // smallest subnormal
	return [][]float32{
		fill(func(int) float32 { return 0 }),
		fill(func(int) float32 { return negZero() }),
		// Q8_0 with d = 1: halves round away from zero.
		fill(func(j int) float32 {
			if j == 0 {
				return 127
			}
			return float32(j-16) + 0.5
		}),
		// Q4_0 with d = 1 (x_max = −8) and Q5_0 with d = 1 (x_max = −16).
		fill(func(j int) float32 { return -8 + 0.5*float32(j%32) }),
		fill(func(j int) float32 { return -16 + float32(j) + 0.5*float32(j%2) }),
		// Q4_1 and Q5_1 with d = 1 and min 0.
		fill(func(j int) float32 {
			if j == 1 {
				return 15
			}
			return 0.5 * float32(j%30)
		}),
		fill(func(j int) float32 {
			if j == 1 {
				return 31
			}
			return float32(j%31) + 0.5*float32(j%2)
		}),
		// Values where gguf-py's float64 product for Q4_0 and Q5_0 truncates
		// to another quant than float32 arithmetic would (found by search).
		fill(func(j int) float32 { return []float32{-14.57138, -4.553557, 9.5973625}[min(j, 1+j%2)] }),
		fill(func(j int) float32 { return []float32{-15.082812, 0.9426749}[min(j, 1)] }),
		fill(func(j int) float32 { return []float32{-26.951694, 17.687048}[min(j, 1)] }),
		fill(func(j int) float32 { return []float32{-29.573778, -13.86271, 4.5513344}[min(j, 1+j%2)] }),
		// Ties for the largest magnitude: the first wins.
		fill(func(j int) float32 { return float32(3 - 6*(j%2)) }),
		fill(func(j int) float32 { return float32(-3 + 6*(j%2)) }),
		fill(func(j int) float32 { return 5 }),
		fill(func(j int) float32 { return float32(j) * -0.25 }),
		fill(func(j int) float32 {
			if j == 7 {
				return 1
			}
			return 0
		}),
		// Huge: max−min overflows, d overflows f16.
		fill(func(j int) float32 { return []float32{3e38, -3e38, 1e30, -1}[j%4] }),
		fill(func(j int) float32 { return float32(j) * 4e5 }),
		fill(func(j int) float32 { return -float32(j) * 3e6 }),
		// Subnormal values, and normal ones whose scale is subnormal so
		// that 1/d overflows to infinity.
		fill(func(j int) float32 { return sub * float32(j*j) }),
		fill(func(j int) float32 { return 1e-38 * float32(j-10) / 22 }),
		fill(func(j int) float32 { return 3e-37 * float32(j-10) / 22 }),
		fill(func(j int) float32 { return 2e-38 * float32(j%5) }),
		// Infinities and NaN.
		fill(func(j int) float32 { return []float32{1, inf, -2, 0}[j%4] }),
		fill(func(j int) float32 { return []float32{1, -inf, -2, 0}[j%4] }),
		fill(func(j int) float32 { return []float32{inf, -inf, 3}[j%3] }),
		fill(func(j int) float32 {
			if j == 9 {
				return nan
			}
			return float32(j)
		}),
		fill(func(j int) float32 {
			if j == 0 {
				return nan
			}
			return -float32(j)
		}),
		// F16 and BF16 rounding: ties to even either way, overflow to
		// infinity, the f16 subnormal range.
		fill(func(j int) float32 {
			return []float32{1 + 1.0/2048, 1 + 3.0/2048, 65520, 65519.996, 0x1p-25, 0x3p-25, 0x1.8p-24, 0x1.0000001p-25,
				1 + 1.0/256, 1 + 3.0/256, math.MaxFloat32, -0x1p-14, 0x1.ff8p-15, 6.1e-5, 2048 + 1, 2048 + 3}[j%16]
		}),
	}
}

// quantInputs returns dataset A — edge blocks, Gaussian blocks at several
// scales, random bit patterns with NaN made canonical — for every type,
// and dataset B — raw random bit patterns, NaN payloads included — for
// F32, F16 and BF16.
func quantInputs() (a, b []float32) {
	for _, blk := range edgeBlocks() {
		a = append(a, blk...)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, scale := range []float64{1e-4, 0.02, 1, 300} {
		for range 64 * 32 {
			a = append(a, float32(rng.NormFloat64()*scale))
		}
	}
	for range 128 * 32 {
		v := math.Float32frombits(rng.Uint32())
		if v != v {
			v = nan32()
		}
		a = append(a, v)
	}
	for range 4096 {
		b = append(b, math.Float32frombits(rng.Uint32()))
	}
	// NaNs whose payload numpy's f16 conversion drops, keeps or quiets.
	for _, bits := range []uint32{0x7f800001, 0xff801fff, 0x7f802000, 0x7fc00000, 0xffffffff, 0x7fa00000} {
		b = append(b, math.Float32frombits(bits))
	}
	// Every f16 value's midpoint to the next, and a hair either side.
	for h := uint32(0); h < 0x7c00; h += 7 {
		lo, hi := half.F16Table()[h], half.F16Table()[h+1]
		mid := float32((float64(lo) + float64(hi)) / 2)
		b = append(b, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, inf32()), -mid)
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	return a, b
}

func inf32() float32 { return float32(math.Inf(1)) }

// Quantize must produce gguf.quants.quantize's bytes exactly.
func TestQuantizeMatchesPython(t *testing.T) {
	a, b := quantInputs()
	pa, pb := writeTemp(t, "a.f32", floatsToBytes(a)), writeTemp(t, "b.f32", floatsToBytes(b))
	out := testenv.RunPython(t, pyPrelude+`
a = np.fromfile(sys.argv[1], dtype=np.float32).reshape(-1, 32)
b = np.fromfile(sys.argv[2], dtype=np.float32).reshape(-1, 32)
out = {}
for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]:
    out[name] = b64(gguf.quants.quantize(a, Q[name]))
for name in ["F32", "F16", "BF16"]:
    out[name + ".bits"] = b64(gguf.quants.quantize(b, Q[name]))
json.dump(out, sys.stdout)
`, pa, pb)
	var want map[string][]byte
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	check := func(label string, typ Type, src []float32) {
		got, err := Quantize(typ, src)
		if err != nil {
			t.Fatal(err)
		}
		w := want[label]
		if bytes.Equal(got, w) {
			return
		}
		elems, size, _ := typ.BlockSize()
		if len(got) != len(w) {
			t.Errorf("%s: %d bytes, gguf-py %d", label, len(got), len(w))
			return
		}
		bad := 0
		for k := 0; k*size < len(got); k++ {
			g, p := got[k*size:(k+1)*size], w[k*size:(k+1)*size]
			if !bytes.Equal(g, p) {
				if bad < 3 {
					t.Errorf("%s: block %d of %v\n got % x\nwant % x", label, k, src[k*elems:(k+1)*elems], g, p)
				}
				bad++
			}
		}
		t.Errorf("%s: %d of %d blocks differ", label, bad, len(got)/size)
	}
	for _, typ := range quantTypes {
		check(typ.String(), typ, a)
	}
	for _, typ := range []Type{F32, F16, BF16} {
		check(typ.String()+".bits", typ, b)
	}
}

// Quantizing then dequantizing stays within each format's rounding error,
// and is exact for F32 and for values the format holds exactly.
func TestQuantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, 32*64)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	cases := []struct {
		typ Type
		// tol bounds |x − x'| relative to the block's largest magnitude
		// (or, for the float types, to |x|).
		tol float64
	}{
		{F32, 0}, {F16, 1.0 / 2048}, {BF16, 1.0 / 256},
		{Q8_0, 0.5/127 + 1e-3}, {Q4_0, 1.0/8 + 1e-3}, {Q5_0, 1.0/16 + 1e-3},
		{Q4_1, 2.0/15/2 + 1e-3}, {Q5_1, 2.0/31/2 + 1e-3},
	}
	for _, c := range cases {
		q, err := Quantize(c.typ, src)
		if err != nil {
			t.Fatal(err)
		}
		back := make([]float32, len(src))
		if err := Dequantize(back, c.typ, q); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < len(src); k += 32 {
			amax := 0.0
			for _, v := range src[k : k+32] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for j := k; j < k+32; j++ {
				ref := amax
				if c.typ == F32 || c.typ == F16 || c.typ == BF16 {
					ref = math.Abs(float64(src[j]))
				}
				if d := math.Abs(float64(back[j] - src[j])); d > c.tol*ref {
					t.Fatalf("%s: value %d: %g came back as %g (error %g > %g)", c.typ, j, src[j], back[j], d, c.tol*ref)
				}
			}
		}
	}
}

func TestQuantizeErrors(t *testing.T) {
	cases := []struct {
		typ  Type
		n    int
		want string
	}{
		{Q4_K, 256, "cannot quantize to Q4_K"},
		{Type(99), 32, "cannot quantize to type(99)"},
		{Q8_0, 33, "33 values are not a whole number of 32-value Q8_0 blocks"},
	}
	for _, c := range cases {
		_, err := Quantize(c.typ, make([]float32, c.n))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Quantize(%s, %d values) = %v, want %q", c.typ, c.n, err, c.want)
		}
	}
}

func TestDequantizeErrors(t *testing.T) {
	cases := []struct {
		typ      Type
		n, bytes int
		want     string
	}{
		{IQ2_XXS, 256, 66, "cannot dequantize IQ2_XXS"},
		{Q4_K, 255, 144, "255 values of Q4_K are not a whole number of 256-value blocks"},
		{Q4_0, 64, 35, "64 values of Q4_0 take 36 bytes, got 35"},
		{F32, 2, 9, "take 8 bytes, got 9"},
	}
	for _, c := range cases {
		err := Dequantize(make([]float32, c.n), c.typ, make([]byte, c.bytes))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dequantize(%d values of %s from %d bytes) = %v, want %q", c.n, c.typ, c.bytes, err, c.want)
		}
	}
}

// Splitting the work across goroutines must not change a value: a large
// input (many chunks) decodes as its blocks do one by one.
func TestDequantizeParallelMatchesSerial(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, l := range layouts {
		blocks := (1<<18)/l.elems + 3
		src := randomBlocks(rng, l.t, blocks)
		all := make([]float32, blocks*l.elems)
		if err := Dequantize(all, l.t, src); err != nil {
			t.Fatal(err)
		}
		one := make([]float32, l.elems)
		for k := range blocks {
			dequantKernels[l.t](one, src[k*l.bytes:(k+1)*l.bytes])
			if _, ok := sameBits(one, all[k*l.elems:(k+1)*l.elems]); !ok {
				t.Fatalf("%s: block %d differs when decoded alone", l.t, k)
			}
		}
	}
}

func TestTypes(t *testing.T) {
	cases := []struct {
		typ          Type
		name         string
		elems, bytes int
		ok           bool
	}{
		{F32, "F32", 1, 4, true}, {F16, "F16", 1, 2, true}, {BF16, "BF16", 1, 2, true},
		{Q4_0, "Q4_0", 32, 18, true}, {Q4_1, "Q4_1", 32, 20, true}, {Q5_0, "Q5_0", 32, 22, true},
		{Q5_1, "Q5_1", 32, 24, true}, {Q8_0, "Q8_0", 32, 34, true}, {Q2_K, "Q2_K", 256, 84, true},
		{Q3_K, "Q3_K", 256, 110, true}, {Q4_K, "Q4_K", 256, 144, true}, {Q5_K, "Q5_K", 256, 176, true},
		{Q6_K, "Q6_K", 256, 210, true}, {Q8_K, "Q8_K", 256, 292, true},
		{Q8_1, "Q8_1", 0, 0, false}, {IQ4_XS, "IQ4_XS", 0, 0, false}, {F64, "F64", 0, 0, false},
		{Type(4), "type(4)", 0, 0, false}, {Type(1000), "type(1000)", 0, 0, false},
	}
	for _, c := range cases {
		if got := c.typ.String(); got != c.name {
			t.Errorf("Type(%d).String() = %q, want %q", uint32(c.typ), got, c.name)
		}
		e, b, ok := c.typ.BlockSize()
		if e != c.elems || b != c.bytes || ok != c.ok {
			t.Errorf("%s.BlockSize() = %d, %d, %v; want %d, %d, %v", c.typ, e, b, ok, c.elems, c.bytes, c.ok)
		}
		if !strings.HasPrefix(c.name, "type(") {
			for _, s := range []string{c.name, strings.ToLower(c.name)} {
				if p, err := ParseType(s); err != nil || p != c.typ {
					t.Errorf("ParseType(%q) = %v, %v; want %s", s, p, err, c.typ)
				}
			}
		}
	}
	for _, s := range []string{"", "q4", "type(4)", "F32 "} {
		if _, err := ParseType(s); err == nil {
			t.Errorf("ParseType(%q) succeeded", s)
		}
	}
	for v, name := range map[ValueType]string{Uint8: "uint8", Float32: "float32", String: "string", Array: "array", Float64: "float64", 13: "type(13)"} {
		if got := v.String(); got != name {
			t.Errorf("ValueType(%d).String() = %q, want %q", uint32(v), got, name)
		}
	}
	info := TensorInfo{Dims: []uint64{64, 3, 2}, Type: Q4_0}
	if s := fmt.Sprint(info.Shape()); s != "[2 3 64]" || info.NumElements() != 384 || info.Size() != 12*18 {
		t.Errorf("shape %s, %d elements, %d bytes; want [2 3 64], 384, 216", s, info.NumElements(), info.Size())
	}
}
