package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseCrossEntropy replaces the log-probability pick of a cross-entropy —
//
//	LogSoftmax(x, axis last) → GatherElements(·, index, axis last)
//
// over float32 logits x [..., V] and int64 indices [..., 1] — by one
// ai.migu.PickLogSoftmax node writing the same picked values and, as a
// second output, each row's log-sum-exp, from which its gradient rule
// recomputes the softmax: neither the forward nor the backward pass then
// holds the [..., V] log-probabilities. A LogSoftmax whose output is used
// by anything else, or is a graph output, stays as it is. It returns the
// number of picks fused and imports the domain when it fused any.
func FuseCrossEntropy(m *onnx.Model, types Types) (int, error) {
	g := m.Graph()
	consumers := g.Consumers()
	outputs := outputSet(g)
	drop := map[*onnxpb.NodeProto]bool{}
	replace := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, ls := range g.P.Node {
		if ls.GetOpType() != "LogSoftmax" || ls.GetDomain() != "" || len(ls.Input) != 1 || len(ls.Output) != 1 {
			continue
		}
		x, logp := ls.Input[0], ls.Output[0]
		dt, xs, ok := types.Type(x)
		if !ok || dt != onnx.Float || len(xs) == 0 || !axisIsLast(m, ls, len(xs)) {
			continue
		}
		cs := consumers[logp]
		if len(cs) != 1 || outputs[logp] {
			continue
		}
		pick := cs[0]
		if pick.GetOpType() != "GatherElements" || pick.GetDomain() != "" || len(pick.Input) != 2 || pick.Input[0] != logp ||
			len(pick.Output) != 1 || !axisIsLast(m, pick, len(xs)) {
			continue
		}
		it, is, ok := types.Type(pick.Input[1])
		if !ok || it != onnx.Int64 || len(is) != len(xs) || !sameDim(is[len(is)-1], onnx.D(1)) {
			continue
		}
		picked := pick.Output[0]
		drop[ls] = true
		replace[pick] = &onnxpb.NodeProto{
			OpType: proto.String("PickLogSoftmax"), Domain: proto.String(onnx.DomainMigu),
			Name:   proto.String(g.Unique(picked + "/PickLogSoftmax")),
			Input:  []string{x, pick.Input[1]},
			Output: []string{picked, g.Unique(picked + ".lse")},
		}
	}
	replaceNodes(m, drop, replace)
	return len(replace), nil
}

// FuseSoftmax replaces every float32 Softmax over the last axis (as
// attention computes its probabilities) by ai.migu.Softmax, whose
// gradient rule emits one ai.migu.SoftmaxGrad node where the standard
// rule emits four (Mul, ReduceSum, Sub, Mul over the whole scores
// tensor). It returns the number of softmaxes fused and imports the
// domain when it fused any.
func FuseSoftmax(m *onnx.Model, types Types) (int, error) {
	replace := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, n := range m.Graph().P.Node {
		if n.GetOpType() != "Softmax" || n.GetDomain() != "" || len(n.Input) != 1 || len(n.Output) != 1 {
			continue
		}
		dt, xs, ok := types.Type(n.Input[0])
		if !ok || dt != onnx.Float || len(xs) == 0 || !axisIsLast(m, n, len(xs)) {
			continue
		}
		replace[n] = &onnxpb.NodeProto{
			OpType: proto.String("Softmax"), Domain: proto.String(onnx.DomainMigu),
			Name:   proto.String(n.GetName()),
			Input:  []string{n.Input[0]},
			Output: []string{n.Output[0]},
		}
	}
	replaceNodes(m, nil, replace)
	return len(replace), nil
}

// FuseSoftmaxBias folds into an ai.migu.Softmax the Add before it that
// adds a bias to the attention scores (a padding or causal mask, t5's
// position bias): Softmax(Add(X, Bias)) becomes Softmax(X, Bias), which
// adds the bias row by row as it takes the softmax, the Add's float32
// sums without a pass over the scores (small llama: 8 Adds of [4, 4,
// 256, 128], 2 ms of a 340 ms step). X is the Add operand of the sum's
// shape; Bias has its rank and last axis, and X's size or 1 on every
// other axis. The Add's output must have no other reader and not be a
// graph output. Run it on a differentiated graph (the fused Softmax's
// gradient rule takes no Bias; the backward reads Softmax's output, not
// the Add's); it returns the number of Adds folded.
func FuseSoftmaxBias(m *onnx.Model, types Types) int {
	g := m.Graph()
	consumers, producers := g.Consumers(), g.Producers()
	outputs := outputSet(g)
	folded := map[*onnxpb.NodeProto]bool{}
	for _, n := range g.P.Node {
		if n.GetOpType() != "Softmax" || n.GetDomain() != onnx.DomainMigu || len(n.Input) != 1 {
			continue
		}
		z := n.Input[0]
		add := producers[z]
		if add == nil || add.GetOpType() != "Add" || add.GetDomain() != "" || len(add.Input) != 2 ||
			len(consumers[z]) != 1 || outputs[z] {
			continue
		}
		_, zs, ok := types.Type(z)
		if !ok {
			continue
		}
		for k, x := range add.Input {
			if scoresBias(types, x, add.Input[1-k], zs, false) {
				n.Input = []string{x, add.Input[1-k]}
				folded[add] = true
				break
			}
		}
	}
	g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return folded[n] })
	return len(folded)
}

// scoresBias tells whether x has shape zs (float32) and b broadcasts to it as
// Softmax's Bias: float32 of the same rank, the last axis equal, every
// other axis equal or 1. With lowerRank (Attention's Bias) b may also
// have fewer axes, the missing ones in front counting as 1, as ONNX's
// Add broadcasts.
func scoresBias(types Types, x, b string, zs onnx.Shape, lowerRank bool) bool {
	xt, xs, ok := types.Type(x)
	bt, bs, ok2 := types.Type(b)
	if !ok || !ok2 || xt != onnx.Float || bt != onnx.Float || len(zs) == 0 || len(xs) != len(zs) ||
		len(bs) == 0 || len(bs) > len(zs) || len(bs) < len(zs) && !lowerRank {
		return false
	}
	for i := range zs {
		if !sameDim(xs[i], zs[i]) {
			return false
		}
		d := onnx.D(1)
		if k := i - (len(zs) - len(bs)); k >= 0 {
			d = bs[k]
		}
		if !sameDim(d, zs[i]) && (i == len(zs)-1 || !sameDim(d, onnx.D(1))) {
			return false
		}
	}
	return true
}

// axisIsLast tells whether a node's axis attribute names the last of
// rank axes. Its default is -1, except for LogSoftmax and Softmax before
// opset 13, where it is 1 (and the op flattens from that axis on, which is
// the same as the last axis only when the axis is the last).
func axisIsLast(m *onnx.Model, n *onnxpb.NodeProto, rank int) bool {
	def := int64(-1)
	switch n.GetOpType() {
	case "Softmax", "LogSoftmax":
		if m.Opset("") < 13 {
			def = 1
		}
	case "GatherElements":
		def = 0
	}
	a := onnx.AttrIntOr(n, "axis", def)
	return a == -1 || a == int64(rank-1)
}
