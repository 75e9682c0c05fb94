package grad

import (
	"math"
	"testing"

	"github.com/migu-ml/migu/onnx"
)

// A stopped value is a constant for the backward pass: for
// loss = Σ r ⊙ x ⊙ stop(‖x‖₂), d loss/dx = r ⊙ ‖x‖₂ (PyTorch's detach), not
// the full derivative, and ReduceL2, which has no rule, is not needed
// because only the stopped path reads it.
func TestStopGradient(t *testing.T) {
	initORT(t)
	x := []float64{0.5, -1.25, 2, 0.75}
	r := []float64{1, -0.5, 0.25, 2}
	m := onnx.New("stop", nil)
	g := m.Graph()
	g.AddInput("x0", onnx.Double, onnx.Shape{onnx.D(4)})
	g.AddInitializer(float64Tensor("r", []int64{4}, r))
	norm := g.Op("ReduceL2", []string{"x0"}, "norm", onnx.AttrInt("keepdims", 1))
	y := g.Op("Mul", []string{"x0", StopGradient(g, norm, "norm_detached")}, "y")
	loss := g.Op("Reshape", []string{g.Op("ReduceSum", []string{g.Op("Mul", []string{y, "r"}, "ry")}, "sum", onnx.AttrInt("keepdims", 0)),
		g.ConstInt64("one", []int64{1}, 1)}, "loss")
	g.AddOutput(loss, onnx.Double, onnx.Shape{onnx.D(1)})
	path := saveWithGradients(t, m, loss, "train.onnx", "x0")
	out, _ := runAll(t, path, []string{"x0"}, map[string][]float64{"x0": x}, []in{{shape: []int64{4}}})
	var n float64
	for _, v := range x {
		n += v * v
	}
	n = math.Sqrt(n)
	for j, got := range out[1] {
		if want := r[j] * n; math.Abs(got-want) > 1e-12 {
			t.Errorf("d loss/d x[%d] = %v, want r·‖x‖ = %v", j, got, want)
		}
	}
}
