package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
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
        feeds["position_ids"] = torch.where(feeds["attention_mask"] == 1, feeds["attention_mask"].cumsum(-1) - 1, torch.arange(feeds["attention_mask"].shape[-1]))
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

// tinyModel writes a random tiny llama (HF checkpoint and model folder).
func tinyModel(t *testing.T) (hf, model string) { return testfix.TinyModel(t, "llama") }

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
	batches := testfix.RandomBatches(steps, 2, 10, 600, 5)
	var spec struct {
		Class   string                 `json:"class"`
		LR      float64                `json:"lr"`
		WD      float64                `json:"wd"`
		MIGU    *float64               `json:"migu"`
		Batches []map[string][][]int64 `json:"batches"`
	}
	spec.Class, spec.LR, spec.WD = "LlamaForCausalLM", lr, wd
	for _, b := range batches {
		spec.Batches = append(spec.Batches, testfix.BatchFeeds(b))
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
			cfg := Config{GradAccum: 1, Optim: AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd}, UseMIGU: withMIGU, T: 0.7, Mode: migu.ModeGrad}
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

// sliceSource serves fixed batches; its state is the next index.
type sliceSource struct {
	batches []*data.Batch
	next    int
}

func (s *sliceSource) Next() (*data.Batch, error) {
	if s.next >= len(s.batches) {
		return nil, io.EOF
	}
	s.next++
	return s.batches[s.next-1], nil
}

func (s *sliceSource) State() (json.RawMessage, error) { return json.Marshal(s.next) }

func (s *sliceSource) Restore(raw json.RawMessage) error { return json.Unmarshal(raw, &s.next) }

// In update mode, a weight column whose mask was 0 at every step is
// bit-identical to where it started (values; its moments stay zero).
func TestUpdateModeLeavesMaskedColumnsAlone(t *testing.T) {
	_, model := tinyModel(t)
	cfg := Config{GradAccum: 1, Optim: AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}, UseMIGU: true, T: 0.7, Mode: migu.ModeUpdate}
	tr := newFullTrainer(t, model, cfg)
	start := map[string][]float32{}
	for name, v := range tr.Params() {
		start[name] = append([]float32(nil), v...)
	}
	everKept := map[string][]bool{}
	for _, b := range testfix.RandomBatches(6, 2, 10, 600, 9) {
		if _, err := tr.TrainStep([]*data.Batch{b}, true); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tr.Tensors {
			keep := tr.Masker().Keep(tt.Name)
			if keep == nil {
				continue
			}
			if everKept[tt.Name] == nil {
				everKept[tt.Name] = make([]bool, len(tt.Value))
			}
			for i := range tt.Value {
				r, c := int64(i)/keep.Cols, int64(i)%keep.Cols
				everKept[tt.Name][i] = everKept[tt.Name][i] || keep.At(r, c)
			}
		}
	}
	frozen, moved := 0, 0
	for _, tt := range tr.Tensors {
		kept := everKept[tt.Name]
		if kept == nil {
			continue
		}
		for i, k := range kept {
			switch {
			case !k && tt.Value[i] != start[tt.Name][i]:
				t.Fatalf("%s[%d] was masked at every step but moved: %v → %v", tt.Name, i, start[tt.Name][i], tt.Value[i])
			case !k:
				frozen++
				if tt.M[i] != 0 || tt.V[i] != 0 {
					t.Fatalf("%s[%d]: moments of a never-updated element are %v, %v", tt.Name, i, tt.M[i], tt.V[i])
				}
			case tt.Value[i] != start[tt.Name][i]:
				moved++
			}
		}
	}
	if frozen == 0 || moved == 0 {
		t.Fatalf("frozen %d, moved %d: the test needs both", frozen, moved)
	}
	t.Logf("%d elements never updated stayed bit-identical; %d updated elements moved", frozen, moved)
}

// A run stopped after some steps and resumed from its checkpoint ends with
// parameters bit-identical to an uninterrupted run.
func TestResumeIsBitIdentical(t *testing.T) {
	_, model := tinyModel(t)
	cfg := Config{GradAccum: 1, Optim: DefaultAdamW(), UseMIGU: true, T: 0.7, Mode: migu.ModeGrad}
	batches := testfix.RandomBatches(6, 2, 8, 600, 11)
	ctx := context.Background()

	straight := newFullTrainer(t, model, cfg)
	if _, err := Run(ctx, straight, &sliceSource{batches: batches}, t.TempDir(), RunOptions{Identity: "x"}); err != nil {
		t.Fatal(err)
	}

	runDir := t.TempDir()
	first := newFullTrainer(t, model, cfg)
	if _, err := Run(ctx, first, &sliceSource{batches: batches}, runDir, RunOptions{MaxSteps: 4, SaveEvery: 2, Identity: "x"}); err != nil {
		t.Fatal(err)
	}
	resumed := newFullTrainer(t, model, cfg)
	res, err := Run(ctx, resumed, &sliceSource{batches: batches}, runDir, RunOptions{Resume: true, Identity: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 4 || res.Steps != 2 {
		t.Fatalf("resumed at step %d and ran %d steps; want 4 and 2", res.Resumed, res.Steps)
	}
	for i, tt := range straight.Tensors {
		other := resumed.Tensors[i]
		for k := range tt.Value {
			if tt.Value[k] != other.Value[k] || tt.M[k] != other.M[k] || tt.V[k] != other.V[k] {
				t.Fatalf("%s[%d] differs after resuming: %v vs %v", tt.Name, k, tt.Value[k], other.Value[k])
			}
		}
	}

	// Another identity is refused; a damaged newest checkpoint is skipped.
	other := newFullTrainer(t, model, cfg)
	if _, err := Run(ctx, other, &sliceSource{batches: batches}, runDir, RunOptions{Resume: true, Identity: "y"}); err == nil || !strings.Contains(err.Error(), "another model or configuration") {
		t.Fatalf("resume with another identity: %v", err)
	}
	newest, _, _, _ := LatestCheckpoint(runDir)
	os.WriteFile(filepath.Join(newest, "params.safetensors"), []byte("damaged"), 0o644)
	dir, st, skipped, err := LatestCheckpoint(runDir)
	if err != nil || dir == newest || len(skipped) != 1 || st.Step >= 6 {
		t.Fatalf("after damage: %s (step %v), skipped %v, %v", dir, st, skipped, err)
	}
	// With every checkpoint damaged, --resume refuses to start over silently.
	all, _ := listCheckpoints(runDir)
	for _, d := range all {
		os.WriteFile(filepath.Join(d, "optim.safetensors"), []byte("damaged"), 0o644)
	}
	again := newFullTrainer(t, model, cfg)
	if _, err := Run(ctx, again, &sliceSource{batches: batches}, runDir, RunOptions{Resume: true, Identity: "x"}); err == nil || !strings.Contains(err.Error(), "no usable checkpoint") {
		t.Fatalf("resume with only damaged checkpoints: %v", err)
	}
}

// modeldir.WriteTrained writes the trained values (float32, whatever the base
// stored) into a new model folder and leaves every other tensor's bytes
// and type as they were; Finish hands over the values it needs.
func TestWriteTrained(t *testing.T) {
	hf, f32 := tinyModel(t)
	bf16 := filepath.Join(t.TempDir(), "bf16")
	if _, err := exporters.ExportWith(hf, bf16, exporters.ExportOptions{DType: exporters.DTypeBF16}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, model string }{{"float32", f32}, {"bfloat16", bf16}} {
		t.Run(c.name, func(t *testing.T) {
			tr := newFullTrainer(t, c.model, Config{GradAccum: 1, Optim: DefaultAdamW()})
			for _, b := range testfix.RandomBatches(2, 2, 8, 600, 3) {
				if _, err := tr.TrainStep([]*data.Batch{b}, false); err != nil {
					t.Fatal(err)
				}
			}
			params := tr.Finish()
			out := filepath.Join(t.TempDir(), "trained")
			if err := modeldir.WriteTrained(c.model, out, params); err != nil {
				t.Fatal(err)
			}
			base, err := onnx.Load(filepath.Join(c.model, modeldir.ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer base.Close()
			m, err := onnx.Load(filepath.Join(out, modeldir.ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for _, init := range m.Graph().P.Initializer {
				name := init.GetName()
				if want, ok := params[name]; ok {
					if onnx.DType(init.GetDataType()) != onnx.Float {
						t.Fatalf("trained %s stored as %v", name, onnx.DType(init.GetDataType()))
					}
					got, err := m.Float32s(init)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("%s differs from the trained values", name)
					}
					continue
				}
				was := base.Graph().Initializer(name)
				got, err1 := m.TensorBytes(init)
				want, err2 := base.TensorBytes(was)
				if err := errors.Join(err1, err2); err != nil {
					t.Fatal(err)
				}
				if init.GetDataType() != was.GetDataType() || !bytes.Equal(got, want) {
					t.Fatalf("untrained %s changed", name)
				}
			}
			if _, err := modeldir.ReadManifest(out); err != nil {
				t.Fatal(err)
			}
			if err := modeldir.WriteTrained(c.model, out, params); err == nil {
				t.Fatal("exported over an existing model folder")
			}
		})
	}
}
