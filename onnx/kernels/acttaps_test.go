package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/shapes"
)

// Where actTapsGraph puts the taps of the activation's inputs.
const (
	noTaps       = "none"      // no taps
	separateTaps = "separate"  // AbsColSum nodes
	kernelTaps   = "in-kernel" // inside the activation (FuseActivationTaps)
)

// actTapsGraph writes a graph of one fused activation (a.fused, as Fuse
// makes it) with outputs y and, unless taps is noTaps, the sum of |input|
// of every input, by an unmasked AbsColSum or, with kernelTaps, by the
// activation itself, FuseActivationTaps having moved every tap there.
func actTapsGraph(t testing.TB, a activation, shape []int64, taps string) string {
	t.Helper()
	m := onnx.New("acttaps", nil)
	m.SetOpset(onnx.DomainMigu, kernels.Opset)
	g := m.Graph()
	var attrs []onnx.Attr
	switch a.name {
	case "GeluErf", "GeluErfGated":
		attrs = append(attrs, onnx.AttrString("approximate", kernels.GeluErf))
	case "GeluTanh", "GeluTanhGated":
		attrs = append(attrs, onnx.AttrString("approximate", kernels.GeluTanh))
	}
	for _, in := range a.inputs {
		g.AddInput(in, onnx.Float, dimsOf(shape))
	}
	op := a.fused[len(onnx.DomainMigu)+1:]
	y := g.Op(op, a.inputs, "y", attrs...)
	g.P.Node[len(g.P.Node)-1].Domain = proto.String(onnx.DomainMigu)
	g.AddOutput(y, onnx.Float, dimsOf(shape))
	d := shape[len(shape)-1]
	for _, in := range a.inputs {
		if taps == noTaps {
			break
		}
		s := g.Op("AbsColSum", []string{in}, "magnitude/"+in)
		g.P.Node[len(g.P.Node)-1].Domain = proto.String(onnx.DomainMigu)
		g.AddOutput(s, onnx.Float, onnx.Shape{onnx.D(d)})
	}
	if taps == kernelTaps {
		if n := kernels.FuseActivationTaps(m); n != len(a.inputs) || len(g.P.Node) != 1 || g.P.Node[0].GetOpType() != op+"Taps" {
			t.Fatalf("FuseActivationTaps moved %d taps, want %d; nodes %v", n, len(a.inputs), g.P.Node)
		}
		if _, err := shapes.Infer(m); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "acttaps.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// SwiGLUTaps and GeluTaps give the activation's output and AbsColSum's
// sums, bit for bit, on 1 and 2 threads, and the sums equal float64 sums
// of |input| per column to float32 rounding. The shapes cover rows fewer
// than one tap block (16), short last blocks (385 rows), more rows than
// 64 blocks of 16 (1100) and widths off the vector lengths.
func TestActivationTapsMatchHandSums(t *testing.T) {
	lib := withKernels(t)
	for _, a := range activations {
		for _, shape := range [][]int64{{2, 3, 8}, {5, 77, 333}, {1100, 40}, {4, 1, 1, 33}} {
			t.Run(a.name+"/"+fmt.Sprint(shape), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(numel(shape)), 9))
				n, d := numel(shape), int(shape[len(shape)-1])
				feeds := make([]feed, len(a.inputs))
				for i, name := range a.inputs {
					feeds[i] = feed{name, shape, random(rng, n, a.lo, a.hi)}
				}
				want := runGraph(t, actTapsGraph(t, a, shape, separateTaps), lib, 1, feeds...)
				path := actTapsGraph(t, a, shape, kernelTaps)
				for _, threads := range []int{1, 2} {
					got := runGraph(t, path, lib, threads, feeds...)
					for k := range want {
						for j := range want[k] {
							if math.Float32bits(got[k][j]) != math.Float32bits(want[k][j]) {
								t.Fatalf("%d threads: output %d [%d] = %v, the separate kernels' %v", threads, k, j, got[k][j], want[k][j])
							}
						}
					}
					for i, f := range feeds {
						x := f.value.([]float32)
						sums := make([]float64, d)
						for r := range n / d {
							for j := range d {
								sums[j] += math.Abs(float64(x[r*d+j]))
							}
						}
						for j, s := range sums {
							if e := math.Abs(float64(got[1+i][j]) - s); !(e <= 1e-5*math.Max(1, s)) {
								t.Fatalf("%d threads: sum of |%s| [%d] = %v, float64 %v", threads, f.name, j, got[1+i][j], s)
							}
						}
					}
				}
			})
		}
	}
}

// FuseActivationTaps moves only unmasked taps of an activation's input,
// each once; a SwiGLU with one tapped input gets an unread sum of the
// other; nothing else changes. No ORT needed: the nodes are read.
func TestFuseActivationTapsChoosesTaps(t *testing.T) {
	shape := onnx.Shape{onnx.D(2), onnx.Sym("seq"), onnx.D(8)}
	migu := func(g *onnx.Graph, op string, in []string, out string) string {
		v := g.Op(op, in, out)
		g.P.Node[len(g.P.Node)-1].Domain = proto.String(onnx.DomainMigu)
		return v
	}
	for _, tc := range []struct {
		name  string
		build func(g *onnx.Graph) []string // the graph outputs
		want  int                          // taps moved
		ops   []string                     // the node types after, in order
	}{
		{"SwiGLU both", func(g *onnx.Graph) []string {
			return []string{migu(g, "SwiGLU", []string{"a", "b"}, "y"), migu(g, "AbsColSum", []string{"a"}, "sa"), migu(g, "AbsColSum", []string{"b"}, "sb")}
		}, 2, []string{"SwiGLUTaps"}},
		{"SwiGLU up only", func(g *onnx.Graph) []string {
			return []string{migu(g, "SwiGLU", []string{"a", "b"}, "y"), migu(g, "AbsColSum", []string{"b"}, "sb")}
		}, 1, []string{"SwiGLUTaps"}},
		{"Gelu", func(g *onnx.Graph) []string {
			return []string{migu(g, "Gelu", []string{"a"}, "y"), migu(g, "AbsColSum", []string{"a"}, "sa")}
		}, 1, []string{"GeluTaps"}},
		{"gated Gelu both", func(g *onnx.Graph) []string {
			return []string{migu(g, "Gelu", []string{"a", "b"}, "y"), migu(g, "AbsColSum", []string{"a"}, "sa"), migu(g, "AbsColSum", []string{"b"}, "sb")}
		}, 2, []string{"GeluTaps"}},
		{"gated Gelu gate only", func(g *onnx.Graph) []string {
			return []string{migu(g, "Gelu", []string{"a", "b"}, "y"), migu(g, "AbsColSum", []string{"b"}, "sb")}
		}, 1, []string{"GeluTaps"}},
		{"masked tap", func(g *onnx.Graph) []string {
			return []string{migu(g, "Gelu", []string{"a"}, "y"), migu(g, "AbsColSum", []string{"a", "mask"}, "sa")}
		}, 0, []string{"Gelu", "AbsColSum"}},
		{"tap of the output", func(g *onnx.Graph) []string {
			y := migu(g, "Gelu", []string{"a"}, "y")
			return []string{y, migu(g, "AbsColSum", []string{y}, "sy")}
		}, 0, []string{"Gelu", "AbsColSum"}},
		{"standard activation", func(g *onnx.Graph) []string {
			return []string{g.Op("Relu", []string{"a"}, "y"), migu(g, "AbsColSum", []string{"a"}, "sa")}
		}, 0, []string{"Relu", "AbsColSum"}},
		{"two activations of one tapped value", func(g *onnx.Graph) []string {
			return []string{migu(g, "Gelu", []string{"a"}, "y"), migu(g, "Gelu", []string{"a"}, "z"), migu(g, "AbsColSum", []string{"a"}, "sa")}
		}, 1, []string{"GeluTaps", "Gelu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := onnx.New("t", nil)
			g := m.Graph()
			for _, in := range []string{"a", "b"} {
				g.AddInput(in, onnx.Float, shape)
			}
			g.AddInput("mask", onnx.Int64, shape[:2])
			outs := tc.build(g)
			for _, o := range outs {
				g.AddOutput(o, onnx.Float, nil)
			}
			if got := kernels.FuseActivationTaps(m); got != tc.want {
				t.Fatalf("moved %d taps, want %d", got, tc.want)
			}
			var ops []string
			for _, n := range g.P.Node {
				ops = append(ops, n.GetOpType())
			}
			if fmt.Sprint(ops) != fmt.Sprint(tc.ops) {
				t.Fatalf("nodes %v, want %v", ops, tc.ops)
			}
			// Every graph output is still computed by some node.
			made := map[string]bool{}
			for _, n := range g.P.Node {
				for _, o := range n.Output {
					made[o] = true
				}
			}
			for _, o := range outs {
				if !made[o] {
					t.Errorf("output %s is no node's", o)
				}
			}
			if n := g.P.Node[0]; strings.HasSuffix(n.GetOpType(), "Taps") && (len(n.Output) != 1+len(n.Input) || n.Output[1] == n.Output[len(n.Output)-1] && len(n.Input) == 2) {
				t.Errorf("%s outputs %v for inputs %v", n.GetOpType(), n.Output, n.Input)
			}
		})
	}
}
