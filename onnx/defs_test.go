package onnx_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/shapes"
	"google.golang.org/protobuf/proto"
)

// defsModel is y = x·w + b with one edit applied to its proto.
func defsModel(edit func(g *onnxpb.GraphProto)) *onnx.Model {
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(1), onnx.D(2)})
	g.AddInitializer(onnx.Float32Tensor("w", []int64{2, 2}, []float32{1, 2, 3, 4}))
	g.AddInitializer(onnx.Float32Tensor("b", []int64{2}, []float32{5, 6}))
	g.AddNode(&onnxpb.NodeProto{OpType: proto.String("MatMul"), Name: proto.String("mm"), Input: []string{"x", "w"}, Output: []string{"xw"}})
	g.AddNode(&onnxpb.NodeProto{OpType: proto.String("Add"), Name: proto.String("add"), Input: []string{"xw", "b"}, Output: []string{"y"}})
	g.AddOutput("y", onnx.Float, nil)
	edit(m.Proto.Graph)
	return m
}

// A graph that defines a name twice is refused at load, with one line
// naming the file and the name, as bad input; an initializer that is also
// declared as an input (IR < 4) is not a second definition.
func TestLoadRefusesDuplicateDefinitions(t *testing.T) {
	cases := []struct {
		name string
		edit func(g *onnxpb.GraphProto)
		want string // "" for a model that loads
	}{
		{"valid", func(g *onnxpb.GraphProto) {}, ""},
		{"initializer also an input", func(g *onnxpb.GraphProto) {
			g.Input = append(g.Input, &onnxpb.ValueInfoProto{Name: proto.String("w")})
		}, ""},
		{"optional output left out", func(g *onnxpb.GraphProto) {
			g.Node[0].Output = append(g.Node[0].Output, "")
			g.Node[1].Output = append(g.Node[1].Output, "")
		}, ""},
		{"duplicate initializer", func(g *onnxpb.GraphProto) {
			g.Initializer = append(g.Initializer, onnx.Float32Tensor("w", []int64{2, 2}, make([]float32, 4)))
		}, `initializer "w" is defined twice`},
		{"sparse initializer repeats a dense one", func(g *onnxpb.GraphProto) {
			g.SparseInitializer = append(g.SparseInitializer, &onnxpb.SparseTensorProto{Values: onnx.Float32Tensor("b", []int64{1}, []float32{1})})
		}, `initializer "b" is defined twice`},
		{"duplicate input", func(g *onnxpb.GraphProto) {
			g.Input = append(g.Input, &onnxpb.ValueInfoProto{Name: proto.String("x")})
		}, `graph input "x" is declared twice`},
		{"node output repeats an initializer", func(g *onnxpb.GraphProto) { g.Node[0].Output[0] = "b" }, `value "b" is defined twice: an initializer and the output of node "mm"`},
		{"node output repeats an input", func(g *onnxpb.GraphProto) { g.Node[1].Output[0] = "x" }, `value "x" is defined twice: a graph input and the output of node "add"`},
		{"two nodes, one output", func(g *onnxpb.GraphProto) { g.Node[1].Output[0] = "xw" }, `value "xw" is defined twice: the output of nodes "mm" (MatMul) and "add" (Add)`},
		{"inside a subgraph", func(g *onnxpb.GraphProto) {
			sub := &onnxpb.GraphProto{Name: proto.String("then"), Initializer: []*onnxpb.TensorProto{
				onnx.Float32Tensor("c", []int64{1}, []float32{1}), onnx.Float32Tensor("c", []int64{1}, []float32{2})}}
			g.Node = append(g.Node, &onnxpb.NodeProto{OpType: proto.String("If"), Name: proto.String("if"), Input: []string{"cond"}, Output: []string{"z"},
				Attribute: []*onnxpb.AttributeProto{{Name: proto.String("then_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub}}})
		}, `subgraph then_branch: initializer "c" is defined twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.onnx")
			raw, err := proto.Marshal(defsModel(c.edit).Proto)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := onnx.Load(path)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				m.Close()
				return
			}
			if err == nil {
				t.Fatalf("loaded; want an error with %q", c.want)
			}
			msg := err.Error()
			if !badinput.Is(err) || !strings.HasPrefix(msg, path+": ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one bad-input line naming %s and saying %q", msg, path, c.want)
			}
		})
	}
}

// Shape inference on a model loaded from a file names that file, so a
// user knows which model.onnx the node belongs to; a model built in
// memory has no file to name.
func TestShapeInferenceErrorsNameTheFile(t *testing.T) {
	bad := func(g *onnxpb.GraphProto) {
		// x [1, 3] · w [2, 2]: the inner dims disagree.
		gr := onnx.NewGraph(g)
		gr.RemoveInput("x")
		gr.AddInput("x", onnx.Float, onnx.Shape{onnx.D(1), onnx.D(3)})
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	raw, err := proto.Marshal(defsModel(bad).Proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = shapes.Infer(m)
	if err == nil || !badinput.Is(err) || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), `"mm"`) {
		t.Fatalf("error %v: want bad input naming %s and node mm", err, path)
	}
	_, err = shapes.Infer(defsModel(bad))
	if err == nil || strings.Contains(err.Error(), "model.onnx") {
		t.Fatalf("in-memory model: error %v, want one that names no file", err)
	}
}
