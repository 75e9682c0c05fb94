// Command scale is migu's memory-at-scale benchmark (`make scale`): it
// makes random-init checkpoints with TinyLlama-1.1B's and Llama-2-7B's
// shapes (`migu init --preset 1b|7b`, bfloat16), exports them keeping the
// frozen weights in bfloat16, and trains them with LoRA and full
// fine-tuning for a few steps through the `migu` CLI, side by side with
// PyTorch + PEFT on the same shapes (benchmarks/scale/torch_scale.py).
// Every export and training run is its own process, whose peak resident
// set size the kernel reports when it exits; the results, against the
// issue's memory targets, go to RESULTS.md and RESULTS.json.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
)

// options are the command line, with defaults from SCALE_* variables so
// that `make scale SCALE_SHAPES=1b` works.
type options struct {
	shapes, cases, sides []string
	// batch, seq, steps and recompute override every scenario's when set.
	batch, seq, steps int
	recompute         string
	threads           int
	migu, python      string
	work, out         string
	torchConfig       string
	// exportDType is `migu export --dtype`; "default" leaves the flag out.
	exportDType string
	// force runs scenarios that the memory check expects not to fit.
	force bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	var shapes, cases, sides string
	fs.StringVar(&shapes, "shapes", bench.EnvOr("SCALE_SHAPES", "1b,7b"), "model shapes: 1b (TinyLlama-1.1B), 7b (Llama-2-7B), small (a quick check of the driver)")
	fs.StringVar(&cases, "cases", bench.EnvOr("SCALE_CASES", "export,lora,full"), "what to measure: export, lora, full")
	fs.StringVar(&sides, "sides", bench.EnvOr("SCALE_SIDES", "migu,torch"), "migu, torch (PyTorch + PEFT)")
	fs.IntVar(&o.batch, "batch", bench.EnvInt("SCALE_BATCH", 0), "sequences per batch (0: the scenario's)")
	fs.IntVar(&o.seq, "seq", bench.EnvInt("SCALE_SEQ", 0), "tokens per sequence (0: the scenario's)")
	fs.IntVar(&o.steps, "steps", bench.EnvInt("SCALE_STEPS", 0), "optimizer steps per run, the first counted as warm-up (0: the scenario's)")
	fs.StringVar(&o.recompute, "recompute", bench.EnvOr("SCALE_RECOMPUTE", ""), "none or layers for every run (default: the scenario's)")
	fs.IntVar(&o.threads, "threads", bench.EnvInt("SCALE_THREADS", runtime.NumCPU()), "threads on both sides")
	fs.StringVar(&o.migu, "migu", bench.EnvOr("SCALE_MIGU", "bin/migu"), "the migu binary")
	fs.StringVar(&o.python, "python", bench.EnvOr("SCALE_PYTHON", ".venv/bin/python"), "Python with torch, transformers and peft")
	fs.StringVar(&o.work, "work", bench.EnvOr("SCALE_WORK", filepath.Join(os.TempDir(), "migu-scale")), "work folder, kept between runs: checkpoints are made once")
	fs.StringVar(&o.out, "out", bench.EnvOr("SCALE_OUT", filepath.Join("benchmarks", "scale", "RESULTS.md")), "results file (RESULTS.json beside it)")
	fs.StringVar(&o.torchConfig, "torch-config", bench.EnvOr("SCALE_TORCH_CONFIG", "OpenBLAS openmp, OMP_WAIT_POLICY=ACTIVE"), "PyTorch configuration: a substring of a benchmarks/perf candidate's name")
	fs.StringVar(&o.exportDType, "export-dtype", bench.EnvOr("SCALE_EXPORT_DTYPE", "keep"), "migu export --dtype (default: leave the flag out)")
	fs.BoolVar(&o.force, "force", bench.EnvOr("SCALE_FORCE", "") != "", "run scenarios the memory check expects not to fit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.shapes, o.cases, o.sides = bench.Split(shapes), bench.Split(cases), bench.Split(sides)
	for _, s := range o.shapes {
		if !slices.Contains(shapeNames, s) {
			return nil, fmt.Errorf("unknown shape %q (1b, 7b, small)", s)
		}
	}
	for _, c := range o.cases {
		if !slices.Contains([]string{"export", "lora", "full"}, c) {
			return nil, fmt.Errorf("unknown case %q (export, lora, full)", c)
		}
	}
	for _, s := range o.sides {
		if s != "migu" && s != "torch" {
			return nil, fmt.Errorf("unknown side %q (migu, torch)", s)
		}
	}
	if o.recompute != "" && o.recompute != "none" && o.recompute != "layers" {
		return nil, fmt.Errorf("unknown recompute %q (none, layers)", o.recompute)
	}
	return o, nil
}

// shapeNames are the shapes the benchmark knows, each a llama preset of
// `migu init`: 1b and 7b have TinyLlama-1.1B's and Llama-2-7B's shapes;
// small is for trying the driver out in a minute.
var shapeNames = []string{"1b", "7b", "small"}

// scenario is one measured thing: an export, or a training run of a method
// with a batch shape.
type scenario struct {
	Shape     string `json:"shape"`
	Case      string `json:"case"` // export, lora or full
	Batch     int    `json:"batch,omitempty"`
	Seq       int    `json:"seq,omitempty"`
	Steps     int    `json:"steps,omitempty"`
	Recompute string `json:"recompute,omitempty"` // none or layers
}

// defaultScenarios are the targets: export of both shapes; LoRA
// (q, v, r 8) with bfloat16 frozen weights, batch 4 × 128 on 1b (with and
// without layer recomputation) and 1 × 256 with it on 7b; full fine-tuning
// of 1b. Full fine-tuning
// of 7b (over 100 GB at 16 bytes a parameter) is not among them.
var defaultScenarios = []scenario{
	{Shape: "1b", Case: "export"},
	{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
	{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "layers"},
	{Shape: "1b", Case: "full", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
	{Shape: "7b", Case: "export"},
	{Shape: "7b", Case: "lora", Batch: 1, Seq: 256, Steps: 2, Recompute: "layers"},
	{Shape: "small", Case: "export"},
	{Shape: "small", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
	{Shape: "small", Case: "full", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
}

// scenarios picks the default scenarios of the chosen shapes and cases, in
// the order shapes are given, with the overrides applied (scenarios that
// the overrides make equal run once).
func (o *options) scenarios() []scenario {
	var out []scenario
	for _, sh := range o.shapes {
		for _, s := range defaultScenarios {
			if s.Shape != sh || !slices.Contains(o.cases, s.Case) {
				continue
			}
			if s.Case != "export" {
				if o.batch > 0 {
					s.Batch = o.batch
				}
				if o.seq > 0 {
					s.Seq = o.seq
				}
				if o.steps > 0 {
					s.Steps = o.steps
				}
				if o.recompute != "" {
					s.Recompute = o.recompute
				}
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	if err := drive(o); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}
