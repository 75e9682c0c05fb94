package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// ignoreIndex marks a label that does not count, as train.IgnoreIndex does.
const ignoreIndex = -100

// buildCrossEntropy is the cross-entropy as train.addLoss writes it, over
// logits x [n, v] and labels [n] (ignoreIndex where a row does not count),
// each row's term weighted by r (so that rows get different upstream
// gradients): loss = Σ_rows r · valid · LogSoftmax(x)[row, label]. Outputs:
// loss, dx.
func buildCrossEntropy(t testing.TB, n, v int64, r []float32, fused bool) graphFile {
	t.Helper()
	m := onnx.New("xent", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(n), onnx.D(v)})
	g.AddInput("labels", onnx.Int64, onnx.Shape{onnx.D(n)})
	valid := g.Op("Not", []string{g.Op("Equal", []string{"labels", g.ConstInt64("ignore", nil, ignoreIndex)}, "ignored")}, "valid")
	safe := g.Op("Where", []string{valid, "labels", g.ConstInt64("zero_id", nil, 0)}, "safe")
	logp := g.Op("LogSoftmax", []string{"x"}, "logp", onnx.AttrInt("axis", -1))
	idx := g.Op("Unsqueeze", []string{safe, g.ConstInt64("last", []int64{1}, -1)}, "index")
	picked := g.Op("GatherElements", []string{logp, idx}, "picked", onnx.AttrInt("axis", 1))
	flat := g.Op("Reshape", []string{picked, g.ConstInt64("flat1", []int64{1}, -1)}, "picked_flat")
	w := g.Op("Mul", []string{g.Op("Cast", []string{valid}, "weight", onnx.AttrInt("to", int64(onnx.Float))), g.Const("r", []int64{n}, r...)}, "rw")
	loss := g.Op("ReduceSum", []string{g.Op("Mul", []string{flat, w}, "masked")}, "loss", onnx.AttrInt("keepdims", 1))
	g.AddOutput(loss, onnx.Float, onnx.Shape{onnx.D(1)})
	return withGradient(t, m, loss, true, []wrt{{"x", []int64{n, v}}}, fusedBy(fused, kernels.FuseCrossEntropy), 1)
}

// buildSoftmax is y = Softmax(x, axis -1) with the loss Σ y ⊙ r. Outputs:
// loss, dx.
func buildSoftmax(t testing.TB, shape []int64, r []float32, fused bool) graphFile {
	t.Helper()
	m := onnx.New("softmax", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(shape))
	y := g.Op("Softmax", []string{"x"}, "y", onnx.AttrInt("axis", -1))
	loss := weightedLoss(g, y, shape, r)
	return withGradient(t, m, loss, true, []wrt{{"x", shape}}, fusedBy(fused, kernels.FuseSoftmax), 1)
}

// runFeeds runs a graph on float32 x and, when labels is not nil, int64
// labels [rows], and returns every output.
func runFeeds(t testing.TB, path, lib string, threads int, shape []int64, x []float32, labels []int64) [][]float32 {
	t.Helper()
	feeds := []feed{{"x", shape, x}}
	if labels != nil {
		feeds = append(feeds, feed{"labels", []int64{int64(len(labels))}, labels})
	}
	return runGraph(t, path, lib, threads, feeds...)
}

// xentCase draws logits (spread ±scale), labels (every third row
// ignored, one negative index counted from V) and row weights.
func xentCase(n, v int, scale float64) (x []float32, labels []int64, r []float32) {
	rng := rand.New(rand.NewPCG(uint64(n*v), 5))
	x = random(rng, n*v, -scale, scale)
	labels = make([]int64, n)
	for i := range labels {
		switch {
		case i%3 == 1:
			labels[i] = ignoreIndex
		case i == n-1 && n > 3:
			labels[i] = -1 // GatherElements counts negative indices from the end
		default:
			labels[i] = rng.Int64N(int64(v))
		}
	}
	return x, labels, random(rng, n, 0.5, 1.5)
}

// The fused cross-entropy (PickLogSoftmax and its gradient kernel) against
// the standard-op formulation train.addLoss writes (LogSoftmax,
// GatherElements, ORT's kernels and migu's gradient rules), with ignored
// rows: the loss and d loss / d logits agree to float32 rounding (1e-6
// relative to the largest value, with 1 the least scale), and ignored rows
// get exactly zero gradient.
func TestCrossEntropyMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, c := range []struct {
		n, v  int
		scale float64
	}{
		{3, 5, 2},       // V below the lanes
		{7, 17, 2},      // a remainder after 16 lanes
		{37, 100, 30},   // large logits: the max shift matters; several row blocks
		{16, 49152, 8},  // SmolLM2's vocabulary
		{130, 1000, 80}, // logits far apart: most exp terms underflow
	} {
		t.Run(fmt.Sprintf("%dx%d", c.n, c.v), func(t *testing.T) {
			x, labels, r := xentCase(c.n, c.v, c.scale)
			std := buildCrossEntropy(t, int64(c.n), int64(c.v), r, false)
			fused := buildCrossEntropy(t, int64(c.n), int64(c.v), r, true)
			if fused.nodes["ai.migu.PickLogSoftmax"] != 1 || fused.nodes["ai.migu.PickLogSoftmaxGrad"] != 1 || fused.nodes["LogSoftmax"] != 0 || fused.nodes["GatherElements"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			shape := []int64{int64(c.n), int64(c.v)}
			want := runFeeds(t, std.path, "", 1, shape, x, labels)
			for _, threads := range []int{1, 2} {
				got := runFeeds(t, fused.path, lib, threads, shape, x, labels)
				for i, name := range []string{"loss", "dx"} {
					if err := closeTo(got[i], want[i], 1e-6); err != nil {
						t.Errorf("%d threads: %s: %v", threads, name, err)
					}
				}
				for row, l := range labels {
					if l != ignoreIndex {
						continue
					}
					for j, d := range got[1][row*c.v : (row+1)*c.v] {
						if d != 0 {
							t.Fatalf("%d threads: ignored row %d: dx[%d] = %g, want 0", threads, row, j, d)
						}
					}
				}
			}
		})
	}
}

// xentRef is the float64 cross-entropy of buildCrossEntropy.
func xentRef(x []float64, labels []int64, r []float64, v int) float64 {
	var loss float64
	for row, l := range labels {
		if l == ignoreIndex {
			continue
		}
		if l < 0 {
			l += int64(v)
		}
		xs := x[row*v : (row+1)*v]
		m, s := maxSumExp(xs)
		loss += r[row] * (xs[l] - m - math.Log(s))
	}
	return loss
}

// The fused cross-entropy against central finite differences of a float64
// reference, ignored rows included: loss and d loss / d logits agree to
// float32 precision.
func TestCrossEntropyGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, c := range [][2]int{{4, 7}, {6, 33}, {5, 3}} {
		n, v := c[0], c[1]
		t.Run(fmt.Sprintf("%dx%d", n, v), func(t *testing.T) {
			x32, labels, r32 := xentCase(n, v, 3)
			fused := buildCrossEntropy(t, int64(n), int64(v), r32, true)
			got := runFeeds(t, fused.path, lib, 2, []int64{int64(n), int64(v)}, x32, labels)
			x, r := widen(x32), widen(r32)
			if want := xentRef(x, labels, r, v); math.Abs(float64(got[0][0])-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("loss %.9g, float64 reference %.9g", got[0][0], want)
			}
			checkFiniteDifferences(t, "x", x, got[1], func() float64 { return xentRef(x, labels, r, v) }, 2e-6)
		})
	}
}

// softmaxCase draws scores spread ±scale; with masked, a quarter of the
// keys of every row get the exporters' additive mask (-1e9), and the
// first row is masked entirely (its softmax is then uniform).
func softmaxCase(shape []int64, scale float64, masked bool) (x, r []float32) {
	rng := rand.New(rand.NewPCG(uint64(numel(shape)), 9))
	n, d := numel(shape), int(shape[len(shape)-1])
	x = random(rng, n, -scale, scale)
	if masked {
		for i := range x {
			if i%d >= d-d/4 || i < d {
				x[i] += -1e9
			}
		}
	}
	return x, random(rng, n, -1, 1)
}

var softmaxCases = []struct {
	shape  []int64
	scale  float64
	masked bool
}{
	{[]int64{2, 3, 8}, 2, false},
	{[]int64{1, 5, 13}, 2, false},      // a remainder after 16 lanes
	{[]int64{2, 4, 37, 37}, 8, true},   // attention [B, heads, Sq, Sk] with padding
	{[]int64{1, 9, 128, 128}, 4, true}, // several row blocks
	{[]int64{3, 200}, 60, false},       // scores far apart
}

// The fused softmax (forward kernel and SoftmaxGrad) against ORT's Softmax
// and the standard rule (Mul, ReduceSum, Sub, Mul), with masked keys and
// a fully masked row: loss and dx agree to float32 rounding (1e-6
// relative to the largest value, with 1 the least scale).
func TestSoftmaxMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, c := range softmaxCases {
		t.Run(fmt.Sprint(c.shape), func(t *testing.T) {
			x, r := softmaxCase(c.shape, c.scale, c.masked)
			std := buildSoftmax(t, c.shape, r, false)
			fused := buildSoftmax(t, c.shape, r, true)
			if fused.nodes["ai.migu.Softmax"] != 1 || fused.nodes["ai.migu.SoftmaxGrad"] != 1 || fused.nodes["Softmax"] != 0 || fused.nodes["ReduceSum"] != 1 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			want := runFeeds(t, std.path, "", 1, c.shape, x, nil)
			for _, threads := range []int{1, 2} {
				got := runFeeds(t, fused.path, lib, threads, c.shape, x, nil)
				for i, name := range []string{"loss", "dx"} {
					if err := closeTo(got[i], want[i], 1e-6); err != nil {
						t.Errorf("%d threads: %s: %v", threads, name, err)
					}
				}
			}
		})
	}
}

// maxSumExp returns a row's maximum m and Σ exp(x - m), the parts of a
// stable softmax and log-sum-exp (m + log of the sum).
func maxSumExp(xs []float64) (m, s float64) {
	m = math.Inf(-1)
	for _, e := range xs {
		m = math.Max(m, e)
	}
	for _, e := range xs {
		s += math.Exp(e - m)
	}
	return m, s
}

// softmaxRef is Σ r ⊙ softmax(x) over the last axis, in float64.
func softmaxRef(x, r []float64, d int) float64 {
	var loss float64
	for row := 0; row*d < len(x); row++ {
		xs := x[row*d : (row+1)*d]
		m, s := maxSumExp(xs)
		for j, e := range xs {
			loss += r[row*d+j] * math.Exp(e-m) / s
		}
	}
	return loss
}

// The fused softmax against central finite differences of a float64
// reference: loss and dX agree to float32 precision.
func TestSoftmaxGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range [][]int64{{2, 3, 7}, {1, 2, 19}, {18, 4}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			x32, r32 := softmaxCase(shape, 3, false)
			fused := buildSoftmax(t, shape, r32, true)
			got := runFeeds(t, fused.path, lib, 2, shape, x32, nil)
			x, r := widen(x32), widen(r32)
			d := int(shape[len(shape)-1])
			if want := softmaxRef(x, r, d); math.Abs(float64(got[0][0])-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("loss %.9g, float64 reference %.9g", got[0][0], want)
			}
			checkFiniteDifferences(t, "x", x, got[1], func() float64 { return softmaxRef(x, r, d) }, 2e-6)
		})
	}
}
