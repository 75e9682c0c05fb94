package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseLayerNorm replaces every ONNX LayerNormalization over the last axis
// of a float32 X, with a weight and a bias of its last dimension (as
// exporters.Builder.LayerNorm writes roberta's norms), by one
// ai.migu.LayerNorm node with the same epsilon, writing the same output
// and the row statistics (mean and inverse deviation) the backward
// reuses. The forward was one ORT kernel already; what the rewrite buys is
// the gradient (grad/fused_layernorm.go): one LayerNormGrad node for dX,
// dW and dB instead of about fifteen standard ops. It returns the number of
// norms fused and imports the domain when it fused any.
func FuseLayerNorm(m *onnx.Model, types Types) (int, error) {
	g := m.Graph()
	count := 0
	for i, n := range g.P.Node {
		if n.GetOpType() != "LayerNormalization" || n.GetDomain() != "" || len(n.Input) != 3 || n.Input[2] == "" {
			continue
		}
		if onnx.AttrIntOr(n, "stash_type", 1) != 1 {
			continue
		}
		dt, xs, ok := types.Type(n.Input[0])
		if !ok || dt != onnx.Float || len(xs) == 0 {
			continue
		}
		if axis := onnx.AttrIntOr(n, "axis", -1); axis != -1 && axis != int64(len(xs)-1) {
			continue
		}
		last := xs[len(xs)-1]
		ok = true
		for _, p := range n.Input[1:] {
			pt, ps, known := types.Type(p)
			ok = ok && known && pt == onnx.Float && len(ps) == 1 && sameDim(ps[0], last)
		}
		if !ok {
			continue
		}
		y := n.Output[0]
		outs := []string{y, "", ""}
		copy(outs, n.Output)
		for k, suffix := range []string{"", ".mean", ".invstd"} {
			if outs[k] == "" {
				outs[k] = g.Unique(y + suffix)
			}
		}
		g.P.Node[i] = &onnxpb.NodeProto{
			OpType: proto.String("LayerNorm"), Domain: proto.String(onnx.DomainMigu),
			Name:      proto.String(g.Unique(y + "/LayerNorm")),
			Input:     append([]string(nil), n.Input...),
			Output:    outs,
			Attribute: []*onnxpb.AttributeProto{onnx.AttrFloat("epsilon", onnx.AttrFloatOr(n, "epsilon", 1e-5))},
		}
		count++
	}
	if count > 0 {
		m.SetOpset(onnx.DomainMigu, Opset)
	}
	return count, nil
}
