package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of migu's oneDNN matrix products (onnx/kernels,
// csrc/migu_bf16.c), MatMulBF16, MatMulF32 and BatchMatMul: float32 or
// bfloat16 in, float32 out; and ToBF16, which rounds a float32 operand to
// bfloat16 once for several of them.
func init() {
	registerShape(inferMatMulBF16, onnx.DomainMiguBF16+".MatMulBF16", onnx.DomainMiguBF16+".MatMulF32")
	registerShape(inferBatchMatMul, onnx.DomainMiguBF16+".BatchMatMul")
	registerShape(inferToBF16, onnx.DomainMiguBF16+".ToBF16")
}

// inferToBF16: Y is X's shape in bfloat16; X must be float32.
func inferToBF16(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	if x.dtype != onnx.Float {
		return fmt.Errorf("ToBF16 needs a float32 X, not %s", x.dtype)
	}
	c.set(0, onnx.BFloat16, x.shape)
	return nil
}

// inferMatMulBF16: Y = op(A)·op(B) (+ Bias [N]) with B 2-D; A is [..., M,
// K], or [K, M] with transA (2-D only), and Y is [..., M, N].
func inferMatMulBF16(c *inferCtx) error {
	a, b, err := c.rankedPair()
	if err != nil {
		return err
	}
	if err := floatOrBF16("MatMulBF16", a, b); err != nil {
		return err
	}
	as, bs := a.shape, b.shape
	if len(bs) != 2 || len(as) < 2 || c.intAttr("transA", 0) != 0 && len(as) != 2 {
		return fmt.Errorf("MatMulBF16 needs A [..., M, K] (2-D with transA) and a 2-D B, not %s and %s", exprsToDims(as), exprsToDims(bs))
	}
	m, n, err := c.transposedProduct(as, bs)
	if err != nil {
		return err
	}
	if bias := c.optional(2); bias != nil {
		// The optional Bias (kernels.FuseProductBias): float32 [N].
		if bias.dtype != onnx.Float || len(bias.shape) != 1 {
			return fmt.Errorf("MatMulBF16 needs a float32 Bias [N], not %s %s", bias.dtype, exprsToDims(bias.shape))
		}
		if _, err := unifyDim(bias.shape[0], n); err != nil {
			return fmt.Errorf("Bias %s against N of the product: %v", exprsToDims(bias.shape), err)
		}
	}
	out := append(append([]*expr{}, as[:len(as)-2]...), m, n)
	c.set(0, onnx.Float, out)
	return nil
}

// inferBatchMatMul: Y = transpose(transpose(A, permA)·transpose(B,
// permB), permY) for 4-D A and B, the batch axes broadcast as MatMul's.
func inferBatchMatMul(c *inferCtx) error {
	a, b, err := c.rankedPair()
	if err != nil {
		return err
	}
	if len(a.shape) != 4 || len(b.shape) != 4 {
		return fmt.Errorf("BatchMatMul needs 4-D A and B, not %s and %s", exprsToDims(a.shape), exprsToDims(b.shape))
	}
	if err := floatOrBF16("BatchMatMul", a, b); err != nil {
		return err
	}
	var perms [3][]int64
	for i, name := range []string{"permA", "permB", "permY"} {
		p, ok := c.intsAttr(name)
		if !ok {
			p = []int64{0, 1, 2, 3}
		}
		if !isPerm(p, 4) {
			return fmt.Errorf("BatchMatMul %s %v is not a permutation of 0, 1, 2, 3", name, p)
		}
		perms[i] = p
	}
	as, bs := permuted(a.shape, perms[0]), permuted(b.shape, perms[1])
	if _, err := unifyDim(as[3], bs[2]); err != nil {
		return fmt.Errorf("inner dims of %s and %s: %v", exprsToDims(as), exprsToDims(bs), err)
	}
	batch, err := c.broadcast(as[:2], bs[:2])
	if err != nil {
		return err
	}
	c.set(0, onnx.Float, permuted([]*expr{batch[0], batch[1], as[2], bs[3]}, perms[2]))
	return nil
}

// floatOrBF16 checks that the oneDNN products' operands are float32 or
// bfloat16.
func floatOrBF16(op string, operands ...*tinfo) error {
	for i, t := range operands {
		if t.dtype != onnx.Float && t.dtype != onnx.BFloat16 {
			return fmt.Errorf("%s input %d is %v, not float32 or bfloat16", op, i, t.dtype)
		}
	}
	return nil
}
