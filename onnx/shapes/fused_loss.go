package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of the fused cross-entropy pick and softmax (onnx/kernels
// FuseCrossEntropy and FuseSoftmax).
func init() {
	registerShape(inferPickLogSoftmax, onnx.DomainMigu+".PickLogSoftmax")
	registerShape(inferSameAs(1), onnx.DomainMigu+".PickLogSoftmaxGrad")
	registerShape(inferSameAs(0), onnx.DomainMigu+".Softmax")
	registerShape(inferSameAs(1), onnx.DomainMigu+".SoftmaxGrad")
}

// inferPickLogSoftmax: Picked and LSE have Index's shape ([..., 1]).
func inferPickLogSoftmax(c *inferCtx) error {
	if _, err := c.input(0); err != nil {
		return err
	}
	idx, err := c.ranked(1)
	if err != nil {
		return err
	}
	if len(idx.shape) == 0 {
		return fmt.Errorf("PickLogSoftmax needs Index of rank 1 or more")
	}
	c.set(0, onnx.Float, idx.shape)
	c.set(1, onnx.Float, idx.shape)
	return nil
}

// inferSameAs gives the single float32 output input i's shape.
func inferSameAs(i int) shapeRule {
	return func(c *inferCtx) error {
		x, err := c.input(i)
		if err != nil {
			return err
		}
		c.set(0, onnx.Float, x.shape)
		return nil
	}
}
