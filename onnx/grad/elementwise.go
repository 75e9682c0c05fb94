package grad

import (
	"fmt"
	"math"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

func init() {
	register(map[string]Rule{
		"Add":        addGrad,
		"Sub":        subGrad,
		"Mul":        mulGrad,
		"Div":        divGrad,
		"Sum":        sumGrad,
		"Neg":        negGrad,
		"Identity":   identityGrad,
		"Cast":       castGrad,
		"Pow":        powGrad,
		"Sqrt":       sqrtGrad,
		"Reciprocal": reciprocalGrad,
		"Exp":        expGrad,
		"Log":        logGrad,
		"Tanh":       tanhGrad,
		"Erf":        erfGrad,
		"Sigmoid":    sigmoidGrad,
		"Relu":       reluGrad,
		"Abs":        absGrad,
		"Sin":        sinGrad,
		"Cos":        cosGrad,
		"Where":      whereGrad,
		"Dropout":    dropoutGrad,
	})
}

// grads returns a gradient slot per input of n, all "" (no gradient).
func grads(n *onnxpb.NodeProto) []string { return make([]string, len(n.Input)) }

// each sets the gradient of input i, when it is needed, to make(), reduced
// to the input's shape where the output broadcast it.
func (c *Context) each(n *onnxpb.NodeProto, out []string, i int, make func() string) error {
	if i >= len(n.Input) || !c.Needs(n.Input[i]) {
		return nil
	}
	g, err := c.Unbroadcast(make(), n.Input[i], n.Output[0])
	out[i] = g
	return err
}

func addGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	for i := range n.Input {
		if err := c.each(n, out, i, func() string { return dY[0] }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sumGrad is Add's rule for any number of operands.
var sumGrad = addGrad

func subGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	if err := c.each(n, out, 0, func() string { return dY[0] }); err != nil {
		return nil, err
	}
	err := c.each(n, out, 1, func() string { return c.Op("Neg", []string{dY[0]}, "bw/"+n.Input[1]) })
	return out, err
}

func mulGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	a, b := n.Input[0], n.Input[1]
	if err := c.each(n, out, 0, func() string { return c.Op("Mul", []string{dY[0], b}, "bw/"+a) }); err != nil {
		return nil, err
	}
	err := c.each(n, out, 1, func() string { return c.Op("Mul", []string{dY[0], a}, "bw/"+b) })
	return out, err
}

// divGrad: y = a/b, da = dy/b, db = −dy·y/b (reusing y saves a multiply).
func divGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	a, b, y := n.Input[0], n.Input[1], n.Output[0]
	if err := c.each(n, out, 0, func() string { return c.Op("Div", []string{dY[0], b}, "bw/"+a) }); err != nil {
		return nil, err
	}
	err := c.each(n, out, 1, func() string {
		t := c.Op("Div", []string{c.Op("Mul", []string{dY[0], y}, "bw/"+b+".dyy"), b}, "bw/"+b+".q")
		return c.Op("Neg", []string{t}, "bw/"+b)
	})
	return out, err
}

func negGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	return []string{c.Op("Neg", []string{dY[0]}, "bw/"+n.Input[0])}, nil
}

func identityGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	return []string{dY[0]}, nil
}

// castGrad casts the gradient back to the input's float type.
func castGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	dt, _, err := c.Type(n.Input[0])
	if err != nil {
		return nil, err
	}
	if !dt.IsFloat() {
		return grads(n), nil
	}
	return []string{c.Op("Cast", []string{dY[0]}, "bw/"+n.Input[0], onnx.AttrInt("to", int64(dt)))}, nil
}

// unary builds the rule of y = f(x) from dx = dy · f'(x), where deriv
// receives x and y and returns f' (or dx directly when wholeGrad is set).
func unary(deriv func(c *Context, x, y, dy string) string) Rule {
	return func(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
		out := grads(n)
		if c.Needs(n.Input[0]) {
			out[0] = deriv(c, n.Input[0], n.Output[0], dY[0])
		}
		return out, nil
	}
}

// sqrtGrad: dx = dy · 0.5 / y.
var sqrtGrad = unary(func(c *Context, x, y, dy string) string {
	return c.Op("Div", []string{c.Op("Mul", []string{dy, c.Scalar(0.5, x)}, "bw/"+x+".half"), y}, "bw/"+x)
})

// reciprocalGrad: dx = −dy · y².
var reciprocalGrad = unary(func(c *Context, x, y, dy string) string {
	y2 := c.Op("Mul", []string{y, y}, "bw/"+x+".y2")
	return c.Op("Neg", []string{c.Op("Mul", []string{dy, y2}, "bw/"+x+".dyy2")}, "bw/"+x)
})

// expGrad: dx = dy · y.
var expGrad = unary(func(c *Context, x, y, dy string) string {
	return c.Op("Mul", []string{dy, y}, "bw/"+x)
})

// logGrad: dx = dy / x.
var logGrad = unary(func(c *Context, x, y, dy string) string {
	return c.Op("Div", []string{dy, x}, "bw/"+x)
})

// tanhGrad: dx = dy · (1 − y²).
var tanhGrad = unary(func(c *Context, x, y, dy string) string {
	y2 := c.Op("Mul", []string{y, y}, "bw/"+x+".y2")
	return c.Op("Mul", []string{dy, c.Op("Sub", []string{c.Scalar(1, x), y2}, "bw/"+x+".1my2")}, "bw/"+x)
})

// erfGrad: dx = dy · 2/√π · exp(−x²).
var erfGrad = unary(func(c *Context, x, y, dy string) string {
	x2 := c.Op("Mul", []string{x, x}, "bw/"+x+".x2")
	e := c.Op("Exp", []string{c.Op("Neg", []string{x2}, "bw/"+x+".nx2")}, "bw/"+x+".exp")
	return c.Op("Mul", []string{dy, c.Op("Mul", []string{e, c.Scalar(2/math.Sqrt(math.Pi), x)}, "bw/"+x+".d")}, "bw/"+x)
})

// sigmoidGrad: dx = dy · y · (1 − y).
var sigmoidGrad = unary(func(c *Context, x, y, dy string) string {
	d := c.Op("Mul", []string{y, c.Op("Sub", []string{c.Scalar(1, x), y}, "bw/"+x+".1my")}, "bw/"+x+".d")
	return c.Op("Mul", []string{dy, d}, "bw/"+x)
})

// reluGrad passes dy where y > 0.
var reluGrad = unary(func(c *Context, x, y, dy string) string {
	pos := c.Op("Greater", []string{y, c.Scalar(0, x)}, "bw/"+x+".pos")
	return c.Op("Where", []string{pos, dy, c.Scalar(0, x)}, "bw/"+x)
})

// absGrad: dx = dy · sign(x).
var absGrad = unary(func(c *Context, x, y, dy string) string {
	return c.Op("Mul", []string{dy, c.Op("Sign", []string{x}, "bw/"+x+".sign")}, "bw/"+x)
})

// sinGrad: dx = dy · cos(x).
var sinGrad = unary(func(c *Context, x, y, dy string) string {
	return c.Op("Mul", []string{dy, c.Op("Cos", []string{x}, "bw/"+x+".cos")}, "bw/"+x)
})

// cosGrad: dx = −dy · sin(x).
var cosGrad = unary(func(c *Context, x, y, dy string) string {
	s := c.Op("Mul", []string{dy, c.Op("Sin", []string{x}, "bw/"+x+".sin")}, "bw/"+x+".dys")
	return c.Op("Neg", []string{s}, "bw/"+x)
})

// powGrad handles a constant exponent p (a square written as Pow, a cube):
// dx = dy · p · x^(p−1), with x·x and plain x for the common small p.
func powGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	x, p := n.Input[0], n.Input[1]
	if c.Needs(p) {
		return nil, fmt.Errorf("the exponent %q depends on trained tensors; only constant exponents are supported", p)
	}
	if !c.Needs(x) {
		return out, nil
	}
	exp, ok := c.constScalar(p)
	var d string
	switch {
	case ok && exp == 2:
		d = c.Op("Mul", []string{x, c.Scalar(2, x)}, "bw/"+x+".2x")
	case ok && exp == 3:
		d = c.Op("Mul", []string{c.Op("Mul", []string{x, x}, "bw/"+x+".x2"), c.Scalar(3, x)}, "bw/"+x+".3x2")
	default:
		pm1 := c.Op("Sub", []string{p, c.Op("CastLike", []string{c.Scalar(1, x), p}, "bw/"+x+".one")}, "bw/"+x+".pm1")
		xp := c.Op("Pow", []string{x, pm1}, "bw/"+x+".xpm1")
		d = c.Op("Mul", []string{xp, c.Op("CastLike", []string{p, x}, "bw/"+x+".p")}, "bw/"+x+".d")
	}
	g, err := c.Unbroadcast(c.Op("Mul", []string{dY[0], d}, "bw/"+x), x, n.Output[0])
	out[0] = g
	return out, err
}

// whereGrad routes dy to the branch the condition chose.
func whereGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	cond := n.Input[0]
	zero := c.Scalar(0, n.Output[0])
	if err := c.each(n, out, 1, func() string { return c.Op("Where", []string{cond, dY[0], zero}, "bw/"+n.Input[1]) }); err != nil {
		return nil, err
	}
	err := c.each(n, out, 2, func() string { return c.Op("Where", []string{cond, zero, dY[0]}, "bw/"+n.Input[2]) })
	return out, err
}

// dropoutGrad is the identity in inference mode; in training mode it
// scales dy by the saved mask / (1 − ratio).
func dropoutGrad(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error) {
	out := grads(n)
	if !c.Needs(n.Input[0]) {
		return out, nil
	}
	training := len(n.Input) > 2 && n.Input[2] != ""
	if !training {
		out[0] = dY[0]
		return out, nil
	}
	ratio := 0.5
	if len(n.Input) > 1 && n.Input[1] != "" {
		r, ok := c.constScalar(n.Input[1])
		if !ok {
			return nil, fmt.Errorf("dropout ratio %q is not a constant", n.Input[1])
		}
		ratio = r
	}
	mask := c.ForwardOutput(n, 1, n.Output[0]+".mask")
	m := c.Op("CastLike", []string{mask, dY[0]}, "bw/"+n.Input[0]+".mask")
	scaled := c.Op("Mul", []string{dY[0], m}, "bw/"+n.Input[0]+".masked")
	out[0] = c.Op("Mul", []string{scaled, c.Scalar(1/(1-ratio), n.Input[0])}, "bw/"+n.Input[0])
	return out, nil
}
