// Command real runs the MIGU paper's two experiments on a real pretrained
// model (SmolLM2-135M-Instruct from `make smollm2` by default) through the
// `migu` CLI, and reports them with their uncertainty:
//
//   - real code: continual instruction tuning on code. The model is
//     fine-tuned on code instruction records from the Python standard
//     library (`migu data code-instructions`, in the model's chat format)
//     with each method (full, full+migu, lora, lora+migu) and seed; before
//     and after, it is scored on HellaSwag, ARC-Challenge and Winogrande
//     (fixed first-N subsets, lm-eval's rules; what it forgets), on the
//     perplexity of held-out code and on HumanEval pass@1 (what it learns).
//   - real cl: the CL benchmark (order 1 by default) as instruction
//     following in the chat format, the four methods, through `migu
//     continual`: AA, BWT, forgetting, the accuracy heatmaps and MIGU's
//     mask overlap.
//   - real report: rewrites a results file's Markdown and plots from its
//     JSON (after editing, or for a fixture).
//
// Every score carries lm-eval's standard error, every difference between
// two methods a paired bootstrap interval over the items and a paired sign
// test (internal/stats). Sizes, seeds, learning rates and T are flags (or
// REAL_* variables, for `make real`), so the same driver runs the small
// sets this machine affords and the full sets elsewhere; a work folder
// keeps every finished training run and measurement, so a stopped run
// continues where it stopped.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/continual"
)

// common are the flags both experiments take.
type common struct {
	migu, model, shared, work, out, tag string
	methods                             []string
	seeds                               []uint64
	lrFull, lrLoRA, T                   float64
	epochs, batch, maxLen, threads      int
	loraR                               int
	loraAlpha                           float64
	loraTargets                         string
	resamples                           int
	recompute                           string
}

func (c *common) register(fs *flag.FlagSet, exp string, maxLen int) (methods, seeds *string) {
	fs.StringVar(&c.migu, "migu", bench.EnvOr("REAL_MIGU", "bin/migu"), "the migu binary")
	fs.StringVar(&c.model, "model", bench.EnvOr("REAL_MODEL", filepath.Join(".deps", "models", "smollm2")), "starting model folder (make smollm2)")
	fs.StringVar(&c.shared, "shared", bench.EnvOr("REAL_SHARED", filepath.Join("..", "shared", "data")), "the shared data folder (eval/, cl_benchmark/)")
	fs.StringVar(&c.work, "work", bench.EnvOr("REAL_WORK", filepath.Join("runs", "real-"+exp)), "work folder: data, trained models, per-model measurements (kept; a rerun reuses what is finished)")
	fs.StringVar(&c.out, "out", bench.EnvOr("REAL_OUT", filepath.Join("benchmarks", "real")), "folder of RESULTS-"+exp+"[-TAG].md, .json and plots/")
	fs.StringVar(&c.tag, "tag", bench.EnvOr("REAL_TAG", ""), "suffix of the results files, for a variant (another lr or T)")
	methods = fs.String("methods", bench.EnvOr("REAL_METHODS", continual.AllMethods), "methods: full, full+migu, lora, lora+migu")
	seeds = fs.String("seeds", bench.EnvOr("REAL_SEEDS", "1"), "comma-separated seeds (one training run per method and seed)")
	fs.Float64Var(&c.lrFull, "lr-full", envFloat("REAL_LR_FULL", 1e-4), "learning rate of full fine-tuning (the paper's 1e-4)")
	fs.Float64Var(&c.lrLoRA, "lr-lora", envFloat("REAL_LR_LORA", 1e-4), "learning rate of LoRA")
	fs.Float64Var(&c.T, "T", envFloat("REAL_T", 0.7), "MIGU's threshold T for the +migu methods")
	fs.IntVar(&c.epochs, "epochs", bench.EnvInt("REAL_EPOCHS", 1), "epochs (per task)")
	fs.IntVar(&c.batch, "batch", bench.EnvInt("REAL_BATCH", 8), "examples per batch")
	fs.IntVar(&c.maxLen, "max-len", bench.EnvInt("REAL_MAX_LEN", maxLen), "longest sequence in tokens")
	fs.IntVar(&c.threads, "threads", bench.EnvInt("REAL_THREADS", runtime.NumCPU()), "ONNX Runtime threads")
	fs.IntVar(&c.loraR, "lora-r", 8, "LoRA rank")
	fs.Float64Var(&c.loraAlpha, "lora-alpha", 32, "LoRA alpha")
	fs.StringVar(&c.loraTargets, "lora-targets", "q,v", "LoRA targets")
	fs.IntVar(&c.resamples, "resamples", 2000, "bootstrap resamples per interval")
	fs.StringVar(&c.recompute, "recompute", bench.EnvOr("REAL_RECOMPUTE", "none"), "migu train/continual --recompute: none, or layers (less memory, about one more forward pass per step)")
	return methods, seeds
}

func (c *common) finish(methods, seeds string) error {
	ms, err := continual.ParseMethods(methods)
	if err != nil {
		return err
	}
	for _, m := range ms {
		c.methods = append(c.methods, m.Name)
	}
	for _, s := range bench.Split(seeds) {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("-seeds: %q is not a seed", s)
		}
		c.seeds = append(c.seeds, v)
	}
	if len(c.seeds) == 0 {
		return fmt.Errorf("-seeds is empty")
	}
	if c.recompute != "none" && c.recompute != "layers" {
		return fmt.Errorf("-recompute %q: none or layers", c.recompute)
	}
	if c.T <= 0 || c.T >= 1 {
		return fmt.Errorf("-T %g: it must be in (0, 1)", c.T)
	}
	return nil
}

// lr is the learning rate of a method.
func (c *common) lr(method string) float64 {
	if isLoRA(method) {
		return c.lrLoRA
	}
	return c.lrFull
}

// resultsBase is the path of the results files without extension.
func (c *common) resultsBase(exp string) string {
	name := "RESULTS-" + exp
	if c.tag != "" {
		name += "-" + c.tag
	}
	return filepath.Join(c.out, name)
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(bench.EnvOr(name, ""), 64); err == nil {
		return v
	}
	return def
}

const usage = `usage: real code|cl|report|table [flags]

  real code    continual instruction tuning on code (general benchmarks, code perplexity, HumanEval)
  real cl      the CL benchmark (order 1) with the four methods through migu continual
  real report  -results RESULTS-code.json: rewrite its Markdown and plots
  real table   -results A.json,B.json -out FILE.md: every CL run of several results files in one table

real CMD -h lists the flags.`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "code":
		var o *codeOptions
		if o, err = parseCode(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "real code:", err)
			os.Exit(2)
		}
		err = runCode(o)
	case "cl":
		var o *clOptions
		if o, err = parseCL(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "real cl:", err)
			os.Exit(2)
		}
		err = runCL(o)
	case "report":
		fs := flag.NewFlagSet("report", flag.ContinueOnError)
		path := fs.String("results", filepath.Join("benchmarks", "real", "RESULTS-code.json"), "results JSON of real code")
		if err = fs.Parse(os.Args[2:]); err != nil {
			os.Exit(2)
		}
		err = rewriteReport(*path)
	case "table":
		fs := flag.NewFlagSet("table", flag.ContinueOnError)
		paths := fs.String("results", "", "comma-separated real cl results JSON files")
		out := fs.String("out", filepath.Join("benchmarks", "real", "RESULTS-cl-all.md"), "Markdown file to write")
		if err = fs.Parse(os.Args[2:]); err != nil {
			os.Exit(2)
		}
		err = writeCLTable(bench.Split(*paths), *out)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "real:", err)
		os.Exit(1)
	}
}
