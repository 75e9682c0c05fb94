package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Rules of migu's fused kernels (onnx.DomainMigu, package onnx/kernels):
// a graph holds these ops only when the kernel library is loaded, so their
// gradients are fused kernels too.
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".RMSNorm": rmsNormGrad,
	})
}

// rmsNormGrad differentiates RMSNorm(X, W) → Y, InvRMS with one
// RMSNormGrad(dY, X, W, InvRMS) → dX, dW node, reusing the inverse RMS the
// forward kernel saved.
func rmsNormGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 2 {
		return nil, fmt.Errorf("RMSNorm has %d inputs, want 2 (X, W)", len(n.Input))
	}
	if len(dY) > 1 && dY[1] != "" {
		return nil, fmt.Errorf("RMSNorm's InvRMS output is on a gradient path; only Y may be")
	}
	inv := c.ForwardOutput(n, 1, n.Output[0]+".inv_rms")
	outs := c.OpIn(onnx.DomainMigu, "RMSNormGrad", []string{dY[0], n.Input[0], n.Input[1], inv}, 2, "bw/"+n.Output[0])
	dx, dw := outs[0], outs[1]
	if !c.Needs(n.Input[0]) {
		dx = ""
	}
	if !c.Needs(n.Input[1]) {
		dw = ""
	}
	return []string{dx, dw}, nil
}
