package kernels

import (
	"os"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// float32 products through oneDNN: ai.migu.bf16.MatMulF32 (csrc/migu_bf16.c,
// in the bf16 library) multiplies float32 operands as they are, with
// oneDNN's float32 matmul instead of ORT's MLAS, on ORT's threads.
//
// In the small presets' training graphs on Ice Lake-SP (2 threads,
// benchmarks/perf/README.md, "oneDNN float32 products") oneDNN took
// about 15 % less time than MLAS on the weight gradients (Gemm transA)
// and about 9 % less on the forward products, and about 30 % more on the
// input gradients (Gemm transB), so OneDNNRoles are the first two.

// OneDNNRoles are the products migu moves to oneDNN where it was
// measured faster (OneDNNFaster): forward products and weight gradients.
var OneDNNRoles = F32Roles{Forward: true, WeightGrads: true}

// OneDNNFaster tells whether this CPU is of the kind where OneDNNRoles
// in oneDNN were measured faster than in MLAS: Ice Lake's AVX-512
// generation (avx512_vbmi2) without bf16 units. Elsewhere — older
// AVX-512, AVX2 only, bf16 units (Zen 4, Sapphire Rapids) — it was not
// measured, and migu keeps MLAS.
func OneDNNFaster() bool {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	return oneDNNFaster(cpuFlags(data))
}

func oneDNNFaster(flags map[string]bool) bool {
	return flags["avx512_vbmi2"] && !flags["avx512_bf16"] && !flags["amx_bf16"]
}

// F32Roles picks which products of a training graph RewriteF32 moves to
// oneDNN, by their role.
type F32Roles struct {
	// Forward: MatMul of float32 activations [..., M, K] by a 2-D float32
	// matrix (the linear layers).
	Forward bool
	// InputGrads: Gemm(dY, W, transB 1), the gradient of a linear's input.
	InputGrads bool
	// WeightGrads: Gemm(X, dY, transA 1), the gradient of a linear's
	// weight, one product over all tokens (onnx/grad's MatMul rule).
	WeightGrads bool
}

// RewriteF32 replaces the products the roles pick by
// ai.migu.bf16.MatMulF32 nodes with the same name, operands and output:
// MatMul nodes whose left operand is float32 of rank 2 or more and right
// one a 2-D float32 matrix, and Gemm nodes of two 2-D float32 operands
// without a C input, alpha 1, with the transposes as attributes. Rewrite
// after differentiation (MatMulF32 has no gradient rule). It returns the
// number of products rewritten.
func RewriteF32(m *onnx.Model, types Types, roles F32Roles) int {
	g := m.Graph()
	float := func(v string, rank int) bool {
		dt, s, ok := types.Type(v)
		return ok && dt == onnx.Float && (len(s) == rank || rank < 0 && len(s) >= 2)
	}
	count := 0
	for _, n := range g.P.Node {
		if n.GetDomain() != "" || len(n.Input) != 2 || len(n.Output) != 1 {
			continue
		}
		var transA, transB int64
		switch n.GetOpType() {
		case "MatMul":
			if !roles.Forward || !float(n.Input[0], -1) || !float(n.Input[1], 2) {
				continue
			}
		case "Gemm":
			if onnx.AttrFloatOr(n, "alpha", 1) != 1 || !float(n.Input[0], 2) || !float(n.Input[1], 2) {
				continue
			}
			transA, transB = onnx.AttrIntOr(n, "transA", 0), onnx.AttrIntOr(n, "transB", 0)
			weight := transA == 1 && transB == 0
			input := transA == 0 && transB == 1
			if !(weight && roles.WeightGrads || input && roles.InputGrads) {
				continue
			}
		default:
			continue
		}
		n.OpType = proto.String("MatMulF32")
		n.Domain = proto.String(onnx.DomainMiguBF16)
		n.Attribute = []*onnxpb.AttributeProto{onnx.AttrInt("transA", transA), onnx.AttrInt("transB", transB)}
		count++
	}
	if count > 0 {
		m.SetOpset(onnx.DomainMiguBF16, Opset)
	}
	return count
}
