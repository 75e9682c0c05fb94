package onnx_test

import (
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// chain builds x -> Relu -> Neg -> y plus a dead branch x -> Exp -> unused.
func chain() (*onnx.Model, *onnx.Graph) {
	m := onnx.New("chain", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("n")})
	a := g.Op("Relu", []string{"x"}, "a")
	g.Op("Exp", []string{"x"}, "dead")
	w := g.Const("w", []int64{1}, 2)
	g.Const("unused_w", []int64{1}, 3)
	y := g.Op("Mul", []string{a, w}, "y")
	g.AddOutput(y, onnx.Float, onnx.Shape{onnx.Sym("n")})
	return m, g
}

func opTypes(g *onnx.Graph) string {
	var ops []string
	for _, n := range g.P.Node {
		ops = append(ops, n.GetOpType())
	}
	return strings.Join(ops, ",")
}

func TestUniqueNames(t *testing.T) {
	_, g := chain()
	cases := []struct{ base, want string }{
		{"fresh", "fresh"},
		{"fresh", "fresh_1"},
		{"fresh", "fresh_2"},
		{"x", "x_1"},
		{"w", "w_1"},
		{"", "_1"},
	}
	for _, c := range cases {
		if got := g.Unique(c.base); got != c.want {
			t.Errorf("Unique(%q) = %q, want %q", c.base, got, c.want)
		}
	}
}

// Node writes the outputs it is given and names the node after the hint,
// uniquely; its outputs are taken names afterwards.
func TestNodeKeepsOutputNames(t *testing.T) {
	_, g := chain()
	g.Node("Identity", []string{"x"}, []string{"copy"}, "copy", onnx.AttrInt("unused", 1))
	g.Node("Identity", []string{"x"}, []string{"copy2"}, "copy")
	n1, n2 := g.P.Node[len(g.P.Node)-2], g.P.Node[len(g.P.Node)-1]
	if n1.GetName() != "copy/Identity" || n2.GetName() != "copy/Identity_1" || n1.Output[0] != "copy" || len(n1.Attribute) != 1 {
		t.Fatalf("nodes %v and %v", n1, n2)
	}
	if got := g.Unique("copy"); got != "copy_1" {
		t.Errorf("Unique(copy) = %q after Node wrote copy", got)
	}
}

func TestTopoSortRestoresOrder(t *testing.T) {
	_, g := chain()
	n := g.P.Node
	g.P.Node = []*onnxpb.NodeProto{n[2], n[1], n[0]} // Mul, Exp, Relu
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	if got := opTypes(g); got != "Exp,Relu,Mul" {
		t.Fatalf("order %s", got)
	}
	// A valid order is kept as it is.
	if err := g.TopoSort(); err != nil || opTypes(g) != "Exp,Relu,Mul" {
		t.Fatalf("stable order changed: %s %v", opTypes(g), err)
	}
}

func TestTopoSortFindsCycle(t *testing.T) {
	m := onnx.New("cyc", nil)
	g := m.Graph()
	g.AddNode(&onnxpb.NodeProto{Name: proto.String("p"), OpType: proto.String("Relu"), Input: []string{"b"}, Output: []string{"a"}})
	g.AddNode(&onnxpb.NodeProto{Name: proto.String("q"), OpType: proto.String("Neg"), Input: []string{"a"}, Output: []string{"b"}})
	err := g.TopoSort()
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("got %v, want a cycle error", err)
	}
}

func TestPruneRemovesDeadNodesAndInitializers(t *testing.T) {
	_, g := chain()
	if removed := g.Prune(); removed != 1 {
		t.Fatalf("removed %d nodes, want 1", removed)
	}
	if got := opTypes(g); got != "Relu,Mul" {
		t.Fatalf("left %s", got)
	}
	if g.Initializer("unused_w") != nil || g.Initializer("w") == nil {
		t.Fatal("initializers not pruned correctly")
	}
}

func TestRemoveAndRename(t *testing.T) {
	_, g := chain()
	if !g.RemoveOutput("y") || g.RemoveOutput("y") {
		t.Fatal("RemoveOutput")
	}
	g.AddOutput("a", onnx.Float, nil)
	g.Rename("a", "relu_out")
	if g.Output("relu_out") == nil || g.P.Node[0].Output[0] != "relu_out" || g.P.Node[2].Input[0] != "relu_out" {
		t.Fatal("rename missed a use")
	}
	if g.RemoveInitializer("w") == nil || g.Initializer("w") != nil {
		t.Fatal("RemoveInitializer")
	}
	if n := g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return n.GetOpType() == "Exp" }); n != 1 {
		t.Fatalf("removed %d", n)
	}
	if !g.RemoveInput("x") || g.Input("x") != nil {
		t.Fatal("RemoveInput")
	}
}

func TestOpsets(t *testing.T) {
	m := onnx.New("g", map[string]int64{"": 17, "com.example": 1})
	if m.Opset("") != 17 || m.Opset("ai.onnx") != 17 || m.Opset("com.example") != 1 || m.Opset("other") != 0 {
		t.Fatal("opset lookup")
	}
	m.SetOpset("ai.onnx", 18)
	if m.Opset("") != 18 || len(m.Proto.OpsetImport) != 2 {
		t.Fatalf("SetOpset: %v", m.Proto.OpsetImport)
	}
}

func TestShapes(t *testing.T) {
	vi := onnx.ValueInfo("x", onnx.Int64, onnx.Shape{onnx.Sym("batch"), onnx.D(8), {}})
	dtype, shape, ok := onnx.TensorType(vi)
	if !ok || dtype != onnx.Int64 || shape.String() != "[batch, 8, ?]" {
		t.Fatalf("%v %v %v", dtype, shape, ok)
	}
	cases := []struct {
		dims []int64
		want bool
	}{{[]int64{3, 8, 5}, true}, {[]int64{3, 7, 5}, false}, {[]int64{3, 8}, false}}
	for _, c := range cases {
		if got := shape.Matches(c.dims); got != c.want {
			t.Errorf("Matches(%v) = %v", c.dims, got)
		}
	}
	if _, err := onnx.NumElements([]int64{1 << 40, 1 << 40}); err == nil {
		t.Error("overflow not caught")
	}
	if _, err := onnx.ByteSize(onnx.String, []int64{2}); err == nil {
		t.Error("string has no byte size")
	}
	if n, _ := onnx.ByteSize(onnx.BFloat16, []int64{3, 5}); n != 30 {
		t.Errorf("ByteSize bf16 = %d", n)
	}
}

func TestTensorDecoding(t *testing.T) {
	m := onnx.New("g", nil)
	typed := &onnxpb.TensorProto{Name: proto.String("f"), DataType: proto.Int32(int32(onnx.Float)), Dims: []int64{3}, FloatData: []float32{1, -2, 3.5}}
	f16 := onnx.NewTensor("h", onnx.Float16, []int64{2}, []byte{0x00, 0x3c, 0x00, 0xc0}) // 1, -2
	i32 := &onnxpb.TensorProto{Name: proto.String("i"), DataType: proto.Int32(int32(onnx.Int32)), Dims: []int64{2}, Int32Data: []int32{-1, 7}}
	short := onnx.NewTensor("s", onnx.Float, []int64{4}, make([]byte, 12))
	if v, err := m.Float32s(typed); err != nil || v[1] != -2 || v[2] != 3.5 {
		t.Errorf("float_data: %v %v", v, err)
	}
	if v, err := m.Float32s(f16); err != nil || v[0] != 1 || v[1] != -2 {
		t.Errorf("float16: %v %v", v, err)
	}
	if v, err := m.Int64s(i32); err != nil || v[0] != -1 || v[1] != 7 {
		t.Errorf("int32_data: %v %v", v, err)
	}
	if _, err := m.Float32s(short); err == nil || !strings.Contains(err.Error(), "needs 16") {
		t.Errorf("short raw_data: %v", err)
	}
	if _, err := m.Float32s(i32); err == nil {
		t.Error("int tensor decoded as float")
	}
}
