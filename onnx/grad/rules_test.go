package grad

import (
	"math"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
)

// gradCases has at least one case per registered rule; a case's name starts
// with the op type it checks.
var gradCases = []gradCase{
	{name: "Add/same", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{2, 3}}}, build: single("Add")},
	{name: "Add/broadcast both", inputs: []in{{shape: []int64{2, 1, 3}}, {shape: []int64{4, 1}}}, build: single("Add")},
	{name: "Add/bias over two leading axes", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{4}}}, build: single("Add")},
	{name: "Mul/norm weight", inputs: []in{{shape: []int64{4}}, {shape: []int64{2, 3, 4}}}, build: single("Mul")},
	{name: "Add/leading", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{4}}}, build: single("Add")},
	{name: "Sub/broadcast", inputs: []in{{shape: []int64{3, 1}}, {shape: []int64{1, 4}}}, build: single("Sub")},
	{name: "Mul/broadcast both", inputs: []in{{shape: []int64{2, 1, 3}}, {shape: []int64{4, 3}}}, build: single("Mul")},
	{name: "Mul/scalar", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{}}}, build: single("Mul")},
	{name: "Div/broadcast", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{3}, positive: true}}, build: single("Div")},
	{name: "Sum/three", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{3}}, {shape: []int64{2, 1}}}, build: single("Sum")},
	{name: "Neg", inputs: []in{{shape: []int64{5}}}, build: single("Neg")},
	{name: "Identity", inputs: []in{{shape: []int64{2, 2}}}, build: single("Identity")},
	{name: "Cast/to float32 and back", tol: 1e-2, inputs: []in{{shape: []int64{3}}}, build: func(g *onnx.Graph, x []string) []string {
		f := g.Op("Cast", x, "f32", onnx.AttrInt("to", int64(onnx.Float)))
		return []string{g.Op("Cast", []string{f}, "f64", onnx.AttrInt("to", int64(onnx.Double)))}
	}},
	{name: "Pow/square", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{}, fixed: true}}, build: func(g *onnx.Graph, x []string) []string {
		two := g.Op("Constant", nil, "two", onnx.AttrTensor("value", float64Tensor("two", nil, []float64{2})))
		return []string{g.Op("Pow", []string{x[0], two}, "y")}
	}},
	{name: "Pow/cube", inputs: []in{{shape: []int64{4}}}, build: func(g *onnx.Graph, x []string) []string {
		g.AddInitializer(float64Tensor("three", nil, []float64{3}))
		return []string{g.Op("Pow", []string{x[0], "three"}, "y")}
	}},
	{name: "Pow/fractional", inputs: []in{{shape: []int64{4}, positive: true}}, build: func(g *onnx.Graph, x []string) []string {
		g.AddInitializer(float64Tensor("p", nil, []float64{1.7}))
		return []string{g.Op("Pow", []string{x[0], "p"}, "y")}
	}},
	{name: "Sqrt", inputs: []in{{shape: []int64{2, 3}, positive: true}}, build: single("Sqrt")},
	{name: "Reciprocal", inputs: []in{{shape: []int64{2, 3}, positive: true}}, build: single("Reciprocal")},
	{name: "Exp", inputs: []in{{shape: []int64{2, 3}}}, build: single("Exp")},
	{name: "Log", inputs: []in{{shape: []int64{2, 3}, positive: true}}, build: single("Log")},
	{name: "Tanh", inputs: []in{{shape: []int64{2, 3}}}, build: single("Tanh")},
	// ONNX Runtime has no float64 Erf: the rule runs in float32 between
	// casts, the finite differences in Go's float64 math.Erf.
	{name: "Erf", inputs: []in{{shape: []int64{2, 3}}}, build: func(g *onnx.Graph, x []string) []string {
		f := g.Op("Cast", x, "f32", onnx.AttrInt("to", int64(onnx.Float)))
		return []string{g.Op("Cast", []string{g.Op("Erf", []string{f}, "erf")}, "f64", onnx.AttrInt("to", int64(onnx.Double)))}
	}, goLoss: func(x, r [][]float64) float64 {
		var s float64
		for i, v := range x[0] {
			s += math.Erf(v) * r[0][i]
		}
		return s
	}},
	{name: "Sigmoid", inputs: []in{{shape: []int64{2, 3}}}, build: single("Sigmoid")},
	{name: "Relu", inputs: []in{{shape: []int64{3, 4}}}, build: single("Relu")},
	{name: "Abs", inputs: []in{{shape: []int64{6}}}, build: single("Abs")},
	{name: "Sin", inputs: []in{{shape: []int64{6}}}, build: single("Sin")},
	{name: "Cos", inputs: []in{{shape: []int64{6}}}, build: single("Cos")},
	{name: "Where/broadcast", inputs: []in{{shape: []int64{2, 3}, boolVals: []bool{true, false, true, false, false, true}}, {shape: []int64{2, 3}}, {shape: []int64{3}}}, build: single("Where")},
	{name: "Dropout/inference", inputs: []in{{shape: []int64{2, 3}}}, build: single("Dropout")},
	{name: "MatMul/2d", inputs: []in{{shape: []int64{3, 4}}, {shape: []int64{4, 2}}}, build: single("MatMul")},
	{name: "MatMul/linear 3d", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{4, 5}}}, build: single("MatMul")},
	{name: "MatMul/batched", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{2, 4, 2}}}, build: single("MatMul")},
	{name: "MatMul/broadcast batch", inputs: []in{{shape: []int64{2, 2, 3, 4}}, {shape: []int64{2, 1, 4, 3}}}, build: single("MatMul")},
	{name: "MatMul/grouped heads", inputs: []in{{shape: []int64{2, 2, 3, 3, 4}}, {shape: []int64{2, 2, 1, 4, 5}}}, build: single("MatMul")},
	{name: "MatMul/missing batch axes", inputs: []in{{shape: []int64{4, 3}}, {shape: []int64{2, 3, 5}}}, build: single("MatMul")},
	{name: "Gemm/plain", inputs: []in{{shape: []int64{3, 4}}, {shape: []int64{4, 2}}, {shape: []int64{2}}}, build: single("Gemm")},
	{name: "Gemm/transposed", inputs: []in{{shape: []int64{4, 3}}, {shape: []int64{2, 4}}, {shape: []int64{3, 1}}},
		build: single("Gemm", onnx.AttrInt("transA", 1), onnx.AttrInt("transB", 1), onnx.AttrFloat("alpha", 0.5), onnx.AttrFloat("beta", 2))},
	{name: "Gemm/transA", inputs: []in{{shape: []int64{4, 3}}, {shape: []int64{4, 2}}}, build: single("Gemm", onnx.AttrInt("transA", 1))},
	{name: "Gemm/transB", inputs: []in{{shape: []int64{3, 4}}, {shape: []int64{2, 4}}}, build: single("Gemm", onnx.AttrInt("transB", 1))},
	{name: "ReduceSum/axis keepdims", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{1}, ints: []int64{1}}}, build: single("ReduceSum")},
	{name: "ReduceSum/all dropped", inputs: []in{{shape: []int64{2, 3}}}, build: single("ReduceSum", onnx.AttrInt("keepdims", 0))},
	{name: "ReduceSum/negative axes", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{2}, ints: []int64{-1, 0}}}, build: single("ReduceSum", onnx.AttrInt("keepdims", 0))},
	{name: "ReduceMean/last", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{1}, ints: []int64{-1}}}, build: single("ReduceMean")},
	{name: "ReduceMean/dropped", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{2}, ints: []int64{0, 2}}}, build: single("ReduceMean", onnx.AttrInt("keepdims", 0))},
	{name: "Softmax/last", inputs: []in{{shape: []int64{2, 5}}}, build: single("Softmax", onnx.AttrInt("axis", -1))},
	{name: "Softmax/middle", inputs: []in{{shape: []int64{2, 3, 4}}}, build: single("Softmax", onnx.AttrInt("axis", 1))},
	{name: "LogSoftmax", inputs: []in{{shape: []int64{3, 5}}}, build: single("LogSoftmax", onnx.AttrInt("axis", -1))},
	{name: "LayerNormalization/last", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{4}}, {shape: []int64{4}}},
		build: single("LayerNormalization", onnx.AttrInt("axis", -1), onnx.AttrFloat("epsilon", 1e-5), onnx.AttrInt("stash_type", 1))},
	{name: "LayerNormalization/two axes no bias", inputs: []in{{shape: []int64{2, 3, 4}}, {shape: []int64{3, 4}}},
		build: single("LayerNormalization", onnx.AttrInt("axis", 1), onnx.AttrInt("stash_type", 1))},
	{name: "Reshape", inputs: []in{{shape: []int64{2, 6}}, {shape: []int64{3}, ints: []int64{0, 3, -1}}}, build: single("Reshape")},
	{name: "Flatten", inputs: []in{{shape: []int64{2, 3, 2}}}, build: single("Flatten", onnx.AttrInt("axis", 2))},
	{name: "Squeeze", inputs: []in{{shape: []int64{2, 1, 3}}, {shape: []int64{1}, ints: []int64{1}}}, build: single("Squeeze")},
	{name: "Unsqueeze", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{2}, ints: []int64{0, -1}}}, build: single("Unsqueeze")},
	{name: "Transpose/perm", inputs: []in{{shape: []int64{2, 3, 4}}}, build: single("Transpose", onnx.AttrInts("perm", 1, 2, 0))},
	{name: "Transpose/default", inputs: []in{{shape: []int64{2, 3}}}, build: single("Transpose")},
	{name: "Expand", inputs: []in{{shape: []int64{3, 1}}, {shape: []int64{3}, ints: []int64{2, 3, 4}}}, build: single("Expand")},
	{name: "Concat/three", inputs: []in{{shape: []int64{2, 1}}, {shape: []int64{2, 3}}, {shape: []int64{2, 2}}}, build: single("Concat", onnx.AttrInt("axis", -1))},
	{name: "Split/halves one unused", inputs: []in{{shape: []int64{2, 6}}, {shape: []int64{2}, ints: []int64{2, 4}}}, build: func(g *onnx.Graph, x []string) []string {
		parts := g.OpN("Split", x, 2, "part", onnx.AttrInt("axis", 1))
		return []string{parts[1]}
	}},
	{name: "Split/rotate halves", inputs: []in{{shape: []int64{2, 4}}, {shape: []int64{2}, ints: []int64{2, 2}}}, build: func(g *onnx.Graph, x []string) []string {
		parts := g.OpN("Split", x, 2, "half", onnx.AttrInt("axis", -1))
		return []string{g.Op("Concat", []string{parts[1], parts[0]}, "rot", onnx.AttrInt("axis", -1))}
	}},
	{name: "Pad/constant both ends", inputs: []in{{shape: []int64{2, 3}}, {shape: []int64{4}, ints: []int64{0, 1, 1, 2}}}, build: single("Pad")},
	{name: "Pad/last axis end only", inputs: []in{{shape: []int64{2, 2, 3}}, {shape: []int64{6}, ints: []int64{0, 0, 0, 0, 0, 4}}}, build: single("Pad")},
	{name: "Slice/middle", inputs: []in{{shape: []int64{3, 5}}, {shape: []int64{1}, ints: []int64{1}}, {shape: []int64{1}, ints: []int64{4}}, {shape: []int64{1}, ints: []int64{1}}}, build: single("Slice")},
	{name: "Slice/negative and clamped", inputs: []in{{shape: []int64{4, 3}}, {shape: []int64{2}, ints: []int64{-3, 0}}, {shape: []int64{2}, ints: []int64{100, 2}}}, build: single("Slice")},
	{name: "Gather/embedding repeated ids", inputs: []in{{shape: []int64{5, 3}}, {shape: []int64{2, 3}, ints: []int64{1, 4, 1, 0, 1, -1}}}, build: single("Gather")},
	{name: "Gather/axis 1 scalar", inputs: []in{{shape: []int64{2, 4, 3}}, {shape: []int64{}, ints: []int64{2}}}, build: single("Gather", onnx.AttrInt("axis", 1))},
	{name: "Gather/axis 1 matrix", inputs: []in{{shape: []int64{2, 4}}, {shape: []int64{2, 2}, ints: []int64{3, 0, 3, 3}}}, build: single("Gather", onnx.AttrInt("axis", 1))},
	{name: "GatherElements/rows repeated", inputs: []in{{shape: []int64{3, 4}}, {shape: []int64{3, 2}, ints: []int64{1, 1, 0, 3, -1, 2}}}, build: single("GatherElements", onnx.AttrInt("axis", 1))},
	{name: "Sum/shared input", inputs: []in{{shape: []int64{3}}}, build: func(g *onnx.Graph, x []string) []string {
		// x feeds two paths whose gradients must add up.
		sq := g.Op("Mul", []string{x[0], x[0]}, "sq")
		return []string{g.Op("Add", []string{sq, g.Op("Tanh", x, "t")}, "y")}
	}},
}

func TestGradientRules(t *testing.T) {
	for _, c := range gradCases {
		t.Run(c.name, func(t *testing.T) { checkGradient(t, c) })
	}
}

// Every registered rule has a finite-difference case. The rules of migu's
// fused kernels (ai.migu) are checked in package onnx/kernels, against
// the standard-op formulation and float64 finite differences, since they
// need the kernel library; MatMulBF16's (ai.migu.bf16) there too, against
// float64 products of its bf16-rounded operands (TestRewriteBF16Gradients:
// finite differences see through bf16 rounding poorly).
func TestEveryRuleIsChecked(t *testing.T) {
	// onnx/kernels checks the fused kernels' rules (kernels_test.go,
	// act_test.go, layernorm_test.go, loss_test.go, rotary_test.go,
	// attention_test.go, bf16_test.go).
	covered := map[string]bool{onnx.DomainMiguBF16 + ".MatMulBF16": true}
	for _, op := range []string{"RMSNorm", "SwiGLU", "Gelu", "LayerNorm", "PickLogSoftmax", "Softmax", "Rotary", "Attention"} {
		covered[onnx.DomainMigu+"."+op] = true
	}
	for _, c := range gradCases {
		op, _, _ := strings.Cut(c.name, "/")
		covered[op] = true
	}
	for _, op := range Ops() {
		if !covered[op] {
			t.Errorf("rule %s has no gradient check case", op)
		}
	}
}
