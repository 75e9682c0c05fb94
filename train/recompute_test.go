package train

import (
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
)

// recomputeTol bounds max |with − without| / max(max |without|, 1e-3)
// for the loss, every gradient and every tap: what float32 rounding can
// differ by when ONNX Runtime fuses the forward nodes and their clones
// differently. (The floor keeps gradients that are zero up to rounding,
// RoBERTa's key biases, from dividing noise by noise.)
const recomputeTol = 1e-5

// With --recompute layers the training graph gives the loss, every
// gradient and every MIGU magnitude of the graph without it, to float32
// rounding, for each architecture, full fine-tuning and LoRA (on every
// linear, B drawn at random so that A's gradient is not zero; with
// dropout, which is never recomputed; with feed-forward layers widened by
// HiddenPad), while its backward pass reads no value from inside a block:
// only clones.
func TestRecomputeLayersKeepsGradients(t *testing.T) {
	feeds := tinyFeeds()
	cases := []struct {
		arch, method string
		dropout      float64
		pad          HiddenPad
	}{
		{"llama", "full", 0, HiddenPad{}}, {"llama", "full", 0, forcedPad}, {"llama", "lora", 0, HiddenPad{}}, {"llama", "lora", 0.1, HiddenPad{}},
		{"t5", "full", 0, HiddenPad{}}, {"t5", "lora", 0, HiddenPad{}},
		{"roberta", "full", 0, HiddenPad{}}, {"roberta", "lora", 0, HiddenPad{}},
	}
	models := map[string]string{}
	outer := t
	for _, c := range cases {
		name := c.arch + "/" + c.method
		if c.dropout > 0 {
			name += "+dropout"
		}
		if c.pad == forcedPad {
			name += "+widened"
		}
		t.Run(name, func(t *testing.T) {
			if models[c.arch] == "" {
				_, models[c.arch] = testfix.TinyModel(outer, c.arch)
			}
			spec := recomputeSpec{model: models[c.arch], method: c.method, dropout: c.dropout, pad: c.pad, feeds: feeds[c.arch]}
			art, want, _ := spec.run(t, RecomputeNone)
			rart, got, g := spec.run(t, RecomputeLayers)
			if rart.Recompute != RecomputeLayers || rart.RecomputedNodes == 0 {
				t.Fatalf("recompute %q cloned %d nodes", rart.Recompute, rart.RecomputedNodes)
			}
			checkNoBlockValueRead(t, g, spec.manifest(t))
			worst := worstRelDiff(t, art, got, want)
			if len(art.Taps) == 0 {
				t.Error("no MIGU taps to compare")
			}
			t.Logf("%d params, %d taps, %d nodes recomputed: max relative difference %.2g", len(art.Params), len(art.Taps), rart.RecomputedNodes, worst)
		})
	}
}

// recomputeSpec is one training graph to build and run.
type recomputeSpec struct {
	model, method string
	dropout       float64
	pad           HiddenPad
	feeds         map[string][][]int64
	// kernels, when set, is the fused-kernel library: the graph is built
	// with GraphOptions.Fused and the session loads it.
	kernels string
	// bf16, when set, is the bf16 library: the graph is built with
	// Precision bf16 and the session loads it.
	bf16 string
	// threads are ORT's intra-op threads (0: 1).
	threads int
	// oneDNN, with oneDNNLib (the bf16 library), moves the products of
	// those roles to MatMulF32 (GraphOptions.OneDNN) and the session loads
	// the library.
	oneDNN    kernels.F32Roles
	oneDNNLib string
	// allRows runs the head on every token (GraphOptions.AllRows).
	allRows bool
	// shareBF16 rounds shared bf16 operands once (GraphOptions.ShareBF16).
	shareBF16 bool
	// biasAdds keeps the bias Adds apart from the oneDNN products
	// (GraphOptions.BiasAdds).
	biasAdds bool
	// fusedAttention fuses attention (GraphOptions.FusedAttention).
	fusedAttention bool
}

func (s recomputeSpec) manifest(t *testing.T) *modeldir.Manifest {
	t.Helper()
	man, err := modeldir.ReadManifest(s.model)
	if err != nil {
		t.Fatal(err)
	}
	return man
}

// run builds the graph with the given recomputation, runs it once and
// returns the artifact, the outputs by name and the built graph.
func (s recomputeSpec) run(t *testing.T, recompute string) (*Artifact, map[string][]float32, *onnx.Graph) {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	man := s.manifest(t)
	m, err := onnx.Load(filepath.Join(s.model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	names, points := s.trainable(t, m, man)
	values := map[string][]float32{}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, name := range names {
		v, err := m.Float32s(m.Graph().Initializer(name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".lora_B.weight") {
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.05)
			}
		}
		values[name] = v
	}
	art, err := Build(m, man, GraphOptions{Names: names, Taps: true, TapPoints: points, HiddenPad: s.pad, Recompute: recompute, Fused: s.kernels != "", FusedTaps: s.kernels != "", Precision: precisionOf(s.bf16), OneDNN: s.oneDNN, AllRows: s.allRows, BiasAdds: s.biasAdds, ShareBF16: s.shareBF16, FusedAttention: s.fusedAttention})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), GraphFile)
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalAll, DataFile: GraphData}); err != nil {
		t.Fatal(err)
	}
	so := ort.SessionOptions{Threads: max(s.threads, 1)}
	for _, lib := range []string{s.kernels, s.bf16, s.oneDNNLib} {
		if lib != "" && !slices.Contains(so.CustomOps, lib) {
			so.CustomOps = append(so.CustomOps, lib)
		}
	}
	sess, err := ort.NewSession(path, so)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	in := map[string]ort.Value{}
	for _, p := range art.Params {
		v, err := ort.NewTensor(values[p.Name], p.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		in[p.Name] = v
		if p.BF16 != "" {
			twin := make([]uint16, len(values[p.Name]))
			roundBF16(twin, values[p.Name])
			if in[p.BF16], err = ort.NewBFloat16Tensor(twin, p.Shape...); err != nil {
				t.Fatal(err)
			}
		}
	}
	for w, twin := range art.FrozenBF16 {
		vals, err := m.Float32s(m.Graph().Initializer(w))
		if err != nil {
			t.Fatal(err)
		}
		bits := make([]uint16, len(vals))
		roundBF16(bits, vals)
		if in[twin], err = ort.NewBFloat16Tensor(bits, m.Graph().Initializer(w).Dims...); err != nil {
			t.Fatal(err)
		}
	}
	for name, rows := range s.feeds {
		var flat []int64
		for _, r := range rows {
			flat = append(flat, r...)
		}
		v, err := ort.NewTensor(flat, int64(len(rows)), int64(len(rows[0])))
		if err != nil {
			t.Fatal(err)
		}
		in[name] = v
	}
	outs, err := sess.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string][]float32{}
	for i, info := range sess.Outputs() {
		res[info.Name] = append([]float32(nil), outs[i].(*ort.Tensor[float32]).Data()...)
		outs[i].Close()
	}
	for _, v := range in {
		v.Close()
	}
	return art, res, m.Graph()
}

// trainable picks the trained tensors and tap points: every parameter, or
// a LoRA adapter injected on every linear layer.
func (s recomputeSpec) trainable(t *testing.T, m *onnx.Model, man *modeldir.Manifest) ([]string, []migu.Point) {
	t.Helper()
	if s.method == "full" {
		plan, err := FullPlan(m, man)
		if err != nil {
			t.Fatal(err)
		}
		return plan.Trainable, nil
	}
	a, err := lora.New(lora.Config{Targets: []string{lora.AllLinear}, R: 4, Alpha: 8, Dropout: s.dropout})
	if err != nil {
		t.Fatal(err)
	}
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: 1, Training: true})
	if err != nil {
		t.Fatal(err)
	}
	return inj.ParamNames(), inj.Points
}

// checkNoBlockValueRead checks that no backward node of a built graph
// reads a value computed inside a block (other than a Dropout's, which is
// kept), and that clones exist.
func checkNoBlockValueRead(t *testing.T, g *onnx.Graph, man *modeldir.Manifest) {
	t.Helper()
	var forward []*onnxpb.NodeProto
	isBackward := func(n *onnxpb.NodeProto) bool {
		for _, p := range []string{"bw/", "grad/", grad.ClonePrefix, grad.GatePrefix} {
			if strings.HasPrefix(n.GetName(), p) {
				return true
			}
		}
		return false
	}
	clones := 0
	for _, n := range g.P.Node {
		if !isBackward(n) {
			forward = append(forward, n)
		}
		if strings.HasPrefix(n.GetName(), grad.ClonePrefix) {
			clones++
		}
	}
	if clones == 0 {
		t.Error("no clone nodes in the graph")
	}
	segments, err := blockSegments(forward, man.Blocks)
	if err != nil {
		t.Fatal(err)
	}
	inside := map[string]bool{}
	for _, s := range segments {
		for v := range s.Values {
			inside[v] = true
		}
	}
	producer := g.Producers()
	for _, n := range g.P.Node {
		if !strings.HasPrefix(n.GetName(), "bw/") {
			continue
		}
		for _, in := range n.Input {
			if inside[in] && producer[in].GetOpType() != "Dropout" {
				t.Errorf("backward node %s reads %s, a value inside a block", onnx.NodeLabel(n), in)
			}
		}
	}
}

// relDiff returns max |got − want| / max(max |want|, 1e-3) and reports it
// when it is above recomputeTol.
// tinyFeeds is one padded batch of two rows per architecture, for the
// tests that compare two training graphs of the tiny models.
func tinyFeeds() map[string]map[string][][]int64 {
	ids := [][]int64{{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, 1, 1}}
	mask := [][]int64{{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}
	return map[string]map[string][][]int64{
		"llama":   {"input_ids": ids, "attention_mask": mask, "labels": {{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, -100, -100}}},
		"roberta": {"input_ids": ids, "attention_mask": mask, "labels": {{-100, 9, -100, 3, -100, -100}, {4, -100, -100, 6, -100, -100}}},
		"t5": {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": {{0, 7, 9, 2}, {0, 5, 1, 0}},
			"decoder_attention_mask": {{1, 1, 1, 1}, {1, 1, 1, 0}}, "labels": {{7, 9, 2, 1}, {5, 1, 2, -100}}},
	}
}

// worstRelDiff compares the loss, every gradient and every tap of art
// between two runs' outputs and returns the largest relative difference.
func worstRelDiff(t *testing.T, art *Artifact, got, want map[string][]float32) float64 {
	t.Helper()
	worst := math.Max(0, relDiff(t, "loss", got[art.Loss], want[art.Loss], recomputeTol))
	for _, p := range art.Params {
		worst = math.Max(worst, relDiff(t, "grad "+p.Name, got[p.Grad], want[p.Grad], recomputeTol))
	}
	for _, tap := range art.Taps {
		worst = math.Max(worst, relDiff(t, "tap "+tap.Name, got[tap.Output], want[tap.Output], recomputeTol))
	}
	return worst
}

// relDiff is max|got − want| over max(max|want|, 1e-3); above tol it is
// an error of the test.
func relDiff(t *testing.T, what string, got, want []float32, tol float64) float64 {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Errorf("%s: %d values, %d in the reference run", what, len(got), len(want))
		return math.Inf(1)
	}
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	rel := diff / math.Max(scale, 1e-3)
	if !(rel <= tol) {
		t.Errorf("%s: max |Δ| = %.3g at scale %.3g (relative %.2g > %g)", what, diff, scale, rel, tol)
	}
	return rel
}

// ONNX Runtime keeps the clones with its default optimizations: common
// subexpression elimination, which merges nodes of equal op and inputs,
// finds none to merge, since the clones read gated values. Checked on the
// graph ONNX Runtime optimised.
func TestClonesSurviveSessionOptimization(t *testing.T) {
	_, model := testfix.TinyModel(t, "llama")
	spec := recomputeSpec{model: model, method: "full"}
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	man := spec.manifest(t)
	names, _ := spec.trainable(t, m, man)
	art, err := Build(m, man, GraphOptions{Names: names, Taps: true, Recompute: RecomputeLayers})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, GraphFile)
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalAll, DataFile: GraphData}); err != nil {
		t.Fatal(err)
	}
	survivors := func(cfg map[string]string) int {
		optimized := filepath.Join(t.TempDir(), "optimized.onnx")
		cfg = maps.Clone(cfg)
		if cfg == nil {
			cfg = map[string]string{}
		}
		cfg["session.optimized_model_filepath"] = optimized
		s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1, Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		om, err := onnx.Load(optimized)
		if err != nil {
			t.Fatal(err)
		}
		defer om.Close()
		n := 0
		for _, node := range om.Graph().P.Node {
			if strings.HasPrefix(node.GetName(), grad.ClonePrefix) {
				n++
			}
		}
		return n
	}
	kept := survivors(nil)
	t.Logf("%d clones built, %d in ONNX Runtime's optimised graph", art.RecomputedNodes, kept)
	if kept < art.RecomputedNodes*9/10 {
		t.Errorf("only %d of %d clones survive ONNX Runtime's optimisations", kept, art.RecomputedNodes)
	}
}

// With --recompute layers the graph ends with the weight-gradient leaves,
// the one the backward pass reaches first (the head's) last, and then the
// MIGU taps, the first layer's last of all: the order in which ONNX
// Runtime's depth-first executor then runs them as early as it can.
func TestRecomputeSchedulesLeaves(t *testing.T) {
	_, model := testfix.TinyModel(t, "llama")
	spec := recomputeSpec{model: model, method: "full"}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	man := spec.manifest(t)
	names, _ := spec.trainable(t, m, man)
	art, err := Build(m, man, GraphOptions{Names: names, Taps: true, Recompute: RecomputeLayers})
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph()
	index := firstTapLast(t, g, art)
	grads := map[string]string{}
	for _, p := range art.Params {
		grads[p.Name] = p.Grad
	}
	order := []string{"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight", "lm_head.weight"}
	for i := 1; i < len(order); i++ {
		if a, b := index[grads[order[i-1]]], index[grads[order[i]]]; a >= b {
			t.Errorf("the gradient of %s is node %d, of %s node %d: want the later in the backward pass first", order[i-1], a, order[i], b)
		}
	}
	firstTap := len(g.P.Node)
	for _, tap := range art.Taps {
		firstTap = min(firstTap, index[tap.Output])
	}
	if index[grads["lm_head.weight"]] > firstTap {
		t.Errorf("a tap (node %d) comes before the head's gradient (node %d)", firstTap, index[grads["lm_head.weight"]])
	}
}

// Without recomputation the graph ends with the MIGU taps too, the first
// layer's last: ONNX Runtime's depth-first executor then runs each tap
// right after the forward pass computed its value, while the value is in
// cache, instead of after the whole backward pass (where the taps' inputs
// stayed alive for nothing). The weight-gradient leaves stay in place.
func TestTapsScheduledAfterTheirValues(t *testing.T) {
	_, model := testfix.TinyModel(t, "llama")
	spec := recomputeSpec{model: model, method: "full"}
	build := func(taps bool) (*Artifact, *onnx.Graph) {
		m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		man := spec.manifest(t)
		names, _ := spec.trainable(t, m, man)
		art, err := Build(m, man, GraphOptions{Names: names, Taps: taps})
		if err != nil {
			t.Fatal(err)
		}
		return art, m.Graph()
	}
	art, g := build(true)
	index := firstTapLast(t, g, art)
	firstTap := len(g.P.Node)
	for _, tap := range art.Taps {
		firstTap = min(firstTap, index[tap.Output])
	}
	for _, p := range art.Params {
		if index[p.Grad] > firstTap {
			t.Errorf("a tap (node %d) comes before the gradient of %s (node %d)", firstTap, p.Name, index[p.Grad])
		}
	}
	// The gradients keep the order they have in the graph without taps.
	plain, pg := build(false)
	pindex := map[string]int{}
	for i, n := range pg.P.Node {
		for _, o := range n.Output {
			pindex[o] = i
		}
	}
	for i := 1; i < len(plain.Params); i++ {
		a, b := plain.Params[i-1], plain.Params[i]
		if (pindex[a.Grad] < pindex[b.Grad]) != (index[art.Params[i-1].Grad] < index[art.Params[i].Grad]) {
			t.Errorf("the gradients of %s and %s changed order", a.Name, b.Name)
		}
	}
}

// firstTapLast maps every value of g to the position of the node that
// makes it, and fails t unless the first layer's tap is g's last node.
func firstTapLast(t *testing.T, g *onnx.Graph, art *Artifact) map[string]int {
	t.Helper()
	index := map[string]int{}
	for i, n := range g.P.Node {
		for _, o := range n.Output {
			index[o] = i
		}
	}
	if last := len(g.P.Node) - 1; index[art.Taps[0].Output] != last {
		t.Errorf("the first tap (%s) is node %d, not the last (%d)", art.Taps[0].Name, index[art.Taps[0].Output], last)
	}
	return index
}
