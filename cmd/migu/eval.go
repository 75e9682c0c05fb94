package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// evalFlags are the flags of `migu eval`.
type evalFlags struct {
	model, adapter, task, tasks, data, dataDir string
	compare, compareAdapter                    string
	limit, fewshot, batch, threads, maxLen     int
	fewshotData, provider, logSamples          string
	sampleLog                                  bytes.Buffer // --log-samples rows
	seed                                       uint64
	stride                                     int
	asJSON                                     bool
	// humaneval
	samples, maxNew, memoryMB, workers int
	temperature, topP                  float64
	timeout                            time.Duration
	completions                        string
	isolation                          string // the sandbox level that ran

	// cl
	clMode       string
	chatMode     bool
	chatTemplate string
}

func newEvalCmd(g *globalFlags) *cobra.Command {
	f := &evalFlags{}
	cmd := &cobra.Command{
		Use:   "eval --model DIR --task TASK --data FILE | --tasks T1,T2 --data-dir DIR | --task humaneval --data FILE --completions FILE",
		Short: "Score a model as lm-evaluation-harness does: HellaSwag, ARC, Winogrande, perplexity, HumanEval, CL accuracy",
		Long: `eval scores a model folder (optionally with a LoRA adapter merged in) and prints
a table of task, metric, value, standard error and n, or JSON with --json.

Multiple-choice tasks follow lm-evaluation-harness: hellaswag (acc, acc_norm),
arc_challenge (acc, acc_norm) and winogrande (acc, partial scoring), read from
the Hugging Face JSON-lines files. perplexity reads a text file (or .jsonl with
a "text" field) and reports token, word and byte perplexity; humaneval runs
generated programs in a sandbox and reports pass@k; cl scores a
continual-learning test file of {"sentence", "label"} rows.

--task humaneval --completions FILE.jsonl scores ready-made completions from
any source, in human-eval's samples format ({"task_id", "completion"} rows,
several per task allowed), with no --model: pass@1 is the mean over problems
of the share of samples that passed, pass@k the unbiased estimator. The
sandbox is bubblewrap where bwrap works, else namespaces with an
unprivileged uid; MIGU_SANDBOX=bubblewrap|fallback forces one, and the JSON
report names the level that ran in "isolation".

--tasks runs a suite over files found by their standard names in --data-dir
(hellaswag_validation.jsonl, arc_challenge_test.jsonl,
winogrande_xl_validation.jsonl) and adds the suite average (HellaSwag acc_norm,
ARC-Challenge acc_norm, Winogrande acc). --compare MODEL_DIR or
--compare-adapter DIR scores a second model the same way and prints the
difference per metric (other − base).`,
		Example: `  migu eval --model ./llama --task hellaswag --data hellaswag_validation.jsonl --limit 200
  migu eval --model ./llama --adapter runs/a/adapter --tasks hellaswag,arc_challenge,winogrande --data-dir data/eval --json
  migu eval --model ./llama --compare-adapter runs/a/adapter --tasks winogrande --data-dir data/eval
  migu eval --model ./llama --task perplexity --data wiki.txt
  migu eval --task humaneval --data HumanEval.jsonl.gz --completions samples.jsonl --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if f.completions != "" {
				return runCompletions(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			if err := g.initORT(); err != nil {
				return err
			}
			return runEval(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model folder made by `migu export`")
	fl.StringVar(&f.adapter, "adapter", "", "LoRA adapter folder (PEFT format) merged into the model for scoring")
	fl.StringVar(&f.task, "task", "", "hellaswag, arc_challenge, winogrande, perplexity, humaneval or cl")
	fl.StringVar(&f.data, "data", "", "data file of --task")
	fl.StringVar(&f.tasks, "tasks", "", "suite: comma-separated multiple-choice tasks (with --data-dir)")
	fl.StringVar(&f.dataDir, "data-dir", "", "suite: folder holding the tasks' files under their standard names")
	fl.StringVar(&f.compare, "compare", "", "also score this model folder and print the differences")
	fl.StringVar(&f.compareAdapter, "compare-adapter", "", "also score --model with this adapter and print the differences")
	fl.IntVar(&f.limit, "limit", 0, "score only the first N rows (0: all)")
	fl.IntVar(&f.fewshot, "num-fewshot", 0, "solved examples put before each multiple-choice item")
	fl.StringVar(&f.fewshotData, "fewshot-data", "", "file to draw few-shot examples from (default: the evaluated file, never the item itself)")
	fl.Uint64Var(&f.seed, "seed", eval.DefaultFewshotSeed, "seed of few-shot sampling and of HumanEval sampling")
	fl.IntVar(&f.batch, "batch-size", eval.DefaultBatchSize, "sequences per forward run")
	fl.IntVar(&f.threads, "threads", 0, "ONNX Runtime intra-op threads (0: one per core)")
	fl.IntVar(&f.maxLen, "max-length", 0, "context length; longer requests are cut from the left (0: the model's)")
	fl.StringVar(&f.provider, "provider", "", "ONNX Runtime execution provider: cpu (default) or cuda")
	fl.IntVar(&f.stride, "stride", 0, "perplexity: tokens predicted per window (0: the context length, lm-eval's rolling windows)")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON instead of a table")
	fl.StringVar(&f.logSamples, "log-samples", "", "multiple-choice tasks: write every item's log-likelihoods and scores to this JSON-lines file")
	fl.IntVar(&f.samples, "samples", 1, "humaneval: completions per problem")
	fl.Float64Var(&f.temperature, "temperature", 0, "humaneval: sampling temperature (0: greedy)")
	fl.Float64Var(&f.topP, "top-p", 0, "humaneval: nucleus sampling threshold (0 or 1: off)")
	fl.IntVar(&f.maxNew, "max-new-tokens", 0, "humaneval and cl: longest generation (0: the task's default)")
	fl.DurationVar(&f.timeout, "timeout", 0, "humaneval: time limit of each program (0: 10s)")
	fl.IntVar(&f.memoryMB, "memory-mb", 0, "humaneval: memory limit of each program in MiB (0: 1024)")
	fl.IntVar(&f.workers, "workers", 0, "humaneval: programs run at once (0: one per CPU)")
	fl.StringVar(&f.completions, "completions", "", "humaneval: score these completions (JSON lines of task_id, completion) instead of a model's")
	fl.BoolVar(&f.chatMode, "chat", false, "cl: format each row as a user turn with the model's chat template, as migu train --template chat does")
	fl.StringVar(&f.chatTemplate, "chat-template", "", "cl: Jinja chat template file to use instead of the model folder's (implies --chat)")
	fl.StringVar(&f.clMode, "cl-mode", eval.CLRank, "cl: rank (label with the highest log-likelihood; pseudo-log-likelihood for masked-LM models), generate (exact match) or both")
	return cmd
}

// check validates the flags before anything is loaded.
func (f *evalFlags) check() error {
	if f.completions != "" {
		return f.checkCompletions()
	}
	if f.model == "" {
		return badinput.Errorf("eval needs --model MODEL_DIR")
	}
	switch {
	case f.task != "" && f.tasks != "":
		return badinput.Errorf("give either --task (with --data) or --tasks (with --data-dir), not both")
	case f.task == "" && f.tasks == "":
		return badinput.Errorf("eval needs --task TASK --data FILE, or --tasks %s --data-dir DIR", strings.Join(eval.TaskNames(), ","))
	case f.tasks != "":
		if f.dataDir == "" {
			return badinput.Errorf("--tasks needs --data-dir, the folder holding the tasks' files")
		}
		if _, err := eval.ParseTaskList(f.tasks); err != nil {
			return err
		}
	default:
		if !isEvalTask(f.task) {
			return badinput.Errorf("unknown --task %q (tasks: %s, perplexity, humaneval, cl)", f.task, strings.Join(eval.TaskNames(), ", "))
		}
		if f.data == "" {
			return badinput.Errorf("--task %s needs --data FILE", f.task)
		}
		if _, err := os.Stat(f.data); err != nil {
			return badinput.Errorf("--data: %v", err)
		}
	}
	if f.compare != "" && f.compareAdapter != "" {
		return badinput.Errorf("give --compare or --compare-adapter, not both")
	}
	if f.limit < 0 || f.fewshot < 0 || f.batch < 1 || f.threads < 0 || f.maxLen < 0 || f.stride < 0 {
		return badinput.Errorf("--limit, --num-fewshot, --threads, --max-length and --stride must not be negative, --batch-size must be positive")
	}
	if f.task == "cl" {
		return eval.CheckCLMode(f.clMode)
	}
	if f.chatMode || f.chatTemplate != "" {
		return badinput.Errorf("--chat and --chat-template apply to --task cl")
	}
	return nil
}

// checkCompletions validates the flags of scoring ready-made completions.
func (f *evalFlags) checkCompletions() error {
	switch {
	case f.task != "humaneval":
		return badinput.Errorf("--completions scores HumanEval completions: give --task humaneval")
	case f.model != "" || f.adapter != "" || f.compare != "" || f.compareAdapter != "" || f.tasks != "":
		return badinput.Errorf("--completions scores completions without a model: drop --model, --adapter, --compare and --tasks")
	case f.data == "":
		return badinput.Errorf("--completions needs --data, the HumanEval problems file")
	}
	for _, p := range []struct{ flag, path string }{{"--data", f.data}, {"--completions", f.completions}} {
		if _, err := os.Stat(p.path); err != nil {
			return badinput.Errorf("%s: %v", p.flag, err)
		}
	}
	if f.limit < 0 || f.workers < 0 || f.memoryMB < 0 || f.timeout < 0 {
		return badinput.Errorf("--limit, --workers, --memory-mb and --timeout must not be negative")
	}
	return nil
}

// runCompletions scores the completions of --completions and prints.
func runCompletions(ctx context.Context, f *evalFlags, out, log io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	start := time.Now()
	r, err := eval.HumanEvalCompletionScores(ctx, f.data, f.completions, eval.HumanEvalOptions{
		Timeout: f.timeout, MemoryMB: f.memoryMB, Limit: f.limit, Workers: f.workers, Log: log,
	})
	if err != nil {
		return err
	}
	report := evalReport{Model: "completions " + f.completions, Scores: r.Scores, Isolation: r.Isolation, Seconds: time.Since(start).Seconds()}
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return report.print(out)
}

func isEvalTask(name string) bool {
	_, err := eval.LookupTask(name)
	return err == nil || name == "perplexity" || name == "humaneval" || name == "cl"
}

// runEval opens the model (and the one to compare with), scores, prints.
func runEval(ctx context.Context, f *evalFlags, out, log io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	opts := eval.Options{Adapter: f.adapter, Threads: f.threads, BatchSize: f.batch, Provider: f.provider, MaxLength: f.maxLen}
	base, err := eval.Open(f.model, opts)
	if err != nil {
		return err
	}
	defer base.Close()
	var other *eval.Model
	otherName := ""
	switch {
	case f.compare != "":
		o := opts
		o.Adapter = ""
		other, err = eval.Open(f.compare, o)
		otherName = f.compare
	case f.compareAdapter != "":
		o := opts
		o.Adapter = f.compareAdapter
		other, err = eval.Open(f.model, o)
		otherName = f.model + " + " + f.compareAdapter
	}
	if err != nil {
		return err
	}
	if other != nil {
		defer other.Close()
	}
	baseName := f.model
	if f.adapter != "" {
		baseName += " + " + f.adapter
	}
	base.SetProgress(progressPrinter(log))
	if other != nil {
		other.SetProgress(progressPrinter(log))
	}
	start := time.Now()
	scores, err := f.score(ctx, base, baseName, log)
	if err != nil {
		return err
	}
	report := evalReport{Model: baseName, Scores: scores, Isolation: f.isolation, Seconds: time.Since(start).Seconds()}
	if other != nil {
		start = time.Now()
		otherScores, err := f.score(ctx, other, otherName, log)
		if err != nil {
			return err
		}
		report.Other = &evalReport{Model: otherName, Scores: otherScores, Isolation: f.isolation, Seconds: time.Since(start).Seconds()}
		report.Diff = eval.Compare(scores, otherScores)
	}
	if f.logSamples != "" {
		if err := atomicfile.WriteFile(f.logSamples, f.sampleLog.Bytes()); err != nil {
			return badinput.Errorf("--log-samples: %v", err)
		}
	}
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return report.print(out)
}

// score runs the chosen task or suite on one model.
func (f *evalFlags) score(ctx context.Context, m *eval.Model, name string, log io.Writer) ([]eval.Score, error) {
	to := eval.TaskOptions{Limit: f.limit, NumFewshot: f.fewshot, FewshotPath: f.fewshotData, Seed: f.seed, Log: log}
	if f.tasks != "" {
		tasks, err := eval.ParseTaskList(f.tasks)
		if err != nil {
			return nil, err
		}
		if f.logSamples == "" {
			return eval.SuiteScores(ctx, m, tasks, f.dataDir, to)
		}
		files, err := eval.SuiteFiles(f.dataDir, tasks)
		if err != nil {
			return nil, err
		}
		var scores []eval.Score
		for _, task := range tasks {
			s, err := f.runTask(ctx, m, name, task, files[task], to)
			if err != nil {
				return nil, err
			}
			scores = append(scores, s...)
		}
		if avg, ok := eval.SuiteAverage(scores); ok {
			scores = append(scores, avg)
		}
		return scores, nil
	}
	if _, err := eval.LookupTask(f.task); err == nil && f.logSamples != "" {
		return f.runTask(ctx, m, name, f.task, f.data, to)
	}
	switch f.task {
	case "perplexity":
		return eval.PerplexityScores(ctx, m, f.data, eval.PerplexityOptions{Stride: f.stride, Limit: f.limit})
	case "humaneval":
		r, err := eval.HumanEvalScores(ctx, m, f.data, eval.HumanEvalOptions{
			Samples: f.samples, Temperature: f.temperature, TopP: f.topP, MaxNewTokens: f.maxNew,
			Timeout: f.timeout, MemoryMB: f.memoryMB, Limit: f.limit, Workers: f.workers, Seed: f.seed, Log: log,
		})
		f.isolation = r.Isolation
		return r.Scores, err
	case "cl":
		o := eval.CLOptions{Limit: f.limit, Mode: f.clMode, MaxNewTokens: f.maxNew}
		if f.chatMode || f.chatTemplate != "" {
			var err error
			if o.Chat, err = data.LoadChat(f.model, f.chatTemplate, m.Manifest(), m.Tokenizer(), "--chat"); err != nil {
				return nil, err
			}
		}
		return eval.CLScores(ctx, m, f.data, o)
	}
	return eval.TaskScores(ctx, m, f.task, f.data, to)
}

// runTask scores one multiple-choice task and adds its items, labelled
// with the model, to the --log-samples rows, written once scoring is done.
func (f *evalFlags) runTask(ctx context.Context, m *eval.Model, model, task, path string, to eval.TaskOptions) ([]eval.Score, error) {
	r, err := eval.RunTask(ctx, m, task, path, to)
	if err != nil {
		return nil, err
	}
	enc := json.NewEncoder(&f.sampleLog)
	for _, d := range r.Docs {
		row := map[string]any{"model": model, "task": task, "line": d.Line, "gold": d.Gold, "logliks": d.LogLiks, "greedy": d.Greedy, "acc": d.Acc}
		if !math.IsNaN(d.AccNorm) {
			row["acc_norm"] = d.AccNorm
		}
		if err := enc.Encode(row); err != nil {
			return nil, err
		}
	}
	return r.Scores, nil
}

// progressPrinter reports scoring progress on w: a line rewritten in place
// on a terminal, else a plain line at every tenth of the requests.
func progressPrinter(w io.Writer) func(done, total int) {
	f, ok := w.(*os.File)
	tty := false
	if ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	last := -1
	return func(done, total int) {
		pct := 100 * done / max(total, 1)
		switch {
		case tty:
			fmt.Fprintf(w, "\rscoring: %d/%d requests (%d%%)", done, total, pct)
			if done == total {
				fmt.Fprintln(w)
			}
		case pct/10 != last/10 || done == total:
			if pct != last {
				fmt.Fprintf(w, "scoring: %d/%d requests (%d%%)\n", done, total, pct)
			}
		}
		last = pct
		if done == total {
			last = -1
		}
	}
}

// evalReport is what `migu eval` prints.
type evalReport struct {
	Model  string       `json:"model"`
	Scores []eval.Score `json:"scores"`
	// Isolation names the sandbox level that ran HumanEval's programs.
	Isolation string      `json:"isolation,omitempty"`
	Seconds   float64     `json:"seconds"`
	Other     *evalReport `json:"compare,omitempty"`
	Diff      []eval.Diff `json:"diff,omitempty"`
}

func (r *evalReport) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if r.Other == nil {
		fmt.Fprintln(tw, "task\tmetric\tvalue\tstderr\tn")
		for _, s := range r.Scores {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", s.Task, s.Metric, num(s.Value), num(s.Stderr), s.N)
		}
		fmt.Fprintf(tw, "\n%s: %.1f s\n", r.Model, r.Seconds)
		if r.Isolation != "" {
			fmt.Fprintf(tw, "sandbox: %s\n", r.Isolation)
		}
		return tw.Flush()
	}
	fmt.Fprintf(tw, "base: %s (%.1f s)\nother: %s (%.1f s)\n\n", r.Model, r.Seconds, r.Other.Model, r.Other.Seconds)
	fmt.Fprintln(tw, "task\tmetric\tbase\tother\tdelta\tstderr\tn")
	for _, d := range r.Diff {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", d.Task, d.Metric, num(d.Base), num(d.Other), signed(d.Delta), num(d.Stderr), d.N)
	}
	return tw.Flush()
}

func num(x float64) string {
	if math.IsNaN(x) {
		return "N/A"
	}
	return fmt.Sprintf("%.4f", x)
}

func signed(x float64) string {
	if math.IsNaN(x) {
		return "N/A"
	}
	return fmt.Sprintf("%+.4f", x)
}
