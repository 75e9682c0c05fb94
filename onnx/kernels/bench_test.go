package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkRMSNorm runs RMSNorm forward and backward (y, dx, dw, plus the
// Σ y ⊙ r loss both variants share) in standard operators and with the
// fused kernels, at the small llama preset's shapes as `make bench` trains
// it (batch 4 × 128, hidden 512) and at SmolLM2-135M's (batch 8 × 256,
// hidden 576), on 1 and 2 ORT threads, outputs bound in advance. Besides
// wall time it reports CPU time per run (cpu-ms/op), which a machine
// shared with other jobs disturbs less.
func BenchmarkRMSNorm(b *testing.B) {
	lib := withKernels(b)
	for _, c := range []struct {
		shape   []int64
		threads int
	}{{[]int64{4, 128, 512}, 1}, {[]int64{4, 128, 512}, 2}, {[]int64{8, 256, 576}, 1}, {[]int64{8, 256, 576}, 2}} {
		shape := c.shape
		rng := rand.New(rand.NewPCG(1, 2))
		n, d := numel(shape), int(shape[len(shape)-1])
		x, w, r := random(rng, n, -2, 2), random(rng, d, 0.5, 1.5), random(rng, n, -1, 1)
		for _, fused := range []bool{false, true} {
			name := fmt.Sprintf("%dx%dx%d/threads=%d/%s", shape[0], shape[1], shape[2], c.threads, variant(fused))
			b.Run(name, func(b *testing.B) {
				in := map[string]ort.Value{"x": benchTensor(b, x, shape...), "w": benchTensor(b, w, int64(d))}
				out := map[string]ort.Value{"y": benchTensor(b, make([]float32, n), shape...),
					"dx": benchTensor(b, make([]float32, n), shape...), "dw": benchTensor(b, make([]float32, d), int64(d))}
				benchGraph(b, buildRMS(b, shape, r, fused).path, lib, fused, c.threads, in, out)
			})
		}
	}
}

// variant names a benchmark's side.
func variant(fused bool) string {
	if fused {
		return "fused"
	}
	return "standard"
}

// benchTensor is an ORT tensor of v, closed when the benchmark ends.
func benchTensor[T float32 | int64](b *testing.B, v []T, shape ...int64) ort.Value {
	t, err := ort.NewTensor(v, shape...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.Close() })
	return t
}

// benchGraph times runs of a graph with bound inputs and outputs
// (testenv.TimeRuns: after three warm-up runs, with CPU time per run).
func benchGraph(b *testing.B, path, lib string, fused bool, threads int, in, out map[string]ort.Value) {
	b.Helper()
	opts := ort.SessionOptions{Threads: threads}
	if fused {
		opts.CustomOps = []string{lib}
	}
	s, err := ort.NewSession(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bind, err := s.NewBinding()
	if err != nil {
		b.Fatal(err)
	}
	defer bind.Close()
	for name, v := range in {
		if err := bind.BindInput(name, v); err != nil {
			b.Fatal(err)
		}
	}
	for name, v := range out {
		if err := bind.BindOutput(name, v); err != nil {
			b.Fatal(err)
		}
	}
	testenv.TimeRuns(b, bind.Run)
}
