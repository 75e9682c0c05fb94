package shapes

import (
	"github.com/migu-ml/migu/onnx"
)

// Shape rules of migu's fused activation kernels (onnx/kernels/fuse_act.go):
// elementwise, every output has the shape of the op's first forward input.
func init() {
	registerShape(inferLike(0, 1), onnx.DomainMigu+".SwiGLU")
	registerShape(inferLike(1, 2), onnx.DomainMigu+".SwiGLUGrad")
	registerShape(inferLike(0, 1), onnx.DomainMigu+".Gelu")
	registerShape(inferLike(1, 1), onnx.DomainMigu+".GeluGrad")
}

// inferLike gives n float32 outputs of input i's shape.
func inferLike(i, n int) func(*inferCtx) error {
	return func(c *inferCtx) error {
		x, err := c.input(i)
		if err != nil {
			return err
		}
		for k := range n {
			c.set(k, onnx.Float, x.shape)
		}
		return nil
	}
}
