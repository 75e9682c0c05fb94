//go:build !(goexperiment.simd && amd64)

package train

// Without GOEXPERIMENT=simd on amd64 the scalar AdamW loops do all the work.

func (k *adamConsts) updateVec(p, g, m, v, f []float32, scale float32) int { return 0 }

func (k *adamConsts) updateSelectVec(p, g, m, v, f []float32, scale float32) int { return 0 }

func sumSquaresVec(g []float32) (float64, int) { return 0, 0 }

func addScaledVec(dst, src []float32, scale float32) int { return 0 }

func sumSquaresVec4(g *[4][]float32) (sums [4]float64, done [4]int) { return sums, done }

// normVec: no update loop sums the norm as it goes.
var normVec = false

type squares struct{}

func (s *squares) sum() float64 { return 0 }

func (k *adamConsts) updateNormVec(p, g, m, v, f []float32, sq *squares) int { return 0 }

func roundBF16Vec(dst []uint16, src []float32) int { return 0 }

// VectorizedAdamW reports whether AdamW runs its vector loops (a build
// with GOEXPERIMENT=simd on an AVX2 machine), for benchmark reports.
func VectorizedAdamW() bool { return false }
