package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseRotary replaces every rotary embedding written in standard
// operators in the rotate-half layout, as the llama exporter writes it —
//
//	x1, x2 = Split(x, axis last, two halves)
//	Concat(Sub(Mul(x1, cos), Mul(x2, sin)), Add(Mul(x2, cos), Mul(x1, sin)), axis last)
//
// over a float32 x [..., m, d] and cos, sin [..., 1, d/2] with x's
// leading axes — by one ai.migu.Rotary node writing the same output,
// whose gradient rule emits one RotaryGrad node instead of four Muls, a
// Neg, two Sums and a Concat. A chain whose intermediate values are used
// elsewhere, or are graph outputs, stays as it is. It returns the number
// of rotations fused and imports the domain when it fused any.
func FuseRotary(m *onnx.Model, types Types) (int, error) {
	g := m.Graph()
	consumers := g.Consumers()
	outputs := outputSet(g)
	// single returns v's only consumer, when it is a default-domain op of
	// the given type and v is no graph output.
	single := func(v, op string) *onnxpb.NodeProto {
		cs := consumers[v]
		if len(cs) != 1 || outputs[v] || cs[0].GetOpType() != op || cs[0].GetDomain() != "" || len(cs[0].Output) != 1 {
			return nil
		}
		return cs[0]
	}
	// muls returns the two Muls that are x's only consumers, as a map
	// from their other operand to the node.
	muls := func(x string) map[string]*onnxpb.NodeProto {
		cs := consumers[x]
		if len(cs) != 2 || outputs[x] {
			return nil
		}
		out := map[string]*onnxpb.NodeProto{}
		for _, n := range cs {
			if n.GetOpType() != "Mul" || n.GetDomain() != "" || len(n.Output) != 1 || other(n, x) == "" || other(n, x) == x {
				return nil
			}
			out[other(n, x)] = n
		}
		if len(out) != 2 {
			return nil
		}
		return out
	}
	drop := map[*onnxpb.NodeProto]bool{}
	replace := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, split := range g.P.Node {
		if split.GetOpType() != "Split" || split.GetDomain() != "" || len(split.Output) != 2 {
			continue
		}
		x := split.Input[0]
		dt, xs, ok := types.Type(x)
		if !ok || dt != onnx.Float || len(xs) < 2 || !xs[len(xs)-1].Known || xs[len(xs)-1].Param != "" || xs[len(xs)-1].Value%2 != 0 ||
			!axisIsLast(m, split, len(xs)) || !halves(m, split, xs[len(xs)-1].Value/2) {
			continue
		}
		x1, x2 := split.Output[0], split.Output[1]
		m1, m2 := muls(x1), muls(x2)
		if m1 == nil || m2 == nil {
			continue
		}
		// Find cos and sin: x1·cos feeds the Sub first, x1·sin the Add.
		var cos, sin string
		for v, n := range m1 {
			if sub := single(n.Output[0], "Sub"); sub != nil && sub.Input[0] == n.Output[0] {
				cos = v
			} else if single(n.Output[0], "Add") != nil {
				sin = v
			}
		}
		if cos == "" || sin == "" || m2[cos] == nil || m2[sin] == nil || !rotaryTable(types, cos, xs) || !rotaryTable(types, sin, xs) {
			continue
		}
		x1cos, x1sin, x2cos, x2sin := m1[cos], m1[sin], m2[cos], m2[sin]
		sub := single(x1cos.Output[0], "Sub")
		add := single(x1sin.Output[0], "Add")
		if sub == nil || add == nil || sub.Input[1] != x2sin.Output[0] || single(x2sin.Output[0], "Sub") != sub ||
			single(x2cos.Output[0], "Add") != add || other(add, x1sin.Output[0]) != x2cos.Output[0] {
			continue
		}
		cat := single(sub.Output[0], "Concat")
		if cat == nil || len(cat.Input) != 2 || cat.Input[0] != sub.Output[0] || cat.Input[1] != add.Output[0] ||
			single(add.Output[0], "Concat") != cat || !axisIsLast(m, cat, len(xs)) {
			continue
		}
		for _, n := range []*onnxpb.NodeProto{split, x1cos, x1sin, x2cos, x2sin, sub, add} {
			drop[n] = true
		}
		y := cat.Output[0]
		replace[cat] = &onnxpb.NodeProto{
			OpType: proto.String("Rotary"), Domain: proto.String(onnx.DomainMigu),
			Name:   proto.String(g.Unique(y + "/Rotary")),
			Input:  []string{x, cos, sin},
			Output: []string{y},
		}
	}
	replaceNodes(m, drop, replace)
	return len(replace), nil
}

// halves tells whether a Split cuts into two parts of h each: sizes [h, h]
// from its second input or its split attribute (before opset 13), or none
// given (equal parts).
func halves(m *onnx.Model, n *onnxpb.NodeProto, h int64) bool {
	var sizes []int64
	switch {
	case len(n.Input) >= 2 && n.Input[1] != "":
		v, ok := int64s(m, n.Input[1])
		if !ok {
			return false
		}
		sizes = v
	case onnx.GetAttr(n, "split") != nil:
		sizes = onnx.GetAttr(n, "split").Ints
	default:
		return onnx.GetAttr(n, "num_outputs") == nil || onnx.AttrIntOr(n, "num_outputs", 0) == 2
	}
	return len(sizes) == 2 && sizes[0] == h && sizes[1] == h
}

// rotaryTable tells whether a cos or sin table fits x [..., m, d]: float32
// [..., 1, d/2] with x's leading axes.
func rotaryTable(types Types, v string, xs onnx.Shape) bool {
	dt, cs, ok := types.Type(v)
	r := len(xs)
	if !ok || dt != onnx.Float || len(cs) != r || !sameDim(cs[r-2], onnx.D(1)) || !sameDim(cs[r-1], onnx.D(xs[r-1].Value/2)) {
		return false
	}
	for i := 0; i < r-2; i++ {
		if !sameDim(cs[i], xs[i]) {
			return false
		}
	}
	return true
}
