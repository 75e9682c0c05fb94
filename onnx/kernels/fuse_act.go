package kernels

import (
	"math"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseSwiGLU replaces every gated SiLU written in standard operators, as
// the llama exporter writes its MLP gate (exporters.Builder.SiLU, then a
// Mul by the up projection) —
//
//	Sigmoid(g) → Mul(g, ·) → Mul(·, u)
//
// over float32 g and u of one shape, by one ai.migu.SwiGLU(g, u) node
// writing the same output; its gradient (grad/fused_act.go) is one
// SwiGLUGrad node that recomputes the sigmoid instead of keeping it. A
// chain whose intermediate values are used elsewhere, or are graph
// outputs, stays as it is. It returns the number of gates fused and
// imports the domain when it fused any.
func FuseSwiGLU(m *onnx.Model, types Types) (int, error) {
	f := newFuser(m)
	for _, sig := range m.Graph().P.Node {
		if sig.GetOpType() != "Sigmoid" || sig.GetDomain() != "" || len(sig.Input) != 1 || f.drop[sig] {
			continue
		}
		g := sig.Input[0]
		dt, gs, ok := types.Type(g)
		if !ok || dt != onnx.Float || gs == nil {
			continue
		}
		silu := f.only(sig.Output[0], "Mul")
		if silu == nil || other(silu, sig.Output[0]) != g {
			continue
		}
		gate := f.only(silu.Output[0], "Mul")
		if gate == nil {
			continue
		}
		u := other(gate, silu.Output[0])
		ut, us, ok := types.Type(u)
		if u == "" || u == silu.Output[0] || !ok || ut != onnx.Float || !sameShape(gs, us) {
			continue
		}
		f.fuse(gate, []*onnxpb.NodeProto{sig, silu}, "SwiGLU", []string{g, u})
	}
	return f.finish(), nil
}

// Gelu approximations, the values of ai.migu.Gelu's attribute approximate
// (ONNX's Gelu-20 names them the same).
const (
	GeluErf  = "none"
	GeluTanh = "tanh"
)

// FuseGelu replaces every GELU written in standard operators, as
// exporters.Builder.GELU (erf, roberta's "gelu") and Builder.GELUTanh
// (t5's "gated-gelu", "gelu_new") write them —
//
//	Mul(x, 1/√2) → Erf → Add(1) → Mul(x, ·) → Mul(·, ½)
//	Mul(x, x) → Mul(·, x) → Mul(·, 0.044715) → Add(x, ·) → Mul(·, √(2/π)) →
//	    Tanh → Add(1) → Mul(x, ·) → Mul(·, ½)
//
// over a float32 x, by one ai.migu.Gelu node (approximate GeluErf or
// GeluTanh) writing the same output; its gradient is one GeluGrad node. The
// constants must be those values to float32 rounding. A GELU whose only
// reader is a Mul by a float32 u of x's shape — the gated GELU of t5's
// "gated-gelu", Mul(gelu(wi_0 x), wi_1 x) — becomes Gelu(x, u), writing
// the Mul's output. A chain whose intermediate values are used elsewhere,
// or are graph outputs, stays as it is. It returns the number of
// activations fused and imports the domain when it fused any.
func FuseGelu(m *onnx.Model, types Types) (int, error) {
	f := newFuser(m)
	isFloat := func(x string) bool {
		dt, _, ok := types.Type(x)
		return ok && dt == onnx.Float
	}
	// fuse replaces chain, whose last node writes GELU(x), by one Gelu
	// node, taking in the Mul that gates it where there is one.
	fuse := func(chain []*onnxpb.NodeProto, x, approx string) {
		last, inputs := chain[len(chain)-1], []string{x}
		if gate := f.only(last.Output[0], "Mul"); gate != nil {
			u := other(gate, last.Output[0])
			_, xs, _ := types.Type(x)
			ut, us, ok := types.Type(u)
			if u != "" && u != last.Output[0] && ok && ut == onnx.Float && sameShape(xs, us) {
				chain, last, inputs = append(chain, gate), gate, []string{x, u}
			}
		}
		f.fuse(last, chain[:len(chain)-1], "Gelu", inputs, onnx.AttrString("approximate", approx))
	}
	// tail matches Add(·, 1) → Mul(x, ·) → Mul(·, ½) after v and returns
	// its nodes, or nil.
	tail := func(v, x string) []*onnxpb.NodeProto {
		one := f.only(v, "Add")
		if one == nil || !f.constant(other(one, v), 1) {
			return nil
		}
		h := f.only(one.Output[0], "Mul")
		if h == nil || other(h, one.Output[0]) != x {
			return nil
		}
		half := f.only(h.Output[0], "Mul")
		if half == nil || !f.constant(other(half, h.Output[0]), 0.5) {
			return nil
		}
		return []*onnxpb.NodeProto{one, h, half}
	}
	for _, n := range m.Graph().P.Node {
		if n.GetOpType() != "Mul" || n.GetDomain() != "" || len(n.Input) != 2 || f.drop[n] {
			continue
		}
		// The erf form: n is Mul(x, 1/√2).
		for _, x := range n.Input {
			if !isFloat(x) || !f.constant(other(n, x), 1/math.Sqrt2) {
				continue
			}
			erf := f.only(n.Output[0], "Erf")
			if erf == nil {
				continue
			}
			if t := tail(erf.Output[0], x); t != nil {
				fuse([]*onnxpb.NodeProto{n, erf, t[0], t[1], t[2]}, x, GeluErf)
				break
			}
		}
		if f.drop[n] {
			continue
		}
		// The tanh form: n is Mul(x, x).
		x := n.Input[0]
		if n.Input[1] != x || !isFloat(x) {
			continue
		}
		cube := f.only(n.Output[0], "Mul")
		if cube == nil || other(cube, n.Output[0]) != x {
			continue
		}
		cubic := f.only(cube.Output[0], "Mul")
		if cubic == nil || !f.constant(other(cubic, cube.Output[0]), 0.044715) {
			continue
		}
		inner := f.only(cubic.Output[0], "Add")
		if inner == nil || other(inner, cubic.Output[0]) != x {
			continue
		}
		arg := f.only(inner.Output[0], "Mul")
		if arg == nil || !f.constant(other(arg, inner.Output[0]), math.Sqrt(2/math.Pi)) {
			continue
		}
		tanh := f.only(arg.Output[0], "Tanh")
		if tanh == nil {
			continue
		}
		if t := tail(tanh.Output[0], x); t != nil {
			fuse([]*onnxpb.NodeProto{n, cube, cubic, inner, arg, tanh, t[0], t[1], t[2]}, x, GeluTanh)
		}
	}
	return f.finish(), nil
}

// fuser collects the rewrites of one pass over a graph: nodes dropped,
// and the last node of each chain replaced by its fused node.
type fuser struct {
	m         *onnx.Model
	consumers map[string][]*onnxpb.NodeProto
	outputs   map[string]bool
	drop      map[*onnxpb.NodeProto]bool
	replace   map[*onnxpb.NodeProto]*onnxpb.NodeProto
}

func newFuser(m *onnx.Model) *fuser {
	g := m.Graph()
	return &fuser{m: m, consumers: g.Consumers(), outputs: outputSet(g),
		drop: map[*onnxpb.NodeProto]bool{}, replace: map[*onnxpb.NodeProto]*onnxpb.NodeProto{}}
}

// only returns the single consumer of v, a standard op of the given type
// not already part of a fused chain, or nil.
func (f *fuser) only(v, op string) *onnxpb.NodeProto {
	cs := f.consumers[v]
	if len(cs) != 1 || f.outputs[v] || cs[0].GetOpType() != op || cs[0].GetDomain() != "" || f.drop[cs[0]] || f.replace[cs[0]] != nil {
		return nil
	}
	return cs[0]
}

// constant tells whether name is a one-element float32 initializer equal
// to want to float32 rounding.
func (f *fuser) constant(name string, want float64) bool {
	v, ok := scalar(f.m, name)
	return ok && math.Abs(float64(v)-want) <= 1e-6*math.Abs(want)
}

// fuse replaces last by a node of op in the migu domain reading inputs and
// writing last's output, and drops the chain's other nodes.
func (f *fuser) fuse(last *onnxpb.NodeProto, chain []*onnxpb.NodeProto, op string, inputs []string, attrs ...onnx.Attr) {
	for _, n := range chain {
		f.drop[n] = true
	}
	y := last.Output[0]
	f.replace[last] = &onnxpb.NodeProto{
		OpType: proto.String(op), Domain: proto.String(onnx.DomainMigu),
		Name:      proto.String(f.m.Graph().Unique(y + "/" + op)),
		Input:     inputs,
		Output:    []string{y},
		Attribute: attrs,
	}
}

// finish rewrites the graph's node list and returns the number of chains
// fused.
func (f *fuser) finish() int {
	replaceNodes(f.m, f.drop, f.replace)
	return len(f.replace)
}

// sameShape tells whether two shapes are known and equal axis by axis.
func sameShape(a, b onnx.Shape) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameDim(a[i], b[i]) {
			return false
		}
	}
	return true
}

// FuseActivationTaps moves MIGU's taps into the activation kernels that
// read the same tensors: an ai.migu.SwiGLU or Gelu node one of whose
// inputs an unmasked ai.migu.AbsColSum tap also reads becomes SwiGLUTaps
// or GeluTaps, which writes the activation and the column sums of |input|
// in the one pass over the input, and the AbsColSum node goes (its output
// is now the activation node's). llama taps both inputs of its gate, t5
// both of its gated GELU, roberta the input of its GELU; on the small
// llama these taps were 3.9 ms of the 7.4 ms the taps took per step. A
// gate (SwiGLU, a Gelu with U) with one tapped input also sums the other,
// into an output nothing reads. The
// activation's output and each sum keep their bits (the kernel sums in
// AbsColSum's blocks and order). Masked taps (padding left out) stay as
// they are.
//
// The trainer applies it after differentiation, so the gradient rules and
// the recomputed copies of a block see the plain activation. It returns
// the number of taps moved and imports the domain when it moved any.
func FuseActivationTaps(m *onnx.Model) int {
	g := m.Graph()
	taps := map[string]*onnxpb.NodeProto{} // a tapped value → its AbsColSum
	for _, n := range g.P.Node {
		if n.GetDomain() == onnx.DomainMigu && n.GetOpType() == "AbsColSum" && (len(n.Input) == 1 || n.Input[1] == "") {
			taps[n.Input[0]] = n
		}
	}
	moved := map[*onnxpb.NodeProto]bool{}
	for _, n := range g.P.Node {
		if n.GetDomain() != onnx.DomainMigu || len(n.Output) != 1 {
			continue
		}
		var op string
		switch {
		case n.GetOpType() == "SwiGLU" && len(n.Input) == 2:
			op = "SwiGLUTaps"
		case n.GetOpType() == "Gelu" && (len(n.Input) == 1 || len(n.Input) == 2):
			op = "GeluTaps"
		default:
			continue
		}
		sums := make([]string, len(n.Input))
		tapped := false
		for i, in := range n.Input {
			if t := taps[in]; t != nil && !moved[t] {
				sums[i], moved[t], tapped = t.Output[0], true, true
			}
		}
		if !tapped {
			continue
		}
		for i := range sums {
			if sums[i] == "" {
				sums[i] = g.Unique(n.Output[0] + ".colsum")
			}
		}
		n.OpType = proto.String(op)
		n.Output = append(n.Output, sums...)
	}
	if len(moved) == 0 {
		return 0
	}
	g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return moved[n] })
	m.SetOpset(onnx.DomainMigu, Opset)
	return len(moved)
}
