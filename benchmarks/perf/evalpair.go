package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/onnx/ort"
)

// evalPairSample is what the eval-pair worker prints: pairSample's wall
// and CPU seconds per pass over all items, without the change (off) and
// with it (on), and the request tokens of a pass.
type evalPairSample struct {
	pairSample
	Tokens int `json:"tokens"`
	// WorstLL is the largest difference between the two models'
	// log-likelihoods, over all requests.
	WorstLL float64 `json:"worst_ll_difference"`
}

// workEvalPair measures a change to log-likelihood scoring in one
// process, as workPair measures MIGU's cost: two models of the same
// folder, without and with the change that -eval-pair names, score every
// item (of -items, else -eval-items made here) in turns pass by pass
// (off, on, on, off, …), so that the load of other processes falls alike
// on both. -eval-pair products: every weight product in MLAS against the
// products -eval-products picks (empty: auto, oneDNN on this CPU);
// attention: attention in standard operators against the fused kernel
// (ai.migu.Attention, eval.Options.UnfusedAttention). Both score the
// requests as -whole says.
func workEvalPair(o *options) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	base := eval.Options{Threads: o.threads, BatchSize: o.batch, Kernels: o.kernels, WholeRequests: o.whole}
	offOpts, onOpts := base, base
	switch o.evalPair {
	case "products":
		offOpts.Products, onOpts.Products = eval.ProductsMLAS, o.evalProducts
	case "attention":
		offOpts.UnfusedAttention = true
	default:
		return fmt.Errorf("-eval-pair %q: not products or attention", o.evalPair)
	}
	off, err := eval.Open(o.model, offOpts)
	if err != nil {
		return err
	}
	defer off.Close()
	on, err := eval.Open(o.model, onOpts)
	if err != nil {
		return err
	}
	defer on.Close()
	items, err := workerItems(o, off)
	if err != nil {
		return err
	}
	reqs := evalRequests(items)
	s := &evalPairSample{}
	for _, r := range reqs {
		c, k, err := off.EncodePair(r.Context, r.Continuation)
		if err != nil {
			return err
		}
		s.Tokens += len(c) + len(k) - 1
	}
	ctx := context.Background()
	var last [2][]eval.Result
	for i := range o.warmup + o.steps {
		first, second := 0, 1
		if i%2 == 1 {
			first, second = 1, 0
		}
		for _, k := range []int{first, second} {
			m := []*eval.Model{off, on}[k]
			start, cpu := time.Now(), cpuSeconds()
			res, err := m.LogLikelihood(ctx, reqs)
			if err != nil {
				return err
			}
			last[k] = res
			if i < o.warmup {
				continue
			}
			wall, c := time.Since(start).Seconds(), cpuSeconds()-cpu
			if k == 1 {
				s.OnS, s.OnCPUS = append(s.OnS, wall), append(s.OnCPUS, c)
			} else {
				s.OffS, s.OffCPUS = append(s.OffS, wall), append(s.OffCPUS, c)
			}
		}
	}
	for i := range last[0] {
		s.WorstLL = max(s.WorstLL, abs(last[0][i].LogProb-last[1][i].LogProb))
	}
	ratios := make([]float64, len(s.OnS))
	for i := range ratios {
		ratios[i] = s.OnS[i] / s.OffS[i]
	}
	fmt.Fprintf(os.Stderr, "%s pair, %d tokens per pass: off %.3f s (CPU %.2f s, %.0f tokens/s), on %.3f s (CPU %.2f s, %.0f tokens/s); on/off wall %.3f (median of pairs); log-likelihoods differ by up to %.2g\n",
		o.evalPair, s.Tokens, bench.Median(s.OffS), bench.Median(s.OffCPUS), float64(s.Tokens)/bench.Median(s.OffS),
		bench.Median(s.OnS), bench.Median(s.OnCPUS), float64(s.Tokens)/bench.Median(s.OnS), bench.Median(ratios), s.WorstLL)
	return json.NewEncoder(os.Stdout).Encode(s)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
