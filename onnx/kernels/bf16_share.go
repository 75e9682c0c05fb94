package kernels

import (
	"slices"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// ShareBF16Operands rounds once each float32 value that two or more bf16
// products read (MatMulBF16, and BatchMatMul with bf16 1): one
// ai.migu.bf16.ToBF16 node, placed before the first of them, writes the
// bfloat16 copy "<value>/bf16" that all of them read instead. A product
// rounds a float32 operand itself on every run, so a trained weight was
// rounded twice a step (its forward product and its input gradient), a
// layer's input once per product and weight gradient reading it (six
// times for the query, key and value projections' shared input), and a
// product's output gradient twice (input and weight gradients). The
// rounding is the same (to nearest even), so the products compute the
// same bits.
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
	reads := map[string]int{}
	var order []string // values in the order of their first bf16 product
	for _, n := range g.P.Node {
		if !bf16Product(n) {
			continue
		}
		for _, in := range n.Input[:2] {
			if dt, _, ok := types.Type(in); !ok || dt != onnx.Float {
				continue
			}
			if reads[in] == 0 {
				order = append(order, in)
			}
			reads[in]++
		}
	}
	order = slices.DeleteFunc(order, func(v string) bool { return reads[v] < 2 })
	if len(order) == 0 {
		return 0
	}
	rounded := make(map[string]string, len(order))
	first := len(g.P.Node)
	for _, v := range order {
		out := g.Unique(v + "/bf16")
		g.Node("ToBF16", []string{v}, []string{out}, out)
		g.P.Node[len(g.P.Node)-1].Domain = proto.String(onnx.DomainMiguBF16)
		rounded[v] = out
	}
	casts := slices.Clone(g.P.Node[first:])
	pending := map[string]*onnxpb.NodeProto{}
	for _, c := range casts {
		pending[c.Input[0]] = c
	}
	nodes := make([]*onnxpb.NodeProto, 0, len(g.P.Node))
	for _, n := range g.P.Node[:first] {
		if bf16Product(n) {
			for i, in := range n.Input[:2] {
				out, ok := rounded[in]
				if !ok {
					continue
				}
				if c := pending[in]; c != nil {
					nodes = append(nodes, c)
					delete(pending, in)
				}
				n.Input[i] = out
			}
		}
		nodes = append(nodes, n)
	}
	g.P.Node = nodes
	m.SetOpset(onnx.DomainMiguBF16, Opset)
	return len(order)
}

// BF16Twins gives each float32 graph input named in weights that a bf16
// product reads a bfloat16 twin, the graph input "<name>/bf16" of the same
// shape, and makes those products read the twin instead. Whoever runs the
// graph keeps each twin equal to its weight rounded to bfloat16 (to
// nearest even, as a product rounds): the trainer rounds a weight as its
// optimizer step writes it, while the values are in cache, so no
// product and no ToBF16 rounds a trained weight during the run. A trained
// weight changes once a step, but the products rounded it twice a step
// (forward and input gradient) from memory: on a Xeon with AMX the
// vocabulary projection of roberta's small preset alone (25.7 million
// values) took longer to round than to multiply on the labelled rows.
// Run it before ShareBF16Operands; it returns each twin's name by weight.
func BF16Twins(m *onnx.Model, types Types, weights []string) map[string]string {
	g := m.Graph()
	trained := map[string]bool{}
	for _, w := range weights {
		if g.Input(w) != nil {
			trained[w] = true
		}
	}
	twins := map[string]string{}
	for _, n := range g.P.Node {
		if !bf16Product(n) {
			continue
		}
		for i, in := range n.Input[:2] {
			dt, shape, ok := types.Type(in)
			if !trained[in] || !ok || dt != onnx.Float {
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
