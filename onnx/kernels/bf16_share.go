package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// ShareBF16Operands rounds once each float32 value that two or more bf16
// products read (MatMulBF16, and BatchMatMul with bf16 1), directly or
// through reshapes (Reshape, Flatten, Squeeze, Unsqueeze: a weight
// gradient reads its layer's input and output gradient flattened to
// [tokens, features], the forward and input-gradient products read them
// as they are): one ai.migu.bf16.ToBF16 node writes the bfloat16 copy
// "<value>/bf16", the reshapes are repeated on the copy (the float32 ones
// that nothing else reads are removed), and the products read those
// instead, each new node placed right before the first product that
// needs it. A product rounds a float32 operand itself on every run,
// so a trained weight was rounded twice a step (its forward product and
// its input gradient), a layer's input once per product and weight
// gradient reading it (six times for the query, key and value
// projections' shared input), and a product's output gradient twice
// (input and weight gradients). The rounding is the same (to nearest
// even), so the products compute the same bits.
//
// It pays on the native bf16 path (BF16Hardware.NativeNow), where the
// products read bf16 as it is: on a Xeon with AMX the rounding inside the
// products took 18 % of a roberta bf16 step's CPU time. On the float32
// path a product would widen the bf16 copy back to float32, no cheaper
// than rounding, so callers leave the graph alone there. Run it after
// differentiation, on the finished training graph; it returns the number
// of values rounded once.
func ShareBF16Operands(m *onnx.Model, types Types) int {
	g := m.Graph()
	producers := g.Producers()
	// root follows v back through reshapes of float32 values.
	root := func(v string) string {
		for {
			p := producers[v]
			if p == nil || p.GetDomain() != "" || !reshapes[p.GetOpType()] || len(p.Input) == 0 {
				return v
			}
			if dt, _, ok := types.Type(p.Input[0]); !ok || dt != onnx.Float {
				return v
			}
			v = p.Input[0]
		}
	}
	reads := map[string]int{}
	for _, n := range g.P.Node {
		if !bf16Product(n) {
			continue
		}
		for _, in := range n.Input[:2] {
			if dt, _, ok := types.Type(in); ok && dt == onnx.Float {
				reads[root(in)]++
			}
		}
	}
	// copyOf returns v's bf16 copy, appending the nodes that make it to
	// nodes where they are not made yet.
	copies := map[string]string{}
	shared := 0
	var nodes []*onnxpb.NodeProto
	var copyOf func(v string) string
	copyOf = func(v string) string {
		if c, ok := copies[v]; ok {
			return c
		}
		c := g.Unique(v + "/bf16")
		var n *onnxpb.NodeProto
		if root(v) == v {
			n = &onnxpb.NodeProto{OpType: proto.String("ToBF16"), Domain: proto.String(onnx.DomainMiguBF16), Input: []string{v}}
			shared++
		} else {
			p := producers[v]
			n = proto.Clone(p).(*onnxpb.NodeProto)
			n.Input[0] = copyOf(p.Input[0])
		}
		n.Name, n.Output = proto.String(c), []string{c}
		nodes = append(nodes, n)
		copies[v] = c
		return c
	}
	old := g.P.Node
	g.P.Node = make([]*onnxpb.NodeProto, 0, len(old))
	for _, n := range old {
		if bf16Product(n) {
			for i, in := range n.Input[:2] {
				if dt, _, ok := types.Type(in); ok && dt == onnx.Float && reads[root(in)] > 1 {
					nodes = nodes[:0]
					n.Input[i] = copyOf(in)
					g.P.Node = append(g.P.Node, nodes...)
				}
			}
		}
		g.P.Node = append(g.P.Node, n)
	}
	if shared == 0 {
		return 0
	}
	// The float32 reshapes that only the rewired products read are dead.
	removeUnread(g, func(n *onnxpb.NodeProto) bool {
		_, copied := copies[n.Output[0]]
		return copied && n.GetDomain() == "" && reshapes[n.GetOpType()]
	})
	m.SetOpset(onnx.DomainMiguBF16, Opset)
	return shared
}

// reshapes are the standard ops that only change a tensor's shape: a
// product that reads their output can read the same reshape of a bf16
// copy.
var reshapes = map[string]bool{"Reshape": true, "Flatten": true, "Squeeze": true, "Unsqueeze": true}

// BF16Twins gives each float32 weight named in weights — a graph input (a
// trained weight) or an initializer (a frozen one) — that a bf16 product
// reads a bfloat16 twin, the graph input "<name>/bf16" of the same shape,
// and makes those products read the twin instead. Whoever runs the graph
// keeps each twin equal to its weight rounded to bfloat16 (to nearest
// even, as a product rounds): the trainer rounds a trained weight as its
// optimizer step writes it, while the values are in cache, and a frozen
// one once when it opens the graph. No product and no ToBF16 then rounds
// a weight during the run; without twins the products rounded each weight
// from memory twice a step (forward and input gradient), although it
// changes at most once. Run it before ShareBF16Operands; it returns each
// twin's name by weight.
func BF16Twins(m *onnx.Model, types Types, weights []string) map[string]string {
	g := m.Graph()
	named := map[string]bool{}
	for _, w := range weights {
		if g.Input(w) != nil || g.Initializer(w) != nil {
			named[w] = true
		}
	}
	twins := map[string]string{}
	for _, n := range g.P.Node {
		if !bf16Product(n) {
			continue
		}
		for i, in := range n.Input[:2] {
			dt, shape, ok := types.Type(in)
			if !named[in] || !ok || dt != onnx.Float {
				continue
			}
			twin, ok := twins[in]
			if !ok {
				twin = g.Unique(in + "/bf16")
				g.AddInput(twin, onnx.BFloat16, shape)
				twins[in] = twin
			}
			n.Input[i] = twin
		}
	}
	return twins
}

// bf16Product tells whether n is a product that reads its operands in
// bf16: MatMulBF16, or BatchMatMul with bf16 1.
func bf16Product(n *onnxpb.NodeProto) bool {
	if n.GetDomain() != onnx.DomainMiguBF16 || len(n.Input) < 2 {
		return false
	}
	switch n.GetOpType() {
	case "MatMulBF16":
		return true
	case "BatchMatMul":
		return onnx.AttrIntOr(n, "bf16", 0) != 0
	}
	return false
}
