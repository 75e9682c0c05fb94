// Command evalbench is migu's evaluation benchmark (see RESULTS.md):
//
//  1. it scores the full HellaSwag, ARC-Challenge and Winogrande files of
//     ../shared/data/eval with tiny random models, as `migu eval` does, and
//     times each task;
//  2. it measures scoring throughput — tokens read by the model per second —
//     for the small presets (`migu init --preset small`) in migu (ONNX
//     Runtime) and in transformers (PyTorch eager, lm-eval's HFLM recipe:
//     right-padded batches sorted by length, log_softmax over the logits)
//     on the same tokenized requests, the same batch size and the same
//     thread count, in one run, and checks that both give the same
//     log-likelihoods.
//
// It writes RESULTS.md in the current folder (or -out). Run it from the
// repository root: go run ./benchmarks/eval (flags below).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"

	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/onnx/ort"
)

type options struct {
	data       string
	work       string
	out        string
	python     string
	fullArchs  string
	speedArchs string
	limit      int
	speedDocs  int
	batch      int
	threads    int
	repeats    int
}

func main() {
	var o options
	flag.StringVar(&o.data, "data", filepath.Join("..", "shared", "data", "eval"), "folder with the task files under their standard names")
	flag.StringVar(&o.work, "work", filepath.Join(os.TempDir(), "migu-evalbench"), "scratch folder for the models")
	flag.StringVar(&o.out, "out", filepath.Join("benchmarks", "eval", "RESULTS.md"), "results file to write")
	flag.StringVar(&o.python, "python", filepath.Join(".venv", "bin", "python"), "Python with torch and transformers")
	flag.StringVar(&o.fullArchs, "full", "llama", "architectures whose tiny model scores the full files (comma-separated; empty: skip)")
	flag.StringVar(&o.speedArchs, "speed", "llama,t5", "architectures whose small preset is timed against transformers (empty: skip)")
	flag.IntVar(&o.limit, "limit", 0, "rows per task file for the full scoring (0: all)")
	flag.IntVar(&o.speedDocs, "speed-docs", 48, "HellaSwag items (4 requests each) for the throughput comparison")
	flag.IntVar(&o.batch, "batch", 8, "batch size, both sides")
	flag.IntVar(&o.threads, "threads", 2, "intra-op threads, both sides")
	flag.IntVar(&o.repeats, "repeats", 3, "timed passes per side (the median is reported)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "evalbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Evaluation benchmark\n\nCommand (from the repository root):\n\n    go run ./benchmarks/eval %s\n\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&md, "Machine: %d logical CPUs (%s/%s), ONNX Runtime %s, %s; batch size %d, %d intra-op thread(s) on both sides. Date: %s.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, ort.Version(), runtime.Version(), o.batch, o.threads, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	for _, arch := range bench.Split(o.fullArchs) {
		if err := fullFiles(o, arch, &md); err != nil {
			return err
		}
	}
	if archs := bench.Split(o.speedArchs); len(archs) > 0 {
		fmt.Fprintf(&md, "## Scoring throughput, small presets: migu vs transformers\n\n")
		blas := "the system BLAS"
		if torchBLAS() != "" {
			blas = "OpenBLAS (pthreads, .deps/openblas-pthread from benchmarks/perf/openblas.sh) through LD_LIBRARY_PATH"
		}
		fmt.Fprintf(&md, "PyTorch runs with %s, torch.set_num_threads(%d).\n\n", blas, o.threads)
		fmt.Fprintf(&md, "The first %d HellaSwag items (%d requests), tokenized once by migu; both sides score the same token ids in the same length-sorted batches of %d. Tokens/s counts the tokens the model reads (context + continuation − 1 per request, no padding). Median of %d passes after one warm-up pass.\n\n",
			o.speedDocs, 4*o.speedDocs, o.batch, o.repeats)
		fmt.Fprintf(&md, "| model | params | tokens | migu s | migu tokens/s | transformers s | transformers tokens/s | migu / transformers | max \\|Δ log-lik\\| |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, arch := range archs {
			if err := speed(o, arch, &md); err != nil {
				return err
			}
		}
		md.WriteString("\n")
	}
	if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(md.String())
	return nil
}

// model makes (once) the HF checkpoint and model folder of arch/preset.
func model(o options, arch, preset string) (hf, dir string, params int64, err error) {
	hf = filepath.Join(o.work, arch+"-"+preset+"-hf")
	dir = filepath.Join(o.work, arch+"-"+preset)
	if _, err := os.Stat(filepath.Join(dir, "migu.json")); err != nil {
		os.RemoveAll(hf)
		os.RemoveAll(dir)
		if _, err := exporters.Init(hf, exporters.InitOptions{Arch: arch, Preset: preset, Seed: 1}); err != nil {
			return "", "", 0, err
		}
		if _, err := exporters.Export(hf, dir); err != nil {
			return "", "", 0, err
		}
	}
	st, err := os.Stat(filepath.Join(dir, "model.onnx.data"))
	if err != nil {
		return "", "", 0, err
	}
	return hf, dir, st.Size() / 4, nil
}

// fullFiles scores every task file with the tiny model of arch.
func fullFiles(o options, arch string, md *strings.Builder) error {
	_, dir, params, err := model(o, arch, "tiny")
	if err != nil {
		return err
	}
	m, err := eval.Open(dir, eval.Options{BatchSize: o.batch, Threads: o.threads})
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(md, "## Full task files, tiny %s (%.2fM parameters, random weights)\n\n", arch, float64(params)/1e6)
	md.WriteString("| task | metric | value | stderr | n | requests | contexts cut | seconds | requests/s |\n|---|---|---|---|---|---|---|---|---|\n")
	var all []eval.Score
	for _, name := range eval.TaskNames() {
		task, err := eval.LookupTask(name)
		if err != nil {
			return err
		}
		path := filepath.Join(o.data, task.File)
		start := time.Now()
		r, err := eval.RunTask(context.Background(), m, name, path, eval.TaskOptions{Limit: o.limit, Log: os.Stderr})
		if err != nil {
			return err
		}
		sec := time.Since(start).Seconds()
		for _, s := range r.Scores {
			fmt.Fprintf(md, "| %s | %s | %.4f | %.4f | %d | %d | %d | %.1f | %.0f |\n", s.Task, s.Metric, s.Value, s.Stderr, s.N, r.Requests, r.Truncated, sec, float64(r.Requests)/sec)
		}
		all = append(all, r.Scores...)
	}
	if avg, ok := eval.SuiteAverage(all); ok {
		fmt.Fprintf(md, "| suite | average | %.4f | %.4f | %d tasks | | | | |\n", avg.Value, avg.Stderr, avg.N)
	}
	md.WriteString("\nRandom weights score near chance (0.25 for HellaSwag, about 0.25 for ARC-Challenge, 0.5 for Winogrande): the point is that the whole files go through and how long they take.\n\n")
	return nil
}

// speed times the small preset of arch in migu and in transformers.
func speed(o options, arch string, md *strings.Builder) error {
	hf, dir, params, err := model(o, arch, "small")
	if err != nil {
		return err
	}
	m, err := eval.Open(dir, eval.Options{BatchSize: o.batch, Threads: o.threads})
	if err != nil {
		return err
	}
	defer m.Close()
	hellaswag, err := eval.LookupTask("hellaswag")
	if err != nil {
		return err
	}
	docs, err := hellaswag.ReadDocs(filepath.Join(o.data, hellaswag.File))
	if err != nil {
		return err
	}
	var reqs []eval.Request
	for _, d := range docs[:min(o.speedDocs, len(docs))] {
		reqs = append(reqs, d.Requests("")...)
	}
	pairs := make([][2][]int, len(reqs))
	tokens := 0
	for i, r := range reqs {
		c, k, err := m.EncodePair(r.Context, r.Continuation)
		if err != nil {
			return err
		}
		pairs[i] = [2][]int{c, k}
		if m.Seq2Seq() {
			tokens += len(c) + len(k)
		} else {
			tokens += len(c) + len(k) - 1
		}
	}
	ctx := context.Background()
	var res []eval.Result
	var times []float64
	for i := range o.repeats + 1 {
		start := time.Now()
		if res, err = m.LogLikelihood(ctx, reqs); err != nil {
			return err
		}
		if i > 0 {
			times = append(times, time.Since(start).Seconds())
		}
	}
	goSec := bench.Median(times)
	torch, err := torchScore(o, hf, m.Seq2Seq(), pairs)
	if err != nil {
		return err
	}
	maxDiff := 0.0
	for i, r := range res {
		maxDiff = math.Max(maxDiff, math.Abs(r.LogProb-torch.LogLiks[i]))
	}
	fmt.Fprintf(md, "| %s small | %.1fM | %d | %.2f | %.0f | %.2f | %.0f | %.2f× | %.1e |\n", arch, float64(params)/1e6, tokens,
		goSec, float64(tokens)/goSec, torch.Seconds, float64(tokens)/torch.Seconds, torch.Seconds/goSec, maxDiff)
	return nil
}

type torchResult struct {
	Seconds float64   `json:"seconds"`
	LogLiks []float64 `json:"logliks"`
}

// torchScore runs torch_score.py on the same token ids.
func torchScore(o options, hf string, seq2seq bool, pairs [][2][]int) (*torchResult, error) {
	spec := filepath.Join(o.work, "torch_spec.json")
	data, err := json.Marshal(map[string]any{"hf": hf, "seq2seq": seq2seq, "batch": o.batch, "threads": o.threads, "repeats": o.repeats, "pairs": pairs})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(spec, data, 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(o.python, filepath.Join("benchmarks", "eval", "torch_score.py"), spec)
	n := fmt.Sprint(o.threads)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS="+n, "OPENBLAS_NUM_THREADS="+n, "MKL_NUM_THREADS="+n, "TRANSFORMERS_OFFLINE=1", "HF_HUB_OFFLINE=1")
	if dir := torchBLAS(); dir != "" {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+dir)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("torch_score.py: %w", err)
	}
	var r torchResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("torch_score.py output: %w", err)
	}
	if len(r.LogLiks) != len(pairs) {
		return nil, fmt.Errorf("torch_score.py gave %d results for %d requests", len(r.LogLiks), len(pairs))
	}
	return &r, nil
}

// torchBLAS is the OpenBLAS (pthreads build) that benchmarks/perf/openblas.sh
// puts in .deps, given to PyTorch through LD_LIBRARY_PATH since Debian's
// torch otherwise runs on the slow reference BLAS; "" when absent.
func torchBLAS() string {
	dir, err := filepath.Abs(filepath.Join(".deps", "openblas-pthread"))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "libblas.so.3")); err != nil {
		return ""
	}
	return dir
}
