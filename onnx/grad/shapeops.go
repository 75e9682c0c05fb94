package grad

import (
	"fmt"
	"math"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

func init() {
	register(map[string]Rule{
		"Reshape":   reshapeGrad,
		"Flatten":   reshapeGrad,
		"Squeeze":   reshapeGrad,
		"Unsqueeze": reshapeGrad,
		"Transpose": transposeGrad,
		"Expand":    expandGrad,
		"Concat":    concatGrad,
		"Split":     splitGrad,
		"Slice":     sliceGrad,
		"Pad":       padGrad,
		"Gather":    gatherGrad,

		"GatherElements": gatherElementsGrad,
	})
}

// reshapeGrad serves every op that only relabels the elements (Reshape,
// Flatten, Squeeze, Unsqueeze): dx is dy reshaped to x's shape.
func reshapeGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	x := n.Input[0]
	out[0] = c.Op("Reshape", []string{dY[0], c.ShapeOf(x)}, "bw/"+x)
	return out, nil
}

// transposeGrad applies the inverse permutation.
func transposeGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	x := n.Input[0]
	r, err := c.Rank(x)
	if err != nil {
		return nil, err
	}
	perm := make([]int64, r)
	if a := onnx.GetAttr(n, "perm"); a != nil {
		perm = a.Ints
	} else {
		for i := range perm {
			perm[i] = int64(r - 1 - i)
		}
	}
	if len(perm) != r {
		return nil, fmt.Errorf("perm %v does not match rank %d", perm, r)
	}
	inv := make([]int64, r)
	for i, p := range perm {
		inv[p] = int64(i)
	}
	return []string{c.Op("Transpose", []string{dY[0]}, "bw/"+x, onnx.AttrInts("perm", inv...))}, nil
}

// expandGrad sums dy back over the broadcast axes.
func expandGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	g, err := c.Unbroadcast(dY[0], n.Input[0], n.Output[0])
	out[0] = g
	return out, err
}

// axisOf normalises a node's axis attribute against the rank of value.
func (c *Context) axisOf(n *onnxpb.NodeProto, value string, def int64) (int64, int, error) {
	r, err := c.Rank(value)
	if err != nil {
		return 0, 0, err
	}
	axis := onnx.AttrIntOr(n, "axis", def)
	if axis < 0 {
		axis += int64(r)
	}
	if axis < 0 || axis >= int64(r) {
		return 0, 0, fmt.Errorf("axis %d out of range for rank %d", onnx.AttrIntOr(n, "axis", def), r)
	}
	return axis, r, nil
}

// dimSize returns the size of value along axis as a 1-D int64 tensor of
// one element: a constant when known, else read from its runtime shape.
func (c *Context) dimSize(value string, axis int64) string {
	if _, shape, ok := c.shapes.Type(value); ok && int(axis) < len(shape) {
		if d := shape[axis]; d.Known && d.Param == "" {
			return c.Ints(d.Value)
		}
	}
	return c.Op("Slice", []string{c.Op("Shape", []string{value}, "bw/"+value+".shape"), c.Ints(axis), c.Ints(axis + 1)}, "bw/"+value+".dim")
}

// dimScalar is dimSize as a rank-0 int64, to add to indices of any rank.
func (c *Context) dimScalar(value string, axis int64) string {
	return c.Op("Squeeze", []string{c.dimSize(value, axis)}, "bw/"+value+".dimscalar")
}

// concatGrad splits dy into the inputs' extents along the axis.
func concatGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	axis, _, err := c.axisOf(n, n.Output[0], 0)
	if err != nil {
		return nil, err
	}
	sizes := make([]string, len(n.Input))
	for i, in := range n.Input {
		sizes[i] = c.dimSize(in, axis)
	}
	split := c.Op("Concat", sizes, "bw/"+n.Output[0]+".sizes", onnx.AttrInt("axis", 0))
	parts := c.OpN("Split", []string{dY[0], split}, len(n.Input), "bw/"+n.Output[0]+".split", onnx.AttrInt("axis", axis))
	out := grads(n)
	for i, in := range n.Input {
		if c.Needs(in) {
			out[i] = parts[i]
		}
	}
	return out, nil
}

// splitGrad concatenates the outputs' gradients, with zeros for outputs
// no gradient reached.
func splitGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	axis, _, err := c.axisOf(n, n.Input[0], 0)
	if err != nil {
		return nil, err
	}
	parts := make([]string, len(n.Output))
	for i, o := range n.Output {
		parts[i] = dY[i]
		if parts[i] == "" {
			parts[i] = c.zerosLike(o, o)
		}
	}
	out[0] = c.Op("Concat", parts, "bw/"+n.Input[0], onnx.AttrInt("axis", axis))
	return out, nil
}

// sliceGrad pads dy with zeros back to x's extent. Axes and steps must be
// known (constants, or computed from shapes the inference follows); only
// unit steps are supported. Starts and ends may be runtime values (torch
// exports compute them from shapes); they are clamped as Slice clamps them.
func sliceGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	x := n.Input[0]
	r, err := c.Rank(x)
	if err != nil {
		return nil, err
	}
	_, startsShape, err := c.Type(n.Input[1])
	if err != nil {
		return nil, err
	}
	count, ok := startsShape.Fixed()
	if !ok || len(count) != 1 {
		return nil, fmt.Errorf("Slice starts %q must be a 1-D tensor of known length", n.Input[1])
	}
	axes := make([]int64, count[0])
	for i := range axes {
		axes[i] = int64(i)
	}
	if len(n.Input) > 3 && n.Input[3] != "" {
		if axes, ok = c.intsOf(n.Input[3]); !ok {
			return nil, fmt.Errorf("Slice axes %q must be known to differentiate", n.Input[3])
		}
	}
	if len(n.Input) > 4 && n.Input[4] != "" {
		steps, ok := c.intsOf(n.Input[4])
		if !ok {
			return nil, fmt.Errorf("Slice steps %q must be known to differentiate", n.Input[4])
		}
		for _, s := range steps {
			if s != 1 {
				return nil, fmt.Errorf("Slice with step %d is not supported", s)
			}
		}
	}
	starts := c.sliceBounds(n.Input[1], len(axes))
	ends := c.sliceBounds(n.Input[2], len(axes))
	// pads = [begin_0..begin_{r-1}, end_0..end_{r-1}]: per sliced axis the
	// clamped start, and dim − max(clamped end, clamped start).
	begin := make([]string, r)
	end := make([]string, r)
	zero := c.Ints(0)
	for i := range begin {
		begin[i], end[i] = zero, zero
	}
	h := "bw/" + x
	for i, a := range axes {
		if a < 0 {
			a += int64(r)
		}
		if a < 0 || a >= int64(r) {
			return nil, fmt.Errorf("Slice axis %d out of range for rank %d", axes[i], r)
		}
		dim := c.dimSize(x, a)
		clamp := func(v string) string {
			wrapped := c.Op("Where", []string{c.Op("Less", []string{v, zero}, h+".neg"), c.Op("Add", []string{v, dim}, h+".wrap"), v}, h+".norm")
			return c.Op("Min", []string{c.Op("Max", []string{wrapped, zero}, h+".lo"), dim}, h+".clamped")
		}
		s := clamp(starts[i])
		e := clamp(ends[i])
		begin[a] = s
		end[a] = c.Op("Sub", []string{dim, c.Op("Max", []string{e, s}, h+".endmax")}, h+".after")
	}
	pads := c.Op("Concat", append(begin, end...), h+".pads", onnx.AttrInt("axis", 0))
	out[0] = c.Op("Pad", []string{dY[0], pads}, h)
	return out, nil
}

// padGrad serves constant-mode Pad with constant, non-negative pads over
// every axis (what train's hidden padding writes): dx is dy without the
// padding, a Slice with constant bounds.
func padGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	x := n.Input[0]
	if !c.Needs(x) {
		return out, nil
	}
	if a := onnx.GetAttr(n, "mode"); a != nil && string(a.S) != "constant" {
		return nil, fmt.Errorf("Pad mode %q has no gradient rule (constant only)", a.S)
	}
	if len(n.Input) > 3 && n.Input[3] != "" {
		return nil, fmt.Errorf("Pad with an axes input has no gradient rule")
	}
	r, err := c.Rank(x)
	if err != nil {
		return nil, err
	}
	pads, ok := c.constInts(n.Input[1])
	if !ok || len(pads) != 2*r {
		return nil, fmt.Errorf("Pad needs constant pads for all %d axes to have a gradient", r)
	}
	starts, ends := make([]int64, r), make([]int64, r)
	for i := range r {
		if pads[i] < 0 || pads[r+i] < 0 {
			return nil, fmt.Errorf("Pad with negative pads %v has no gradient rule", pads)
		}
		starts[i], ends[i] = pads[i], -pads[r+i]
		if pads[r+i] == 0 {
			ends[i] = math.MaxInt64
		}
	}
	out[0] = c.Op("Slice", []string{dY[0], c.Ints(starts...), c.Ints(ends...)}, "bw/"+x)
	return out, nil
}

// sliceBounds splits a Slice starts or ends input into one 1-D int64
// tensor per sliced axis: constants when known, else slices of the runtime
// tensor.
func (c *Context) sliceBounds(name string, count int) []string {
	out := make([]string, count)
	if v, ok := c.intsOf(name); ok && len(v) == count {
		for i, x := range v {
			out[i] = c.Ints(x)
		}
		return out
	}
	v64 := c.Op("Cast", []string{name}, "bw/"+name+".i64", onnx.AttrInt("to", int64(onnx.Int64)))
	for i := range out {
		out[i] = c.Op("Slice", []string{v64, c.Ints(int64(i)), c.Ints(int64(i + 1))}, "bw/"+name+".part")
	}
	return out
}

// gatherGrad scatters dy back into zeros shaped like the table, adding the
// rows of repeated indices (an embedding looked up twice gets both
// gradients). Other axes are moved to the front and back again.
func gatherGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	data, idx := n.Input[0], n.Input[1]
	if !c.Needs(data) {
		return out, nil
	}
	axis, r, err := c.axisOf(n, data, 0)
	if err != nil {
		return nil, err
	}
	ri, err := c.Rank(idx)
	if err != nil {
		return nil, err
	}
	h := "bw/" + data
	dy := dY[0]
	table := data
	if axis != 0 {
		// Move the gathered axis to the front of the table and of dy.
		perm := []int64{axis}
		for i := int64(0); i < int64(r); i++ {
			if i != axis {
				perm = append(perm, i)
			}
		}
		table = c.Op("Transpose", []string{data}, h+".front", onnx.AttrInts("perm", perm...))
		// dy has axes [data[:axis], idx..., data[axis+1:]]; bring idx axes first.
		var dperm []int64
		for i := int64(0); i < int64(ri); i++ {
			dperm = append(dperm, axis+i)
		}
		for i := int64(0); i < axis; i++ {
			dperm = append(dperm, i)
		}
		for i := axis + int64(ri); i < int64(r-1+ri); i++ {
			dperm = append(dperm, i)
		}
		dy = c.Op("Transpose", []string{dy}, h+".dyfront", onnx.AttrInts("perm", dperm...))
	}
	// Negative indices count from the end, as Gather allows.
	rows := c.dimScalar(data, axis)
	idx64 := c.Op("Cast", []string{idx}, h+".idx64", onnx.AttrInt("to", int64(onnx.Int64)))
	neg := c.Op("Less", []string{idx64, c.Int(0)}, h+".negidx")
	fixed := c.Op("Where", []string{neg, c.Op("Add", []string{idx64, rows}, h+".wrapped"), idx64}, h+".index")
	// ScatterElements, not ScatterND: ONNX Runtime's ScatterND adds on
	// several threads without guarding repeated indices and loses updates
	// (embedding rows of repeated tokens); ScatterElements adds in index
	// order on one thread, so the sums are exact and repeatable. It wants
	// indices shaped like the updates: dy's index axes become one, and
	// each index is repeated along the row.
	flat := c.Ints(-1)
	if r > 1 {
		rest := c.Op("Slice", []string{c.ShapeOf(table), c.Ints(1), c.Ints(int64(r))}, h+".rowshape")
		flat = c.Op("Concat", []string{flat, rest}, h+".flatshape", onnx.AttrInt("axis", 0))
	}
	rows1 := make([]int64, r)
	rows1[0] = -1
	for i := 1; i < r; i++ {
		rows1[i] = 1
	}
	dyFlat := c.Op("Reshape", []string{dy, flat}, h+".dyflat")
	column := c.Op("Reshape", []string{fixed, c.Ints(rows1...)}, h+".column")
	indices := c.Op("Expand", []string{column, c.Op("Shape", []string{dyFlat}, h+".dyshape")}, h+".indices")
	zeros := c.zerosLike(table, data)
	g := c.Op("ScatterElements", []string{zeros, indices, dyFlat}, h+".scatter",
		onnx.AttrInt("axis", 0), onnx.AttrString("reduction", "add"))
	if axis != 0 {
		inv := make([]int64, r)
		inv[axis] = 0
		for i, j := int64(0), int64(1); i < int64(r); i++ {
			if i == axis {
				continue
			}
			inv[i] = j
			j++
		}
		g = c.Op("Transpose", []string{g}, h, onnx.AttrInts("perm", inv...))
	}
	out[0] = g
	return out, nil
}

// gatherElementsGrad scatters dy back to the positions it was read from,
// adding repeats (the cross-entropy picks one log-probability per row).
func gatherElementsGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	data, idx := n.Input[0], n.Input[1]
	if !c.Needs(data) {
		return out, nil
	}
	axis, _, err := c.axisOf(n, data, 0)
	if err != nil {
		return nil, err
	}
	h := "bw/" + data
	idx64 := c.Op("Cast", []string{idx}, h+".idx64", onnx.AttrInt("to", int64(onnx.Int64)))
	size := c.dimScalar(data, axis)
	neg := c.Op("Less", []string{idx64, c.Int(0)}, h+".negidx")
	fixed := c.Op("Where", []string{neg, c.Op("Add", []string{idx64, size}, h+".wrapped"), idx64}, h+".index")
	out[0] = c.Op("ScatterElements", []string{c.zerosLike(data, data), fixed, dY[0]}, h,
		onnx.AttrInt("axis", axis), onnx.AttrString("reduction", "add"))
	return out, nil
}
