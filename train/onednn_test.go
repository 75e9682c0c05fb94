package train

import (
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// The training graph with its float32 products in oneDNN (GraphOptions.OneDNN:
// the weight gradients, or every product of a linear and attention's) gives the loss,
// every gradient and every MIGU tap of the MLAS graph to float32
// rounding — every architecture, full fine-tuning and LoRA, with
// recomputation and the fused kernels — and the rewrite moved one
// weight-gradient product per trained linear (LoRA: per adapter matrix)
// and, with attention's, the six products of each attention block (and the two it recomputes) into
// BatchMatMul, with fewer Transposes left than the MLAS graph has.
func TestOneDNNProductsKeepGradients(t *testing.T) {
	lib := testenv.BF16(t)
	feeds := tinyFeeds()
	wgrads := kernels.F32Roles{WeightGrads: true}
	all := kernels.F32Roles{Forward: true, InputGrads: true, WeightGrads: true, Attention: true}
	cases := []struct {
		arch, method, recompute string
		roles                   kernels.F32Roles
		fused                   bool
	}{
		{"llama", "full", RecomputeNone, wgrads, false}, {"llama", "full", RecomputeNone, all, true},
		{"llama", "full", RecomputeLayers, all, false}, {"llama", "lora", RecomputeNone, all, false},
		{"t5", "full", RecomputeNone, wgrads, true}, {"roberta", "full", RecomputeNone, all, false},
	}
	models := map[string]string{}
	outer := t
	for _, c := range cases {
		name := c.arch + "/" + c.method + "/" + c.recompute
		if c.roles == all {
			name += "/all"
		}
		if c.fused {
			name += "/fused"
		}
		t.Run(name, func(t *testing.T) {
			if models[c.arch] == "" {
				_, models[c.arch] = testfix.TinyModel(outer, c.arch)
			}
			spec := recomputeSpec{model: models[c.arch], method: c.method, feeds: feeds[c.arch], threads: 2}
			if c.fused {
				spec.kernels = testenv.Kernels(t)
			}
			art, want, g0 := spec.run(t, c.recompute)
			spec.oneDNN, spec.oneDNNLib = c.roles, lib
			dart, got, g := spec.run(t, c.recompute)
			weightGrads, products, batched, transposes := 0, 0, 0, 0
			for _, n := range g.P.Node {
				switch n.GetOpType() {
				case "BatchMatMul":
					batched++
				case "Transpose":
					transposes++
				}
				if n.GetOpType() == "MatMulF32" {
					products++
					if onnx.AttrIntOr(n, "transA", 0) == 1 {
						weightGrads++
					}
				}
			}
			if art.OneDNNProducts != 0 || dart.OneDNNProducts != products || weightGrads == 0 ||
				c.roles == wgrads && products != weightGrads || c.roles == all && products <= 2*weightGrads {
				t.Fatalf("MatMulF32 products: %d in the graph (%d weight gradients), artifact %d (MLAS graph %d)", products, weightGrads, dart.OneDNNProducts, art.OneDNNProducts)
			}
			if mlasTransposes := countOps(g0, "Transpose"); c.roles.Attention &&
				(batched < 6 || dart.AttentionProducts != batched || transposes >= mlasTransposes) {
				t.Fatalf("attention: %d BatchMatMul in the graph (artifact %d), %d Transposes left of %d", batched, dart.AttentionProducts, transposes, mlasTransposes)
			}
			worst := worstRelDiff(t, art, got, want)
			t.Logf("%d products in oneDNN (%d weight gradients, %d of attention): max relative difference %.2g", products, weightGrads, batched, worst)
		})
	}
}

// countOps counts g's nodes of the op type.
func countOps(g *onnx.Graph, op string) int {
	n := 0
	for _, node := range g.P.Node {
		if node.GetOpType() == op {
			n++
		}
	}
	return n
}
