package continual

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/identity"
	"github.com/migu-ml/migu/internal/rundir"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
	"github.com/migu-ml/migu/train"
)

// Method names a way of training a sequence: full fine-tuning or an
// adapter kind, each with or without MIGU.
type Method struct {
	Name string `json:"name"` // e.g. full, full+migu, lora, dora+migu
	// Adapter is the adapter kind (adapters.Names), "" for full fine-tuning.
	Adapter string `json:"adapter,omitempty"`
	MIGU    bool   `json:"migu"`
}

// Base is the finetune method a task of m trains with.
func (m Method) Base() string {
	if m.Adapter == "" {
		return finetune.MethodFull
	}
	return m.Adapter
}

// AllMethods are the four methods a comparison runs.
const AllMethods = "full,full+migu,lora,lora+migu"

// ParseMethods reads a comma-separated list of methods.
func ParseMethods(s string) ([]Method, error) {
	var out []Method
	seen := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		base, migu, _ := strings.Cut(name, "+")
		if !slices.Contains(finetune.Methods(), base) || (migu != "" && migu != "migu") {
			return nil, badinput.Errorf("unknown method %q (%s, each alone or +migu)", name, strings.Join(finetune.Methods(), ", "))
		}
		if seen[name] {
			return nil, badinput.Errorf("method %q is listed twice", name)
		}
		seen[name] = true
		m := Method{Name: name, MIGU: migu != ""}
		if base != finetune.MethodFull {
			m.Adapter = base
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, badinput.Errorf("no methods given (%s)", AllMethods)
	}
	return out, nil
}

// Options configure Run.
type Options struct {
	// Model is the starting model folder (from migu export); Out the run
	// folder.
	Model, Out string
	// Methods to compare (default: full).
	Methods []Method
	// Seeds each method runs with (default: Job.Seed). A seed draws the
	// training rows, orders the batches and initialises the adapter.
	Seeds []uint64
	// Score is eval.CLRank (default), eval.CLGenerate or eval.CLBoth.
	Score string
	// Job is the template of every task's training: hyperparameters, MIGU's
	// T and mode (Job.Train.T, taken as it is), the adapter settings, epochs,
	// batch size, max length, max steps, checkpointing. Model, Data, Out,
	// Method, Seed, Unmasked, InitAdapter and Resume are set per task.
	Job finetune.JobOptions
	// Resume continues an interrupted run in Out.
	Resume bool
	// EvalBatch is the evaluation batch size (0: eval's default).
	EvalBatch int
	// KeepModels keeps every task's model folder, training graph and
	// checkpoints; by default only what the next task needs survives.
	KeepModels bool
	// Progress receives a line per stage and the trainer's step lines.
	Progress io.Writer
}

// DefaultOptions are `migu continual`'s defaults: full fine-tuning scored
// by rank, each task trained with finetune.DefaultJobOptions except that
// only the checkpoint the next task needs is kept (Job.Keep 0: one, or
// all with KeepModels).
func DefaultOptions() Options {
	job := finetune.DefaultJobOptions()
	job.Keep = 0
	return Options{Score: eval.CLRank, Job: job}
}

// Check checks the ranges of o's numbers (the training template's as
// finetune.JobOptions.Check does) and the sample counts of seq, before
// anything is read or written.
func (o Options) Check(seq *Sequence) error {
	if o.EvalBatch < 0 {
		return badinput.Range("eval_batch_size", o.EvalBatch, "≥ 0 (0: 8)")
	}
	if seq != nil && seq.TrainSamples < 0 {
		return badinput.Range("train_samples", seq.TrainSamples, "≥ 0 (0: every row)")
	}
	if seq != nil && seq.TestSamples < 0 {
		return badinput.Range("test_samples", seq.TestSamples, "≥ 0 (0: every row)")
	}
	if seq != nil && seq.ValSamples < 0 {
		return badinput.Range("val_samples", seq.ValSamples, "≥ 0 (0: no validation split)")
	}
	if err := migu.CheckT(o.Job.Train.T); err != nil {
		return err
	}
	if err := o.Job.Check(); err != nil {
		return err
	}
	for _, m := range o.Methods {
		job := o.Job
		job.Method = m.Base()
		if err := job.Check(); err != nil {
			return err
		}
	}
	return nil
}

// RunFolder says what a run folder of `migu continual` is: not the model
// folder, and when not empty, one holding a continual run's state.
func RunFolder(model string) rundir.Options {
	return rundir.Options{Model: model, Markers: []string{StateFile, "data", ResultsFile, ReportFile, PlotsDir}}
}

// StateFile records the completed tasks of a run folder.
const StateFile = "state.json"

// state is what a resumed run needs to skip finished work.
type state struct {
	Format   int                  `json:"format"`
	Identity string               `json:"identity"`
	Base     map[string][]float64 `json:"base,omitempty"` // score → accuracy per task, before training
	// BaseItems are the per-item outcomes behind Base (Matrix.BaseItems).
	BaseItems map[string][]string  `json:"base_items,omitempty"`
	Runs      map[string]*runState `json:"runs"`
}

type runState struct {
	Method string      `json:"method"`
	Seed   uint64      `json:"seed"`
	Tasks  []taskState `json:"tasks"`
}

// taskState is one completed task of a run and the evaluation after it.
type taskState struct {
	Task      string  `json:"task"`
	Steps     int64   `json:"steps"`
	Resumed   int64   `json:"resumed_from,omitempty"`
	FirstLoss float64 `json:"first_loss"`
	LastLoss  float64 `json:"last_loss"`
	Seconds   float64 `json:"train_seconds"`
	Output    string  `json:"output"`
	// Examples and Truncated count the training examples and those cut
	// to the maximum length.
	Examples  int                  `json:"examples"`
	Truncated int                  `json:"truncated"`
	Eval      map[string][]float64 `json:"eval"` // score → accuracy per task
	// Items are the per-item outcomes behind Eval (Matrix.RItems).
	Items map[string][]string `json:"items,omitempty"`
	// Trained is set when this invocation trained (or finished) the task.
	Trained bool `json:"-"`
}

func runKey(m Method, seed uint64) string { return fmt.Sprintf("%s/seed-%d", m.Name, seed) }

// runner holds a Run in progress.
type runner struct {
	o      Options
	seq    *Sequence
	tasks  []taskData
	man    *modeldir.Manifest
	scores []string
	st     *state
	// testFiles are the sampled test files, per task; valFiles the
	// validation files (Sequence.ValSamples), nil without a validation split.
	testFiles, valFiles []string
	warnings            []string
	log                 io.Writer
	// chat is the chat template tasks train with (--template chat), so
	// that evaluation renders rows as training did; nil otherwise.
	chat *chat.Template
	// lock holds the run folder for the whole run.
	lock *rundir.Lock
	// follower is a data-parallel rank other than 0 (Options.Job.Train.Group):
	// it trains each task with rank 0 and writes nothing into the run
	// folder; dataRoot is where the task files go (the run folder, or a
	// follower's scratch folder).
	follower bool
	dataRoot string
}

// Run trains and evaluates seq with every method and seed of o, resuming
// when o.Resume is set, and writes results.json, report.md and the plots
// into o.Out. A cancelled context stops after checkpointing the task in
// progress; the report then has Stopped set and --resume continues. Bad
// input (sequence, files, options) is reported before any training. ONNX
// Runtime must be initialised.
func Run(ctx context.Context, seq *Sequence, o Options) (*Report, error) {
	r, err := newRunner(seq, o)
	if err != nil {
		return nil, err
	}
	defer r.lock.Release()
	stopped, err := r.run(ctx)
	if err != nil || r.follower {
		if r.follower {
			os.RemoveAll(r.dataRoot)
		}
		return &Report{Stopped: stopped}, err
	}
	rep, err := r.report(stopped)
	if err != nil {
		return nil, err
	}
	if stopped {
		return rep, nil
	}
	return rep, rep.write()
}

func newRunner(seq *Sequence, o Options) (*runner, error) {
	if o.Model == "" || o.Out == "" {
		return nil, badinput.Errorf("continual needs %v, %v and %v", badinput.Setting("model"), badinput.Setting("sequence"), badinput.Setting("out"))
	}
	if len(o.Methods) == 0 {
		o.Methods = []Method{{Name: finetune.MethodFull}}
	}
	if len(o.Seeds) == 0 {
		o.Seeds = []uint64{o.Job.Seed}
	}
	seen := map[uint64]bool{}
	for _, s := range o.Seeds {
		if seen[s] {
			return nil, badinput.Errorf("seed %d is listed twice", s)
		}
		seen[s] = true
	}
	if err := eval.CheckCLMode(o.Score); err != nil {
		return nil, err
	}
	if err := o.Check(seq); err != nil {
		return nil, err
	}
	man, err := modeldir.Check(o.Model)
	if err != nil {
		return nil, err
	}
	for _, m := range o.Methods {
		if m.Adapter != "" {
			a, err := adapters.New(m.Adapter, o.Job.Adapter)
			if err != nil {
				return nil, err
			}
			if _, err := a.Layers(man); err != nil {
				return nil, err
			}
		}
	}
	if err := rundir.Check(o.Out, RunFolder(o.Model)); err != nil {
		return nil, err
	}
	if man.Objective != "clm" && man.Objective != "seq2seq" {
		return nil, badinput.Errorf("%s: a %s model (objective %s) cannot answer with a label; continual learning runs causal (llama) and seq2seq (t5) models", o.Model, man.Architecture, man.Objective)
	}
	g := o.Job.Train.Group
	r := &runner{o: o, seq: seq, man: man, log: o.Progress, follower: g != nil && g.Rank() > 0, dataRoot: o.Out}
	if r.follower {
		r.log, r.o.Progress, r.o.Job.Progress = nil, nil, nil
	}
	tok, err := tokenizer.Load(filepath.Join(o.Model, modeldir.TokenizerFile))
	if err != nil {
		return nil, err
	}
	job := o.Job
	job.Model = o.Model
	if _, r.chat, _, err = finetune.RecordFormat(job, data.Classification, man, tok); err != nil {
		return nil, err
	}
	if r.log == nil {
		r.log = io.Discard
	}
	switch o.Score {
	case "", eval.CLRank:
		r.scores = []string{eval.CLRank}
	case eval.CLGenerate:
		r.scores = []string{eval.CLGenerate}
	default:
		r.scores = []string{eval.CLRank, eval.CLGenerate}
	}
	if seq.ValSamples > 0 {
		for _, s := range r.scores {
			r.scores = append(r.scores, ValidationPrefix+s)
		}
	}
	r.tasks, r.warnings, err = load(seq)
	if err != nil {
		return nil, err
	}
	for _, w := range r.warnings {
		fmt.Fprintln(r.log, "warning:", w)
	}
	if r.follower {
		return r, r.followState()
	}
	if r.lock, err = rundir.Open(o.Out, RunFolder(o.Model)); err != nil {
		return nil, err
	}
	if err := r.openState(); err != nil {
		r.lock.Release()
		return nil, err
	}
	return r, nil
}

// identity hashes what must not change between a run and its resumption.
func (r *runner) identity() (string, error) {
	job := r.o.Job
	job.Progress, job.MaxSteps, job.SaveEvery, job.Keep, job.Resume = nil, 0, 0, 0, false
	parts := []any{r.o.Model, r.seq.Tasks, r.seq.TrainSamples, r.seq.TestSamples, r.seq.SampleSeed,
		r.o.Methods, r.o.Seeds, r.scores, job, r.o.Job.MaxSteps}
	if r.seq.ValSamples > 0 { // runs without a validation split keep their identity
		parts = append(parts, r.seq.ValSamples)
	}
	return identity.Of(parts...)
}

// openState creates the run folder and its state, or reads it to resume.
func (r *runner) openState() error {
	id, err := r.identity()
	if err != nil {
		return err
	}
	path := filepath.Join(r.o.Out, StateFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil && !r.o.Resume:
		return badinput.Errorf("%s already holds a continual run (%s); pass %v to continue it, or choose another %v", r.o.Out, StateFile, badinput.Setting("resume"), badinput.Setting("out"))
	case err == nil:
		var st state
		if err := json.Unmarshal(raw, &st); err != nil {
			return badinput.Errorf("%s: damaged: %v; remove the run folder to start again", path, err)
		}
		if st.Identity != id {
			return badinput.Errorf("%s: %v with another model, sequence, method, seed or training setting than the run in that folder; use the same settings, or another %v", r.o.Out, badinput.Setting("resume"), badinput.Setting("out"))
		}
		if st.Runs == nil {
			st.Runs = map[string]*runState{}
		}
		r.st = &st
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(r.o.Out, 0o755); err != nil {
			return err
		}
		r.st = &state{Format: 1, Identity: id, Runs: map[string]*runState{}}
		if err := r.saveState(); err != nil {
			return err
		}
	default:
		return err
	}
	return nil
}

// followState sets a follower up: the state rank 0 resumes from (read
// before rank 0 trains again, which needs this rank too), or a fresh one,
// and a scratch folder for the task files.
func (r *runner) followState() error {
	r.st = &state{Format: 1, Runs: map[string]*runState{}}
	if r.o.Resume {
		if raw, err := os.ReadFile(filepath.Join(r.o.Out, StateFile)); err == nil {
			if err := json.Unmarshal(raw, r.st); err != nil {
				return badinput.Errorf("%s: damaged: %v", filepath.Join(r.o.Out, StateFile), err)
			}
			if r.st.Runs == nil {
				r.st.Runs = map[string]*runState{}
			}
		}
	}
	var err error
	r.dataRoot, err = os.MkdirTemp("", "migu-rank-*")
	return err
}

func (r *runner) saveState() error {
	if r.follower {
		return nil
	}
	raw, err := json.MarshalIndent(r.st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(r.o.Out, StateFile), append(raw, '\n'))
}

// taskDir names a task's files: NN-name.
func taskDir(i int, t Task) string {
	return fmt.Sprintf("%02d-%s", i+1, strings.Map(func(c rune) rune {
		if c == '/' || c == '\\' || c == ' ' {
			return '_'
		}
		return c
	}, t.Name))
}

// runDir is the folder of one method and seed.
func (r *runner) runDir(m Method, seed uint64) string {
	return filepath.Join(r.o.Out, m.Name, fmt.Sprintf("seed-%d", seed))
}

// trainFile writes (once) the training rows of task i drawn for a seed.
func (r *runner) trainFile(i int, seed uint64) (string, error) {
	t := r.tasks[i]
	ds := t.train.Sample(samples(t.TrainSamples, r.seq.TrainSamples), seed)
	root := filepath.Join(r.dataRoot, "data", fmt.Sprintf("seed-%d", seed), taskDir(i, t.Task))
	return writeRows(root, t.Train, "train.json", ds, t.labels)
}

// testFile writes (once) the test rows of task i, the same for every
// method and seed, in folders named like the training file's (so that
// evaluation builds the training prompt); its labels.json adds test-only
// labels after the training labels so the file reads.
func (r *runner) testFile(i int) (string, error) {
	t := r.tasks[i]
	return r.evalFile(i, "test", t.test.Sample(samples(t.TestSamples, r.seq.TestSamples), r.seq.SampleSeed))
}

// valFile writes (once) the validation rows of task i, held out of its
// training file.
func (r *runner) valFile(i int) (string, error) {
	return r.evalFile(i, "validation", r.tasks[i].val)
}

// evalFile writes rows of task i that evaluation scores as
// data/SPLIT/NN-name/SPLIT.json.
func (r *runner) evalFile(i int, split string, ds *data.Dataset) (string, error) {
	t := r.tasks[i]
	labels := append([]string(nil), t.labels...)
	have := map[string]bool{}
	for _, l := range labels {
		have[l] = true
	}
	for _, rec := range ds.Records {
		if !have[rec.Label] {
			have[rec.Label] = true
			labels = append(labels, rec.Label)
		}
	}
	root := filepath.Join(r.o.Out, "data", split, taskDir(i, t.Task))
	// Under the training file's folder names, which the prompt is built from.
	return writeRows(root, t.Train, split+".json", ds, labels)
}

func (r *runner) run(ctx context.Context) (bool, error) {
	for i := range r.tasks {
		if r.follower {
			break // rank 0 evaluates
		}
		p, err := r.testFile(i)
		if err != nil {
			return false, err
		}
		r.testFiles = append(r.testFiles, p)
		if r.tasks[i].val != nil {
			if p, err = r.valFile(i); err != nil {
				return false, err
			}
			r.valFiles = append(r.valFiles, p)
		}
	}
	if r.st.Base == nil && !r.follower {
		fmt.Fprintf(r.log, "evaluating the starting model on %d task(s)\n", len(r.tasks))
		base, items, err := r.evaluate(ctx, r.o.Model, "")
		if err != nil && ctx.Err() == nil {
			return false, err
		}
		if err == nil {
			r.st.Base, r.st.BaseItems = base, items
			if err := r.saveState(); err != nil {
				return false, err
			}
		}
	}
	if stop, err := r.stopping(ctx); stop || err != nil {
		return stop, err
	}
	for _, m := range r.o.Methods {
		for _, seed := range r.o.Seeds {
			stopped, err := r.runOne(ctx, m, seed)
			if err != nil || stopped {
				return stopped, err
			}
		}
	}
	return false, nil
}

// runOne trains the tasks of one method and seed that are not done yet.
func (r *runner) runOne(ctx context.Context, m Method, seed uint64) (bool, error) {
	key := runKey(m, seed)
	rs := r.st.Runs[key]
	if rs == nil {
		rs = &runState{Method: m.Name, Seed: seed}
		r.st.Runs[key] = rs
	}
	dir := r.runDir(m, seed)
	for i, t := range r.tasks {
		if i < len(rs.Tasks) {
			continue // trained and evaluated before
		}
		if r.o.Job.Train.Group == nil && ctx.Err() != nil { // a group agrees on stopping after each task
			return true, nil
		}
		fmt.Fprintf(r.log, "[%s seed %d] task %d/%d %s: training\n", m.Name, seed, i+1, len(r.tasks), t.Name)
		data, err := r.trainFile(i, seed)
		if err != nil {
			return false, err
		}
		job := r.o.Job
		job.Data, job.Out, job.Seed = data, filepath.Join(dir, taskDir(i, t.Task)), seed
		job.Model, job.Method, job.InitAdapter = r.o.Model, m.Base(), ""
		if i > 0 {
			prev := rs.Tasks[i-1].Output
			if m.Adapter != "" {
				job.InitAdapter = prev
			} else {
				job.Model = prev
			}
		}
		job.Train.UseMIGU = m.MIGU
		job.Unmasked = m.MIGU && i == 0
		job.Resume = r.o.Resume
		if job.Keep == 0 && !r.o.KeepModels {
			job.Keep = 1
		}
		if job.Progress == nil {
			job.Progress = r.o.Progress
		}
		var rec *train.MaskRecord
		if m.MIGU {
			rec = train.NewMaskRecord()
			job.MaskRecord = rec
		}
		start := time.Now()
		res, err := r.trainTask(ctx, job)
		if err != nil {
			return false, fmt.Errorf("%s, seed %d, task %s: %w", m.Name, seed, t.Name, err)
		}
		if res.Stopped {
			fmt.Fprintf(r.log, "[%s seed %d] task %s stopped at step %d; resume the run to continue\n", m.Name, seed, t.Name, res.Steps)
			return true, r.saveState()
		}
		if r.follower {
			// Rank 0 records, evaluates and cleans up; the output it wrote
			// starts this rank's next task.
			rs.Tasks = append(rs.Tasks, taskState{Task: t.Name, Output: res.Output, Trained: true})
			if stop, err := r.stopping(ctx); stop || err != nil {
				return stop, err
			}
			continue
		}
		if rec != nil && rec.Steps > 0 {
			if err := os.MkdirAll(filepath.Join(dir, "masks"), 0o755); err != nil {
				return false, err
			}
			if err := rec.Save(filepath.Join(dir, "masks", taskDir(i, t.Task)+".json")); err != nil {
				return false, err
			}
		}
		fmt.Fprintf(r.log, "[%s seed %d] task %d/%d %s: %d steps, loss %.4f → %.4f; evaluating\n", m.Name, seed, i+1, len(r.tasks), t.Name, res.Steps, res.FirstLoss, res.LastLoss)
		if res.Data.Truncated > 0 {
			fmt.Fprintf(r.log, "warning: task %s: %d of %d training examples were cut to the maximum length, the sentence first; raise the max_len setting\n", t.Name, res.Data.Truncated, res.Data.Examples)
		}
		modelDir, adapter := res.Output, ""
		if m.Adapter != "" {
			modelDir, adapter = r.o.Model, res.Output
		}
		acc, items, err := r.evaluate(ctx, modelDir, adapter)
		switch {
		case err != nil && ctx.Err() == nil:
			return false, err
		case err == nil:
			rs.Tasks = append(rs.Tasks, taskState{Task: t.Name, Steps: res.Steps, Resumed: res.Resumed, FirstLoss: res.FirstLoss,
				LastLoss: res.LastLoss, Seconds: time.Since(start).Seconds(), Output: res.Output, Examples: res.Data.Examples,
				Truncated: res.Data.Truncated, Eval: acc, Items: items, Trained: true})
			if err := r.saveState(); err != nil {
				return false, err
			}
			r.cleanup(job.Out, rs, i, m)
		}
		if stop, err := r.stopping(ctx); stop || err != nil {
			return stop, errors.Join(err, r.saveState())
		}
	}
	return false, nil
}

// stopping reports whether the run stops after this task: the context is
// cancelled, here or on any rank of a data-parallel group. Every rank asks
// after each task (and after the starting model's evaluation), so all stop
// at the same point.
func (r *runner) stopping(ctx context.Context) (bool, error) {
	return train.Stopping(ctx, r.o.Job.Train.Group)
}

// trainTask runs one task's job, or reads the result of a job that
// finished before an interruption (its output exists), so that a task is
// never trained twice.
func (r *runner) trainTask(ctx context.Context, job finetune.JobOptions) (*finetune.JobResult, error) {
	if r.o.Resume {
		if raw, err := os.ReadFile(filepath.Join(job.Out, "run.json")); err == nil {
			var res finetune.JobResult
			if json.Unmarshal(raw, &res) == nil && !res.Stopped && res.Output != "" {
				if _, err := os.Stat(res.Output); err == nil {
					return &res, nil
				}
			}
		}
	}
	return finetune.RunJob(ctx, job)
}

// cleanup removes what later tasks no longer need: the task's checkpoints
// and training graph, and (full fine-tuning) the previous task's model.
func (r *runner) cleanup(taskOut string, rs *runState, i int, m Method) {
	if r.o.KeepModels {
		return
	}
	os.RemoveAll(filepath.Join(taskOut, train.CheckpointsDir))
	os.Remove(filepath.Join(taskOut, train.GraphFile))
	os.Remove(filepath.Join(taskOut, train.GraphData))
	if m.Adapter == "" && i > 0 {
		os.RemoveAll(rs.Tasks[i-1].Output)
	}
}

// evaluate scores a model (with an adapter) on every task's test rows and,
// with a validation split, its validation rows (scores ValidationPrefix+s):
// score → accuracy per task, and score → outcomes per task ('1' right,
// '0' wrong, one byte per row).
func (r *runner) evaluate(ctx context.Context, modelDir, adapter string) (map[string][]float64, map[string][]string, error) {
	m, err := eval.Open(modelDir, eval.Options{Adapter: adapter, Threads: r.o.Job.Train.Threads, BatchSize: r.o.EvalBatch})
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	out, items := map[string][]float64{}, map[string][]string{}
	for i, t := range r.tasks {
		splits := map[string]string{"": r.testFiles[i]}
		if r.valFiles != nil {
			splits[ValidationPrefix] = r.valFiles[i]
		}
		for prefix, file := range splits {
			ds, err := data.Read(file, data.ReadOptions{Kind: data.Classification, MaxLineBytes: r.o.Job.MaxLineBytes})
			if err != nil {
				return nil, nil, err
			}
			train := filepath.Join(filepath.Dir(file), "train.json") // stands for the prompt's folders
			prompt := data.CLPromptFor(train, t.labels)
			res, err := eval.CLEvaluate(ctx, m, ds, eval.CLOptions{Labels: t.labels, Prompt: &prompt, Mode: r.o.Score, MaxLen: r.o.Job.MaxLen, Chat: r.chat})
			if err != nil {
				return nil, nil, fmt.Errorf("evaluating task %s: %w", t.Name, err)
			}
			for _, s := range r.scores {
				base, ok := strings.CutPrefix(s, ValidationPrefix)
				if ok != (prefix == ValidationPrefix) {
					continue
				}
				v := res.RankAccuracy()
				if base == eval.CLGenerate {
					v = res.ExactAccuracy()
				}
				if math.IsNaN(v) {
					v = 0
				}
				out[s] = append(out[s], v)
				items[s] = append(items[s], outcomeText(res.Outcomes(base)))
			}
		}
	}
	return out, items, nil
}

// outcomeText writes per-item outcomes (1 right, 0 wrong) as a string of
// '1' and '0'.
func outcomeText(xs []float64) string {
	b := make([]byte, len(xs))
	for i, x := range xs {
		b[i] = '0'
		if x == 1 {
			b[i] = '1'
		}
	}
	return string(b)
}
