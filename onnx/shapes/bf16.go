package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rule of migu's oneDNN matrix products (onnx/kernels,
// csrc/migu_bf16.c), MatMulBF16 and MatMulF32: float32 or bfloat16 in,
// float32 out.
func init() {
	registerShape(inferMatMulBF16, onnx.DomainMiguBF16+".MatMulBF16", onnx.DomainMiguBF16+".MatMulF32")
}

// inferMatMulBF16: Y = op(A)·op(B) with B 2-D; A is [..., M, K], or [K, M]
// with transA (2-D only), and Y is [..., M, N].
func inferMatMulBF16(c *inferCtx) error {
	a, b, err := c.rankedPair()
	if err != nil {
		return err
	}
	for i, t := range []*tinfo{a, b} {
		if t.dtype != onnx.Float && t.dtype != onnx.BFloat16 {
			return fmt.Errorf("MatMulBF16 input %d is %v, not float32 or bfloat16", i, t.dtype)
		}
	}
	as, bs := a.shape, b.shape
	if len(bs) != 2 || len(as) < 2 || c.intAttr("transA", 0) != 0 && len(as) != 2 {
		return fmt.Errorf("MatMulBF16 needs A [..., M, K] (2-D with transA) and a 2-D B, not %s and %s", exprsToDims(as), exprsToDims(bs))
	}
	m, n, err := c.transposedProduct(as, bs)
	if err != nil {
		return err
	}
	out := append(append([]*expr{}, as[:len(as)-2]...), m, n)
	c.set(0, onnx.Float, out)
	return nil
}
