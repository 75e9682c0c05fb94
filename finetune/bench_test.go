package finetune

import (
	"github.com/migu-ml/migu/adapters"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
)

// BenchmarkTrainStep times one optimizer step (ORT forward+backward, the
// MIGU mask, AdamW) of the small llama preset at batch 4 × 128 tokens, for
// full fine-tuning and LoRA (q,v), with and without MIGU (T = 0.7, grad
// mode), so the cost of MIGU shows as a ratio.
func BenchmarkTrainStep(b *testing.B) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	_, model, man := testfix.PresetModel(b, "llama", exporters.InitOptions{Preset: "small"})
	batches := testfix.RandomBatches(8, 4, 128, man.VocabSize, 1)
	for _, method := range []string{MethodFull, lora.Kind} {
		for _, withMIGU := range []bool{false, true} {
			name := method
			if withMIGU {
				name += "+migu"
			}
			b.Run(name, func(b *testing.B) {
				tr := benchTrainer(b, model, method, train.Config{GradAccum: 1, Optim: train.DefaultAdamW(), UseMIGU: withMIGU, T: 0.7, Mode: migu.ModeGrad})
				defer tr.Close()
				for i := 0; i < 2; i++ { // warm-up: ORT's first runs are slow
					if _, err := tr.TrainStep([]*data.Batch{batches[i]}, true); err != nil {
						b.Fatal(err)
					}
				}
				tokens := 0
				i := 0
				for b.Loop() {
					res, err := tr.TrainStep([]*data.Batch{batches[i%len(batches)]}, true)
					if err != nil {
						b.Fatal(err)
					}
					tokens += res.Tokens
					i++
				}
				b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

func benchTrainer(b *testing.B, model, method string, cfg train.Config) *train.Trainer {
	b.Helper()
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		b.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var plan *train.Plan
	if method == lora.Kind {
		var a adapters.Adapter
		if a, err = adapters.New(lora.Kind, nil); err == nil {
			plan, err = adapterPlan(m, man, a, 0)
		}
	} else {
		plan, err = train.FullPlan(m, man)
	}
	if err != nil {
		b.Fatal(err)
	}
	tr, err := train.NewTrainer(plan, b.TempDir(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return tr
}
