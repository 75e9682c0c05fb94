// Package demo is `migu demo`: the built-in default run a newcomer starts
// with. It needs no files. It generates a short sequence of small
// classification tasks, makes a small model with a tokenizer trained on
// generated text, exports it to ONNX, pre-trains it briefly, then trains
// the task sequence once per method — full fine-tuning and LoRA, each with
// and without MIGU — measuring after every task what the model still knows
// of every task, and prints the comparison: average accuracy, backward
// transfer and forgetting per method, with the report and plots it wrote.
// Every step runs the real code paths of `migu init`, `export`, `train`
// and `continual`. Given a model folder (Options.Model, `migu demo
// --model DIR`), it skips making a model and runs the same sequence on
// that one, such as the pretrained SmolLM2 of `make smollm2`.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/tokenizer"
	"github.com/migu-ml/migu/train"
)

// Options configure Run. Zero values take the defaults noted.
type Options struct {
	Out string // run folder; a previous demo there is replaced
	// Model is a model folder (from migu export) to run the sequence on
	// instead of making and pre-training a tiny one; Arch, Preset and
	// PretrainLines are then unused.
	Model  string
	Arch   string  // llama (default) or t5
	Preset string  // tiny (default) or small
	Seed   uint64  // tasks, tokenizer corpus, weights, data order
	T      float64 // MIGU threshold: fraction of features NOT updated (0.7)
	// Threads is ONNX Runtime's intra-op thread count (0: one per core).
	Threads int
	// Methods is the comparison (default full,full+migu,lora,lora+migu).
	Methods string
	// Tasks is how many generated tasks the sequence has (default 3).
	Tasks int
	// TrainSize and TestSize are examples per task (defaults 240 and 100).
	TrainSize, TestSize int
	// Epochs per task (default 5; 1 with Model).
	Epochs int
	// LR is the peak learning rate of the tasks (default 3e-3 for the
	// demo's own model; 1e-4, the MIGU paper's, with Model).
	LR float64
	// PretrainLines is how many generated sentences the brief
	// pre-training reads (default 3000; negative: none).
	PretrainLines int
	// Score is eval.CLRank (default), eval.CLGenerate or eval.CLBoth.
	Score string
	// Progress receives the engine's step lines (nil: none).
	Progress io.Writer
}

// Defaults of Options.
const (
	defaultMethods   = continual.AllMethods
	defaultTasks     = 3
	defaultTrain     = 240
	defaultTest      = 100
	defaultEpochs    = 5
	defaultPretrain  = 3000
	defaultVocab     = 1500
	defaultLR        = 3e-3
	modelLR          = 1e-4
	defaultBatchSize = 8
	defaultMaxLen    = 128
)

// marker identifies a folder made by the demo, so a rerun may replace it.
const marker = ".migu-demo"

// Result is what a demo run produced, for callers and tests.
type Result struct {
	Report *continual.Report
	// Model is the pre-trained starting model of the sequence.
	Model string
	// Seconds is the wall time of the whole demo.
	Seconds float64
}

func (o *Options) defaults() {
	if o.Arch == "" {
		o.Arch = "llama"
	}
	if o.Preset == "" {
		o.Preset = "tiny"
	}
	if o.T == 0 {
		o.T = 0.7
	}
	if o.Methods == "" {
		o.Methods = defaultMethods
	}
	if o.Tasks == 0 {
		o.Tasks = defaultTasks
	}
	if o.TrainSize == 0 {
		o.TrainSize = defaultTrain
	}
	if o.TestSize == 0 {
		o.TestSize = defaultTest
	}
	if o.Epochs == 0 {
		o.Epochs = defaultEpochs
		if o.Model != "" {
			o.Epochs = 1
		}
	}
	if o.LR == 0 {
		o.LR = defaultLR
		if o.Model != "" {
			o.LR = modelLR
		}
	}
	if o.PretrainLines == 0 {
		o.PretrainLines = defaultPretrain
	}
	if o.Score == "" {
		o.Score = eval.CLRank
	}
}

// Run performs the demo, printing its steps and the comparison to w.
// ONNX Runtime must be initialised.
func Run(w io.Writer, opt Options) (*Result, error) {
	begin := time.Now()
	opt.defaults()
	methods, err := continual.ParseMethods(opt.Methods)
	if err != nil {
		return nil, err
	}
	if opt.Arch != "llama" && opt.Arch != "t5" {
		return nil, fmt.Errorf("the demo trains a llama or t5 model (they answer with a label), not %q", opt.Arch)
	}
	var given *modeldir.Manifest
	if opt.Model != "" {
		if given, err = modeldir.ReadManifest(opt.Model); err != nil {
			return nil, badinput.Errorf("%v %s: %v", badinput.Setting("model"), opt.Model, err)
		}
		if inside(opt.Model, opt.Out) {
			return nil, badinput.Errorf("%v %s lies inside %v %s, which the demo empties first; choose another %[3]v", badinput.Setting("model"), opt.Model, badinput.Setting("out"), opt.Out)
		}
		if given.Objective != "clm" && given.Objective != "seq2seq" {
			return nil, badinput.Errorf("%v %s: the demo needs a model that answers with a label (a causal or seq2seq language model), not objective %q", badinput.Setting("model"), opt.Model, given.Objective)
		}
	}
	if opt.Tasks < 2 || opt.Tasks > len(data.SyntheticTasks()) {
		return nil, fmt.Errorf("the demo's sequence has 2 to %d tasks, not %d", len(data.SyntheticTasks()), opt.Tasks)
	}
	if err := prepare(opt.Out); err != nil {
		return nil, err
	}
	step := newSteps(w)

	names := data.SyntheticSequence(opt.Tasks)
	step.start("1. tasks: %d generated classification tasks, %d train / %d test examples each", len(names), opt.TrainSize, opt.TestSize)
	files, err := data.WriteSyntheticTasks(filepath.Join(opt.Out, "tasks"), names, data.SyntheticOptions{Train: opt.TrainSize, Test: opt.TestSize, Seed: opt.Seed})
	if err != nil {
		return nil, err
	}
	step.done("-> %s", filepath.Join(opt.Out, "tasks"))
	for i, f := range files {
		fmt.Fprintf(w, "   %d. %s\n", i+1, f.Task)
	}

	base, template := opt.Model, ""
	if given != nil {
		tpl, err := chat.Load(opt.Model, "")
		if err != nil {
			return nil, err
		}
		format := "the Alpaca prompt"
		if tpl != nil {
			template, format = finetune.FormatChat, "its chat template"
		}
		fmt.Fprintf(w, "2. model: %s, %d linear layers (%s), prompts in %s; steps 3 and 4 (export, pre-train) skipped\n",
			opt.Model, len(given.Linears), rolesLine(given), format)
	} else if base, err = makeModel(w, step, opt, files); err != nil {
		return nil, err
	}

	seq := continual.NewSequence("demo")
	for _, f := range files {
		seq.Tasks = append(seq.Tasks, continual.Task{Name: f.Task.Name, Train: f.Train, Test: f.Test})
	}
	runDir := filepath.Join(opt.Out, "continual")
	job := finetune.JobOptions{
		Epochs: opt.Epochs, BatchSize: defaultBatchSize, MaxLen: defaultMaxLen, Seed: opt.Seed, Template: template,
		Adapter: lora.Config{R: 8, Alpha: 32, Targets: []string{lora.AllLinear}}.Settings(),
		Train:   train.Config{GradAccum: 1, Optim: adamW(opt.LR), ClipNorm: 1, T: opt.T, Mode: migu.ModeGrad, Threads: opt.Threads},
	}
	step.start("5. continual: the %d tasks in order, once per method (%s); after each task every task is tested (%s accuracy)",
		len(names), opt.Methods, opt.Score)
	rep, err := continual.Run(context.Background(), seq, continual.Options{
		Model: base, Out: runDir, Methods: methods, Seeds: []uint64{opt.Seed}, Score: opt.Score, Progress: progress(w, opt.Progress),
		Job: job,
	})
	if err != nil {
		return nil, err
	}
	step.done("-> %s", runDir)

	fmt.Fprintf(w, "\n%s", table(rep))
	fmt.Fprintf(w, "\nAA: mean accuracy over the tasks after the last one. BWT: mean change of each\n"+
		"earlier task's accuracy from just after it was trained to the end (negative =\n"+
		"forgotten). Forgetting: mean drop from each task's best accuracy to its last.\n"+
		"MIGU (T = %.2f) updates only the %.0f%% of each layer's output features with the\n"+
		"largest outputs, the first task unmasked.\n", opt.T, 100*(1-opt.T))
	fmt.Fprintf(w, "\nReport: %s\nResults: %s\n", rep.ReportPath, rep.ResultsPath)
	if len(rep.Plots) > 0 {
		fmt.Fprintf(w, "Plots:\n")
		for _, p := range rep.Plots {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	secs := time.Since(begin).Seconds()
	fmt.Fprintf(w, "Everything is in %s (%.0f s).\n", opt.Out, secs)
	return &Result{Report: rep, Model: base, Seconds: secs}, nil
}

// makeModel is steps 2 to 4 of the demo's own model: a random-init
// checkpoint with a tokenizer trained on generated text, its export, and
// a brief pre-training; it returns the model folder the sequence starts
// from.
func makeModel(w io.Writer, step *steps, opt Options, files []data.SyntheticFiles) (string, error) {
	hf := filepath.Join(opt.Out, "hf")
	step.start("2. init: a random %s %s checkpoint, tokenizer trained on generated text", opt.Preset, opt.Arch)
	corpus, err := tokenizerCorpus(files, opt.Seed)
	if err != nil {
		return "", err
	}
	res, err := exporters.Init(hf, exporters.InitOptions{Arch: opt.Arch, Preset: opt.Preset, Seed: opt.Seed, VocabSize: defaultVocab, Corpus: corpus})
	if err != nil {
		return "", err
	}
	step.done("%d parameters, vocabulary %d -> %s", res.Parameters, res.VocabSize, hf)

	modelDir := filepath.Join(opt.Out, "model")
	step.start("3. export: Hugging Face checkpoint -> ONNX forward graph + migu.json")
	man, err := exporters.Export(hf, modelDir)
	if err != nil {
		return "", err
	}
	step.done("%d linear layers (%s), onnxruntime %s -> %s", len(man.Linears), rolesLine(man), ort.Version(), modelDir)

	base := modelDir
	if opt.PretrainLines > 0 && man.Objective == "clm" {
		text := filepath.Join(opt.Out, "pretrain.jsonl")
		if err := writeText(text, append(data.SyntheticText(opt.PretrainLines/2, opt.Seed+2), tokenizer.SampleCorpus(opt.PretrainLines-opt.PretrainLines/2, opt.Seed+3)...)); err != nil {
			return "", err
		}
		step.start("4. pre-train: every weight, next-token loss on %d generated sentences (migu train)", opt.PretrainLines)
		job, err := finetune.RunJob(context.Background(), finetune.JobOptions{
			Model: modelDir, Data: text, Out: filepath.Join(opt.Out, "pretrain"), Method: finetune.MethodFull,
			Epochs: 1, BatchSize: 32, MaxLen: 48, Seed: opt.Seed, Keep: 1,
			Train: train.Config{GradAccum: 1, Optim: adamW(3e-3), ClipNorm: 1, Threads: opt.Threads, Schedule: "cosine", Warmup: 5},
		})
		if err != nil {
			return "", err
		}
		base = job.Output
		step.done("%d steps: loss %.3f → %.3f -> %s", job.Steps, job.FirstLoss, job.LastLoss, base)
	} else {
		fmt.Fprintf(w, "4. pre-train: skipped (%s)\n", map[bool]string{true: "no pre-training lines asked for", false: "the demo pre-trains causal models only"}[opt.PretrainLines <= 0])
	}
	return base, nil
}

// progress is where the engine's lines go: all of them to verbose when
// set, else one indented line per trained task to w, so the long step shows
// it is moving.
func progress(w, verbose io.Writer) io.Writer {
	if verbose != nil {
		return verbose
	}
	return &taskLines{w: w}
}

// taskLines passes on the engine's "[method seed] task …: N steps …" lines.
type taskLines struct {
	w   io.Writer
	buf []byte
}

func (t *taskLines) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(t.buf[:i])
		t.buf = t.buf[i+1:]
		if strings.HasPrefix(line, "[") && strings.Contains(line, " steps, loss ") {
			fmt.Fprintf(t.w, "   %s\n", strings.TrimSuffix(line, "; evaluating"))
		}
	}
}

// tokenizerCorpus is the text the demo's tokenizer learns from: generic
// generated sentences, the tasks' vocabulary, and the tasks' prompts with
// their answers, so that prompts and labels take few tokens.
func tokenizerCorpus(files []data.SyntheticFiles, seed uint64) ([]string, error) {
	corpus := append(tokenizer.SampleCorpus(3000, seed), data.SyntheticText(3000, seed+1)...)
	for _, f := range files {
		ds, err := data.Read(f.Train, data.ReadOptions{})
		if err != nil {
			return nil, err
		}
		prompt := data.CLPromptFor(f.Train, ds.Labels)
		for _, r := range ds.Records {
			corpus = append(corpus, prompt.Format(r.Sentence), r.Label)
		}
	}
	return corpus, nil
}

// adamW is the optimizer of every demo step.
func adamW(lr float64) train.AdamWConfig {
	return train.AdamWConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

// table is the comparison per method: AA, BWT and forgetting (mean over
// seeds), and the final accuracy on each task, for the first score.
func table(rep *continual.Report) string {
	if len(rep.Scores) == 0 {
		return ""
	}
	score := rep.Scores[0]
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s %7s %7s %11s", "method", "AA", "BWT", "forgetting")
	for _, t := range rep.Tasks {
		fmt.Fprintf(&b, " %10s", trim(t, 10))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-11s %7s %7s %11s", "(start)", "", "", "")
	for _, s := range rep.Summary {
		if s.Score == score && len(s.Mean.Base) == len(rep.Tasks) {
			for _, v := range s.Mean.Base {
				fmt.Fprintf(&b, " %9.1f%%", 100*v)
			}
			break
		}
	}
	b.WriteString("\n")
	for _, s := range rep.Summary {
		if s.Score != score {
			continue
		}
		fmt.Fprintf(&b, "%-11s %6.1f%% %7s %11s", s.Method, 100*s.AA.Mean, pct(s.BWT), pct(s.Forgetting))
		if n := len(s.Mean.R); n > 0 {
			for _, v := range s.Mean.R[n-1] {
				fmt.Fprintf(&b, " %9.1f%%", 100*v)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "(%s accuracy; the task columns are after the last task)\n", score)
	return b.String()
}

func pct(s *continual.Stat) string {
	if s == nil || math.IsNaN(s.Mean) {
		return "–"
	}
	return fmt.Sprintf("%+.1f", 100*s.Mean)
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// writeText writes sentences as JSON lines of text records.
func writeText(path string, lines []string) error {
	var b strings.Builder
	for _, l := range lines {
		raw, err := json.Marshal(map[string]string{"text": l})
		if err != nil {
			return err
		}
		b.Write(raw)
		b.WriteByte('\n')
	}
	return atomicfile.WriteFile(path, []byte(b.String()))
}

// prepare empties a previous demo folder (only one the demo made) or
// creates a new one.
func prepare(dir string) error {
	if dir == "" {
		return errors.New("the demo needs an output folder")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return badinput.Errorf("%s exists and was not made by migu demo; choose another %v", dir, badinput.Setting("out"))
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, marker), nil, 0o644)
}

// inside reports whether path is dir or lies below it.
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func rolesLine(man *modeldir.Manifest) string {
	count := map[modeldir.Role]int{}
	for _, l := range man.Linears {
		count[l.Role]++
	}
	var parts []string
	for _, r := range modeldir.Roles {
		if count[r] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, count[r]))
		}
	}
	return strings.Join(parts, ", ")
}

// steps prints numbered steps with their wall time.
type steps struct {
	w     io.Writer
	begin time.Time
}

func newSteps(w io.Writer) *steps { return &steps{w: w} }

func (s *steps) start(format string, args ...any) {
	fmt.Fprintf(s.w, format+"\n", args...)
	s.begin = time.Now()
}

func (s *steps) done(format string, args ...any) {
	fmt.Fprintf(s.w, "   "+format+" [%.1fs]\n", append(args, time.Since(s.begin).Seconds())...)
}
