package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// The rule of migu's fused LayerNorm (onnx/kernels/fuse_layernorm.go).
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".LayerNorm": layerNormFusedGrad,
	})
}

// layerNormFusedGrad differentiates LayerNorm(X, W, B) → Y, Mean, InvStd
// with one LayerNormGrad(dY, X, W, Mean, InvStd) → dX, dW, dB node,
// reusing the statistics the forward kernel saved.
func layerNormFusedGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 3 {
		return nil, fmt.Errorf("LayerNorm has %d inputs, want 3 (X, W, B)", len(n.Input))
	}
	if dY[0] == "" {
		return make([]string, 3), nil
	}
	for _, d := range dY[1:] {
		if d != "" {
			return nil, fmt.Errorf("LayerNorm's Mean or InvStd output is on a gradient path; only Y may be")
		}
	}
	y := n.Output[0]
	mean := c.ForwardOutput(n, 1, y+".mean")
	inv := c.ForwardOutput(n, 2, y+".invstd")
	// The node keeps all three outputs; the gradients not asked for are
	// left unused.
	outs := append([]string(nil), c.OpIn(onnx.DomainMigu, "LayerNormGrad", []string{dY[0], n.Input[0], n.Input[1], mean, inv}, 3, "bw/"+y)...)
	for i, in := range n.Input {
		if !c.Needs(in) {
			outs[i] = ""
		}
	}
	return outs, nil
}
