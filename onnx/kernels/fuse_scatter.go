package kernels

import (
	"slices"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseScatterAdd rewrites the gradients of Gather (embedding tables, t5's
// relative position bias) to ai.migu.ScatterAddRows, and folds each into
// the Sum that adds it to the table's other gradients (a tied embedding:
// its lookups' scatters and the output projection's product). It runs on
// a differentiated graph: the trainer applies it after grad.Differentiate.
//
// grad's Gather rule writes, for a table T (the gathered axis moved to the
// front by a Transpose when it is not axis 0) and indices X —
//
//	ScatterElements(ConstantOfShape(Shape(T), 0),
//	    Expand(Reshape(X, [-1, 1, ...]), Shape(U)), U; axis 0, reduction add)
//
// with U the upstream gradient flattened to [N, T's other axes]: each
// index repeated along its row, so the whole row is added. ONNX Runtime
// runs that on one thread, one float at a time (3.45 ms a step for the
// small llama's [3241, 512] table and 512 rows on Ice Lake), after
// filling a table of zeros; a tied table then pays a Sum over table-sized
// tensors. ScatterAddRows(T, X, U [, Base]) adds the rows directly, on
// every thread, each output row once, and writes Base + the rows: folded,
// the Sum(Base, scatter) goes, and so do the zeros. When T is the
// Transpose of the table for a gathered axis other than 0, and the Gather
// rule's transposes of the upstream gradient and of the result are there
// too, the kernel takes the table and the gradient as they are, with that
// axis, and the three transposes go.
//
// Its numbers are those of the standard formulation: each row's updates
// are added in index order starting from 0, then Base is added, so a Sum of
// two inputs gives the same bits. A Sum of three or more (two lookups of a
// tied table) becomes a chain of scatters, each adding onto the last, which
// rounds in another order. It returns the number of scatters rewritten and
// of Sums folded, and imports the domain when it rewrote any.
func FuseScatterAdd(m *onnx.Model, types Types) (scatters, sums int) {
	g := m.Graph()
	producers := g.Producers()
	consumers := g.Consumers()
	outputs := outputSet(g)
	// from returns v's producer when it is a standard op of type op, else nil.
	from := func(v, op string) *onnxpb.NodeProto {
		p := producers[v]
		if p == nil || p.GetOpType() != op || p.GetDomain() != "" {
			return nil
		}
		return p
	}
	// shapeOf returns the value whose whole shape v is (v = Shape(x)), or "".
	shapeOf := func(v string) string {
		p := from(v, "Shape")
		if p == nil || len(p.Input) != 1 || onnx.GetAttr(p, "start") != nil || onnx.GetAttr(p, "end") != nil {
			return ""
		}
		return p.Input[0]
	}
	fused := map[*onnxpb.NodeProto]*onnxpb.NodeProto{} // a replaced node → its ScatterAddRows
	var dead []*onnxpb.NodeProto                       // nodes that may have no consumers left
	for _, s := range g.P.Node {
		if s.GetOpType() != "ScatterElements" || s.GetDomain() != "" || len(s.Input) != 3 ||
			onnx.AttrIntOr(s, "axis", 0) != 0 || attrString(s, "reduction") != "add" {
			continue
		}
		zeros := from(s.Input[0], "ConstantOfShape")
		if zeros == nil || !zeroFloat(m, zeros) {
			continue
		}
		t := shapeOf(zeros.Input[0])
		u := s.Input[2]
		expand := from(s.Input[1], "Expand")
		if t == "" || expand == nil || len(expand.Input) != 2 || shapeOf(expand.Input[1]) != u {
			continue
		}
		column := from(expand.Input[0], "Reshape")
		if column == nil || len(column.Input) != 2 {
			continue
		}
		x := column.Input[0]
		xt, xs, okx := types.Type(x)
		tt, ts, okt := types.Type(t)
		ut, us, oku := types.Type(u)
		if !okx || !okt || !oku || xt != onnx.Int64 || xs == nil || tt != onnx.Float || ut != onnx.Float ||
			len(ts) == 0 || len(us) != len(ts) || !sameShape(us[1:], ts[1:]) {
			continue
		}
		// The column is X as [N, 1, ..., 1], one index per row of U.
		want := make([]int64, len(ts))
		want[0] = -1
		for i := 1; i < len(want); i++ {
			want[i] = 1
		}
		if v, ok := int64s(m, column.Input[1]); !ok || !slices.Equal(v, want) {
			continue
		}
		table, updates, out, axis := t, u, s.Output[0], int64(0)
		next := consumers[s.Output[0]]
		if outputs[s.Output[0]] {
			next = nil
		}
		if a, dy, back := movedAxis(t, u, len(xs), from, next, types); back != nil {
			table, updates, out, axis = from(t, "Transpose").Input[0], dy, back.Output[0], a
			fused[back] = nil
			dead = append(dead, from(t, "Transpose"), from(u, "Reshape"), producers[from(u, "Reshape").Input[0]])
		} else if r := from(u, "Reshape"); r != nil {
			// A reshape keeps the order of the elements: the kernel reads
			// the gradient before it.
			updates = r.Input[0]
			dead = append(dead, r)
		}
		n := &onnxpb.NodeProto{
			OpType: proto.String("ScatterAddRows"), Domain: proto.String(onnx.DomainMigu),
			Name:   proto.String(g.Unique(out + "/ScatterAddRows")),
			Input:  []string{table, x, updates},
			Output: []string{out},
		}
		if axis != 0 {
			n.Attribute = []*onnxpb.AttributeProto{onnx.AttrInt("axis", axis)}
		}
		fused[s] = n
		dead = append(dead, zeros, producers[zeros.Input[0]], expand, producers[expand.Input[1]], column)
		scatters++
	}
	if scatters == 0 {
		return 0, 0
	}
	// Put the kernels in, then fold the Sums.
	nodes := g.P.Node[:0]
	for _, n := range g.P.Node {
		if f, ok := fused[n]; ok {
			if f != nil {
				nodes = append(nodes, f)
			}
			continue
		}
		nodes = append(nodes, n)
	}
	g.P.Node = nodes
	sums = foldSums(g, fused)
	removeDead(g, dead)
	m.SetOpset(onnx.DomainMigu, Opset)
	return scatters, sums
}

// movedAxis recognises the Gather rule's form for a gathered axis a other
// than 0: T = Transpose(table) with the axis in front, U = Reshape(Transpose
// (dy)) with the index axes in front, and next, the consumers of s's
// output, the one Transpose putting the axis back. It returns a, dy and that
// last Transpose, or nil.
func movedAxis(t, u string, indexRank int,
	from func(v, op string) *onnxpb.NodeProto, next []*onnxpb.NodeProto, types Types) (int64, string, *onnxpb.NodeProto) {
	front := from(t, "Transpose")
	reshape := from(u, "Reshape")
	if front == nil || reshape == nil {
		return 0, "", nil
	}
	perm := onnx.GetAttr(front, "perm")
	if perm == nil || len(perm.Ints) < 2 || perm.Ints[0] == 0 {
		return 0, "", nil
	}
	r, a := int64(len(perm.Ints)), perm.Ints[0]
	// perm = [a, the other axes in order]
	want := []int64{a}
	for i := range r {
		if i != a {
			want = append(want, i)
		}
	}
	if !slices.Equal(perm.Ints, want) {
		return 0, "", nil
	}
	dyFront := from(reshape.Input[0], "Transpose")
	if dyFront == nil {
		return 0, "", nil
	}
	ri := int64(indexRank)
	var dperm []int64
	for i := range ri {
		dperm = append(dperm, a+i)
	}
	for i := range a {
		dperm = append(dperm, i)
	}
	for i := a + ri; i < r-1+ri; i++ {
		dperm = append(dperm, i)
	}
	if p := onnx.GetAttr(dyFront, "perm"); p == nil || !slices.Equal(p.Ints, dperm) {
		return 0, "", nil
	}
	dy := dyFront.Input[0]
	if dt, ds, ok := types.Type(dy); !ok || dt != onnx.Float || int64(len(ds)) != r-1+ri {
		return 0, "", nil
	}
	if len(next) != 1 || next[0].GetOpType() != "Transpose" || next[0].GetDomain() != "" {
		return 0, "", nil
	}
	back := next[0]
	inv := make([]int64, r)
	for i, p := range perm.Ints {
		inv[p] = int64(i)
	}
	if p := onnx.GetAttr(back, "perm"); p == nil || !slices.Equal(p.Ints, inv) {
		return 0, "", nil
	}
	return a, dy, back
}

// foldSums folds ScatterAddRows nodes without a base into the Sum that is
// their output's only consumer: the first scatter adds onto the Sum's other
// input (or onto a Sum of the others, when there are several), each next
// one onto the last, and the last writes the Sum's output. The chain takes
// the Sum's place in the node list. It returns the number of Sums folded.
func foldSums(g *onnx.Graph, fused map[*onnxpb.NodeProto]*onnxpb.NodeProto) int {
	scatter := map[string]*onnxpb.NodeProto{}
	for _, n := range fused {
		if n != nil && len(n.Input) == 3 {
			scatter[n.Output[0]] = n
		}
	}
	consumers := g.Consumers()
	outputs := outputSet(g)
	chains := map[*onnxpb.NodeProto][]*onnxpb.NodeProto{} // a Sum → the nodes replacing it
	moved := map[*onnxpb.NodeProto]bool{}
	for _, sum := range g.P.Node {
		if sum.GetOpType() != "Sum" || sum.GetDomain() != "" {
			continue
		}
		var scatters []*onnxpb.NodeProto
		var others []string
		for _, in := range sum.Input {
			s := scatter[in]
			if s != nil && !moved[s] && !outputs[in] && len(consumers[in]) == 1 && !slices.Contains(scatters, s) {
				scatters = append(scatters, s)
			} else {
				others = append(others, in)
			}
		}
		if len(scatters) == 0 {
			continue
		}
		var chain []*onnxpb.NodeProto
		base, out := "", sum.Output[0]
		switch len(others) {
		case 0:
		case 1:
			base = others[0]
		default:
			sum.Input = others
			sum.Output = []string{g.Unique(sum.Output[0] + ".others")}
			base = sum.Output[0]
			chain = append(chain, sum)
		}
		for i, s := range scatters {
			if base != "" {
				s.Input = append(s.Input, base)
			}
			if i == len(scatters)-1 {
				s.Output[0] = out
			}
			base = s.Output[0]
			moved[s] = true
			chain = append(chain, s)
		}
		chains[sum] = chain
	}
	if len(chains) == 0 {
		return 0
	}
	nodes := make([]*onnxpb.NodeProto, 0, len(g.P.Node))
	for _, n := range g.P.Node {
		switch {
		case chains[n] != nil:
			nodes = append(nodes, chains[n]...)
		case moved[n]:
		default:
			nodes = append(nodes, n)
		}
	}
	g.P.Node = nodes
	return len(chains)
}

// removeDead removes the nodes of candidates, and the shape computations
// feeding their shape inputs, whose outputs nothing reads any more and that
// are no graph outputs, until none is left.
func removeDead(g *onnx.Graph, candidates []*onnxpb.NodeProto) {
	outputs := outputSet(g)
	producers := g.Producers()
	pending := map[*onnxpb.NodeProto]bool{}
	var add func(n *onnxpb.NodeProto)
	add = func(n *onnxpb.NodeProto) {
		if n == nil || pending[n] {
			return
		}
		pending[n] = true
		if n.GetDomain() != "" {
			return
		}
		// Follow the int64 shape inputs only: ConstantOfShape's shape,
		// Expand's and Reshape's target shapes, and what Slice and Concat
		// compute them from.
		var shapes []string
		switch n.GetOpType() {
		case "ConstantOfShape":
			shapes = n.Input[:1]
		case "Expand", "Reshape":
			shapes = n.Input[1:2]
		case "Slice", "Concat":
			shapes = n.Input
		}
		for _, in := range shapes {
			if p := producers[in]; p != nil && p.GetDomain() == "" && slices.Contains([]string{"Shape", "Slice", "Concat"}, p.GetOpType()) {
				add(p)
			}
		}
	}
	for _, n := range candidates {
		add(n)
	}
	for {
		consumers := g.Consumers()
		removed := g.RemoveNodes(func(n *onnxpb.NodeProto) bool {
			if !pending[n] {
				return false
			}
			for _, o := range n.Output {
				if o != "" && (outputs[o] || len(consumers[o]) > 0) {
					return false
				}
			}
			return true
		})
		if removed == 0 {
			return
		}
	}
}

// zeroFloat tells whether a ConstantOfShape fills with float32 zeros.
func zeroFloat(m *onnx.Model, n *onnxpb.NodeProto) bool {
	a := onnx.GetAttr(n, "value")
	if a == nil || a.T == nil || onnx.DType(a.T.GetDataType()) != onnx.Float {
		return false
	}
	v, err := m.Float32s(a.T)
	return err == nil && len(v) == 1 && v[0] == 0
}

// attrString reads a string attribute, "" when absent.
func attrString(n *onnxpb.NodeProto, name string) string {
	if a := onnx.GetAttr(n, name); a != nil {
		return string(a.S)
	}
	return ""
}
