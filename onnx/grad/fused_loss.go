package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Rules of the fused cross-entropy pick and softmax (onnx/kernels
// FuseCrossEntropy and FuseSoftmax): each gradient is one fused kernel.
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".PickLogSoftmax": pickLogSoftmaxGrad,
		onnx.DomainMigu + ".Softmax":        fusedSoftmaxGrad,
	})
}

// pickLogSoftmaxGrad differentiates PickLogSoftmax(Logits, Index) →
// Picked, LSE with one PickLogSoftmaxGrad(dPicked, Logits, Index, LSE) →
// dLogits node: dPicked·(onehot(Index) − softmax(Logits)), the softmax
// recomputed from the saved log-sum-exp.
func pickLogSoftmaxGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 2 {
		return nil, fmt.Errorf("PickLogSoftmax has %d inputs, want 2 (Logits, Index)", len(n.Input))
	}
	if len(dY) > 1 && dY[1] != "" {
		return nil, fmt.Errorf("PickLogSoftmax's LSE output is on a gradient path; only Picked may be")
	}
	out := []string{"", ""}
	if !c.Needs(n.Input[0]) || dY[0] == "" {
		return out, nil
	}
	lse := c.ForwardOutput(n, 1, n.Output[0]+".lse")
	out[0] = c.OpIn(onnx.DomainMigu, "PickLogSoftmaxGrad", []string{dY[0], n.Input[0], n.Input[1], lse}, 1, "bw/"+n.Input[0])[0]
	return out, nil
}

// fusedSoftmaxGrad differentiates Softmax(X) → Y over the last axis with
// one SoftmaxGrad(dY, Y) → dX = Y·(dY − Σ dY·Y) node. A Softmax with a
// Bias has no rule: kernels.FuseSoftmaxBias makes it after
// differentiation.
func fusedSoftmaxGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) != 1 {
		return nil, fmt.Errorf("Softmax has %d inputs, want 1", len(n.Input))
	}
	return c.OpIn(onnx.DomainMigu, "SoftmaxGrad", []string{dY[0], n.Output[0]}, 1, "bw/"+n.Input[0]), nil
}
