package train

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/migu"
)

// smallLlamaTensors returns tensors shaped like the small llama preset's
// parameters (8 layers, hidden 512, GQA, vocabulary 3400: about 26.5M
// values) with random gradients, and MIGU keeps (30% of the output columns
// of every linear weight).
func smallLlamaTensors() ([]*Tensor, map[*Tensor]*migu.Keep) {
	rng := rand.New(rand.NewPCG(1, 2))
	var shapes [][2]int64
	shapes = append(shapes, [2]int64{3400, 512}, [2]int64{512, 3400}, [2]int64{1, 512})
	for range 8 {
		shapes = append(shapes, [2]int64{512, 512}, [2]int64{512, 256}, [2]int64{512, 256}, [2]int64{512, 512},
			[2]int64{512, 1376}, [2]int64{512, 1376}, [2]int64{1376, 512}, [2]int64{1, 512}, [2]int64{1, 512})
	}
	var ts []*Tensor
	keep := map[*Tensor]*migu.Keep{}
	for _, s := range shapes {
		n := s[0] * s[1]
		t := &Tensor{Shape: s[:], Value: make([]float32, n), Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		for i := range t.Grad {
			t.Value[i] = rng.Float32() - 0.5
			t.Grad[i] = (rng.Float32() - 0.5) * 1e-2
		}
		ts = append(ts, t)
		if s[0] > 1 && s[0] != 3400 {
			f := make([]bool, s[1])
			for j := range f {
				f[j] = rng.Float64() < 0.3
			}
			keep[t] = &migu.Keep{Features: f, Axis: 1, Rows: s[0], Cols: s[1]}
		}
	}
	return ts, keep
}

// BenchmarkAdamW times one optimizer step over the small llama's 26.5M
// parameters: plain, with MIGU masks in grad mode and in update mode, the
// global gradient norm that clipping needs first, and a step that sums the
// norm as it goes (StepNorm, without clipping) against the norm and then
// the step; and the plain step rounding into bf16 twins as it goes.
func BenchmarkAdamW(b *testing.B) {
	ts, keep := smallLlamaTensors()
	opt, err := NewAdamW(DefaultAdamW())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		masking migu.Mode
	}{{"plain", migu.ModeNone}, {"migu-grad", migu.ModeGrad}, {"migu-update", migu.ModeUpdate}} {
		b.Run(c.name, func(b *testing.B) {
			cpu := testenv.CPUTime()
			for b.Loop() {
				opt.Step(ts, 1e-4, keep, c.masking)
			}
			testenv.ReportCPU(b, cpu)
		})
	}
	// The step that also rounds each chunk into the weights' bf16 twins
	// (Tensor.BF16), as a bf16 run that shares its operands takes it.
	b.Run("plain-bf16-twins", func(b *testing.B) {
		for _, t := range ts {
			t.BF16 = make([]uint16, len(t.Value))
		}
		defer func() {
			for _, t := range ts {
				t.BF16 = nil
			}
		}()
		cpu := testenv.CPUTime()
		for b.Loop() {
			opt.Step(ts, 1e-4, keep, migu.ModeNone)
		}
		testenv.ReportCPU(b, cpu)
	})
	b.Run("grad-norm", func(b *testing.B) {
		cpu := testenv.CPUTime()
		for b.Loop() {
			GradNorm(ts)
		}
		testenv.ReportCPU(b, cpu)
	})
	b.Run("norm-then-step", func(b *testing.B) {
		cpu := testenv.CPUTime()
		for b.Loop() {
			GradNorm(ts)
			opt.Step(ts, 1e-4, keep, migu.ModeGrad)
		}
		testenv.ReportCPU(b, cpu)
	})
	b.Run("step-norm", func(b *testing.B) {
		cpu := testenv.CPUTime()
		for b.Loop() {
			opt.StepNorm(ts, 1e-4, keep, migu.ModeGrad)
		}
		testenv.ReportCPU(b, cpu)
	})
}

// BenchmarkAddScaled times what gradient accumulation adds to a
// micro-batch (the small llama's 26.5 M gradients added, scaled, into the
// accumulated ones) and a data-parallel rank's scaling of its share.
func BenchmarkAddScaled(b *testing.B) {
	ts, _ := smallLlamaTensors()
	src := map[*Tensor][]float32{}
	for _, t := range ts {
		src[t] = slices.Clone(t.Grad)
	}
	for _, c := range []struct {
		name string
		src  map[*Tensor][]float32
	}{{"accumulate", src}, {"scale", nil}} {
		b.Run(c.name, func(b *testing.B) {
			cpu := testenv.CPUTime()
			for b.Loop() {
				addScaled(ts, c.src, 0.5)
			}
			testenv.ReportCPU(b, cpu)
		})
	}
}
