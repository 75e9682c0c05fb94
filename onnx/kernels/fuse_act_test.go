package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/shapes"
)

// The rewrites fuse exactly the chains the exporters write and leave
// alone every variant whose fused op would compute something else, or
// whose intermediate values something else reads: no ORT needed, the
// graph's nodes are counted.
func TestFuseLeavesOtherChains(t *testing.T) {
	c := func(g *onnx.Graph, v float64) string { return scalarConst(g, v) }
	gelu := func(g *onnx.Graph, x string, k, one, half float64) string {
		e := g.Op("Erf", []string{g.Op("Mul", []string{x, c(g, k)}, "scaled")}, "erf")
		h := g.Op("Mul", []string{x, g.Op("Add", []string{e, c(g, one)}, "erf1")}, "xerf")
		return g.Op("Mul", []string{h, c(g, half)}, "y")
	}
	geluTanh := func(g *onnx.Graph, x string, cubic float64) string { return geluTanhOps(g, x, cubic, "y") }
	silu := func(g *onnx.Graph, x string) string {
		return g.Op("Mul", []string{x, g.Op("Sigmoid", []string{x}, "sig")}, "silu")
	}
	for _, tc := range []struct {
		name  string
		build func(g *onnx.Graph) []string // returns the graph outputs
		fuse  func(*onnx.Model, kernels.Types) (int, error)
		want  int
	}{
		{"SwiGLU/llama gate", func(g *onnx.Graph) []string { return []string{g.Op("Mul", []string{silu(g, "a"), "b"}, "y")} }, kernels.FuseSwiGLU, 1},
		{"SwiGLU/up first", func(g *onnx.Graph) []string { return []string{g.Op("Mul", []string{"b", silu(g, "a")}, "y")} }, kernels.FuseSwiGLU, 1},
		{"SwiGLU/broadcast up", func(g *onnx.Graph) []string { return []string{g.Op("Mul", []string{silu(g, "a"), "w"}, "y")} }, kernels.FuseSwiGLU, 0},
		{"SwiGLU/SiLU read elsewhere", func(g *onnx.Graph) []string {
			s := silu(g, "a")
			return []string{g.Op("Mul", []string{s, "b"}, "y"), g.Op("Neg", []string{s}, "z")}
		}, kernels.FuseSwiGLU, 0},
		{"SwiGLU/SiLU a graph output", func(g *onnx.Graph) []string {
			s := silu(g, "a")
			return []string{g.Op("Mul", []string{s, "b"}, "y"), s}
		}, kernels.FuseSwiGLU, 0},
		{"SwiGLU/sigmoid of another value", func(g *onnx.Graph) []string {
			return []string{g.Op("Mul", []string{g.Op("Mul", []string{"a", g.Op("Sigmoid", []string{"b"}, "sig")}, "s"), "b"}, "y")}
		}, kernels.FuseSwiGLU, 0},
		{"SwiGLU/SiLU alone", func(g *onnx.Graph) []string { return []string{g.Op("Relu", []string{silu(g, "a")}, "y")} }, kernels.FuseSwiGLU, 0},
		{"Gelu/erf", func(g *onnx.Graph) []string { return []string{gelu(g, "a", 1/math.Sqrt2, 1, 0.5)} }, kernels.FuseGelu, 1},
		{"Gelu/erf twice", func(g *onnx.Graph) []string {
			return []string{gelu(g, "a", 1/math.Sqrt2, 1, 0.5), gelu(g, "b", 1/math.Sqrt2, 1, 0.5)}
		}, kernels.FuseGelu, 2},
		{"Gelu/erf other scale", func(g *onnx.Graph) []string { return []string{gelu(g, "a", 0.7, 1, 0.5)} }, kernels.FuseGelu, 0},
		{"Gelu/erf other offset", func(g *onnx.Graph) []string { return []string{gelu(g, "a", 1/math.Sqrt2, 2, 0.5)} }, kernels.FuseGelu, 0},
		{"Gelu/erf other half", func(g *onnx.Graph) []string { return []string{gelu(g, "a", 1/math.Sqrt2, 1, 0.25)} }, kernels.FuseGelu, 0},
		{"Gelu/erf read elsewhere", func(g *onnx.Graph) []string {
			return []string{gelu(g, "a", 1/math.Sqrt2, 1, 0.5), g.Op("Neg", []string{"erf"}, "z")}
		}, kernels.FuseGelu, 0},
		{"Gelu/tanh", func(g *onnx.Graph) []string { return []string{geluTanh(g, "a", 0.044715)} }, kernels.FuseGelu, 1},
		{"Gelu/tanh other cubic", func(g *onnx.Graph) []string { return []string{geluTanh(g, "a", 0.05)} }, kernels.FuseGelu, 0},
		{"Gelu/tanh square read elsewhere", func(g *onnx.Graph) []string {
			return []string{geluTanh(g, "a", 0.044715), g.Op("Neg", []string{"y.x2"}, "z")}
		}, kernels.FuseGelu, 0},
		{"LayerNorm/last axis", func(g *onnx.Graph) []string {
			return []string{g.Op("LayerNormalization", []string{"a", "w", "w"}, "y", onnx.AttrInt("axis", -1))}
		}, kernels.FuseLayerNorm, 1},
		{"LayerNorm/axis 2 of 3", func(g *onnx.Graph) []string {
			return []string{g.Op("LayerNormalization", []string{"a", "w", "w"}, "y", onnx.AttrInt("axis", 2))}
		}, kernels.FuseLayerNorm, 1},
		{"LayerNorm/two axes", func(g *onnx.Graph) []string {
			return []string{g.Op("LayerNormalization", []string{"a", "m", "m"}, "y", onnx.AttrInt("axis", 1))}
		}, kernels.FuseLayerNorm, 0},
		{"LayerNorm/no bias", func(g *onnx.Graph) []string {
			return []string{g.Op("LayerNormalization", []string{"a", "w"}, "y", onnx.AttrInt("axis", -1))}
		}, kernels.FuseLayerNorm, 0},
		{"LayerNorm/double stash", func(g *onnx.Graph) []string {
			return []string{g.Op("LayerNormalization", []string{"a", "w", "w"}, "y", onnx.AttrInt("axis", -1), onnx.AttrInt("stash_type", 11))}
		}, kernels.FuseLayerNorm, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fuseModel()
			g := m.Graph()
			for _, o := range tc.build(g) {
				g.AddOutput(o, onnx.Float, nil)
			}
			before := len(g.P.Node)
			info, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			n, err := tc.fuse(m, info)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.want {
				t.Fatalf("fused %d, want %d", n, tc.want)
			}
			// Fused: the chain's characteristic op is gone. Not fused: the
			// graph is as it was.
			migu, left := 0, 0
			for _, node := range g.P.Node {
				switch {
				case node.GetDomain() == onnx.DomainMigu:
					migu++
				case map[string]bool{"Sigmoid": true, "Erf": true, "Tanh": true, "LayerNormalization": true}[node.GetOpType()]:
					left++
				}
			}
			if migu != n || n > 0 && left > 0 || n == 0 && len(g.P.Node) != before {
				t.Fatalf("%d ai.migu nodes for %d fused, %d standard activations or norms left; %d nodes, %d before", migu, n, left, len(g.P.Node), before)
			}
			if (m.Opset(onnx.DomainMigu) != 0) != (n > 0) {
				t.Fatalf("ai.migu imported at opset %d with %d fused", m.Opset(onnx.DomainMigu), n)
			}
			// The rewritten graph still infers: every value it reads exists.
			if _, err := shapes.Infer(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FuseGelu takes in the Mul that gates a GELU by a value of the GELU
// input's shape, in either operand order, and leaves a Mul by itself or
// by a broadcast value after the fused GELU.
func TestFuseGeluTakesGate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gate   func(g *onnx.Graph, act string) string // the Mul after the GELU
		inputs []string                               // the fused Gelu's
		left   int                                    // standard Muls left
	}{
		{"gate second", func(g *onnx.Graph, act string) string { return g.Op("Mul", []string{act, "b"}, "y") }, []string{"a", "b"}, 0},
		{"gate first", func(g *onnx.Graph, act string) string { return g.Op("Mul", []string{"b", act}, "y") }, []string{"a", "b"}, 0},
		{"gated by its input", func(g *onnx.Graph, act string) string { return g.Op("Mul", []string{act, "a"}, "y") }, []string{"a", "a"}, 0},
		{"squared", func(g *onnx.Graph, act string) string { return g.Op("Mul", []string{act, act}, "y") }, []string{"a"}, 1},
		{"by a broadcast", func(g *onnx.Graph, act string) string { return g.Op("Mul", []string{act, "w"}, "y") }, []string{"a"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fuseModel()
			g := m.Graph()
			g.AddOutput(tc.gate(g, geluTanhOps(g, "a", 0.044715, "act")), onnx.Float, nil)
			info, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := kernels.FuseGelu(m, info); err != nil || n != 1 {
				t.Fatalf("fused %d (%v), want 1", n, err)
			}
			var fused []string
			muls := 0
			for _, n := range g.P.Node {
				switch {
				case n.GetDomain() == onnx.DomainMigu:
					fused = n.Input
				case n.GetOpType() == "Mul":
					muls++
				}
			}
			if fmt.Sprint(fused) != fmt.Sprint(tc.inputs) || muls != tc.left {
				t.Fatalf("Gelu inputs %v and %d Muls left, want %v and %d", fused, muls, tc.inputs, tc.left)
			}
			if _, err := shapes.Infer(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// fuseModel is the rewrite tests' graph before their nodes: float32
// inputs a and b [2, seq, 8], w [8] and m [seq, 8].
func fuseModel() *onnx.Model {
	shape := onnx.Shape{onnx.D(2), onnx.Sym("seq"), onnx.D(8)}
	m := onnx.New("fuse", nil)
	g := m.Graph()
	g.AddInput("a", onnx.Float, shape)
	g.AddInput("b", onnx.Float, shape)
	g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(8)})
	g.AddInput("m", onnx.Float, onnx.Shape{onnx.Sym("seq"), onnx.D(8)})
	return m
}
