// Package shapes infers the element type and symbolic shape of every value
// of an ONNX graph, and the contents of its small integer tensors, with one
// rule per op type; onnx/grad and training read ranks and dim equalities
// from it, the runtime sizes buffers with it.
package shapes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Info holds the element type and symbolic shape of every value of a
// graph, and the symbolic contents of its small integer tensors (the shape
// computations that feed Reshape, Expand, Slice, …). The gradient rules of
// onnx/grad read ranks and dim equalities from it; the runtime reads it to
// size buffers once the symbols have sizes (Bind, Eval).
//
// A dim is a constant, or a symbol whose name is a canonical polynomial
// over atoms: graph-input dim params ("batch"), products and sums of them
// ("batch*seq", "seq+1"), and fresh atoms "unk_N" for sizes and values that
// nothing determines. Two dims are equal only when provably so: dims with
// the same name are the same polynomial. Atom names that are not plain
// identifiers are quoted, so the printed form is unambiguous. Graph-input
// dims are assumed to be at least 1, as ONNX's own inference assumes.
// Propagated contents are dims too (bools as 0 and 1).
type Info struct {
	vals  map[string]*tinfo
	exprs map[string]*expr
	// Unresolved lists, in lenient mode, the nodes whose outputs got an
	// unknown rank because no rule covers their op or an input's rank was
	// unknown.
	Unresolved []string
}

// Options configure InferWith.
type Options struct {
	// Lenient gives the outputs of ops without a rule an unknown type and
	// rank (and so everything computed from them) instead of failing, and
	// records them in Info.Unresolved. A caller that must
	// differentiate the graph wants the strict default.
	Lenient bool
}

// tinfo is what inference knows about one value.
type tinfo struct {
	dtype onnx.DType
	shape []*expr // nil when the rank is unknown
	vals  []*expr // contents of a small integer tensor, row-major; nil when unknown
}

// maxValues bounds the tensors whose contents are propagated: shapes,
// axes, starts and ends are short.
const maxValues = 16

// errUnknownRank marks a rule that needed the rank of an input that has
// none; lenient inference turns it into unknown outputs.
var errUnknownRank = errors.New("unknown rank")

// Infer infers the types and shapes of every value of m's main graph.
// It fails, naming the node, on a malformed node, and lists every op type
// it has no rule for (If and Loop included: subgraphs are not supported).
func Infer(m *onnx.Model) (*Info, error) { return InferWith(m, Options{}) }

// InferWith is Infer with options. Errors of a model loaded
// from a file name that file first, so a user sees which model.onnx the
// node belongs to.
func InferWith(m *onnx.Model, opt Options) (*Info, error) {
	info, err := inferShapes(m, opt)
	if err != nil && m.Path != "" {
		if badinput.Is(err) {
			return nil, badinput.Errorf("%s: %w", m.Path, err)
		}
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return info, err
}

func inferShapes(m *onnx.Model, opt Options) (*Info, error) {
	g := m.Proto.GetGraph()
	if g == nil {
		return nil, badinput.Errorf("shape inference: the model has no graph")
	}
	opset := m.Opset("")
	if opset == 0 {
		return nil, badinput.Errorf("shape inference: the model imports no default-domain opset")
	}
	if !opt.Lenient {
		if err := checkRules(g); err != nil {
			return nil, err
		}
	}
	st := &inferState{
		m: m, opset: opset, lenient: opt.Lenient,
		info:     &Info{vals: map[string]*tinfo{}},
		positive: map[string]bool{},
		upper:    map[string][]*expr{},
		used:     map[string]bool{},
		declared: map[string]*onnxpb.ValueInfoProto{},
	}
	for _, list := range [][]*onnxpb.ValueInfoProto{g.Input, g.ValueInfo, g.Output} {
		for _, vi := range list {
			st.declared[vi.GetName()] = vi
			if _, shape, ok := onnx.TensorType(vi); ok {
				for _, d := range shape {
					for _, a := range paramAtoms(d.Param) {
						st.used[a] = true
					}
				}
			}
		}
	}
	if err := st.graphInputs(g); err != nil {
		return nil, err
	}
	for _, n := range g.Node {
		if err := st.node(n); err != nil {
			return nil, err
		}
	}
	st.info.exprs = map[string]*expr{}
	for _, t := range st.info.vals {
		for _, list := range [][]*expr{t.shape, t.vals} {
			for _, e := range list {
				st.info.exprs[e.key] = e
			}
		}
	}
	return st.info, nil
}

// Type returns a value's element type and shape; ok is false for a name the
// graph does not define. The shape is nil when the rank is unknown (lenient
// mode only).
func (s *Info) Type(value string) (dtype onnx.DType, shape onnx.Shape, ok bool) {
	t := s.vals[value]
	if t == nil {
		return onnx.Undefined, nil, false
	}
	return t.dtype, exprsToDims(t.shape), true
}

// Values returns the symbolic contents of a small integer tensor of rank 0
// or 1 (a shape, axes, a size), when inference could follow them.
func (s *Info) Values(value string) ([]onnx.Dim, bool) {
	t := s.vals[value]
	if t == nil || t.vals == nil {
		return nil, false
	}
	return exprsToDims(t.vals), true
}

// SameShape reports whether two values provably have the same shape.
func (s *Info) SameShape(a, b string) bool {
	ta, tb := s.vals[a], s.vals[b]
	if ta == nil || tb == nil || ta.shape == nil || tb.shape == nil || len(ta.shape) != len(tb.shape) {
		return false
	}
	for i := range ta.shape {
		if ta.shape[i].key != tb.shape[i].key {
			return false
		}
	}
	return true
}

// Eval returns the size of d given the sizes of the atoms it is made of;
// ok is false when one of them has no size.
func (s *Info) Eval(d onnx.Dim, sizes map[string]int64) (int64, bool) {
	if d.Param == "" {
		return d.Value, d.Known
	}
	e := s.exprs[d.Param]
	if e == nil {
		return 0, false
	}
	return evalExpr(e, sizes)
}

// Bind learns atom sizes from a concrete shape of a value (a graph input
// fed, an output received): a dim that is a single atom without a size
// takes the concrete size, every dim that can be evaluated must match it.
func (s *Info) Bind(value string, dims []int64, sizes map[string]int64) error {
	t := s.vals[value]
	if t == nil {
		return fmt.Errorf("shape inference has no value %q", value)
	}
	if t.shape == nil {
		return nil
	}
	if len(dims) != len(t.shape) {
		return fmt.Errorf("value %q has rank %d, not %d as inferred (%s)", value, len(dims), len(t.shape), exprsToDims(t.shape))
	}
	for i, e := range t.shape {
		if v, ok := evalExpr(e, sizes); ok {
			if v != dims[i] {
				return fmt.Errorf("value %q: dim %d is %d, but %s = %d", value, i, dims[i], e.key, v)
			}
			continue
		}
		if a, ok := e.atom(); ok {
			sizes[a] = dims[i]
		}
	}
	return nil
}

func exprsToDims(es []*expr) onnx.Shape {
	if es == nil {
		return nil
	}
	out := make(onnx.Shape, len(es))
	for i, e := range es {
		out[i] = e.dim()
	}
	return out
}

// checkRules lists every op type without a rule, one node each, so a
// strict caller learns all that is missing at once.
func checkRules(g *onnxpb.GraphProto) error {
	missing := map[string]string{}
	for _, n := range g.Node {
		op := opKey(n)
		if _, ok := shapeRules[op]; ok {
			continue
		}
		if _, seen := missing[op]; seen {
			continue
		}
		label := onnx.NodeLabel(n)
		if hasSubgraph(n) {
			label += ", subgraphs are not supported"
		}
		missing[op] = label
	}
	if len(missing) == 0 {
		return nil
	}
	return badinput.Errorf("shape inference has no rule for %d op type(s): %s", len(missing), onnx.OpList(missing))
}

// opKey is the rule-table key of a node: its op type in the default
// domain, "domain.OpType" elsewhere.
func opKey(n *onnxpb.NodeProto) string {
	if d := onnx.CanonicalDomain(n.GetDomain()); d != "" {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}

func hasSubgraph(n *onnxpb.NodeProto) bool {
	for _, a := range n.Attribute {
		if a.G != nil || len(a.Graphs) > 0 {
			return true
		}
	}
	return false
}

// inferState carries one inference run.
type inferState struct {
	m        *onnx.Model
	opset    int64
	lenient  bool
	info     *Info
	positive map[string]bool    // atoms known to be at least 1
	upper    map[string][]*expr // atoms known to be at most each of these sizes
	used     map[string]bool    // atom names taken
	next     int
	declared map[string]*onnxpb.ValueInfoProto
}

// fresh returns a new atom; positive marks it as a size of at least 1.
func (st *inferState) fresh(positive bool) *expr {
	for {
		st.next++
		name := "unk_" + strconv.Itoa(st.next)
		if !st.used[name] {
			st.used[name] = true
			st.positive[name] = positive
			return atomExpr(name)
		}
	}
}

func (st *inferState) isPositive(a string) bool { return st.positive[a] }

// paramAtoms splits a graph input's dim param into the atoms it sums: a
// param such as "past+seq" (names joined by "+", as the key/value-cache
// graphs declare their total length) is the sum of its atoms, so that
// inference relates it to the sizes its parts name; any other param is
// one atom.
func paramAtoms(param string) []string {
	parts := strings.Split(param, "+")
	if len(parts) < 2 || len(parts) > maxExprTerms {
		return []string{param}
	}
	for _, p := range parts {
		if !isIdentifier(p) {
			return []string{param}
		}
	}
	return parts
}

// isIdentifier tells whether s is a letter or underscore followed by
// letters, digits and underscores.
func isIdentifier(s string) bool {
	for i, r := range s {
		if r != '_' && !unicode.IsLetter(r) && (i == 0 || !unicode.IsDigit(r)) {
			return false
		}
	}
	return s != ""
}

// graphInputs records inputs (with their dim params as positive atoms) and
// initializers (with the contents of small integer ones).
func (st *inferState) graphInputs(g *onnxpb.GraphProto) error {
	isInput := map[string]bool{}
	for _, vi := range g.Input {
		name := vi.GetName()
		dtype, shape, ok := onnx.TensorType(vi)
		if !ok {
			return badinput.Errorf("shape inference: graph input %q is not a tensor", name)
		}
		t := &tinfo{dtype: dtype}
		if shape != nil {
			t.shape = make([]*expr, len(shape))
			for i, d := range shape {
				switch {
				case d.Param != "":
					atoms := paramAtoms(d.Param)
					e := atomExpr(atoms[0])
					for _, a := range atoms[1:] {
						e, _ = addExpr(e, atomExpr(a))
					}
					t.shape[i] = e
					for _, a := range atoms {
						st.positive[a] = true
					}
				case d.Known && d.Value >= 0:
					t.shape[i] = constExpr(d.Value)
				case d.Known:
					return badinput.Errorf("shape inference: graph input %q has negative dim %d", name, d.Value)
				default:
					t.shape[i] = st.fresh(true)
				}
			}
		}
		isInput[name] = true
		st.info.vals[name] = t
	}
	for _, tp := range g.Initializer {
		name := tp.GetName()
		t, err := st.tensorInfo(tp, !isInput[name])
		if err != nil {
			return badinput.Errorf("shape inference: initializer %q: %v", name, err)
		}
		if isInput[name] {
			// An input with a default keeps its declared shape when it has one.
			if in := st.info.vals[name]; in.shape != nil {
				continue
			}
		}
		st.info.vals[name] = t
	}
	for _, sp := range g.SparseInitializer {
		v := sp.GetValues()
		shape, err := constShape(sp.GetDims())
		if err != nil {
			return badinput.Errorf("shape inference: sparse initializer %q: %v", v.GetName(), err)
		}
		st.info.vals[v.GetName()] = &tinfo{dtype: onnx.DType(v.GetDataType()), shape: shape}
	}
	return nil
}

// tensorInfo describes a constant tensor, reading its contents when it is a
// small integer tensor and withValues is set.
func (st *inferState) tensorInfo(tp *onnxpb.TensorProto, withValues bool) (*tinfo, error) {
	shape, err := constShape(tp.GetDims())
	if err != nil {
		return nil, err
	}
	t := &tinfo{dtype: onnx.DType(tp.GetDataType()), shape: shape}
	if withValues && len(shape) <= 1 && isIntegral(t.dtype) {
		if n, _ := onnx.NumElements(tp.GetDims()); n <= maxValues {
			ints, err := st.tensorInts(tp)
			if err != nil {
				return nil, err
			}
			if int64(len(ints)) == n {
				t.vals = make([]*expr, len(ints))
				for i, v := range ints {
					t.vals[i] = constExpr(v)
				}
			}
		}
	}
	return t, nil
}

// tensorInts decodes the elements of an integer or bool tensor; values
// beyond int64 leave it unread (nil).
func (st *inferState) tensorInts(tp *onnxpb.TensorProto) ([]int64, error) {
	raw, err := st.m.TensorBytes(tp)
	if err != nil {
		return nil, err
	}
	dtype := onnx.DType(tp.GetDataType())
	size := dtype.Size()
	if size == 0 || len(raw)%size != 0 {
		return nil, nil
	}
	out := make([]int64, len(raw)/size)
	for i := range out {
		b := raw[i*size:]
		switch dtype {
		case onnx.Bool, onnx.Uint8:
			out[i] = int64(b[0])
		case onnx.Int8:
			out[i] = int64(int8(b[0]))
		case onnx.Int16:
			out[i] = int64(int16(binary.LittleEndian.Uint16(b)))
		case onnx.Uint16:
			out[i] = int64(binary.LittleEndian.Uint16(b))
		case onnx.Int32:
			out[i] = int64(int32(binary.LittleEndian.Uint32(b)))
		case onnx.Uint32:
			out[i] = int64(binary.LittleEndian.Uint32(b))
		case onnx.Int64:
			out[i] = int64(binary.LittleEndian.Uint64(b))
		case onnx.Uint64:
			v := binary.LittleEndian.Uint64(b)
			if v > maxInt64 {
				return nil, nil
			}
			out[i] = int64(v)
		default:
			return nil, nil
		}
	}
	if dtype == onnx.Bool {
		for i, v := range out {
			out[i] = min(v, 1)
		}
	}
	return out, nil
}

// constShape converts tensor dims, refusing negative ones.
func constShape(dims []int64) ([]*expr, error) {
	shape := make([]*expr, len(dims))
	for i, d := range dims {
		if d < 0 {
			return nil, fmt.Errorf("negative dim %d in %v", d, dims)
		}
		shape[i] = constExpr(d)
	}
	return shape, nil
}

// isIntegral reports the element types whose contents are propagated.
func isIntegral(d onnx.DType) bool {
	switch d {
	case onnx.Bool, onnx.Int8, onnx.Uint8, onnx.Int16, onnx.Uint16, onnx.Int32, onnx.Uint32, onnx.Int64, onnx.Uint64:
		return true
	}
	return false
}

// node runs the rule of one node and records its outputs.
func (st *inferState) node(n *onnxpb.NodeProto) error {
	fail := func(err error) error {
		return badinput.Errorf("shape inference: node %s: %v", onnx.NodeLabel(n), err)
	}
	c := &inferCtx{st: st, n: n, opset: st.opset, ins: make([]*tinfo, len(n.Input)), outs: make([]*tinfo, len(n.Output))}
	for i, name := range n.Input {
		if name == "" {
			continue
		}
		if c.ins[i] = st.info.vals[name]; c.ins[i] == nil {
			return fail(fmt.Errorf("input %q is not a graph input, an initializer or the output of an earlier node (are the nodes topologically sorted?)", name))
		}
	}
	for i, name := range n.Output {
		if name != "" && (st.info.vals[name] != nil || slicesIndex(n.Output, name) != i) {
			return fail(fmt.Errorf("output %q is defined twice", name))
		}
	}
	rule, ok := shapeRules[opKey(n)]
	var err error
	if ok {
		err = c.run(rule)
	} else {
		err = fmt.Errorf("no shape rule for %s", opKey(n))
	}
	if err != nil {
		if !st.lenient || (ok && !errors.Is(err, errUnknownRank)) {
			return fail(err)
		}
		st.info.Unresolved = append(st.info.Unresolved, onnx.NodeLabel(n))
		for i := range c.outs {
			c.outs[i] = &tinfo{dtype: st.declaredType(n.Output[i])}
		}
	}
	for i, name := range n.Output {
		if name == "" {
			continue
		}
		t := c.outs[i]
		if t == nil {
			return fail(fmt.Errorf("output %d (%q) is not an output of %s here", i, name, n.GetOpType()))
		}
		t.vals = settleValues(t)
		st.info.vals[name] = t
	}
	return nil
}

func slicesIndex(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// declaredType is the element type a graph declares for a value, if any.
func (st *inferState) declaredType(name string) onnx.DType {
	if vi := st.declared[name]; vi != nil {
		if dt, _, ok := onnx.TensorType(vi); ok {
			return dt
		}
	}
	return onnx.Undefined
}

// settleValues keeps propagated contents only where they are meaningful:
// an integral tensor of rank 0 or 1 whose element count matches and whose
// constants fit the element type.
func settleValues(t *tinfo) []*expr {
	if t.vals == nil || !isIntegral(t.dtype) || t.shape == nil || len(t.shape) > 1 || len(t.vals) > maxValues {
		return nil
	}
	n := int64(1)
	if len(t.shape) == 1 {
		var ok bool
		if n, ok = t.shape[0].constant(); !ok {
			return nil
		}
	}
	if int64(len(t.vals)) != n {
		return nil
	}
	lo, hi := intRange(t.dtype)
	for _, e := range t.vals {
		if v, ok := e.constant(); ok && (v < lo || v > hi) {
			return nil
		}
	}
	return t.vals
}

// intRange is the range of an integral element type (uint64 capped at the
// int64 maximum); a constant outside it wrapped at run time.
func intRange(d onnx.DType) (lo, hi int64) {
	switch d {
	case onnx.Bool:
		return 0, 1
	case onnx.Int8:
		return -1 << 7, 1<<7 - 1
	case onnx.Uint8:
		return 0, 1<<8 - 1
	case onnx.Int16:
		return -1 << 15, 1<<15 - 1
	case onnx.Uint16:
		return 0, 1<<16 - 1
	case onnx.Int32:
		return -1 << 31, 1<<31 - 1
	case onnx.Uint32:
		return 0, 1<<32 - 1
	case onnx.Uint64:
		return 0, maxInt64
	}
	return minInt64, maxInt64
}

// inferCtx is what a shape rule sees: the node, its inputs' info and the
// outputs it sets.
type inferCtx struct {
	st    *inferState
	n     *onnxpb.NodeProto
	opset int64
	ins   []*tinfo
	outs  []*tinfo
}

// shapeRule infers a node's outputs from its inputs and attributes.
type shapeRule func(c *inferCtx) error

// run calls a rule; a panic (a bug in a rule) becomes an error naming the
// node rather than crashing the caller.
func (c *inferCtx) run(rule shapeRule) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error in the %s shape rule: %v", c.n.GetOpType(), r)
		}
	}()
	return rule(c)
}

// input returns a required input.
func (c *inferCtx) input(i int) (*tinfo, error) {
	if i >= len(c.ins) || c.ins[i] == nil {
		return nil, fmt.Errorf("%s needs input %d", c.n.GetOpType(), i)
	}
	return c.ins[i], nil
}

// ranked returns a required input whose rank is known.
func (c *inferCtx) ranked(i int) (*tinfo, error) {
	t, err := c.input(i)
	if err != nil {
		return nil, err
	}
	if t.shape == nil {
		return nil, fmt.Errorf("input %d (%q): %w", i, c.n.Input[i], errUnknownRank)
	}
	return t, nil
}

// rankedPair returns inputs 0 and 1, a product's A and B, both of known
// rank.
func (c *inferCtx) rankedPair() (a, b *tinfo, err error) {
	if a, err = c.ranked(0); err != nil {
		return nil, nil, err
	}
	if b, err = c.ranked(1); err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

// optional returns an optional input, or nil when it is absent.
func (c *inferCtx) optional(i int) *tinfo {
	if i >= len(c.ins) {
		return nil
	}
	return c.ins[i]
}

// set records output i and returns it so the rule can attach contents.
func (c *inferCtx) set(i int, dtype onnx.DType, shape []*expr) *tinfo {
	t := &tinfo{dtype: dtype, shape: shape}
	if i < len(c.outs) {
		c.outs[i] = t
	}
	return t
}

func (c *inferCtx) fresh() *expr { return c.st.fresh(false) }

// boundedFresh returns a fresh atom known to be at most each of bounds.
func (c *inferCtx) boundedFresh(positive bool, bounds ...*expr) *expr {
	e := c.st.fresh(positive)
	c.st.upper[e.terms[0].atoms[0]] = bounds
	return e
}

// bounded reports whether e is an atom of at least 1 known to be at most b.
func (c *inferCtx) bounded(e, b *expr) bool {
	a, ok := e.atom()
	if !ok || !c.st.positive[a] {
		return false
	}
	for _, u := range c.st.upper[a] {
		if u.key == b.key {
			return true
		}
	}
	return false
}

// atLeast reports whether e is provably at least n.
func (c *inferCtx) atLeast(e *expr, n int64) bool {
	v, ok := minValue(e, c.st.isPositive)
	return ok && v >= n
}

// freshDims returns n fresh sizes.
func (c *inferCtx) freshDims(n int) []*expr {
	out := make([]*expr, n)
	for i := range out {
		out[i] = c.fresh()
	}
	return out
}

// attr returns an attribute or nil.
func (c *inferCtx) attr(name string) *onnxpb.AttributeProto { return onnx.GetAttr(c.n, name) }

func (c *inferCtx) intAttr(name string, def int64) int64 { return onnx.AttrIntOr(c.n, name, def) }

// intsAttr returns an integer-list attribute and whether it is present.
func (c *inferCtx) intsAttr(name string) ([]int64, bool) {
	a := c.attr(name)
	if a == nil {
		return nil, false
	}
	return a.GetInts(), true
}

// axis normalises an axis attribute against a rank, refusing one out of
// range.
func (c *inferCtx) axis(name string, a int64, rank int) (int, error) {
	if a < -int64(rank) || a >= int64(rank) {
		return 0, fmt.Errorf("%s %d is out of range for rank %d", name, a, rank)
	}
	if a < 0 {
		a += int64(rank)
	}
	return int(a), nil
}

// consts returns the contents of input i when they are all constants.
func (c *inferCtx) consts(i int) ([]int64, bool) {
	t := c.optional(i)
	if t == nil || t.vals == nil {
		return nil, false
	}
	out := make([]int64, len(t.vals))
	for k, e := range t.vals {
		v, ok := e.constant()
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

// length returns the number of elements of a rank-0 or rank-1 input when it
// is a constant.
func (c *inferCtx) length(i int) (int, bool) {
	t := c.optional(i)
	if t == nil || t.shape == nil || len(t.shape) > 1 {
		return 0, false
	}
	if len(t.shape) == 0 {
		return 1, true
	}
	n, ok := t.shape[0].constant()
	if !ok || n > maxValues {
		return 0, false
	}
	return int(n), true
}

// sameType checks that inputs share one element type and returns it.
func (c *inferCtx) sameType(idx ...int) (onnx.DType, error) {
	var dt onnx.DType
	first := -1
	for _, i := range idx {
		t := c.optional(i)
		if t == nil || t.dtype == onnx.Undefined {
			continue
		}
		if first < 0 {
			dt, first = t.dtype, i
			continue
		}
		if t.dtype != dt {
			return onnx.Undefined, fmt.Errorf("inputs %d and %d have different element types (%v, %v)", first, i, dt, t.dtype)
		}
	}
	return dt, nil
}
