package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// lnEps is roberta's layer_norm_eps.
const lnEps = 1e-12

// buildLN is buildRMS for y = LayerNormalization(x, w, b) over the last
// axis, as exporters.Builder.LayerNorm writes it. Outputs: y, dx, dw, db.
func buildLN(t testing.TB, shape []int64, r []float32, fused bool) graphFile {
	t.Helper()
	d := shape[len(shape)-1]
	m := onnx.New("ln", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(shape))
	g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(d)})
	g.AddInput("b", onnx.Float, onnx.Shape{onnx.D(d)})
	y := g.Op("LayerNormalization", []string{"x", "w", "b"}, "y", onnx.AttrInt("axis", -1), onnx.AttrFloat("epsilon", lnEps))
	loss := weightedLoss(g, y, shape, r)
	g.AddOutput(y, onnx.Float, dimsOf(shape))
	return withGradient(t, m, loss, false, []wrt{{"x", shape}, {"w", []int64{d}}, {"b", []int64{d}}}, fusedBy(fused, kernels.FuseLayerNorm), 1)
}

// runLN runs a graph of buildLN and returns y, dx, dw, db.
func runLN(t testing.TB, path, lib string, threads int, shape []int64, x, w, b []float32) [][]float32 {
	t.Helper()
	d := shape[len(shape)-1:]
	return runGraph(t, path, lib, threads, feed{"x", shape, x}, feed{"w", d, w}, feed{"b", d, b})
}

// The fused LayerNorm kernels against ORT's LayerNormalization and migu's
// standard-op gradient rule for it, forward and backward, on random
// inputs with an offset (so the mean matters): equal to 1e-5 of the
// tensor's largest magnitude (at least 1), on 1 and 2 threads.
func TestLayerNormMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range shapeCases {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(numel(shape)), 17))
			n, d := numel(shape), int(shape[len(shape)-1])
			x := random(rng, n, -1.5, 2.5)
			w := random(rng, d, 0.5, 1.5)
			b := random(rng, d, -0.5, 0.5)
			r := random(rng, n, -1, 1)
			std := buildLN(t, shape, r, false)
			fused := buildLN(t, shape, r, true)
			if fused.nodes["ai.migu.LayerNorm"] != 1 || fused.nodes["ai.migu.LayerNormGrad"] != 1 || fused.nodes["LayerNormalization"] != 0 || fused.nodes["ReduceMean"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			if std.nodes["ai.migu.LayerNorm"] != 0 {
				t.Fatalf("standard graph holds fused nodes: %v", std.nodes)
			}
			want := runLN(t, std.path, "", 1, shape, x, w, b)
			for _, threads := range []int{1, 2} {
				got := runLN(t, fused.path, lib, threads, shape, x, w, b)
				for i, name := range []string{"y", "dx", "dw", "db"} {
					if err := closeTo(got[i], want[i], 1e-5); err != nil {
						t.Errorf("%d threads: %s: %v", threads, name, err)
					}
				}
			}
		})
	}
}

// lnLoss is Σ r ⊙ LayerNorm(x, w, b) in float64.
func lnLoss(x, w, b, r []float64, d int) float64 {
	var loss float64
	for row := 0; row*d < len(x); row++ {
		xs := x[row*d : (row+1)*d]
		var mean, dev float64
		for _, v := range xs {
			mean += v
		}
		mean /= float64(d)
		for _, v := range xs {
			dev += (v - mean) * (v - mean)
		}
		inv := 1 / math.Sqrt(dev/float64(d)+lnEps)
		for j, v := range xs {
			loss += r[row*d+j] * ((v-mean)*inv*w[j] + b[j])
		}
	}
	return loss
}

// The fused LayerNorm against a float64 reference: Y to 1e-6 of
// max(1, |y|), and dX, dW, dB against central finite differences of the
// reference loss to 2e-5.
func TestLayerNormGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range [][]int64{{2, 3, 7}, {1, 2, 19}, {18, 4}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(numel(shape)), 23))
			n, d := numel(shape), int(shape[len(shape)-1])
			x32, w32, b32 := random(rng, n, -1.5, 2.5), random(rng, d, 0.5, 1.5), random(rng, d, -0.5, 0.5)
			r32 := random(rng, n, -1, 1)
			got := runLN(t, buildLN(t, shape, r32, true).path, lib, 2, shape, x32, w32, b32)
			x, w, b, r := widen(x32), widen(w32), widen(b32), widen(r32)
			// Forward: y = ∂loss/∂r.
			for i := range x {
				one := make([]float64, n)
				one[i] = 1
				y := lnLoss(x, w, b, one, d)
				if e := math.Abs(float64(got[0][i]) - y); e > 1e-6*math.Max(1, math.Abs(y)) {
					t.Fatalf("y[%d] = %g, float64 reference %g", i, got[0][i], y)
				}
			}
			loss := func() float64 { return lnLoss(x, w, b, r, d) }
			checkFiniteDifferences(t, "x", x, got[1], loss, 2e-5)
			checkFiniteDifferences(t, "w", w, got[2], loss, 2e-5)
			checkFiniteDifferences(t, "b", b, got[3], loss, 2e-5)
		})
	}
}
