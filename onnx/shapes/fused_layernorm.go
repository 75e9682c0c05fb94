package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of migu's fused LayerNorm (onnx/kernels/fuse_layernorm.go).
func init() {
	registerShape(inferMiguLayerNorm, onnx.DomainMigu+".LayerNorm")
	registerShape(inferMiguLayerNormGrad, onnx.DomainMigu+".LayerNormGrad")
}

// inferMiguLayerNorm: Y has X's shape, Mean and InvStd X's with a last axis
// of 1.
func inferMiguLayerNorm(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	if len(x.shape) == 0 {
		return fmt.Errorf("LayerNorm needs X of rank 1 or more")
	}
	c.set(0, onnx.Float, x.shape)
	stats := append(append([]*expr{}, x.shape[:len(x.shape)-1]...), constExpr(1))
	c.set(1, onnx.Float, stats)
	c.set(2, onnx.Float, stats)
	return nil
}

// inferMiguLayerNormGrad: dX has X's shape, dW and dB W's.
func inferMiguLayerNormGrad(c *inferCtx) error {
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
	c.set(2, onnx.Float, w.shape)
	return nil
}
