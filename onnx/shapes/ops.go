package shapes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/migu-ml/migu/onnx"
)

// shapeRules maps an op type (or "domain.OpType") to its shape rule. Rules
// are grouped by family, as onnx/grad groups gradient rules.
var shapeRules = map[string]shapeRule{}

func registerShape(rule shapeRule, ops ...string) {
	for _, op := range ops {
		shapeRules[op] = rule
	}
}

func init() {
	registerShape(inferUnary,
		"Identity", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Erf",
		"Sigmoid", "Relu", "Softplus", "Softsign", "Gelu", "Sin", "Cos", "Tan", "Asin",
		"Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sign", "Floor",
		"Ceil", "Round", "Elu", "Selu", "Celu", "LeakyRelu", "HardSigmoid", "HardSwish",
		"ThresholdedRelu", "Mish", "Not", "BitwiseNot", "Shrink", "Clip", "Dropout",
		"IsNaN", "IsInf")
	registerShape(inferAxisUnary, "Softmax", "LogSoftmax", "Hardmax", "CumSum", "Trilu")
	registerShape(inferBroadcast,
		"Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "PRelu",
		"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
		"And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
		"Min", "Max", "Sum", "Mean", "Where")
	registerShape(inferMatMul, "MatMul")
	registerShape(inferGemm, "Gemm")
	registerShape(inferEinsum, "Einsum")
	registerShape(inferReduce,
		"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
		"ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
	registerShape(inferArgReduce, "ArgMax", "ArgMin")
	registerShape(inferLayerNorm, "LayerNormalization")
	registerShape(inferTopK, "TopK")
	registerShape(inferNonZero, "NonZero")
	registerShape(inferOneHot, "OneHot")
	registerShape(inferScatter, "ScatterND", "ScatterElements", "Scatter")
	registerShape(inferLoss, "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss")
	registerShape(inferCast, "Cast", "CastLike")
}

// inferUnary covers ops whose outputs have the input's shape: elementwise
// math, Clip, Dropout (and its mask), IsNaN/IsInf. Contents follow through
// Identity, Neg, Abs and Not.
func inferUnary(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	op := c.n.GetOpType()
	switch op {
	case "IsNaN", "IsInf":
		c.set(0, onnx.Bool, x.shape)
		return nil
	case "Not":
		if x.dtype != onnx.Bool && x.dtype != onnx.Undefined {
			return fmt.Errorf("Not needs a bool input, not %v", x.dtype)
		}
	case "Clip":
		if _, err := c.sameType(0, 1, 2); err != nil {
			return err
		}
	case "Dropout":
		c.set(1, onnx.Bool, x.shape)
	}
	out := c.set(0, x.dtype, x.shape)
	if x.vals == nil {
		return nil
	}
	switch op {
	case "Identity", "Dropout":
		out.vals = x.vals
	case "Neg":
		c.mapValues(out, func(a []*expr) (*expr, bool) { return negExpr(a[0]) }, x)
	case "Abs":
		c.mapValues(out, func(a []*expr) (*expr, bool) {
			if v, ok := a[0].constant(); ok && v != minInt64 {
				return constExpr(max(v, -v)), true
			}
			return a[0], c.atLeast(a[0], 0)
		}, x)
	case "Not":
		c.mapValues(out, func(a []*expr) (*expr, bool) { return subExpr(constExpr(1), a[0]) }, x)
	}
	return nil
}

// inferAxisUnary covers same-shape ops with an axis or a rank requirement:
// Softmax, LogSoftmax, Hardmax (axis attribute), CumSum (axis input),
// Trilu (rank at least 2).
func inferAxisUnary(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	r := len(x.shape)
	switch c.n.GetOpType() {
	case "CumSum":
		if _, err := c.input(1); err != nil {
			return err
		}
	case "Trilu":
		if r < 2 {
			return fmt.Errorf("Trilu needs rank 2 or more, not %d", r)
		}
	default:
		def := int64(-1)
		if c.opset < 13 {
			def = 1
		}
		if _, err := c.axis("axis", c.intAttr("axis", def), r); err != nil {
			return err
		}
	}
	c.set(0, x.dtype, x.shape)
	return nil
}

// inferBroadcast covers multidirectional broadcasting ops: arithmetic,
// comparisons, logic, the variadic Min/Max/Sum/Mean and Where. Contents of
// small integer tensors follow through the arithmetic, comparisons, logic
// and Where.
func inferBroadcast(c *inferCtx) error {
	op := c.n.GetOpType()
	ins := make([]*tinfo, 0, len(c.ins))
	idx := make([]int, 0, len(c.ins))
	for i := range c.ins {
		t, err := c.input(i)
		if err != nil {
			return err
		}
		ins, idx = append(ins, t), append(idx, i)
	}
	switch {
	case len(ins) == 0:
		return fmt.Errorf("%s needs inputs", op)
	case op == "Where" && len(ins) != 3:
		return fmt.Errorf("Where needs 3 inputs, not %d", len(ins))
	case op != "Where" && op != "Min" && op != "Max" && op != "Sum" && op != "Mean" && len(ins) != 2:
		return fmt.Errorf("%s needs 2 inputs, not %d", op, len(ins))
	}
	var dtype onnx.DType
	var err error
	switch op {
	case "Where":
		if ins[0].dtype != onnx.Bool && ins[0].dtype != onnx.Undefined {
			return fmt.Errorf("Where's condition is %v, not bool", ins[0].dtype)
		}
		dtype, err = c.sameType(1, 2)
	case "Pow", "PRelu", "BitShift":
		dtype = ins[0].dtype
	default:
		dtype, err = c.sameType(idx...)
	}
	if err != nil {
		return err
	}
	switch op {
	case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor":
		dtype = onnx.Bool
	}
	shapes := make([][]*expr, len(ins))
	for i, t := range ins {
		if t.shape == nil {
			c.set(0, dtype, nil)
			return nil
		}
		shapes[i] = t.shape
	}
	var shape []*expr
	if op == "PRelu" {
		// The slope broadcasts to X (unidirectionally).
		if _, err := c.broadcast(shapes...); err != nil {
			return err
		}
		shape = ins[0].shape
	} else if shape, err = c.broadcast(shapes...); err != nil {
		return err
	}
	out := c.set(0, dtype, shape)
	if fn := valueOps[op]; fn != nil {
		c.mapValues(out, func(a []*expr) (*expr, bool) { return fn(c, a) }, ins...)
	}
	return nil
}

// valueOps computes one element of an integer op from its operands' elements.
var valueOps = map[string]func(c *inferCtx, a []*expr) (*expr, bool){
	"Add": func(_ *inferCtx, a []*expr) (*expr, bool) { return addExpr(a[0], a[1]) },
	"Sub": func(_ *inferCtx, a []*expr) (*expr, bool) { return subExpr(a[0], a[1]) },
	"Mul": func(_ *inferCtx, a []*expr) (*expr, bool) { return mulExpr(a[0], a[1]) },
	"Div": func(_ *inferCtx, a []*expr) (*expr, bool) {
		x, xok := a[0].constant()
		y, yok := a[1].constant()
		if xok && yok {
			if y == 0 || (x == minInt64 && y == -1) {
				return nil, false
			}
			return constExpr(x / y), true
		}
		return divExpr(a[0], a[1])
	},
	"Sum": func(_ *inferCtx, a []*expr) (*expr, bool) {
		s := a[0]
		for _, e := range a[1:] {
			var ok bool
			if s, ok = addExpr(s, e); !ok {
				return nil, false
			}
		}
		return s, true
	},
	"Min":            func(c *inferCtx, a []*expr) (*expr, bool) { return c.extreme(a, false) },
	"Max":            func(c *inferCtx, a []*expr) (*expr, bool) { return c.extreme(a, true) },
	"Equal":          func(c *inferCtx, a []*expr) (*expr, bool) { return c.compare(a[0], a[1], "==") },
	"Less":           func(c *inferCtx, a []*expr) (*expr, bool) { return c.compare(a[0], a[1], "<") },
	"Greater":        func(c *inferCtx, a []*expr) (*expr, bool) { return c.compare(a[1], a[0], "<") },
	"LessOrEqual":    func(c *inferCtx, a []*expr) (*expr, bool) { return c.compare(a[0], a[1], "<=") },
	"GreaterOrEqual": func(c *inferCtx, a []*expr) (*expr, bool) { return c.compare(a[1], a[0], "<=") },
	"And":            func(_ *inferCtx, a []*expr) (*expr, bool) { return boolOp(a, func(x, y bool) bool { return x && y }) },
	"Or":             func(_ *inferCtx, a []*expr) (*expr, bool) { return boolOp(a, func(x, y bool) bool { return x || y }) },
	"Xor":            func(_ *inferCtx, a []*expr) (*expr, bool) { return boolOp(a, func(x, y bool) bool { return x != y }) },
	"Where": func(_ *inferCtx, a []*expr) (*expr, bool) {
		v, ok := a[0].constant()
		switch {
		case !ok:
			return nil, false
		case v != 0:
			return a[1], true
		}
		return a[2], true
	},
}

// compare decides a < b, a <= b or a == b when the difference of the two
// is provably signed; the result is 0 or 1.
func (c *inferCtx) compare(a, b *expr, op string) (*expr, bool) {
	d, ok := subExpr(b, a) // b - a
	if !ok {
		return nil, false
	}
	nd, ok := negExpr(d)
	if !ok {
		return nil, false
	}
	var yes, no bool
	switch op {
	case "<":
		yes, no = c.atLeast(d, 1), c.atLeast(nd, 0)
	case "<=":
		yes, no = c.atLeast(d, 0), c.atLeast(nd, 1)
	case "==":
		yes, no = d.isConst(0), c.atLeast(d, 1) || c.atLeast(nd, 1) || isConstNonZero(d)
	}
	switch {
	case yes:
		return constExpr(1), true
	case no:
		return constExpr(0), true
	}
	return nil, false
}

func isConstNonZero(e *expr) bool {
	v, ok := e.constant()
	return ok && v != 0
}

// extreme is the minimum or maximum of elements whose order is provable.
func (c *inferCtx) extreme(a []*expr, biggest bool) (*expr, bool) {
	best := a[0]
	for _, e := range a[1:] {
		lo, hi := best, e
		if biggest {
			lo, hi = e, best
		}
		le, ok := c.compare(lo, hi, "<=")
		if !ok {
			return nil, false
		}
		if le.isConst(1) == biggest {
			best = hi
		} else {
			best = lo
		}
	}
	return best, true
}

func boolOp(a []*expr, fn func(x, y bool) bool) (*expr, bool) {
	x, xok := a[0].constant()
	y, yok := a[1].constant()
	if !xok || !yok {
		return nil, false
	}
	if fn(x != 0, y != 0) {
		return constExpr(1), true
	}
	return constExpr(0), true
}

// mapValues sets out's contents elementwise from inputs that all have
// contents, broadcasting rank-0 and one-element inputs; an element fn
// cannot compute becomes a fresh atom.
func (c *inferCtx) mapValues(out *tinfo, fn func(args []*expr) (*expr, bool), ins ...*tinfo) {
	n := 1
	if out.shape == nil || len(out.shape) > 1 {
		return
	}
	if len(out.shape) == 1 {
		v, ok := out.shape[0].constant()
		if !ok || v > maxValues {
			return
		}
		n = int(v)
	}
	for _, t := range ins {
		if t.vals == nil || (len(t.vals) != 1 && len(t.vals) != n) {
			return
		}
	}
	vals := make([]*expr, n)
	args := make([]*expr, len(ins))
	for k := range vals {
		for j, t := range ins {
			args[j] = t.vals[min(k, len(t.vals)-1)]
		}
		e, ok := fn(args)
		if !ok {
			e = c.fresh()
		}
		vals[k] = e
	}
	out.vals = vals
}

// broadcastDim is numpy broadcasting of one pair of dims. Equal dims and 1
// against anything are exact; a constant k other than 1 against a symbol
// gives k (the symbol must be 1 or k); a size f with 1 <= f <= b against
// b gives b (f is b or 1, else the run fails); two other symbols give a
// fresh one, which the gradient code handles at run time.
func (c *inferCtx) broadcastDim(a, b *expr) (*expr, error) {
	switch {
	case a.key == b.key || b.isConst(1) || c.bounded(b, a):
		return a, nil
	case a.isConst(1) || c.bounded(a, b):
		return b, nil
	}
	av, aok := a.constant()
	bv, bok := b.constant()
	switch {
	case aok && bok:
		return nil, fmt.Errorf("dims %d and %d do not broadcast", av, bv)
	case aok:
		return a, nil
	case bok:
		return b, nil
	}
	return c.st.fresh(c.atLeast(a, 1) && c.atLeast(b, 1)), nil
}

// broadcast aligns shapes on the right and broadcasts each column.
func (c *inferCtx) broadcast(shapes ...[]*expr) ([]*expr, error) {
	rank := 0
	for _, s := range shapes {
		rank = max(rank, len(s))
	}
	out := make([]*expr, rank)
	for _, s := range shapes {
		off := rank - len(s)
		for i, d := range s {
			if out[off+i] == nil {
				out[off+i] = d
				continue
			}
			b, err := c.broadcastDim(out[off+i], d)
			if err != nil {
				return nil, fmt.Errorf("shapes %s do not broadcast: %v", shapesString(shapes), err)
			}
			out[off+i] = b
		}
	}
	return out, nil
}

func shapesString(shapes [][]*expr) string {
	s := ""
	for i, sh := range shapes {
		if i > 0 {
			s += " and "
		}
		s += exprsToDims(sh).String()
	}
	return s
}

// unifyDim merges two dims an op requires to be equal (Concat's other
// axes, MatMul's inner dims): constants win, and different constants are an
// error.
func unifyDim(a, b *expr) (*expr, error) {
	av, aok := a.constant()
	bv, bok := b.constant()
	switch {
	case aok && bok && av != bv:
		return nil, fmt.Errorf("dims %d and %d differ", av, bv)
	case bok && !aok:
		return b, nil
	}
	return a, nil
}

// transposedProduct gives M and N of op(A)·op(B) from A's and B's last two
// dims, each pair swapped where the transA or transB attribute is set (Gemm,
// MatMulBF16), after checking that the inner dims agree.
func (c *inferCtx) transposedProduct(as, bs []*expr) (m, n *expr, err error) {
	m, ka := as[len(as)-2], as[len(as)-1]
	if c.intAttr("transA", 0) != 0 {
		m, ka = ka, m
	}
	kb, n := bs[len(bs)-2], bs[len(bs)-1]
	if c.intAttr("transB", 0) != 0 {
		kb, n = n, kb
	}
	if _, err := unifyDim(ka, kb); err != nil {
		return nil, nil, fmt.Errorf("inner dims of %s and %s: %v", exprsToDims(as), exprsToDims(bs), err)
	}
	return m, n, nil
}

// inferMatMul is numpy matmul: vectors are promoted and their added axis
// dropped, batch dims broadcast.
func inferMatMul(c *inferCtx) error {
	a, b, err := c.rankedPair()
	if err != nil {
		return err
	}
	dtype, err := c.sameType(0, 1)
	if err != nil {
		return err
	}
	as, bs := a.shape, b.shape
	if len(as) == 0 || len(bs) == 0 {
		return fmt.Errorf("MatMul of a scalar (shapes %s and %s)", exprsToDims(as), exprsToDims(bs))
	}
	aVec, bVec := len(as) == 1, len(bs) == 1
	if aVec {
		as = []*expr{constExpr(1), as[0]}
	}
	if bVec {
		bs = []*expr{bs[0], constExpr(1)}
	}
	if _, err := unifyDim(as[len(as)-1], bs[len(bs)-2]); err != nil {
		return fmt.Errorf("inner dims of %s and %s: %v", exprsToDims(a.shape), exprsToDims(b.shape), err)
	}
	batch, err := c.broadcast(as[:len(as)-2], bs[:len(bs)-2])
	if err != nil {
		return err
	}
	out := append([]*expr{}, batch...)
	if !aVec {
		out = append(out, as[len(as)-2])
	}
	if !bVec {
		out = append(out, bs[len(bs)-1])
	}
	c.set(0, dtype, out)
	return nil
}

// inferGemm is alpha·A'·B' + beta·C with A', B' optionally transposed and C
// broadcast to the result.
func inferGemm(c *inferCtx) error {
	a, b, err := c.rankedPair()
	if err != nil {
		return err
	}
	if len(a.shape) != 2 || len(b.shape) != 2 {
		return fmt.Errorf("Gemm needs 2-D A and B, not %s and %s", exprsToDims(a.shape), exprsToDims(b.shape))
	}
	dtype, err := c.sameType(0, 1, 2)
	if err != nil {
		return err
	}
	m, n, err := c.transposedProduct(a.shape, b.shape)
	if err != nil {
		return err
	}
	out := []*expr{m, n}
	if bias := c.optional(2); bias != nil && bias.shape != nil {
		if len(bias.shape) > 2 {
			return fmt.Errorf("Gemm's C has rank %d", len(bias.shape))
		}
		if _, err := c.broadcast(out, bias.shape); err != nil {
			return err
		}
	}
	c.set(0, dtype, out)
	return nil
}

// inferReduce covers the Reduce* ops: axes from the attribute (before
// opset 13 for ReduceSum, 18 for the others) or the optional input,
// keepdims, noop_with_empty_axes. Sums, products and extremes of small
// integer vectors are propagated.
func inferReduce(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	op := c.n.GetOpType()
	keep := c.intAttr("keepdims", 1) != 0
	r := len(x.shape)
	var axes []int64
	known := true
	if c.opset >= 18 || (op == "ReduceSum" && c.opset >= 13) {
		if c.optional(1) != nil {
			axes, known = c.consts(1)
		}
	} else {
		axes, _ = c.intsAttr("axes")
	}
	if !known {
		switch n, ok := c.length(1); {
		case keep:
			out := make([]*expr, r)
			for i, d := range x.shape {
				out[i] = d
				if !d.isConst(1) {
					out[i] = c.fresh()
				}
			}
			c.set(0, x.dtype, out)
		case ok && n <= r:
			c.set(0, x.dtype, c.freshDims(r-n))
		default:
			c.set(0, x.dtype, nil)
		}
		return nil
	}
	if len(axes) == 0 {
		if c.intAttr("noop_with_empty_axes", 0) != 0 {
			out := c.set(0, x.dtype, x.shape)
			out.vals = x.vals
			return nil
		}
		for i := range r {
			axes = append(axes, int64(i))
		}
	}
	reduced := make([]bool, r)
	for _, a := range axes {
		i, err := c.axis("axis", a, r)
		if err != nil {
			return err
		}
		if reduced[i] {
			return fmt.Errorf("axis %d is reduced twice", a)
		}
		reduced[i] = true
	}
	out := []*expr{}
	for i, d := range x.shape {
		switch {
		case !reduced[i]:
			out = append(out, d)
		case keep:
			out = append(out, constExpr(1))
		}
	}
	t := c.set(0, x.dtype, out)
	if x.vals != nil && r <= 1 && len(x.vals) > 0 {
		fold := map[string]func(a, b *expr) (*expr, bool){
			"ReduceSum":  addExpr,
			"ReduceProd": mulExpr,
			"ReduceMax":  func(a, b *expr) (*expr, bool) { return c.extreme([]*expr{a, b}, true) },
			"ReduceMin":  func(a, b *expr) (*expr, bool) { return c.extreme([]*expr{a, b}, false) },
		}[op]
		if fold != nil {
			acc := x.vals[0]
			ok := true
			for _, e := range x.vals[1:] {
				if acc, ok = fold(acc, e); !ok {
					break
				}
			}
			if !ok {
				acc = c.fresh()
			}
			t.vals = []*expr{acc}
		}
	}
	return nil
}

// inferArgReduce covers ArgMax and ArgMin: int64 indices along one axis.
func inferArgReduce(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	a, err := c.axis("axis", c.intAttr("axis", 0), len(x.shape))
	if err != nil {
		return err
	}
	out := append([]*expr{}, x.shape[:a]...)
	if c.intAttr("keepdims", 1) != 0 {
		out = append(out, constExpr(1))
	}
	c.set(0, onnx.Int64, append(out, x.shape[a+1:]...))
	return nil
}

// inferLayerNorm gives Y the input's shape, and Mean and InvStdDev the
// input's shape with the normalised axes set to 1, in the stash type.
func inferLayerNorm(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	if _, err := c.input(1); err != nil {
		return err
	}
	dtype, err := c.sameType(0, 1, 2)
	if err != nil {
		return err
	}
	r := len(x.shape)
	a, err := c.axis("axis", c.intAttr("axis", -1), r)
	if err != nil {
		return err
	}
	c.set(0, dtype, x.shape)
	stats := append([]*expr{}, x.shape[:a]...)
	for range r - a {
		stats = append(stats, constExpr(1))
	}
	stash := onnx.DType(c.intAttr("stash_type", int64(onnx.Float)))
	c.set(1, stash, stats)
	c.set(2, stash, stats)
	return nil
}

// inferTopK gives values and int64 indices with K along the axis.
func inferTopK(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	a, err := c.axis("axis", c.intAttr("axis", -1), len(x.shape))
	if err != nil {
		return err
	}
	var k *expr
	if c.opset < 10 {
		k = constExpr(c.intAttr("k", 0))
	} else {
		kt, err := c.input(1)
		if err != nil {
			return err
		}
		k = c.fresh()
		if len(kt.vals) == 1 {
			k = kt.vals[0]
		}
	}
	if v, ok := k.constant(); ok {
		if d, dok := x.shape[a].constant(); v < 0 || (dok && v > d) {
			return fmt.Errorf("K = %d is out of range for a dim of %s", v, x.shape[a].key)
		}
	}
	out := append([]*expr{}, x.shape...)
	out[a] = k
	c.set(0, x.dtype, out)
	c.set(1, onnx.Int64, out)
	return nil
}

// inferNonZero gives [rank, n] int64 indices, n unknown.
func inferNonZero(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	c.set(0, onnx.Int64, []*expr{constExpr(int64(len(x.shape))), c.fresh()})
	return nil
}

// inferOneHot inserts the depth axis into the indices' shape; the type is
// the values'.
func inferOneHot(c *inferCtx) error {
	ind, err := c.ranked(0)
	if err != nil {
		return err
	}
	dt, err := c.input(1)
	if err != nil {
		return err
	}
	values, err := c.input(2)
	if err != nil {
		return err
	}
	r := len(ind.shape) + 1
	a, err := c.axis("axis", c.intAttr("axis", -1), r)
	if err != nil {
		return err
	}
	depth := c.fresh()
	if len(dt.vals) == 1 && c.atLeast(dt.vals[0], 1) {
		depth = dt.vals[0]
	}
	out := append([]*expr{}, ind.shape[:a]...)
	out = append(out, depth)
	c.set(0, values.dtype, append(out, ind.shape[a:]...))
	return nil
}

// inferScatter covers ScatterND, ScatterElements and Scatter: the data's
// type and shape.
func inferScatter(c *inferCtx) error {
	data, err := c.input(0)
	if err != nil {
		return err
	}
	for i := 1; i < 3; i++ {
		if _, err := c.input(i); err != nil {
			return err
		}
	}
	if _, err := c.sameType(0, 2); err != nil {
		return err
	}
	c.set(0, data.dtype, data.shape)
	return nil
}

// inferLoss covers SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss:
// a scalar for reduction mean or sum, the labels' shape for none; the
// optional log_prob output has the scores' shape.
func inferLoss(c *inferCtx) error {
	scores, err := c.ranked(0)
	if err != nil {
		return err
	}
	labels, err := c.ranked(1)
	if err != nil {
		return err
	}
	if len(scores.shape) < 2 || len(labels.shape) != len(scores.shape)-1 {
		return fmt.Errorf("scores %s and labels %s do not fit: labels are scores without axis 1", exprsToDims(scores.shape), exprsToDims(labels.shape))
	}
	reduction := "mean"
	if a := c.attr("reduction"); a != nil {
		reduction = string(a.GetS())
	}
	switch reduction {
	case "mean", "sum":
		c.set(0, scores.dtype, []*expr{})
	case "none":
		c.set(0, scores.dtype, labels.shape)
	default:
		return fmt.Errorf("unknown reduction %q", reduction)
	}
	if c.n.GetOpType() == "SoftmaxCrossEntropyLoss" {
		c.set(1, scores.dtype, scores.shape)
	}
	return nil
}

// inferCast sets the target type (the to attribute, or CastLike's second
// input); integer contents follow.
func inferCast(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	var to onnx.DType
	if c.n.GetOpType() == "CastLike" {
		like, err := c.input(1)
		if err != nil {
			return err
		}
		to = like.dtype
	} else {
		if c.attr("to") == nil {
			return fmt.Errorf("Cast has no 'to' attribute")
		}
		to = onnx.DType(c.intAttr("to", 0))
		if !to.Known() {
			return fmt.Errorf("Cast to unknown element type %d", int32(to))
		}
	}
	out := c.set(0, to, x.shape)
	if isIntegral(x.dtype) && isIntegral(to) {
		c.mapValues(out, func(a []*expr) (*expr, bool) { return c.castValue(a[0], to) }, x)
	}
	return nil
}

// castValue converts one integer element: constants wrap as the target
// type does, symbolic values are kept by the 32- and 64-bit signed types
// (sizes fit in them), and a cast to bool is decided where the value is
// provably positive.
func (c *inferCtx) castValue(e *expr, to onnx.DType) (*expr, bool) {
	v, ok := e.constant()
	if !ok {
		switch {
		case to == onnx.Bool && c.atLeast(e, 1):
			return constExpr(1), true
		case to == onnx.Int64 || to == onnx.Int32:
			return e, true
		}
		return nil, false
	}
	switch to {
	case onnx.Bool:
		if v != 0 {
			v = 1
		}
	case onnx.Int8:
		v = int64(int8(v))
	case onnx.Uint8:
		v = int64(uint8(v))
	case onnx.Int16:
		v = int64(int16(v))
	case onnx.Uint16:
		v = int64(uint16(v))
	case onnx.Int32:
		v = int64(int32(v))
	case onnx.Uint32:
		v = int64(uint32(v))
	case onnx.Uint64:
		if v < 0 {
			return nil, false
		}
	}
	return constExpr(v), true
}

// inferEinsum follows the equation: a letter's size comes from the operands
// that use it (broadcast where one is 1), "..." dims broadcast together,
// and without "->" the output is the ellipsis followed by the letters used
// once, in alphabetical order.
func inferEinsum(c *inferCtx) error {
	a := c.attr("equation")
	if a == nil {
		return fmt.Errorf("Einsum has no 'equation' attribute")
	}
	eq := strings.ReplaceAll(string(a.GetS()), " ", "")
	lhs, rhs, explicit := strings.Cut(eq, "->")
	terms := strings.Split(lhs, ",")
	if len(terms) != len(c.ins) {
		return fmt.Errorf("equation %q has %d operands, the node %d inputs", eq, len(terms), len(c.ins))
	}
	idx := make([]int, len(terms))
	letters := map[byte]*expr{}
	count := map[byte]int{}
	var ell []*expr
	hasEll := false
	for k, term := range terms {
		idx[k] = k
		t, err := c.ranked(k)
		if err != nil {
			return err
		}
		labels, at, err := parseEinsumTerm(term)
		if err != nil {
			return fmt.Errorf("equation %q: %v", eq, err)
		}
		nEll := len(t.shape) - len(labels)
		if nEll < 0 || at < 0 && nEll != 0 {
			return fmt.Errorf("equation %q: operand %d (%s) does not have rank %d", eq, k, term, len(t.shape))
		}
		for i, l := range labels {
			d := t.shape[i]
			if at >= 0 && i >= at {
				d = t.shape[i+nEll]
			}
			if prev := letters[l]; prev != nil {
				if d, err = c.broadcastDim(prev, d); err != nil {
					return fmt.Errorf("equation %q: letter %c: %v", eq, l, err)
				}
			}
			letters[l] = d
			count[l]++
		}
		if at >= 0 {
			hasEll = true
			if ell, err = c.broadcast(ell, t.shape[at:at+nEll]); err != nil {
				return err
			}
		}
	}
	dtype, err := c.sameType(idx...)
	if err != nil {
		return err
	}
	var outLabels []byte
	outAt := -1
	if explicit {
		if outLabels, outAt, err = parseEinsumTerm(rhs); err != nil {
			return fmt.Errorf("equation %q: %v", eq, err)
		}
		seen := map[byte]bool{}
		for _, l := range outLabels {
			if letters[l] == nil || seen[l] {
				return fmt.Errorf("equation %q: output letter %c is unused or repeated", eq, l)
			}
			seen[l] = true
		}
		if outAt >= 0 && !hasEll {
			ell = []*expr{}
		}
	} else {
		if hasEll {
			outAt = 0
		}
		for l, n := range count {
			if n == 1 {
				outLabels = append(outLabels, l)
			}
		}
		slices.Sort(outLabels)
	}
	var shape []*expr
	for i, l := range outLabels {
		if i == outAt {
			shape = append(shape, ell...)
		}
		shape = append(shape, letters[l])
	}
	if outAt >= len(outLabels) {
		shape = append(shape, ell...)
	}
	if shape == nil {
		shape = []*expr{}
	}
	c.set(0, dtype, shape)
	return nil
}

// parseEinsumTerm splits one operand of an equation into its letters and
// the position of "..." among them (-1 without one).
func parseEinsumTerm(term string) (labels []byte, at int, err error) {
	at = -1
	for i := 0; i < len(term); i++ {
		ch := term[i]
		switch {
		case ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z':
			labels = append(labels, ch)
		case strings.HasPrefix(term[i:], "...") && at < 0:
			at = len(labels)
			i += 2
		default:
			return nil, 0, fmt.Errorf("term %q is not letters with at most one \"...\"", term)
		}
	}
	return labels, at, nil
}
