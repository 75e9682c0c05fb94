package train

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// Benchmark sizes: the small presets at batch 4 × 128 tokens.
const (
	benchBatch = 4
	benchSeq   = 128
)

// BenchmarkStep compares one forward-only Run of model.onnx with one Run of
// train.onnx (loss, every linear weight's gradient, MIGU taps) on the small
// presets. Both bind preallocated tensors, so the numbers are ORT's work.
// The textbook ratio is about 3: the backward pass costs two forward passes.
func BenchmarkStep(b *testing.B) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	for _, arch := range []string{"llama", "t5", "roberta"} {
		_, model, man := testfix.PresetModel(b, arch, exporters.InitOptions{Preset: "small"})
		out := filepath.Join(b.TempDir(), "train")
		art, err := BuildGraph(model, mkdir(b, out), GraphOptions{Trainable: TrainLinear, Taps: true})
		if err != nil {
			b.Fatal(err)
		}
		tokens := float64(benchBatch * benchSeq)
		b.Run(arch+"/forward", func(b *testing.B) {
			run := bind(b, filepath.Join(model, modeldir.ModelFile), model, man, nil, ort.SessionOptions{})
			for b.Loop() {
				run()
			}
			b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(arch+"/train", func(b *testing.B) {
			run := bind(b, filepath.Join(out, GraphFile), model, man, art, ort.SessionOptions{})
			for b.Loop() {
				run()
			}
			b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkFusedStep times one full fine-tuning Run of each small
// preset's train.onnx (llama, t5, roberta; every parameter, MIGU taps,
// batch 4 × 128) in standard operators and with migu's fused kernels as
// the trainer builds it (GraphOptions.Fused: norms and activations fused,
// the taps in standard ops), reporting wall and CPU time per step.
func BenchmarkFusedStep(b *testing.B) {
	lib := testenv.Kernels(b)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	for _, arch := range []string{"llama", "t5", "roberta"} {
		_, model, man := testfix.PresetModel(b, arch, exporters.InitOptions{Preset: "small"})
		for _, fused := range []bool{false, true} {
			name, so := "standard", ort.SessionOptions{Threads: 2, NoMemPattern: true}
			if fused {
				name, so.CustomOps = "fused", []string{lib}
			}
			out := mkdir(b, filepath.Join(b.TempDir(), name))
			art, err := BuildGraph(model, out, GraphOptions{Trainable: TrainAll, Taps: true, Fused: fused})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(arch+"/"+name, func(b *testing.B) {
				run := bind(b, filepath.Join(out, GraphFile), model, man, art, so)
				cpu := testenv.CPUTime()
				for b.Loop() {
					run()
				}
				testenv.ReportCPU(b, cpu)
			})
		}
	}
}

func mkdir(b *testing.B, dir string) string {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// bind prepares a session with every input and output bound to
// preallocated tensors (random token ids, the model's parameters) and
// returns a function running it once; it warms up first, as ORT's first
// runs are slow.
func bind(b *testing.B, path, modelDir string, man *modeldir.Manifest, art *Artifact, so ort.SessionOptions) func() {
	b.Helper()
	s, err := ort.NewSession(path, so)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	bd, err := s.NewBinding()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := func() *ort.Tensor[int64] {
		v := make([]int64, benchBatch*benchSeq)
		for i := range v {
			v[i] = rng.Int64N(man.VocabSize)
		}
		t, err := ort.NewTensor(v, benchBatch, benchSeq)
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	ones := func() *ort.Tensor[int64] {
		v := make([]int64, benchBatch*benchSeq)
		for i := range v {
			v[i] = 1
		}
		t, _ := ort.NewTensor(v, benchBatch, benchSeq)
		return t
	}
	for _, in := range s.Inputs() {
		var v ort.Value
		switch in.Name {
		case "input_ids", "decoder_input_ids", "labels":
			v = tokens()
		case "attention_mask", "decoder_attention_mask":
			v = ones()
		default:
			continue
		}
		if err := bd.BindInput(in.Name, v); err != nil {
			b.Fatal(err)
		}
	}
	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if art != nil {
		for _, p := range art.Params {
			vals, err := m.Float32s(m.Graph().Initializer(p.Name))
			if err != nil {
				b.Fatal(err)
			}
			pv, _ := ort.NewTensor(vals, p.Shape...)
			gv, _ := ort.Zeros[float32](p.Shape...)
			if err := bd.BindInput(p.Name, pv); err != nil {
				b.Fatal(err)
			}
			if err := bd.BindOutput(p.Grad, gv); err != nil {
				b.Fatal(err)
			}
		}
		for _, tap := range art.Taps {
			tv, _ := ort.Zeros[float32](tap.Dim)
			if err := bd.BindOutput(tap.Output, tv); err != nil {
				b.Fatal(err)
			}
		}
		lv, _ := ort.Zeros[float32](1)
		if err := bd.BindOutput(art.Loss, lv); err != nil {
			b.Fatal(err)
		}
	} else {
		n := man.VocabSize
		if man.Objective == "cls" {
			n = int64(man.NumLabels)
		}
		lv, _ := ort.Zeros[float32](benchBatch, benchSeq, n)
		if err := bd.BindOutput(man.Outputs[0], lv); err != nil {
			b.Fatal(err)
		}
	}
	run := func() {
		if err := bd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	run()
	run()
	return run
}
