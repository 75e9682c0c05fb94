package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// addNMax is the most inputs one ai.migu.AddN takes (ADDN_MAX in
// csrc/migu_kernels.c).
const addNMax = 8

// FuseSums replaces every Sum of three or more float32 inputs of one
// known shape by ai.migu.AddN, which adds them in the same order, so with
// the same bits, in one pass instead of one pass per input: the gradient
// of a value several nodes read — a layer input read by the query, key
// and value products and the residual, t5's encoder output read by every
// decoder layer — which onnx/grad's rules sum. A Sum of more than addNMax
// inputs becomes a chain of AddNs, each starting from the last one's
// result. Two-input Sums stay: ORT's is one pass already. Run it on a
// differentiated graph; it returns the number of Sums replaced and
// imports the domain when it replaced any.
func FuseSums(m *onnx.Model, types Types) int {
	g := m.Graph()
	replace := map[*onnxpb.NodeProto][]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		if n.GetOpType() != "Sum" || n.GetDomain() != "" || len(n.Input) < 3 || len(n.Output) != 1 || !sameShapes(types, n.Input) {
			continue
		}
		var chain []*onnxpb.NodeProto
		in := n.Input
		for len(in) > 0 {
			take := min(len(in), addNMax)
			if len(chain) > 0 {
				take = min(len(in), addNMax-1)
			}
			inputs := in[:take:take]
			if len(chain) > 0 {
				inputs = append([]string{chain[len(chain)-1].Output[0]}, inputs...)
			}
			in = in[take:]
			out := n.Output[0]
			if len(in) > 0 {
				out = g.Unique(n.Output[0] + "/part")
			}
			chain = append(chain, &onnxpb.NodeProto{
				OpType: proto.String("AddN"), Domain: proto.String(onnx.DomainMigu),
				Name:  proto.String(g.Unique(n.GetName() + "/AddN")),
				Input: inputs, Output: []string{out},
			})
		}
		replace[n] = chain
	}
	if len(replace) == 0 {
		return 0
	}
	nodes := make([]*onnxpb.NodeProto, 0, len(g.P.Node))
	for _, n := range g.P.Node {
		if chain, ok := replace[n]; ok {
			nodes = append(nodes, chain...)
		} else {
			nodes = append(nodes, n)
		}
	}
	g.P.Node = nodes
	m.SetOpset(onnx.DomainMigu, Opset)
	return len(replace)
}

// sameShapes tells whether every value is float32 of one shape whose
// dimensions are all known (fixed or the same symbol).
func sameShapes(types Types, values []string) bool {
	var first onnx.Shape
	for i, v := range values {
		dt, s, ok := types.Type(v)
		if !ok || dt != onnx.Float || s == nil {
			return false
		}
		if i == 0 {
			first = s
			continue
		}
		if len(s) != len(first) {
			return false
		}
		for k := range s {
			if !sameDim(s[k], first[k]) {
				return false
			}
		}
	}
	return true
}
