package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkMatMulBF16 runs the three products of a small-llama feed-forward
// linear (4 × 128 tokens, hidden 512, intermediate 1376) — forward
// x·W, input gradient dY·Wᵀ, weight gradient xᵀ·dY — on 1 and 2 threads:
//
//   - fp32: ORT's MatMul and Gemm (MLAS), what --precision fp32 runs;
//   - bf16-native, bf16-f32: ai.migu.bf16.MatMulBF16 on float32 operands
//     (rounded to bf16 in the op), what --precision bf16 runs for trained
//     weights, on each of its paths ($MIGU_BF16_PATH): oneDNN's bf16
//     product (bf16 units, or emulated), or oneDNN's float32 product of
//     the rounded operands (migu's choice on CPUs without bf16 units);
//   - bf16-weight-native, bf16-weight-f32: the same with W already stored
//     in bf16 (frozen weights of a bf16 model folder), forward and input
//     gradient only;
//   - ort-bf16: ORT's own kernels on bf16 operands (Cast, MatMul in bf16),
//     the alternative to oneDNN; where ORT's CPU provider has no bf16
//     MatMul the case reports it and skips.
//
// The log names the path migu picks (kernels.BF16Hardware.Path): where it
// is f32, bf16-f32 is what migu runs and bf16-native is slower (oneDNN's
// emulation, or bf16 units slower than the float32 FMAs).
func BenchmarkMatMulBF16(b *testing.B) {
	lib := withBF16(b)
	b.Logf("bf16 path: %s", kernels.ReadBF16Hardware().Path())
	const m, k, n = 512, 512, 1376
	rng := rand.New(rand.NewPCG(1, 2))
	x, w, dy := gaussian(rng, m*k), gaussian(rng, k*n), gaussian(rng, m*n)
	type operand struct {
		name  string
		shape []int64
		vals  []float32
	}
	products := []struct {
		name           string
		a, b           operand
		transA, transB int64
		out            []int64
	}{
		{"forward", operand{"x", []int64{m, k}, x}, operand{"w", []int64{k, n}, w}, 0, 0, []int64{m, n}},
		{"grad-input", operand{"dy", []int64{m, n}, dy}, operand{"w", []int64{k, n}, w}, 0, 1, []int64{m, k}},
		{"grad-weight", operand{"x", []int64{m, k}, x}, operand{"dy", []int64{m, n}, dy}, 1, 0, []int64{k, n}},
	}
	for _, p := range products {
		for _, variant := range []string{"fp32", "bf16-native", "bf16-f32", "bf16-weight-native", "bf16-weight-f32", "ort-bf16", "onednn-f32"} {
			bf16Weight := strings.HasPrefix(variant, "bf16-weight")
			if bf16Weight && p.b.name != "w" {
				continue
			}
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/%dx%dx%d/%s/threads=%d", p.name, m, k, n, variant, threads), func(b *testing.B) {
					gm := onnx.New("bench", nil)
					g := gm.Graph()
					g.AddInput("a", onnx.Float, dimsOf(p.a.shape))
					bt := onnx.Float
					if bf16Weight {
						bt = onnx.BFloat16
					}
					g.AddInput("b", bt, dimsOf(p.b.shape))
					trans := []onnx.Attr{onnx.AttrInt("transA", p.transA), onnx.AttrInt("transB", p.transB)}
					opts := ort.SessionOptions{Threads: threads}
					switch variant {
					case "fp32":
						g.Node("Gemm", []string{"a", "b"}, []string{"y"}, "y", trans...)
					case "ort-bf16":
						ab := g.Op("Cast", []string{"a"}, "a16", onnx.AttrInt("to", int64(onnx.BFloat16)))
						bb := g.Op("Cast", []string{"b"}, "b16", onnx.AttrInt("to", int64(onnx.BFloat16)))
						// MatMul for the forward product (ORT's bf16 kernels, where any,
						// are MatMul's), Gemm for the transposed ones.
						y16 := g.Op("MatMul", []string{ab, bb}, "y16")
						if p.transA != 0 || p.transB != 0 {
							y16 = g.Op("Gemm", []string{ab, bb}, "y16", trans...)
						}
						g.Node("Cast", []string{y16}, []string{"y"}, "y", onnx.AttrInt("to", int64(onnx.Float)))
					case "onednn-f32":
						g.Node("MatMulF32", []string{"a", "b"}, []string{"y"}, "y", trans...)
						g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
						gm.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
						opts.CustomOps = []string{lib}
					default:
						b.Setenv("MIGU_BF16_PATH", variant[strings.LastIndexByte(variant, '-')+1:])
						g.Node("MatMulBF16", []string{"a", "b"}, []string{"y"}, "y", trans...)
						g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
						gm.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
						opts.CustomOps = []string{lib}
					}
					g.AddOutput("y", onnx.Float, dimsOf(p.out))
					path := filepath.Join(b.TempDir(), "bench.onnx")
					if err := gm.Save(path, onnx.SaveOptions{}); err != nil {
						b.Fatal(err)
					}
					s, err := ort.NewSession(path, opts)
					if err != nil {
						if variant == "ort-bf16" {
							b.Skipf("ORT has no CPU kernel for this bf16 product: %v", err)
						}
						b.Fatal(err)
					}
					defer s.Close()
					av, err := ort.NewTensor(p.a.vals, p.a.shape...)
					if err != nil {
						b.Fatal(err)
					}
					defer av.Close()
					var bv ort.Value
					if bf16Weight {
						bits := make([]uint16, len(p.b.vals))
						for i, v := range p.b.vals {
							bits[i] = half.F32ToBF16(v)
						}
						bv, err = ort.NewBFloat16Tensor(bits, p.b.shape...)
					} else {
						bv, err = ort.NewTensor(p.b.vals, p.b.shape...)
					}
					if err != nil {
						b.Fatal(err)
					}
					defer bv.Close()
					bind := bindProduct(b, s, av, bv, p.out)
					run := bind.Run
					if variant == "ort-bf16" {
						run = func() error {
							if err := bind.Run(); err != nil {
								b.Skipf("ORT cannot run this bf16 product: %v", err)
							}
							return nil
						}
					}
					testenv.TimeRuns(b, run)
					b.ReportMetric(2*float64(m)*float64(k)*float64(n)/b.Elapsed().Seconds()*float64(b.N)/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// bindProduct binds a and b as the inputs "a" and "b" of s and a float32
// output "y" of shape out allocated once, so that a benchmark times the
// product and not the allocation of its result; the binding and the output
// are released when b ends.
func bindProduct(b *testing.B, s *ort.Session, a, bv ort.Value, out []int64) *ort.Binding {
	b.Helper()
	bind, err := s.NewBinding()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bind.Close() })
	yv, err := ort.NewTensor(make([]float32, numel(out)), out...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { yv.Close() })
	for _, err := range []error{bind.BindInput("a", a), bind.BindInput("b", bv), bind.BindOutput("y", yv)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	return bind
}
