package train

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkBF16Step times one full fine-tuning Run of the small llama's
// train.onnx (every parameter, MIGU taps, batch 4 × 128) with fp32 and
// with bf16 weight products (GraphOptions.Precision), standard operators
// otherwise, on 2 ORT threads, reporting wall and CPU time per step. The
// log names the path migu picks (kernels.BF16Hardware.Path): where it is
// f32, bf16 is expected slower than fp32 by the rounding (bf16-f32) and
// oneDNN's own bf16 product (or emulation) slower still (bf16-native).
func BenchmarkBF16Step(b *testing.B) {
	lib := testenv.BF16(b)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	b.Logf("bf16 path: %s", kernels.ReadBF16Hardware().Path())
	_, model, man := testfix.PresetModel(b, "llama", exporters.InitOptions{Preset: "small"})
	// bf16 runs on each of MatMulBF16's paths ($MIGU_BF16_PATH): f32, what
	// migu picks where bf16 units do not pay, and native, oneDNN's bf16
	// products.
	for _, variant := range []string{PrecisionFP32, PrecisionBF16 + "-f32", PrecisionBF16 + "-native"} {
		precision, path, _ := strings.Cut(variant, "-")
		so := ort.SessionOptions{Threads: 2, NoMemPattern: true}
		if precision == PrecisionBF16 {
			so.CustomOps = []string{lib}
		}
		out := mkdir(b, filepath.Join(b.TempDir(), variant))
		art, err := BuildGraph(model, out, GraphOptions{Trainable: TrainAll, Taps: true, Precision: precision})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("llama/"+variant, func(b *testing.B) {
			if path != "" {
				b.Setenv("MIGU_BF16_PATH", path)
			}
			run := bind(b, filepath.Join(out, GraphFile), model, man, art, so)
			cpu := testenv.CPUTime()
			for b.Loop() {
				run()
			}
			testenv.ReportCPU(b, cpu)
		})
	}
}
