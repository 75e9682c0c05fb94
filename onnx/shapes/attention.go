package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of the fused attention (onnx/kernels FuseAttention):
// Attention(Q, K, V [, Bias]) → Y, LSE and AttentionGrad(dY, Q, K, V, Y,
// LSE [, Bias]) → dQ, dK, dV [, dZ], with q, k and v the 4-D inputs read
// through permQ, permK and permV ([B, H, R, D], [B, Hk, S, D], [B, Hk, S,
// E], H a multiple of Hk), Y = transpose([B, H, R, E], permY), LSE [B, H,
// R] and dZ [B, H, R, S].
func init() {
	registerShape(inferAttention, onnx.DomainMigu+".Attention")
	registerShape(inferAttentionGrad, onnx.DomainMigu+".AttentionGrad")
}

// attentionViews reads Q, K and V at inputs first.. and returns their
// logical views q, k and v and permY.
func attentionViews(c *inferCtx, first int) (q, k, v []*expr, permY []int64, err error) {
	var perms [4][]int64
	for i, name := range []string{"permQ", "permK", "permV", "permY"} {
		p, ok := c.intsAttr(name)
		if !ok {
			p = []int64{0, 1, 2, 3}
		}
		if !isPerm(p, 4) {
			return nil, nil, nil, nil, fmt.Errorf("%s %s %v is not a permutation of 0, 1, 2, 3", c.n.GetOpType(), name, p)
		}
		perms[i] = p
	}
	var views [3][]*expr
	for i := range 3 {
		t, err := c.ranked(first + i)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if len(t.shape) != 4 || t.dtype != onnx.Float {
			return nil, nil, nil, nil, fmt.Errorf("%s needs float32 4-D Q, K and V, not %s %s", c.n.GetOpType(), t.dtype, exprsToDims(t.shape))
		}
		views[i] = permuted(t.shape, perms[i])
	}
	q, k, v = views[0], views[1], views[2]
	mismatch := func(err error) error {
		return fmt.Errorf("%s: q %s, k %s and v %s do not match: %v", c.n.GetOpType(), exprsToDims(q), exprsToDims(k), exprsToDims(v), err)
	}
	for _, pair := range [][2]*expr{{q[0], k[0]}, {q[0], v[0]}, {k[1], v[1]}, {k[2], v[2]}, {q[3], k[3]}} {
		if _, err := unifyDim(pair[0], pair[1]); err != nil {
			return nil, nil, nil, nil, mismatch(err)
		}
	}
	// Grouped queries: q's heads a multiple of k's.
	hq, okq := q[1].constant()
	hk, okk := k[1].constant()
	switch {
	case okq && okk && (hk == 0 && hq != 0 || hk != 0 && hq%hk != 0):
		return nil, nil, nil, nil, mismatch(fmt.Errorf("%d query heads are not a multiple of %d key-value heads", hq, hk))
	case !(okq && okk):
		if _, err := unifyDim(q[1], k[1]); err != nil {
			return nil, nil, nil, nil, mismatch(err)
		}
	}
	return q, k, v, perms[3], nil
}

func inferAttention(c *inferCtx) error {
	q, _, v, permY, err := attentionViews(c, 0)
	if err != nil {
		return err
	}
	c.set(0, onnx.Float, permuted([]*expr{q[0], q[1], q[2], v[3]}, permY))
	if len(c.n.Output) > 1 && c.n.Output[1] != "" {
		c.set(1, onnx.Float, []*expr{q[0], q[1], q[2]})
	}
	return nil
}

func inferAttentionGrad(c *inferCtx) error {
	q, k, _, _, err := attentionViews(c, 1)
	if err != nil {
		return err
	}
	for i := range 3 {
		t, err := c.input(1 + i)
		if err != nil {
			return err
		}
		c.set(i, onnx.Float, t.shape)
	}
	if len(c.n.Output) > 3 && c.n.Output[3] != "" {
		c.set(3, onnx.Float, []*expr{q[0], q[1], q[2], k[2]})
	}
	return nil
}
