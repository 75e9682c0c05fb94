package train

import (
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Activation recomputation (GraphOptions.Recompute, --recompute).
const (
	// RecomputeNone keeps every activation the backward pass reads.
	RecomputeNone = "none"
	// RecomputeLayers keeps each transformer block's input and recomputes
	// the block in the backward pass (migu.json's blocks name the inputs).
	RecomputeLayers = "layers"
)

// CheckRecompute validates a recomputation choice ("" means none) and,
// given a manifest, that the model supports it: layers needs the block
// boundaries that migu.json records since recomputation exists.
func CheckRecompute(choice string, man *modeldir.Manifest) error {
	switch choice {
	case "", RecomputeNone, RecomputeLayers:
	default:
		return badinput.Errorf("%v %q is not one of none, layers", badinput.Setting("recompute"), choice)
	}
	if choice == RecomputeLayers && man != nil && len(man.Blocks) == 0 {
		return badinput.Errorf("%v layers: the model's migu.json does not name its block boundaries (blocks); re-export the model with this migu (migu export)", badinput.Setting("recompute"))
	}
	return nil
}

// recompute rewrites a differentiated graph so that the backward pass
// recomputes what is cheaper to redo than to keep: always the float32
// copies of frozen half-precision weights (weightCopies), and with layers
// every value inside the model's transformer blocks, from the block
// boundaries, one block at a time. It returns the number of nodes that
// the backward pass recomputes inside blocks.
func recompute(g *onnx.Graph, man *modeldir.Manifest, d *grad.Result, layers bool) (int, error) {
	segments := []grad.Segment{{Values: weightCopies(g, d.Forward), Early: true}}
	if layers {
		blocks, err := blockSegments(g.P.Node[:d.Forward], man.Blocks)
		if err != nil {
			return 0, err
		}
		segments = append(segments, blocks...)
	}
	rc, err := grad.Recompute(g, d, segments)
	if err != nil {
		return 0, err
	}
	if !layers {
		return 0, nil
	}
	return rc.Nodes - rc.Early, nil
}

// blockSegments makes one recomputed segment per transformer block: the
// outputs of the forward nodes downstream of the block's input and
// upstream of its output, the boundaries themselves excluded. Embeddings,
// masks, rotary tables, the final norm, the head and the loss lie outside
// every block; so do values a block reads that do not depend on its input
// (T5's cross-attention keys and values of the encoder output). A node
// inside contributes every output, also those only gradient rules read (a
// LayerNormalization's saved statistics).
func blockSegments(forward []*onnxpb.NodeProto, stacks []modeldir.BlockStack) ([]grad.Segment, error) {
	producer := map[string]*onnxpb.NodeProto{}
	consumers := map[string][]*onnxpb.NodeProto{}
	for _, n := range forward {
		for _, o := range n.Output {
			producer[o] = n
		}
		for _, in := range n.Input {
			consumers[in] = append(consumers[in], n)
		}
	}
	var segments []grad.Segment
	for _, s := range stacks {
		for _, r := range s.Residuals {
			if producer[r] == nil {
				return nil, badinput.Errorf("%v layers: migu.json names block boundary %q, which no node of the graph computes; re-export the model (migu export)", badinput.Setting("recompute"), r)
			}
		}
		for k := range len(s.Residuals) - 1 {
			entry, exit := s.Residuals[k], s.Residuals[k+1]
			down, up := downstream(entry, consumers), upstream(exit, producer)
			seg := grad.Segment{Values: map[string]bool{}, Entry: []string{entry}, Exit: exit}
			for _, n := range forward {
				if !anyIn(n.Input, down) || !anyIn(n.Output, up) {
					continue
				}
				for _, o := range n.Output {
					if o != "" && o != exit {
						seg.Values[o] = true
					}
				}
			}
			segments = append(segments, seg)
		}
	}
	return segments, nil
}

// downstream returns v and every value computed from it.
func downstream(v string, consumers map[string][]*onnxpb.NodeProto) map[string]bool {
	seen := map[string]bool{v: true}
	stack := []string{v}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, n := range consumers[x] {
			for _, o := range n.Output {
				if o != "" && !seen[o] {
					seen[o] = true
					stack = append(stack, o)
				}
			}
		}
	}
	return seen
}

// upstream returns v and every value it is computed from.
func upstream(v string, producer map[string]*onnxpb.NodeProto) map[string]bool {
	seen := map[string]bool{v: true}
	stack := []string{v}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n := producer[x]; n != nil {
			for _, in := range n.Input {
				if in != "" && !seen[in] {
					seen[in] = true
					stack = append(stack, in)
				}
			}
		}
	}
	return seen
}

func anyIn(values []string, set map[string]bool) bool {
	for _, v := range values {
		if set[v] {
			return true
		}
	}
	return false
}

// scheduleLeaves reorders the leaf nodes of a training graph for ONNX
// Runtime's default execution order, a depth-first walk back from the
// graph's leaf nodes (nodes whose outputs nothing reads) that takes the
// leaf of highest index first and runs what each leaf needs that has not
// run yet. Left where they are, the MIGU taps (low indices, among the
// forward nodes) run after the whole backward pass, and the weight
// gradients (each a leaf) after the chain of input gradients they hang
// off; the activations and output gradients they read then stay alive to
// the end, which is what recomputation would free. So the nodes only the
// taps need go to the end of the node list, the first tap's last, and
// before them the leaves computing the gradients, the one the backward
// pass reaches first last: the taps run as soon as the forward pass has
// computed their values, each weight gradient as soon as its output
// gradient exists.
func scheduleLeaves(g *onnx.Graph, taps, grads []string) {
	producer := g.Producers()
	consumed := map[string]bool{}
	for _, n := range g.P.Node {
		for _, in := range n.Input {
			consumed[in] = true
		}
	}
	moved := map[*onnxpb.NodeProto]bool{}
	var leaves []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if len(n.Output) == 1 && slices.Contains(grads, n.Output[0]) && !consumed[n.Output[0]] {
			leaves = append(leaves, n)
			moved[n] = true
		}
	}
	slices.Reverse(leaves)
	tapNodes := tapOnlyNodes(g, producer, taps)
	for _, n := range tapNodes {
		moved[n] = true
	}
	head := make([]*onnxpb.NodeProto, 0, len(g.P.Node))
	for _, n := range g.P.Node {
		if !moved[n] {
			head = append(head, n)
		}
	}
	g.P.Node = append(append(head, leaves...), tapNodes...)
}

// tapOnlyNodes lists the nodes that only the taps need, grouped by tap in
// reverse order (the last tap's first), each group in graph order.
func tapOnlyNodes(g *onnx.Graph, producer map[string]*onnxpb.NodeProto, taps []string) []*onnxpb.NodeProto {
	needed := map[*onnxpb.NodeProto]bool{}
	for _, vi := range g.P.Output {
		if !slices.Contains(taps, vi.GetName()) {
			markAncestors(vi.GetName(), producer, needed)
		}
	}
	taken := map[*onnxpb.NodeProto]bool{}
	var out []*onnxpb.NodeProto
	for i := len(taps) - 1; i >= 0; i-- {
		mine := map[*onnxpb.NodeProto]bool{}
		markAncestors(taps[i], producer, mine)
		for _, n := range g.P.Node {
			if mine[n] && !needed[n] && !taken[n] {
				taken[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// markAncestors marks the node computing v and, recursively, the nodes
// computing its inputs.
func markAncestors(v string, producer map[string]*onnxpb.NodeProto, mark map[*onnxpb.NodeProto]bool) {
	stack := []string{v}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := producer[x]
		if n == nil || mark[n] {
			continue
		}
		mark[n] = true
		stack = append(stack, n.Input...)
	}
}
