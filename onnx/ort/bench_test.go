package ort

import (
	"testing"

	"github.com/migu-ml/migu/onnx"
)

// BenchmarkMatMulRun times one step of Y = X·W (X 64×256, W 256×256) on a
// Binding with preallocated input and output, single-threaded.
func BenchmarkMatMulRun(b *testing.B) {
	const batch, k, n = 64, 256, 256
	s := openSession(b, matmulModel(b, k, n), SessionOptions{Threads: 1})
	x := must[*Tensor[float32]](b)(Zeros[float32](batch, k))
	y := must[*Tensor[float32]](b)(Zeros[float32](batch, n))
	defer closeAll(x, y)
	for i := range x.Data() {
		x.Data()[i] = float32(i%13) * 0.1
	}
	bd := must[*Binding](b)(s.NewBinding())
	defer bd.Close()
	if err := bd.BindInput("X", x); err != nil {
		b.Fatal(err)
	}
	if err := bd.BindOutput("Y", y); err != nil {
		b.Fatal(err)
	}
	for range 3 {
		bd.Run()
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := bd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(2*batch*k*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkRunOverhead times a Run of an Identity on a [1] tensor: the
// fixed cost of one call into ORT, through a Binding and through
// Session.Run (which lets ORT allocate the output and copies it).
func BenchmarkRunOverhead(b *testing.B) {
	s := openSession(b, identityModel(b, onnx.Float, 1), SessionOptions{Threads: 1})
	in := must[*Tensor[float32]](b)(NewTensor([]float32{1}, 1))
	out := must[*Tensor[float32]](b)(Zeros[float32](1))
	defer closeAll(in, out)
	b.Run("Binding", func(b *testing.B) {
		bd := must[*Binding](b)(s.NewBinding())
		defer bd.Close()
		if err := bd.BindInput("in", in); err != nil {
			b.Fatal(err)
		}
		if err := bd.BindOutput("out", out); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := bd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Session.Run", func(b *testing.B) {
		inputs := map[string]Value{"in": in}
		b.ReportAllocs()
		for b.Loop() {
			outs, err := s.Run(inputs)
			if err != nil {
				b.Fatal(err)
			}
			outs[0].Close()
		}
	})
}
