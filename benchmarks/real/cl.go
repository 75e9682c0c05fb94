package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/stats"
	"github.com/migu-ml/migu/lora"
)

// clMaxLen is real cl's default -max-len. In the chat format a row longer
// than the limit loses the end of its sentence, never its label; at 256
// tokens that is a few of amazon's longest reviews.
const clMaxLen = 256

// clOptions are the flags of `real cl`.
type clOptions struct {
	common
	sequence         string
	train, test, val int
	// gridFull and gridLoRA are candidate learning rates; each method runs
	// with every candidate of its grid and the one with the best validation
	// AA is chosen (empty: -lr-full or -lr-lora alone).
	gridFull, gridLoRA []float64
}

func parseCL(args []string) (*clOptions, error) {
	o := &clOptions{}
	fs := flag.NewFlagSet("cl", flag.ContinueOnError)
	methods, seeds := o.register(fs, "cl", clMaxLen)
	fs.StringVar(&o.sequence, "sequence", bench.EnvOr("REAL_SEQUENCE", "order1"), "CL-benchmark order (order1 … order6) or a sequence file")
	fs.IntVar(&o.train, "train-samples", bench.EnvInt("REAL_CL_TRAIN", 1000), "training rows drawn per task")
	fs.IntVar(&o.test, "test-samples", bench.EnvInt("REAL_CL_TEST", 500), "test rows drawn per task")
	fs.IntVar(&o.val, "val-samples", bench.EnvInt("REAL_CL_VAL", 0), "rows per task held out of the training file as a validation split (migu continual --val-samples; 0: none)")
	gridFull := fs.String("lr-grid-full", bench.EnvOr("REAL_LR_GRID_FULL", ""), "candidate learning rates of full and full+migu, chosen on the validation split (needs -val-samples; empty: -lr-full)")
	gridLoRA := fs.String("lr-grid-lora", bench.EnvOr("REAL_LR_GRID_LORA", ""), "candidate learning rates of lora and lora+migu, chosen on the validation split (needs -val-samples; empty: -lr-lora)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.finish(*methods, *seeds); err != nil {
		return nil, err
	}
	if o.train < 1 || o.test < 1 || o.val < 0 {
		return nil, fmt.Errorf("-train-samples and -test-samples must be positive, -val-samples ≥ 0")
	}
	for _, g := range []struct {
		flag, text string
		dst        *[]float64
	}{{"-lr-grid-full", *gridFull, &o.gridFull}, {"-lr-grid-lora", *gridLoRA, &o.gridLoRA}} {
		for _, s := range bench.Split(g.text) {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v <= 0 || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%s: %q is not a positive learning rate", g.flag, s)
			}
			if !slices.Contains(*g.dst, v) {
				*g.dst = append(*g.dst, v)
			}
		}
		if len(*g.dst) > 0 && o.val == 0 {
			return nil, fmt.Errorf("%s chooses on the validation split: give -val-samples", g.flag)
		}
	}
	return o, nil
}

// candidates are the learning rates a method runs with: its grid, or its
// one learning rate.
func (o *clOptions) candidates(method string) []float64 {
	g := o.gridFull
	if isLoRA(method) {
		g = o.gridLoRA
	}
	if len(g) == 0 {
		return []float64{o.lr(method)}
	}
	return g
}

// CLResults is RESULTS-cl.json: the reports of the continual runs (one per
// learning rate when full fine-tuning and LoRA use different ones) and the
// commands.
type CLResults struct {
	Machine  string              `json:"machine"`
	Started  string              `json:"started"`
	Finished string              `json:"finished"`
	Commands []string            `json:"commands"`
	Reports  []*continual.Report `json:"reports"`
	// Plots are the copies of the runs' plots beside the results file.
	Plots []string `json:"plots"`
}

func runCL(o *clOptions) error {
	for _, p := range []string{o.migu, o.model} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%v (build with make build, fetch the model with make smollm2)", err)
		}
	}
	res := &CLResults{Machine: bench.Machine(), Started: time.Now().UTC().Format(time.RFC3339)}
	// One continual run per learning rate, in the order of the methods.
	var lrs []float64
	for _, m := range o.methods {
		for _, lr := range o.candidates(m) {
			if !slices.Contains(lrs, lr) {
				lrs = append(lrs, lr)
			}
		}
	}
	var seeds []string
	for _, s := range o.seeds {
		seeds = append(seeds, fmt.Sprint(s))
	}
	for i, lr := range lrs {
		var ms []string
		for _, m := range o.methods {
			if slices.Contains(o.candidates(m), lr) {
				ms = append(ms, m)
			}
		}
		dir := filepath.Join(o.work, fmt.Sprintf("run-%d", i+1))
		args := []string{"continual", "--model", o.model, "--sequence", o.sequence, "--out", dir, "--methods", strings.Join(ms, ","),
			"--seeds", strings.Join(seeds, ","), "--train-samples", fmt.Sprint(o.train), "--test-samples", fmt.Sprint(o.test),
			"--template", "chat", "--lr", fmt.Sprint(lr), "--migu", fmt.Sprint(o.T), "--epochs", fmt.Sprint(o.epochs),
			"--batch-size", fmt.Sprint(o.batch), "--max-len", fmt.Sprint(o.maxLen), "--threads", fmt.Sprint(o.threads), "--recompute", o.recompute,
			"--lora-r", fmt.Sprint(o.loraR), "--lora-alpha", fmt.Sprint(o.loraAlpha), "--lora-targets", o.loraTargets,
			"--data-dir", filepath.Join(o.shared, "cl_benchmark")}
		if o.val > 0 {
			args = append(args, "--val-samples", fmt.Sprint(o.val))
		}
		if exists(filepath.Join(dir, continual.StateFile)) {
			args = append(args, "--resume")
		}
		if err := runMigu(o.migu, &res.Commands, os.Stderr, args...); err != nil {
			return err
		}
		raw, err := os.ReadFile(filepath.Join(dir, continual.ResultsFile))
		if err != nil {
			return err
		}
		var rep continual.Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			return fmt.Errorf("%s: %v", filepath.Join(dir, continual.ResultsFile), err)
		}
		rep.Out = dir
		res.Reports = append(res.Reports, &rep)
	}
	res.Finished = time.Now().UTC().Format(time.RFC3339)
	return writeCL(res, o.resultsBase("cl"), true)
}

// writeCL writes base.json and base.md; with copyPlots it first copies
// the runs' plots into plots/ beside them (a rewrite keeps the copies).
func writeCL(res *CLResults, base string, copyPlots bool) error {
	dir := filepath.Dir(base)
	plotDir := filepath.Join(dir, "plots", filepath.Base(base))
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return err
	}
	for i, rep := range res.Reports {
		if !copyPlots {
			break
		}
		if i == 0 {
			res.Plots = nil
		}
		for _, p := range rep.Plots {
			src := p
			if !filepath.IsAbs(src) && !exists(src) && rep.Out != "" {
				src = filepath.Join(rep.Out, continual.PlotsDir, filepath.Base(p))
			}
			raw, err := os.ReadFile(src)
			if err != nil {
				return fmt.Errorf("plot of run %d: %v", i+1, err)
			}
			dst := filepath.Join(plotDir, filepath.Base(p))
			if err := atomicfile.WriteFile(dst, raw); err != nil {
				return err
			}
			res.Plots = append(res.Plots, dst)
		}
	}
	raw, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(base+".json", append(raw, '\n')); err != nil {
		return err
	}
	return atomicfile.WriteFile(base+".md", []byte(clMarkdown(res, dir)))
}

// clMarkdown is RESULTS-cl.md.
func clMarkdown(res *CLResults, dir string) string {
	var b strings.Builder
	if len(res.Reports) == 0 {
		return "# CL benchmark\n\nNo runs.\n"
	}
	first := res.Reports[0]
	fmt.Fprintf(&b, "# CL benchmark on a real model: %s\n\n", first.Sequence)
	fmt.Fprintf(&b, "Sequence %s: %s; each row a user turn (the benchmark's instruction and the sentence) and an assistant turn (the label) in the model's chat template. "+
		"Model `%s`; %d training rows and %d test rows drawn per task (sample seed %d); rank classification (the label with the highest log-likelihood).\n\n",
		first.Sequence, strings.Join(first.Tasks, " → "), first.Config.Model, first.Config.TrainSamples, first.Config.TestSamples, first.Config.SampleSeed)
	fmt.Fprintf(&b, "Machine: %s. Run %s – %s.\n\n", res.Machine, res.Started, res.Finished)
	for _, rep := range res.Reports {
		j := rep.Config.Job
		fmt.Fprintf(&b, "- methods %s, seeds %v: lr %g, T %g, %d epoch(s) per task, batch %d, max length %d, LoRA r %s α %s targets %s.\n",
			strings.Join(rep.Config.Methods, ", "), rep.Config.Seeds, j.Train.Optim.LR, j.Train.T, j.Epochs, j.BatchSize, j.MaxLen,
			j.Adapter[lora.OptionR], j.Adapter[lora.OptionAlpha], j.Adapter[lora.OptionTargets])
		for _, s := range rep.Skipped {
			fmt.Fprintf(&b, "- skipped task %s: %s.\n", s.Task, s.Reason)
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(&b, "- warning: %s.\n", w)
		}
	}
	runs := lrRuns(res)
	if choices := chooseLR(runs); choices != nil {
		writeSelection(&b, choices, res.Reports[0].Config.ValSamples)
	}
	b.WriteString("\n## Comparison\n\nAA: average accuracy after the last task; BWT: backward transfer; forgetting: mean drop from each task's best earlier accuracy; FWT: forward transfer. Percent, mean ± sample std over seeds; test rows.\n\n")
	b.WriteString("| method | lr | AA | BWT | forgetting | FWT | seeds |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		if r.sum != nil {
			b.WriteString(r.row() + "\n")
		}
	}
	b.WriteString("\n## MIGU against the same method without it\n\nAt the same learning rate. " + pairText + "\n\n")
	b.WriteString(pairHeader)
	pairs := 0
	for _, base := range runs {
		if mg := findRun(runs, base.method+"+migu", base.lr); mg != nil && !strings.HasSuffix(base.method, "+migu") {
			pairs++
			b.WriteString(pairRow(base, *mg) + "\n")
		}
	}
	if pairs == 0 {
		b.WriteString("| – | – | – | no method ran both with and without MIGU | | | |\n")
	}
	b.WriteString("\n## Accuracy matrices (mean over seeds)\n\nRow *after i*: accuracy on each task after training tasks 1…i; *start*: before training.\n\n")
	for _, r := range runs {
		if r.sum == nil {
			continue
		}
		tasks := r.rep.Tasks
		fmt.Fprintf(&b, "### %s, lr %g\n\n| after | %s |\n|---|%s\n", r.method, r.lr, strings.Join(tasks, " | "), strings.Repeat("---|", len(tasks)))
		if len(r.sum.Mean.Base) > 0 {
			fmt.Fprintf(&b, "| start | %s |\n", pctRow(r.sum.Mean.Base))
		}
		for i, row := range r.sum.Mean.R {
			fmt.Fprintf(&b, "| %d %s | %s |\n", i+1, tasks[i], pctRow(row))
		}
		b.WriteString("\n")
	}
	b.WriteString("## Training\n\n| method | lr | seed | task | steps | loss first → last | s/step |\n|---|---|---|---|---|---|---|\n")
	for _, rep := range res.Reports {
		for _, rr := range rep.Runs {
			for _, t := range rr.Tasks {
				per := 0.0
				if t.Steps > 0 {
					per = t.Seconds / float64(t.Steps)
				}
				fmt.Fprintf(&b, "| %s | %g | %d | %s | %d | %.4f → %.4f | %.2f |\n", rr.Method, rep.Config.Job.Train.Optim.LR, rr.Seed, t.Task, t.Steps, t.FirstLoss, t.LastLoss, per)
			}
		}
	}
	if len(res.Plots) > 0 {
		b.WriteString("\n## Plots\n\nAccuracy heatmaps, each task's accuracy over the sequence, and MIGU's mask overlap between consecutive tasks per layer (the paper's Fig. 5).\n\n")
		for _, p := range res.Plots {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				rel = p
			}
			fmt.Fprintf(&b, "![%s](%s)\n\n", filepath.Base(p), filepath.ToSlash(rel))
		}
	}
	b.WriteString("## Commands\n\n```sh\n")
	for _, c := range res.Commands {
		b.WriteString(c + "\n")
	}
	b.WriteString("```\n")
	return b.String()
}

func meanStd(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	if len(v) == 1 {
		return fmt.Sprintf("%+.1f", 100*v[0])
	}
	return fmt.Sprintf("%+.1f ± %.1f", 100*stats.Mean(v), 100*stats.SampleStd(v))
}

func pctRow(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", 100*x)
	}
	return strings.Join(s, " | ")
}
