package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// The rule of the fused rotary embedding (onnx/kernels FuseRotary).
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".Rotary": rotaryGrad,
	})
}

// rotaryGrad differentiates Rotary(X, Cos, Sin) → Y with one
// RotaryGrad(dY, Cos, Sin) → dX node, the rotation back. Cos and Sin are
// position tables computed from the attention mask, never trained; a
// graph that differentiates them is refused.
func rotaryGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 3 {
		return nil, fmt.Errorf("Rotary has %d inputs, want 3 (X, Cos, Sin)", len(n.Input))
	}
	if c.Needs(n.Input[1]) || c.Needs(n.Input[2]) {
		return nil, fmt.Errorf("Rotary's Cos or Sin (%s, %s) is on a gradient path; the fused kernel differentiates X only (set MIGU_KERNELS=off)", n.Input[1], n.Input[2])
	}
	out := []string{"", "", ""}
	if c.Needs(n.Input[0]) {
		out[0] = c.OpIn(onnx.DomainMigu, "RotaryGrad", []string{dY[0], n.Input[1], n.Input[2]}, 1, "bw/"+n.Input[0])[0]
	}
	return out, nil
}
