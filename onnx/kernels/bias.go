package kernels

import (
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// FuseProductBias folds a linear layer's bias into its product: a
// MatMulF32 or MatMulBF16 node (RewriteF32, RewriteBF16) whose output only
// an Add reads, the Add's other operand a float32 bias [N] (N the
// product's columns), takes the bias as its optional third input and
// writes the Add's output. oneDNN adds the bias to the float32 sums of
// each block of Y while the block is in cache, where the Add was a pass
// over all of Y (roberta's small preset: 38 Adds of [512, 512…2048], 8 ms
// of a 300 ms step). The sums are the product's, so Y is the Add's float32
// result. The bias must be a graph input, an initializer or computed
// before the product, so that no node moves. Run it on a differentiated
// graph, after the product rewrites; it returns the number of biases
// folded.
func FuseProductBias(m *onnx.Model, types Types) int {
	g := m.Graph()
	consumers, producers := g.Consumers(), g.Producers()
	outputs := outputSet(g)
	index := make(map[*onnxpb.NodeProto]int, len(g.P.Node))
	for i, n := range g.P.Node {
		index[n] = i
	}
	folded := map[*onnxpb.NodeProto]bool{}
	for _, p := range g.P.Node {
		if p.GetDomain() != onnx.DomainMiguBF16 || (p.GetOpType() != "MatMulF32" && p.GetOpType() != "MatMulBF16") ||
			len(p.Input) != 2 || len(p.Output) != 1 {
			continue
		}
		y := p.Output[0]
		readers := consumers[y]
		if len(readers) != 1 || outputs[y] {
			continue
		}
		add := readers[0]
		if add.GetOpType() != "Add" || add.GetDomain() != "" || len(add.Input) != 2 || add.Input[0] == add.Input[1] {
			continue
		}
		bias := add.Input[0]
		if bias == y {
			bias = add.Input[1]
		}
		if q := producers[bias]; q != nil && index[q] > index[p] {
			continue
		}
		if !linearBias(types, bias, y) {
			continue
		}
		p.Input = append(p.Input, bias)
		p.Output[0] = add.Output[0]
		folded[add] = true
	}
	g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return folded[n] })
	return len(folded)
}

// linearBias tells whether b is a float32 [N] and y a float32 [..., N] of
// known N, so that y + b adds b to every row of y and keeps y's shape.
func linearBias(types Types, b, y string) bool {
	bt, bs, ok := types.Type(b)
	if !ok || bt != onnx.Float || len(bs) != 1 {
		return false
	}
	yt, ys, ok := types.Type(y)
	if !ok || yt != onnx.Float || len(ys) < 2 {
		return false
	}
	n, nb := ys[len(ys)-1], bs[0]
	return n.Known && n.Param == "" && nb.Known && nb.Param == "" && n.Value == nb.Value
}
