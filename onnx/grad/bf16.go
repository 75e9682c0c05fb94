package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Rule of migu's bfloat16 matrix product (onnx/kernels, MatMulBF16): the
// products of its gradient are bf16 products too, as under PyTorch's
// autocast, so a bf16 training graph has no float32 product left on its
// weights' path.
func init() {
	register(map[string]Rule{
		onnx.DomainMiguBF16 + ".MatMulBF16": matmulBF16Grad,
	})
}

// matmulBF16Grad: y = a·op(b) with a [..., m, k] and op(b) [k, n] (b 2-D,
// transposed where transB is set). da = dy·op(b)ᵀ is one product over the
// batched dy (op(b)ᵀ is b with the flag flipped); db is one product over
// all tokens: aᵀ·dy [k, n], or dyᵀ·a [n, k] for a transposed b.
func matmulBF16Grad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if onnx.AttrIntOr(n, "transA", 0) != 0 {
		return nil, fmt.Errorf("MatMulBF16 with transA has no gradient rule (the bf16 rewrite never emits it in a forward graph)")
	}
	tb := onnx.AttrIntOr(n, "transB", 0)
	out := grads(n)
	a, b, y, dy := n.Input[0], n.Input[1], n.Output[0], dY[0]
	product := func(x, w string, transA, transB int64, hint string) string {
		return c.OpIn(onnx.DomainMiguBF16, "MatMulBF16", []string{x, w}, 1, hint, onnx.AttrInt("transA", transA), onnx.AttrInt("transB", transB))[0]
	}
	if c.Needs(a) {
		out[0] = product(dy, b, 0, 1-tb, "bw/"+a)
	}
	if c.Needs(b) {
		ra, err := c.Rank(a)
		if err != nil {
			return nil, err
		}
		_, as, _ := c.Type(a)
		_, ys, _ := c.Type(y)
		flatA, flatDY := a, dy
		if ra > 2 {
			flatA = c.Op("Reshape", []string{a, c.Ints(-1, dimOrMinus(as[ra-1]))}, "bw/"+a+".flat")
			flatDY = c.Op("Reshape", []string{dy, c.Ints(-1, dimOrMinus(ys[len(ys)-1]))}, "bw/"+y+".flat")
		}
		if tb == 0 {
			out[1] = product(flatA, flatDY, 1, 0, "bw/"+b)
		} else {
			out[1] = product(flatDY, flatA, 1, 0, "bw/"+b)
		}
	}
	return out, nil
}
