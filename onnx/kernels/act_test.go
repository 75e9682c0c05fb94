package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// An activation under test: its inputs (all of one shape), its
// standard-op formulation exactly as the exporters' Builder writes it,
// the fused op it becomes, and a float64 reference of its output.
type activation struct {
	name   string
	inputs []string
	build  func(g *onnx.Graph) string // returns the output, named y
	fuse   func(*onnx.Model, kernels.Types) (int, error)
	fused  string // the fused forward op, "ai.migu.Op"
	ref    func(in []float64) float64
	lo, hi float64 // the range inputs are drawn from
}

func scalarConst(g *onnx.Graph, v float64) string {
	return g.Const(fmt.Sprintf("c%d", len(g.P.Initializer)), nil, float32(v))
}

var activations = []activation{
	{
		name: "SwiGLU", inputs: []string{"g", "u"},
		// exporters.Builder.SiLU, then the llama MLP's Mul by up.
		build: func(g *onnx.Graph) string {
			silu := g.Op("Mul", []string{"g", g.Op("Sigmoid", []string{"g"}, "act.sig")}, "act")
			return g.Op("Mul", []string{silu, "u"}, "y")
		},
		fuse: kernels.FuseSwiGLU, fused: "ai.migu.SwiGLU",
		ref: func(in []float64) float64 { return in[0] / (1 + math.Exp(-in[0])) * in[1] },
		lo:  -6, hi: 6,
	},
	{
		name: "GeluErf", inputs: []string{"x"},
		// exporters.Builder.GELU.
		build: func(g *onnx.Graph) string {
			e := g.Op("Erf", []string{g.Op("Mul", []string{"x", scalarConst(g, 1/math.Sqrt2)}, "act.scaled")}, "act.erf")
			h := g.Op("Mul", []string{"x", g.Op("Add", []string{e, scalarConst(g, 1)}, "act.erf1")}, "act.xerf")
			return g.Op("Mul", []string{h, scalarConst(g, 0.5)}, "y")
		},
		fuse: kernels.FuseGelu, fused: "ai.migu.Gelu",
		ref: func(in []float64) float64 { return 0.5 * in[0] * (1 + math.Erf(in[0]/math.Sqrt2)) },
		lo:  -5, hi: 5,
	},
	{
		name: "GeluTanh", inputs: []string{"x"},
		// exporters.Builder.GELUTanh.
		build: func(g *onnx.Graph) string { return geluTanhOps(g, "x", 0.044715, "y") },
		fuse:  kernels.FuseGelu, fused: "ai.migu.Gelu",
		ref: geluTanhRef,
		lo:  -5, hi: 5,
	},
	{
		name: "GeluTanhGated", inputs: []string{"x", "u"},
		// t5's gated-gelu: Mul(GELUTanh(wi_0 x), wi_1 x).
		build: func(g *onnx.Graph) string {
			return g.Op("Mul", []string{geluTanhOps(g, "x", 0.044715, "act"), "u"}, "y")
		},
		fuse: kernels.FuseGelu, fused: "ai.migu.Gelu",
		ref: func(in []float64) float64 { return geluTanhRef(in) * in[1] },
		lo:  -5, hi: 5,
	},
	{
		name: "GeluErfGated", inputs: []string{"x", "u"},
		// A gate read first: Mul(u, GELU(x)).
		build: func(g *onnx.Graph) string {
			e := g.Op("Erf", []string{g.Op("Mul", []string{"x", scalarConst(g, 1/math.Sqrt2)}, "act.scaled")}, "act.erf")
			h := g.Op("Mul", []string{"x", g.Op("Add", []string{e, scalarConst(g, 1)}, "act.erf1")}, "act.xerf")
			return g.Op("Mul", []string{"u", g.Op("Mul", []string{h, scalarConst(g, 0.5)}, "act")}, "y")
		},
		fuse: kernels.FuseGelu, fused: "ai.migu.Gelu",
		ref: func(in []float64) float64 { return in[1] * 0.5 * in[0] * (1 + math.Erf(in[0]/math.Sqrt2)) },
		lo:  -5, hi: 5,
	},
}

// geluTanhOps writes exporters.Builder.GELUTanh of x, with cubic for its
// 0.044715, into g and returns its output, named out.
func geluTanhOps(g *onnx.Graph, x string, cubic float64, out string) string {
	x3 := g.Op("Mul", []string{g.Op("Mul", []string{x, x}, out+".x2"), x}, out+".x3")
	inner := g.Op("Add", []string{x, g.Op("Mul", []string{x3, scalarConst(g, cubic)}, out+".cubic")}, out+".inner")
	t := g.Op("Tanh", []string{g.Op("Mul", []string{inner, scalarConst(g, math.Sqrt(2/math.Pi))}, out+".arg")}, out+".tanh")
	h := g.Op("Mul", []string{x, g.Op("Add", []string{t, scalarConst(g, 1)}, out+".tanh1")}, out+".xt")
	return g.Op("Mul", []string{h, scalarConst(g, 0.5)}, out)
}

// geluTanhRef is the tanh GELU of in[0] in float64.
func geluTanhRef(in []float64) float64 {
	x := in[0]
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// buildAct is buildRMS for an activation: y = act(inputs), a loss
// Σ y ⊙ r, and the gradient of every input; with fused, the activation is
// rewritten to its ai.migu kernel first. Outputs: y, then d<input> per
// input.
func buildAct(t testing.TB, a activation, shape []int64, r []float32, fused bool) graphFile {
	t.Helper()
	m := onnx.New("act", nil)
	g := m.Graph()
	for _, in := range a.inputs {
		g.AddInput(in, onnx.Float, dimsOf(shape))
	}
	y := a.build(g)
	loss := weightedLoss(g, y, shape, r)
	g.AddOutput(y, onnx.Float, dimsOf(shape))
	params := make([]wrt, len(a.inputs))
	for i, in := range a.inputs {
		params[i] = wrt{in, shape}
	}
	return withGradient(t, m, loss, false, params, fusedBy(fused, a.fuse), 1)
}

// runAct runs a graph of buildAct on the given inputs (in a.inputs'
// order) and returns its outputs.
func runAct(t testing.TB, a activation, path, lib string, threads int, shape []int64, in [][]float32) [][]float32 {
	t.Helper()
	feeds := make([]feed, len(a.inputs))
	for i, name := range a.inputs {
		feeds[i] = feed{name, shape, in[i]}
	}
	return runGraph(t, path, lib, threads, feeds...)
}

// actShapes include sizes below, at and above the kernels' element block
// (8192) and vector widths.
var actShapes = [][]int64{{2, 3, 8}, {1, 5, 13}, {3, 7, 64}, {2, 40, 576}, {37, 3}, {4, 1, 1, 33}}

// The fused activation kernels against the standard-op formulation (ORT's
// own Sigmoid, Erf and Tanh and migu's gradient rules), forward and
// backward, on random inputs over the range where the functions bend:
// equal to 1e-5 of the tensor's largest magnitude (at least 1), float32
// rounding of ORT's and our own exp/erf/tanh approximations.
func TestActivationsMatchStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, a := range activations {
		for _, shape := range actShapes {
			t.Run(a.name+"/"+fmt.Sprint(shape), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(numel(shape)), 5))
				n := numel(shape)
				in := make([][]float32, len(a.inputs))
				for i := range in {
					in[i] = random(rng, n, a.lo, a.hi)
				}
				r := random(rng, n, -1, 1)
				std := buildAct(t, a, shape, r, false)
				fused := buildAct(t, a, shape, r, true)
				if fused.nodes[a.fused] != 1 || fused.nodes[a.fused+"Grad"] != 1 || fused.nodes["Sigmoid"]+fused.nodes["Erf"]+fused.nodes["Tanh"] != 0 {
					t.Fatalf("fused graph's nodes: %v", fused.nodes)
				}
				if std.nodes[a.fused] != 0 {
					t.Fatalf("standard graph holds fused nodes: %v", std.nodes)
				}
				want := runAct(t, a, std.path, "", 1, shape, in)
				for _, threads := range []int{1, 2} {
					got := runAct(t, a, fused.path, lib, threads, shape, in)
					for i := range want {
						name := "y"
						if i > 0 {
							name = "d" + a.inputs[i-1]
						}
						if err := closeTo(got[i], want[i], 1e-5); err != nil {
							t.Errorf("%d threads: %s: %v", threads, name, err)
						}
					}
				}
			})
		}
	}
}

// The fused kernels against a float64 reference: the forward to 1e-6 of
// max(1, |y|), and the backward kernel's gradients against central finite
// differences of the reference to 2e-5 (the loss is Σ r ⊙ act, so each
// input's gradient is r times the activation's partial derivative).
func TestActivationGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	shape := []int64{3, 5, 41}
	for _, a := range activations {
		t.Run(a.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 11))
			n := numel(shape)
			in32 := make([][]float32, len(a.inputs))
			for i := range in32 {
				in32[i] = random(rng, n, a.lo, a.hi)
			}
			// Values where the approximations change branch or saturate.
			for k, v := range []float32{0, 1e-4, -1e-4, 0.7, 1.0, 1.4142, -1.4142, 2.9, 5.6, -5.7, 12, -12, 40, -40} {
				in32[0][k] = v
			}
			r32 := random(rng, n, -1, 1)
			got := runAct(t, a, buildAct(t, a, shape, r32, true).path, lib, 2, shape, in32)
			in := make([][]float64, len(in32))
			for i := range in {
				in[i] = widen(in32[i])
			}
			at := func(k int) []float64 {
				v := make([]float64, len(in))
				for i := range in {
					v[i] = in[i][k]
				}
				return v
			}
			for k := range n {
				y := a.ref(at(k))
				if e := math.Abs(float64(got[0][k]) - y); !(e <= 1e-6*math.Max(1, math.Abs(y))) {
					t.Fatalf("y[%d] = %.9g at %v, float64 reference %.9g (error %.2g)", k, got[0][k], at(k), y, e)
				}
			}
			// Finite differences per element: the activation is
			// elementwise, so ∂loss/∂in_i[k] = r[k] ∂act/∂in_i at k.
			const h = 1e-6
			for i, name := range a.inputs {
				for k := range n {
					v := at(k)
					v[i] += h
					up := a.ref(v)
					v[i] -= 2 * h
					down := a.ref(v)
					fd := float64(r32[k]) * (up - down) / (2 * h)
					g := float64(got[1+i][k])
					if e := math.Abs(g - fd); !(e <= 2e-5*math.Max(1, math.Abs(fd))) {
						t.Fatalf("d loss/d %s[%d] at %v: fused kernel %.9g, finite differences %.9g (error %.2g)", name, k, at(k), g, fd, e)
					}
				}
			}
		})
	}
}

// ai.migu.Gelu takes approximate "none" (also when absent) or "tanh", as
// ONNX's Gelu does; anything else fails when ORT creates the kernel,
// rather than silently computing the erf form.
func TestGeluApproximateAttribute(t *testing.T) {
	lib := withKernels(t)
	x := []float32{-1, 0.5, 2}
	for _, c := range []struct {
		approx string // "" leaves the attribute out
		ref    func(float64) float64
	}{
		{"", activations[1].ref1()}, {"none", activations[1].ref1()}, {"tanh", activations[2].ref1()},
		{"exact", nil}, {"tanh-approximation", nil},
	} {
		t.Run(c.approx, func(t *testing.T) {
			m := onnx.New("gelu", nil)
			g := m.Graph()
			g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(3)})
			var attrs []onnx.Attr
			if c.approx != "" {
				attrs = append(attrs, onnx.AttrString("approximate", c.approx))
			}
			g.Node("Gelu", []string{"x"}, []string{"y"}, "gelu", attrs...)
			g.P.Node[0].Domain = proto.String(onnx.DomainMigu)
			m.SetOpset(onnx.DomainMigu, kernels.Opset)
			g.AddOutput("y", onnx.Float, onnx.Shape{onnx.D(3)})
			path := filepath.Join(t.TempDir(), "gelu.onnx")
			if err := m.Save(path, onnx.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			y, err := runGelu(path, lib, x)
			switch {
			case c.ref == nil && err == nil:
				t.Fatalf("approximate %q was accepted", c.approx)
			case c.ref == nil && !strings.Contains(err.Error(), "approximate"):
				t.Fatalf("approximate %q: %v, want an error naming the attribute", c.approx, err)
			case c.ref != nil && err != nil:
				t.Fatalf("approximate %q: %v", c.approx, err)
			}
			for i, v := range y {
				if want := c.ref(float64(x[i])); math.Abs(float64(v)-want) > 1e-6 {
					t.Errorf("y[%d] = %.8g, want %.8g", i, v, want)
				}
			}
		})
	}
}

// runGelu runs the one-node graph of TestGeluApproximateAttribute.
func runGelu(path, lib string, x []float32) ([]float32, error) {
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1, CustomOps: []string{lib}})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	xv, err := ort.NewTensor(x, int64(len(x)))
	if err != nil {
		return nil, err
	}
	defer xv.Close()
	outs, err := s.Run(map[string]ort.Value{"x": xv})
	if err != nil {
		return nil, err
	}
	defer outs[0].Close()
	return append([]float32(nil), outs[0].(*ort.Tensor[float32]).Data()...), nil
}

// ref1 is a one-input activation's reference.
func (a activation) ref1() func(float64) float64 {
	return func(x float64) float64 { return a.ref([]float64{x}) }
}

// A gate of another shape than X, and a GeluGrad or GeluTaps whose
// outputs do not match its inputs (dU given U and only then; a sum per
// input), are refused with a message naming the op and the rule.
func TestGatedGeluRefusesBadInputs(t *testing.T) {
	lib := withKernels(t)
	for _, c := range []struct {
		op     string
		inputs map[string][]int64 // by input name, in the order dy, x, u
		nout   int
		want   string
	}{
		{"Gelu", map[string][]int64{"x": {2, 3}, "u": {2, 4}}, 1, "U must have X's shape"},
		{"GeluGrad", map[string][]int64{"dy": {2, 3}, "x": {2, 3}, "u": {3, 2}}, 2, "U must have X's shape"},
		{"GeluGrad", map[string][]int64{"dy": {2, 3}, "x": {2, 3}, "u": {2, 3}}, 1, "dU is the second output"},
		{"GeluGrad", map[string][]int64{"dy": {2, 3}, "x": {2, 3}}, 2, "dU is the second output"},
		{"GeluTaps", map[string][]int64{"x": {2, 3}, "u": {2, 3}}, 2, "one sum per input"},
		{"GeluTaps", map[string][]int64{"x": {2, 3}, "u": {1, 3}}, 3, "U must have X's shape"},
	} {
		t.Run(fmt.Sprintf("%s/%d-inputs/%d-outputs", c.op, len(c.inputs), c.nout), func(t *testing.T) {
			m := onnx.New("bad", nil)
			g := m.Graph()
			var ins []string
			var feeds []feed
			for _, name := range []string{"dy", "x", "u"} {
				if s, ok := c.inputs[name]; ok {
					ins = append(ins, name)
					g.AddInput(name, onnx.Float, dimsOf(s))
					feeds = append(feeds, feed{name, s, make([]float32, numel(s))})
				}
			}
			outs := make([]string, c.nout)
			for i := range outs {
				outs[i] = fmt.Sprintf("out%d", i)
				g.AddOutput(outs[i], onnx.Float, nil)
			}
			g.Node(c.op, ins, outs, "gelu", onnx.AttrString("approximate", kernels.GeluTanh))
			g.P.Node[0].Domain = proto.String(onnx.DomainMigu)
			m.SetOpset(onnx.DomainMigu, kernels.Opset)
			_, err := runGraphErr(t, saveGraph(t, m).path, lib, 1, feeds...)
			if err == nil || !strings.Contains(err.Error(), "ai.migu."+c.op+": ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming ai.migu.%s and %q", err, c.op, c.want)
			}
		})
	}
}
