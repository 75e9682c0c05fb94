package onnx

import (
	"container/heap"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// marshalModel serialises deterministically; fields come out in field-number
// order as every protobuf writer emits them, so untouched models keep their
// bytes.
func marshalModel(mp *onnxpb.ModelProto) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(mp)
}

// Graph is an editing view of a GraphProto: it hands out unique names and
// offers the add, remove, sort and prune operations graph rewrites need.
// Edits go straight to the underlying proto.
type Graph struct {
	P     *onnxpb.GraphProto
	names map[string]bool
}

// NewGraph wraps g, recording every name already used in it.
func NewGraph(g *onnxpb.GraphProto) *Graph {
	gr := &Graph{P: g, names: map[string]bool{}}
	for _, vi := range g.Input {
		gr.names[vi.GetName()] = true
	}
	for _, t := range g.Initializer {
		gr.names[t.GetName()] = true
	}
	for _, n := range g.Node {
		gr.names[n.GetName()] = true
		for _, o := range n.Output {
			gr.names[o] = true
		}
	}
	return gr
}

// Unique returns base, or base with a numeric suffix, such that no value,
// node or initializer of the graph has that name; the name is then taken.
func (g *Graph) Unique(base string) string {
	name := base
	for i := 1; g.names[name] || name == ""; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	g.names[name] = true
	return name
}

// Attr is a node attribute under construction; see the Attr* helpers.
type Attr = *onnxpb.AttributeProto

// AttrInt makes an integer attribute.
func AttrInt(name string, v int64) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_INT.Enum(), I: &v}
}

// AttrInts makes an integer-list attribute.
func AttrInts(name string, v ...int64) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

// AttrFloat makes a float attribute.
func AttrFloat(name string, v float32) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_FLOAT.Enum(), F: &v}
}

// AttrFloats makes a float-list attribute.
func AttrFloats(name string, v ...float32) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: v}
}

// AttrString makes a string attribute.
func AttrString(name, v string) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// AttrTensor makes a tensor attribute (the value of a Constant node).
func AttrTensor(name string, t *onnxpb.TensorProto) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
}

// AttrGraph makes a subgraph attribute (the branches of If, the body of Loop).
func AttrGraph(name string, sub *onnxpb.GraphProto) Attr {
	return &onnxpb.AttributeProto{Name: &name, Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub}
}

// GetAttr returns a node's attribute by name, or nil.
func GetAttr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.Attribute {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

// AttrIntOr returns an integer attribute's value, or def when it is absent.
func AttrIntOr(n *onnxpb.NodeProto, name string, def int64) int64 {
	if a := GetAttr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

// AttrFloatOr returns a float attribute's value, or def when it is absent.
func AttrFloatOr(n *onnxpb.NodeProto, name string, def float32) float32 {
	if a := GetAttr(n, name); a != nil {
		return a.GetF()
	}
	return def
}

// Op appends a node of the default domain computing one new output and
// returns the output's name, unique in the graph and derived from hint.
func (g *Graph) Op(opType string, inputs []string, hint string, attrs ...Attr) string {
	return g.OpN(opType, inputs, 1, hint, attrs...)[0]
}

// OpN appends a node with n new outputs named after hint and returns them.
func (g *Graph) OpN(opType string, inputs []string, n int, hint string, attrs ...Attr) []string {
	if hint == "" {
		hint = opType
	}
	outs := make([]string, n)
	for i := range outs {
		if n == 1 {
			outs[i] = g.Unique(hint)
		} else {
			outs[i] = g.Unique(hint + "_" + strconv.Itoa(i))
		}
	}
	g.Node(opType, inputs, outs, hint, attrs...)
	return outs
}

// Node appends a node of the default domain writing the given outputs, for
// rewrites that must produce an existing value name (Op and OpN make new
// ones); its name is unique in the graph and derived from hint.
func (g *Graph) Node(opType string, inputs, outputs []string, hint string, attrs ...Attr) {
	g.AddNode(&onnxpb.NodeProto{
		OpType:    proto.String(opType),
		Name:      proto.String(g.Unique(hint + "/" + opType)),
		Input:     inputs,
		Output:    outputs,
		Attribute: attrs,
	})
}

// AddNode appends a node, taking its name and output names.
func (g *Graph) AddNode(n *onnxpb.NodeProto) {
	g.names[n.GetName()] = true
	for _, o := range n.Output {
		g.names[o] = true
	}
	g.P.Node = append(g.P.Node, n)
}

// RemoveNodes deletes every node for which drop returns true and reports how
// many went.
func (g *Graph) RemoveNodes(drop func(*onnxpb.NodeProto) bool) int {
	kept := g.P.Node[:0]
	for _, n := range g.P.Node {
		if !drop(n) {
			kept = append(kept, n)
		}
	}
	removed := len(g.P.Node) - len(kept)
	clear(g.P.Node[len(kept):])
	g.P.Node = kept
	return removed
}

// AddInput declares a graph input.
func (g *Graph) AddInput(name string, dtype DType, shape Shape) {
	g.names[name] = true
	g.P.Input = append(g.P.Input, ValueInfo(name, dtype, shape))
}

// AddOutput declares a graph output.
func (g *Graph) AddOutput(name string, dtype DType, shape Shape) {
	g.P.Output = append(g.P.Output, ValueInfo(name, dtype, shape))
}

// RemoveInput drops a graph input declaration; it reports whether one existed.
func (g *Graph) RemoveInput(name string) bool {
	return removeValueInfo(&g.P.Input, name)
}

// RemoveOutput drops a graph output declaration; it reports whether one existed.
func (g *Graph) RemoveOutput(name string) bool {
	return removeValueInfo(&g.P.Output, name)
}

func removeValueInfo(list *[]*onnxpb.ValueInfoProto, name string) bool {
	for i, vi := range *list {
		if vi.GetName() == name {
			*list = append((*list)[:i], (*list)[i+1:]...)
			return true
		}
	}
	return false
}

// Input returns the declaration of a graph input, or nil.
func (g *Graph) Input(name string) *onnxpb.ValueInfoProto { return findValueInfo(g.P.Input, name) }

// Output returns the declaration of a graph output, or nil.
func (g *Graph) Output(name string) *onnxpb.ValueInfoProto { return findValueInfo(g.P.Output, name) }

func findValueInfo(list []*onnxpb.ValueInfoProto, name string) *onnxpb.ValueInfoProto {
	for _, vi := range list {
		if vi.GetName() == name {
			return vi
		}
	}
	return nil
}

// AddInitializer adds a constant tensor under its own name.
func (g *Graph) AddInitializer(t *onnxpb.TensorProto) {
	g.names[t.GetName()] = true
	g.P.Initializer = append(g.P.Initializer, t)
}

// Initializer returns the initializer with this name, or nil.
func (g *Graph) Initializer(name string) *onnxpb.TensorProto {
	for _, t := range g.P.Initializer {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

// RemoveInitializer deletes an initializer and returns it (nil if absent).
func (g *Graph) RemoveInitializer(name string) *onnxpb.TensorProto {
	for i, t := range g.P.Initializer {
		if t.GetName() == name {
			g.P.Initializer = append(g.P.Initializer[:i], g.P.Initializer[i+1:]...)
			return t
		}
	}
	return nil
}

// Const adds a float32 initializer with a unique name derived from hint and
// returns the name.
func (g *Graph) Const(hint string, dims []int64, data ...float32) string {
	name := g.Unique(hint)
	g.P.Initializer = append(g.P.Initializer, Float32Tensor(name, dims, data))
	return name
}

// ConstInt64 adds an int64 initializer (shapes, axes, indices) and returns
// its name.
func (g *Graph) ConstInt64(hint string, dims []int64, data ...int64) string {
	name := g.Unique(hint)
	g.P.Initializer = append(g.P.Initializer, Int64Tensor(name, dims, data))
	return name
}

// Producers maps each value name to the node that computes it.
func (g *Graph) Producers() map[string]*onnxpb.NodeProto {
	m := make(map[string]*onnxpb.NodeProto, len(g.P.Node))
	for _, n := range g.P.Node {
		for _, o := range n.Output {
			if o != "" {
				m[o] = n
			}
		}
	}
	return m
}

// Consumers maps each value name to the nodes that read it, in graph order.
// Values read by subgraphs count as read by the node owning the subgraph.
func (g *Graph) Consumers() map[string][]*onnxpb.NodeProto {
	m := map[string][]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		for _, in := range nodeReads(n) {
			m[in] = append(m[in], n)
		}
	}
	return m
}

// nodeReads lists the values a node reads: its inputs, plus outer-scope
// values used inside its subgraphs.
func nodeReads(n *onnxpb.NodeProto) []string {
	reads := make([]string, 0, len(n.Input))
	for _, in := range n.Input {
		if in != "" {
			reads = append(reads, in)
		}
	}
	for _, a := range n.Attribute {
		subs := a.Graphs
		if a.G != nil {
			subs = append([]*onnxpb.GraphProto{a.G}, subs...)
		}
		for _, sg := range subs {
			reads = append(reads, outerReads(sg)...)
		}
	}
	return reads
}

// outerReads lists names a subgraph uses without defining them.
func outerReads(sg *onnxpb.GraphProto) []string {
	defined := map[string]bool{}
	for _, vi := range sg.Input {
		defined[vi.GetName()] = true
	}
	for _, t := range sg.Initializer {
		defined[t.GetName()] = true
	}
	for _, n := range sg.Node {
		for _, o := range n.Output {
			defined[o] = true
		}
	}
	var out []string
	for _, n := range sg.Node {
		for _, in := range nodeReads(n) {
			if !defined[in] {
				out = append(out, in)
			}
		}
	}
	for _, vi := range sg.Output {
		if !defined[vi.GetName()] {
			out = append(out, vi.GetName())
		}
	}
	return out
}

// TopoSort reorders the nodes so each comes after the producers of what it
// reads, keeping the existing order where it is already valid. A cycle or a
// value that nothing defines is an error naming a node involved.
func (g *Graph) TopoSort() error {
	available := map[string]bool{"": true}
	for _, vi := range g.P.Input {
		available[vi.GetName()] = true
	}
	for _, t := range g.P.Initializer {
		available[t.GetName()] = true
	}
	for _, s := range g.P.SparseInitializer {
		available[s.GetValues().GetName()] = true
	}
	producer := g.Producers()
	nodes := g.P.Node
	waiting := make(map[*onnxpb.NodeProto]int, len(nodes))
	blocked := map[string][]*onnxpb.NodeProto{}
	index := make(map[*onnxpb.NodeProto]int, len(nodes))
	for i, n := range nodes {
		index[n] = i
		seen := map[string]bool{}
		for _, in := range nodeReads(n) {
			if available[in] || seen[in] {
				continue
			}
			if producer[in] == nil {
				// Outer-scope names of a subgraph resolve at run time.
				continue
			}
			seen[in] = true
			waiting[n]++
			blocked[in] = append(blocked[in], n)
		}
	}
	// Kahn's algorithm, taking the earliest original position first.
	ready := &nodeHeap{index: index}
	for _, n := range nodes {
		if waiting[n] == 0 {
			heap.Push(ready, n)
		}
	}
	order := make([]*onnxpb.NodeProto, 0, len(nodes))
	for ready.Len() > 0 {
		n := heap.Pop(ready).(*onnxpb.NodeProto)
		order = append(order, n)
		for _, o := range n.Output {
			for _, c := range blocked[o] {
				waiting[c]--
				if waiting[c] == 0 {
					heap.Push(ready, c)
				}
			}
			delete(blocked, o)
		}
	}
	if len(order) != len(nodes) {
		for _, n := range nodes {
			if waiting[n] > 0 {
				return fmt.Errorf("graph %q has a cycle through node %q (%s)", g.P.GetName(), n.GetName(), n.GetOpType())
			}
		}
	}
	g.P.Node = order
	return nil
}

// nodeHeap orders nodes by their original position.
type nodeHeap struct {
	nodes []*onnxpb.NodeProto
	index map[*onnxpb.NodeProto]int
}

func (h *nodeHeap) Len() int           { return len(h.nodes) }
func (h *nodeHeap) Less(i, j int) bool { return h.index[h.nodes[i]] < h.index[h.nodes[j]] }
func (h *nodeHeap) Swap(i, j int)      { h.nodes[i], h.nodes[j] = h.nodes[j], h.nodes[i] }
func (h *nodeHeap) Push(x any)         { h.nodes = append(h.nodes, x.(*onnxpb.NodeProto)) }
func (h *nodeHeap) Pop() any {
	n := h.nodes[len(h.nodes)-1]
	h.nodes = h.nodes[:len(h.nodes)-1]
	return n
}

// Prune removes nodes whose outputs no graph output (nor a value of keep)
// needs, then initializers and value infos nothing reads. It returns the
// number of nodes removed.
func (g *Graph) Prune(keep ...string) int {
	producer := g.Producers()
	live := map[*onnxpb.NodeProto]bool{}
	used := map[string]bool{}
	stack := slices.Clone(keep)
	for _, vi := range g.P.Output {
		stack = append(stack, vi.GetName())
	}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if used[v] {
			continue
		}
		used[v] = true
		if n := producer[v]; n != nil && !live[n] {
			live[n] = true
			stack = append(stack, nodeReads(n)...)
		}
	}
	removed := g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return !live[n] })
	inits := g.P.Initializer[:0]
	for _, t := range g.P.Initializer {
		if used[t.GetName()] {
			inits = append(inits, t)
		}
	}
	clear(g.P.Initializer[len(inits):])
	g.P.Initializer = inits
	infos := g.P.ValueInfo[:0]
	for _, vi := range g.P.ValueInfo {
		if used[vi.GetName()] {
			infos = append(infos, vi)
		}
	}
	clear(g.P.ValueInfo[len(infos):])
	g.P.ValueInfo = infos
	return removed
}

// Rename replaces every use of value name old (node inputs and outputs,
// graph inputs and outputs, initializers, value infos) with new.
func (g *Graph) Rename(old, new string) {
	for _, n := range g.P.Node {
		for i, in := range n.Input {
			if in == old {
				n.Input[i] = new
			}
		}
		for i, o := range n.Output {
			if o == old {
				n.Output[i] = new
			}
		}
	}
	for _, list := range [][]*onnxpb.ValueInfoProto{g.P.Input, g.P.Output, g.P.ValueInfo} {
		for _, vi := range list {
			if vi.GetName() == old {
				vi.Name = proto.String(new)
			}
		}
	}
	for _, t := range g.P.Initializer {
		if t.GetName() == old {
			t.Name = proto.String(new)
		}
	}
	g.names[new] = true
}

// NodeLabel names a node for messages: its name if it has one, else its op
// type and first output.
func NodeLabel(n *onnxpb.NodeProto) string {
	if n.GetName() != "" {
		return fmt.Sprintf("%q (%s)", n.GetName(), n.GetOpType())
	}
	return fmt.Sprintf("%s -> %s", n.GetOpType(), strings.Join(n.Output, ", "))
}

// Reduce appends a Reduce* node (ReduceSum, ReduceMean, ReduceL1, …) over
// constant axes in the form the model's default-domain opset expects: axes
// as an input (ReduceSum from opset 13, the others from 18) or as an
// attribute before that.
func (g *Graph) Reduce(opset int64, op, x string, axes []int64, keepdims bool, hint string) string {
	keep := int64(0)
	if keepdims {
		keep = 1
	}
	inputAxes := opset >= 18 || op == "ReduceSum" && opset >= 13
	if inputAxes {
		return g.Op(op, []string{x, g.ConstInt64(hint+".axes", []int64{int64(len(axes))}, axes...)}, hint, AttrInt("keepdims", keep))
	}
	return g.Op(op, []string{x}, hint, AttrInts("axes", axes...), AttrInt("keepdims", keep))
}

// OpList formats op types with one example node each ("Celu (node
// "a/Celu"); Erf (node …)"), sorted, for errors that list every op type a
// tool lacks a rule for.
func OpList(examples map[string]string) string {
	ops := make([]string, 0, len(examples))
	for op := range examples {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = fmt.Sprintf("%s (node %s)", op, examples[op])
	}
	return strings.Join(parts, "; ")
}
