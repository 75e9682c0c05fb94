package grad

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

func init() {
	register(map[string]Rule{
		"ReduceSum":          reduceSumGrad,
		"ReduceMean":         reduceMeanGrad,
		"Softmax":            softmaxGrad,
		"LogSoftmax":         logSoftmaxGrad,
		"LayerNormalization": layerNormGrad,
	})
}

// reduceAxes returns a reduction's axes (from the attribute before opset 13
// for ReduceSum / 18 for the others, from the second input after), made
// non-negative, and whether the node reduces every axis.
func (c *Context) reduceAxes(n *onnxpb.NodeProto) ([]int64, bool, error) {
	r, err := c.Rank(n.Input[0])
	if err != nil {
		return nil, false, err
	}
	var axes []int64
	if a := onnx.GetAttr(n, "axes"); a != nil {
		axes = a.Ints
	} else if len(n.Input) > 1 && n.Input[1] != "" {
		v, ok := c.intsOf(n.Input[1])
		if !ok {
			return nil, false, fmt.Errorf("reduction axes %q are not known", n.Input[1])
		}
		axes = v
	}
	if len(axes) == 0 {
		if onnx.AttrIntOr(n, "noop_with_empty_axes", 0) == 1 {
			return nil, false, nil
		}
		all := make([]int64, r)
		for i := range all {
			all[i] = int64(i)
		}
		return all, true, nil
	}
	out := make([]int64, len(axes))
	for i, a := range axes {
		if a < 0 {
			a += int64(r)
		}
		if a < 0 || a >= int64(r) {
			return nil, false, fmt.Errorf("axis %d is out of range for rank %d", axes[i], r)
		}
		out[i] = a
	}
	return out, len(out) == r, nil
}

// spread turns the gradient of a reduction's output back into the input's
// shape: unsqueeze the reduced axes (when keepdims was 0) and broadcast.
func (c *Context) spread(n *onnxpb.NodeProto, dy string, axes []int64) string {
	x := n.Input[0]
	if len(axes) > 0 && onnx.AttrIntOr(n, "keepdims", 1) == 0 {
		dy = c.Op("Unsqueeze", []string{dy, c.Ints(axes...)}, "bw/"+x+".unsq")
	}
	return c.Op("Expand", []string{dy, c.ShapeOf(x)}, "bw/"+x+".expand")
}

func reduceSumGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	axes, _, err := c.reduceAxes(n)
	if err != nil {
		return nil, err
	}
	if len(axes) == 0 {
		out[0] = dY[0]
		return out, nil
	}
	out[0] = c.spread(n, dY[0], axes)
	return out, nil
}

// reduceMeanGrad spreads dy and divides by the number of elements averaged:
// a constant when the reduced dims are known, else size(x)/size(y).
func reduceMeanGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	axes, _, err := c.reduceAxes(n)
	if err != nil {
		return nil, err
	}
	if len(axes) == 0 {
		out[0] = dY[0]
		return out, nil
	}
	x := n.Input[0]
	_, shape, _ := c.Type(x)
	count, known := int64(1), true
	for _, a := range axes {
		d := shape[a]
		if !d.Known || d.Param != "" {
			known = false
			break
		}
		count *= d.Value
	}
	g := c.spread(n, dY[0], axes)
	if known {
		out[0] = c.Op("Mul", []string{g, c.Scalar(1/float64(count), x)}, "bw/"+x)
		return out, nil
	}
	sx := c.Op("CastLike", []string{c.Op("Size", []string{x}, "bw/"+x+".size"), x}, "bw/"+x+".sizef")
	sy := c.Op("CastLike", []string{c.Op("Size", []string{n.Output[0]}, "bw/"+x+".ysize"), x}, "bw/"+x+".ysizef")
	out[0] = c.Op("Div", []string{g, c.Op("Div", []string{sx, sy}, "bw/"+x+".count")}, "bw/"+x)
	return out, nil
}

// softmaxGrad: dx = y · (dy − Σ(dy·y)) over the softmax axis.
func softmaxGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	x, y := n.Input[0], n.Output[0]
	axis := onnx.AttrIntOr(n, "axis", -1)
	dot := c.Op("ReduceSum", []string{c.Op("Mul", []string{dY[0], y}, "bw/"+x+".dyy"), c.Ints(axis)}, "bw/"+x+".dot", onnx.AttrInt("keepdims", 1))
	return []string{c.Op("Mul", []string{y, c.Op("Sub", []string{dY[0], dot}, "bw/"+x+".centered")}, "bw/"+x)}, nil
}

// logSoftmaxGrad: dx = dy − exp(y) · Σ dy over the axis.
func logSoftmaxGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	x, y := n.Input[0], n.Output[0]
	axis := onnx.AttrIntOr(n, "axis", -1)
	total := c.Op("ReduceSum", []string{dY[0], c.Ints(axis)}, "bw/"+x+".total", onnx.AttrInt("keepdims", 1))
	p := c.Op("Exp", []string{y}, "bw/"+x+".p")
	return []string{c.Op("Sub", []string{dY[0], c.Op("Mul", []string{p, total}, "bw/"+x+".ptotal")}, "bw/"+x)}, nil
}

// layerNormGrad differentiates LayerNormalization over the axes from axis
// on, reusing the mean and inverse deviation the forward node saves:
// x̂ = (x − μ)·r, g = dy·γ, dx = r·(g − mean(g) − x̂·mean(g·x̂)),
// dγ = Σ dy·x̂ and dβ = Σ dy over the leading axes.
func layerNormGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	if dY[0] == "" {
		return out, nil
	}
	x, y, dy := n.Input[0], n.Output[0], dY[0]
	r, err := c.Rank(x)
	if err != nil {
		return nil, err
	}
	axis := onnx.AttrIntOr(n, "axis", -1)
	if axis < 0 {
		axis += int64(r)
	}
	var normAxes, leadAxes []int64
	for i := int64(0); i < int64(r); i++ {
		if i >= axis {
			normAxes = append(normAxes, i)
		} else {
			leadAxes = append(leadAxes, i)
		}
	}
	h := "bw/" + x
	// The saved statistics come in the stash type (float32 unless the node
	// says otherwise); CastLike is free when it already matches x.
	mean := c.Op("CastLike", []string{c.ForwardOutput(n, 1, y+".mean"), x}, h+".mean")
	inv := c.Op("CastLike", []string{c.ForwardOutput(n, 2, y+".invstd"), x}, h+".invstd")
	xhat := c.Op("Mul", []string{c.Op("Sub", []string{x, mean}, h+".xc"), inv}, h+".xhat")
	if c.Needs(n.Input[1]) {
		out[1] = c.sumLeadingOf(c.Op("Mul", []string{dy, xhat}, h+".dyxhat"), n.Input[1], x, leadAxes)
	}
	if len(n.Input) > 2 && n.Input[2] != "" && c.Needs(n.Input[2]) {
		out[2] = c.sumLeadingOf(dy, n.Input[2], x, leadAxes)
	}
	if c.Needs(x) {
		g := c.Op("Mul", []string{dy, n.Input[1]}, h+".g")
		meanG := c.g.Reduce(c.opset, "ReduceMean", g, normAxes, true, h+".meang")
		meanGX := c.g.Reduce(c.opset, "ReduceMean", c.Op("Mul", []string{g, xhat}, h+".gxhat"), normAxes, true, h+".meangx")
		inner := c.Op("Sub", []string{c.Op("Sub", []string{g, meanG}, h+".gc"), c.Op("Mul", []string{xhat, meanGX}, h+".proj")}, h+".inner")
		out[0] = c.Op("Mul", []string{inner, inv}, h)
	}
	return out, nil
}

// sumLeadingOf is sumLeading for the gradient of param, a [d] tensor
// applied along the last axis of like: a MatMul with a row of ones
// (Context.sumRows) when the shapes allow, else ReduceSum.
func (c *Context) sumLeadingOf(v, param, like string, axes []int64) string {
	_, ps, err1 := c.Type(param)
	_, ls, err2 := c.Type(like)
	if err1 == nil && err2 == nil && len(axes) == len(ls)-1 {
		if r, ok := c.sumRows(v, param, like, ps, ls); ok {
			return r
		}
	}
	return c.sumLeading(v, axes, "bw/"+param)
}

// sumLeading sums over the given leading axes (dropping them).
func (c *Context) sumLeading(v string, axes []int64, hint string) string {
	if len(axes) == 0 {
		return v
	}
	return c.Op("ReduceSum", []string{v, c.Ints(axes...)}, hint, onnx.AttrInt("keepdims", 0))
}

// intsOf returns the contents of an integer tensor when they are known
// numbers: a constant, or a shape computation the inference followed.
func (c *Context) intsOf(name string) ([]int64, bool) {
	if v, ok := c.constInts(name); ok {
		return v, true
	}
	dims, ok := c.shapes.Values(name)
	if !ok {
		return nil, false
	}
	out := make([]int64, len(dims))
	for i, d := range dims {
		if !d.Known || d.Param != "" {
			return nil, false
		}
		out[i] = d.Value
	}
	return out, true
}

// constant returns the tensor behind an initializer or a Constant node's
// output (value_int(s) and value_float(s) forms included), or nil.
func (c *Context) constant(name string) *onnxpb.TensorProto {
	if t := c.g.Initializer(name); t != nil {
		return t
	}
	for _, n := range c.g.P.Node {
		if n.GetOpType() != "Constant" || len(n.Output) != 1 || n.Output[0] != name {
			continue
		}
		for _, a := range n.Attribute {
			switch a.GetName() {
			case "value":
				return a.T
			case "value_int":
				return onnx.Int64Tensor(name, nil, []int64{a.GetI()})
			case "value_ints":
				return onnx.Int64Tensor(name, []int64{int64(len(a.Ints))}, a.Ints)
			case "value_float":
				return onnx.Float32Tensor(name, nil, []float32{a.GetF()})
			case "value_floats":
				return onnx.Float32Tensor(name, []int64{int64(len(a.Floats))}, a.Floats)
			}
		}
	}
	return nil
}

// constInts reads an integer constant.
func (c *Context) constInts(name string) ([]int64, bool) {
	t := c.constant(name)
	if t == nil {
		return nil, false
	}
	v, err := (&onnx.Model{}).Int64s(t)
	return v, err == nil
}

// constScalar reads a one-element float constant.
func (c *Context) constScalar(name string) (float64, bool) {
	t := c.constant(name)
	if t == nil {
		return 0, false
	}
	v, err := (&onnx.Model{}).Float32s(t)
	if err != nil || len(v) != 1 {
		return 0, false
	}
	return float64(v[0]), true
}
