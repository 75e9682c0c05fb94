package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// precisionOf is the precision of a test graph: bf16 when the bf16
// library is given.
func precisionOf(bf16Lib string) string {
	if bf16Lib != "" {
		return PrecisionBF16
	}
	return PrecisionFP32
}

// bf16GradTol bounds the relative difference (to each tensor's largest
// magnitude) between a bf16 graph's loss, gradients and taps and the fp32
// graph's. Rounding both operands of a product to bfloat16 moves it by up
// to 2·2^-9 of Σ|ab|, about 0.4 %; through the tiny models' layers the
// measured worst is about 1 % (gradients of the first layers), so 5 %
// leaves room while still failing on a wrong transpose or operand (errors
// of order 100 %).
const bf16GradTol = 5e-2

// The training graph with bf16 weight products gives the loss, every
// gradient and every MIGU tap of the fp32 graph within bfloat16's
// rounding — every architecture, full fine-tuning and LoRA, with and
// without recomputation — and holds no float32 product on a weight: every
// linear of migu.json is a MatMulBF16, the backward products too (no Gemm
// is left), attention's products are BatchMatMuls in bf16, and frozen weights a model folder stores in bfloat16 feed the
// products without their Cast to float32.
func TestBF16ProductsKeepGradients(t *testing.T) {
	lib := testenv.BF16(t)
	feeds := tinyFeeds()
	cases := []struct {
		arch, method, recompute string
		bf16Weights             bool // export the model's weight matrices in bfloat16
	}{
		{"llama", "full", RecomputeNone, false}, {"llama", "full", RecomputeLayers, false},
		{"llama", "lora", RecomputeNone, true}, {"t5", "full", RecomputeNone, false}, {"roberta", "full", RecomputeNone, false},
	}
	for _, c := range cases {
		name := c.arch + "/" + c.method + "/" + c.recompute
		if c.bf16Weights {
			name += "/bf16-weights"
		}
		t.Run(name, func(t *testing.T) {
			hf, model := testfix.TinyModel(t, c.arch)
			if c.bf16Weights {
				model = filepath.Join(t.TempDir(), "bf16")
				if _, err := exporters.ExportWith(hf, model, exporters.ExportOptions{DType: exporters.DTypeBF16}); err != nil {
					t.Fatal(err)
				}
			}
			spec := recomputeSpec{model: model, method: c.method, feeds: feeds[c.arch]}
			art, want, _ := spec.run(t, c.recompute)
			spec.bf16 = lib
			// As migu train runs bf16: attention's products in bf16 too.
			spec.oneDNN, spec.oneDNNLib = kernels.F32Roles{Attention: true}, lib
			bart, got, g := spec.run(t, c.recompute)
			man := spec.manifest(t)
			// Every linear's product is bf16, and so are a head linear's
			// copies on the labelled rows and, for its tap, on the others
			// (rows.go), which replace its product on every row.
			products := map[string]bool{}
			for _, n := range g.P.Node {
				if n.GetOpType() == "MatMulBF16" {
					products[n.GetName()] = true
				}
			}
			inGraph := 0
			for _, l := range man.Linears {
				if products[l.Node] {
					inGraph++
				} else if !products[l.Node+rowsSuffix] {
					t.Fatalf("linear %s has no bf16 product", l.Node)
				}
			}
			copies := 0
			for name := range products {
				if strings.HasSuffix(name, rowsSuffix) || strings.HasSuffix(name, restSuffix) {
					copies++
				}
			}
			if art.Precision != PrecisionFP32 || bart.Precision != PrecisionBF16 || bart.BF16Products != inGraph+copies || bart.AttentionProducts < 6 {
				t.Fatalf("precision %s/%s, %d bf16 products for %d linears and %d copies on rows, %d of attention", art.Precision, bart.Precision, bart.BF16Products, inGraph, copies, bart.AttentionProducts)
			}
			checkBF16Graph(t, g, man, c.method == "full", c.bf16Weights)
			worst := 0.0
			for name, w := range want {
				d := relDiff(t, name, got[name], w, bf16GradTol)
				worst = math.Max(worst, d)
			}
			if worst == 0 {
				t.Fatal("the bf16 graph gives the fp32 graph's numbers exactly: nothing ran in bf16")
			}
			t.Logf("%d linears in bf16 (%d params, %d taps): max relative difference %.2g", bart.BF16Products, len(bart.Params), len(bart.Taps), worst)
		})
	}
}

// checkBF16Graph checks the ops of a bf16 training graph: every linear's
// node is a MatMulBF16, no Gemm is left when every weight trains (the
// fp32 graph computes their gradients with Gemms), and with bf16Weights
// every linear reads its stored bfloat16 weight itself, not a float32
// Cast of it.
func checkBF16Graph(t *testing.T, g *onnx.Graph, man *modeldir.Manifest, full, bf16Weights bool) {
	t.Helper()
	linears := map[string]modeldir.Linear{}
	for _, l := range man.Linears {
		linears[l.Node] = l
	}
	products := 0
	for _, n := range g.P.Node {
		bf16 := n.GetDomain() == onnx.DomainMiguBF16 && n.GetOpType() == "MatMulBF16"
		if n.GetOpType() == "BatchMatMul" && onnx.AttrIntOr(n, "bf16", 0) != 1 {
			t.Errorf("attention product %s is not in bf16", n.GetName())
		}
		if bf16 {
			products++
		}
		if l, ok := linears[n.GetName()]; ok {
			if !bf16 {
				t.Errorf("linear %s is a %s node", l.Name, n.GetOpType())
			} else if bf16Weights && n.Input[1] != l.Weight {
				t.Errorf("linear %s reads %s, not its bf16 weight %s", l.Name, n.Input[1], l.Weight)
			}
		}
		if full && n.GetDomain() == "" && n.GetOpType() == "Gemm" {
			t.Errorf("float32 Gemm %s left in a full fine-tuning graph", n.GetName())
		}
	}
	if full && products < 2*len(man.Linears) {
		t.Errorf("%d MatMulBF16 nodes for %d linears: the backward products are not all bf16", products, len(man.Linears))
	}
}

// bf16CurveTol bounds the relative difference between the losses of a
// bf16 run and an fp32 run from the same weights on the same batches, at
// every one of 50 steps: 1e-2, the drift issue 18 accepts for bf16
// products (bf16 rounding moves each update slightly, and the difference
// grows along the run). Measured on the tiny llama at lr 1e-3: 1.5e-3. At
// lr 2e-3 the tiny model's fp32 curve itself jumps by up to 8 % from step
// to step, and any two runs that round differently part ways; the test
// keeps to the stable rate.
const bf16CurveTol = 1e-2

// bf16CurveSteps and bf16CurveLR are the loss-curve tests' run: full
// fine-tuning of a tiny llama on ten random batches, cycled.
const (
	bf16CurveSteps = 50
	bf16CurveLR    = 1e-3
)

// bf16Curve trains the model folder for bf16CurveSteps steps at the given
// precision and returns the loss of every step.
func bf16Curve(t *testing.T, model, precision string, batches []*data.Batch) []float64 {
	t.Helper()
	cfg := Config{GradAccum: 1, Optim: AdamWConfig{LR: bf16CurveLR, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, Precision: precision}
	tr := newFullTrainer(t, model, cfg)
	if tr.Art.Precision != precision {
		t.Fatalf("train.json precision %q, want %q", tr.Art.Precision, precision)
	}
	losses := make([]float64, bf16CurveSteps)
	for i := range losses {
		res, err := tr.TrainStep([]*data.Batch{batches[i%len(batches)]}, true)
		if err != nil {
			t.Fatal(err)
		}
		losses[i] = res.Loss
	}
	return losses
}

// compareCurves checks got against want at every step within tol
// (relative) and returns the worst relative difference and a few steps
// of both curves for the log.
func compareCurves(t *testing.T, what string, got, want []float64, tol float64) (float64, string) {
	t.Helper()
	worst := 0.0
	var lines []string
	for i := range want {
		rel := math.Abs(got[i]-want[i]) / want[i]
		worst = math.Max(worst, rel)
		if !(rel <= tol) {
			t.Errorf("step %d: loss %.5f, %s %.5f: relative difference %.2g > %g", i+1, got[i], what, want[i], rel, tol)
		}
		if i%10 == 0 || i == len(want)-1 {
			lines = append(lines, fmt.Sprintf("%d %.4f %.4f", i+1, want[i], got[i]))
		}
	}
	return worst, strings.Join(lines, "; ")
}

// Fifty steps of full fine-tuning of a tiny llama with bf16 products
// follow the fp32 loss curve within bf16CurveTol at every step, while not
// reproducing it exactly, and learn.
func TestBF16LossCurve(t *testing.T) {
	lib := testenv.BF16(t)
	t.Setenv("MIGU_BF16", lib)
	_, model := tinyModel(t)
	batches := testfix.RandomBatches(10, 2, 16, 600, 7)
	fp32, bf16 := bf16Curve(t, model, PrecisionFP32, batches), bf16Curve(t, model, PrecisionBF16, batches)
	worst, curve := compareCurves(t, "fp32", bf16, fp32, bf16CurveTol)
	if worst == 0 {
		t.Fatal("bf16 and fp32 losses are identical: nothing ran in bf16")
	}
	last := len(fp32) - 1
	if fp32[last] > 0.9*fp32[0] || bf16[last] > 0.9*bf16[0] {
		t.Errorf("no learning: fp32 %.4f → %.4f, bf16 %.4f → %.4f", fp32[0], fp32[last], bf16[0], bf16[last])
	}
	t.Logf("%d steps, max relative loss difference %.2g (step fp32 bf16): %s", len(fp32), worst, curve)
}

// torchAutocast trains a transformers checkpoint as a PyTorch 2.x user
// trains on a CPU in bf16: float32 weights and AdamW, the forward pass
// under torch.autocast("cpu", dtype=torch.bfloat16) (every matrix
// product in bf16, attention's included); it prints every step's loss.
const torchAutocast = `
import json, sys
import torch, transformers
spec = json.load(open(sys.argv[1]))
torch.manual_seed(0)
model = transformers.LlamaForCausalLM.from_pretrained(sys.argv[2])
model.eval()
opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
losses = []
for i in range(spec["steps"]):
    batch = spec["batches"][i % len(spec["batches"])]
    feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    feeds["position_ids"] = torch.where(feeds["attention_mask"] == 1, feeds["attention_mask"].cumsum(-1) - 1, torch.arange(feeds["attention_mask"].shape[-1]))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["autocast"]):
        loss = model(**feeds).loss
    loss.float().backward()
    opt.step()
    opt.zero_grad()
    losses.append(float(loss))
print(json.dumps(losses))
`

// The bf16 loss curve against PyTorch 2.x's CPU autocast on the same
// checkpoint and batches, within bf16CurveTol at every step (issue 18's
// target), beside our fp32 curve against PyTorch's fp32 (1e-4: float32
// rounding only, grown over 50 steps). Optional: it needs the PyTorch 2.x
// venv that `make bench` makes (.deps/torch2, benchmarks/perf/torch2.sh),
// and skips without it.
func TestBF16LossCurveMatchesAutocast(t *testing.T) {
	lib := testenv.BF16(t)
	py := filepath.Join(testenv.Root(), ".deps", "torch2", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Skipf("PyTorch 2.x venv %s not found (made by `make bench`, benchmarks/perf/torch2.sh): autocast comparison skipped", py)
	}
	t.Setenv("MIGU_BF16", lib)
	hf, model := tinyModel(t)
	batches := testfix.RandomBatches(10, 2, 16, 600, 7)
	torch := func(autocast bool) []float64 {
		spec := map[string]any{"lr": bf16CurveLR, "steps": bf16CurveSteps, "autocast": autocast}
		var feeds []map[string][][]int64
		for _, b := range batches {
			feeds = append(feeds, testfix.BatchFeeds(b))
		}
		spec["batches"] = feeds
		path := filepath.Join(t.TempDir(), "spec.json")
		raw, _ := json.Marshal(spec)
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(py, "-c", torchAutocast, path, hf)
		cmd.Env = append(os.Environ(), "TRANSFORMERS_OFFLINE=1", "HF_HUB_OFFLINE=1", "OMP_NUM_THREADS=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("PyTorch 2.x: %v\n%s", err, stderr.Bytes())
		}
		var losses []float64
		if err := json.Unmarshal(out, &losses); err != nil {
			t.Fatalf("PyTorch 2.x printed %q: %v", out, err)
		}
		return losses
	}
	worst, curve := compareCurves(t, "PyTorch fp32", bf16Curve(t, model, PrecisionFP32, batches), torch(false), 1e-4)
	t.Logf("fp32 vs PyTorch 2.x fp32: max relative loss difference %.2g (step torch migu): %s", worst, curve)
	worst, curve = compareCurves(t, "PyTorch autocast", bf16Curve(t, model, PrecisionBF16, batches), torch(true), bf16CurveTol)
	t.Logf("bf16 vs PyTorch 2.x bf16 autocast: max relative loss difference %.2g (step torch migu): %s", worst, curve)
}

// The small llama's bf16 training graph (batch 4 × 128: every product
// several blocks wide) gives the same loss, gradients and taps, bit for
// bit, on 2 threads twice and on 1 thread: the blocks that run at once
// share no scratch memory. (oneDNN's own scratchpad, one buffer per
// creating thread, gave step losses off by up to 0.03 at random on 2
// threads before MatMulBF16 passed its own.)
func TestBF16ThreadsDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("exports the small llama (-short)")
	}
	lib := testenv.BF16(t)
	_, model, man := testfix.PresetModel(t, "llama", exporters.InitOptions{Preset: "small"})
	b := testfix.RandomBatches(1, 4, 128, man.VocabSize, 9)[0]
	spec := recomputeSpec{model: model, method: "full", feeds: testfix.BatchFeeds(b), bf16: lib, threads: 2}
	_, want, _ := spec.run(t, RecomputeNone)
	for _, threads := range []int{2, 1} {
		spec.threads = threads
		_, got, _ := spec.run(t, RecomputeNone)
		for name, w := range want {
			for i := range w {
				if got[name][i] != w[i] {
					t.Fatalf("%d threads: %s[%d] = %g, %g on the first 2-thread run", threads, name, i, got[name][i], w[i])
				}
			}
		}
	}
}

// Rounding bf16 operands once (GraphOptions.ShareBF16) changes no loss,
// gradient or tap by a bit — every architecture, full fine-tuning and
// LoRA, with recomputation (its recomputed layers read the weights again)
// — while weights come from their bf16 twins (trained ones Param.BF16,
// frozen ones Artifact.FrozenBF16), and layer inputs and output gradients
// are rounded once each: every other value that two bf16 products read
// has its ToBF16, and no bf16 product reads a float32 value another one
// reads too.
func TestShareBF16KeepsNumbers(t *testing.T) {
	lib := testenv.BF16(t)
	feeds := tinyFeeds()
	for _, c := range []struct{ arch, method, recompute string }{
		{"llama", "full", RecomputeNone}, {"llama", "full", RecomputeLayers}, {"llama", "lora", RecomputeNone},
		{"t5", "full", RecomputeNone}, {"roberta", "full", RecomputeNone},
	} {
		t.Run(c.arch+"/"+c.method+"/"+c.recompute, func(t *testing.T) {
			_, model := testfix.TinyModel(t, c.arch)
			spec := recomputeSpec{model: model, method: c.method, feeds: feeds[c.arch], bf16: lib, threads: 2,
				oneDNN: kernels.F32Roles{Attention: true}, oneDNNLib: lib}
			art, want, _ := spec.run(t, c.recompute)
			spec.shareBF16 = true
			sart, got, g := spec.run(t, c.recompute)
			if art.BF16Shared != 0 || sart.BF16Shared == 0 {
				t.Fatalf("%d and %d values rounded once; want 0 without sharing, some with", art.BF16Shared, sart.BF16Shared)
			}
			reads := map[string]int{}
			casts := 0
			for _, n := range g.P.Node {
				switch {
				case n.GetOpType() == "ToBF16":
					casts++
				case n.GetOpType() == "MatMulBF16" || n.GetOpType() == "BatchMatMul" && onnx.AttrIntOr(n, "bf16", 0) == 1:
					for _, in := range n.Input[:2] {
						if !strings.HasSuffix(in, "/bf16") {
							reads[in]++
						}
					}
				}
			}
			if casts != sart.BF16Shared {
				t.Fatalf("%d ToBF16 nodes for %d shared values", casts, sart.BF16Shared)
			}
			twins := map[string]string{}
			for _, p := range sart.Params {
				if p.BF16 != "" {
					twins[p.Name] = p.BF16
				}
			}
			trained := len(twins)
			maps.Copy(twins, sart.FrozenBF16)
			for w, twin := range twins {
				if g.Input(twin) == nil || reads[w] != 0 {
					t.Fatalf("%s: twin %q is no graph input, or a bf16 product still reads the float32 weight", w, twin)
				}
			}
			// Full fine-tuning trains every weight; LoRA freezes them.
			if full := c.method == "full"; (trained > 0) != full || (len(sart.FrozenBF16) > 0) == full {
				t.Fatalf("%d trained and %d frozen weights with bf16 twins, full fine-tuning %v", trained, len(sart.FrozenBF16), full)
			}
			for v, n := range reads {
				// (A weight stored in bf16 is read as it is; the tiny models store float32.)
				if n > 1 {
					t.Fatalf("%d bf16 products round %s each", n, v)
				}
			}
			for name, w := range want {
				for i := range w {
					if math.Float32bits(got[name][i]) != math.Float32bits(w[i]) {
						t.Fatalf("%s[%d] = %g, %g with every product rounding its operands", name, i, got[name][i], w[i])
					}
				}
			}
			t.Logf("%d bf16 twins of weights and %d values rounded once, for %d bf16 products", len(twins), sart.BF16Shared, sart.BF16Products)
		})
	}
}

// A bf16 run that reads its trained weights from their bf16 twins (kept by
// the optimizer, Param.BF16) and rounds shared operands once takes the
// steps of a run whose every product rounds its own operands, bit for bit
// — losses and weights, MIGU on — and so does a trainer that loads a
// checkpoint of it after a step of its own (the twins are rounded again
// from the loaded weights).
func TestBF16TwinsKeepSteps(t *testing.T) {
	testenv.BF16(t)
	_, model := testfix.TinyModel(t, "llama")
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	batches := testfix.RandomBatches(4, 2, 10, man.VocabSize, 3)
	cfg := func(sharing string) Config {
		return Config{GradAccum: 1, Optim: AdamWConfig{LR: 2e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01},
			Precision: PrecisionBF16, UseMIGU: true, T: 0.7, BF16Sharing: sharing}
	}
	steps := func(tr *Trainer, from, to int) []float64 {
		var losses []float64
		for i := from; i < to; i++ {
			res, err := tr.TrainStep([]*data.Batch{batches[i]}, true)
			if err != nil {
				t.Fatal(err)
			}
			losses = append(losses, res.Loss)
		}
		return losses
	}
	each := newFullTrainer(t, model, cfg(BF16ShareNever))
	once := newFullTrainer(t, model, cfg(BF16ShareAlways))
	twins := 0
	for _, p := range once.Art.Params {
		if p.BF16 != "" {
			twins++
		}
	}
	if twins == 0 || slices.ContainsFunc(each.Art.Params, func(p Param) bool { return p.BF16 != "" }) {
		t.Fatalf("%d weights with bf16 twins when sharing; want some, and none without", twins)
	}
	want := steps(each, 0, 3)
	got := steps(once, 0, 2)
	run := t.TempDir()
	dir, err := once.SaveCheckpoint(run, "id", nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, steps(once, 2, 3)...)
	sameBits := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s[%d] = %g, %g with every product rounding its operands", what, i, got[i], want[i])
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("losses %v rounding once, %v in every product", got, want)
	}
	for _, tt := range each.Tensors {
		sameBits(tt.Name, once.Params()[tt.Name], tt.Value)
	}
	// A step before the checkpoint is loaded: the twins must follow the
	// loaded weights, not this step's.
	resumed := newFullTrainer(t, model, cfg(BF16ShareAlways))
	steps(resumed, 3, 4)
	st, err := readCheckpointState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := resumed.LoadCheckpoint(dir, st, "id"); err != nil {
		t.Fatal(err)
	}
	if last := steps(resumed, 2, 3); last[0] != want[2] {
		t.Fatalf("resumed step 3: loss %v, %v without the checkpoint", last[0], want[2])
	}
	for _, tt := range each.Tensors {
		sameBits("resumed "+tt.Name, resumed.Params()[tt.Name], tt.Value)
	}
	t.Logf("%d weights read from bf16 twins; losses %v", twins, got)
}

// A LoRA run in bf16 reads its frozen base weights from bf16 twins rounded
// once when the trainer opens (Artifact.FrozenBF16) and takes the steps of
// a run whose products round them every time, bit for bit.
func TestBF16FrozenTwinsKeepSteps(t *testing.T) {
	testenv.BF16(t)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	_, model := testfix.TinyModel(t, "llama")
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	batches := testfix.RandomBatches(3, 2, 10, man.VocabSize, 4)
	run := func(sharing string) (*Trainer, []float64) {
		m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		spec := recomputeSpec{method: "lora"}
		names, points := spec.trainable(t, m, man)
		plan := &Plan{Model: m, Manifest: man, Trainable: names, Points: points}
		tr, err := NewTrainer(plan, t.TempDir(), Config{GradAccum: 1, Threads: 1, Precision: PrecisionBF16, BF16Sharing: sharing,
			Optim: AdamWConfig{LR: 2e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		var losses []float64
		for _, b := range batches {
			res, err := tr.TrainStep([]*data.Batch{b}, true)
			if err != nil {
				t.Fatal(err)
			}
			losses = append(losses, res.Loss)
		}
		return tr, losses
	}
	each, want := run(BF16ShareNever)
	once, got := run(BF16ShareAlways)
	if len(each.Art.FrozenBF16) != 0 || len(once.Art.FrozenBF16) == 0 {
		t.Fatalf("%d frozen weights with bf16 twins without sharing, %d with", len(each.Art.FrozenBF16), len(once.Art.FrozenBF16))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("losses %v with frozen twins, %v without", got, want)
	}
	t.Logf("%d frozen weights read from bf16 twins; losses %v", len(once.Art.FrozenBF16), got)
}
