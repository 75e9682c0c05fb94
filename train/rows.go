package train

import (
	"slices"

	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/shapes"
	"google.golang.org/protobuf/proto"
)

// The head on labelled rows. A token whose label is the ignore index adds
// nothing to the loss, and every operation between the last block and the
// logits (the final norm, an MLM head's dense layer, GELU and norm, the
// vocabulary projection, the log-softmax) treats each token's row on its
// own. So the training graph gathers the labelled rows once, where the
// last block hands over, and runs the head on those rows only: the same
// loss and gradients (up to the order of float32 sums), without the
// head's work on the other tokens, three products of d × vocab a token.
// Masked-LM batches label about 15 % of the tokens and instruction data
// leaves the prompt unlabelled. MIGU's taps on the head's linears count
// every token: they read the head's values on the labelled rows joined
// with a second copy of the head, up to the tapped linear, on the other
// rows (headTapsOnRows), so no row is computed twice; Build prunes the
// head's original nodes.

// labelledRows is the training graph's int64 [R] index of the labelled
// tokens among the batch's flattened label positions; R is known only
// when the batch is, so the memory plan takes every position as labelled.
const labelledRows = "loss/labelled"

// unlabelledRows is the int64 [R'] index of the other tokens, on which
// the head runs for MIGU's taps only; the memory plan takes every
// position as unlabelled too.
const unlabelledRows = "loss/unlabelled"

// rowsSuffix ends the names of the nodes and values that compute on the
// gathered rows.
const rowsSuffix = "/rows"

// restSuffix ends the names of the nodes and values that compute on the
// unlabelled rows.
const restSuffix = "/rest"

// rowGather copies the row-wise nodes that compute a value onto the
// labelled rows.
type rowGather struct {
	g    *onnx.Graph
	info *shapes.Info
	// rows are the leading dimensions of the logits, one row per token.
	rows []string
	// idx is the int64 [R] index of the labelled rows among the flattened
	// rows.
	idx string
	// suffix ends the copies' names: rowsSuffix or restSuffix.
	suffix   string
	prod     map[string]*onnxpb.NodeProto
	stop     map[string]bool // block boundaries: gathered, never walked past
	data     map[string]bool // values that depend on the batch
	gathered map[string]string
	// copies maps each copied node's name to its copy's.
	copies map[string]string
}

// gatherRows returns logits (rank ≥ 2, one row per token) computed on the
// rows idx selects of its flattened leading dimensions, as a [R, classes]
// value, with the copies made (original node name → copy's name). stop
// lists values the walk does not pass (the block boundaries); trainable
// names the parameters, whose values do not depend on the batch.
func gatherRows(m *onnx.Model, logits, idx string, stop map[string]bool, trainable []string) (string, map[string]string, error) {
	r, err := newRowGather(m, logits, idx, rowsSuffix, stop, trainable)
	if err != nil {
		return "", nil, err
	}
	return r.value(logits), r.copies, nil
}

// newRowGather starts copies onto the rows idx selects of logits'
// flattened leading dimensions, named with suffix.
func newRowGather(m *onnx.Model, logits, idx, suffix string, stop map[string]bool, trainable []string) (*rowGather, error) {
	info, err := shapes.Infer(m)
	if err != nil {
		return nil, err
	}
	g := m.Graph()
	_, shape, _ := info.Type(logits)
	r := &rowGather{g: g, info: info, idx: idx, suffix: suffix, prod: g.Producers(), stop: stop,
		gathered: map[string]string{}, copies: map[string]string{}}
	for _, d := range shape[:max(len(shape)-1, 0)] {
		r.rows = append(r.rows, d.String())
	}
	r.data = dataValues(g, trainable)
	return r, nil
}

// headTapsOnRows points MIGU's taps on values of the head that addLoss
// copied onto the labelled rows at those rows joined with the same values
// computed on the unlabelled ones (a second copy of the head up to them):
// every token counts once, in another order, and the head's nodes on
// every row are left to nobody (Build prunes them). It returns the taps'
// points (a copy of points) and the second copies (original node name →
// copy's name).
func headTapsOnRows(m *onnx.Model, logits string, rows *headRows, points []migu.Point) ([]migu.Point, map[string]string, error) {
	g := m.Graph()
	producers := g.Producers()
	byName := map[string]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		byName[n.GetName()] = n
	}
	points = slices.Clone(points)
	var rest *rowGather
	for i, p := range points {
		n := producers[p.Value]
		if n == nil || n.Output[0] != p.Value {
			continue
		}
		c, ok := byName[rows.copies[n.GetName()]]
		if !ok {
			continue
		}
		if rest == nil {
			var err error
			if rest, err = newRowGather(m, logits, rows.rest, restSuffix, rows.stop, rows.trainable); err != nil {
				return nil, nil, err
			}
		}
		points[i].Value = g.Op("Concat", []string{c.Output[0], rest.value(p.Value)}, p.Value+"/every_row", onnx.AttrInt("axis", 0))
	}
	if rest == nil {
		return points, nil, nil
	}
	return points, rest.copies, nil
}

// dataValues returns the values that depend on a graph input other than
// the trainable parameters: the batch's tensors and everything computed
// from them. It repeats its pass over the nodes until nothing changes, so
// that it holds whatever the nodes' order.
func dataValues(g *onnx.Graph, trainable []string) map[string]bool {
	data := map[string]bool{}
	for _, in := range g.P.Input {
		if !slices.Contains(trainable, in.GetName()) {
			data[in.GetName()] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, n := range g.P.Node {
			if len(n.Output) == 0 || data[n.Output[0]] || !slices.ContainsFunc(n.Input, func(v string) bool { return data[v] }) {
				continue
			}
			for _, o := range n.Output {
				data[o] = true
			}
			changed = true
		}
	}
	return data
}

// value returns v on the gathered rows: a copy of its producer where that
// is row-wise, else v's rows gathered. Without block boundaries (a model
// folder older than them) nothing is walked: the walk could otherwise
// climb the residual stream into the blocks, whose every row the next
// attention needs.
func (r *rowGather) value(v string) string {
	if got, ok := r.gathered[v]; ok {
		return got
	}
	var out string
	if n := r.prod[v]; n != nil && len(r.stop) > 0 && !r.stop[v] && len(n.Output) == 1 && r.rowWise(n) {
		out = r.copy(n)
	} else {
		_, shape, _ := r.info.Type(v)
		flat := r.g.Op("Flatten", []string{v}, v+"/flat", onnx.AttrInt("axis", int64(len(shape)-1)))
		out = r.g.Op("Gather", []string{flat, r.idx}, v+r.suffix, onnx.AttrInt("axis", 0))
	}
	r.gathered[v] = out
	return out
}

// copy adds n's copy on the gathered rows: its batch operands gathered,
// its parameters as they are, a last-axis attribute kept pointing at the
// last axis of the rank-2 rows.
func (r *rowGather) copy(n *onnxpb.NodeProto) string {
	c := proto.Clone(n).(*onnxpb.NodeProto)
	c.Name = proto.String(r.g.Unique(n.GetName() + r.suffix))
	for i, in := range c.Input {
		if r.data[in] {
			c.Input[i] = r.value(in)
		}
	}
	for _, a := range c.Attribute {
		switch a.GetName() {
		case "axis":
			a.I = proto.Int64(-1)
		case "axes":
			a.Ints = []int64{-1}
		}
	}
	if isReduce(n.GetOpType()) && len(c.Input) > 1 {
		c.Input[1] = r.g.ConstInt64(n.GetName()+r.suffix+".axes", []int64{1}, -1)
	}
	c.Output = []string{r.g.Unique(n.Output[0] + r.suffix)}
	r.g.AddNode(c)
	r.copies[n.GetName()] = c.GetName()
	return c.Output[0]
}

// rowElementwise are the ops that act on each element alone: with every
// batch operand of the output's shape (or one per row) and every
// parameter of rank 0 or 1, each row of the output depends on the same
// row of the inputs only.
var rowElementwise = map[string]bool{
	"Add": true, "Sub": true, "Mul": true, "Div": true, "Pow": true, "Max": true, "Min": true,
	"Identity": true, "Cast": true, "Neg": true, "Abs": true, "Exp": true, "Log": true, "Sqrt": true,
	"Reciprocal": true, "Erf": true, "Tanh": true, "Sigmoid": true, "Relu": true, "Gelu": true,
	"Softplus": true, "Clip": true,
}

// isReduce tells the reductions whose last-axis form is row-wise.
func isReduce(op string) bool {
	switch op {
	case "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceMax", "ReduceL2":
		return true
	}
	return false
}

// rowWise reports whether n's output row i depends on row i of its batch
// operands only, in a form its copy can compute on [R, C] rows: an
// elementwise op, a MatMul by a parameter matrix, a LayerNormalization or
// a kept-dims reduction over the last axis.
func (r *rowGather) rowWise(n *onnxpb.NodeProto) bool {
	if n.GetDomain() != "" {
		return false
	}
	_, out, ok := r.info.Type(n.Output[0])
	if !ok || len(out) < 2 || !r.rowShaped(out) {
		return false
	}
	last := int64(len(out) - 1)
	op := n.GetOpType()
	switch {
	case op == "MatMul":
		return r.data[n.Input[0]] && r.rowOperand(n.Input[0], out) && !r.data[n.Input[1]] && r.rank(n.Input[1]) == 2
	case op == "LayerNormalization":
		if a := onnx.AttrIntOr(n, "axis", -1); a != -1 && a != last {
			return false
		}
		return r.operands(n, out, 1)
	case isReduce(op):
		if onnx.AttrIntOr(n, "keepdims", 1) != 1 || onnx.AttrIntOr(n, "noop_with_empty_axes", 0) != 0 {
			return false
		}
		axes := []int64(nil)
		if a := onnx.GetAttr(n, "axes"); a != nil {
			axes = a.GetInts()
		} else if len(n.Input) > 1 {
			vals, ok := r.info.Values(n.Input[1])
			if !ok || len(vals) != 1 || !vals[0].Known || vals[0].Param != "" {
				return false
			}
			axes = []int64{vals[0].Value}
		}
		if len(axes) != 1 || axes[0] != -1 && axes[0] != last {
			return false
		}
		return r.data[n.Input[0]] && r.rowOperand(n.Input[0], out) && len(n.Input) <= 2
	case rowElementwise[op]:
		return r.operands(n, out, 0)
	}
	return false
}

// operands checks an elementwise-like node's inputs: batch operands shaped
// as rows of out, every other input of rank 0 or 1 (from index params on,
// LayerNormalization's scale and bias); at least one batch operand.
func (r *rowGather) operands(n *onnxpb.NodeProto, out onnx.Shape, params int) bool {
	batch := 0
	for i, in := range n.Input {
		switch {
		case in == "":
		case r.data[in]:
			if i >= params && params > 0 || !r.rowOperand(in, out) {
				return false
			}
			batch++
		case r.rank(in) > 1:
			return false
		}
	}
	return batch > 0
}

// rowOperand reports whether v has out's rank and leading dimensions: one
// row (of any width) per row of out.
func (r *rowGather) rowOperand(v string, out onnx.Shape) bool {
	_, s, ok := r.info.Type(v)
	if !ok || len(s) != len(out) {
		return false
	}
	for i := range len(s) - 1 {
		if s[i].String() != out[i].String() || !s[i].Known {
			return false
		}
	}
	return true
}

// rowShaped reports whether a shape's leading dimensions are the logits'
// rows.
func (r *rowGather) rowShaped(s onnx.Shape) bool {
	if len(s)-1 != len(r.rows) {
		return false
	}
	for i, d := range s[:len(s)-1] {
		if !d.Known || d.String() != r.rows[i] {
			return false
		}
	}
	return true
}

// rank is v's rank, or -1 where unknown.
func (r *rowGather) rank(v string) int {
	_, s, ok := r.info.Type(v)
	if !ok || s == nil {
		return -1
	}
	return len(s)
}
