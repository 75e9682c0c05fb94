package ort

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// initORT loads the test library once and skips when there is none.
func initORT(t testing.TB) {
	t.Helper()
	lib := testenv.ORTLib(t)
	if err := Init(InitOptions{LibraryPath: lib}); err != nil {
		t.Fatal(err)
	}
}

// openSession builds a session on a model from the builders below, with
// one thread to keep the shared test machine calm.
func openSession(t testing.TB, model []byte, opts SessionOptions) *Session {
	t.Helper()
	initORT(t)
	if opts.Threads == 0 {
		opts.Threads = 1
	}
	s, err := NewSessionFromBytes(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// valueInfo declares a tensor; dims are int (fixed) or string (symbolic).
// No dims declares a scalar; pass nil dims with noShape for "any rank".
func valueInfo(name string, dt onnx.DType, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		switch d := d.(type) {
		case int:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}
		case string:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
		default:
			panic(fmt.Sprintf("dim %v", d))
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(dt)),
			Shape:    shape,
		}}},
	}
}

func floatInit(name string, vals []float32, dims ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnx.Float)), FloatData: vals}
}

func node(op string, inputs, outputs []string) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Input: inputs, Output: outputs, Name: proto.String(op + "_" + outputs[0])}
}

func marshalModel(t testing.TB, g *onnxpb.GraphProto) []byte {
	t.Helper()
	g.Name = proto.String("test")
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph:       g,
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The linear model: Y = X·W + B with X [batch, 4], W [4, 3], B [3]; XW is
// a second output. W is also listed as a graph input, which makes it an
// overridable initializer that ORT (and Session.Inputs) leave out.
var (
	linW = []float32{
		0.5, -1, 2,
		1.5, 0.25, -0.5,
		-2, 1, 0.75,
		0.1, 0.2, 0.3,
	}
	linB = []float32{0.01, -0.02, 0.03}
)

func linearModel(t testing.TB) []byte {
	return marshalModel(t, &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node("MatMul", []string{"X", "W"}, []string{"XW"}),
			node("Add", []string{"XW", "B"}, []string{"Y"}),
		},
		Initializer: []*onnxpb.TensorProto{floatInit("W", linW, 4, 3), floatInit("B", linB, 3)},
		Input:       []*onnxpb.ValueInfoProto{valueInfo("X", onnx.Float, "batch", 4), valueInfo("W", onnx.Float, 4, 3)},
		Output:      []*onnxpb.ValueInfoProto{valueInfo("Y", onnx.Float, "batch", 3), valueInfo("XW", onnx.Float, "batch", 3)},
	})
}

// linearRef computes X·W + B in Go.
func linearRef(x []float32, batch int) []float32 {
	y := make([]float32, batch*3)
	for r := range batch {
		for j := range 3 {
			acc := linB[j]
			for k := range 4 {
				acc += x[r*4+k] * linW[k*3+j]
			}
			y[r*3+j] = acc
		}
	}
	return y
}

// gatherModel looks ids [batch, seq] up in a 6×2 embedding table:
// out [batch, seq, 2], out[b][s] = emb[ids[b][s]].
var gatherEmb = []float32{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5}

func gatherModel(t testing.TB) []byte {
	return marshalModel(t, &onnxpb.GraphProto{
		Node:        []*onnxpb.NodeProto{node("Gather", []string{"emb", "input_ids"}, []string{"hidden"})},
		Initializer: []*onnxpb.TensorProto{floatInit("emb", gatherEmb, 6, 2)},
		Input:       []*onnxpb.ValueInfoProto{valueInfo("input_ids", onnx.Int64, "batch", "seq")},
		Output:      []*onnxpb.ValueInfoProto{valueInfo("hidden", onnx.Float, "batch", "seq", 2)},
	})
}

// addModel: C = A + B, all [batch, 4].
func addModel(t testing.TB) []byte {
	return marshalModel(t, &onnxpb.GraphProto{
		Node:   []*onnxpb.NodeProto{node("Add", []string{"A", "B"}, []string{"C"})},
		Input:  []*onnxpb.ValueInfoProto{valueInfo("A", onnx.Float, "batch", 4), valueInfo("B", onnx.Float, "batch", 4)},
		Output: []*onnxpb.ValueInfoProto{valueInfo("C", onnx.Float, "batch", 4)},
	})
}

// identityModel passes a tensor of the given dtype and shape through.
func identityModel(t testing.TB, dt onnx.DType, dims ...any) []byte {
	return marshalModel(t, &onnxpb.GraphProto{
		Node:   []*onnxpb.NodeProto{node("Identity", []string{"in"}, []string{"out"})},
		Input:  []*onnxpb.ValueInfoProto{valueInfo("in", dt, dims...)},
		Output: []*onnxpb.ValueInfoProto{valueInfo("out", dt, dims...)},
	})
}

// matmulModel: Y = X·W with X [batch, k] and W a k×n initializer.
func matmulModel(t testing.TB, k, n int) []byte {
	w := make([]float32, k*n)
	for i := range w {
		w[i] = float32(i%7) * 0.01
	}
	return marshalModel(t, &onnxpb.GraphProto{
		Node:        []*onnxpb.NodeProto{node("MatMul", []string{"X", "W"}, []string{"Y"})},
		Initializer: []*onnxpb.TensorProto{floatInit("W", w, int64(k), int64(n))},
		Input:       []*onnxpb.ValueInfoProto{valueInfo("X", onnx.Float, "batch", k)},
		Output:      []*onnxpb.ValueInfoProto{valueInfo("Y", onnx.Float, "batch", n)},
	})
}
