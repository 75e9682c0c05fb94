package gguf

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkDequantize decodes 4M values (a 2048×2048 projection) of each
// type; bytes/s counts the float32 output.
func BenchmarkDequantize(b *testing.B) {
	const n = 2048 * 2048
	rng := rand.New(rand.NewPCG(1, 2))
	dst := make([]float32, n)
	for _, l := range layouts {
		src := randomBlocks(rng, l.t, n/l.elems)
		b.Run(l.t.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Dequantize(dst, l.t, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuantize encodes 4M values to each type Quantize writes;
// bytes/s counts the float32 input.
func BenchmarkQuantize(b *testing.B) {
	const n = 2048 * 2048
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	for _, typ := range quantTypes {
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if _, err := Quantize(typ, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
