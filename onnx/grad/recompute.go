package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Segment is a stretch of the forward pass, a transformer block, that the
// backward pass recomputes instead of keeping.
type Segment struct {
	// Values are the forward values recomputed: every one a backward node
	// reads is replaced by a clone. Each must be computed from Entry or
	// from other values of the segment (and from weights and constants).
	Values map[string]bool
	// Entry are the values the segment starts from, kept from the forward
	// pass (a block's input).
	Entry []string
	// Exit is the value through which the segment reaches the loss (a
	// block's output). No clone is computed before Exit's gradient is.
	Exit string
	// Early places the segment's clones at the start of the backward pass
	// instead of before their first reader, for values computed from
	// weights and constants alone (float32 copies of half-precision
	// weights): indexed below every backward node, a clone is reached
	// last by ONNX Runtime's walk and so runs just before its reader,
	// without a gate. Early segments have no Entry and no Exit.
	Early bool
}

// Recomputation is what Recompute did to a graph.
type Recomputation struct {
	// Clones maps each output of a cloned forward node to the clone's
	// output.
	Clones map[string]string
	// Nodes is the number of forward nodes cloned, Early how many of them
	// belong to Early segments; Gates the number of values held back
	// until their segment's exit gradient exists.
	Nodes, Early, Gates int
}

// ClonePrefix begins the names of cloned nodes and values; GatePrefix the
// names of the gate nodes.
const (
	ClonePrefix = "rc/"
	GatePrefix  = "rc.gate/"
)

// stochastic op types draw random numbers: a clone would draw other ones
// (or, seeded alike, depend on ONNX Runtime's kernel state), so their
// outputs are kept and never recomputed.
var stochastic = map[string]bool{
	"Dropout": true, "Bernoulli": true, "Multinomial": true,
	"RandomNormal": true, "RandomNormalLike": true, "RandomUniform": true, "RandomUniformLike": true,
}

// Recompute trades memory for compute in a graph that Differentiate has
// extended (d says where its backward pass starts): every backward input
// that names a value of a segment is rewired to a clone of the forward
// node that produced it; the clone reads clones of its own inputs from the
// segment, and the kept values (entries, weights, constants, anything
// outside the segments) otherwise. Each value is cloned once, and a node
// with several outputs (LayerNormalization with the mean and inverse
// deviation its gradient reads) is cloned whole. The forward values then
// have no consumer past the forward pass, so ONNX Runtime frees them
// there. Random nodes (Dropout) are never cloned: their outputs stay.
// Backward Shape nodes read clones too: reading the forward value, they
// would keep it alive until the backward pass runs them.
//
// Clones are placed right before the first backward node that needs
// them. That alone does not make ONNX Runtime run them late: its default
// execution order is a depth-first walk back from the graph's leaf nodes
// that explores a node's producers highest index first, so a clone (or a
// transpose of one) indexed above the gradient it meets would run before
// the whole backward chain that leads to that gradient, and stay alive
// through it. So every entry a clone reads (and every random value of the
// segment) is read through a gate, a Reshape to its own shape whose shape
// operand also depends on the gradient of the segment's exit: nothing of a
// segment can be recomputed before the backward pass has reached the end
// of the segment. The Reshape aliases its input; it copies nothing.
//
// Gates also keep ONNX Runtime from undoing the rewrite: its common
// subexpression elimination merges nodes of equal op and inputs, and no
// clone has its original's inputs. Results stay equal to the unrewritten
// graph's up to float rounding (ONNX Runtime may fuse an original with its
// neighbours where the gate keeps the clone from the same fusion).
func Recompute(g *onnx.Graph, d *Result, segments []Segment) (*Recomputation, error) {
	if d.Forward < 0 || d.Forward > len(g.P.Node) {
		return nil, fmt.Errorf("grad: recompute from node %d of a graph with %d nodes", d.Forward, len(g.P.Node))
	}
	r := &recomputer{g: g, d: d, producer: map[string]*onnxpb.NodeProto{}, segment: map[string]*Segment{},
		gates: map[string]string{}, res: &Recomputation{Clones: map[string]string{}}}
	forward, backward := g.P.Node[:d.Forward], g.P.Node[d.Forward:]
	for _, n := range forward {
		for _, o := range n.Output {
			if o != "" {
				r.producer[o] = n
			}
		}
	}
	for i := range segments {
		s := &segments[i]
		for v := range s.Values {
			if other := r.segment[v]; other != nil {
				return nil, fmt.Errorf("grad: value %q is in two recomputed segments (exits %s and %s)", v, other.Exit, s.Exit)
			}
			r.segment[v] = s
		}
		for _, e := range s.Entry {
			r.segment[e] = s
		}
	}
	var rest []*onnxpb.NodeProto
	for _, n := range backward {
		r.rewire(n)
		rest = append(rest, r.pending...)
		r.pending = r.pending[:0]
		rest = append(rest, n)
	}
	nodes := append(make([]*onnxpb.NodeProto, 0, len(g.P.Node)+len(r.early)+len(rest)), forward...)
	nodes = append(nodes, r.early...)
	g.P.Node = append(nodes, rest...)
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return r.res, nil
}

// recomputer holds the state of one Recompute pass.
type recomputer struct {
	g        *onnx.Graph
	d        *Result
	producer map[string]*onnxpb.NodeProto // forward value → forward node
	segment  map[string]*Segment          // segment value or entry → its segment
	gates    map[string]string            // entry (or random value) → gated value
	res      *Recomputation
	pending  []*onnxpb.NodeProto // gates and clones for the next backward node
	early    []*onnxpb.NodeProto // clones of Early segments
}

// rewire points a backward node's inputs at clones where the value is
// recomputed.
func (r *recomputer) rewire(n *onnxpb.NodeProto) {
	for i, in := range n.Input {
		if c, ok := r.clone(in); ok {
			n.Input[i] = c
		}
	}
}

// recomputed tells whether v is a value of a segment that can be cloned.
func (r *recomputer) recomputed(v string) bool {
	s, p := r.segment[v], r.producer[v]
	return s != nil && s.Values[v] && p != nil && !stochastic[p.GetOpType()]
}

// clone returns the clone of forward value v, cloning its producer (and,
// first, the producers of its recomputed inputs) when v has none yet; ok
// is false when v is not recomputed.
func (r *recomputer) clone(v string) (string, bool) {
	if !r.recomputed(v) {
		return "", false
	}
	if c, ok := r.res.Clones[v]; ok {
		return c, true
	}
	p := r.producer[v]
	n := proto.Clone(p).(*onnxpb.NodeProto)
	for i, in := range n.Input {
		if c, ok := r.clone(in); ok {
			n.Input[i] = c
		} else if s := r.segment[in]; s != nil && s == r.segment[v] {
			n.Input[i] = r.gate(in, s)
		}
	}
	n.Name = proto.String(r.g.Unique(ClonePrefix + p.GetName()))
	for i, o := range n.Output {
		if o != "" {
			n.Output[i] = r.g.Unique(ClonePrefix + o)
			r.res.Clones[o] = n.Output[i]
		}
	}
	if r.segment[v].Early {
		r.early = append(r.early, n)
		r.res.Early++
	} else {
		r.pending = append(r.pending, n)
	}
	r.res.Nodes++
	return r.res.Clones[v], true
}

// gate returns v (an entry of segment s, or a random value in it) as the
// output of a Reshape to v's own shape that also reads the shape of the
// gradient of s's exit, so that it, and every clone reading it, runs only
// once that gradient exists. Without a gradient at the exit (nothing in
// the segment is differentiated) v is returned unchanged.
func (r *recomputer) gate(v string, s *Segment) string {
	if gv, ok := r.gates[v]; ok {
		return gv
	}
	dy := r.d.Upstream[s.Exit]
	if dy == "" {
		return v
	}
	hint := GatePrefix + v
	shape := r.op("Shape", []string{v}, hint+".shape")
	wait := r.op("Shape", []string{dy}, hint+".wait")
	none := r.g.ConstInt64(hint+".none", []int64{1}, 0)
	empty := r.op("Slice", []string{wait, none, none}, hint+".empty")
	same := r.op("Concat", []string{shape, empty}, hint+".same", onnx.AttrInt("axis", 0))
	gv := r.op("Reshape", []string{v, same}, hint)
	r.gates[v] = gv
	r.res.Gates++
	return gv
}

// op adds a node to the pending list and returns its output.
func (r *recomputer) op(opType string, inputs []string, hint string, attrs ...onnx.Attr) string {
	out := r.g.Unique(hint)
	r.pending = append(r.pending, &onnxpb.NodeProto{OpType: proto.String(opType), Name: proto.String(r.g.Unique(hint + "/" + opType)),
		Input: inputs, Output: []string{out}, Attribute: attrs})
	return out
}
