package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Recomputation is what Recompute did to a graph.
type Recomputation struct {
	// Clones maps each output of a cloned forward node to the clone's
	// output, which the backward pass reads instead.
	Clones map[string]string
	// Nodes is the number of forward nodes cloned.
	Nodes int
}

// ClonePrefix begins the names of cloned nodes and values.
const ClonePrefix = "rc/"

// stochastic op types draw random numbers: a clone would draw other ones
// (or, seeded alike, depend on ONNX Runtime's kernel state), so their
// outputs are kept and never recomputed.
var stochastic = map[string]bool{
	"Dropout": true, "Bernoulli": true, "Multinomial": true,
	"RandomNormal": true, "RandomNormalLike": true, "RandomUniform": true, "RandomUniformLike": true,
}

// Recompute trades memory for compute in a graph that Differentiate has
// extended: g's nodes before firstBackward are the forward pass, the rest
// the backward pass. Every backward input that names a forward value for
// which recompute returns true is rewired to a clone of the node that
// produced it; the clone reads clones of its own selected inputs, down to
// values recompute rejects (checkpoints such as block boundaries, graph
// inputs, initializers, values outside the recomputed region). Each value is
// cloned once, and a node with several outputs (LayerNormalization with
// the mean and inverse deviation its gradient reads) is cloned whole.
// Forward values then have no consumer past the forward pass, so ONNX
// Runtime frees them there, and the clones live only in the backward pass.
// Nodes of stochastic ops (Dropout) are never cloned: their outputs stay.
//
// The clones go between the forward and the backward nodes. ONNX Runtime's
// default execution order is a depth-first walk back from the graph's leaf
// nodes that visits a node's producers highest index first and runs each
// node once its producers have run. A clone indexed below every backward
// node is therefore reached only after the backward chain that precedes
// its consumer, i.e. just before that consumer runs; a clone indexed right
// before its first consumer would instead run ahead of the whole backward
// chain leading there, and hold its value through it. The pass keeps
// results equal to the unrewritten graph's up to float rounding; ONNX
// Runtime's common subexpression elimination would merge clones back into
// their originals, so a session running the result must disable it.
func Recompute(g *onnx.Graph, firstBackward int, recompute func(value string) bool) (*Recomputation, error) {
	if firstBackward < 0 || firstBackward > len(g.P.Node) {
		return nil, fmt.Errorf("grad: recompute from node %d of a graph with %d nodes", firstBackward, len(g.P.Node))
	}
	forward, backward := g.P.Node[:firstBackward], g.P.Node[firstBackward:]
	r := &recomputer{g: g, producer: map[string]*onnxpb.NodeProto{}, recompute: recompute,
		res: &Recomputation{Clones: map[string]string{}}}
	for _, n := range forward {
		for _, o := range n.Output {
			if o != "" {
				r.producer[o] = n
			}
		}
	}
	for _, n := range backward {
		r.rewire(n)
	}
	nodes := make([]*onnxpb.NodeProto, 0, len(g.P.Node)+len(r.clones))
	nodes = append(nodes, forward...)
	nodes = append(nodes, r.clones...)
	g.P.Node = append(nodes, backward...)
	r.res.Nodes = len(r.clones)
	return r.res, nil
}

// recomputer holds the state of one Recompute pass.
type recomputer struct {
	g         *onnx.Graph
	producer  map[string]*onnxpb.NodeProto // forward value → forward node
	recompute func(string) bool
	res       *Recomputation
	clones    []*onnxpb.NodeProto // in dependency order
}

// rewire points n's inputs at clones where the value is recomputed.
func (r *recomputer) rewire(n *onnxpb.NodeProto) {
	for i, in := range n.Input {
		if c, ok := r.clone(in); ok {
			n.Input[i] = c
		}
	}
}

// clone returns the clone of forward value v, cloning its producer (and,
// first, the producers of its recomputed inputs) when v has none yet; ok
// is false when v is not recomputed.
func (r *recomputer) clone(v string) (string, bool) {
	p := r.producer[v]
	if v == "" || p == nil || stochastic[p.GetOpType()] || !r.recompute(v) {
		return "", false
	}
	if c, ok := r.res.Clones[v]; ok {
		return c, true
	}
	n := proto.Clone(p).(*onnxpb.NodeProto)
	r.rewire(n)
	n.Name = proto.String(r.g.Unique(ClonePrefix + p.GetName()))
	for i, o := range n.Output {
		if o != "" {
			n.Output[i] = r.g.Unique(ClonePrefix + o)
			r.res.Clones[o] = n.Output[i]
		}
	}
	r.clones = append(r.clones, n)
	return r.res.Clones[v], true
}
