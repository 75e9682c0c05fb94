package kernels_test

import (
	"fmt"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkAttention runs one attention forward and backward (y and the
// gradients of q, k and v, plus the Σ y ⊙ w loss both variants share) in
// standard operators (ORT's MatMul and Softmax, migu's rules) and fused
// (Attention, AttentionGrad), at a small-llama layer's shape as `make
// bench` trains it (batch 4 × 128 tokens, 4 key-value heads of 2 query
// heads each, head size 64, causal mask) and at roberta's (8 heads, a
// padding mask that hides nothing), on 1 and 2 ORT threads, outputs
// bound in advance.
func BenchmarkAttention(b *testing.B) {
	lib := withKernels(b)
	for _, c := range []attentionCase{
		{name: "llama", b: 4, h: 4, r: 128, s: 128, d: 64, scale: 0.125, bias: []int64{4, 1, 128, 128}, causal: true, groups: 2},
		{name: "roberta", b: 4, h: 8, r: 128, s: 128, d: 64, scale: 0.125, bias: []int64{4, 1, 1, 128}},
	} {
		feeds, w := attentionFeeds(c)
		if c.bias != nil && !c.causal {
			// Nothing masked: every key counts.
			feeds[3].value = make([]float32, numel(c.bias))
		}
		for _, threads := range []int{1, 2} {
			for _, fused := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/threads=%d/%s", c.name, threads, variant(fused)), func(b *testing.B) {
					g := buildAttention(b, c, w, fused)
					m, err := onnx.Load(g.path)
					if err != nil {
						b.Fatal(err)
					}
					in, out := map[string]ort.Value{}, map[string]ort.Value{}
					for _, f := range feeds {
						in[f.name] = benchTensor(b, f.value.([]float32), f.shape...)
					}
					for _, o := range m.Graph().P.Output {
						var shape []int64
						for _, d := range o.GetType().GetTensorType().GetShape().GetDim() {
							shape = append(shape, d.GetDimValue())
						}
						out[o.GetName()] = benchTensor(b, make([]float32, numel(shape)), shape...)
					}
					benchGraph(b, g.path, lib, fused, threads, in, out)
				})
			}
		}
	}
}
