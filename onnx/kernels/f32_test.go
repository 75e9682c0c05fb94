package kernels_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// saveMLAS writes p's product in standard operators — MatMul without
// transposes, else Gemm; a bf16 b widened by a Cast — which ORT runs with
// MLAS, and returns its path.
func (p product) saveMLAS(t *testing.T) string {
	t.Helper()
	m := onnx.New("mlas", nil)
	g := m.Graph()
	g.AddInput("a", onnx.Float, dimsOf(p.a))
	b := "b"
	if p.bf16B {
		g.AddInput("b", onnx.BFloat16, dimsOf(p.b))
		b = g.Op("Cast", []string{"b"}, "b32", onnx.AttrInt("to", int64(onnx.Float)))
	} else {
		g.AddInput("b", onnx.Float, dimsOf(p.b))
	}
	if p.transA == 0 && p.transB == 0 {
		g.Node("MatMul", []string{"a", b}, []string{"y"}, "y")
	} else {
		g.Node("Gemm", []string{"a", b}, []string{"y"}, "y", onnx.AttrInt("transA", p.transA), onnx.AttrInt("transB", p.transB))
	}
	m_, _, n := p.dims()
	ys := append(append([]int64{}, p.a[:len(p.a)-1]...), int64(n))
	if p.transA == 1 {
		ys = []int64{int64(m_), int64(n)}
	}
	g.AddOutput("y", onnx.Float, dimsOf(ys))
	path := filepath.Join(t.TempDir(), "mlas.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// MatMulF32 multiplies float32 operands as they are: on Gaussian inputs,
// for every shape of the MatMulBF16 tests (3-D A, each transposition,
// blocks with edges, a bf16 B widened exactly, K 0), it is within float32
// accumulation's worst-case bound (k·u·Σ|ab|) of the float64 product and
// within twice that of ORT's MLAS product of the same operands, and at
// least 4 times nearer the unrounded product than the bf16-rounded one
// (nothing rounded); 1 and 2 threads give the same bits.
func TestMatMulF32(t *testing.T) {
	lib := withBF16(t)
	for i, p := range products {
		p.f32 = true
		t.Run(p.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 32))
			_, k, _ := p.dims()
			a, b := gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b))
			if p.bf16B {
				// b reaches the op as bfloat16: the product is of its rounded values.
				b = roundedBF16(b)
			}
			path := p.save(t)
			got := p.run(t, path, lib, 2, a, b)
			for j, v := range p.run(t, path, lib, 1, a, b) {
				if v != got[j] {
					t.Fatalf("y[%d] = %g on 1 thread, %g on 2: the blocks depend on the threads", j, v, got[j])
				}
			}
			mlas := p.run(t, p.saveMLAS(t), lib, 2, a, b)
			want, scale := p.reference(a, b, false)
			rounded, _ := p.reference(a, b, true)
			if len(got) != len(want) || len(mlas) != len(want) {
				t.Fatalf("%d values, MLAS %d, want %d", len(got), len(mlas), len(want))
			}
			var worst, worstRounded, worstMLAS float64
			for j := range got {
				bound := float64(k) * u * scale[j]
				if e := math.Abs(float64(got[j]) - want[j]); e > bound {
					t.Fatalf("y[%d] = %g, float64 product %g: error %.3g above k·u·Σ|ab| = %.3g", j, got[j], want[j], e, bound)
				}
				if d := math.Abs(float64(got[j]) - float64(mlas[j])); d > 2*bound {
					t.Fatalf("y[%d] = %g, MLAS %g: apart by %.3g, above 2·k·u·Σ|ab| = %.3g", j, got[j], mlas[j], d, 2*bound)
				}
				if scale[j] > 0 {
					worst = max(worst, math.Abs(float64(got[j])-want[j])/scale[j])
					worstRounded = max(worstRounded, math.Abs(float64(got[j])-rounded[j])/scale[j])
					worstMLAS = max(worstMLAS, math.Abs(float64(got[j]-mlas[j]))/scale[j])
				}
			}
			if k > 0 && !(worstRounded > 4*worst) {
				t.Errorf("largest error %.3g·Σ|ab| from the float32 product, %.3g from the bf16-rounded one: the operands look rounded", worst, worstRounded)
			}
			t.Logf("largest error %.3g·Σ|ab| (MLAS apart %.3g·Σ|ab|, bf16-rounded product %.3g·Σ|ab|)", worst, worstMLAS, worstRounded)
		})
	}
}

// RewriteF32 moves exactly the products of the roles it is given to
// MatMulF32, keeping name, operands, output and transposes, and leaves
// Gemms with a C input or alpha ≠ 1, products of other types or ranks,
// and other Gemm transpositions alone.
func TestRewriteF32(t *testing.T) {
	build := func() *onnx.Model {
		m := onnx.New("rewrite", nil)
		g := m.Graph()
		g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3), onnx.D(4)})
		g.AddInput("x2", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(4)})
		g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(4), onnx.D(5)})
		g.AddInput("dy", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(5)})
		g.AddInput("c", onnx.Float, onnx.Shape{onnx.D(4), onnx.D(5)})
		g.AddInput("w3", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(4), onnx.D(5)})
		g.AddInput("wd", onnx.Double, onnx.Shape{onnx.D(4), onnx.D(5)})
		g.AddInput("xd", onnx.Double, onnx.Shape{onnx.D(6), onnx.D(4)})
		nodes := []struct {
			op, name string
			in       []string
			attrs    []onnx.Attr
		}{
			{"MatMul", "forward", []string{"x", "w"}, nil},
			{"Gemm", "input-grad", []string{"dy", "w"}, []onnx.Attr{onnx.AttrInt("transB", 1)}},
			{"Gemm", "weight-grad", []string{"x2", "dy"}, []onnx.Attr{onnx.AttrInt("transA", 1)}},
			{"Gemm", "with-c", []string{"x2", "dy", "c"}, []onnx.Attr{onnx.AttrInt("transA", 1)}},
			{"Gemm", "alpha", []string{"x2", "dy"}, []onnx.Attr{onnx.AttrInt("transA", 1), onnx.AttrFloat("alpha", 2)}},
			{"Gemm", "both-transposed", []string{"w", "dy"}, []onnx.Attr{onnx.AttrInt("transA", 1), onnx.AttrInt("transB", 1)}},
			{"MatMul", "batched-b", []string{"x", "w3"}, nil},
			{"MatMul", "double", []string{"xd", "wd"}, nil},
		}
		for _, n := range nodes {
			g.Node(n.op, n.in, []string{n.name}, n.name, n.attrs...)
			g.AddOutput(n.name, onnx.Float, nil)
		}
		return m
	}
	cases := []struct {
		name  string
		roles kernels.F32Roles
		moved []string
	}{
		{"none", kernels.F32Roles{}, nil},
		{"weight gradients", kernels.F32Roles{WeightGrads: true}, []string{"weight-grad"}},
		{"forward", kernels.F32Roles{Forward: true}, []string{"forward"}},
		{"input gradients", kernels.F32Roles{InputGrads: true}, []string{"input-grad"}},
		{"all", kernels.F32Roles{Forward: true, InputGrads: true, WeightGrads: true}, []string{"forward", "input-grad", "weight-grad"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := build()
			before := map[string][]string{}
			for _, n := range m.Graph().P.Node {
				before[n.Output[0]] = append([]string{}, n.Input...)
			}
			types := staticTypes{
				"x": {onnx.Float, 3}, "x2": {onnx.Float, 2}, "w": {onnx.Float, 2}, "dy": {onnx.Float, 2},
				"c": {onnx.Float, 2}, "w3": {onnx.Float, 3}, "wd": {onnx.Double, 2}, "xd": {onnx.Double, 2},
			}
			if got := kernels.RewriteF32(m, types, c.roles); got != len(c.moved) {
				t.Fatalf("%d products rewritten, want %d", got, len(c.moved))
			}
			moved := map[string]bool{}
			for _, name := range c.moved {
				moved[name] = true
			}
			// Each node writes the output named in the table.
			for _, n := range m.Graph().P.Node {
				out := n.Output[0]
				f32 := n.GetDomain() == onnx.DomainMiguBF16 && n.GetOpType() == "MatMulF32"
				if f32 != moved[out] {
					t.Fatalf("node %s is %s.%s", out, n.GetDomain(), n.GetOpType())
				}
				if !slices.Equal(n.Input, before[out]) {
					t.Fatalf("node %s: inputs %v, were %v", out, n.Input, before[out])
				}
				if f32 {
					ta, tb := onnx.AttrIntOr(n, "transA", -1), onnx.AttrIntOr(n, "transB", -1)
					want := map[string][2]int64{"forward": {0, 0}, "input-grad": {0, 1}, "weight-grad": {1, 0}}[out]
					if [2]int64{ta, tb} != want {
						t.Fatalf("node %s: transA %d transB %d, want %v", out, ta, tb, want)
					}
				}
			}
			want := int64(0)
			if len(c.moved) > 0 {
				want = kernels.Opset
			}
			if v := m.Opset(onnx.DomainMiguBF16); v != want {
				t.Fatalf("opset import of %s: %d, want %d", onnx.DomainMiguBF16, v, want)
			}
		})
	}
}

// staticTypes gives each value a type and a rank (dimensions of 4).
type staticTypes map[string]struct {
	dt   onnx.DType
	rank int
}

func (s staticTypes) Type(v string) (onnx.DType, onnx.Shape, bool) {
	t, ok := s[v]
	if !ok {
		return 0, nil, false
	}
	shape := make(onnx.Shape, t.rank)
	for i := range shape {
		shape[i] = onnx.D(4)
	}
	return t.dt, shape, true
}

// A weight gradient read only by a Transpose (a tied output head's,
// transposed back to the embedding's layout) moves to MatMulF32 with the
// Transpose folded in: operands swapped, transposes flipped, the
// Transpose's output, no Transpose left; it gives the product and its
// transpose of the standard graph (ORT's Gemm and Transpose) within
// float32 rounding. A Gemm whose output has another reader, or that would
// not be moved, keeps its Transpose.
func TestRewriteF32FoldsOutputTranspose(t *testing.T) {
	lib := withBF16(t)
	build := func() *onnx.Model {
		m := onnx.New("fold", nil)
		g := m.Graph()
		g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(4)})
		g.AddInput("dy", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(5)})
		wg := g.Op("Gemm", []string{"x", "dy"}, "wg", onnx.AttrInt("transA", 1))
		g.Node("Transpose", []string{wg}, []string{"wgT"}, "wgT", onnx.AttrInts("perm", 1, 0))
		g.AddOutput("wgT", onnx.Float, onnx.Shape{onnx.D(5), onnx.D(4)})
		kept := g.Op("Gemm", []string{"x", "dy"}, "kept", onnx.AttrInt("transA", 1))
		g.Node("Transpose", []string{kept}, []string{"keptT"}, "keptT", onnx.AttrInts("perm", 1, 0))
		g.AddOutput("keptT", onnx.Float, onnx.Shape{onnx.D(5), onnx.D(4)})
		g.AddOutput(kept, onnx.Float, onnx.Shape{onnx.D(4), onnx.D(5)})
		return m
	}
	types := staticTypes{"x": {onnx.Float, 2}, "dy": {onnx.Float, 2}}
	if m := build(); kernels.RewriteF32(m, types, kernels.F32Roles{InputGrads: true}) != 0 {
		t.Fatal("folded a Transpose into a product the roles do not move")
	}
	m := build()
	if got := kernels.RewriteF32(m, types, kernels.F32Roles{WeightGrads: true}); got != 2 {
		t.Fatalf("%d products moved, want 2", got)
	}
	ops := map[string]int{}
	for _, n := range m.Graph().P.Node {
		ops[n.GetOpType()]++
		if n.Output[0] == "wgT" {
			ta, tb := onnx.AttrIntOr(n, "transA", -1), onnx.AttrIntOr(n, "transB", -1)
			if n.GetOpType() != "MatMulF32" || !slices.Equal(n.Input, []string{"dy", "x"}) || ta != 1 || tb != 0 {
				t.Fatalf("wgT from %s%v, transA %d transB %d; want MatMulF32[dy x] 1 0", n.GetOpType(), n.Input, ta, tb)
			}
		}
	}
	if ops["Transpose"] != 1 || ops["MatMulF32"] != 2 {
		t.Fatalf("nodes %v: want the kept Gemm's Transpose only, and 2 MatMulF32", ops)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	x, dy := gaussian(rng, 24), gaussian(rng, 30)
	run := func(m *onnx.Model) []float32 {
		return runGraph(t, saveGraph(t, m).path, lib, 2, feed{"x", []int64{6, 4}, x}, feed{"dy", []int64{6, 5}, dy})[0] // wgT, the first output
	}
	want, got := run(build()), run(m)
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("wgT[%d] = %g, standard ops %g", i, got[i], want[i])
		}
	}
}

// A forward product by a transposed matrix (a tied head's x·Eᵀ) moves to
// MatMulF32 reading the matrix with transB, and gives the standard graph's
// logits within float32 rounding; the Transpose goes when nothing else
// reads it and stays for another reader (the input gradient's Gemm).
func TestRewriteF32ReadsTransposedWeight(t *testing.T) {
	lib := withBF16(t)
	for _, otherReader := range []bool{false, true} {
		build := func() *onnx.Model {
			m := onnx.New("head", nil)
			g := m.Graph()
			g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3), onnx.D(4)})
			g.AddInput("e", onnx.Float, onnx.Shape{onnx.D(5), onnx.D(4)})
			g.Node("Transpose", []string{"e"}, []string{"eT"}, "eT", onnx.AttrInts("perm", 1, 0))
			g.Node("MatMul", []string{"x", "eT"}, []string{"logits"}, "logits")
			g.AddOutput("logits", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3), onnx.D(5)})
			if otherReader {
				g.Node("Identity", []string{"eT"}, []string{"eT2"}, "eT2")
				g.AddOutput("eT2", onnx.Float, onnx.Shape{onnx.D(4), onnx.D(5)})
			}
			return m
		}
		types := staticTypes{"x": {onnx.Float, 3}, "e": {onnx.Float, 2}, "eT": {onnx.Float, 2}}
		m := build()
		if got := kernels.RewriteF32(m, types, kernels.F32Roles{Forward: true}); got != 1 {
			t.Fatalf("%d products moved, want 1", got)
		}
		transposes := 0
		for _, n := range m.Graph().P.Node {
			if n.GetOpType() == "Transpose" {
				transposes++
			}
			if n.Output[0] == "logits" && (!slices.Equal(n.Input, []string{"x", "e"}) || onnx.AttrIntOr(n, "transB", 0) != 1) {
				t.Fatalf("logits from %s%v transB %d, want MatMulF32[x e] transB 1", n.GetOpType(), n.Input, onnx.AttrIntOr(n, "transB", 0))
			}
		}
		if want := map[bool]int{false: 0, true: 1}[otherReader]; transposes != want {
			t.Fatalf("another reader %v: %d Transposes left, want %d", otherReader, transposes, want)
		}
		rng := rand.New(rand.NewPCG(10, 11))
		x, e := gaussian(rng, 24), gaussian(rng, 20)
		run := func(m *onnx.Model) []float32 {
			return runGraph(t, saveGraph(t, m).path, lib, 2, feed{"x", []int64{2, 3, 4}, x}, feed{"e", []int64{5, 4}, e})[0]
		}
		want, got := run(build()), run(m)
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("logits[%d] = %g, standard ops %g", i, got[i], want[i])
			}
		}
	}
}

// A tied head's input gradient, a Gemm reading the embedding's Transpose
// that the forward product reads too, moves to MatMulF32 reading the
// embedding with the transpose flipped, so the Transpose goes with both
// products moved (with it left, moving SmolLM2-135M's head gradient cost
// a 46 ms Transpose a step); both give the standard graph's values within
// float32 rounding.
func TestRewriteF32FoldsOperandTranspose(t *testing.T) {
	lib := withBF16(t)
	build := func() *onnx.Model {
		m := onnx.New("head", nil)
		g := m.Graph()
		g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3), onnx.D(4)})
		g.AddInput("e", onnx.Float, onnx.Shape{onnx.D(5), onnx.D(4)})
		g.AddInput("dlogits", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(5)})
		g.Node("Transpose", []string{"e"}, []string{"eT"}, "eT", onnx.AttrInts("perm", 1, 0))
		g.Node("MatMul", []string{"x", "eT"}, []string{"logits"}, "logits")
		g.Node("Gemm", []string{"dlogits", "eT"}, []string{"dx"}, "dx", onnx.AttrInt("transB", 1))
		g.AddOutput("logits", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3), onnx.D(5)})
		g.AddOutput("dx", onnx.Float, onnx.Shape{onnx.D(6), onnx.D(4)})
		return m
	}
	types := staticTypes{"x": {onnx.Float, 3}, "e": {onnx.Float, 2}, "eT": {onnx.Float, 2}, "dlogits": {onnx.Float, 2}}
	m := build()
	if got := kernels.RewriteF32(m, types, kernels.F32Roles{Forward: true, InputGrads: true}); got != 2 {
		t.Fatalf("%d products moved, want 2", got)
	}
	for _, n := range m.Graph().P.Node {
		if n.GetOpType() == "Transpose" {
			t.Fatalf("the Transpose is left: %v", m.Graph().P.Node)
		}
		if n.Output[0] == "dx" && (!slices.Equal(n.Input, []string{"dlogits", "e"}) || onnx.AttrIntOr(n, "transB", -1) != 0) {
			t.Fatalf("dx from %s%v transB %d, want MatMulF32[dlogits e] transB 0", n.GetOpType(), n.Input, onnx.AttrIntOr(n, "transB", -1))
		}
	}
	rng := rand.New(rand.NewPCG(12, 13))
	x, e, dl := gaussian(rng, 24), gaussian(rng, 20), gaussian(rng, 30)
	run := func(m *onnx.Model) [][]float32 {
		return runGraph(t, saveGraph(t, m).path, lib, 2, feed{"x", []int64{2, 3, 4}, x}, feed{"e", []int64{5, 4}, e}, feed{"dlogits", []int64{6, 5}, dl})
	}
	want, got := run(build()), run(m)
	for k, name := range []string{"logits", "dx"} {
		for i := range want[k] {
			if math.Abs(float64(got[k][i]-want[k][i])) > 1e-5*(1+math.Abs(float64(want[k][i]))) {
				t.Fatalf("%s[%d] = %g, standard ops %g", name, i, got[k][i], want[k][i])
			}
		}
	}
}
