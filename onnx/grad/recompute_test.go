package grad

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// blocksGraph is a small float32 graph of two residual blocks between
// boundaries b0, b1 and b2: block 1 is MatMul, Tanh and LayerNormalization
// (whose gradient reads the saved mean and inverse deviation, outputs the
// forward node gains in Differentiate); block 2 is MatMul, Dropout in
// training mode, Split and Mul. Before b0 and after b2 sit a scaling and
// the loss.
type blocksGraph struct {
	m      *onnx.Model
	loss   string
	wrt    []string
	b      [3]string                     // the block boundaries
	random map[string]bool               // Dropout's outputs, which are never cloned
	block  [2]map[*onnxpb.NodeProto]bool // each block's forward nodes
	values map[string][]float32
	shapes map[string][]int64
	diff   *Result
}

func newBlocksGraph(t *testing.T) *blocksGraph {
	t.Helper()
	const rows, d = 4, 6
	bg := &blocksGraph{m: onnx.New("blocks", nil), values: map[string][]float32{}, shapes: map[string][]int64{},
		block: [2]map[*onnxpb.NodeProto]bool{{}, {}}}
	g := bg.m.Graph()
	rng := rand.New(rand.NewPCG(3, 4))
	input := func(name string, shape ...int64) string {
		n, _ := onnx.NumElements(shape)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.Float64()*2 - 1)
		}
		g.AddInput(name, onnx.Float, dimsOf(shape))
		bg.values[name], bg.shapes[name] = v, shape
		bg.wrt = append(bg.wrt, name)
		return name
	}
	x, w1, w2, gamma := input("x", rows, d), input("w1", d, d), input("w2", d, d), input("gamma", d)
	mark := func(k int) func() {
		from := len(g.P.Node)
		return func() {
			for _, n := range g.P.Node[from:] {
				bg.block[k][n] = true
			}
		}
	}
	b0 := g.Op("Mul", []string{x, g.Const("scale", nil, 1.5)}, "b0")
	bg.b[0] = b0

	done := mark(0)
	t1 := g.Op("Tanh", []string{g.Op("MatMul", []string{b0, w1}, "m1")}, "t1")
	y1 := g.Op("LayerNormalization", []string{t1, gamma}, "ln", onnx.AttrInt("axis", -1))
	bg.b[1] = g.Op("Add", []string{b0, y1}, "b1")
	done()

	done = mark(1)
	m2 := g.Op("MatMul", []string{bg.b[1], w2}, "m2")
	drop := g.OpN("Dropout", []string{m2, g.Const("ratio", nil, 0.25), g.Op("Constant", nil, "training", onnx.AttrTensor("value", onnx.NewTensor("v", onnx.Bool, nil, []byte{1})))},
		2, "drop", onnx.AttrInt("seed", 7))
	bg.random = map[string]bool{drop[0]: true, drop[1]: true}
	halves := g.OpN("Split", []string{drop[0], g.ConstInt64("halves", []int64{2}, d/2, d/2)}, 2, "split", onnx.AttrInt("axis", 1))
	c2 := g.Op("Concat", []string{g.Op("Mul", []string{halves[0], halves[1]}, "prod"), halves[1]}, "c2", onnx.AttrInt("axis", 1))
	bg.b[2] = g.Op("Add", []string{bg.b[1], c2}, "b2")
	done()

	r := make([]float32, rows*d)
	for i := range r {
		r[i] = float32(rng.Float64()*2 - 1)
	}
	g.AddInitializer(onnx.Float32Tensor("r", []int64{rows, d}, r))
	sum := g.Op("ReduceSum", []string{g.Op("Mul", []string{bg.b[2], "r"}, "weighted")}, "sum", onnx.AttrInt("keepdims", 0))
	bg.loss = g.Op("Reshape", []string{sum, g.ConstInt64("one", []int64{1}, 1)}, "loss")
	g.AddOutput(bg.loss, onnx.Float, onnx.Shape{onnx.D(1)})

	shapes, err := shapes.Infer(bg.m)
	if err != nil {
		t.Fatal(err)
	}
	if bg.diff, err = Differentiate(bg.m, shapes, bg.loss, bg.wrt); err != nil {
		t.Fatal(err)
	}
	return bg
}

// segments makes one segment per chosen block: every output of its nodes
// but the block's output.
func (bg *blocksGraph) segments(blocks ...int) []Segment {
	var out []Segment
	for _, k := range blocks {
		s := Segment{Values: map[string]bool{}, Entry: []string{bg.b[k]}, Exit: bg.b[k+1]}
		for n := range bg.block[k] {
			for _, o := range n.Output {
				if o != bg.b[k+1] {
					s.Values[o] = true
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// run saves the graph with its loss and gradients as outputs and runs it in
// ONNX Runtime with its graph optimizations off, returning the outputs by
// name. Optimized, ONNX Runtime fuses originals and clones differently
// (the Mul before the forward MatMul folds into it, the clone's cannot
// through the gate), which changes float rounding.
func (bg *blocksGraph) run(t *testing.T) map[string][]float32 {
	t.Helper()
	initORT(t)
	g := bg.m.Graph()
	for _, w := range bg.wrt {
		g.AddOutput(bg.diff.Grads[w], onnx.Float, dimsOf(bg.shapes[w]))
	}
	path := filepath.Join(t.TempDir(), "g.onnx")
	if err := bg.m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1, OptLevel: ort.OptDisabled})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := map[string]ort.Value{}
	for _, w := range bg.wrt {
		v, err := ort.NewTensor(append([]float32(nil), bg.values[w]...), bg.shapes[w]...)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		in[w] = v
	}
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string][]float32{}
	for i, info := range s.Outputs() {
		res[info.Name] = append([]float32(nil), outs[i].(*ort.Tensor[float32]).Data()...)
		outs[i].Close()
	}
	return res
}

// Recompute rewires the backward pass to clones of the segments' forward
// values, gates every clone behind the gradient of its segment's exit, and
// loss and gradients stay bit-identical to the graph that keeps the
// values: the clones compute the same operations on the same inputs.
func TestRecompute(t *testing.T) {
	want := newBlocksGraph(t).run(t)
	cases := []struct {
		name   string
		blocks []int
		// clones are the op types cloned, in the order the backward pass
		// first needs them; Dropout, being random, never is.
		clones string
		// gates: block 1's entry, and block 2's Dropout output (block 2
		// clones only the Split, which reads it).
		gates int
	}{
		{"nothing", nil, "", 0},
		{"block 1", []int{0}, "MatMul Tanh LayerNormalization", 1},
		{"blocks 1 and 2", []int{0, 1}, "Split MatMul Tanh LayerNormalization", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bg := newBlocksGraph(t)
			g := bg.m.Graph()
			segments := bg.segments(c.blocks...)
			nodes := len(g.P.Node)
			rc, err := Recompute(g, bg.diff, segments)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Gates != c.gates {
				t.Errorf("%d gates, want %d", rc.Gates, c.gates)
			}
			if added := len(g.P.Node) - nodes; added < rc.Nodes+rc.Gates {
				t.Errorf("%d nodes added for %d clones and %d gates", added, rc.Nodes, rc.Gates)
			}
			after := ancestry(g)
			var ops []string
			for _, n := range g.P.Node {
				if strings.HasPrefix(n.GetName(), ClonePrefix) {
					ops = append(ops, n.GetOpType())
					checkClone(t, n, segments, bg.diff, after)
				}
			}
			if got := strings.Join(ops, " "); got != c.clones {
				t.Errorf("cloned %q, want %q", got, c.clones)
			}
			for _, n := range g.P.Node[bg.diff.Forward:] {
				if strings.HasPrefix(n.GetName(), ClonePrefix) || strings.HasPrefix(n.GetName(), GatePrefix) {
					continue
				}
				for _, in := range n.Input {
					for _, s := range segments {
						if s.Values[in] && !bg.random[in] {
							t.Errorf("%s still reads the forward value %s", onnx.NodeLabel(n), in)
						}
					}
				}
			}
			got := bg.run(t)
			for name, w := range want {
				for i := range w {
					if got[name][i] != w[i] {
						t.Errorf("%s[%d] = %.9g, %.9g without recomputation", name, i, got[name][i], w[i])
						break
					}
				}
			}
		})
	}
}

// ancestry maps each node's first output to the set of values it is
// computed from.
func ancestry(g *onnx.Graph) func(node *onnxpb.NodeProto, value string) bool {
	producer := g.Producers()
	return func(n *onnxpb.NodeProto, value string) bool {
		seen := map[*onnxpb.NodeProto]bool{}
		stack := []*onnxpb.NodeProto{n}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[x] {
				continue
			}
			seen[x] = true
			for _, in := range x.Input {
				if in == value {
					return true
				}
				if p := producer[in]; p != nil {
					stack = append(stack, p)
				}
			}
		}
		return false
	}
}

// checkClone checks that a clone renames every output of its original
// (LayerNormalization's mean and inverse deviation included) and cannot
// run before the gradient of its segment's exit exists.
func checkClone(t *testing.T, n *onnxpb.NodeProto, segments []Segment, d *Result, after func(*onnxpb.NodeProto, string) bool) {
	t.Helper()
	if n.GetOpType() == "LayerNormalization" && len(n.Output) != 3 {
		t.Errorf("the LayerNormalization clone has %d outputs, want 3 (y, mean, inverse deviation)", len(n.Output))
	}
	for _, o := range n.Output {
		if o != "" && !strings.HasPrefix(o, ClonePrefix) {
			t.Errorf("clone %s writes %s, a name of the forward pass", onnx.NodeLabel(n), o)
		}
	}
	for _, s := range segments {
		if s.Values[strings.TrimPrefix(n.Output[0], ClonePrefix)] && !after(n, d.Upstream[s.Exit]) {
			t.Errorf("clone %s does not wait for the gradient of %s", onnx.NodeLabel(n), s.Exit)
		}
	}
}

// A backward start out of range, or a value in two segments, is an error.
func TestRecomputeRejects(t *testing.T) {
	bg := newBlocksGraph(t)
	g := bg.m.Graph()
	for _, first := range []int{-1, len(g.P.Node) + 1} {
		d := *bg.diff
		d.Forward = first
		if _, err := Recompute(g, &d, bg.segments(0)); err == nil {
			t.Errorf("Recompute from node %d of %d succeeded", first, len(g.P.Node))
		}
	}
	twice := append(bg.segments(0), bg.segments(0)...)
	if _, err := Recompute(g, bg.diff, twice); err == nil || !strings.Contains(err.Error(), "two recomputed segments") {
		t.Errorf("a value in two segments: %v", err)
	}
}
