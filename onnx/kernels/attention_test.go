package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// attentionCase is one attention as the exporters write it: q, k and v
// [B, L, H, D] moved to [B, H, L, D] by Transposes (k to [B, H, D, L]),
// the scores scaled on q, an optional bias added, the softmax, the
// context moved back to [B, R, H, E].
type attentionCase struct {
	name          string
	b, h, r, s, d int64
	scale         float32 // 0: none
	bias          []int64 // nil: none
	trainBias     bool    // the bias is differentiated (t5's position bias)
	causal        bool    // the bias is llama's: causal, and the second sequence left-padded by 3
	groups        int64   // > 1: llama's grouped-query layout, q heads h·groups, the bias Tiled over the groups' rows
	pretiled      bool    // with groups, the bias comes stacked [B, 1, groups·R, S] (no Tile): the rows stay stacked
	folded        bool    // every Transpose folds into the op
	tol           float64 // closeTo tolerance against the standard ops
}

var attentionCases = []attentionCase{
	{name: "roberta", b: 2, h: 3, r: 7, s: 7, d: 16, scale: 0.25, bias: []int64{2, 1, 1, 7}, folded: true},
	{name: "t5", b: 2, h: 4, r: 9, s: 9, d: 8, bias: []int64{2, 4, 9, 9}, trainBias: true, folded: true},
	{name: "t5-broadcast-bias", b: 3, h: 2, r: 5, s: 5, d: 8, bias: []int64{1, 2, 5, 5}, trainBias: true, folded: true},
	{name: "cross", b: 2, h: 2, r: 13, s: 37, d: 24, bias: []int64{2, 1, 1, 37}, folded: true},
	{name: "odd-scale", b: 1, h: 2, r: 29, s: 29, d: 24, scale: 0.2041241452},
	{name: "llama-gqa", b: 2, h: 2, r: 11, s: 11, d: 16, scale: 0.25, bias: []int64{2, 1, 11, 11}, groups: 2, folded: true},
	{name: "llama-gqa-pretiled", b: 2, h: 2, r: 11, s: 11, d: 16, scale: 0.25, bias: []int64{2, 1, 22, 11}, groups: 2, pretiled: true},
	{name: "gqa-padding-mask", b: 2, h: 3, r: 9, s: 9, d: 8, scale: 0.25, bias: []int64{2, 1, 1, 9}, groups: 3, folded: true},
	{name: "long-rows", b: 1, h: 1, r: 300, s: 130, d: 64, scale: 0.125, folded: true},
	{name: "causal", b: 2, h: 3, r: 70, s: 70, d: 16, scale: 0.25, bias: []int64{2, 1, 70, 70}, causal: true, folded: true},
	{name: "causal-gqa", b: 2, h: 2, r: 100, s: 100, d: 16, scale: 0.25, bias: []int64{2, 1, 100, 100}, causal: true, groups: 2, folded: true},
	{name: "t5-cached-rank-3-bias", b: 2, h: 4, r: 3, s: 10, d: 8, bias: []int64{4, 3, 10}, trainBias: true, folded: true},
	{name: "rank-2-bias", b: 2, h: 2, r: 5, s: 6, d: 8, bias: []int64{5, 6}, folded: true},
	{name: "rank-1-bias", b: 1, h: 2, r: 5, s: 6, d: 8, bias: []int64{6}, trainBias: true, folded: true},
}

// buildAttention writes c in standard operators with the loss Σ y ⊙ w;
// inputs q [B, R, Hq, D], k and v [B, S, H, D] and the bias, outputs
// loss, y and the gradients of q, k, v (and the bias when trained).
func buildAttention(t testing.TB, c attentionCase, w []float32, fused bool) graphFile {
	t.Helper()
	m := onnx.New("attention", nil)
	g := m.Graph()
	groups := max(c.groups, 1)
	hq := c.h * groups
	qShape, kvShape := []int64{c.b, c.r, hq, c.d}, []int64{c.b, c.s, c.h, c.d}
	g.AddInput("q", onnx.Float, dimsOf(qShape))
	g.AddInput("k", onnx.Float, dimsOf(kvShape))
	g.AddInput("v", onnx.Float, dimsOf(kvShape))
	params := []wrt{{"q", qShape}, {"k", kvShape}, {"v", kvShape}}
	q := g.Op("Transpose", []string{"q"}, "q.t", onnx.AttrInts("perm", 0, 2, 1, 3))
	if groups > 1 {
		q = g.Op("Reshape", []string{q, g.ConstInt64("groups", []int64{4}, 0, c.h, -1, c.d)}, "q.groups")
	}
	if c.scale != 0 {
		q = g.Op("Mul", []string{q, g.Const("scale", nil, c.scale)}, "q.scaled")
	}
	kt := g.Op("Transpose", []string{"k"}, "k.t", onnx.AttrInts("perm", 0, 2, 3, 1))
	vt := g.Op("Transpose", []string{"v"}, "v.t", onnx.AttrInts("perm", 0, 2, 1, 3))
	z := g.Op("MatMul", []string{q, kt}, "scores")
	if c.bias != nil {
		g.AddInput("bias", onnx.Float, dimsOf(c.bias))
		bias := "bias"
		if groups > 1 && !c.pretiled && c.bias[2] != 1 {
			// exporters.Builder.Attend's groupedBias.
			bias = g.Op("Tile", []string{bias, g.ConstInt64("reps", []int64{4}, 1, 1, groups, 1)}, "bias.grouped")
		}
		z = g.Op("Add", []string{z, bias}, "biased")
		if c.trainBias {
			params = append(params, wrt{"bias", c.bias})
		}
	}
	p := g.Op("Softmax", []string{z}, "probs", onnx.AttrInt("axis", -1))
	y := g.Op("MatMul", []string{p, vt}, "ctx")
	if groups > 1 {
		y = g.Op("Reshape", []string{y, g.ConstInt64("heads", []int64{4}, 0, hq, -1, c.d)}, "ungroup")
	}
	y = g.Op("Transpose", []string{y}, "y", onnx.AttrInts("perm", 0, 2, 1, 3))
	yShape := []int64{c.b, c.r, hq, c.d}
	loss := weightedLoss(g, y, yShape, w)
	g.AddOutput(y, onnx.Float, dimsOf(yShape))
	return withGradient(t, m, loss, true, params, fusedBy(fused, kernels.FuseAttention), 1)
}

// attentionFeeds draws q, k, v (scaled so that the softmax is neither
// flat nor one-hot), the bias with a masked (−1e9) entry in every fifth,
// and the loss weights.
func attentionFeeds(c attentionCase) (feeds []feed, w []float32) {
	rng := rand.New(rand.NewPCG(uint64(c.b*c.r*c.s*c.d), 17))
	hq := c.h * max(c.groups, 1)
	qShape, kvShape := []int64{c.b, c.r, hq, c.d}, []int64{c.b, c.s, c.h, c.d}
	feeds = []feed{
		{"q", qShape, random(rng, numel(qShape), -1, 1)},
		{"k", kvShape, random(rng, numel(kvShape), -1, 1)},
		{"v", kvShape, random(rng, numel(kvShape), -1, 1)},
	}
	if c.causal {
		// Row i of a sequence sees keys up to i, but not the 3 padding
		// keys in front of the second: its first 3 rows see none.
		bias := make([]float32, numel(c.bias))
		rows, keys := int(c.bias[2]), int(c.bias[3])
		for b := range int(c.bias[0]) {
			for i := range rows {
				for j := range keys {
					v := float32(0)
					if j > i%keys {
						v -= 1e9
					}
					if b == 1 && j < 3 {
						v -= 1e9
					}
					bias[(b*rows+i)*keys+j] = v
				}
			}
		}
		feeds = append(feeds, feed{"bias", c.bias, bias})
	} else if c.bias != nil {
		bias := random(rng, numel(c.bias), -2, 2)
		if !c.trainBias {
			for i := range bias {
				if i%5 == 4 {
					bias[i] = -1e9
				}
			}
		}
		feeds = append(feeds, feed{"bias", c.bias, bias})
	}
	return feeds, random(rng, numel(qShape), -1, 1)
}

// The fused attention (Attention, AttentionGrad) against the standard
// operators and migu's rules for them: loss, y and every gradient agree
// to float32 rounding, for the exporters' layouts (roberta's padding
// mask, t5's trained position bias, full and broadcast, cross-attention
// over more keys than queries, llama's grouped queries with a Tiled-like
// mask, causal masks with left padding, whose masked keys the kernel
// skips, and padding queries that see no key), row and column counts off
// the kernel's tiles, 1 and 2 threads, the AVX-512 products and the plain
// loops.
func TestAttentionMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, c := range attentionCases {
		t.Run(c.name, func(t *testing.T) {
			feeds, w := attentionFeeds(c)
			std := buildAttention(t, c, w, false)
			fused := buildAttention(t, c, w, true)
			if fused.nodes["ai.migu.Attention"] != 1 || fused.nodes["ai.migu.AttentionGrad"] != 1 || fused.nodes["Softmax"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			if c.folded && fused.nodes["Transpose"] != 0 {
				t.Fatalf("fused graph keeps %d Transposes: %v", fused.nodes["Transpose"], fused.nodes)
			}
			// Grouped queries: the kernel reads the query heads as they are
			// (no Tile, no Transposes left around the stacking Reshapes),
			// unless the bias comes stacked.
			if stacked := fused.nodes["Tile"] + fused.nodes["Transpose"]; c.groups > 1 && (stacked == 0) == c.pretiled {
				t.Fatalf("grouped queries (bias stacked %v): fused graph's nodes %v", c.pretiled, fused.nodes)
			}
			want := runGraph(t, std.path, "", 1, feeds...)
			names := []string{"loss", "y", "dq", "dk", "dv", "dbias"}
			for _, plain := range []string{"", "1"} {
				t.Setenv("MIGU_ATTENTION_PLAIN", plain)
				for _, threads := range []int{1, 2} {
					got := runGraph(t, fused.path, lib, threads, feeds...)
					if len(got) != len(want) {
						t.Fatalf("%d outputs, want %d", len(got), len(want))
					}
					for i := range want {
						if err := closeTo(got[i], want[i], 2e-6); err != nil {
							t.Errorf("plain %q, %d threads: %s: %v", plain, threads, names[i], err)
						}
					}
				}
			}
		})
	}
}

// attentionRef is Σ w ⊙ attention(q, k, v, bias) in float64, the
// layouts of buildAttention: query head hi reads key-value head hi/groups
// (the bias not stacked).
func attentionRef(c attentionCase, q, k, v, bias, w []float64) float64 {
	b, h, r, s, d, groups := int(c.b), int(c.h), int(c.r), int(c.s), int(c.d), int(max(c.groups, 1))
	hq := h * groups
	at := func(x []float64, bi, t, hi, di, rows, heads int) float64 { return x[((bi*rows+t)*heads+hi)*d+di] }
	var loss float64
	z := make([]float64, s)
	for bi := range b {
		for hi := range hq {
			for i := range r {
				zmax := math.Inf(-1)
				for j := range s {
					var dot float64
					for di := range d {
						dot += at(q, bi, i, hi, di, r, hq) * at(k, bi, j, hi/groups, di, s, h)
					}
					if c.scale != 0 {
						dot *= float64(c.scale)
					}
					if bias != nil {
						// Broadcast as ONNX's Add: axes missing in front are 1.
						bs := append(make([]int64, 4-len(c.bias)), c.bias...)
						idx := []int{bi, hi, i, j}
						off := 0
						for a := range 4 {
							n := max(int(bs[a]), 1)
							off = off*n + idx[a]%n
						}
						dot += bias[off]
					}
					z[j] = dot
					zmax = math.Max(zmax, dot)
				}
				var sum float64
				for j := range s {
					z[j] = math.Exp(z[j] - zmax)
					sum += z[j]
				}
				for di := range d {
					var y float64
					for j := range s {
						y += z[j] / sum * at(v, bi, j, hi/groups, di, s, h)
					}
					loss += w[((bi*r+i)*hq+hi)*d+di] * y
				}
			}
		}
	}
	return loss
}

// The fused attention against central finite differences of a float64
// reference: the loss and the gradients of q, k, v and a trained bias
// agree to float32 precision.
func TestAttentionGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, c := range []attentionCase{
		{name: "scaled", b: 1, h: 2, r: 3, s: 4, d: 5, scale: 0.5, bias: []int64{1, 1, 1, 4}},
		{name: "bias", b: 2, h: 1, r: 4, s: 3, d: 3, bias: []int64{1, 1, 4, 3}, trainBias: true},
		{name: "rank-3-bias", b: 2, h: 2, r: 3, s: 4, d: 3, bias: []int64{2, 3, 4}, trainBias: true},
		{name: "grouped", b: 2, h: 2, r: 3, s: 4, d: 3, scale: 0.5, bias: []int64{2, 1, 3, 4}, trainBias: true, groups: 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			feeds, w32 := attentionFeeds(c)
			fused := buildAttention(t, c, w32, true)
			got := runGraph(t, fused.path, lib, 2, feeds...)
			q, k, v, w := widen(feeds[0].value.([]float32)), widen(feeds[1].value.([]float32)), widen(feeds[2].value.([]float32)), widen(w32)
			var bias []float64
			if c.bias != nil {
				bias = widen(feeds[3].value.([]float32))
			}
			loss := func() float64 { return attentionRef(c, q, k, v, bias, w) }
			if want := loss(); math.Abs(float64(got[0][0])-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("loss %.9g, float64 reference %.9g", got[0][0], want)
			}
			checkFiniteDifferences(t, "q", q, got[2], loss, 2e-5)
			checkFiniteDifferences(t, "k", k, got[3], loss, 2e-5)
			checkFiniteDifferences(t, "v", v, got[4], loss, 2e-5)
			if c.trainBias {
				checkFiniteDifferences(t, "bias", bias, got[5], loss, 2e-5)
			}
		})
	}
}

// Inputs that do not fit the op are refused with a message naming the op
// and the rule.
func TestAttentionRefusesBadInputs(t *testing.T) {
	lib := withKernels(t)
	for _, c := range []struct {
		name    string
		q, k, v []int64
		bias    []int64
		want    string
	}{
		{"heads", []int64{1, 2, 3, 4}, []int64{1, 3, 3, 4}, []int64{1, 3, 3, 4}, nil, "multiple of k's and v's"},
		{"kv-heads", []int64{1, 4, 3, 4}, []int64{1, 2, 3, 4}, []int64{1, 1, 3, 4}, nil, "same head axis"},
		{"batch", []int64{2, 2, 3, 4}, []int64{1, 2, 3, 4}, []int64{1, 2, 3, 4}, nil, "same batch axis"},
		{"keys", []int64{1, 2, 3, 4}, []int64{1, 2, 5, 4}, []int64{1, 2, 6, 4}, nil, "same number of keys"},
		{"depth", []int64{1, 2, 3, 4}, []int64{1, 2, 3, 5}, []int64{1, 2, 3, 5}, nil, "same last axis"},
		{"bias-keys", []int64{1, 2, 3, 4}, []int64{1, 2, 5, 4}, []int64{1, 2, 5, 4}, []int64{1, 1, 1, 4}, "Bias's last axis"},
		{"bias-axis", []int64{1, 2, 3, 4}, []int64{1, 2, 5, 4}, []int64{1, 2, 5, 4}, []int64{1, 3, 1, 5}, "every axis of Bias"},
		{"bias-rank", []int64{1, 2, 3, 4}, []int64{1, 2, 5, 4}, []int64{1, 2, 5, 4}, []int64{1, 1, 1, 1, 5}, "rank 1 to 4"},
		{"bias-rank-3-axis", []int64{1, 2, 3, 4}, []int64{1, 2, 5, 4}, []int64{1, 2, 5, 4}, []int64{3, 3, 5}, "every axis of Bias"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := onnx.New("bad", nil)
			g := m.Graph()
			ins := []string{"q", "k", "v"}
			feeds := []feed{}
			for i, s := range [][]int64{c.q, c.k, c.v, c.bias} {
				if s == nil {
					continue
				}
				name := append(ins, "bias")[i]
				g.AddInput(name, onnx.Float, dimsOf(s))
				feeds = append(feeds, feed{name, s, make([]float32, numel(s))})
			}
			if c.bias != nil {
				ins = append(ins, "bias")
			}
			g.Node("Attention", ins, []string{"y"}, "y")
			g.P.Node[0].Domain = &[]string{onnx.DomainMigu}[0]
			g.AddOutput("y", onnx.Float, nil)
			m.SetOpset(onnx.DomainMigu, kernels.Opset)
			path := saveGraph(t, m).path
			_, err := runGraphErr(t, path, lib, 1, feeds...)
			if err == nil || !strings.Contains(err.Error(), "ai.migu.Attention: ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming ai.migu.Attention and %q", err, c.want)
			}
		})
	}
}
