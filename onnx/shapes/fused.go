package shapes

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Shape rules of migu's fused kernels (onnx.DomainMigu, package
// onnx/kernels); every one is float32 in and out (besides index and mask
// inputs). ScatterAddRows' Y is shaped like its Table.
func init() {
	for op, rule := range map[string]shapeRule{
		"RMSNorm":            inferNorm(1),
		"RMSNormGrad":        inferNormGrad(1),
		"LayerNorm":          inferNorm(2),
		"LayerNormGrad":      inferNormGrad(2),
		"SwiGLU":             inferLike(0, 1),
		"SwiGLUGrad":         inferLike(1, 2),
		"Gelu":               inferLike(0, 1),
		"GeluGrad":           inferLikeEach(1),
		"Rotary":             inferLike(0, 1),
		"RotaryGrad":         inferLike(0, 1),
		"Softmax":            inferLike(0, 1),
		"SoftmaxGrad":        inferLike(1, 1),
		"PickLogSoftmax":     inferPickLogSoftmax,
		"PickLogSoftmaxGrad": inferLike(1, 1),
		"AbsColSum":          inferAbsColSum,
		"SwiGLUTaps":         inferActTaps,
		"GeluTaps":           inferActTaps,
		"ScatterAddRows":     inferLike(0, 1),
		"AddN":               inferLike(0, 1),
	} {
		registerShape(rule, onnx.DomainMigu+"."+op)
	}
}

// inferLike gives n outputs of input i's shape.
func inferLike(i, n int) shapeRule {
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

// inferLikeEach gives every output of the node input i's shape (GeluGrad:
// dX, and dU when gated).
func inferLikeEach(i int) shapeRule {
	return func(c *inferCtx) error { return inferLike(i, len(c.n.Output))(c) }
}

// inferNorm is a normalisation over the last axis (RMSNorm: the inverse
// RMS; LayerNorm: the mean and inverse deviation): Y has X's shape and each
// of the stats saved for the backward pass X's with a last axis of 1.
func inferNorm(stats int) shapeRule {
	return func(c *inferCtx) error {
		x, err := c.ranked(0)
		if err != nil {
			return err
		}
		if len(x.shape) == 0 {
			return fmt.Errorf("%s needs X of rank 1 or more", c.n.GetOpType())
		}
		c.set(0, onnx.Float, x.shape)
		saved := append(append([]*expr{}, x.shape[:len(x.shape)-1]...), constExpr(1))
		for k := range stats {
			c.set(1+k, onnx.Float, saved)
		}
		return nil
	}
}

// inferNormGrad is a norm's backward pass (dY, X, W, ...): dX has X's
// shape and each of the params gradients (dW, and dB for LayerNorm) W's.
func inferNormGrad(params int) shapeRule {
	return func(c *inferCtx) error {
		x, err := c.input(1)
		if err != nil {
			return err
		}
		w, err := c.input(2)
		if err != nil {
			return err
		}
		c.set(0, onnx.Float, x.shape)
		for k := range params {
			c.set(1+k, onnx.Float, w.shape)
		}
		return nil
	}
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

// inferActTaps is an activation with the taps of its inputs (SwiGLUTaps,
// GeluTaps): Y has the first input's shape, then one [d] sum per input.
func inferActTaps(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	if len(x.shape) == 0 {
		return fmt.Errorf("%s needs inputs of rank 1 or more", c.n.GetOpType())
	}
	c.set(0, onnx.Float, x.shape)
	for k := range c.n.Input {
		c.set(1+k, onnx.Float, []*expr{x.shape[len(x.shape)-1]})
	}
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
