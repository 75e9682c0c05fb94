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

// geluGrad differentiates Gelu(X [, U]) → Y with one
// GeluGrad(dY, X [, U]) → dX [, dU] node of the same approximation.
func geluGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 1 && len(n.Input) != 2 {
		return nil, fmt.Errorf("Gelu has %d inputs, want 1 or 2 (X [, U])", len(n.Input))
	}
	needs := make([]bool, len(n.Input))
	any := false
	for i, in := range n.Input {
		needs[i] = c.Needs(in)
		any = any || needs[i]
	}
	if !any {
		return make([]string, len(n.Input)), nil
	}
	approx := "none"
	if a := onnx.GetAttr(n, "approximate"); a != nil {
		approx = string(a.S)
	}
	grads := c.OpIn(onnx.DomainMigu, "GeluGrad", append([]string{dY[0]}, n.Input...), len(n.Input), "bw/"+n.Output[0],
		onnx.AttrString("approximate", approx))
	for i := range grads {
		if !needs[i] {
			grads[i] = ""
		}
	}
	return grads, nil
}
