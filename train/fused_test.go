package train

import (
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
)

// The training graph built with migu's fused kernels (GraphOptions.Fused:
// RMSNorm, the cross-entropy pick, attention's softmax and llama's rotary
// embedding, forward and backward, the MIGU taps) gives the loss, every
// gradient and every tap of the standard-op graph to float32 rounding, for
// the architectures with RMSNorm (llama, t5) and one without (roberta:
// taps only), full fine-tuning and LoRA, with and without recomputation.
// Both variants run in this one test; the kernel library is built when
// missing (testenv.Kernels).
func TestFusedKernelsKeepGradients(t *testing.T) {
	lib := testenv.Kernels(t)
	feeds := tinyFeeds()
	cases := []struct {
		arch, method, recompute string
		norms                   bool // the architecture has RMSNorms to fuse
	}{
		{"llama", "full", RecomputeNone, true}, {"llama", "full", RecomputeLayers, true}, {"llama", "lora", RecomputeNone, true},
		{"t5", "full", RecomputeNone, true}, {"roberta", "full", RecomputeNone, false},
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
			if art.FusedNorms != 0 || (fart.FusedNorms > 0) != c.norms || !fart.FusedTaps {
				t.Fatalf("fused norms %d (standard graph %d), fused taps %v", fart.FusedNorms, art.FusedNorms, fart.FusedTaps)
			}
			ops := map[string]int{}
			for _, n := range g.P.Node {
				ops[n.GetDomain()+"."+n.GetOpType()]++
			}
			// Recomputation clones the forward RMSNorms of every block.
			if c.norms && (ops["ai.migu.RMSNorm"] < fart.FusedNorms || ops["ai.migu.RMSNormGrad"] == 0) || ops["ai.migu.AbsColSum"] != len(fart.Taps) {
				t.Fatalf("fused ops in the graph: RMSNorm %d, RMSNormGrad %d, AbsColSum %d (%d taps)",
					ops["ai.migu.RMSNorm"], ops["ai.migu.RMSNormGrad"], ops["ai.migu.AbsColSum"], len(fart.Taps))
			}
			// Every architecture's loss is one cross-entropy pick, and
			// every attention layer's probabilities one softmax.
			if art.FusedLoss != 0 || art.FusedSoftmax != 0 || fart.FusedLoss != 1 || fart.FusedSoftmax == 0 ||
				ops[".LogSoftmax"] != 0 || ops[".Softmax"] != 0 || ops["ai.migu.PickLogSoftmaxGrad"] != 1 ||
				ops["ai.migu.Softmax"] < fart.FusedSoftmax || ops["ai.migu.SoftmaxGrad"] != fart.FusedSoftmax {
				t.Fatalf("fused loss %d, softmaxes %d (standard graph %d, %d); ops: LogSoftmax %d, Softmax %d, PickLogSoftmaxGrad %d, ai.migu.Softmax %d, SoftmaxGrad %d",
					fart.FusedLoss, fart.FusedSoftmax, art.FusedLoss, art.FusedSoftmax, ops[".LogSoftmax"], ops[".Softmax"],
					ops["ai.migu.PickLogSoftmaxGrad"], ops["ai.migu.Softmax"], ops["ai.migu.SoftmaxGrad"])
			}
			// llama rotates queries and keys: two rotations per layer.
			if rope := c.arch == "llama"; art.FusedRotary != 0 || (fart.FusedRotary > 0) != rope ||
				ops["ai.migu.RotaryGrad"] != fart.FusedRotary || rope && (ops[".Split"] != 0 || ops["ai.migu.Rotary"] < fart.FusedRotary) {
				t.Fatalf("fused rotations %d (standard graph %d); ops: Rotary %d, RotaryGrad %d, Split %d",
					fart.FusedRotary, art.FusedRotary, ops["ai.migu.Rotary"], ops["ai.migu.RotaryGrad"], ops[".Split"])
			}
			worst := worstRelDiff(t, art, got, want)
			t.Logf("%d norms, %d softmaxes, %d rotations, the loss and %d taps fused: max relative difference %.2g",
				fart.FusedNorms, fart.FusedSoftmax, fart.FusedRotary, len(fart.Taps), worst)
		})
	}
}
