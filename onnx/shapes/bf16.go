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
	a, err := c.ranked(0)
	if err != nil {
		return err
	}
	b, err := c.ranked(1)
	if err != nil {
		return err
	}
	for i, t := range []*tinfo{a, b} {
		if t.dtype != onnx.Float && t.dtype != onnx.BFloat16 {
			return fmt.Errorf("MatMulBF16 input %d is %v, not float32 or bfloat16", i, t.dtype)
		}
	}
	transA, transB := c.intAttr("transA", 0) != 0, c.intAttr("transB", 0) != 0
	as, bs := a.shape, b.shape
	if len(bs) != 2 || len(as) < 2 || transA && len(as) != 2 {
		return fmt.Errorf("MatMulBF16 needs A [..., M, K] (2-D with transA) and a 2-D B, not %s and %s", exprsToDims(as), exprsToDims(bs))
	}
	m, ka := as[len(as)-2], as[len(as)-1]
	if transA {
		m, ka = ka, m
	}
	kb, n := bs[0], bs[1]
	if transB {
		kb, n = n, kb
	}
	if _, err := unifyDim(ka, kb); err != nil {
		return fmt.Errorf("inner dims of %s and %s: %v", exprsToDims(as), exprsToDims(bs), err)
	}
	out := append(append([]*expr{}, as[:len(as)-2]...), m, n)
	c.set(0, onnx.Float, out)
	return nil
}
