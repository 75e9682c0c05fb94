package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkActivations runs each activation forward and backward (y and
// every input's gradient, plus the Σ y ⊙ r loss both variants share) in
// standard operators and with the fused kernels, at the MLP hidden layer
// of the small llama preset as `make bench` trains it (batch 4 × 128,
// intermediate 1376) and, for SwiGLU, SmolLM2-135M's (batch 8 × 256,
// intermediate 1536), on 1 and 2 ORT threads, outputs bound in advance;
// with CPU time per run (cpu-ms/op) as BenchmarkRMSNorm reports it.
func BenchmarkActivations(b *testing.B) {
	lib := testenv.Kernels(b)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	for _, a := range activations {
		shapes := [][]int64{{4, 128, 1376}}
		if a.name == "SwiGLU" {
			shapes = append(shapes, []int64{8, 256, 1536})
		}
		for _, shape := range shapes {
			rng := rand.New(rand.NewPCG(1, 2))
			n := numel(shape)
			in := make([][]float32, len(a.inputs))
			for i := range in {
				in[i] = random(rng, n, a.lo, a.hi)
			}
			r := random(rng, n, -1, 1)
			for _, threads := range []int{1, 2} {
				for _, fused := range []bool{false, true} {
					variant := "standard"
					opts := ort.SessionOptions{Threads: threads}
					if fused {
						variant = "fused"
						opts.CustomOps = []string{lib}
					}
					name := fmt.Sprintf("%s/%dx%dx%d/threads=%d/%s", a.name, shape[0], shape[1], shape[2], threads, variant)
					b.Run(name, func(b *testing.B) {
						s, err := ort.NewSession(buildAct(b, a, shape, r, fused).path, opts)
						if err != nil {
							b.Fatal(err)
						}
						defer s.Close()
						bind, err := s.NewBinding()
						if err != nil {
							b.Fatal(err)
						}
						defer bind.Close()
						tensor := func(v []float32) ort.Value {
							t, err := ort.NewTensor(v, shape...)
							if err != nil {
								b.Fatal(err)
							}
							b.Cleanup(func() { t.Close() })
							return t
						}
						errs := []error{bind.BindOutput("y", tensor(make([]float32, n)))}
						for i, name := range a.inputs {
							errs = append(errs, bind.BindInput(name, tensor(in[i])), bind.BindOutput("d"+name, tensor(make([]float32, n))))
						}
						for _, err := range errs {
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
	}
}
