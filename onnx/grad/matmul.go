package grad

import (
	"fmt"
	"slices"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

func init() {
	register(map[string]Rule{
		"MatMul": matmulGrad,
		"Gemm":   gemmGrad,
	})
}

// matmulGrad: y = a·b, da = dy·bᵀ, db = aᵀ·dy, each reduced over batch
// axes its operand broadcast. The common linear layer — activations
// [..., k] times a 2-D weight [k, n] — is special-cased so that the weight
// gradient is one large Gemm over all tokens (transposes folded into the
// Gemm flags) instead of a batched MatMul followed by a reduction.
func matmulGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	a, b, y := n.Input[0], n.Input[1], n.Output[0]
	ra, err := c.Rank(a)
	if err != nil {
		return nil, err
	}
	rb, err := c.Rank(b)
	if err != nil {
		return nil, err
	}
	if ra < 2 || rb < 2 {
		return nil, fmt.Errorf("MatMul with a 1-D operand (ranks %d and %d) is not supported", ra, rb)
	}
	dy := dY[0]
	if rb == 2 {
		_, bs, _ := c.Type(b)
		k, nOut := bs[0], bs[1]
		flatA, flatDY := a, dy
		if ra > 2 {
			flatA = c.Op("Reshape", []string{a, c.Ints(-1, dimOrMinus(k))}, "bw/"+a+".flat")
			flatDY = c.Op("Reshape", []string{dy, c.Ints(-1, dimOrMinus(nOut))}, "bw/"+y+".flat")
		}
		if c.Needs(b) {
			out[1] = c.Op("Gemm", []string{flatA, flatDY}, "bw/"+b, onnx.AttrInt("transA", 1))
		}
		if c.Needs(a) {
			da := c.Op("Gemm", []string{flatDY, b}, "bw/"+a+".flat", onnx.AttrInt("transB", 1))
			if ra > 2 {
				da = c.Op("Reshape", []string{da, c.ShapeOf(a)}, "bw/"+a)
			}
			out[0] = da
		}
		return out, nil
	}
	_, ys, err := c.Type(y)
	if err != nil {
		return nil, err
	}
	ry := max(ra, rb)
	if c.Needs(a) {
		bt := c.Op("Transpose", []string{b}, "bw/"+b+".T", onnx.AttrInts("perm", swapLast(rb)...))
		full := c.Op("MatMul", []string{dy, bt}, "bw/"+a+".full")
		da, err := c.unbroadcast(full, a, full, c.productShape(ys, a), ry)
		if err != nil {
			return nil, err
		}
		out[0] = da
	}
	if c.Needs(b) {
		at := c.Op("Transpose", []string{a}, "bw/"+a+".T", onnx.AttrInts("perm", swapLast(ra)...))
		full := c.Op("MatMul", []string{at, dy}, "bw/"+b+".full")
		db, err := c.unbroadcast(full, b, full, c.productShape(ys, b), ry)
		if err != nil {
			return nil, err
		}
		out[1] = db
	}
	return out, nil
}

// productShape is the static shape of a batched MatMul operand's gradient
// before unbroadcasting: the result's batch axes and the operand's matrix
// axes (nil when either shape is unknown). Comparing the operand with this,
// not with the result, leaves the matrix axes out of the broadcast check.
func (c *Context) productShape(ys onnx.Shape, operand string) onnx.Shape {
	_, s, _ := c.Type(operand)
	if ys == nil || len(s) < 2 {
		return nil
	}
	return append(slices.Clone(ys[:len(ys)-2]), s[len(s)-2:]...)
}

// swapLast is the permutation exchanging the last two of r axes.
func swapLast(r int) []int64 {
	p := make([]int64, r)
	for i := range p {
		p[i] = int64(i)
	}
	p[r-1], p[r-2] = p[r-2], p[r-1]
	return p
}

// dimOrMinus gives a fixed dimension, or -1 (infer) for a symbolic one.
func dimOrMinus(d onnx.Dim) int64 {
	if d.Known && d.Param == "" {
		return d.Value
	}
	return -1
}

// gemmGrad: y = α·op(a)·op(b) + β·c with op a transpose when the flag is set.
func gemmGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	a, b, y := n.Input[0], n.Input[1], n.Output[0]
	alpha := float64(onnx.AttrFloatOr(n, "alpha", 1))
	beta := float64(onnx.AttrFloatOr(n, "beta", 1))
	ta, tb := onnx.AttrIntOr(n, "transA", 0) == 1, onnx.AttrIntOr(n, "transB", 0) == 1
	dy := dY[0]
	flag := func(name string, v bool) onnx.Attr {
		if v {
			return onnx.AttrInt(name, 1)
		}
		return onnx.AttrInt(name, 0)
	}
	scale := []onnx.Attr{onnx.AttrFloat("alpha", float32(alpha))}
	if c.Needs(a) {
		// op(a) = dy·op(b)ᵀ; a = op(a) or its transpose.
		if !ta {
			out[0] = c.Op("Gemm", []string{dy, b}, "bw/"+a, append(scale, flag("transB", !tb))...)
		} else {
			out[0] = c.Op("Gemm", []string{b, dy}, "bw/"+a, append(scale, flag("transA", tb), flag("transB", true))...)
		}
	}
	if c.Needs(b) {
		// op(b) = op(a)ᵀ·dy.
		if !tb {
			out[1] = c.Op("Gemm", []string{a, dy}, "bw/"+b, append(scale, flag("transA", !ta))...)
		} else {
			out[1] = c.Op("Gemm", []string{dy, a}, "bw/"+b, append(scale, flag("transA", true), flag("transB", ta))...)
		}
	}
	if len(n.Input) > 2 && n.Input[2] != "" && c.Needs(n.Input[2]) {
		g := dy
		if beta != 1 {
			g = c.Op("Mul", []string{dy, c.Scalar(beta, y)}, "bw/"+n.Input[2]+".beta")
		}
		dc, err := c.Unbroadcast(g, n.Input[2], y)
		if err != nil {
			return nil, err
		}
		out[2] = dc
	}
	return out, nil
}
