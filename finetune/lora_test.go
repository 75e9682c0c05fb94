package finetune

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
)

// Twenty LoRA steps give PEFT's losses from the same initial A and B, with
// the frozen weights in float32 and in bfloat16 (migu export --dtype bf16;
// PyTorch given the same rounded weights).
func TestLoRATrainingMatchesPEFT(t *testing.T) {
	hf, f32 := testfix.TinyModel(t, "llama")
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	bf16 := filepath.Join(t.TempDir(), "bf16")
	if _, err := exporters.ExportWith(hf, bf16, exporters.ExportOptions{DType: exporters.DTypeBF16}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, model string
		bf16        bool
	}{{"float32", f32, false}, {"bfloat16", bf16, true}} {
		t.Run(tc.name, func(t *testing.T) { loraMatchesPEFT(t, hf, tc.model, tc.bf16) })
	}
}

func loraMatchesPEFT(t *testing.T, hf, model string, bf16 bool) {
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if bf16 {
		w := m.Graph().Initializer(man.Linears[0].Weight)
		if onnx.DType(w.GetDataType()) != onnx.BFloat16 {
			t.Fatalf("%s is %v in the bf16 export", w.GetName(), onnx.DType(w.GetDataType()))
		}
	}
	const steps, lr, wd = 20, 5e-3, 0.01
	adapter, err := adapters.New(lora.Kind, lora.Config{Targets: []string{"q", "v", "ffn_out"}, R: 4, Alpha: 8}.Settings())
	if err != nil {
		t.Fatal(err)
	}
	plan, err := adapterPlan(m, man, adapter, 3)
	if err != nil {
		t.Fatal(err)
	}
	initial := filepath.Join(t.TempDir(), "adapter")
	values := map[string][]float32{}
	for _, name := range plan.Trainable {
		v, err := m.Float32s(m.Graph().Initializer(name))
		if err != nil {
			t.Fatal(err)
		}
		values[name] = v
	}
	if err := adapter.Save(initial, man, values); err != nil {
		t.Fatal(err)
	}
	tr, err := train.NewTrainer(plan, t.TempDir(), train.Config{GradAccum: 1, Optim: train.AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd}, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	batches := testfix.RandomBatches(steps, 2, 10, 600, 8)
	want := testfix.PEFTLosses(t, hf, initial, batches, testfix.PEFTRun{Class: "LlamaForCausalLM", LR: lr, WD: wd, BF16: bf16})
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
	if want[0] == want[steps-1] {
		t.Fatal("PEFT's loss did not move: the comparison would prove nothing")
	}
	t.Logf("lora: %d steps, loss %.4f → %.4f, max |Δloss| = %.2g", steps, want[0], want[steps-1], worst)
}
