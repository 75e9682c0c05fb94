package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkCrossEntropy runs the cross-entropy forward and backward (loss
// and d loss / d logits, as buildCrossEntropy writes them) in standard
// operators and with the fused kernels, at SmolLM2's vocabulary (V =
// 49152) over batch 8 × 256 tokens (N = 2048 rows, a tenth of them
// ignored labels) and at the small llama preset's batch 4 × 128 over a
// vocabulary of 3.4k, on 1 and 2 ORT threads, outputs bound in advance.
// It reports CPU time per run (cpu-ms/op) beside wall time.
func BenchmarkCrossEntropy(b *testing.B) {
	lib := withKernels(b)
	for _, c := range []struct{ n, v, threads int }{{512, 3400, 1}, {512, 3400, 2}, {2048, 49152, 1}, {2048, 49152, 2}} {
		rng := rand.New(rand.NewPCG(1, 2))
		x := random(rng, c.n*c.v, -8, 8)
		r := random(rng, c.n, 0.5, 1.5)
		labels := make([]int64, c.n)
		for i := range labels {
			labels[i] = rng.Int64N(int64(c.v))
			if i%10 == 9 {
				labels[i] = ignoreIndex
			}
		}
		for _, fused := range []bool{false, true} {
			b.Run(fmt.Sprintf("N=%d/V=%d/threads=%d/%s", c.n, c.v, c.threads, variant(fused)), func(b *testing.B) {
				g := buildCrossEntropy(b, int64(c.n), int64(c.v), r, fused)
				benchGraph(b, g.path, lib, fused, c.threads, map[string]ort.Value{
					"x":      benchTensor(b, x, int64(c.n), int64(c.v)),
					"labels": benchTensor(b, labels, int64(c.n)),
				}, map[string]ort.Value{
					"loss": benchTensor(b, make([]float32, 1), 1),
					"dx":   benchTensor(b, make([]float32, c.n*c.v), int64(c.n), int64(c.v)),
				})
			})
		}
	}
}

// attentionShapes are the attention probabilities [batch, heads, Sq, Sk]
// of the small llama preset as `make bench` trains it (batch 4 × 128, 8
// heads) and of SmolLM2-135M at batch 8 × 256 (9 heads).
var attentionShapes = [][]int64{{4, 8, 128, 128}, {8, 9, 256, 256}}

// BenchmarkSoftmax runs the last-axis softmax in standard operators and
// with the fused kernels at attentionShapes, on 1 and 2 ORT threads:
// "fwd" the forward alone (ORT's Softmax against ai.migu.Softmax), "bwd"
// the backward alone (the standard rule's Mul, ReduceSum, Sub, Mul
// against one SoftmaxGrad, from given dY and Y), "fwd+bwd" the two in one
// graph (buildSoftmax: y, the loss Σ y ⊙ r, dx).
func BenchmarkSoftmax(b *testing.B) {
	lib := withKernels(b)
	for _, shape := range attentionShapes {
		for _, threads := range []int{1, 2} {
			rng := rand.New(rand.NewPCG(3, 4))
			n := numel(shape)
			x, _ := softmaxCase(shape, 4, true)
			r := random(rng, n, -1, 1)
			dy := random(rng, n, -1, 1)
			name := fmt.Sprintf("%dx%dx%dx%d/threads=%d", shape[0], shape[1], shape[2], shape[3], threads)
			for _, pass := range []string{"fwd", "bwd", "fwd+bwd"} {
				for _, fused := range []bool{false, true} {
					b.Run(name+"/"+pass+"/"+variant(fused), func(b *testing.B) {
						out := map[string]ort.Value{"y": benchTensor(b, make([]float32, n), shape...)}
						in := map[string]ort.Value{"x": benchTensor(b, x, shape...)}
						var path string
						switch pass {
						case "fwd":
							path = softmaxPass(b, shape, false, fused)
						case "bwd":
							path = softmaxPass(b, shape, true, fused)
							in = map[string]ort.Value{"dy": benchTensor(b, dy, shape...), "y": benchTensor(b, r, shape...)}
							out = map[string]ort.Value{"dx": benchTensor(b, make([]float32, n), shape...)}
						default:
							path = buildSoftmax(b, shape, r, fused).path
							out = map[string]ort.Value{"loss1": benchTensor(b, make([]float32, 1), 1), "dx": benchTensor(b, make([]float32, n), shape...)}
						}
						benchGraph(b, path, lib, fused, threads, in, out)
					})
				}
			}
		}
	}
}

// softmaxPass writes a graph of one softmax pass over shape: the forward
// (x → y) or the backward (dy, y → dx), in standard operators or fused.
func softmaxPass(b *testing.B, shape []int64, backward, fused bool) string {
	m := onnx.New("softmax", nil)
	g := m.Graph()
	dims := dimsOf(shape)
	switch {
	case !backward && !fused:
		g.AddInput("x", onnx.Float, dims)
		g.Node("Softmax", []string{"x"}, []string{"y"}, "softmax", onnx.AttrInt("axis", -1))
		g.AddOutput("y", onnx.Float, dims)
	case !backward:
		g.AddInput("x", onnx.Float, dims)
		g.Node("Softmax", []string{"x"}, []string{"y"}, "softmax")
		g.P.Node[0].Domain = proto.String(onnx.DomainMigu)
		g.AddOutput("y", onnx.Float, dims)
	case !fused:
		g.AddInput("dy", onnx.Float, dims)
		g.AddInput("y", onnx.Float, dims)
		dot := g.Op("ReduceSum", []string{g.Op("Mul", []string{"dy", "y"}, "dyy"), g.ConstInt64("axes", []int64{1}, -1)}, "dot", onnx.AttrInt("keepdims", 1))
		g.Node("Mul", []string{"y", g.Op("Sub", []string{"dy", dot}, "centered")}, []string{"dx"}, "dx")
		g.AddOutput("dx", onnx.Float, dims)
	default:
		g.AddInput("dy", onnx.Float, dims)
		g.AddInput("y", onnx.Float, dims)
		g.Node("SoftmaxGrad", []string{"dy", "y"}, []string{"dx"}, "dx")
		g.P.Node[0].Domain = proto.String(onnx.DomainMigu)
		g.AddOutput("dx", onnx.Float, dims)
	}
	if fused {
		m.SetOpset(onnx.DomainMigu, 1)
	}
	path := filepath.Join(b.TempDir(), "pass.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkRotary runs the rotary embedding forward and backward (y, the
// loss Σ y ⊙ r, dx; buildRotary) in standard operators and fused, at the
// queries of the small llama preset (batch 4 × 128, 8 heads of 64) and of
// SmolLM2-135M at batch 8 × 256 (9 heads of 64), on 1 and 2 ORT threads.
func BenchmarkRotary(b *testing.B) {
	lib := withKernels(b)
	for _, shape := range [][]int64{{4, 128, 8, 64}, {8, 256, 9, 64}} {
		for _, threads := range []int{1, 2} {
			x, angles, r := rotaryCase(shape)
			n := numel(shape)
			for _, fused := range []bool{false, true} {
				b.Run(fmt.Sprintf("%dx%dx%dx%d/threads=%d/%s", shape[0], shape[1], shape[2], shape[3], threads, variant(fused)), func(b *testing.B) {
					g := buildRotary(b, shape, angles, r, fused)
					benchGraph(b, g.path, lib, fused, threads, map[string]ort.Value{"x": benchTensor(b, x, shape...)}, map[string]ort.Value{
						"loss1": benchTensor(b, make([]float32, 1), 1),
						"y":     benchTensor(b, make([]float32, n), shape...),
						"dx":    benchTensor(b, make([]float32, n), shape...),
					})
				})
			}
		}
	}
}
