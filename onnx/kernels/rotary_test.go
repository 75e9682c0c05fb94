package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// buildRotary is y = rope(x) for x [..., m, d] in standard operators,
// exactly as the llama exporter writes it (Split into halves, four Muls,
// Sub, Add, Concat), with cos and sin [..., 1, d/2] constants of the
// given angles, and the loss Σ y ⊙ r. Outputs: loss, dx.
func buildRotary(t testing.TB, shape []int64, angles, r []float32, fused bool) graphFile {
	t.Helper()
	m := onnx.New("rotary", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(shape))
	rank := len(shape)
	half := shape[rank-1] / 2
	tshape := append(append([]int64{}, shape[:rank-2]...), 1, half)
	cosv, sinv := make([]float32, len(angles)), make([]float32, len(angles))
	for i, a := range angles {
		cosv[i], sinv[i] = float32(math.Cos(float64(a))), float32(math.Sin(float64(a)))
	}
	cos, sin := g.Const("cos", tshape, cosv...), g.Const("sin", tshape, sinv...)
	xs := g.OpN("Split", []string{"x", g.ConstInt64("halves", []int64{2}, half, half)}, 2, "half", onnx.AttrInt("axis", -1))
	r1 := g.Op("Sub", []string{g.Op("Mul", []string{xs[0], cos}, "x1cos"), g.Op("Mul", []string{xs[1], sin}, "x2sin")}, "r1")
	r2 := g.Op("Add", []string{g.Op("Mul", []string{xs[1], cos}, "x2cos"), g.Op("Mul", []string{xs[0], sin}, "x1sin")}, "r2")
	y := g.Op("Concat", []string{r1, r2}, "y", onnx.AttrInt("axis", -1))
	loss := weightedLoss(g, y, shape, r)
	g.AddOutput(y, onnx.Float, dimsOf(shape))
	return withGradient(t, m, loss, true, []wrt{{"x", shape}}, fusedBy(fused, kernels.FuseRotary), 1)
}

// rotaryCase draws x, the angles of the cos/sin tables (positions up to
// 2048 times frequencies, as llama's are) and r.
func rotaryCase(shape []int64) (x, angles, r []float32) {
	rng := rand.New(rand.NewPCG(uint64(numel(shape)), 13))
	n, rank := numel(shape), len(shape)
	tn := n / int(shape[rank-2]) / 2
	return random(rng, n, -2, 2), random(rng, tn, 0, 2048), random(rng, n, -1, 1)
}

// The fused rotary embedding (Rotary, RotaryGrad) against the standard
// operators the llama exporter writes and migu's rules for them: y and dx
// agree to float32 rounding (1e-6 of the largest value, 1 the least
// scale; the forward does the same float operations), 1 and 2 threads.
func TestRotaryMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range [][]int64{{1, 3, 2, 8}, {2, 5, 4, 16}, {2, 37, 3, 64}, {1, 1, 1, 2}, {4, 9, 6}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			x, angles, r := rotaryCase(shape)
			std := buildRotary(t, shape, angles, r, false)
			fused := buildRotary(t, shape, angles, r, true)
			if fused.nodes["ai.migu.Rotary"] != 1 || fused.nodes["ai.migu.RotaryGrad"] != 1 || fused.nodes["Split"] != 0 || fused.nodes["Concat"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			want := runFeeds(t, std.path, "", 1, shape, x, nil)
			for _, threads := range []int{1, 2} {
				got := runFeeds(t, fused.path, lib, threads, shape, x, nil)
				for i, name := range []string{"loss", "y", "dx"} {
					if err := closeTo(got[i], want[i], 1e-6); err != nil {
						t.Errorf("%d threads: %s: %v", threads, name, err)
					}
				}
			}
		})
	}
}

// rotaryRef is Σ r ⊙ rope(x) in float64, with cos and sin rounded to
// float32 as the graph holds them.
func rotaryRef(x, r []float64, angles []float32, shape []int64) float64 {
	rank := len(shape)
	m, d := int(shape[rank-2]), int(shape[rank-1])
	h := d / 2
	var loss float64
	for row := 0; row*d < len(x); row++ {
		tb := (row / m) * h
		for j := 0; j < h; j++ {
			c := float64(float32(math.Cos(float64(angles[tb+j]))))
			s := float64(float32(math.Sin(float64(angles[tb+j]))))
			x1, x2 := x[row*d+j], x[row*d+h+j]
			loss += r[row*d+j]*(x1*c-x2*s) + r[row*d+h+j]*(x2*c+x1*s)
		}
	}
	return loss
}

// The fused rotary embedding against central finite differences of a
// float64 reference: loss and dX agree to float32 precision.
func TestRotaryGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range [][]int64{{1, 3, 2, 8}, {2, 2, 3, 6}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			x32, angles, r32 := rotaryCase(shape)
			fused := buildRotary(t, shape, angles, r32, true)
			got := runFeeds(t, fused.path, lib, 2, shape, x32, nil)
			x, r := widen(x32), widen(r32)
			if want := rotaryRef(x, r, angles, shape); math.Abs(float64(got[0][0])-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("loss %.9g, float64 reference %.9g", got[0][0], want)
			}
			checkFiniteDifferences(t, "x", x, got[2], func() float64 { return rotaryRef(x, r, angles, shape) }, 2e-6)
		})
	}
}
