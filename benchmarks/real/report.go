package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/stats"
)

// CodeResults is RESULTS-code.json: the configuration, every command run
// and every model's per-item outcomes, from which the report is computed.
type CodeResults struct {
	Config   CodeConfig `json:"config"`
	Machine  string     `json:"machine"`
	Started  string     `json:"started"`
	Finished string     `json:"finished"`
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15 minute load
	// averages when the run started and ended (the machine may be shared).
	LoadStart string        `json:"load_start"`
	LoadEnd   string        `json:"load_end"`
	Commands  []string      `json:"commands"`
	Timings   []Timing      `json:"timings,omitempty"`
	Models    []ModelResult `json:"models"`
}

// CodeConfig are the sizes and hyperparameters of a run.
type CodeConfig struct {
	Model        string   `json:"model"`
	Methods      []string `json:"methods"`
	Seeds        []uint64 `json:"seeds"`
	Records      int      `json:"records"`
	Heldout      int      `json:"heldout"`
	Items        int      `json:"items"`
	HumanEval    int      `json:"humaneval"`
	MaxNewTokens int      `json:"max_new_tokens"`
	LRFull       float64  `json:"lr_full"`
	LRLoRA       float64  `json:"lr_lora"`
	T            float64  `json:"t"`
	Epochs       int      `json:"epochs"`
	Batch        int      `json:"batch"`
	MaxLen       int      `json:"max_len"`
	Threads      int      `json:"threads"`
	LoRAR        int      `json:"lora_r"`
	LoRAAlpha    float64  `json:"lora_alpha"`
	LoRATargets  string   `json:"lora_targets"`
	Resamples    int      `json:"resamples"`
	Template     string   `json:"template"`
	// Stdlib is the Python source tree the records came from.
	Stdlib string `json:"stdlib"`
	// Recompute is migu train's --recompute.
	Recompute string `json:"recompute,omitempty"`
}

// ModelResult is one measured model: the starting model ("before") or a
// method trained with a seed.
type ModelResult struct {
	Method string    `json:"method"`
	Seed   uint64    `json:"seed"`
	Train  *TrainLog `json:"train,omitempty"`
	// Items holds each general task's per-item suite metric (1 right,
	// 0 wrong) in file order.
	Items map[string][]float64 `json:"items"`
	// CodeLogLik and CodeTokens are each held-out function's total
	// log-likelihood and predicted tokens.
	CodeLogLik []float64 `json:"code_loglik"`
	CodeTokens []int     `json:"code_tokens"`
	// HumanEval is 1 or 0 per problem: the greedy completion passed.
	HumanEval []float64 `json:"humaneval"`
	// Seconds are the measurement times: suite, code_ppl,
	// humaneval_generate, humaneval_run.
	Seconds map[string]float64 `json:"seconds"`
}

// TrainLog is a training run's loss curve and time.
type TrainLog struct {
	LR          float64   `json:"lr"`
	Steps       int       `json:"steps"`
	Loss        []float64 `json:"loss"`
	StepSeconds float64   `json:"step_seconds"` // sum of the steps' own times
	WallSeconds float64   `json:"wall_seconds"` // the whole migu train process
	CPUSeconds  float64   `json:"cpu_seconds"`  // its user + system time
	PeakRSSMB   float64   `json:"peak_rss_mb"`
}

// metricNames are the reported metrics, in order; average is the suite's.
var metricNames = []string{"hellaswag", "arc_challenge", "winogrande", "average", "code_ppl", "humaneval"}

var metricTitles = map[string]string{
	"hellaswag": "HellaSwag acc_norm", "arc_challenge": "ARC-Challenge acc_norm", "winogrande": "Winogrande acc",
	"average": "average (paper)", "code_ppl": "held-out code perplexity", "humaneval": "HumanEval pass@1",
}

// pooled is one method's per-item outcomes averaged over its seeds (items
// in the same order for every method).
type pooled struct {
	method string
	seeds  int
	items  map[string][]float64
	ll     []float64 // mean over seeds per document
	tok    []float64
	he     []float64
}

func pool(res *CodeResults, method string) *pooled {
	p := &pooled{method: method, items: map[string][]float64{}}
	var ms []ModelResult
	for _, m := range res.Models {
		if m.Method == method {
			ms = append(ms, m)
		}
	}
	p.seeds = len(ms)
	if len(ms) == 0 {
		return nil
	}
	avg := func(get func(ModelResult) []float64) []float64 {
		n := len(get(ms[0]))
		out := make([]float64, n)
		for _, m := range ms {
			v := get(m)
			for i := range out {
				if i < len(v) {
					out[i] += v[i] / float64(len(ms))
				}
			}
		}
		return out
	}
	for _, t := range suiteTasks {
		p.items[t] = avg(func(m ModelResult) []float64 { return m.Items[t] })
	}
	p.ll = avg(func(m ModelResult) []float64 { return m.CodeLogLik })
	p.tok = avg(func(m ModelResult) []float64 {
		out := make([]float64, len(m.CodeTokens))
		for i, t := range m.CodeTokens {
			out[i] = float64(t)
		}
		return out
	})
	p.he = avg(func(m ModelResult) []float64 { return m.HumanEval })
	return p
}

// score is a value with its standard error.
type score struct {
	Value, Stderr float64
	N             int
}

// scoreOf computes a metric of a pooled method: the mean of per-item
// outcomes with lm-eval's standard error, the suite average with the
// tasks' errors combined as independent, and perplexity with a bootstrap
// standard error over documents (lm-eval reports none for perplexity).
func (p *pooled) scoreOf(metric string, resamples int) score {
	switch metric {
	case "average":
		var v, se2 float64
		for _, t := range suiteTasks {
			s := p.scoreOf(t, resamples)
			v += s.Value / float64(len(suiteTasks))
			se2 += s.Stderr * s.Stderr
		}
		return score{v, math.Sqrt(se2) / float64(len(suiteTasks)), len(suiteTasks)}
	case "code_ppl":
		if len(p.ll) == 0 {
			return score{math.NaN(), math.NaN(), 0}
		}
		iv, err := stats.PairedBootstrap(len(p.ll), func(idx []int) float64 { return ppl(p, idx) }, stats.BootstrapOptions{Resamples: resamples, Seed: 1})
		if err != nil {
			return score{math.NaN(), math.NaN(), 0}
		}
		return score{iv.Estimate, iv.Stderr, len(p.ll)}
	case "humaneval":
		return score{stats.Mean(p.he), stats.MeanStderr(p.he), len(p.he)}
	}
	xs := p.items[metric]
	return score{stats.Mean(xs), stats.MeanStderr(xs), len(xs)}
}

// ppl is the corpus perplexity of the documents idx: exp(−Σ loglik / Σ tokens).
func ppl(p *pooled, idx []int) float64 {
	var ll, tok float64
	for _, i := range idx {
		ll += p.ll[i]
		tok += p.tok[i]
	}
	return math.Exp(-ll / tok)
}

// Difference is other − base on one metric, paired over items.
type Difference struct {
	Base, Other string
	Metric      string
	Interval    stats.Interval
	Sign        *stats.Sign // nil for perplexity and the average
}

// difference compares two pooled methods on a metric.
func difference(a, b *pooled, metric string, resamples int) (Difference, error) {
	d := Difference{Base: a.method, Other: b.method, Metric: metric}
	o := stats.BootstrapOptions{Resamples: resamples, Seed: 1}
	var err error
	switch metric {
	case "average":
		sizes := make([]int, len(suiteTasks))
		for k, t := range suiteTasks {
			sizes[k] = len(a.items[t])
		}
		d.Interval, err = stats.StratifiedBootstrap(sizes, func(idx [][]int) float64 {
			var v float64
			for k, t := range suiteTasks {
				var s float64
				for _, i := range idx[k] {
					s += b.items[t][i] - a.items[t][i]
				}
				v += s / float64(len(idx[k])) / float64(len(suiteTasks))
			}
			return v
		}, o)
	case "code_ppl":
		d.Interval, err = stats.PairedBootstrap(len(a.ll), func(idx []int) float64 { return ppl(b, idx) - ppl(a, idx) }, o)
	default:
		xa, xb := a.items[metric], b.items[metric]
		if metric == "humaneval" {
			xa, xb = a.he, b.he
		}
		if len(xa) == 0 || len(xa) != len(xb) {
			return d, fmt.Errorf("%s: %d items for %s, %d for %s", metric, len(xa), a.method, len(xb), b.method)
		}
		d.Interval, err = stats.PairedMeanDiff(xa, xb, o)
		if err == nil {
			s, serr := stats.SignTest(xa, xb)
			d.Sign, err = &s, serr
		}
	}
	return d, err
}

// comparisons are the pairs the report compares: every method against the
// starting model (what it forgot and learned) and each +migu method
// against the same method without MIGU.
func comparisons(methods []string) [][2]string {
	var out [][2]string
	for _, m := range methods {
		out = append(out, [2]string{"before", m})
	}
	for _, m := range methods {
		if base, ok := strings.CutSuffix(m, "+migu"); ok && slices.Contains(methods, base) {
			out = append(out, [2]string{base, m})
		}
	}
	return out
}

// codeReport is everything the Markdown shows, computed from results.
type codeReport struct {
	res     *CodeResults
	methods []string // before first
	scores  map[string]map[string]score
	diffs   []Difference
}

func buildCodeReport(res *CodeResults) (*codeReport, error) {
	r := &codeReport{res: res, methods: []string{"before"}, scores: map[string]map[string]score{}}
	for _, m := range res.Config.Methods {
		if slices.ContainsFunc(res.Models, func(x ModelResult) bool { return x.Method == m }) {
			r.methods = append(r.methods, m)
		}
	}
	pools := map[string]*pooled{}
	for _, m := range r.methods {
		p := pool(res, m)
		if p == nil {
			return nil, fmt.Errorf("no measurement of %s", m)
		}
		pools[m] = p
		r.scores[m] = map[string]score{}
		for _, metric := range metricNames {
			if metric == "humaneval" && len(p.he) == 0 {
				continue
			}
			r.scores[m][metric] = p.scoreOf(metric, res.Config.Resamples)
		}
	}
	for _, c := range comparisons(r.methods[1:]) {
		for _, metric := range metricNames {
			if metric == "humaneval" && len(pools[c[0]].he) == 0 {
				continue
			}
			d, err := difference(pools[c[0]], pools[c[1]], metric, res.Config.Resamples)
			if err != nil {
				return nil, err
			}
			r.diffs = append(r.diffs, d)
		}
	}
	return r, nil
}

// writeCode writes base.json, base.md and the plots beside them.
func writeCode(res *CodeResults, base string) error {
	rep, err := buildCodeReport(res)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(base+".json", append(raw, '\n')); err != nil {
		return err
	}
	plots, err := rep.plots(filepath.Join(filepath.Dir(base), "plots"), filepath.Base(base))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(base+".md", []byte(rep.markdown(filepath.Dir(base), plots)))
}

// rewriteReport reads a results JSON of either experiment and writes its
// Markdown and plots again.
func rewriteReport(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var probe struct {
		Reports json.RawMessage `json:"reports"`
		Models  json.RawMessage `json:"models"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	base := strings.TrimSuffix(path, ".json")
	switch {
	case probe.Models != nil:
		var res CodeResults
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		return writeCode(&res, base)
	case probe.Reports != nil:
		var res CLResults
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		return writeCL(&res, base, false)
	}
	return fmt.Errorf("%s: neither a real code (models) nor a real cl (reports) results file", path)
}

func (r *codeReport) fmtScore(metric string, s score) string {
	if math.IsNaN(s.Value) {
		return "–"
	}
	if metric == "code_ppl" {
		return fmt.Sprintf("%.3f ± %.3f", s.Value, s.Stderr)
	}
	return fmt.Sprintf("%.1f ± %.1f", 100*s.Value, 100*s.Stderr)
}

func (r *codeReport) fmtDiff(d Difference) string {
	iv := d.Interval
	if d.Metric == "code_ppl" {
		return fmt.Sprintf("%+.3f [%+.3f, %+.3f]", iv.Estimate, iv.Lo, iv.Hi)
	}
	return fmt.Sprintf("%+.1f [%+.1f, %+.1f]", 100*iv.Estimate, 100*iv.Lo, 100*iv.Hi)
}

// markdown is RESULTS-code.md.
func (r *codeReport) markdown(dir string, plots []string) string {
	c := r.res.Config
	var b strings.Builder
	b.WriteString("# Continual instruction tuning on code: " + filepath.Base(c.Model) + "\n\n")
	fmt.Fprintf(&b, "Model `%s`, fine-tuned on %d code instruction records (Python standard library `%s`, `migu data code-instructions`, "+
		"rendered with the model's chat template; loss on the assistant turn) with %s; seeds %v. "+
		"Full fine-tuning lr %g, LoRA lr %g (r %d, α %g, targets %s), MIGU T = %g, %d epoch(s), batch %d, max length %d, constant schedule.\n\n",
		c.Model, c.Records, c.Stdlib, strings.Join(c.Methods, ", "), c.Seeds, c.LRFull, c.LRLoRA, c.LoRAR, c.LoRAAlpha, c.LoRATargets, c.T, c.Epochs, c.Batch, c.MaxLen)
	items := "all items"
	if c.Items > 0 {
		items = fmt.Sprintf("the first %d items of each file", c.Items)
	}
	fmt.Fprintf(&b, "Forgetting: HellaSwag (validation), ARC-Challenge (test) and Winogrande (XL validation), %s, zero-shot, scored as lm-evaluation-harness does; "+
		"the average is the paper's (HellaSwag acc_norm, ARC-Challenge acc_norm, Winogrande acc). "+
		"Learning: perplexity of %d held-out functions (signature, docstring and body) and HumanEval pass@1 (greedy, first %d problems, at most %d new tokens, sandboxed).\n\n",
		items, c.Heldout, c.HumanEval, c.MaxNewTokens)
	fmt.Fprintf(&b, "Machine: %s. Run %s – %s; load average at the start %s, at the end %s.\n\n", r.res.Machine, r.res.Started, r.res.Finished, r.res.LoadStart, r.res.LoadEnd)

	b.WriteString("## Scores\n\nPercent ± standard error: lm-eval's (sample standard deviation / √n over items) for accuracies and pass@1; the average's combines the three as independent; perplexity's is a bootstrap over documents. With several seeds, each item's outcome is first averaged over the seeds.\n\n")
	b.WriteString("| method | seeds |")
	for _, m := range metricNames {
		if _, ok := r.scores["before"][m]; ok {
			b.WriteString(" " + metricTitles[m] + " |")
		}
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(r.scores["before"])) + "\n")
	for _, m := range r.methods {
		p := 0
		for _, x := range r.res.Models {
			if x.Method == m {
				p++
			}
		}
		fmt.Fprintf(&b, "| %s | %d |", m, p)
		for _, metric := range metricNames {
			if s, ok := r.scores[m][metric]; ok {
				b.WriteString(" " + r.fmtScore(metric, s) + " |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Differences\n\nOther − base, paired over the same items: the point difference and its 95% paired bootstrap interval " +
		fmt.Sprintf("(%d resamples of the items, percentile interval, seed 1; the average resamples each task's items separately), ", c.Resamples) +
		"and the exact two-sided paired sign test over items where the two differ (wins/losses/ties, p). Accuracies in points; perplexity in perplexity.\n\n")
	b.WriteString("| base | other | metric | difference [95% interval] | wins/losses/ties | sign test p | beyond uncertainty |\n|---|---|---|---|---|---|---|\n")
	for _, d := range r.diffs {
		sign, p := "–", "–"
		if d.Sign != nil {
			sign = fmt.Sprintf("%d/%d/%d", d.Sign.Wins, d.Sign.Losses, d.Sign.Ties)
			p = fmt.Sprintf("%.3g", d.Sign.P)
		}
		beyond := "no"
		if d.Interval.Excludes(0) {
			beyond = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", d.Base, d.Other, metricTitles[d.Metric], r.fmtDiff(d), sign, p, beyond)
	}
	b.WriteString("\n" + r.beyondText() + "\n")

	b.WriteString("\n## Training\n\n| method | seed | lr | steps | loss first → last (mean of last 10) | s/step | train wall s | CPU s | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range r.res.Models {
		if m.Train == nil || len(m.Train.Loss) == 0 {
			continue
		}
		l := m.Train.Loss
		tail := stats.Mean(l[max(0, len(l)-10):])
		fmt.Fprintf(&b, "| %s | %d | %g | %d | %.4f → %.4f (%.4f) | %.2f | %.0f | %.0f | %.2f |\n", m.Method, m.Seed, m.Train.LR, m.Train.Steps,
			l[0], l[len(l)-1], tail, m.Train.StepSeconds/float64(m.Train.Steps), m.Train.WallSeconds, m.Train.CPUSeconds, m.Train.PeakRSSMB/1000)
	}
	b.WriteString("\n## Measurement times\n\nWall seconds (per item); CPU seconds (user + system) in the last columns, less inflated by other load on the machine. The suite's CPU time is in the command costs below.\n\n| model | seed | suite s (s/item) | code ppl s (s/doc) | HumanEval generate s (s/problem) | HumanEval run s | code ppl CPU s | HumanEval generate CPU s |\n|---|---|---|---|---|---|---|---|\n")
	for _, m := range r.res.Models {
		n := 0
		for _, v := range m.Items {
			n += len(v)
		}
		perItem := func(s float64, k int) string {
			if k == 0 {
				return fmt.Sprintf("%.0f", s)
			}
			return fmt.Sprintf("%.0f (%.2f)", s, s/float64(k))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %.0f | %.0f | %.0f |\n", m.Method, m.Seed, perItem(m.Seconds["suite"], n), perItem(m.Seconds["code_ppl"], len(m.CodeLogLik)),
			perItem(m.Seconds["humaneval_generate"], len(m.HumanEval)), m.Seconds["humaneval_run"], m.Seconds["code_ppl_cpu"], m.Seconds["humaneval_generate_cpu"])
	}
	if len(r.res.Timings) > 0 {
		b.WriteString("\n## Command costs\n\nWall and CPU (user + system) seconds and peak RSS of every migu process; the machine's load average at the start and end of the run is in the header.\n\n| command | wall s | CPU s | peak RSS GB |\n|---|---|---|---|\n")
		for _, t := range r.res.Timings {
			cmd := t.Command
			if len(cmd) > 90 {
				cmd = cmd[:90] + "…"
			}
			fmt.Fprintf(&b, "| `%s` | %.0f | %.0f | %.2f |\n", cmd, t.Wall, t.CPU, t.PeakRSSMB/1000)
		}
	}
	if len(plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, p := range plots {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				rel = p
			}
			fmt.Fprintf(&b, "![%s](%s)\n\n", filepath.Base(p), filepath.ToSlash(rel))
		}
	}
	b.WriteString("## Commands\n\n```sh\n")
	for _, cmd := range r.res.Commands {
		b.WriteString(cmd + "\n")
	}
	b.WriteString("```\n")
	return b.String()
}

// beyondText says in words which differences are larger than their
// uncertainty (95% paired bootstrap interval excluding 0).
func (r *codeReport) beyondText() string {
	var yes []string
	for _, d := range r.diffs {
		if d.Interval.Excludes(0) {
			yes = append(yes, fmt.Sprintf("%s − %s on %s (%s)", d.Other, d.Base, metricTitles[d.Metric], r.fmtDiff(d)))
		}
	}
	if len(yes) == 0 {
		return "No difference is larger than its uncertainty: every 95% interval contains 0."
	}
	return "Differences larger than their uncertainty (95% interval excludes 0): " + strings.Join(yes, "; ") + ". Every other difference is within its uncertainty."
}
