package train

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// torchGrads loads a Hugging Face checkpoint in transformers, computes the
// loss for the feeds (labels included) in eval mode, back-propagates, and
// writes the loss, every parameter's gradient and, through forward hooks on
// every nn.Linear, Σ|y| per output feature.
const torchGrads = `
import json, sys
import numpy as np, torch, transformers
ckpt, cls, feeds_path, out = sys.argv[1:5]
skip_padding = len(sys.argv) > 5 and sys.argv[5] == "skip-padding"
torch.manual_seed(0)
model = getattr(transformers, cls).from_pretrained(ckpt).eval()
feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in json.load(open(feeds_path)).items()}
if cls == "LlamaForCausalLM":
    # migu's graph numbers a real token by the real tokens before it and a
    # padding position by its index: HF's default arange on right padding.
    feeds["position_ids"] = torch.where(feeds["attention_mask"] == 1, feeds["attention_mask"].cumsum(-1) - 1, torch.arange(feeds["attention_mask"].shape[-1]))
mags = {}
# With skip-padding, a row counts only at a real token: the mask whose
# length matches the output's sequence axis (encoder and decoder lengths
# differ in the tests, so the match is unambiguous).
masks = [feeds[k] for k in ("attention_mask", "decoder_attention_mask") if k in feeds]
def hook(name):
    def f(mod, inp, outp):
        a = outp.detach().abs()
        if skip_padding:
            m = [m for m in masks if m.shape[1] == a.shape[1]]
            assert len(m) == 1, (name, a.shape)
            a = a * m[0].unsqueeze(-1)
        mags[name] = a.reshape(-1, a.shape[-1]).sum(0)
    return f
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear):
        mod.register_forward_hook(hook(name))
loss = model(**feeds).loss
loss.backward()
index = {"loss": float(loss), "grads": {}, "mags": {}}
with open(out + "/tensors.bin", "wb") as f:
    off = 0
    def put(kind, name, t):
        global off
        a = np.ascontiguousarray(t.detach().float().numpy(), dtype="<f4")
        f.write(a.tobytes())
        index[kind][name] = [off, a.size]
        off += a.nbytes
    for name, p in model.named_parameters():
        if p.grad is not None:
            put("grads", name, p.grad)
    for name, m in mags.items():
        put("mags", name, m)
json.dump(index, open(out + "/index.json", "w"))
`

type torchRef struct {
	Loss  float64             `json:"loss"`
	Grads map[string][2]int64 `json:"grads"`
	Mags  map[string][2]int64 `json:"mags"`
	data  []byte
}

func (r *torchRef) get(kind map[string][2]int64, name string) ([]float32, bool) {
	e, ok := kind[name]
	if !ok {
		return nil, false
	}
	off, n := e[0], e[1]
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.data[off+4*int64(i):]))
	}
	return out, true
}

func runTorch(t *testing.T, ckpt, class string, feeds map[string][][]int64, extra ...string) *torchRef {
	t.Helper()
	dir := t.TempDir()
	fp := filepath.Join(dir, "feeds.json")
	raw, _ := json.Marshal(feeds)
	os.WriteFile(fp, raw, 0o644)
	testenv.RunPython(t, torchGrads, append([]string{ckpt, class, fp, dir}, extra...)...)
	ref := &torchRef{}
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(idx, ref); err != nil {
		t.Fatal(err)
	}
	if ref.data, err = os.ReadFile(filepath.Join(dir, "tensors.bin")); err != nil {
		t.Fatal(err)
	}
	return ref
}

// runTrain builds train.onnx for a model folder and runs it once on feeds,
// returning every output by name.
func runTrain(t *testing.T, modelDir string, feeds map[string][][]int64, opt GraphOptions) (*Artifact, map[string][]float32) {
	t.Helper()
	out := t.TempDir()
	art, err := BuildGraph(modelDir, out, opt)
	if err != nil {
		t.Fatal(err)
	}
	return art, runBuilt(t, modelDir, out, art, feeds)
}

// runBuilt runs a built train.onnx once with the model's initial parameters.
func runBuilt(t *testing.T, modelDir, out string, art *Artifact, feeds map[string][][]int64) map[string][]float32 {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g := m.Graph()
	in := map[string]ort.Value{}
	for _, p := range art.Params {
		vals, err := m.Float32s(g.Initializer(p.Name))
		if err != nil {
			t.Fatal(err)
		}
		v, err := ort.NewTensor(vals, p.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		in[p.Name] = v
	}
	for name, rows := range feeds {
		var flat []int64
		shape := []int64{int64(len(rows))}
		for _, r := range rows {
			flat = append(flat, r...)
		}
		if len(rows[0]) > 1 || name != "labels" || art.Objective != "cls" {
			shape = append(shape, int64(len(rows[0])))
		}
		v, err := ort.NewTensor(flat, shape...)
		if err != nil {
			t.Fatal(err)
		}
		in[name] = v
	}
	s, err := ort.NewSession(filepath.Join(out, GraphFile), ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string][]float32{}
	for i, info := range s.Outputs() {
		res[info.Name] = append([]float32(nil), outs[i].(*ort.Tensor[float32]).Data()...)
		outs[i].Close()
	}
	for _, v := range in {
		v.Close()
	}
	return res
}

// closeTo checks max|got − want| ≤ tol · max(max|want|, 1e-3).
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, reference has %d", what, len(got), len(want))
	}
	var diff, scale float64
	for i := range got {
		diff = math.Max(diff, math.Abs(float64(got[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	if math.IsNaN(diff) || diff > tol*math.Max(scale, 1e-3) {
		t.Errorf("%s: max |Δ| = %.3g, reference scale %.3g (relative %.2g > %.g)", what, diff, scale, diff/math.Max(scale, 1e-3), tol)
	}
}

// transposed returns the [cols, rows] transpose of a row-major matrix.
func transposed(v []float32, rows, cols int64) []float32 {
	out := make([]float32, len(v))
	for r := int64(0); r < rows; r++ {
		for c := int64(0); c < cols; c++ {
			out[c*rows+r] = v[r*cols+c]
		}
	}
	return out
}

// The loss, every gradient and every magnitude tap of train.onnx equal
// PyTorch autograd and forward hooks on the same checkpoint and batch.
func TestTrainGraphMatchesPyTorch(t *testing.T) {
	cases := []struct {
		arch, class string
		feeds       map[string][][]int64
		trainable   Trainable
	}{
		{"llama", "LlamaForCausalLM", testfix.TinyBatch("llama"), TrainAll},
		{"roberta", "RobertaForMaskedLM", testfix.TinyBatch("roberta"), TrainAll},
		{"t5", "T5ForConditionalGeneration", testfix.TinyBatch("t5"), TrainLinear},
	}
	for _, c := range cases {
		root := t.TempDir()
		hf := filepath.Join(root, "hf")
		if _, err := exporters.Init(hf, exporters.InitOptions{Arch: c.arch, Preset: "tiny", VocabSize: 600}); err != nil {
			t.Fatal(err)
		}
		ref := runTorch(t, hf, c.class, c.feeds)
		for _, exporter := range []string{"go", "python"} {
			t.Run(c.arch+"/"+exporter, func(t *testing.T) {
				model := filepath.Join(root, "model-"+exporter)
				man := exportWith(t, exporter, hf, model)
				// The tiny presets' feed-forward widths are no multiple of
				// 4 KB: force the widening, so that the padded graph is what
				// gets compared.
				art, got := runTrain(t, model, c.feeds, GraphOptions{Trainable: c.trainable, Taps: true, HiddenPad: forcedPad})
				if exporter == "go" {
					blocks := 0
					for _, l := range man.Linears {
						if l.Role == modeldir.RoleFFNOut {
							blocks++
						}
					}
					if art.PaddedHidden != blocks {
						t.Errorf("%d feed-forward blocks widened, want all %d", art.PaddedHidden, blocks)
					}
				}
				closeTo(t, "loss", got[art.Loss], []float32{float32(ref.Loss)}, 1e-5)
				transposedWeight := map[string][2]int64{}
				for _, l := range man.Linears {
					if l.Tied == "" {
						transposedWeight[l.Weight] = [2]int64{l.DOut, l.DIn}
					}
				}
				for _, p := range art.Params {
					want, ok := ref.get(ref.Grads, p.Name)
					if !ok {
						t.Errorf("PyTorch has no gradient for %s", p.Name)
						continue
					}
					if rc, ok := transposedWeight[p.Name]; ok {
						want = transposed(want, rc[0], rc[1])
					}
					closeTo(t, "grad "+p.Name, got[p.Grad], want, 1e-5)
				}
				compareTaps(t, art, man, got, ref)
				t.Logf("%s from the %s exporter: loss %.6f, %d params, %d taps, %d feed-forward blocks widened, %d forward + %d gradient nodes", c.arch, exporter, ref.Loss, len(art.Params), len(art.Taps), art.PaddedHidden, art.Nodes, art.GradNodes)
			})
		}
	}
}

// With padding left out, every magnitude tap equals the PyTorch hooks' sum
// over real tokens only. T5's encoder and decoder lengths differ, so the
// cross-attention keys and values must be masked by the encoder's mask.
func TestTapsSkipPaddingMatchPyTorch(t *testing.T) {
	ids := [][]int64{{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, 1, 1}}
	mask := [][]int64{{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}
	cases := []struct {
		arch, class string
		feeds       map[string][][]int64
	}{
		{"llama", "LlamaForCausalLM", map[string][][]int64{"input_ids": ids, "attention_mask": mask,
			"labels": {{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, -100, -100}}}},
		{"t5", "T5ForConditionalGeneration", map[string][][]int64{"input_ids": ids, "attention_mask": mask,
			"decoder_input_ids": {{0, 7, 9, 2}, {0, 5, 1, 0}}, "decoder_attention_mask": {{1, 1, 1, 1}, {1, 1, 0, 0}},
			"labels": {{7, 9, 2, 1}, {5, 1, -100, -100}}}},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			root := t.TempDir()
			hf, model := filepath.Join(root, "hf"), filepath.Join(root, "model")
			if _, err := exporters.Init(hf, exporters.InitOptions{Arch: c.arch, Preset: "tiny", VocabSize: 600}); err != nil {
				t.Fatal(err)
			}
			man := exportWith(t, "go", hf, model)
			ref := runTorch(t, hf, c.class, c.feeds, "skip-padding")
			for _, hp := range []HiddenPad{{Extra: -1}, forcedPad} {
				art, got := runTrain(t, model, c.feeds, GraphOptions{Trainable: TrainLinear, Taps: true, TapsSkipPadding: true, HiddenPad: hp})
				compareTaps(t, art, man, got, ref)
			}
		})
	}
}

// forcedPad widens every feed-forward hidden layer of the tiny presets.
var forcedPad = HiddenPad{Multiple: 4, Extra: 16, MaxBytes: 1 << 30}

// compareTaps checks that there is a tap per linear layer and that each
// equals the PyTorch hook's magnitudes within 1e-5.
func compareTaps(t *testing.T, art *Artifact, man *modeldir.Manifest, got map[string][]float32, ref *torchRef) {
	t.Helper()
	if len(art.Taps) != len(man.Linears) {
		t.Errorf("%d taps for %d linears", len(art.Taps), len(man.Linears))
	}
	for _, tap := range art.Taps {
		want, ok := ref.get(ref.Mags, tap.Name)
		if !ok {
			t.Errorf("no PyTorch hook recorded %s", tap.Name)
			continue
		}
		closeTo(t, "magnitude "+tap.Name, got[tap.Output], want, 1e-5)
	}
}

// exportWith writes a model folder with the Go exporter or with
// python/export (torch.onnx.export of the transformers class).
func exportWith(t *testing.T, exporter, hf, out string) *modeldir.Manifest {
	t.Helper()
	if exporter == "go" {
		man, err := exporters.Export(hf, out)
		if err != nil {
			t.Fatal(err)
		}
		return man
	}
	script := filepath.Join(testenv.Root(), "python", "export", "export.py")
	if b, err := exec.Command(testenv.Python(t), script, hf, out).CombinedOutput(); err != nil {
		t.Fatalf("export.py: %v\n%s", err, b)
	}
	man, err := modeldir.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	return man
}

// A graph with ops that have no gradient rule fails with one message that
// names every such op type and a node of each.
func TestMissingRulesAreListed(t *testing.T) {
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(2), onnx.D(3)})
	g.AddInitializer(onnx.Float32Tensor("w.weight", []int64{3, 3}, make([]float32, 9)))
	h := g.Op("MatMul", []string{"x", "w.weight"}, "h")
	h = g.Op("Celu", []string{h}, "celu")
	h = g.Op("HardSwish", []string{h}, "hs")
	h = g.Op("Celu", []string{h}, "celu2")
	g.AddOutput(h, onnx.Float, nil)
	man := &modeldir.Manifest{Format: 1, Architecture: "test", Objective: "cls", Inputs: []string{"x"}, Outputs: []string{h}, NumLabels: 3,
		Linears: []modeldir.Linear{{Name: "w", Role: modeldir.RoleHead, Weight: "w.weight", Node: "h/MatMul", Output: "h", DIn: 3, DOut: 3}}}
	_, err := Build(m, man, GraphOptions{})
	if err == nil {
		t.Fatal("built a training graph through ops without rules")
	}
	for _, want := range []string{"2 op type(s)", "Celu (node", "HardSwish (node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// One train.onnx runs at two batch and sequence shapes, and its loss and
// gradients at the second shape equal PyTorch's there too.
func TestTrainGraphTwoShapes(t *testing.T) {
	root := t.TempDir()
	hf, model := filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := exporters.Export(hf, model); err != nil {
		t.Fatal(err)
	}
	shapes := []map[string][][]int64{
		{"input_ids": {{5, 9, 12}}, "attention_mask": {{1, 1, 1}}, "labels": {{5, 9, 12}}},
		{"input_ids": {{5, 9, 12, 3, 7, 20, 8}, {4, 8, 31, 6, 1, 1, 1}, {40, 41, 42, 43, 44, 45, 46}},
			"attention_mask": {{1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0, 0}, {1, 1, 1, 1, 1, 1, 1}},
			"labels":         {{5, 9, 12, 3, 7, 20, 8}, {4, 8, 31, 6, -100, -100, -100}, {40, 41, 42, 43, 44, 45, 46}}},
	}
	out := t.TempDir()
	art, err := BuildGraph(model, out, GraphOptions{Trainable: TrainLinear, Taps: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, feeds := range shapes {
		ref := runTorch(t, hf, "LlamaForCausalLM", feeds)
		got := runBuilt(t, model, out, art, feeds)
		closeTo(t, "loss", got[art.Loss], []float32{float32(ref.Loss)}, 1e-5)
		name := "model.layers.1.mlp.down_proj.weight"
		for _, p := range art.Params {
			if p.Name == name {
				want, _ := ref.get(ref.Grads, name)
				closeTo(t, "grad "+name, got[p.Grad], transposed(want, p.Shape[1], p.Shape[0]), 1e-5)
			}
		}
	}
}
