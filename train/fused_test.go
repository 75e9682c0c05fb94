package train

import (
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
)

// The training graph built with migu's fused kernels (GraphOptions.Fused:
// RMSNorm, LayerNorm, SwiGLU and GELU forward and backward, the MIGU taps)
// gives the loss, every gradient and every tap of the standard-op graph to
// float32 rounding, for each architecture with its norm (llama's and t5's
// RMSNorm, roberta's LayerNorm) and activation (llama's SwiGLU gate, t5's
// gated tanh GELU, roberta's erf GELU), full fine-tuning and LoRA, with
// and without recomputation.
// Both variants run in this one test; the kernel library is built when
// missing (testenv.Kernels).
func TestFusedKernelsKeepGradients(t *testing.T) {
	lib := testenv.Kernels(t)
	feeds := tinyFeeds()
	cases := []struct {
		arch, method, recompute string
		norm, act               string // the fused norm and activation ops it gets
	}{
		{"llama", "full", RecomputeNone, "RMSNorm", "SwiGLU"}, {"llama", "full", RecomputeLayers, "RMSNorm", "SwiGLU"},
		{"llama", "lora", RecomputeNone, "RMSNorm", "SwiGLU"},
		{"t5", "full", RecomputeNone, "RMSNorm", "Gelu"}, {"t5", "lora", RecomputeLayers, "RMSNorm", "Gelu"},
		{"roberta", "full", RecomputeNone, "LayerNorm", "Gelu"}, {"roberta", "full", RecomputeLayers, "LayerNorm", "Gelu"},
		{"roberta", "lora", RecomputeNone, "LayerNorm", "Gelu"},
	}
	models := map[string]string{}
	outer := t
	for _, c := range cases {
		t.Run(c.arch+"/"+c.method+"/"+c.recompute, func(t *testing.T) {
			if models[c.arch] == "" {
				_, models[c.arch] = testfix.TinyModel(outer, c.arch)
			}
			spec := recomputeSpec{model: models[c.arch], method: c.method, feeds: feeds[c.arch]}
			art, want, _ := spec.run(t, c.recompute)
			spec.kernels = lib
			fart, got, g := spec.run(t, c.recompute)
			if art.FusedNorms != 0 || fart.FusedNorms == 0 || !fart.FusedTaps || art.FusedActivations != 0 || fart.FusedActivations == 0 {
				t.Fatalf("fused norms %d (standard graph %d), activations %d (standard graph %d), fused taps %v",
					fart.FusedNorms, art.FusedNorms, fart.FusedActivations, art.FusedActivations, fart.FusedTaps)
			}
			ops := map[string]int{}
			for _, n := range g.P.Node {
				ops[n.GetDomain()+"."+n.GetOpType()]++
			}
			// Recomputation clones the forward norms of every block.
			norm := "ai.migu." + c.norm
			if ops[norm] < fart.FusedNorms || ops[norm+"Grad"] == 0 || ops[".LayerNormalization"] != 0 || ops["ai.migu.AbsColSum"] != len(fart.Taps) {
				t.Fatalf("fused ops in the graph: %s %d, %sGrad %d, AbsColSum %d (%d taps); LayerNormalization %d left",
					norm, ops[norm], norm, ops[norm+"Grad"], ops["ai.migu.AbsColSum"], len(fart.Taps), ops[".LayerNormalization"])
			}
			// Every activation of the model is fused (recomputation clones
			// them), and no standard op of theirs is left.
			act := "ai.migu." + c.act
			if ops[act] < fart.FusedActivations || ops[act+"Grad"] != fart.FusedActivations || ops[".Sigmoid"]+ops[".Erf"] != 0 {
				t.Fatalf("fused activations %d: %s %d, %sGrad %d; Sigmoid %d, Erf %d left",
					fart.FusedActivations, act, ops[act], act, ops[act+"Grad"], ops[".Sigmoid"], ops[".Erf"])
			}
			worst := worstRelDiff(t, art, got, want)
			t.Logf("%d norms, %d activations and %d taps fused: max relative difference %.2g", fart.FusedNorms, fart.FusedActivations, len(fart.Taps), worst)
		})
	}
}
