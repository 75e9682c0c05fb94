package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/shapes"
)

// buildResidual writes y = x + Σ_k n ⊙ c_k (uses constants c_k [d]) with
// n = RMSNorm(x, w) (or, with ln, LayerNormalization(x, w, b)), a loss
// Σ y ⊙ r and the gradients dx and dw: dx is Sum(the residual's gradient,
// the norm's dX), and the norm's dY the Sum of the uses' gradients. With
// kernels the norm is rewritten to the ai.migu kernels; then residual
// folds the first Sum into the norm's backward kernel (FuseResidualGrads)
// and upstream the second (FuseNormUpstream).
func buildResidual(t testing.TB, shape []int64, r []float32, uses int, ln, kernelsOn, residual, upstream bool) graphFile {
	t.Helper()
	d := shape[len(shape)-1]
	m := onnx.New("residual", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(shape))
	g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(d)})
	var norm string
	fuse := kernels.FuseRMSNorm
	if ln {
		g.AddInput("b", onnx.Float, onnx.Shape{onnx.D(d)})
		norm = g.Op("LayerNormalization", []string{"x", "w", "b"}, "norm", onnx.AttrInt("axis", -1), onnx.AttrFloat("epsilon", lnEps))
		fuse = kernels.FuseLayerNorm
	} else {
		sq := g.Op("Mul", []string{"x", "x"}, "norm.sq")
		ms := g.Op("ReduceMean", []string{sq, g.ConstInt64("axes", []int64{1}, -1)}, "norm.ms", onnx.AttrInt("keepdims", 1))
		rs := g.Op("Sqrt", []string{g.Op("Add", []string{ms, g.Const("eps", nil, eps)}, "norm.var")}, "norm.rms")
		inv := g.Op("Reciprocal", []string{rs}, "norm.inv")
		norm = g.Op("Mul", []string{g.Op("Mul", []string{"x", inv}, "norm.normed"), "w"}, "norm")
	}
	rng := rand.New(rand.NewPCG(uint64(d), 5))
	branch := ""
	for k := range uses {
		term := g.Op("Mul", []string{norm, g.Const(fmt.Sprintf("c%d", k), []int64{d}, random(rng, int(d), -1, 1)...)}, "use")
		if branch == "" {
			branch = term
		} else {
			branch = g.Op("Add", []string{branch, term}, "branch")
		}
	}
	y := g.Op("Add", []string{"x", branch}, "y")
	loss := weightedLoss(g, y, shape, r)
	if kernelsOn {
		info, err := shapes.Infer(m)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := fuse(m, info); err != nil || n != 1 {
			t.Fatalf("fused %d norms (%v), want 1", n, err)
		}
	}
	info, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	res, err := grad.Differentiate(m, info, loss, []string{"x", "w"})
	if err != nil {
		t.Fatal(err)
	}
	g.RemoveOutput(loss)
	for _, p := range []wrt{{"x", shape}, {"w", []int64{d}}} {
		g.Node("Identity", []string{res.Grads[p.name]}, []string{"d" + p.name}, "d"+p.name)
		g.AddOutput("d"+p.name, onnx.Float, dimsOf(p.shape))
	}
	if residual {
		if n := kernels.FuseResidualGrads(m); n != 1 {
			t.Fatalf("folded %d residual Sums, want 1", n)
		}
	}
	if upstream {
		if n := kernels.FuseNormUpstream(m); n != 1 {
			t.Fatalf("folded %d upstream Sums, want 1", n)
		}
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	out := graphFile{path: filepath.Join(t.TempDir(), "g.onnx"), nodes: map[string]int{}}
	for _, n := range g.P.Node {
		op := n.GetOpType()
		if n.GetDomain() != "" {
			op = n.GetDomain() + "." + op
		}
		out.nodes[op]++
	}
	if err := m.Save(out.path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The Sum of a residual's gradient and a norm's dX, folded into
// RMSNormGrad or LayerNormGrad (their optional Residual input), and the Sum
// of the gradients of the norm's output from its 2, 3 or 4 uses, folded
// into the same kernel as further dY inputs, each alone and both: the
// unfolded graph's bits (the same kernels and separate ORT Sums) on 1 and
// 2 threads, the standard-op graph's gradients to float32 rounding, and
// no Sum left for a fold.
func TestResidualGradFolded(t *testing.T) {
	lib := withKernels(t)
	for _, ln := range []bool{false, true} {
		for i, shape := range [][]int64{{2, 3, 8}, {3, 7, 64}, {2, 40, 576}, {37, 3}} {
			uses := 2 + i%3
			t.Run(fmt.Sprintf("layernorm=%v/%v/uses=%d", ln, shape, uses), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(numel(shape)), 11))
				n, d := numel(shape), int(shape[len(shape)-1])
				in := []feed{{"x", shape, random(rng, n, -1.5, 2.5)}, {"w", shape[len(shape)-1:], random(rng, d, 0.5, 1.5)}}
				if ln {
					in = append(in, feed{"b", shape[len(shape)-1:], random(rng, d, -0.5, 0.5)})
				}
				r := random(rng, n, -1, 1)
				want := runGraph(t, buildResidual(t, shape, r, uses, ln, false, false, false).path, "", 1, in...)
				unfolded := buildResidual(t, shape, r, uses, ln, true, false, false)
				if unfolded.nodes["Sum"] != 2 {
					t.Fatalf("unfolded graph: %d Sums, want 2", unfolded.nodes["Sum"])
				}
				for _, fold := range []struct{ residual, upstream bool }{{true, false}, {false, true}, {true, true}} {
					folded := buildResidual(t, shape, r, uses, ln, true, fold.residual, fold.upstream)
					if left := 2 - btoi(fold.residual) - btoi(fold.upstream); folded.nodes["Sum"] != left {
						t.Fatalf("folds %+v: %d Sums left, want %d", fold, folded.nodes["Sum"], left)
					}
					for _, threads := range []int{1, 2} {
						base := runGraph(t, unfolded.path, lib, threads, in...)
						got := runGraph(t, folded.path, lib, threads, in...)
						for i, name := range []string{"dx", "dw"} {
							if at := firstDiff(got[i], base[i]); at >= 0 {
								t.Errorf("folds %+v, %d threads: %s[%d] = %.9g folded, %.9g unfolded", fold, threads, name, at, got[i][at], base[i][at])
							}
							if err := closeTo(got[i], want[i], 1e-5); err != nil {
								t.Errorf("folds %+v, %d threads: %s against standard ops: %v", fold, threads, name, err)
							}
						}
					}
				}
			})
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
