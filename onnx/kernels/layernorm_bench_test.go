package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkLayerNorm runs LayerNorm forward and backward (y, dx, dw, db,
// plus the Σ y ⊙ r loss both variants share) as ORT's LayerNormalization
// with migu's standard-op gradient and with the fused kernels, at the
// small roberta preset's shape as `make bench` trains it (batch 4 × 128,
// hidden 512), on 1 and 2 ORT threads, outputs bound in advance, with CPU
// time per run as BenchmarkRMSNorm reports it.
func BenchmarkLayerNorm(b *testing.B) {
	lib := withKernels(b)
	shape := []int64{4, 128, 512}
	rng := rand.New(rand.NewPCG(1, 2))
	n, d := numel(shape), int(shape[len(shape)-1])
	x, w, bias, r := random(rng, n, -1.5, 2.5), random(rng, d, 0.5, 1.5), random(rng, d, -0.5, 0.5), random(rng, n, -1, 1)
	for _, threads := range []int{1, 2} {
		for _, fused := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dx%dx%d/threads=%d/%s", shape[0], shape[1], shape[2], threads, variant(fused)), func(b *testing.B) {
				in := map[string]ort.Value{"x": benchTensor(b, x, shape...), "w": benchTensor(b, w, int64(d)), "b": benchTensor(b, bias, int64(d))}
				out := map[string]ort.Value{"y": benchTensor(b, make([]float32, n), shape...), "dx": benchTensor(b, make([]float32, n), shape...),
					"dw": benchTensor(b, make([]float32, d), int64(d)), "db": benchTensor(b, make([]float32, d), int64(d))}
				benchGraph(b, buildLN(b, shape, r, fused).path, lib, fused, threads, in, out)
			})
		}
	}
}
