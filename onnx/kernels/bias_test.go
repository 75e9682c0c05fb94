package kernels_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// saveBiased writes a graph with p's product twice, as op: "fused" adds
// the bias inside the product (its optional third input), "plain" in an
// Add after it.
func (p product) saveBiased(t *testing.T, op string) string {
	t.Helper()
	m := onnx.New("bias", nil)
	g := m.Graph()
	_, _, n := p.dims()
	g.AddInput("a", onnx.Float, dimsOf(p.a))
	g.AddInput("b", onnx.Float, dimsOf(p.b))
	g.AddInput("bias", onnx.Float, onnx.Shape{onnx.D(int64(n))})
	trans := []onnx.Attr{onnx.AttrInt("transA", p.transA), onnx.AttrInt("transB", p.transB)}
	g.Node(op, []string{"a", "b", "bias"}, []string{"fused"}, "fused", trans...)
	g.Node(op, []string{"a", "b"}, []string{"y"}, "y", trans...)
	for _, nd := range g.P.Node {
		nd.Domain = &[]string{onnx.DomainMiguBF16}[0]
	}
	g.Node("Add", []string{"y", "bias"}, []string{"plain"}, "plain")
	ys := append(append([]int64{}, p.a[:len(p.a)-1]...), int64(n))
	if p.transA == 1 {
		ys = []int64{p.a[1], int64(n)}
	}
	return saveFusedPlain(t, m, onnx.DomainMiguBF16, ys)
}

// A bias given to MatMulF32 or MatMulBF16 (on both bf16 paths) gives the
// bits of an Add after the product, for every shape of the product tests
// with a float32 B (3-D A, each transposition, blocks with edges, so
// that each block reads its own columns of the bias; K 0, where Y is the
// bias), on 1 and 2 threads.
func TestProductBias(t *testing.T) {
	lib := withBF16(t)
	for _, c := range []struct{ op, path string }{{"MatMulF32", ""}, {"MatMulBF16", "native"}, {"MatMulBF16", "f32"}} {
		name := c.op
		if c.path != "" {
			name += "/" + c.path
		}
		t.Run(name, func(t *testing.T) {
			if c.path != "" {
				t.Setenv("MIGU_BF16_PATH", c.path)
			}
			for i, p := range products {
				if p.bf16B {
					continue
				}
				t.Run(p.name, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(i), 44))
					_, _, n := p.dims()
					a, b, bias := gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b)), gaussian(rng, n)
					path := p.saveBiased(t, c.op)
					for _, threads := range []int{1, 2} {
						out := runGraph(t, path, lib, threads,
							feed{"a", p.a, a}, feed{"b", p.b, b}, feed{"bias", []int64{int64(n)}, bias})
						if j := firstDiff(out[0], out[1]); j >= 0 {
							t.Fatalf("%d threads: y differs at %d (%d and %d values) with the bias in the product and with an Add", threads, j, len(out[0]), len(out[1]))
						}
					}
				})
			}
		})
	}
}

// A bias that is not float32 [N] is refused with a message that names
// the op and the bias.
func TestProductBiasRefusesBadBias(t *testing.T) {
	lib := withBF16(t)
	p := product{a: []int64{4, 8}, b: []int64{8, 6}}
	for _, c := range []struct {
		name  string
		shape []int64
	}{{"N + 1", []int64{7}}, {"2-D", []int64{1, 6}}} {
		t.Run(c.name, func(t *testing.T) {
			m := onnx.New("bad", nil)
			g := m.Graph()
			g.AddInput("a", onnx.Float, dimsOf(p.a))
			g.AddInput("b", onnx.Float, dimsOf(p.b))
			g.AddInput("bias", onnx.Float, dimsOf(c.shape))
			g.Node("MatMulF32", []string{"a", "b", "bias"}, []string{"y"}, "y")
			g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
			g.AddOutput("y", onnx.Float, onnx.Shape{onnx.D(4), onnx.D(6)})
			m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
			path := saveGraph(t, m).path
			rng := rand.New(rand.NewPCG(1, 2))
			_, err := runGraphErr(t, path, lib, 1, feed{"a", p.a, gaussian(rng, 32)}, feed{"b", p.b, gaussian(rng, 48)},
				feed{"bias", c.shape, gaussian(rng, numel(c.shape))})
			if err == nil || !strings.Contains(err.Error(), "MatMulF32: Bias must be float32 [N]") {
				t.Fatalf("error %v, want MatMulF32's refusal of the bias", err)
			}
		})
	}
}

// FuseProductBias folds an Add of a bias [N] into the oneDNN product it
// reads, either operand order, MatMulF32 and MatMulBF16, and leaves
// alone: a product whose output is also a graph output or read by
// another node, a bias that is not 1-D, a bias computed after the
// product, an Add of a product to itself, and ORT's MatMul. The
// rewritten graph gives the original's outputs bit for bit.
func TestFuseProductBias(t *testing.T) {
	lib := withBF16(t)
	const rows, k, n = 6, 8, 5
	build := func() *onnx.Model {
		m := onnx.New("bias", nil)
		g := m.Graph()
		g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(rows / 2), onnx.D(k)})
		g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(k), onnx.D(n)})
		g.AddInput("b", onnx.Float, onnx.Shape{onnx.D(n)})
		g.AddInput("b2", onnx.Float, onnx.Shape{onnx.D(1), onnx.D(n)})
		product := func(op, name string) string {
			y := g.Op(op, []string{"x", "w"}, name)
			if op != "MatMul" {
				g.P.Node[len(g.P.Node)-1].Domain = &[]string{onnx.DomainMiguBF16}[0]
			}
			return y
		}
		outs := map[string]string{
			"folded":  g.Op("Add", []string{product("MatMulF32", "p1"), "b"}, "folded"),
			"swapped": g.Op("Add", []string{"b", product("MatMulBF16", "p2")}, "swapped"),
		}
		p3 := product("MatMulF32", "p3")
		outs["output"], outs["p3"] = g.Op("Add", []string{p3, "b"}, "output"), p3
		p4 := product("MatMulF32", "p4")
		outs["reread"] = g.Op("Add", []string{g.Op("Add", []string{p4, "b"}, "reread1"), p4}, "reread")
		outs["wide"] = g.Op("Add", []string{product("MatMulF32", "p5"), "b2"}, "wide")
		p6 := product("MatMulF32", "p6")
		outs["later"] = g.Op("Add", []string{p6, g.Op("Neg", []string{"b"}, "negb")}, "later")
		p7 := product("MatMulF32", "p7")
		outs["self"] = g.Op("Add", []string{p7, p7}, "self")
		outs["mlas"] = g.Op("Add", []string{product("MatMul", "p8"), "b"}, "mlas")
		for _, name := range []string{"folded", "swapped", "output", "p3", "reread", "wide", "later", "self", "mlas"} {
			g.AddOutput(outs[name], onnx.Float, nil)
		}
		m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
		return m
	}
	m := build()
	if got := inferAndFuse(t, m, kernels.FuseProductBias); got != 2 {
		t.Fatalf("folded %d biases, want 2 (folded, swapped)", got)
	}
	for _, nd := range m.Graph().P.Node {
		name, _, _ := strings.Cut(nd.GetName(), "/")
		want := 2
		if name == "p1" || name == "p2" {
			want = 3
		}
		if strings.HasPrefix(name, "p") && len(nd.Input) != want {
			t.Errorf("product %s has %d inputs, want %d", name, len(nd.Input), want)
		}
		if name == "folded" || name == "swapped" {
			t.Errorf("Add %s is still in the graph", name)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	feeds := []feed{{"x", []int64{2, rows / 2, k}, gaussian(rng, rows*k)}, {"w", []int64{k, n}, gaussian(rng, k*n)},
		{"b", []int64{n}, gaussian(rng, n)}, {"b2", []int64{1, n}, gaussian(rng, n)}}
	sameOutputs(t, lib, m, build(), feeds...)
}
