package train

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// torchTrain trains a transformers checkpoint with torch.optim.AdamW on
// given batches and prints the loss of every step. With "migu" set it
// applies MIGU's rule itself (independently of migu's Go code): per
// nn.Linear, Σ|y| over all tokens from a forward hook, torch.quantile at T,
// weight-gradient rows of features below it zeroed before the optimizer.
const torchTrain = `
import json, sys
import torch, transformers
spec = json.load(open(sys.argv[1]))
torch.manual_seed(0)
model = getattr(transformers, spec["class"]).from_pretrained(sys.argv[2])
model.eval()  # no dropout, as the graph
opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=spec["wd"])
mags = {}
linears = {}
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear):
        linears[name] = mod
        def hook(mod, inp, out, name=name):
            mags[name] = out.detach().abs().reshape(-1, out.shape[-1]).sum(0)
        mod.register_forward_hook(hook)
losses = []
for batch in spec["batches"]:
    feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    if spec["class"] == "LlamaForCausalLM":
        feeds["position_ids"] = (feeds["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    loss = model(**feeds).loss
    loss.backward()
    if spec["migu"] is not None:
        for name, mod in linears.items():
            n = mags[name]
            keep = n >= torch.quantile(n, spec["migu"])
            mod.weight.grad[~keep, :] = 0
    opt.step()
    opt.zero_grad()
    losses.append(float(loss))
print(json.dumps(losses))
`

// randomBatches makes deterministic clm batches: random ids, the second row
// right-padded, labels = ids with IgnoreIndex at padding.
func randomBatches(n, size, seq int, vocab int64, seed uint64) []*data.Batch {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]*data.Batch, n)
	for k := range out {
		b := &data.Batch{Size: size, SeqLen: seq}
		for r := 0; r < size; r++ {
			length := seq
			if r == 1 {
				length = seq - 1 - rng.IntN(seq/2)
			}
			for s := 0; s < seq; s++ {
				id, m, l := int64(0), int64(0), int64(data.IgnoreIndex)
				if s < length {
					id = 3 + rng.Int64N(vocab-3)
					m, l = 1, id
					b.Tokens++
				}
				b.InputIDs = append(b.InputIDs, id)
				b.AttentionMask = append(b.AttentionMask, m)
				b.Labels = append(b.Labels, l)
			}
		}
		out[k] = b
	}
	return out
}

func rows(v []int64, size, seq int) [][]int64 {
	out := make([][]int64, size)
	for r := range out {
		out[r] = v[r*seq : (r+1)*seq]
	}
	return out
}

// tinyModel writes a random tiny llama (HF checkpoint and model folder).
func tinyModel(t *testing.T) (hf, model string) {
	t.Helper()
	root := t.TempDir()
	hf, model = filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := exporters.Export(hf, model); err != nil {
		t.Fatal(err)
	}
	return hf, model
}

// newFullTrainer opens a model folder for full fine-tuning.
func newFullTrainer(t *testing.T, model string, cfg Config) *Trainer {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
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
	t.Cleanup(func() { m.Close() })
	plan, err := FullPlan(m, man)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Threads = 1
	tr, err := NewTrainer(plan, t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// Twenty steps of full fine-tuning give PyTorch's losses, with and without
// MIGU (grad mode, T = 0.7).
func TestTrainingMatchesPyTorch(t *testing.T) {
	hf, model := tinyModel(t)
	const steps, lr, wd = 20, 2e-3, 0.01
	batches := randomBatches(steps, 2, 10, 600, 5)
	var spec struct {
		Class   string                 `json:"class"`
		LR      float64                `json:"lr"`
		WD      float64                `json:"wd"`
		MIGU    *float64               `json:"migu"`
		Batches []map[string][][]int64 `json:"batches"`
	}
	spec.Class, spec.LR, spec.WD = "LlamaForCausalLM", lr, wd
	for _, b := range batches {
		spec.Batches = append(spec.Batches, map[string][][]int64{
			"input_ids": rows(b.InputIDs, b.Size, b.SeqLen), "attention_mask": rows(b.AttentionMask, b.Size, b.SeqLen), "labels": rows(b.Labels, b.Size, b.SeqLen)})
	}
	for _, withMIGU := range []bool{false, true} {
		name := "full"
		if withMIGU {
			name = "full+migu"
			T := 0.7
			spec.MIGU = &T
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "spec.json")
			raw, _ := json.Marshal(spec)
			os.WriteFile(path, raw, 0o644)
			var want []float64
			if err := json.Unmarshal(testenv.RunPython(t, torchTrain, path, hf), &want); err != nil {
				t.Fatal(err)
			}
			cfg := Config{Optim: AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd}, UseMIGU: withMIGU, T: 0.7, Mode: migu.ModeGrad}
			tr := newFullTrainer(t, model, cfg)
			worst := 0.0
			for i, b := range batches {
				res, err := tr.TrainStep([]*data.Batch{b}, true)
				if err != nil {
					t.Fatal(err)
				}
				d := math.Abs(res.Loss - want[i])
				worst = math.Max(worst, d)
				if d > 1e-4 {
					t.Fatalf("step %d: loss %.6f, PyTorch %.6f", i+1, res.Loss, want[i])
				}
			}
			t.Logf("%s: %d steps, loss %.4f → %.4f, max |Δloss| = %.2g", name, steps, want[0], want[steps-1], worst)
		})
	}
}
