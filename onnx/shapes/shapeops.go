package shapes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/migu-ml/migu/onnx"
)

func init() {
	registerShape(inferReshape, "Reshape")
	registerShape(inferTranspose, "Transpose")
	registerShape(inferUnsqueeze, "Unsqueeze")
	registerShape(inferSqueeze, "Squeeze")
	registerShape(inferFlatten, "Flatten")
	registerShape(inferConcat, "Concat")
	registerShape(inferSplit, "Split")
	registerShape(inferSlice, "Slice")
	registerShape(inferGather, "Gather", "GatherElements", "GatherND")
	registerShape(inferExpand, "Expand")
	registerShape(inferTile, "Tile")
	registerShape(inferPad, "Pad")
	registerShape(inferConstant, "Constant")
	registerShape(inferConstantOfShape, "ConstantOfShape")
	registerShape(inferShapeOp, "Shape", "Size")
	registerShape(inferRange, "Range")
}

// product multiplies dims; it fails when the polynomial grows too large.
func product(dims []*expr) (*expr, bool) {
	p := constExpr(1)
	for _, d := range dims {
		var ok bool
		if p, ok = mulExpr(p, d); !ok {
			return nil, false
		}
	}
	return p, true
}

// concatDims joins dim lists into a new, never nil, shape (nil would mean
// an unknown rank).
func concatDims(parts ...[]*expr) []*expr {
	out := []*expr{}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// productOrFresh is product, or a fresh size when that fails.
func (c *inferCtx) productOrFresh(dims []*expr) *expr {
	if p, ok := product(dims); ok {
		return p
	}
	positive := true
	for _, d := range dims {
		positive = positive && c.atLeast(d, 1)
	}
	return c.st.fresh(positive)
}

// shapeInput reads a shape-like input (Reshape's shape, Expand's shape,
// ConstantOfShape's input): its contents, or only its length when the
// contents are unknown (vals nil, n >= 0), or nothing (n < 0).
func (c *inferCtx) shapeInput(i int) (vals []*expr, n int, err error) {
	t, err := c.input(i)
	if err != nil {
		return nil, -1, err
	}
	if t.shape != nil && len(t.shape) != 1 {
		return nil, -1, fmt.Errorf("input %d (%q) must be 1-D, not %s", i, c.n.Input[i], exprsToDims(t.shape))
	}
	if t.vals != nil {
		return t.vals, len(t.vals), nil
	}
	if l, ok := c.length(i); ok {
		return nil, l, nil
	}
	return nil, -1, nil
}

// inferReshape resolves 0 (copy the input's dim, unless allowzero) and -1
// (the quotient of the element counts, exact on symbolic products), e.g.
// [batch, seq, 64] to [0, 0, 4, 16] or to [-1, 64] gives [batch, seq, 4,
// 16] or [batch*seq, 64].
func inferReshape(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	var spec []*expr
	n := -1
	if c.opset < 5 {
		ints, ok := c.intsAttr("shape")
		if !ok {
			return fmt.Errorf("Reshape has no 'shape' attribute")
		}
		for _, v := range ints {
			spec = append(spec, constExpr(v))
		}
		n = len(spec)
	} else if spec, n, err = c.shapeInput(1); err != nil {
		return err
	}
	var out *tinfo
	switch {
	case spec != nil:
		shape, err := c.reshapeDims(x, spec)
		if err != nil {
			return err
		}
		out = c.set(0, x.dtype, shape)
	case n >= 0:
		out = c.set(0, x.dtype, c.freshDims(n))
	default:
		out = c.set(0, x.dtype, nil)
	}
	out.vals = x.vals
	return nil
}

func (c *inferCtx) reshapeDims(x *tinfo, spec []*expr) ([]*expr, error) {
	allowZero := c.intAttr("allowzero", 0) != 0
	out := make([]*expr, len(spec))
	inferred, resolved := -1, true
	for i, e := range spec {
		v, ok := e.constant()
		switch {
		case !ok:
			if c.atLeast(e, 1) || allowZero && c.atLeast(e, 0) {
				out[i] = e
			} else {
				out[i], resolved = c.fresh(), false
			}
		case v == -1:
			if inferred >= 0 {
				return nil, fmt.Errorf("shape %s has more than one -1", exprsToDims(spec))
			}
			inferred = i
		case v < -1:
			return nil, fmt.Errorf("shape %s has a negative dim", exprsToDims(spec))
		case v == 0 && !allowZero:
			switch {
			case x.shape == nil:
				out[i], resolved = c.fresh(), false
			case i >= len(x.shape):
				return nil, fmt.Errorf("shape %s copies dim %d (0) of an input of rank %d", exprsToDims(spec), i, len(x.shape))
			default:
				out[i] = x.shape[i]
			}
		default:
			out[i] = e
		}
	}
	if inferred < 0 {
		if x.shape != nil {
			in, iok := product(x.shape)
			o, ook := product(out)
			iv, ic := constValue(in, iok)
			ov, oc := constValue(o, ook)
			if ic && oc && iv != ov {
				return nil, fmt.Errorf("cannot reshape %s (%d elements) to %s (%d elements)", exprsToDims(x.shape), iv, exprsToDims(out), ov)
			}
		}
		return out, nil
	}
	rest := concatDims(out[:inferred], out[inferred+1:])
	out[inferred] = c.fresh()
	if !resolved || x.shape == nil {
		return out, nil
	}
	in, iok := product(x.shape)
	known, kok := product(rest)
	if !iok || !kok {
		return out, nil
	}
	iv, ic := in.constant()
	kv, kc := known.constant()
	if ic && kc {
		if kv == 0 || iv%kv != 0 {
			return nil, fmt.Errorf("cannot reshape %s (%d elements) to %s", exprsToDims(x.shape), iv, exprsToDims(spec))
		}
		out[inferred] = constExpr(iv / kv)
		return out, nil
	}
	if q, ok := divExpr(in, known); ok {
		out[inferred] = q
	}
	return out, nil
}

func constValue(e *expr, ok bool) (int64, bool) {
	if !ok {
		return 0, false
	}
	return e.constant()
}

// inferTranspose permutes dims by perm (default: reversed).
func inferTranspose(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	r := len(x.shape)
	perm, ok := c.intsAttr("perm")
	if !ok {
		for i := r - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	if len(perm) != r {
		return fmt.Errorf("perm %v has %d entries for rank %d", perm, len(perm), r)
	}
	if !isPerm(perm, r) {
		return fmt.Errorf("perm %v is not a permutation of 0..%d", perm, r-1)
	}
	c.set(0, x.dtype, permuted(x.shape, perm))
	return nil
}

// permuted is Transpose's shape: axis i of the result is axis p[i] of s.
func permuted(s []*expr, p []int64) []*expr {
	out := make([]*expr, len(p))
	for i, a := range p {
		out[i] = s[a]
	}
	return out
}

// isPerm tells whether p is a permutation of 0 … n-1.
func isPerm(p []int64, n int) bool {
	if len(p) != n {
		return false
	}
	seen := make([]bool, n)
	for _, a := range p {
		if a < 0 || a >= int64(n) || seen[a] {
			return false
		}
		seen[a] = true
	}
	return true
}

// axesInput reads axes from the attribute (before opset 13) or input 1:
// present reports whether axes were given at all, n is their count when
// only that is known (axes nil).
func (c *inferCtx) axesInput() (axes []int64, n int, present bool) {
	if c.opset < 13 {
		axes, present = c.intsAttr("axes")
		return axes, len(axes), present
	}
	if c.optional(1) == nil {
		return nil, 0, false
	}
	if axes, ok := c.consts(1); ok {
		return axes, len(axes), true
	}
	if l, ok := c.length(1); ok {
		return nil, l, true
	}
	return nil, -1, true
}

// inferUnsqueeze inserts 1s at the axes (relative to the output's rank).
func inferUnsqueeze(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	axes, n, present := c.axesInput()
	if !present {
		return fmt.Errorf("Unsqueeze needs axes")
	}
	r := len(x.shape) + n
	var out *tinfo
	switch {
	case axes != nil || n == 0:
		inserted := make([]bool, r)
		for _, a := range axes {
			i, err := c.axis("axis", a, r)
			if err != nil {
				return err
			}
			if inserted[i] {
				return fmt.Errorf("axis %d is given twice", a)
			}
			inserted[i] = true
		}
		shape := make([]*expr, 0, r)
		k := 0
		for i := range r {
			if inserted[i] {
				shape = append(shape, constExpr(1))
			} else {
				shape = append(shape, x.shape[k])
				k++
			}
		}
		out = c.set(0, x.dtype, shape)
	case n > 0:
		out = c.set(0, x.dtype, c.freshDims(r))
	default:
		out = c.set(0, x.dtype, nil)
	}
	out.vals = x.vals
	return nil
}

// inferSqueeze removes the axes, or without axes every dim that is 1; a
// symbolic dim that might be 1 then leaves the rank unknown.
func inferSqueeze(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	axes, n, present := c.axesInput()
	r := len(x.shape)
	var shape []*expr
	switch {
	case !present || (axes != nil && len(axes) == 0):
		shape = []*expr{}
		for _, d := range x.shape {
			switch {
			case d.isConst(1):
			case c.atLeast(d, 2) || d.isConst(0):
				shape = append(shape, d)
			default:
				shape = nil
			}
			if shape == nil {
				break
			}
		}
	case axes != nil:
		drop := make([]bool, r)
		for _, a := range axes {
			i, err := c.axis("axis", a, r)
			if err != nil {
				return err
			}
			if drop[i] {
				return fmt.Errorf("axis %d is given twice", a)
			}
			if v, ok := x.shape[i].constant(); ok && v != 1 {
				return fmt.Errorf("cannot squeeze axis %d of size %d", a, v)
			}
			drop[i] = true
		}
		shape = []*expr{}
		for i, d := range x.shape {
			if !drop[i] {
				shape = append(shape, d)
			}
		}
	case n >= 0 && n <= r:
		shape = c.freshDims(r - n)
	}
	out := c.set(0, x.dtype, shape)
	out.vals = x.vals
	return nil
}

// inferFlatten gives [product of dims before axis, product of the rest].
func inferFlatten(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	r := len(x.shape)
	a := c.intAttr("axis", 1)
	if a < -int64(r) || a > int64(r) {
		return fmt.Errorf("axis %d is out of range for rank %d", a, r)
	}
	if a < 0 {
		a += int64(r)
	}
	c.set(0, x.dtype, []*expr{c.productOrFresh(x.shape[:a]), c.productOrFresh(x.shape[a:])})
	return nil
}

// inferConcat sums the axis and unifies the other dims; contents of small
// integer vectors are concatenated.
func inferConcat(c *inferCtx) error {
	if c.attr("axis") == nil {
		return fmt.Errorf("Concat has no 'axis' attribute")
	}
	idx := make([]int, len(c.ins))
	for i := range c.ins {
		if _, err := c.input(i); err != nil {
			return err
		}
		idx[i] = i
	}
	if len(idx) == 0 {
		return fmt.Errorf("Concat needs inputs")
	}
	dtype, err := c.sameType(idx...)
	if err != nil {
		return err
	}
	first := c.ins[0]
	for _, t := range c.ins {
		if t.shape == nil {
			c.set(0, dtype, nil)
			return nil
		}
		if len(t.shape) != len(first.shape) {
			return fmt.Errorf("inputs have ranks %d and %d", len(first.shape), len(t.shape))
		}
	}
	a, err := c.axis("axis", c.intAttr("axis", 0), len(first.shape))
	if err != nil {
		return err
	}
	shape := slices.Clone(first.shape)
	vals, allVals := []*expr{}, true
	for k, t := range c.ins {
		vals = append(vals, t.vals...)
		allVals = allVals && t.vals != nil
		if k == 0 {
			continue
		}
		for i, d := range t.shape {
			if i == a {
				sum, ok := addExpr(shape[i], d)
				if !ok {
					sum = c.fresh()
				}
				shape[i] = sum
				continue
			}
			if shape[i], err = unifyDim(shape[i], d); err != nil {
				return fmt.Errorf("dim %d of input %d: %v", i, k, err)
			}
		}
	}
	out := c.set(0, dtype, shape)
	if allVals {
		out.vals = vals
	}
	return nil
}

// inferSplit cuts the axis by the split sizes (input from opset 13, else
// attribute) or into equal parts (num_outputs from opset 18, else the
// number of outputs).
func inferSplit(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	a, err := c.axis("axis", c.intAttr("axis", 0), len(x.shape))
	if err != nil {
		return err
	}
	n := len(c.n.Output)
	dim := x.shape[a]
	var sizes []*expr
	switch {
	case c.opset >= 13 && c.optional(1) != nil:
		if v, ok := c.consts(1); ok {
			sizes = constExprs(v)
		} else {
			sizes = c.freshDims(n)
		}
	case c.opset < 13 && c.attr("split") != nil:
		v, _ := c.intsAttr("split")
		sizes = constExprs(v)
	default:
		if k := c.intAttr("num_outputs", 0); c.attr("num_outputs") != nil && k != int64(n) {
			return fmt.Errorf("num_outputs is %d but the node has %d outputs", k, n)
		}
		if n == 0 {
			return fmt.Errorf("Split has no outputs")
		}
		sizes = c.equalSplit(dim, n)
		if sizes == nil {
			return fmt.Errorf("dim %s does not split into %d equal parts", dim.key, n)
		}
	}
	if len(sizes) != n {
		return fmt.Errorf("%d split sizes for %d outputs", len(sizes), n)
	}
	sum := constExpr(0)
	for _, size := range sizes {
		if v, ok := size.constant(); ok && v < 0 {
			return fmt.Errorf("negative split size %d", v)
		}
		if sum != nil {
			if next, ok := addExpr(sum, size); ok {
				sum = next
			} else {
				sum = nil
			}
		}
	}
	if sum != nil {
		sv, sok := sum.constant()
		dv, dok := dim.constant()
		if sok && dok && sv != dv {
			return fmt.Errorf("split sizes add up to %d, not %d", sv, dv)
		}
	}
	var rest []*expr
	if len(x.shape) == 1 {
		rest = x.vals
	}
	for i, size := range sizes {
		shape := slices.Clone(x.shape)
		shape[a] = size
		out := c.set(i, x.dtype, shape)
		if v, ok := size.constant(); ok && rest != nil && v <= int64(len(rest)) {
			out.vals, rest = rest[:v], rest[v:]
		} else {
			rest = nil
		}
	}
	return nil
}

// equalSplit cuts dim into n parts: exact division, or for constants the
// opset-18 rule (ceil-sized parts, a smaller last one); nil when a constant
// cannot be cut.
func (c *inferCtx) equalSplit(dim *expr, n int) []*expr {
	sizes := make([]*expr, n)
	if d, ok := dim.constant(); ok {
		chunk := d / int64(n)
		last := chunk
		if d%int64(n) != 0 {
			if c.opset < 18 || c.attr("num_outputs") == nil {
				return nil
			}
			chunk = (d + int64(n) - 1) / int64(n)
			last = d - chunk*int64(n-1)
			if last < 0 {
				return nil
			}
		}
		for i := range sizes {
			sizes[i] = constExpr(chunk)
		}
		sizes[n-1] = constExpr(last)
		return sizes
	}
	q, ok := divExpr(dim, constExpr(int64(n)))
	for i := range sizes {
		if ok {
			sizes[i] = q
		} else {
			sizes[i] = c.fresh()
		}
	}
	return sizes
}

func constExprs(v []int64) []*expr {
	out := make([]*expr, len(v))
	for i, x := range v {
		out[i] = constExpr(x)
	}
	return out
}

// bigIndex is treated as "past any dim" by Slice: exporters write INT64_MAX
// or INT32_MAX for an open end, and no dim reaches 2³¹ - 1.
const bigIndex = 1<<31 - 1

// inferSlice slices each axis by constant or propagated starts, ends and
// steps; an axis whose bounds are unknown gets a fresh size. Small integer
// vectors are sliced too.
func inferSlice(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	r := len(x.shape)
	var starts, ends, axes, steps []*expr
	axesKnown := true
	nAxes := -1
	if c.opset < 10 {
		s, sok := c.intsAttr("starts")
		e, eok := c.intsAttr("ends")
		if !sok || !eok {
			return fmt.Errorf("Slice needs 'starts' and 'ends' attributes")
		}
		starts, ends, nAxes = constExprs(s), constExprs(e), len(s)
		if a, ok := c.intsAttr("axes"); ok {
			axes = constExprs(a)
		}
	} else {
		for i := 1; i <= 2; i++ {
			if _, err := c.input(i); err != nil {
				return err
			}
		}
		starts, ends = c.ins[1].vals, c.ins[2].vals
		if l, ok := c.length(1); ok {
			nAxes = l
		}
		if t := c.optional(3); t != nil {
			axes, axesKnown = t.vals, t.vals != nil
		}
		if t := c.optional(4); t != nil {
			steps = t.vals
			if steps == nil {
				starts = nil
			}
		}
	}
	if axesKnown && axes == nil && nAxes >= 0 {
		for i := range nAxes {
			axes = append(axes, constExpr(int64(i)))
		}
	}
	if axes == nil {
		c.set(0, x.dtype, c.freshDims(r))
		return nil
	}
	sliced := make([]bool, r)
	axisIdx := make([]int, len(axes))
	for k, e := range axes {
		v, ok := e.constant()
		if !ok {
			c.set(0, x.dtype, c.freshDims(r))
			return nil
		}
		i, err := c.axis("axis", v, r)
		if err != nil {
			return err
		}
		if sliced[i] {
			return fmt.Errorf("axis %d is sliced twice", v)
		}
		sliced[i], axisIdx[k] = true, i
	}
	shape := slices.Clone(x.shape)
	if starts == nil || ends == nil {
		for _, i := range axisIdx {
			shape[i] = c.fresh()
		}
		c.set(0, x.dtype, shape)
		return nil
	}
	if len(starts) != len(axes) || len(ends) != len(axes) || (steps != nil && len(steps) != len(axes)) {
		return fmt.Errorf("starts, ends, axes and steps have different lengths")
	}
	var vals []*expr
	for k, i := range axisIdx {
		step := constExpr(1)
		if steps != nil {
			step = steps[k]
		}
		sv, ok := step.constant()
		switch {
		case !ok:
			shape[i] = c.fresh()
			continue
		case sv == 0:
			return fmt.Errorf("slice step is 0")
		}
		shape[i] = c.sliceLen(x.shape[i], starts[k], ends[k], sv)
		if r == 1 && x.vals != nil {
			vals = sliceValues(x.vals, starts[k], ends[k], sv)
		}
	}
	out := c.set(0, x.dtype, shape)
	out.vals = vals
	return nil
}

// sliceLen is the length of dim[start:end:step] (ONNX clamping rules);
// symbolic bounds are resolved where their position relative to 0 and to
// dim is provable.
func (c *inferCtx) sliceLen(dim, start, end *expr, step int64) *expr {
	d, dok := dim.constant()
	s, sok := start.constant()
	e, eok := end.constant()
	if dok && sok && eok {
		return constExpr(constSliceLen(d, s, e, step))
	}
	if step < 0 {
		if step == -1 && sok && eok && (s == -1 || s >= bigIndex) && e <= -bigIndex {
			return dim
		}
		return c.fresh()
	}
	lo, hi := c.clampIndex(start, dim), c.clampIndex(end, dim)
	if lo != nil && lo.isConst(0) && hi == nil && step == 1 && c.atLeast(end, 0) {
		// A prefix of length min(end, dim): at most either, which lets
		// broadcasting against either resolve (see broadcastDim).
		return c.boundedFresh(c.atLeast(end, 1) && c.atLeast(dim, 1), end, dim)
	}
	if lo == nil || hi == nil {
		return c.fresh()
	}
	diff, ok := subExpr(hi, lo)
	if !ok {
		return c.fresh()
	}
	if neg, ok := negExpr(diff); ok && !c.atLeast(diff, 0) && c.atLeast(neg, 0) {
		return constExpr(0)
	}
	if !c.atLeast(diff, 0) {
		return c.fresh()
	}
	if v, ok := diff.constant(); ok {
		return constExpr(ceilDiv(v, uint64(step)))
	}
	if q, ok := divExpr(diff, constExpr(step)); ok {
		return q
	}
	return c.fresh()
}

// clampIndex is a slice bound for a positive step, made absolute and
// clamped to [0, dim]; nil when that cannot be decided symbolically.
func (c *inferCtx) clampIndex(x, dim *expr) *expr {
	if v, ok := x.constant(); ok {
		switch {
		case v >= bigIndex:
			return dim
		case v <= -bigIndex:
			return constExpr(0)
		case v == 0:
			return x
		}
	}
	if x.key == dim.key {
		return dim
	}
	neg, ok := negExpr(x)
	if !ok {
		return nil
	}
	if c.atLeast(neg, 1) {
		abs, ok := addExpr(dim, x)
		if !ok {
			return nil
		}
		if c.atLeast(abs, 0) {
			return abs
		}
		if nabs, ok := negExpr(abs); ok && c.atLeast(nabs, 0) {
			return constExpr(0)
		}
		return nil
	}
	below, ok1 := subExpr(dim, x)
	above, ok2 := subExpr(x, dim)
	switch {
	case !ok1 || !ok2 || !c.atLeast(x, 0):
		return nil
	case c.atLeast(below, 0):
		return x
	case c.atLeast(above, 0):
		return dim
	}
	return nil
}

// constSliceLen applies ONNX's Slice clamping to constants.
func constSliceLen(d, s, e, step int64) int64 {
	if s < 0 {
		s += d
	}
	if e < 0 {
		e += d
	}
	if step > 0 {
		s, e = min(max(s, 0), d), min(max(e, 0), d)
		return ceilDiv(e-s, uint64(step))
	}
	s, e = min(max(s, 0), d-1), min(max(e, -1), d-1)
	return ceilDiv(s-e, absUint(step))
}

// ceilDiv is ceil(a/b) for b > 0, and 0 when a <= 0.
func ceilDiv(a int64, b uint64) int64 {
	if a <= 0 {
		return 0
	}
	return int64(uint64(a-1)/b + 1)
}

// sliceValues slices a propagated vector with constant bounds.
func sliceValues(vals []*expr, start, end *expr, step int64) []*expr {
	s, sok := start.constant()
	e, eok := end.constant()
	if !sok || !eok {
		return nil
	}
	d := int64(len(vals))
	n := constSliceLen(d, s, e, step)
	if s < 0 {
		s += d
	}
	if step > 0 {
		s = min(max(s, 0), d)
	} else {
		s = min(max(s, 0), d-1)
	}
	out := make([]*expr, 0, n)
	for i := int64(0); i < n; i++ {
		out = append(out, vals[s+i*step])
	}
	return out
}

// inferGather covers Gather (indices' shape replaces the axis; scalar
// indices drop it), GatherElements (the indices' shape) and GatherND.
// Gathering from a propagated vector gives propagated contents.
func inferGather(c *inferCtx) error {
	data, err := c.ranked(0)
	if err != nil {
		return err
	}
	ind, err := c.ranked(1)
	if err != nil {
		return err
	}
	if ind.dtype != onnx.Int64 && ind.dtype != onnx.Int32 && ind.dtype != onnx.Undefined {
		return fmt.Errorf("indices are %v, not int32 or int64", ind.dtype)
	}
	r := len(data.shape)
	switch c.n.GetOpType() {
	case "GatherElements":
		if len(ind.shape) != r {
			return fmt.Errorf("data %s and indices %s have different ranks", exprsToDims(data.shape), exprsToDims(ind.shape))
		}
		if _, err := c.axis("axis", c.intAttr("axis", 0), r); err != nil {
			return err
		}
		c.set(0, data.dtype, ind.shape)
		return nil
	case "GatherND":
		return c.gatherND(data, ind)
	}
	a, err := c.axis("axis", c.intAttr("axis", 0), r)
	if err != nil {
		return err
	}
	shape := concatDims(data.shape[:a], ind.shape, data.shape[a+1:])
	out := c.set(0, data.dtype, shape)
	idx, ok := c.consts(1)
	if !ok {
		return nil
	}
	n, nok := data.shape[a].constant()
	for _, i := range idx {
		if nok && (i < -n || i >= n) {
			return fmt.Errorf("index %d is out of range for a dim of %d", i, n)
		}
	}
	if r == 1 && data.vals != nil {
		vals := make([]*expr, len(idx))
		for k, i := range idx {
			if i < 0 {
				i += n
			}
			vals[k] = data.vals[i]
		}
		out.vals = vals
	}
	return nil
}

func (c *inferCtx) gatherND(data, ind *tinfo) error {
	b := c.intAttr("batch_dims", 0)
	q := len(ind.shape)
	if q < 1 || b < 0 || b >= int64(q) || b >= int64(len(data.shape)) {
		return fmt.Errorf("batch_dims %d does not fit data %s and indices %s", b, exprsToDims(data.shape), exprsToDims(ind.shape))
	}
	last, ok := ind.shape[q-1].constant()
	if !ok {
		c.set(0, data.dtype, nil)
		return nil
	}
	if last < 1 || b+last > int64(len(data.shape)) {
		return fmt.Errorf("indices of depth %d do not fit data %s", last, exprsToDims(data.shape))
	}
	c.set(0, data.dtype, concatDims(ind.shape[:q-1], data.shape[b+last:]))
	return nil
}

// inferExpand broadcasts the input against the requested shape.
func inferExpand(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	spec, n, err := c.shapeInput(1)
	if err != nil {
		return err
	}
	var out *tinfo
	switch {
	case x.shape == nil || (spec == nil && n < 0):
		out = c.set(0, x.dtype, nil)
	case spec == nil:
		out = c.set(0, x.dtype, c.freshDims(max(n, len(x.shape))))
	default:
		shape, err := c.broadcast(x.shape, spec)
		if err != nil {
			return err
		}
		out = c.set(0, x.dtype, shape)
	}
	c.mapValues(out, func(a []*expr) (*expr, bool) { return a[0], true }, x)
	return nil
}

// inferTile multiplies each dim by its repeat count.
func inferTile(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	reps, n, err := c.shapeInput(1)
	if err != nil {
		return err
	}
	r := len(x.shape)
	if n >= 0 && n != r {
		return fmt.Errorf("%d repeats for rank %d", n, r)
	}
	if reps == nil {
		c.set(0, x.dtype, c.freshDims(r))
		return nil
	}
	shape := make([]*expr, r)
	for i, d := range x.shape {
		if v, ok := reps[i].constant(); ok && v < 0 {
			return fmt.Errorf("negative repeat count %d", v)
		}
		p, ok := mulExpr(d, reps[i])
		if !ok {
			p = c.fresh()
		}
		shape[i] = p
	}
	c.set(0, x.dtype, shape)
	return nil
}

// inferPad adds the begin and end pads (input from opset 11, else the
// attribute; axes from opset 18) to each dim.
func inferPad(c *inferCtx) error {
	x, err := c.ranked(0)
	if err != nil {
		return err
	}
	r := len(x.shape)
	var pads []*expr
	if c.opset < 11 {
		v, _ := c.intsAttr("pads")
		pads = constExprs(v)
	} else if t, err := c.input(1); err != nil {
		return err
	} else {
		pads = t.vals
	}
	axes := make([]int, r)
	for i := range axes {
		axes[i] = i
	}
	if c.opset >= 18 && c.optional(3) != nil {
		v, ok := c.consts(3)
		if !ok {
			c.set(0, x.dtype, c.freshDims(r))
			return nil
		}
		axes = axes[:0]
		for _, a := range v {
			i, err := c.axis("axis", a, r)
			if err != nil {
				return err
			}
			axes = append(axes, i)
		}
	}
	if pads == nil {
		c.set(0, x.dtype, c.freshDims(r))
		return nil
	}
	if len(pads) != 2*len(axes) {
		return fmt.Errorf("%d pads for %d axes", len(pads), len(axes))
	}
	shape := slices.Clone(x.shape)
	for k, i := range axes {
		s, ok := addExpr(shape[i], pads[k])
		if ok {
			s, ok = addExpr(s, pads[k+len(axes)])
		}
		if !ok {
			s = c.fresh()
		}
		if v, ok := s.constant(); ok && v < 0 {
			return fmt.Errorf("padding makes axis %d negative (%d)", i, v)
		}
		shape[i] = s
	}
	c.set(0, x.dtype, shape)
	return nil
}

// inferConstant reads whichever value_* attribute the node has.
func inferConstant(c *inferCtx) error {
	var found []string
	for _, a := range c.n.Attribute {
		if strings.HasPrefix(a.GetName(), "value") || a.GetName() == "sparse_value" {
			found = append(found, a.GetName())
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("Constant needs exactly one value attribute, has %v", found)
	}
	a := c.attr(found[0])
	switch found[0] {
	case "value":
		if a.T == nil {
			return fmt.Errorf("Constant's value is not a tensor")
		}
		t, err := c.st.tensorInfo(a.T, true)
		if err != nil {
			return err
		}
		c.set(0, t.dtype, t.shape).vals = t.vals
	case "sparse_value":
		sp := a.GetSparseTensor()
		shape, err := constShape(sp.GetDims())
		if err != nil {
			return err
		}
		c.set(0, onnx.DType(sp.GetValues().GetDataType()), shape)
	case "value_float":
		c.set(0, onnx.Float, []*expr{})
	case "value_floats":
		c.set(0, onnx.Float, []*expr{constExpr(int64(len(a.GetFloats())))})
	case "value_int":
		c.set(0, onnx.Int64, []*expr{}).vals = []*expr{constExpr(a.GetI())}
	case "value_ints":
		c.set(0, onnx.Int64, []*expr{constExpr(int64(len(a.GetInts())))}).vals = constExprs(a.GetInts())
	case "value_string":
		c.set(0, onnx.String, []*expr{})
	case "value_strings":
		c.set(0, onnx.String, []*expr{constExpr(int64(len(a.GetStrings())))})
	default:
		return fmt.Errorf("unknown Constant attribute %q", found[0])
	}
	return nil
}

// inferConstantOfShape makes a tensor of the given shape filled with the
// value attribute (float 0 by default); integer fills of small vectors
// are propagated.
func inferConstantOfShape(c *inferCtx) error {
	spec, n, err := c.shapeInput(0)
	if err != nil {
		return err
	}
	dtype := onnx.Float
	var fill *expr
	if a := c.attr("value"); a != nil {
		if a.T == nil {
			return fmt.Errorf("ConstantOfShape's value is not a tensor")
		}
		t, err := c.st.tensorInfo(a.T, true)
		if err != nil {
			return err
		}
		if count, ok := product(t.shape); !ok || !count.isConst(1) {
			return fmt.Errorf("ConstantOfShape's value must have one element, has shape %s", exprsToDims(t.shape))
		}
		dtype = t.dtype
		if len(t.vals) == 1 {
			fill = t.vals[0]
		}
	}
	var out *tinfo
	switch {
	case spec != nil:
		for _, e := range spec {
			if v, ok := e.constant(); ok && v < 0 {
				return fmt.Errorf("negative dim in shape %s", exprsToDims(spec))
			}
		}
		out = c.set(0, dtype, spec)
	case n >= 0:
		out = c.set(0, dtype, c.freshDims(n))
	default:
		out = c.set(0, dtype, nil)
	}
	if fill != nil {
		c.mapValues(out, func([]*expr) (*expr, bool) { return fill, true })
	}
	return nil
}

// inferShapeOp covers Shape (the dims from start to end, as contents) and
// Size (their product).
func inferShapeOp(c *inferCtx) error {
	x, err := c.input(0)
	if err != nil {
		return err
	}
	if c.n.GetOpType() == "Size" {
		out := c.set(0, onnx.Int64, []*expr{})
		if x.shape != nil {
			out.vals = []*expr{c.productOrFresh(x.shape)}
		}
		return nil
	}
	if x.shape == nil {
		c.set(0, onnx.Int64, []*expr{c.fresh()})
		return nil
	}
	r := int64(len(x.shape))
	start, end := c.intAttr("start", 0), c.intAttr("end", r)
	if start < 0 {
		start += r
	}
	if end < 0 {
		end += r
	}
	start, end = min(max(start, 0), r), min(max(end, 0), r)
	end = max(end, start)
	dims := x.shape[start:end]
	c.set(0, onnx.Int64, []*expr{constExpr(end - start)}).vals = dims
	return nil
}

// inferRange gives a 1-D tensor of max(ceil((limit-start)/delta), 0)
// elements, symbolic when limit - start is a provably signed polynomial
// and delta a constant.
func inferRange(c *inferCtx) error {
	var ends [3]*expr
	for i := range ends {
		t, err := c.input(i)
		if err != nil {
			return err
		}
		if t.shape != nil && len(t.shape) > 0 {
			if p, ok := product(t.shape); !ok || !p.isConst(1) {
				return fmt.Errorf("Range's input %d must be a scalar, not %s", i, exprsToDims(t.shape))
			}
		}
		if len(t.vals) == 1 {
			ends[i] = t.vals[0]
		}
	}
	dtype, err := c.sameType(0, 1, 2)
	if err != nil {
		return err
	}
	start, limit, delta := ends[0], ends[1], ends[2]
	n := c.fresh()
	var vals []*expr
	if start != nil && limit != nil && delta != nil {
		step, sok := delta.constant()
		if sok && step == 0 {
			return fmt.Errorf("Range's delta is 0")
		}
		diff, ok := subExpr(limit, start)
		if ok && sok && step < 0 {
			diff, ok = negExpr(diff)
		}
		v, constDiff := constValue(diff, ok)
		switch {
		case !ok || !sok:
		case constDiff:
			count := ceilDiv(v, absUint(step))
			n = constExpr(count)
			if first, ok := start.constant(); ok && count <= maxValues {
				vals = make([]*expr, 0, count)
				for k := range count {
					e, ok := mulInt(k, step)
					if ok {
						e, ok = addInt(first, e)
					}
					if !ok {
						vals = nil
						break
					}
					vals = append(vals, constExpr(e))
				}
			}
		case c.atLeast(diff, 0):
			if q, ok := divExpr(diff, constExpr(int64(absUint(step)))); ok && step != minInt64 {
				n = q
			}
		}
	}
	c.set(0, dtype, []*expr{n}).vals = vals
	return nil
}
