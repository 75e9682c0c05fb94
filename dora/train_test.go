package dora

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
)

// plan injects a fresh DoRA adapter into the model folder and returns the
// adapter, its training plan and its initial values.
func plan(t *testing.T, dir string, cfg lora.Config, seed uint64) (*Adapter, *train.Plan, map[string][]float32) {
	t.Helper()
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := loadModel(t, dir)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: seed, Training: true})
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]float32{}
	for _, p := range inj.Params {
		values[p.Name] = slices.Clone(p.Init)
	}
	return a, &train.Plan{Model: m, Manifest: man, Trainable: inj.ParamNames(), Points: inj.Points, Rules: inj.Masks}, values
}

// Twenty DoRA steps give PEFT's losses from the same initial A, B and m.
func TestTrainingMatchesPEFT(t *testing.T) {
	hf, dir := testfix.TinyModel(t, "llama")
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	const steps, lr, wd = 20, 5e-3, 0.01
	a, p, values := plan(t, dir, lora.Config{Targets: []string{"q", "v", "ffn_out"}, R: 4, Alpha: 8}, 3)
	initial := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(initial, p.Manifest, values); err != nil {
		t.Fatal(err)
	}
	tr, err := train.NewTrainer(p, t.TempDir(), train.Config{GradAccum: 1, Optim: train.AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd}, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	batches := testfix.RandomBatches(steps, 2, 10, 600, 8)
	want := testfix.PEFTLosses(t, hf, initial, batches, testfix.PEFTRun{Class: "LlamaForCausalLM", LR: lr, WD: wd, DoRA: true})
	worst := 0.0
	for i, b := range batches {
		res, err := tr.TrainStep([]*data.Batch{b}, false)
		if err != nil {
			t.Fatal(err)
		}
		worst = math.Max(worst, math.Abs(res.Loss-want[i]))
		if math.Abs(res.Loss-want[i]) > 1e-4 {
			t.Fatalf("step %d: loss %.6f, PEFT %.6f", i+1, res.Loss, want[i])
		}
	}
	moved := 0.0
	for name, v := range tr.Params() {
		moved = math.Max(moved, testfix.MaxAbsDiff(v, values[name]))
	}
	if moved < 1e-3 {
		t.Errorf("the adapter moved by %.3g only; the comparison proves little", moved)
	}
	t.Logf("%d steps: loss %.4f → %.4f, max |Δ| against PEFT %.3g", steps, want[0], want[steps-1], worst)
}

// With MIGU, a layer's magnitude vector is masked by the layer's output
// magnitudes, as its B is: one step in grad mode without weight decay
// moves exactly the kept elements of m, those of B's kept columns, and
// keeps d − ⌈T·(d−1)⌉ of the d features, T's quantile rule.
func TestMIGUMasksMagnitude(t *testing.T) {
	_, dir := testfix.TinyModel(t, "llama")
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	const T = 0.7
	_, p, values := plan(t, dir, lora.Config{Targets: []string{"q", "ffn_out"}, R: 4, Alpha: 8}, 5)
	tr, err := train.NewTrainer(p, t.TempDir(), train.Config{GradAccum: 1, Optim: train.AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		UseMIGU: true, T: T, Mode: migu.ModeGrad, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.TrainStep([]*data.Batch{testfix.RandomBatches(1, 2, 10, 600, 4)[0]}, true)
	if err != nil {
		t.Fatal(err)
	}
	after := tr.Params()
	checked := 0
	for _, r := range p.Rules {
		if len(r.Shape) != 1 {
			continue
		}
		linear := r.Param[:len(r.Param)-len("."+magnitudeSuffix)]
		if r.Tap != linear || r.Axis != 0 {
			t.Errorf("%s is masked by tap %s axis %d, want the layer output %s", r.Param, r.Tap, r.Axis, linear)
		}
		keep := tr.Masker().Keep(r.Param)
		keepB := tr.Masker().Keep(lora.ParamB(linear))
		if keep == nil || !slices.Equal(keep.Features, keepB.Features) {
			t.Fatalf("%s: mask %v, B's %v", r.Param, keep, keepB)
		}
		d := r.Shape[0]
		kept := 0
		for j, k := range keep.Features {
			moved := after[r.Param][j] != values[r.Param][j]
			if moved != k {
				t.Errorf("%s[%d]: kept %v, moved %v", r.Param, j, k, moved)
			}
			if k {
				kept++
			}
		}
		if want := int(d) - int(math.Ceil(T*float64(d-1))); kept != want {
			t.Errorf("%s: %d of %d features kept, T = %v keeps %d", r.Param, kept, d, T, want)
		}
		if s := res.Masks[linear]; s.Updated != float64(kept)/float64(d) {
			t.Errorf("%s: step statistics say %.3f updated, %d of %d kept", linear, s.Updated, kept, d)
		}
		checked++
	}
	want := 0
	for _, l := range p.Manifest.Linears {
		if l.Role == modeldir.RoleQ || l.Role == modeldir.RoleFFNOut {
			want++
		}
	}
	if checked != want || want == 0 {
		t.Errorf("%d magnitude vectors checked, want %d (the q and ffn_out layers)", checked, want)
	}
}
