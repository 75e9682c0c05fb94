package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Opset is the version of onnx.DomainMigu that fused graphs import.
const Opset = 1

// Types tells the rewrite the element types and shapes of values
// (shapes.Infer gives it).
type Types interface {
	Type(value string) (onnx.DType, onnx.Shape, bool)
}

// FuseRMSNorm replaces every RMSNorm written in standard operators, as
// exporters.Builder.RMSNorm writes it —
//
//	Mul(x, x) → ReduceMean(axes [-1], keepdims 1) → Add(eps) → Sqrt →
//	Reciprocal → Mul(x, ·) → Mul(·, w)
//
// over a float32 x [..., d] and a weight w [d] — by one ai.migu.RMSNorm
// node writing the same output, and imports the domain when it fused
// any. A chain whose intermediate values are used elsewhere, or are graph
// outputs, stays as it is. It returns the number of norms fused.
func FuseRMSNorm(m *onnx.Model, types Types) (int, error) {
	g := m.Graph()
	consumers := g.Consumers()
	outputs := outputSet(g)
	// only returns the single consumer of v with the given op type, or nil.
	only := func(v, op string) *onnxpb.NodeProto {
		cs := consumers[v]
		if len(cs) != 1 || outputs[v] || cs[0].GetOpType() != op || cs[0].GetDomain() != "" {
			return nil
		}
		return cs[0]
	}
	drop := map[*onnxpb.NodeProto]bool{}
	replace := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, sq := range g.P.Node {
		if sq.GetOpType() != "Mul" || sq.GetDomain() != "" || len(sq.Input) != 2 || sq.Input[0] != sq.Input[1] || drop[sq] {
			continue
		}
		x := sq.Input[0]
		dt, xs, ok := types.Type(x)
		if !ok || dt != onnx.Float || len(xs) == 0 {
			continue
		}
		mean := only(sq.Output[0], "ReduceMean")
		if mean == nil || !lastAxis(m, mean, len(xs)) {
			continue
		}
		add := only(mean.Output[0], "Add")
		if add == nil {
			continue
		}
		eps, ok := scalar(m, other(add, mean.Output[0]))
		if !ok {
			continue
		}
		sqrt := only(add.Output[0], "Sqrt")
		if sqrt == nil {
			continue
		}
		rec := only(sqrt.Output[0], "Reciprocal")
		if rec == nil {
			continue
		}
		normed := only(rec.Output[0], "Mul")
		if normed == nil || other(normed, rec.Output[0]) != x {
			continue
		}
		scale := only(normed.Output[0], "Mul")
		if scale == nil {
			continue
		}
		w := other(scale, normed.Output[0])
		wt, ws, ok := types.Type(w)
		if w == "" || !ok || wt != onnx.Float || len(ws) != 1 || !sameDim(ws[0], xs[len(xs)-1]) {
			continue
		}
		y := scale.Output[0]
		for _, n := range []*onnxpb.NodeProto{sq, mean, add, sqrt, rec, normed} {
			drop[n] = true
		}
		replace[scale] = &onnxpb.NodeProto{
			OpType: proto.String("RMSNorm"), Domain: proto.String(onnx.DomainMigu),
			Name:      proto.String(g.Unique(y + "/RMSNorm")),
			Input:     []string{x, w},
			Output:    []string{y, g.Unique(y + ".inv_rms")},
			Attribute: []*onnxpb.AttributeProto{onnx.AttrFloat("epsilon", eps)},
		}
	}
	replaceNodes(m, drop, replace)
	return len(replace), nil
}

// outputSet is the set of g's output names.
func outputSet(g *onnx.Graph) map[string]bool {
	outputs := map[string]bool{}
	for _, o := range g.P.Output {
		outputs[o.GetName()] = true
	}
	return outputs
}

// replaceNodes drops and replaces nodes in place, keeping the order, and
// imports the domain when it changed anything.
func replaceNodes(m *onnx.Model, drop map[*onnxpb.NodeProto]bool, replace map[*onnxpb.NodeProto]*onnxpb.NodeProto) {
	if len(replace) == 0 {
		return
	}
	g := m.Graph()
	kept := g.P.Node[:0]
	for _, n := range g.P.Node {
		switch {
		case drop[n]:
		case replace[n] != nil:
			kept = append(kept, replace[n])
		default:
			kept = append(kept, n)
		}
	}
	g.P.Node = kept
	m.SetOpset(onnx.DomainMigu, Opset)
}

// other returns n's input that is not v (n has two inputs), or "".
func other(n *onnxpb.NodeProto, v string) string {
	if len(n.Input) != 2 {
		return ""
	}
	switch v {
	case n.Input[0]:
		return n.Input[1]
	case n.Input[1]:
		return n.Input[0]
	}
	return ""
}

// lastAxis tells whether a ReduceMean reduces only the last of rank axes
// and keeps it.
func lastAxis(m *onnx.Model, n *onnxpb.NodeProto, rank int) bool {
	if onnx.AttrIntOr(n, "keepdims", 1) != 1 {
		return false
	}
	var axes []int64
	if a := onnx.GetAttr(n, "axes"); a != nil {
		axes = a.Ints
	} else if len(n.Input) == 2 {
		v, ok := int64s(m, n.Input[1])
		if !ok {
			return false
		}
		axes = v
	}
	return len(axes) == 1 && (axes[0] == -1 || axes[0] == int64(rank-1))
}

// int64s reads an int64 initializer (a ReduceMean's axes, a Split's sizes).
func int64s(m *onnx.Model, name string) ([]int64, bool) {
	t := m.Graph().Initializer(name)
	if t == nil {
		return nil, false
	}
	v, err := m.Int64s(t)
	return v, err == nil
}

// scalar reads a one-element float32 initializer.
func scalar(m *onnx.Model, name string) (float32, bool) {
	t := m.Graph().Initializer(name)
	if t == nil || onnx.DType(t.GetDataType()) != onnx.Float {
		return 0, false
	}
	v, err := m.Float32s(t)
	if err != nil || len(v) != 1 {
		return 0, false
	}
	return v[0], true
}

func sameDim(a, b onnx.Dim) bool {
	if !a.Known || !b.Known {
		return false
	}
	if a.Param != "" || b.Param != "" {
		return a.Param == b.Param
	}
	return a.Value == b.Value
}
