package grad

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
	"google.golang.org/protobuf/proto"
)

// The gradient checker: a small float64 graph, a loss Σ_k Σ(y_k ⊙ r_k)
// with fixed random r_k (so every output element gets its own upstream
// gradient), the rule's gradient from ONNX Runtime, and central finite
// differences of the same loss, also from ONNX Runtime, in float64.

// in describes one input of a checked graph.
type in struct {
	shape []int64
	// ints, when set, makes the input a constant int64 tensor (indices,
	// axes, shapes) with these values.
	ints []int64
	// positive draws values in [0.5, 2] (for Sqrt, Log, Div denominators);
	// otherwise values are in ±[0.2, 1.2], away from kinks at 0.
	positive bool
	// fixed keeps a float input constant (not differentiated).
	fixed bool
	// boolVals makes the input a constant bool tensor.
	boolVals []bool
}

// gradCase is one table entry: a graph built by build from the declared
// inputs (named x0, x1, …), differentiated with respect to every float
// input that is not fixed.
type gradCase struct {
	name   string
	inputs []in
	// build adds nodes computing the outputs from the inputs and returns
	// the output names.
	build func(g *onnx.Graph, x []string) []string
	// goLoss, when set, evaluates the loss in Go (for ops without a float64
	// kernel in ONNX Runtime, like Erf); it gets the float inputs and the
	// loss weights.
	goLoss func(x [][]float64, r [][]float64) float64
	// tol is the allowed relative error (default 1e-6).
	tol float64
}

// single is a gradCase for one node of op with the given attributes.
func single(op string, attrs ...onnx.Attr) func(g *onnx.Graph, x []string) []string {
	return func(g *onnx.Graph, x []string) []string {
		return []string{g.Op(op, x, "y", attrs...)}
	}
}

func checkGradient(t *testing.T, c gradCase) {
	t.Helper()
	initORT(t)
	rng := rand.New(rand.NewPCG(uint64(len(c.name)), 7))
	m := onnx.New("check", nil)
	g := m.Graph()
	names := make([]string, len(c.inputs))
	values := map[string][]float64{}
	var wrt []string
	for i, spec := range c.inputs {
		name := fmt.Sprintf("x%d", i)
		names[i] = name
		switch {
		case spec.ints != nil:
			g.AddInitializer(onnx.Int64Tensor(name, spec.shape, spec.ints))
		case spec.boolVals != nil:
			raw := make([]byte, len(spec.boolVals))
			for k, b := range spec.boolVals {
				if b {
					raw[k] = 1
				}
			}
			g.AddInitializer(onnx.NewTensor(name, onnx.Bool, spec.shape, raw))
		default:
			n, _ := onnx.NumElements(spec.shape)
			v := make([]float64, n)
			for k := range v {
				if spec.positive {
					v[k] = 0.5 + 1.5*rng.Float64()
				} else {
					v[k] = (0.2 + rng.Float64()) * float64(1-2*rng.IntN(2))
				}
			}
			values[name] = v
			switch {
			case spec.fixed:
				g.AddInitializer(float64Tensor(name, spec.shape, v))
			case len(spec.shape) == 0:
				// Fed as [1] (onnxruntime_go has no rank-0 tensors), used as [].
				g.AddInput(name+".in", onnx.Double, onnx.Shape{onnx.D(1)})
				g.AddNode(&onnxpb.NodeProto{OpType: proto.String("Reshape"), Name: proto.String(name + "/Reshape"),
					Input: []string{name + ".in", g.ConstInt64("scalar_shape", []int64{0})}, Output: []string{name}})
				wrt = append(wrt, name)
			default:
				g.AddInput(name, onnx.Double, dimsOf(spec.shape))
				wrt = append(wrt, name)
			}
		}
	}
	outs := c.build(g, names)
	// onnxruntime_go cannot return rank-0 tensors: compare flattened.
	for k, o := range outs {
		outs[k] = g.Op("Reshape", []string{o, g.ConstInt64("flat", []int64{1}, -1)}, o+".flat")
	}

	// Output shapes come from one forward run.
	fwdPath := filepath.Join(t.TempDir(), "fwd.onnx")
	for _, o := range outs {
		g.AddOutput(o, onnx.Double, nil)
	}
	if err := m.Save(fwdPath, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	_, outShapes := runAll(t, fwdPath, wrt, values, c.inputs)
	for _, o := range outs {
		g.RemoveOutput(o)
	}

	// loss = Σ_k ReduceSum(y_k · r_k), shape [1].
	weights := make([][]float64, len(outs))
	var terms []string
	for k, o := range outs {
		n, _ := onnx.NumElements(outShapes[k])
		w := make([]float64, n)
		for j := range w {
			w[j] = rng.Float64()*2 - 1
		}
		weights[k] = w
		r := g.Unique("r")
		g.AddInitializer(float64Tensor(r, outShapes[k], w))
		prod := g.Op("Mul", []string{o, r}, "weighted")
		terms = append(terms, g.Op("ReduceSum", []string{prod}, "term", onnx.AttrInt("keepdims", 0)))
	}
	loss := terms[0]
	if len(terms) > 1 {
		loss = g.Op("Sum", terms, "total")
	}
	loss = g.Op("Reshape", []string{loss, g.ConstInt64("one", []int64{1}, 1)}, "loss")
	g.AddOutput(loss, onnx.Double, onnx.Shape{onnx.D(1)})

	shapes, err := shapes.Infer(m)
	if err != nil {
		t.Fatalf("shape inference: %v", err)
	}
	lossOnly := filepath.Join(t.TempDir(), "loss.onnx")
	if err := m.Save(lossOnly, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := Differentiate(m, shapes, loss, wrt)
	if err != nil {
		t.Fatalf("Differentiate: %v", err)
	}
	for _, w := range wrt {
		g.AddOutput(g.Op("Reshape", []string{res.Grads[w], g.ConstInt64("flat", []int64{1}, -1)}, res.Grads[w]+".flat"), onnx.Double, nil)
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	trainPath := filepath.Join(t.TempDir(), "train.onnx")
	if err := m.Save(trainPath, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, node := range g.P.Node {
		if node.GetDomain() != "" {
			t.Fatalf("gradient uses non-standard op %s.%s", node.GetDomain(), node.GetOpType())
		}
	}
	analytic, _ := runAll(t, trainPath, wrt, values, c.inputs)

	lossAt := func(vals map[string][]float64) float64 {
		if c.goLoss != nil {
			var xs [][]float64
			for _, w := range wrt {
				xs = append(xs, vals[w])
			}
			return c.goLoss(xs, weights)
		}
		loss, _ := runAll(t, lossOnly, wrt, vals, c.inputs)
		return loss[0][0]
	}
	const h = 1e-5
	for i, w := range wrt {
		got := analytic[1+i]
		x := values[w]
		for j := range x {
			orig := x[j]
			x[j] = orig + h
			up := lossAt(values)
			x[j] = orig - h
			down := lossAt(values)
			x[j] = orig
			fd := (up - down) / (2 * h)
			tol := c.tol
			if tol == 0 {
				tol = 1e-6
			}
			if rel := math.Abs(got[j]-fd) / math.Max(1, math.Abs(fd)); !(rel <= tol) {
				t.Fatalf("d loss/d %s[%d]: rule %.12g, finite differences %.12g (relative error %.2g)", w, j, got[j], fd, rel)
			}
		}
	}
}

func dimsOf(shape []int64) onnx.Shape {
	s := make(onnx.Shape, len(shape))
	for i, d := range shape {
		s[i] = onnx.D(d)
	}
	return s
}

func float64Tensor(name string, dims []int64, v []float64) *onnxpb.TensorProto {
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		b := math.Float64bits(x)
		for k := 0; k < 8; k++ {
			raw[8*i+k] = byte(b >> (8 * k))
		}
	}
	return onnx.NewTensor(name, onnx.Double, dims, raw)
}

// initORT loads ONNX Runtime for a test that runs graphs.
func initORT(t *testing.T) {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
}

// saveWithGradients differentiates m's loss with respect to wrt, adds each
// gradient as an output after the loss, and saves the graph in a temporary
// folder under name; it returns the file's path.
func saveWithGradients(t *testing.T, m *onnx.Model, loss, name string, wrt ...string) string {
	t.Helper()
	sh, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Differentiate(m, sh, loss, wrt)
	if err != nil {
		t.Fatalf("Differentiate: %v", err)
	}
	g := m.Graph()
	for _, w := range wrt {
		g.AddOutput(res.Grads[w], onnx.Double, nil)
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// feeds wraps the float inputs as ORT tensors.
func feeds(t *testing.T, wrt []string, values map[string][]float64, specs []in) map[string]ort.Value {
	t.Helper()
	out := map[string]ort.Value{}
	for _, w := range wrt {
		var idx int
		fmt.Sscanf(w, "x%d", &idx)
		name, shape := w, specs[idx].shape
		if len(shape) == 0 {
			name, shape = w+".in", []int64{1}
		}
		v, err := ort.NewTensor(append([]float64(nil), values[w]...), shape...)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = v
	}
	return out
}

// runAll runs a model and returns every output as float64 values, and
// their shapes.
func runAll(t *testing.T, path string, wrt []string, values map[string][]float64, specs []in) ([][]float64, [][]int64) {
	t.Helper()
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ins := feeds(t, wrt, values, specs)
	defer func() {
		for _, v := range ins {
			v.Close()
		}
	}()
	outs, err := s.Run(ins)
	if err != nil {
		t.Fatal(err)
	}
	res := make([][]float64, len(outs))
	shapes := make([][]int64, len(outs))
	for i, o := range outs {
		res[i] = append([]float64(nil), o.(*ort.Tensor[float64]).Data()...)
		shapes[i] = o.Shape()
		o.Close()
	}
	return res, shapes
}
