package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

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
	lib := withKernels(b)
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
					name := fmt.Sprintf("%s/%dx%dx%d/threads=%d/%s", a.name, shape[0], shape[1], shape[2], threads, variant(fused))
					b.Run(name, func(b *testing.B) {
						inputs := map[string]ort.Value{}
						out := map[string]ort.Value{"y": benchTensor(b, make([]float32, n), shape...)}
						for i, name := range a.inputs {
							inputs[name] = benchTensor(b, in[i], shape...)
							out["d"+name] = benchTensor(b, make([]float32, n), shape...)
						}
						benchGraph(b, buildAct(b, a, shape, r, fused).path, lib, fused, threads, inputs, out)
					})
				}
			}
		}
	}
}

// BenchmarkActivationTaps runs each fused activation without taps and with
// MIGU's taps of its inputs, as separate AbsColSum nodes and inside the
// activation kernel (SwiGLUTaps, GeluTaps), at the hidden layer of the small presets as
// `make bench` trains them (batch 4 × 128; llama's intermediate 1376,
// roberta's 2048 with the erf GELU, t5's 1024 with the gated tanh one,
// the gated erf one at t5's width), on 1 and 2 ORT threads, with CPU time
// per run.
func BenchmarkActivationTaps(b *testing.B) {
	lib := withKernels(b)
	width := map[string]int64{"SwiGLU": 1376, "GeluErf": 2048, "GeluTanh": 1024, "GeluTanhGated": 1024, "GeluErfGated": 1024}
	for _, a := range activations {
		shape := []int64{4, 128, width[a.name]}
		rng := rand.New(rand.NewPCG(1, 2))
		n := numel(shape)
		in := make([][]float32, len(a.inputs))
		for i := range in {
			in[i] = random(rng, n, a.lo, a.hi)
		}
		for _, threads := range []int{1, 2} {
			for _, where := range []string{noTaps, separateTaps, kernelTaps} {
				b.Run(fmt.Sprintf("%s/%dx%dx%d/threads=%d/%s", a.name, shape[0], shape[1], shape[2], threads, where), func(b *testing.B) {
					inputs := map[string]ort.Value{}
					out := map[string]ort.Value{"y": benchTensor(b, make([]float32, n), shape...)}
					for i, name := range a.inputs {
						inputs[name] = benchTensor(b, in[i], shape...)
						if where != noTaps {
							out["magnitude/"+name] = benchTensor(b, make([]float32, shape[2]), shape[2])
						}
					}
					benchGraph(b, actTapsGraph(b, a, shape, where), lib, true, threads, inputs, out)
				})
			}
		}
	}
}
