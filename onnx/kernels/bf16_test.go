package kernels_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// u is float32's unit roundoff; bf16U bfloat16's.
const (
	u     = 0x1p-24
	bf16U = 0x1p-9
)

// product is one MatMulBF16 (or MatMulF32) case: y = op(a)·op(b).
type product struct {
	name           string
	a, b           []int64 // stored shapes
	transA, transB int64
	bf16B          bool // b is fed as bfloat16 (a frozen bf16 weight)
	f32            bool // the op is MatMulF32 (float32, unrounded)
}

// dims returns m (all rows of op(a)), k and n.
func (p product) dims() (m, k, n int) {
	if p.transA == 1 {
		k, m = int(p.a[0]), int(p.a[1])
	} else {
		k = int(p.a[len(p.a)-1])
		m = numel(p.a) / max(k, 1)
		if k == 0 {
			m = numel(p.a[:len(p.a)-1])
		}
	}
	n = int(p.b[1])
	if p.transB == 1 {
		n = int(p.b[0])
	}
	return m, k, n
}

// reference computes op(a)·op(b) in float64, with a and b rounded to
// bfloat16 first when round is set, and Σ|op(a)||op(b)| per element (the
// scale of every error bound below).
func (p product) reference(a, b []float32, round bool) (y, abs []float64) {
	m, k, n := p.dims()
	val := func(v float32) float64 {
		if round {
			return float64(half.BF16ToF32(half.F32ToBF16(v)))
		}
		return float64(v)
	}
	y, abs = make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			for q := range k {
				ai, bi := i*k+q, q*n+j
				if p.transA == 1 {
					ai = q*m + i
				}
				if p.transB == 1 {
					bi = j*k + q
				}
				t := val(a[ai]) * val(b[bi])
				y[i*n+j] += t
				abs[i*n+j] += math.Abs(t)
			}
		}
	}
	return y, abs
}

// save writes the one-node graph y = MatMulBF16(a, b) (MatMulF32 where
// p.f32) and returns its path.
func (p product) save(t testing.TB) string {
	t.Helper()
	m := onnx.New("bf16", nil)
	g := m.Graph()
	g.AddInput("a", onnx.Float, dimsOf(p.a))
	bt := onnx.Float
	if p.bf16B {
		bt = onnx.BFloat16
	}
	g.AddInput("b", bt, dimsOf(p.b))
	op := "MatMulBF16"
	if p.f32 {
		op = "MatMulF32"
	}
	g.Node(op, []string{"a", "b"}, []string{"y"}, "y", onnx.AttrInt("transA", p.transA), onnx.AttrInt("transB", p.transB))
	g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
	_, _, n := p.dims()
	ys := append(append([]int64{}, p.a[:len(p.a)-1]...), int64(n))
	if p.transA == 1 {
		ys = []int64{p.a[1], int64(n)}
	}
	g.AddOutput("y", onnx.Float, dimsOf(ys))
	m.SetOpset(onnx.DomainMiguBF16, 1)
	path := filepath.Join(t.TempDir(), "bf16.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// run feeds a and b (b as bfloat16 bits when p.bf16B) and returns y.
func (p product) run(t testing.TB, path, lib string, threads int, a, b []float32) []float32 {
	t.Helper()
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: threads, CustomOps: []string{lib}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	av, err := ort.NewTensor(a, p.a...)
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	var bv ort.Value
	if p.bf16B {
		bits := make([]uint16, len(b))
		for i, v := range b {
			bits[i] = half.F32ToBF16(v)
		}
		bv, err = ort.NewBFloat16Tensor(bits, p.b...)
	} else {
		bv, err = ort.NewTensor(b, p.b...)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer bv.Close()
	outs, err := s.Run(map[string]ort.Value{"a": av, "b": bv})
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Close()
	return append([]float32(nil), outs[0].(*ort.Tensor[float32]).Data()...)
}

var products = []product{
	{name: "3-D A", a: []int64{2, 3, 16}, b: []int64{16, 5}},
	{name: "transB (tied head, input gradient)", a: []int64{4, 16}, b: []int64{5, 16}, transB: 1},
	{name: "transA (weight gradient)", a: []int64{16, 6}, b: []int64{16, 5}, transA: 1},
	{name: "bf16 B (frozen weight)", a: []int64{2, 7, 32}, b: []int64{32, 9}, bf16B: true},
	{name: "K 512 (llama-small hidden)", a: []int64{8, 512}, b: []int64{512, 64}},
	{name: "K 1376 transA transB", a: []int64{1376, 12}, b: []int64{10, 1376}, transA: 1, transB: 1},
	{name: "blocks with edges (M 300, N 2100: 2x2 blocks of 256x1088)", a: []int64{3, 100, 64}, b: []int64{64, 2100}},
	{name: "blocks with edges transA transB", a: []int64{64, 300}, b: []int64{2100, 64}, transA: 1, transB: 1},
	{name: "K 0", a: []int64{3, 0}, b: []int64{0, 4}},
}

// exactValues are multiples of 1/8 in [-8, 8] (bfloat16 holds them
// exactly) plus a perturbation below half a bfloat16 ulp, which rounding
// to bfloat16 removes: products of the rounded values and their sums
// (below 2^18 in steps of 2^-6) are exact in float32, so MatMulBF16 must
// give the float64 reference of the rounded values bit for bit, whatever
// its summation order, and differ from the product of the unrounded ones.
func exactValues(t *testing.T, rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		k := rng.IntN(129) - 64
		x := float32(k) / 8
		if k != 0 {
			_, e := math.Frexp(float64(x)) // |x| in [2^(e-1), 2^e)
			ulp := math.Ldexp(1, e-9)      // the smaller ulp of the binade below, for x a power of 2
			x += float32((rng.Float64() - 0.5) * 0.9 * ulp)
		}
		if got := half.BF16ToF32(half.F32ToBF16(x)); got != float32(k)/8 {
			t.Fatalf("test values: %g rounds to %g, not %g", x, got, float32(k)/8)
		}
		v[i] = x
	}
	return v
}

func gaussian(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// MatMulBF16, on both paths, against float64 references: exactly the product of the
// bfloat16-rounded inputs where float32 sums are exact; on Gaussian inputs
// the same bits on 1 and 2 threads, and within float32 accumulation's worst-case bound (k·u·Σ|ab|) of the
// rounded product and within bfloat16's (2·2^-9·Σ|ab| more) of the
// unrounded float32 one — and measurably away from the latter, so the
// inputs were rounded.
func TestMatMulBF16(t *testing.T) {
	lib := withBF16(t)
	for _, bf16Path := range bf16Paths {
		t.Run(bf16Path, func(t *testing.T) { testMatMulBF16(t, lib, bf16Path) })
	}
}

// bf16Paths are MatMulBF16's two ways of computing ($MIGU_BF16_PATH): a bf16
// product in oneDNN (on bf16 units, or emulated), and a float32 product
// of the bf16-rounded operands (CPUs without bf16 units).
var bf16Paths = []string{"native", "f32"}

func testMatMulBF16(t *testing.T, lib, bf16Path string) {
	t.Setenv("MIGU_BF16_PATH", bf16Path)
	for i, p := range products {
		t.Run(p.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 18))
			path := p.save(t)
			_, k, _ := p.dims()

			a, b := exactValues(t, rng, numel(p.a)), exactValues(t, rng, numel(p.b))
			got := p.run(t, path, lib, 2, a, b)
			want, _ := p.reference(a, b, true)
			unrounded, _ := p.reference(a, b, false)
			if len(got) != len(want) {
				t.Fatalf("exact inputs: %d values, want %d", len(got), len(want))
			}
			differs := false
			for j := range got {
				if float64(got[j]) != want[j] {
					t.Fatalf("exact inputs: y[%d] = %g, want %g (the bf16-rounded product)", j, got[j], want[j])
				}
				differs = differs || float64(got[j]) != unrounded[j]
			}
			if k > 0 && !differs {
				t.Errorf("exact inputs: y equals the product of the unrounded inputs: nothing was rounded to bf16")
			}

			a, b = gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b))
			got = p.run(t, path, lib, 2, a, b)
			for j, v := range p.run(t, path, lib, 1, a, b) {
				if v != got[j] {
					t.Fatalf("gaussian inputs: y[%d] = %g on 1 thread, %g on 2: the blocks depend on the threads", j, v, got[j])
				}
			}
			want, scale := p.reference(a, b, true)
			fp32, _ := p.reference(a, b, false)
			worst := 0.0
			for j := range got {
				e := math.Abs(float64(got[j]) - want[j])
				if e > float64(k)*u*scale[j] {
					t.Fatalf("gaussian inputs: y[%d] = %g, bf16-rounded reference %g: error %.3g above k·u·Σ|ab| = %.3g", j, got[j], want[j], e, float64(k)*u*scale[j])
				}
				d := math.Abs(float64(got[j]) - fp32[j])
				if d > (2*bf16U+float64(k)*u)*scale[j] {
					t.Fatalf("gaussian inputs: y[%d] = %g, float32 product %g: off by %.3g, above bf16's bound %.3g", j, got[j], fp32[j], d, (2*bf16U+float64(k)*u)*scale[j])
				}
				if scale[j] > 0 {
					worst = max(worst, d/scale[j])
				}
			}
			if k >= 16 && worst < 1e-4 {
				t.Errorf("gaussian inputs: largest difference from the float32 product %.3g·Σ|ab|: too close for bf16 inputs", worst)
			}
			t.Logf("largest difference from the unrounded product: %.3g·Σ|ab|", worst)
		})
	}
}

// A bad operand is an error naming the op and the fault, not a crash.
func TestMatMulBF16BadShapes(t *testing.T) {
	lib := withBF16(t)
	for _, f32 := range []bool{false, true} {
		p := product{a: []int64{2, 3}, b: []int64{4, 5}, f32: f32}
		want := "ai.migu.bf16.MatMulBF16: the inner dimensions of op(A) and op(B) differ"
		if f32 {
			want = "ai.migu.bf16.MatMulF32: the inner dimensions of op(A) and op(B) differ"
		}
		path := p.save(t)
		s, err := ort.NewSession(path, ort.SessionOptions{CustomOps: []string{lib}})
		if err != nil {
			t.Fatal(err)
		}
		av, _ := ort.NewTensor(make([]float32, 6), 2, 3)
		bv, _ := ort.NewTensor(make([]float32, 20), 4, 5)
		_, err = s.Run(map[string]ort.Value{"a": av, "b": bv})
		av.Close()
		bv.Close()
		s.Close()
		if err == nil {
			t.Fatalf("a [2,3]·[4,5] product ran (f32 %v)", f32)
		} else if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
}

// One session runs MatMulBF16 on 40 token counts in turn, as training on
// batches of varying length does: the forward product (rows vary) and the
// weight gradient's xᵀ·dY (inner dimension varies), each several blocks
// wide, so every count brings new block shapes and the kernel's primitive
// cache (16 entries) evicts; every result stays within float32's bound
// of the bf16-rounded float64 product.
func TestMatMulBF16ShapeChanges(t *testing.T) {
	lib := withBF16(t)
	const k, n = 64, 700
	for _, transA := range []int64{0, 1} {
		m := onnx.New("shapes", nil)
		g := m.Graph()
		tok := onnx.Sym("tokens")
		g.AddInput("a", onnx.Float, onnx.Shape{tok, onnx.D(k)})
		bShape, yShape := onnx.Shape{onnx.D(k), onnx.D(n)}, onnx.Shape{tok, onnx.D(n)}
		if transA == 1 {
			bShape, yShape = onnx.Shape{tok, onnx.D(n)}, onnx.Shape{onnx.D(k), onnx.D(n)}
		}
		g.AddInput("b", onnx.Float, bShape)
		g.Node("MatMulBF16", []string{"a", "b"}, []string{"y"}, "y", onnx.AttrInt("transA", transA), onnx.AttrInt("transB", 0))
		g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
		g.AddOutput("y", onnx.Float, yShape)
		m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
		path := filepath.Join(t.TempDir(), "shapes.onnx")
		if err := m.Save(path, onnx.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := ort.NewSession(path, ort.SessionOptions{Threads: 2, CustomOps: []string{lib}})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, uint64(transA)))
		for i := range 40 {
			tokens := int64(1 + 7*i)
			p := product{a: []int64{tokens, k}, b: []int64{k, n}, transA: transA}
			if transA == 1 {
				p = product{a: []int64{tokens, k}, b: []int64{tokens, n}, transA: 1}
			}
			a, b := gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b))
			av, _ := ort.NewTensor(a, p.a...)
			bv, _ := ort.NewTensor(b, p.b...)
			outs, err := s.Run(map[string]ort.Value{"a": av, "b": bv})
			av.Close()
			bv.Close()
			if err != nil {
				t.Fatalf("transA %d, %d tokens: %v", transA, tokens, err)
			}
			got := outs[0].(*ort.Tensor[float32]).Data()
			want, scale := p.reference(a, b, true)
			_, kk, _ := p.dims()
			for j := range want {
				if e := math.Abs(float64(got[j]) - want[j]); e > float64(kk)*u*scale[j] {
					t.Fatalf("transA %d, %d tokens: y[%d] = %g, want %g", transA, tokens, j, got[j], want[j])
				}
			}
			outs[0].Close()
		}
		s.Close()
	}
}

// The small llama's feed-forward product on 2 threads, five times over in
// one session, gives the bits of a 1-thread run every time, on both of
// MatMulBF16's paths and in MatMulF32: blocks that run at once share
// nothing (oneDNN's scratchpad is per call, not its library-wide one).
func TestMatMulBF16Deterministic(t *testing.T) {
	lib := withBF16(t)
	for _, bf16Path := range append(bf16Paths, "MatMulF32") {
		t.Run(bf16Path, func(t *testing.T) {
			f32 := bf16Path == "MatMulF32"
			if !f32 {
				t.Setenv("MIGU_BF16_PATH", bf16Path)
			}
			for _, p := range []product{
				{name: "forward", a: []int64{512, 512}, b: []int64{512, 1376}},
				{name: "input gradient", a: []int64{512, 1376}, b: []int64{512, 1376}, transB: 1},
				{name: "weight gradient", a: []int64{512, 512}, b: []int64{512, 1376}, transA: 1},
				{name: "tied head", a: []int64{512, 512}, b: []int64{8000, 512}, transB: 1},
			} {
				p.f32 = f32
				rng := rand.New(rand.NewPCG(11, uint64(p.transA)))
				a, b := gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b))
				path := p.save(t)
				want := p.run(t, path, lib, 1, a, b)
				s, err := ort.NewSession(path, ort.SessionOptions{Threads: 2, CustomOps: []string{lib}})
				if err != nil {
					t.Fatal(err)
				}
				av, _ := ort.NewTensor(a, p.a...)
				bv, _ := ort.NewTensor(b, p.b...)
				for run := range 5 {
					outs, err := s.Run(map[string]ort.Value{"a": av, "b": bv})
					if err != nil {
						t.Fatal(err)
					}
					for j, v := range outs[0].(*ort.Tensor[float32]).Data() {
						if v != want[j] {
							t.Fatalf("%s, run %d on 2 threads: y[%d] = %g, %g on 1 thread", p.name, run+1, j, v, want[j])
						}
					}
					outs[0].Close()
				}
				av.Close()
				bv.Close()
				s.Close()
			}
		})
	}
}

// The library picks the path that BF16Hardware.Path in Go describes, on
// this CPU and under each value of $MIGU_BF16_PATH (read on every call).
func TestBF16PathAgrees(t *testing.T) {
	lib := withBF16(t)
	hw := kernels.ReadBF16Hardware()
	for _, env := range []string{"", "native", "f32"} {
		t.Setenv(kernels.BF16PathEnvVar, env)
		got, found, err := ort.LibraryString(lib, "MiguBF16Path")
		if err != nil || !found {
			t.Fatalf("MiguBF16Path: found %v, %v", found, err)
		}
		if want := hw.Path(); !strings.HasPrefix(want, got+":") {
			t.Errorf("MIGU_BF16_PATH=%q on %+v: the library takes %q, Go says %q", env, hw, got, want)
		}
	}
}
