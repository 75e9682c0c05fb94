package grad

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// A stopped value is a constant for the backward pass: for
// loss = Σ r ⊙ x ⊙ stop(‖x‖₂), d loss/dx = r ⊙ ‖x‖₂ (PyTorch's detach), not
// the full derivative, and ReduceL2, which has no rule, is not needed
// because only the stopped path reads it.
func TestStopGradient(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
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
	shapes, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Differentiate(m, shapes, loss, []string{"x0"})
	if err != nil {
		t.Fatalf("Differentiate: %v", err)
	}
	g.AddOutput(res.Grads["x0"], onnx.Double, nil)
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "train.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
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
