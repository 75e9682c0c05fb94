package shapes

import (
	"testing"

	"github.com/migu-ml/migu/onnx"
	"google.golang.org/protobuf/proto"
)

// migu adds an ai.migu.bf16 node, as tgraph.op adds a standard one.
func (t *tgraph) migu(op, ins, outs string, attrs ...onnx.Attr) {
	t.op(op, ins, outs, attrs...)
	t.g.P.Node[len(t.g.P.Node)-1].Domain = proto.String(onnx.DomainMiguBF16)
}

// The oneDNN products' rules: MatMulBF16 and MatMulF32 as Gemm-like
// products, BatchMatMul as Transposes around a MatMul (the attention
// products as the training graphs hold them, broadcast batch axes).
func TestShapeMiguBF16Ops(t *testing.T) {
	perm := func(name string, p ...int64) onnx.Attr { return onnx.AttrInts(name, p...) }
	runShapeCases(t, []shapeCase{
		{name: "MatMulBF16 and MatMulF32", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 16)
			t.input("w", onnx.BFloat16, 8, 16)
			t.input("dy", onnx.Float, "n", 8)
			t.migu("MatMulBF16", "x w", "y", onnx.AttrInt("transB", 1))
			t.migu("MatMulF32", "dy dy", "g", onnx.AttrInt("transA", 1))
		}, want: map[string]string{"y": "float32 [b, s, 8]", "g": "float32 [8, 8]"}},
		{name: "MatMulF32 with a bias", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 16)
			t.input("w", onnx.Float, 16, 8)
			t.input("bias", onnx.Float, 8)
			t.migu("MatMulF32", "x w bias", "y")
		}, want: map[string]string{"y": "float32 [b, s, 8]"}},
		{name: "MatMulBF16 bias of another length", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 16)
			t.input("w", onnx.Float, 16, 8)
			t.input("bias", onnx.Float, 9)
			t.migu("MatMulBF16", "x w bias", "y")
		}, err: "Bias [9] against N of the product"},
		{name: "MatMulF32 bias 2-D", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 16)
			t.input("w", onnx.Float, 16, 8)
			t.input("bias", onnx.Float, 1, 8)
			t.migu("MatMulF32", "x w bias", "y")
		}, err: "needs a float32 Bias [N], not float32 [1, 8]"},
		{name: "BatchMatMul scores and context", build: func(t *tgraph) {
			t.input("q", onnx.Float, "b", "s", 8, 64)
			t.input("p", onnx.Float, "b", 8, "s", "s")
			t.migu("BatchMatMul", "q q", "scores", perm("permA", 0, 2, 1, 3), perm("permB", 0, 2, 3, 1))
			t.migu("BatchMatMul", "p q", "ctx", perm("permB", 0, 2, 1, 3), perm("permY", 0, 2, 1, 3))
			t.migu("BatchMatMul", "p p", "plain")
		}, want: map[string]string{"scores": "float32 [b, 8, s, s]", "ctx": "float32 [b, s, 8, 64]", "plain": "float32 [b, 8, s, s]"}},
		{name: "BatchMatMul broadcast", build: func(t *tgraph) {
			t.input("a", onnx.Float, 1, 4, 5, 6)
			t.input("b", onnx.Float, 3, 1, 6, 2)
			t.migu("BatchMatMul", "a b", "y")
		}, want: map[string]string{"y": "float32 [3, 4, 5, 2]"}},
		{name: "BatchMatMul inner dims", build: func(t *tgraph) {
			t.input("a", onnx.Float, 1, 4, 5, 6)
			t.input("b", onnx.Float, 1, 4, 5, 6)
			t.migu("BatchMatMul", "a b", "y")
		}, err: "inner dims"},
		{name: "BatchMatMul rank", build: func(t *tgraph) {
			t.input("a", onnx.Float, 4, 5, 6)
			t.input("b", onnx.Float, 1, 4, 6, 6)
			t.migu("BatchMatMul", "a b", "y")
		}, err: "needs 4-D A and B"},
		{name: "BatchMatMul perm", build: func(t *tgraph) {
			t.input("a", onnx.Float, 1, 4, 5, 6)
			t.migu("BatchMatMul", "a a", "y", perm("permY", 0, 1, 2))
		}, err: "permY [0 1 2] is not a permutation"},
	})
}
