package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkLayerNorm runs LayerNorm forward and backward (y, dx, dw, db,
// plus the Σ y ⊙ r loss both variants share) as ORT's LayerNormalization
// with migu's standard-op gradient and with the fused kernels, at the
// small roberta preset's shape as `make bench` trains it (batch 4 × 128,
// hidden 512), on 1 and 2 ORT threads, outputs bound in advance, with CPU
// time per run as BenchmarkRMSNorm reports it.
func BenchmarkLayerNorm(b *testing.B) {
	lib := testenv.Kernels(b)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	shape := []int64{4, 128, 512}
	rng := rand.New(rand.NewPCG(1, 2))
	n, d := numel(shape), int(shape[len(shape)-1])
	x, w, bias, r := random(rng, n, -1.5, 2.5), random(rng, d, 0.5, 1.5), random(rng, d, -0.5, 0.5), random(rng, n, -1, 1)
	for _, threads := range []int{1, 2} {
		for _, fused := range []bool{false, true} {
			variant := "standard"
			opts := ort.SessionOptions{Threads: threads}
			if fused {
				variant = "fused"
				opts.CustomOps = []string{lib}
			}
			b.Run(fmt.Sprintf("%dx%dx%d/threads=%d/%s", shape[0], shape[1], shape[2], threads, variant), func(b *testing.B) {
				s, err := ort.NewSession(buildLN(b, shape, r, fused).path, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				bind, err := s.NewBinding()
				if err != nil {
					b.Fatal(err)
				}
				defer bind.Close()
				tensor := func(v []float32, shape ...int64) ort.Value {
					t, err := ort.NewTensor(v, shape...)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { t.Close() })
					return t
				}
				for _, err := range []error{
					bind.BindInput("x", tensor(x, shape...)),
					bind.BindInput("w", tensor(w, int64(d))),
					bind.BindInput("b", tensor(bias, int64(d))),
					bind.BindOutput("y", tensor(make([]float32, n), shape...)),
					bind.BindOutput("dx", tensor(make([]float32, n), shape...)),
					bind.BindOutput("dw", tensor(make([]float32, d), int64(d))),
					bind.BindOutput("db", tensor(make([]float32, d), int64(d))),
				} {
					if err != nil {
						b.Fatal(err)
					}
				}
				for range 3 { // ORT's first runs are slow
					if err := bind.Run(); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				cpu := cpuTime()
				for range b.N {
					if err := bind.Run(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
			})
		}
	}
}
