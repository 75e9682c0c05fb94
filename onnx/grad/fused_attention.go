package grad

import (
	"fmt"
	"slices"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// The rule of the fused attention (onnx/kernels FuseAttention).
func init() {
	register(map[string]Rule{
		onnx.DomainMigu + ".Attention": attentionGrad,
	})
}

// attentionGrad differentiates Attention(Q, K, V [, Bias]) → Y, LSE with
// one AttentionGrad(dY, Q, K, V, Y, LSE [, Bias]) → dQ, dK, dV [, dZ]
// node of the same attributes, which recomputes the probabilities from
// the saved log-sum-exp. A Bias on a gradient path (t5's position bias)
// takes dZ, the scores' gradient, summed over the axes where the Bias
// broadcasts.
func attentionGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	if len(n.Input) < 3 || len(n.Input) > 4 {
		return nil, fmt.Errorf("Attention has %d inputs, want 3 or 4 (Q, K, V [, Bias])", len(n.Input))
	}
	if len(dY) > 1 && dY[1] != "" {
		return nil, fmt.Errorf("Attention's LSE output is on a gradient path; only Y may be")
	}
	out := make([]string, len(n.Input))
	bias := ""
	if len(n.Input) == 4 {
		bias = n.Input[3]
	}
	needBias := bias != "" && c.Needs(bias)
	if dY[0] == "" || !c.Needs(n.Input[0]) && !c.Needs(n.Input[1]) && !c.Needs(n.Input[2]) && !needBias {
		return out, nil
	}
	lse := c.ForwardOutput(n, 1, n.Output[0]+".lse")
	ins := []string{dY[0], n.Input[0], n.Input[1], n.Input[2], n.Output[0], lse}
	if bias != "" {
		ins = append(ins, bias)
	}
	outs := 3
	if needBias {
		outs = 4
	}
	attrs := make([]onnx.Attr, len(n.Attribute))
	for i, a := range n.Attribute {
		attrs[i] = proto.Clone(a).(*onnxpb.AttributeProto)
	}
	g := c.OpIn(onnx.DomainMigu, "AttentionGrad", ins, outs, "bw/"+n.Output[0], attrs...)
	for i := range 3 {
		if c.Needs(n.Input[i]) {
			out[i] = g[i]
		}
	}
	if needBias {
		zs, err := c.scoresShape(n)
		if err != nil {
			return nil, err
		}
		if out[3], err = c.unbroadcast(g[3], bias, g[3], zs, 4); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scoresShape is the static shape [B, H, R, S] of an Attention node's
// scores, from q's and k's views.
func (c *Context) scoresShape(n *onnxpb.NodeProto) (onnx.Shape, error) {
	view := func(i int, attr string) (onnx.Shape, error) {
		_, s, err := c.Type(n.Input[i])
		if err != nil {
			return nil, err
		}
		if len(s) != 4 {
			return nil, fmt.Errorf("Attention input %s is not 4-D", n.Input[i])
		}
		p := []int64{0, 1, 2, 3}
		if a := onnx.GetAttr(n, attr); a != nil {
			p = slices.Clone(a.Ints)
		}
		v := make(onnx.Shape, 4)
		for j, axis := range p {
			v[j] = s[axis]
		}
		return v, nil
	}
	q, err := view(0, "permQ")
	if err != nil {
		return nil, err
	}
	k, err := view(1, "permK")
	if err != nil {
		return nil, err
	}
	return onnx.Shape{q[0], q[1], q[2], k[2]}, nil
}
