package train

import (
	"github.com/migu-ml/migu/onnx"
)

// weightCopyOps make a float32 copy of a weight, or a view of one, from
// the weight alone: the cast of a half-precision weight, the transpose of
// a tied embedding, the padding of hiddenpad.go.
var weightCopyOps = map[string]bool{"Cast": true, "Transpose": true, "Pad": true, "Reshape": true, "Identity": true, "Unsqueeze": true}

// weightCopies finds the forward values (among the first forward nodes of
// g) that are computed from initializers alone by weightCopyOps: float32
// copies of frozen weights. The backward pass recomputes them where it
// needs them (grad.Recompute) instead of keeping them from the forward
// pass, which would hold a float32 copy of every half-precision weight at
// once: one pass over a weight costs far less than keeping the model twice.
func weightCopies(g *onnx.Graph, forward int) map[string]bool {
	fromWeights := map[string]bool{}
	for _, t := range g.P.Initializer {
		fromWeights[t.GetName()] = true
	}
	copies := map[string]bool{}
	for _, n := range g.P.Node[:forward] {
		if !weightCopyOps[n.GetOpType()] || len(n.Output) != 1 || len(n.Input) == 0 {
			continue
		}
		all := true
		for _, in := range n.Input {
			all = all && (in == "" || fromWeights[in])
		}
		if all {
			fromWeights[n.Output[0]] = true
			copies[n.Output[0]] = true
		}
	}
	return copies
}
