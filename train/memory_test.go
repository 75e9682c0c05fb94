package train

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/shapes"
)

// The simulated peak of small graphs whose allocations can be counted by
// hand: x is [4] float32 (16 bytes), so every intermediate is 16 bytes.
func TestActivationPeak(t *testing.T) {
	type node struct {
		op       string
		in, outs []string
	}
	cases := []struct {
		name  string
		nodes []node
		want  int64
	}{
		// a and b are both alive when c is made; then only c, then d.
		{"chain", []node{{"Neg", []string{"x"}, []string{"a"}}, {"Sigmoid", []string{"x"}, []string{"b"}},
			{"Max", []string{"a", "b"}, []string{"c"}}, {"Abs", []string{"c"}, []string{"y"}}}, 48},
		// Reshape aliases its input, Add writes over the dying a.
		{"alias_inplace", []node{{"Neg", []string{"x"}, []string{"a"}}, {"Reshape", []string{"a", "shape"}, []string{"r"}},
			{"Add", []string{"r", "x"}, []string{"s"}}, {"Abs", []string{"s"}, []string{"y"}}}, 16},
		// a is read again at the end: the execution order computes it
		// after the long chain (the producer with the higher index
		// first), so only two values are ever alive.
		{"late_use", []node{{"Neg", []string{"x"}, []string{"a"}}, {"Abs", []string{"x"}, []string{"b"}},
			{"Max", []string{"b", "x"}, []string{"c"}}, {"Max", []string{"c", "x"}, []string{"d"}},
			{"Max", []string{"d", "a"}, []string{"y"}}}, 32},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := onnx.New("g", nil)
			g := m.Graph()
			g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(4)})
			g.ConstInt64("shape", []int64{1}, 4)
			for _, n := range tc.nodes {
				g.Op(n.op, n.in, n.outs[0])
			}
			// Op names outputs after the hint; map them back.
			for i, n := range g.P.Node {
				if i < len(tc.nodes) {
					old := n.Output[0]
					g.Rename(old, tc.nodes[i].outs[0])
				}
			}
			g.AddOutput("y", onnx.Float, onnx.Shape{onnx.D(4)})
			info, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			peak, unsized := activationPeak(g, info, nil)
			if unsized != 0 || peak != tc.want {
				t.Fatalf("peak %d bytes (%d unsized), want %d", peak, unsized, tc.want)
			}
		})
	}
}

// NewTrainer plans memory before it allocates anything and refuses a plan
// above the limit with one bad-input line that says what to try; the plan
// of a tiny llama counts its parameters exactly.
func TestMemoryPlanRefuses(t *testing.T) {
	_, model := tinyModel(t)
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	plan, err := FullPlan(m, man)
	if err != nil {
		t.Fatal(err)
	}
	var params int64
	for _, name := range plan.Trainable {
		n, _ := onnx.NumElements(m.Graph().Initializer(name).Dims)
		params += n
	}
	_, err = NewTrainer(plan, t.TempDir(), Config{GradAccum: 1, Optim: DefaultAdamW(), PlanBatch: 8, PlanSeq: 64, MemoryLimit: 1 << 20, Threads: 1})
	if err == nil || !badinput.Is(err) {
		t.Fatalf("a 1 MB limit gave %v, want a bad-input refusal", err)
	}
	for _, want := range []string{"planned memory", fmt.Sprintf(" %d trained parameters", params), "more than the 1 MB available (memory_limit); try "} {
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("refusal %q lacks %q or is not one line", err, want)
		}
	}
}

// With half-precision frozen weights, no backward node reads a float32
// weight copy made in the forward pass: each is cast again where the
// backward pass needs it, so the copies never live through the step.
func TestBackwardRecastsFrozenWeights(t *testing.T) {
	hf, _ := tinyModel(t)
	model := filepath.Join(t.TempDir(), "bf16")
	if _, err := exporters.ExportWith(hf, model, exporters.ExportOptions{DType: exporters.DTypeBF16}); err != nil {
		t.Fatal(err)
	}
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Train the norms only: every linear weight is frozen, and the
	// backward pass still multiplies by each of them.
	var norms []string
	for _, init := range m.Graph().P.Initializer {
		if strings.Contains(init.GetName(), "norm") {
			norms = append(norms, init.GetName())
		}
	}
	art, err := Build(m, man, GraphOptions{Names: norms})
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph()
	copies := weightCopies(g, art.Nodes)
	if len(copies) < len(man.Linears) {
		t.Fatalf("%d weight copies for %d linears", len(copies), len(man.Linears))
	}
	recast := 0
	for i, n := range g.P.Node {
		if strings.HasPrefix(n.GetName(), grad.ClonePrefix) && n.GetOpType() == "Cast" {
			recast++
		}
		if i < art.Nodes {
			continue
		}
		for _, in := range n.Input {
			if copies[in] && !strings.HasPrefix(n.GetName(), grad.ClonePrefix) {
				t.Fatalf("backward node %s reads the forward copy %s", n.GetName(), in)
			}
		}
	}
	if recast == 0 {
		t.Fatal("the backward pass casts no weight again")
	}
}

// The memory plan sizes the head on labelled rows as if every token were
// labelled: its activations are those of the head on every row, and the
// one value left unsized is the loss gradient's [R, 1] column (R floats;
// shape inference cannot tell that a zero there is an empty axis, so the
// gradient's Reshape to it gets fresh dims).
func TestMemoryPlanSizesLabelledRows(t *testing.T) {
	for _, arch := range []string{"llama", "roberta", "t5"} {
		t.Run(arch, func(t *testing.T) {
			_, model := testfix.TinyModel(t, arch)
			plans := map[bool]*MemoryPlan{}
			for _, all := range []bool{true, false} {
				tr := newFullTrainer(t, model, Config{GradAccum: 1, Optim: DefaultAdamW(), UseMIGU: true, T: 0.7, Mode: migu.ModeGrad,
					PlanBatch: 8, PlanSeq: 64, Threads: 1, AllRows: all})
				plans[all] = tr.Memory
				tr.Close()
			}
			all, rows := plans[true], plans[false]
			if all.Unsized != 0 || rows.Unsized > 1 || rows.Activations < all.Activations*9/10 {
				t.Fatalf("activations planned on every row %d bytes (%d values unsized), on labelled rows %d (%d unsized)",
					all.Activations, all.Unsized, rows.Activations, rows.Unsized)
			}
		})
	}
}

// A bf16 run that reads its weights from bf16 twins plans 2 more bytes of
// state per twinned parameter, and sizes every value of its graph, the
// ToBF16 copies included.
func TestMemoryPlanCountsBF16Twins(t *testing.T) {
	testenv.BF16(t)
	_, model := testfix.TinyModel(t, "llama")
	plans := map[string]*MemoryPlan{}
	var twinned int64
	for _, sharing := range []string{BF16ShareNever, BF16ShareAlways} {
		tr := newFullTrainer(t, model, Config{GradAccum: 1, Optim: DefaultAdamW(), Precision: PrecisionBF16,
			PlanBatch: 8, PlanSeq: 64, Threads: 1, BF16Sharing: sharing})
		plans[sharing] = tr.Memory
		if sharing == BF16ShareAlways {
			for _, p := range tr.Art.Params {
				if p.BF16 != "" {
					n, _ := onnx.NumElements(p.Shape)
					twinned += n
				}
			}
		}
		tr.Close()
	}
	each, once := plans[BF16ShareNever], plans[BF16ShareAlways]
	if twinned == 0 || once.State-each.State != 2*twinned || each.State != 16*each.Trainable {
		t.Fatalf("state %d bytes without twins, %d with twins of %d parameters (of %d)", each.State, once.State, twinned, each.Trainable)
	}
	if once.Unsized > each.Unsized {
		t.Fatalf("%d values unsized with shared operands, %d without", once.Unsized, each.Unsized)
	}
}
