package train

import (
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
)

// The fused attention (GraphOptions.FusedAttention) gives the loss,
// gradients and taps of attention in standard operators to float32
// rounding, for every architecture's attentions — llama's grouped
// queries (read by the kernel as they are, no mask Tiled) and causal mask, roberta's padding mask, t5's encoder, decoder
// and cross-attention with the trained position bias — with and without
// recomputed layers; every softmax goes into the fused op.
func TestFusedAttentionMatchesStandardOps(t *testing.T) {
	lib := testenv.Kernels(t)
	feeds := tinyFeeds()
	for _, arch := range []string{"llama", "roberta", "t5"} {
		for _, recompute := range []string{RecomputeNone, RecomputeLayers} {
			t.Run(arch+"/"+recompute, func(t *testing.T) {
				_, model := testfix.TinyModel(t, arch)
				spec := recomputeSpec{model: model, method: "full", feeds: feeds[arch], threads: 2, kernels: lib}
				art, want, _ := spec.run(t, recompute)
				spec.fusedAttention = true
				fart, got, g := spec.run(t, recompute)
				if fart.Fused["Attention"] == 0 {
					t.Fatalf("no attention fused: %v", fart.Fused)
				}
				for _, n := range g.P.Node {
					if n.GetOpType() == "Softmax" {
						t.Fatalf("softmax %s left out of the fused attention", n.GetName())
					}
					// llama's grouped queries go to the kernel as they are:
					// its mask is not Tiled over the groups.
					if n.GetOpType() == "Tile" {
						t.Fatalf("%s left: grouped queries stacked", n.GetName())
					}
				}
				worst := worstRelDiff(t, art, got, want)
				t.Logf("%d attentions fused: max relative difference %.2g", fart.Fused["Attention"], worst)
			})
		}
	}
}
