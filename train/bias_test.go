package train

import (
	"math"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx/kernels"
)

// The linear layers' biases added by their oneDNN products
// (kernels.FuseProductBias, the default) change no loss, gradient or tap
// by a bit against bias Adds after the products (GraphOptions.BiasAdds):
// roberta's linears have biases; float32 products (forward and weight
// gradients in oneDNN, as on an AVX-512 CPU) and bf16 ones, full
// fine-tuning and LoRA, with recomputation (the recomputed layers' biases
// fold too). Every bias Add goes: none reads a product's output.
func TestProductBiasKeepsNumbers(t *testing.T) {
	lib := testenv.BF16(t)
	feeds := tinyFeeds()
	_, model := testfix.TinyModel(t, "roberta")
	fp32 := kernels.F32Roles{Forward: true, WeightGrads: true, Attention: true}
	for _, c := range []struct {
		name, method, recompute string
		bf16                    bool
	}{
		{"fp32/full", "full", RecomputeNone, false},
		{"fp32/full/recompute", "full", RecomputeLayers, false},
		{"fp32/lora", "lora", RecomputeNone, false},
		{"bf16/full", "full", RecomputeNone, true},
		{"bf16/lora", "lora", RecomputeNone, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := recomputeSpec{model: model, method: c.method, feeds: feeds["roberta"], threads: 2, oneDNN: fp32,
				oneDNNLib: lib, biasAdds: true}
			if c.bf16 {
				spec.bf16, spec.oneDNN = lib, kernels.F32Roles{Attention: true}
			}
			art, want, _ := spec.run(t, c.recompute)
			spec.biasAdds = false
			fart, got, g := spec.run(t, c.recompute)
			if art.BiasedProducts != 0 || fart.BiasedProducts == 0 {
				t.Fatalf("%d and %d biased products; want none with BiasAdds, some without", art.BiasedProducts, fart.BiasedProducts)
			}
			// A bias is a weight (a graph input when trained, an
			// initializer when frozen) named *.bias.
			isBias := func(v string) bool {
				return strings.HasSuffix(v, ".bias") && (g.Input(v) != nil || g.Initializer(v) != nil)
			}
			products := map[string]bool{}
			for _, n := range g.P.Node {
				if n.GetOpType() == "MatMulF32" || n.GetOpType() == "MatMulBF16" {
					products[n.Output[0]] = true
				}
			}
			for _, n := range g.P.Node {
				if n.GetOpType() == "Add" && (products[n.Input[0]] || products[n.Input[1]]) &&
					(isBias(n.Input[0]) || isBias(n.Input[1])) {
					t.Fatalf("Add %s still adds a bias to a product", n.GetName())
				}
			}
			for name, w := range want {
				for i := range w {
					if math.Float32bits(got[name][i]) != math.Float32bits(w[i]) {
						t.Fatalf("%s[%d] = %g, %g with the bias Adds apart", name, i, got[name][i], w[i])
					}
				}
			}
			t.Logf("%d products add their bias", fart.BiasedProducts)
		})
	}
}
