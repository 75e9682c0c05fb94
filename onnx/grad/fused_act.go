package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Rules of migu's fused activation kernels (onnx/kernels/fuse_act.go):
// each backward is one fused node that recomputes what it needs from the
// forward's inputs, so the forward saves nothing beyond them.
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".SwiGLU": swiGLUGrad,
		onnx.DomainMigu + ".Gelu":   geluGrad,
	})
}

// swiGLUGrad differentiates SwiGLU(G, U) → Y with one
// SwiGLUGrad(dY, G, U) → dG, dU node.
func swiGLUGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 2 {
		return nil, fmt.Errorf("SwiGLU has %d inputs, want 2 (G, U)", len(n.Input))
	}
	outs := c.OpIn(onnx.DomainMigu, "SwiGLUGrad", []string{dY[0], n.Input[0], n.Input[1]}, 2, "bw/"+n.Output[0])
	dg, du := outs[0], outs[1]
	if !c.Needs(n.Input[0]) {
		dg = ""
	}
	if !c.Needs(n.Input[1]) {
		du = ""
	}
	return []string{dg, du}, nil
}

// geluGrad differentiates Gelu(X) → Y with one GeluGrad(dY, X) → dX node
// of the same approximation.
func geluGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 1 {
		return nil, fmt.Errorf("Gelu has %d inputs, want 1 (X)", len(n.Input))
	}
	if !c.Needs(n.Input[0]) {
		return []string{""}, nil
	}
	approx := "none"
	if a := onnx.GetAttr(n, "approximate"); a != nil {
		approx = string(a.S)
	}
	dx := c.OpIn(onnx.DomainMigu, "GeluGrad", []string{dY[0], n.Input[0]}, 1, "bw/"+n.Output[0], onnx.AttrString("approximate", approx))
	return dx, nil
}
