package train

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The AdamW loops (8-lane ones when built with GOEXPERIMENT=simd) give
// bit for bit what PyTorch's order of float32 operations gives, written
// out here one value at a time, with and without a column factor, for
// lengths that leave a tail.
func TestAdamWLoopsMatchScalarFormula(t *testing.T) {
	k := adamConsts{decay: 0.999, negStep: -1.3e-3, bc2Sqrt: 0.0447, eps: 1e-8, b1: 0.9, b2: 0.999, ob1: 0.1, ob2: 0.001}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 7, 8, 9, 64, 1003} {
		for _, withFactor := range []bool{false, true} {
			p, g, m, v, f := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range p {
				p[i], g[i], m[i] = rng.Float32()-0.5, (rng.Float32()-0.5)*1e-2, (rng.Float32()-0.5)*1e-3
				v[i] = rng.Float32() * 1e-5
				if rng.IntN(3) > 0 {
					f[i] = 1
				}
			}
			const scale = 0.75
			wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
			for i := range wp {
				gi := g[i] * scale
				if withFactor {
					gi *= f[i]
				}
				pi := wp[i] * k.decay
				mi := wm[i]*k.b1 + gi*k.ob1
				vi := wv[i]*k.b2 + gi*gi*k.ob2
				denom := float32(math.Sqrt(float64(vi)))/k.bc2Sqrt + k.eps
				wp[i], wm[i], wv[i] = pi+k.negStep*(mi/denom), mi, vi
			}
			if withFactor {
				k.updateFactor(p, g, m, v, f, scale)
			} else {
				k.update(p, g, m, v, scale)
			}
			for i := range p {
				if p[i] != wp[i] || m[i] != wm[i] || v[i] != wv[i] {
					t.Fatalf("n %d factor %v, value %d: got (%v %v %v), want (%v %v %v)", n, withFactor, i, p[i], m[i], v[i], wp[i], wm[i], wv[i])
				}
			}
		}
	}
}
