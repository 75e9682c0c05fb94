package train

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// precisionOf is the precision of a test graph: bf16 when the bf16
// library is given.
func precisionOf(bf16Lib string) string {
	if bf16Lib != "" {
		return PrecisionBF16
	}
	return PrecisionFP32
}

// bf16GradTol bounds the relative difference (to each tensor's largest
// magnitude) between a bf16 graph's loss, gradients and taps and the fp32
// graph's. Rounding both operands of a product to bfloat16 moves it by up
// to 2·2^-9 of Σ|ab|, about 0.4 %; through the tiny models' layers the
// measured worst is about 1 % (gradients of the first layers), so 5 %
// leaves room while still failing on a wrong transpose or operand (errors
// of order 100 %).
const bf16GradTol = 5e-2

// The training graph with bf16 weight products gives the loss, every
// gradient and every MIGU tap of the fp32 graph within bfloat16's
// rounding — every architecture, full fine-tuning and LoRA, with and
// without recomputation — and holds no float32 product on a weight: every
// linear of migu.json is a MatMulBF16, the backward products too (no Gemm
// is left), and frozen weights a model folder stores in bfloat16 feed the
// products without their Cast to float32.
func TestBF16ProductsKeepGradients(t *testing.T) {
	lib := testenv.BF16(t)
	feeds := tinyFeeds()
	cases := []struct {
		arch, method, recompute string
		bf16Weights             bool // export the model's weight matrices in bfloat16
	}{
		{"llama", "full", RecomputeNone, false}, {"llama", "full", RecomputeLayers, false},
		{"llama", "lora", RecomputeNone, true}, {"t5", "full", RecomputeNone, false}, {"roberta", "full", RecomputeNone, false},
	}
	for _, c := range cases {
		name := c.arch + "/" + c.method + "/" + c.recompute
		if c.bf16Weights {
			name += "/bf16-weights"
		}
		t.Run(name, func(t *testing.T) {
			hf, model := testfix.TinyModel(t, c.arch)
			if c.bf16Weights {
				model = filepath.Join(t.TempDir(), "bf16")
				if _, err := exporters.ExportWith(hf, model, exporters.ExportOptions{DType: exporters.DTypeBF16}); err != nil {
					t.Fatal(err)
				}
			}
			spec := recomputeSpec{model: model, method: c.method, feeds: feeds[c.arch]}
			art, want, _ := spec.run(t, c.recompute)
			spec.bf16 = lib
			bart, got, g := spec.run(t, c.recompute)
			man := spec.manifest(t)
			if art.Precision != PrecisionFP32 || bart.Precision != PrecisionBF16 || bart.BF16Products != len(man.Linears) {
				t.Fatalf("precision %s/%s, %d bf16 products for %d linears", art.Precision, bart.Precision, bart.BF16Products, len(man.Linears))
			}
			checkBF16Graph(t, g, man, c.method == "full", c.bf16Weights)
			worst := 0.0
			for name, w := range want {
				d := bf16RelDiff(t, name, got[name], w)
				worst = math.Max(worst, d)
			}
			if worst == 0 {
				t.Fatal("the bf16 graph gives the fp32 graph's numbers exactly: nothing ran in bf16")
			}
			t.Logf("%d linears in bf16 (%d params, %d taps): max relative difference %.2g", bart.BF16Products, len(bart.Params), len(bart.Taps), worst)
		})
	}
}

// checkBF16Graph checks the ops of a bf16 training graph: every linear's
// node is a MatMulBF16, no Gemm is left when every weight trains (the
// fp32 graph computes their gradients with Gemms), and with bf16Weights
// every linear reads its stored bfloat16 weight itself, not a float32
// Cast of it.
func checkBF16Graph(t *testing.T, g *onnx.Graph, man *modeldir.Manifest, full, bf16Weights bool) {
	t.Helper()
	linears := map[string]modeldir.Linear{}
	for _, l := range man.Linears {
		linears[l.Node] = l
	}
	products := 0
	for _, n := range g.P.Node {
		bf16 := n.GetDomain() == onnx.DomainMiguBF16 && n.GetOpType() == "MatMulBF16"
		if bf16 {
			products++
		}
		if l, ok := linears[n.GetName()]; ok {
			if !bf16 {
				t.Errorf("linear %s is a %s node", l.Name, n.GetOpType())
			} else if bf16Weights && n.Input[1] != l.Weight {
				t.Errorf("linear %s reads %s, not its bf16 weight %s", l.Name, n.Input[1], l.Weight)
			}
		}
		if full && n.GetDomain() == "" && n.GetOpType() == "Gemm" {
			t.Errorf("float32 Gemm %s left in a full fine-tuning graph", n.GetName())
		}
	}
	if full && products < 2*len(man.Linears) {
		t.Errorf("%d MatMulBF16 nodes for %d linears: the backward products are not all bf16", products, len(man.Linears))
	}
}

func bf16RelDiff(t *testing.T, what string, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Errorf("%s: %d values, %d in fp32", what, len(got), len(want))
		return math.Inf(1)
	}
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	rel := diff / math.Max(scale, 1e-3)
	if !(rel <= bf16GradTol) {
		t.Errorf("%s: max |Δ| = %.3g at scale %.3g (relative %.2g > %g)", what, diff, scale, rel, bf16GradTol)
	}
	return rel
}

// bf16CurveTol bounds the relative difference between the losses of a
// bf16 run and an fp32 run from the same weights on the same batches, at
// every one of 50 steps: 1e-2, the drift issue 18 expects of bf16
// products (bf16 rounding moves each step's update slightly, and the
// difference grows along the run).
const bf16CurveTol = 1e-2

// Fifty steps of full fine-tuning of a tiny llama with bf16 products
// follow the fp32 loss curve within bf16CurveTol at every step, while not
// reproducing it exactly, and learn (the last loss well below the first).
func TestBF16LossCurve(t *testing.T) {
	lib := testenv.BF16(t)
	t.Setenv("MIGU_BF16", lib)
	_, model := tinyModel(t)
	const steps, lr = 50, 2e-3
	batches := testfix.RandomBatches(10, 2, 16, 600, 7)
	curve := func(precision string) []float64 {
		cfg := Config{GradAccum: 1, Optim: AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, Precision: precision}
		tr := newFullTrainer(t, model, cfg)
		if tr.Art.Precision != precision {
			t.Fatalf("train.json precision %q, want %q", tr.Art.Precision, precision)
		}
		losses := make([]float64, steps)
		for i := range losses {
			res, err := tr.TrainStep([]*data.Batch{batches[i%len(batches)]}, true)
			if err != nil {
				t.Fatal(err)
			}
			losses[i] = res.Loss
		}
		return losses
	}
	fp32, bf16 := curve(PrecisionFP32), curve(PrecisionBF16)
	worst := 0.0
	var lines []string
	for i := range fp32 {
		rel := math.Abs(bf16[i]-fp32[i]) / fp32[i]
		worst = math.Max(worst, rel)
		if rel > bf16CurveTol {
			t.Errorf("step %d: bf16 loss %.5f, fp32 %.5f: relative difference %.2g > %g", i+1, bf16[i], fp32[i], rel, bf16CurveTol)
		}
		if i%10 == 0 || i == steps-1 {
			lines = append(lines, fmt.Sprintf("%d %.4f %.4f", i+1, fp32[i], bf16[i]))
		}
	}
	if worst == 0 {
		t.Fatal("bf16 and fp32 losses are identical: nothing ran in bf16")
	}
	if fp32[steps-1] > 0.8*fp32[0] || bf16[steps-1] > 0.8*bf16[0] {
		t.Errorf("no learning: fp32 %.4f → %.4f, bf16 %.4f → %.4f", fp32[0], fp32[steps-1], bf16[0], bf16[steps-1])
	}
	t.Logf("50 steps, max relative loss difference %.2g (step fp32 bf16): %s", worst, strings.Join(lines, "; "))
}
