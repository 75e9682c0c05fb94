package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// buildResidual writes y = x + n ⊙ n with n = RMSNorm(x, w) (or, with ln,
// LayerNormalization(x, w, b)), a loss Σ y ⊙ r and the gradients dx and
// dw: dx is Sum(the residual's gradient, the norm's dX). With kernels the
// norm is rewritten to the ai.migu kernels; with fold, the Sum then goes
// into the norm's backward kernel (FuseResidualGrads).
func buildResidual(t testing.TB, shape []int64, r []float32, ln, kernelsOn, fold bool) graphFile {
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
	y := g.Op("Add", []string{"x", g.Op("Mul", []string{norm, norm}, "branch")}, "y")
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
	if fold {
		if n := kernels.FuseResidualGrads(m); n != 1 {
			t.Fatalf("folded %d Sums, want 1", n)
		}
	}
	return saveGraph(t, m)
}

// The Sum of a residual's gradient and a norm's dX, folded into
// RMSNormGrad or LayerNormGrad (their optional Residual input), gives the
// unfolded graph's bits (the same kernels and a separate ORT Sum) on 1 and
// 2 threads, and the standard-op graph's gradients to float32 rounding;
// the folded graph has that Sum no more.
func TestResidualGradFolded(t *testing.T) {
	lib := withKernels(t)
	for _, ln := range []bool{false, true} {
		for _, shape := range [][]int64{{2, 3, 8}, {3, 7, 64}, {2, 40, 576}, {37, 3}} {
			t.Run(fmt.Sprintf("layernorm=%v/%v", ln, shape), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(numel(shape)), 11))
				n, d := numel(shape), int(shape[len(shape)-1])
				in := []feed{{"x", shape, random(rng, n, -1.5, 2.5)}, {"w", shape[len(shape)-1:], random(rng, d, 0.5, 1.5)}}
				if ln {
					in = append(in, feed{"b", shape[len(shape)-1:], random(rng, d, -0.5, 0.5)})
				}
				r := random(rng, n, -1, 1)
				std := buildResidual(t, shape, r, ln, false, false)
				unfolded := buildResidual(t, shape, r, ln, true, false)
				folded := buildResidual(t, shape, r, ln, true, true)
				// (The branch n ⊙ n adds two gradients of n: one more Sum.)
				if unfolded.nodes["Sum"] != 2 || folded.nodes["Sum"] != 1 {
					t.Fatalf("Sums: %d unfolded, %d folded", unfolded.nodes["Sum"], folded.nodes["Sum"])
				}
				want := runGraph(t, std.path, "", 1, in...)
				for _, threads := range []int{1, 2} {
					base := runGraph(t, unfolded.path, lib, threads, in...)
					got := runGraph(t, folded.path, lib, threads, in...)
					for i, name := range []string{"dx", "dw"} {
						if at := firstDiff(got[i], base[i]); at >= 0 {
							t.Errorf("%d threads: %s[%d] = %.9g folded, %.9g unfolded", threads, name, at, got[i][at], base[i][at])
						}
						if err := closeTo(got[i], want[i], 1e-5); err != nil {
							t.Errorf("%d threads: %s against standard ops: %v", threads, name, err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkNormGradFolds runs buildResidual's graph at the small presets'
// activations ([4, 128, 512], RMSNorm and LayerNorm) with the kernels, the
// residual's gradient added by an ORT Sum node and folded into the norm's
// backward kernel, on 1 and 2 threads, with CPU time per run as
// BenchmarkRMSNorm reports it.
func BenchmarkNormGradFolds(b *testing.B) {
	lib := withKernels(b)
	shape := []int64{4, 128, 512}
	rng := rand.New(rand.NewPCG(1, 2))
	n, d := numel(shape), int(shape[len(shape)-1])
	x, w, bias, r := random(rng, n, -1.5, 2.5), random(rng, d, 0.5, 1.5), random(rng, d, -0.5, 0.5), random(rng, n, -1, 1)
	for _, ln := range []bool{false, true} {
		for _, threads := range []int{1, 2} {
			for _, fold := range []bool{false, true} {
				name := fmt.Sprintf("%s/threads=%d/folded=%v", map[bool]string{false: "RMSNorm", true: "LayerNorm"}[ln], threads, fold)
				b.Run(name, func(b *testing.B) {
					in := map[string]ort.Value{"x": benchTensor(b, x, shape...), "w": benchTensor(b, w, int64(d))}
					if ln {
						in["b"] = benchTensor(b, bias, int64(d))
					}
					out := map[string]ort.Value{"dx": benchTensor(b, make([]float32, n), shape...), "dw": benchTensor(b, make([]float32, d), int64(d))}
					benchGraph(b, buildResidual(b, shape, r, ln, true, fold).path, lib, true, threads, in, out)
				})
			}
		}
	}
}
