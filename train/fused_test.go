package train

import (
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/migu"
)

// The training graph built with migu's fused kernels (GraphOptions.Fused:
// RMSNorm, LayerNorm, SwiGLU, GELU, the rotary embedding, attention's
// softmax and the cross-entropy pick, forward and backward, the MIGU taps)
// gives the loss, every gradient and every tap of the standard-op graph to
// float32 rounding, for each architecture with its norm (llama's and t5's
// RMSNorm, roberta's LayerNorm) and activation (llama's SwiGLU gate, t5's
// gated tanh GELU, roberta's erf GELU), full fine-tuning and LoRA, with
// and without recomputation; the MIGU masks (T = 0.7) of the fused taps
// equal the standard taps' bit for bit. The taps of the activations'
// inputs (llama's gate and up projections, t5's wi_0 and wi_1 of its
// gated GELU, roberta's intermediate dense and, in full fine-tuning, its
// head's dense) are computed by the activation kernels (SwiGLUTaps,
// GeluTaps), every other
// tap by AbsColSum. In full fine-tuning every table's gradient (llama's
// embedding; t5's shared embedding, looked up twice and tied to the
// output, and its two position-bias tables, gathered along axis 1;
// roberta's word, position and token-type embeddings, the word embedding
// tied) is ScatterAddRows, no ScatterElements left, and each tied
// table's Sum is folded into its scatters; so is the gradient of the
// labelled rows that the head runs on (rows.go), while the head's nodes
// on every row stay, without gradients, only for the taps of a full
// fine-tuning. The Sum adding the gradient
// by a residual connection to a norm's dX goes into the norm's backward
// kernel in the pre-norm llama and t5 blocks (every norm but the stacks'
// last and, in LoRA, llama's first, whose input needs no gradient);
// roberta's post-norm blocks have none to fold (the other gradient there
// is computed from the norm's dX).
// Both variants run in this one test; the kernel library is built when
// missing (testenv.Kernels).
func TestFusedKernelsKeepGradients(t *testing.T) {
	lib := testenv.Kernels(t)
	feeds := tinyFeeds()
	cases := []struct {
		arch, method, recompute string
		norm, act               string // the fused norm and activation ops it gets
		actTaps, tapped         int    // taps the activation kernels compute, and the activations computing them
		tapOnly                 int    // activations on every row kept only for a tap (the head's, rows.go): no gradient
		scatters, sums          int    // tables' gradients through ScatterAddRows, and Sums folded into them
		residuals               int    // residual gradients' Sums folded into the norms' backward kernels
	}{
		{"llama", "full", RecomputeNone, "RMSNorm", "SwiGLU", 8, 4, 0, 2, 0, 8}, {"llama", "full", RecomputeLayers, "RMSNorm", "SwiGLU", 8, 4, 0, 2, 0, 8},
		{"llama", "lora", RecomputeNone, "RMSNorm", "SwiGLU", 8, 4, 0, 1, 0, 7},
		{"t5", "full", RecomputeNone, "RMSNorm", "Gelu", 8, 4, 0, 5, 1, 10}, {"t5", "lora", RecomputeLayers, "RMSNorm", "Gelu", 8, 4, 0, 1, 0, 8},
		{"roberta", "full", RecomputeNone, "LayerNorm", "Gelu", 2, 2, 1, 4, 1, 0}, {"roberta", "full", RecomputeLayers, "LayerNorm", "Gelu", 2, 2, 1, 4, 1, 0},
		{"roberta", "lora", RecomputeNone, "LayerNorm", "Gelu", 2, 2, 0, 1, 0, 0},
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
			norms, acts := fart.Fused[c.norm], fart.Fused[c.act]
			loss, softmaxes, rotations := fart.Fused["CrossEntropy"], fart.Fused["Softmax"], fart.Fused["Rotary"]
			if len(art.Fused) != 0 || norms == 0 || acts == 0 || !fart.FusedTaps {
				t.Fatalf("fused %v (standard graph %v), fused taps %v", fart.Fused, art.Fused, fart.FusedTaps)
			}
			ops, wideSums := map[string]int{}, 0
			for _, n := range g.P.Node {
				ops[n.GetDomain()+"."+n.GetOpType()]++
				if n.GetOpType() == "Sum" && len(n.Input) > 2 {
					wideSums++
				}
			}
			// Every Sum of three or more gradients is one pass of AddN.
			if wideSums != 0 || ops["ai.migu.AddN"] < fart.Fused["AddN"] {
				t.Fatalf("%d Sums of three or more inputs left; %d AddN nodes for %d Sums replaced", wideSums, ops["ai.migu.AddN"], fart.Fused["AddN"])
			}
			// Recomputation clones the forward norms of every block.
			norm, actTaps := "ai.migu."+c.norm, fart.Fused["ActivationTaps"]
			if ops[norm] < norms || ops[norm+"Grad"] == 0 || ops[".LayerNormalization"] != 0 ||
				actTaps != c.actTaps || ops["ai.migu.AbsColSum"] != len(fart.Taps)-actTaps {
				t.Fatalf("fused ops in the graph: %s %d, %sGrad %d, AbsColSum %d and %d in activations (%d taps); LayerNormalization %d left",
					norm, ops[norm], norm, ops[norm+"Grad"], ops["ai.migu.AbsColSum"], actTaps, len(fart.Taps), ops[".LayerNormalization"])
			}
			// Every activation of the model is fused (recomputation clones
			// them, without taps), and no standard op of theirs is left.
			act := "ai.migu." + c.act
			if ops[act]+ops[act+"Taps"] < acts || ops[act+"Taps"] != c.tapped || ops[act+"Grad"] != acts-c.tapOnly || ops[".Sigmoid"]+ops[".Erf"] != 0 {
				t.Fatalf("fused activations %d: %s %d, %sTaps %d, %sGrad %d; Sigmoid %d, Erf %d left",
					acts, act, ops[act], act, ops[act+"Taps"], act, ops[act+"Grad"], ops[".Sigmoid"], ops[".Erf"])
			}
			// Every architecture's loss is one cross-entropy pick, and
			// every attention layer's probabilities one softmax, which adds
			// the layer's mask (and t5's position bias) itself.
			if loss != 1 || softmaxes == 0 || fart.Fused["SoftmaxBias"] != ops["ai.migu.Softmax"] ||
				ops[".LogSoftmax"] != 0 || ops[".Softmax"] != 0 || ops["ai.migu.PickLogSoftmaxGrad"] != 1 ||
				ops["ai.migu.Softmax"] < softmaxes || ops["ai.migu.SoftmaxGrad"] != softmaxes {
				t.Fatalf("fused loss %d, softmaxes %d, their biases %d; ops: LogSoftmax %d, Softmax %d, PickLogSoftmaxGrad %d, ai.migu.Softmax %d, SoftmaxGrad %d",
					loss, softmaxes, fart.Fused["SoftmaxBias"], ops[".LogSoftmax"], ops[".Softmax"],
					ops["ai.migu.PickLogSoftmaxGrad"], ops["ai.migu.Softmax"], ops["ai.migu.SoftmaxGrad"])
			}
			// llama rotates queries and keys: two rotations per layer.
			if rope := c.arch == "llama"; (rotations > 0) != rope ||
				ops["ai.migu.RotaryGrad"] != rotations || rope && (ops[".Split"] != 0 || ops["ai.migu.Rotary"] < rotations) {
				t.Fatalf("fused rotations %d; ops: Rotary %d, RotaryGrad %d, Split %d",
					rotations, ops["ai.migu.Rotary"], ops["ai.migu.RotaryGrad"], ops[".Split"])
			}
			if fart.Fused["ScatterAdd"] != c.scatters || fart.Fused["ScatterSum"] != c.sums ||
				ops["ai.migu.ScatterAddRows"] != c.scatters || ops[".ScatterElements"] != 0 || fart.Fused["ResidualGrad"] != c.residuals {
				t.Fatalf("fused scatters %d, sums %d, residual gradients %d; ops: ScatterAddRows %d, ScatterElements %d",
					fart.Fused["ScatterAdd"], fart.Fused["ScatterSum"], fart.Fused["ResidualGrad"], ops["ai.migu.ScatterAddRows"], ops[".ScatterElements"])
			}
			worst := worstRelDiff(t, art, got, want)
			t.Logf("fused %v and %d taps: max relative difference %.2g", fart.Fused, len(fart.Taps), worst)
			// The fused taps give the standard taps' MIGU masks, bit for bit.
			for _, tap := range art.Taps {
				n, fn := want[tap.Output], got[tap.Output]
				keep, fkeep := make([]bool, len(n)), make([]bool, len(fn))
				if _, err := migu.Mask(n, 0.7, keep); err != nil {
					t.Fatal(err)
				}
				if _, err := migu.Mask(fn, 0.7, fkeep); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(keep, fkeep) {
					t.Errorf("tap %s: the fused taps' mask differs from the standard taps'", tap.Name)
				}
			}
		})
	}
}
