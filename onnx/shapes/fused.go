package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of migu's fused kernels (onnx.DomainMigu, package
// onnx/kernels); every one is float32 in and out.
func init() {
	registerShape(inferRMSNorm, onnx.DomainMigu+".RMSNorm")
	registerShape(inferRMSNormGrad, onnx.DomainMigu+".RMSNormGrad")
	registerShape(inferAbsColSum, onnx.DomainMigu+".AbsColSum")
}

// inferRMSNorm: Y has X's shape, InvRMS X's with a last axis of 1.
func inferRMSNorm(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	if _, err := c.input(1); err != nil {
		return err
	}
	if len(x.shape) == 0 {
		return fmt.Errorf("RMSNorm needs X of rank 1 or more")
	}
	c.set(0, onnx.Float, x.shape)
	stats := append(append([]*expr{}, x.shape[:len(x.shape)-1]...), constExpr(1))
	c.set(1, onnx.Float, stats)
	return nil
}

// inferRMSNormGrad: dX has X's shape, dW W's.
func inferRMSNormGrad(c *inferCtx) error {
	x, err := c.input(1)
	if err != nil {
		return err
	}
	w, err := c.input(2)
	if err != nil {
		return err
	}
	c.set(0, onnx.Float, x.shape)
	c.set(1, onnx.Float, w.shape)
	return nil
}

// inferAbsColSum: S is [d], d the last axis of Y.
func inferAbsColSum(c *inferCtx) error {
	y, err := c.ranked(0)
	if err != nil {
		return err
	}
	if len(y.shape) == 0 {
		return fmt.Errorf("AbsColSum needs Y of rank 1 or more")
	}
	c.set(0, onnx.Float, []*expr{y.shape[len(y.shape)-1]})
	return nil
}
