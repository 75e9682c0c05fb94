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
// input gradients (Gemm transB), so OneDNNRoles are the first two. On
// Zen 4 the same two made whole steps 6–8 % shorter, and the input
// gradients added nothing consistent ("Zen 4 with AVX-512 BF16").

// OneDNNRoles are the products migu moves to oneDNN where it was
// measured faster (AutoOneDNN): forward products, weight gradients and
// attention's products. On Zen 4 (2 threads, steps paired in one
// process) attention in oneDNN, its head Transposes folded in, made
// steps 1.5 % (llama), 3.4 % (t5) and 3.9 % (roberta) shorter on top of
// the other two.
var OneDNNRoles = F32Roles{Forward: true, WeightGrads: true, Attention: true}

// AutoOneDNN returns the products that were measured faster in oneDNN
// than in MLAS on CPUs of this one's kind, which --products auto moves:
// OneDNNRoles on AVX-512 of Ice Lake's generation or later
// (avx512_vbmi2: Ice Lake, Zen 4, an Emerald Rapids whose hypervisor
// hides AMX — roberta's steps 9.4 % shorter, paired — and a Xeon with
// AMX, whose float32 products are AVX-512's too: steps 11–13 % shorter on
// llama, t5 and roberta). None on older AVX-512 and AVX2-only CPUs,
// which were not measured: migu keeps MLAS there. The input gradients
// stay in MLAS everywhere: on Ice Lake they ran 30 % longer in oneDNN;
// on the Xeon with AMX they made steps 0.2–2.5 % shorter, but moved
// `mpirun -np 2 migu train` further from one process's run (weights 2.2e-5
// apart norm-wise after 20 steps, TestMpirunTrainEqualsOneProcess allows
// 1e-5) than the gain was worth.
func AutoOneDNN() F32Roles {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return F32Roles{}
	}
	return autoOneDNN(cpuFlags(data))
}

func autoOneDNN(flags map[string]bool) F32Roles {
	if !flags["avx512_vbmi2"] {
		return F32Roles{}
	}
	return OneDNNRoles
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
	// Attention: MatMuls of two 4-D activations — attention's scores and
	// context products, forward and backward — as BatchMatMul, with the
	// head Transposes around them folded in (RewriteBatch); in bf16 under
	// --precision bf16, as autocast multiplies them.
	Attention bool
}

// RewriteF32 replaces the products the roles pick by
// ai.migu.bf16.MatMulF32 nodes with the same name, operands and output:
// MatMul nodes whose left operand is float32 of rank 2 or more and right
// one a 2-D float32 matrix, and Gemm nodes of two 2-D float32 operands
// without a C input, alpha 1, with the transposes as attributes. Rewrite
// after differentiation (MatMulF32 has no gradient rule). It returns the
// number of products rewritten.
//
// Transposes around a tied output head's products fold into them, as
// ORT's GemmTransposeFusion would fold them into a Gemm, which it cannot
// do for MatMulF32: a MatMul by a transposed matrix (the head's forward
// product, x·Eᵀ) reads the matrix with transB, a Gemm an operand written
// by a Transpose (the head's input gradient) with transA or transB (the
// Transpose goes when nothing else reads it); a Gemm whose only reader is
// a Transpose of its output (onnx/grad's weight gradient of the head,
// [hidden, vocab] transposed back to the embedding's [vocab, hidden])
// becomes (op(A)·op(B))ᵀ = op(B)ᵀ·op(A)ᵀ.
func RewriteF32(m *onnx.Model, types Types, roles F32Roles) int {
	g := m.Graph()
	float := func(v string, rank int) bool {
		dt, s, ok := types.Type(v)
		return ok && dt == onnx.Float && (len(s) == rank || rank < 0 && len(s) >= 2)
	}
	consumers, producers := g.Consumers(), g.Producers()
	drop, bypassed := map[*onnxpb.NodeProto]bool{}, map[*onnxpb.NodeProto]bool{}
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
			if t := producers[n.Input[1]]; t != nil && t.GetOpType() == "Transpose" && t.GetDomain() == "" && transposes2D(t) && float(t.Input[0], 2) {
				// A tied output head multiplies by the embedding's
				// transpose: MatMulF32 reads the embedding with transB.
				bypassed[t] = true
				n.Input[1] = t.Input[0]
				transB = 1
			}
		case "Gemm":
			if onnx.AttrFloatOr(n, "alpha", 1) != 1 || !float(n.Input[0], 2) || !float(n.Input[1], 2) {
				continue
			}
			transA, transB = onnx.AttrIntOr(n, "transA", 0), onnx.AttrIntOr(n, "transB", 0)
			picked := func(ta, tb int64) bool {
				return ta == 1 && tb == 0 && roles.WeightGrads || ta == 0 && tb == 1 && roles.InputGrads
			}
			if t := outputTranspose(g, consumers, n); t != nil && picked(1-transB, 1-transA) {
				n.Input[0], n.Input[1] = n.Input[1], n.Input[0]
				transA, transB = 1-transB, 1-transA
				n.Output[0] = t.Output[0]
				drop[t] = true
			} else if !picked(transA, transB) {
				continue
			}
			// An operand written by a Transpose is read through transA or
			// transB instead, as ORT's GemmTransposeFusion folds it into a
			// Gemm (a tied head's input gradient reads the embedding's
			// transpose, which its forward product no longer needs).
			for i, trans := range []*int64{&transA, &transB} {
				if t := producers[n.Input[i]]; t != nil && t.GetOpType() == "Transpose" && t.GetDomain() == "" && transposes2D(t) && float(t.Input[0], 2) {
					bypassed[t] = true
					n.Input[i] = t.Input[0]
					*trans = 1 - *trans
				}
			}
		default:
			continue
		}
		n.OpType = proto.String("MatMulF32")
		n.Domain = proto.String(onnx.DomainMiguBF16)
		n.Attribute = []*onnxpb.AttributeProto{onnx.AttrInt("transA", transA), onnx.AttrInt("transB", transB)}
		count++
	}
	// A bypassed Transpose that nothing else reads goes.
	read := map[string]bool{}
	for _, n := range g.P.Node {
		for _, in := range n.Input {
			read[in] = true
		}
	}
	for t := range bypassed {
		if !read[t.Output[0]] && g.Output(t.Output[0]) == nil {
			drop[t] = true
		}
	}
	if len(drop) > 0 {
		g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return drop[n] })
	}
	if count > 0 {
		m.SetOpset(onnx.DomainMiguBF16, Opset)
	}
	return count
}

// outputTranspose returns the Transpose that is the only reader of a 2-D
// product's output, or nil.
func outputTranspose(g *onnx.Graph, consumers map[string][]*onnxpb.NodeProto, n *onnxpb.NodeProto) *onnxpb.NodeProto {
	out := n.Output[0]
	readers := consumers[out]
	if len(readers) != 1 || g.Output(out) != nil {
		return nil
	}
	if t := readers[0]; t.GetOpType() == "Transpose" && t.GetDomain() == "" && transposes2D(t) {
		return t
	}
	return nil
}
