// Package finetune runs fine-tuning jobs as `migu train` describes them:
// read and encode the data, plan what to train (every parameter, or an
// adapter of a kind registered in package adapters, known here only by
// name), run the trainer with checkpoints, and write the trained model
// folder or the adapter.
package finetune

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/identity"
	"github.com/migu-ml/migu/internal/rundir"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/tokenizer"
	"github.com/migu-ml/migu/train"
)

// MethodFull trains every parameter; any other method names an adapter
// kind (adapters.Names).
const MethodFull = "full"

// JobOptions are what `migu train` asks for. Zero values are taken as
// they are (a zero batch size or LoRA rank is refused by Check, not
// replaced by a default): start from DefaultJobOptions.
type JobOptions struct {
	Model, Data, Out string
	Method           string // full, or an adapter kind such as lora
	// Adapter are the adapter's settings (adapters.Option names, e.g.
	// "lora-r"); settings of other kinds are ignored.
	Adapter      adapters.Options `json:"adapter"`
	Train        train.Config     `json:"train"`
	Epochs       int              `json:"epochs"`
	BatchSize    int              `json:"batch_size"`
	MaxLen       int              `json:"max_len"`
	Seed         uint64           `json:"seed"`
	Bucket       int              `json:"bucket"`
	SkipBadLines bool             `json:"skip_bad_lines"`
	// MaxLineBytes caps the length of a data file's lines (0:
	// data.DefaultMaxLineBytes); see data.ReadOptions.
	MaxLineBytes int `json:"max_line_bytes,omitempty"`
	// Template is how records become text: FormatChat, FormatAlpaca,
	// FormatPlain, or "" for chat when the data holds messages (or a
	// ChatTemplate is given) and alpaca otherwise. See RecordFormat.
	Template string `json:"template,omitempty"`
	// ChatTemplate is a Jinja file that replaces the model folder's chat
	// template.
	ChatTemplate string `json:"chat_template,omitempty"`
	// Unmasked trains without MIGU's mask (the first task of a sequence).
	Unmasked bool `json:"unmasked"`
	// MemoryLimit caps the planned memory (train.MemoryPlan): "" or "auto"
	// is the memory the machine has available, "off" plans without a cap,
	// and a size such as "20GB" or "512MB" sets it.
	MemoryLimit string `json:"-"`
	// InitAdapter starts an adapter run from a trained adapter folder of
	// the method's kind (its settings and layers replace Adapter's), so
	// that one adapter continues across the tasks of a sequence.
	InitAdapter string `json:"init_adapter,omitempty"`
	// MaskRecord, when set, sums MIGU's magnitudes over the run's steps.
	MaskRecord *train.MaskRecord `json:"-"`
	// MaxSteps, SaveEvery, Keep and Resume may change between a run and its
	// resumption; the rest may not.
	MaxSteps  int64 `json:"-"`
	SaveEvery int64 `json:"-"`
	Keep      int   `json:"-"`
	Resume    bool  `json:"-"`
	// Progress receives a line per step; Terminal redraws one line instead.
	Progress io.Writer `json:"-"`
	Terminal bool      `json:"-"`
}

// DefaultJobOptions are `migu train`'s defaults: full fine-tuning with
// train.DefaultConfig, every registered adapter kind's default settings, one
// epoch of micro-batches of 8, the model's maximum length, the newest 3
// checkpoints kept, memory capped at what the machine has available.
func DefaultJobOptions() JobOptions {
	return JobOptions{Method: MethodFull, Adapter: adapters.Defaults(), Train: train.DefaultConfig(), Epochs: 1, BatchSize: 8,
		Keep: 3, MemoryLimit: "auto"}
}

// Check checks the ranges of every number of o (and of the names that
// need no file), before anything is read or written; each error is one
// line naming the flag and what it accepts. An adapter's bounds that
// depend on the model (LoRA's rank) are checked by RunJob.
func (o JobOptions) Check() error {
	if err := o.Train.Check(); err != nil {
		return err
	}
	if err := (train.RunOptions{MaxSteps: o.MaxSteps, SaveEvery: o.SaveEvery, Keep: o.Keep}).Check(); err != nil {
		return err
	}
	switch {
	case o.Epochs < 0 || (o.Epochs == 0 && o.MaxSteps == 0):
		return badinput.Errorf("%v %v is outside its range: ≥ 1, or 0 with %v (as many passes as the steps take)", badinput.Setting("epochs"), o.Epochs, badinput.Setting("max_steps"))
	case o.BatchSize < 1:
		return badinput.Range("batch_size", o.BatchSize, "≥ 1")
	case o.MaxLen < 0:
		return badinput.Range("max_len", o.MaxLen, "≥ 0 (0: the model's limit or 512)")
	case o.Bucket < 0:
		return badinput.Range("bucket", o.Bucket, "≥ 0 (0: off)")
	}
	if o.Method != "" && o.Method != MethodFull {
		if _, err := adapters.Lookup(o.Method); err != nil {
			return badinput.Errorf("unknown %v %q (%s)", badinput.Setting("method"), o.Method, strings.Join(Methods(), ", "))
		}
		if o.InitAdapter == "" {
			if _, err := adapters.New(o.Method, o.Adapter); err != nil {
				return err
			}
		}
	}
	_, err := ParseMemoryLimit(o.MemoryLimit)
	return err
}

// Methods lists the methods a job accepts: full and the registered
// adapter kinds.
func Methods() []string {
	return append([]string{MethodFull}, adapters.Names()...)
}

// JobResult is run.json.
type JobResult struct {
	Method    string  `json:"method"`
	Steps     int64   `json:"steps"`
	Resumed   int64   `json:"resumed_from,omitempty"`
	FirstLoss float64 `json:"first_loss"`
	LastLoss  float64 `json:"last_loss"`
	Tokens    int     `json:"tokens"`
	// Format is how the records became text (FormatChat, …); empty for
	// text records.
	Format     string     `json:"format,omitempty"`
	Data       data.Stats `json:"data"`
	Stopped    bool       `json:"stopped,omitempty"`
	Checkpoint string     `json:"checkpoint"`
	// Output is the trained model folder (full) or adapter folder (lora).
	Output string `json:"output,omitempty"`
	// AlreadyFinished is set when --resume found the run finished: the
	// result is its run.json, and nothing was trained or written.
	AlreadyFinished bool `json:"-"`
}

// RunFolder says what a run folder of `migu train` is: not the model
// folder, and when not empty, one holding what a run writes.
func RunFolder(model string) rundir.Options {
	return rundir.Options{Model: model, Markers: []string{"run.json", train.MetricsFile, train.CheckpointsDir, train.GraphFile,
		train.ArtifactFile, "model", "adapter"}}
}

// RunJob trains a model folder on a data file into a run folder: builds
// the plan (all parameters, or a LoRA adapter), the training graph and the
// batches, trains with checkpoints, and on completion writes the trained
// model folder (run/model) or the adapter in PEFT's format (run/adapter)
// and run.json. A cancelled context checkpoints and stops.
func RunJob(ctx context.Context, o JobOptions) (*JobResult, error) {
	if o.Model == "" || o.Data == "" || o.Out == "" {
		return nil, badinput.Errorf("train needs %v, %v and %v", badinput.Setting("model"), badinput.Setting("data"), badinput.Setting("out"))
	}
	if err := o.Check(); err != nil {
		return nil, err
	}
	if _, err := train.BF16Library(o.Train); err != nil {
		return nil, err
	}
	if _, _, err := train.OneDNNRoles(o.Train, ""); err != nil {
		return nil, err
	}
	folder, err := modeldir.Open(o.Model)
	if err != nil {
		return nil, err
	}
	defer folder.Close()
	man := folder.Manifest
	if err := train.CheckRecompute(o.Train.Recompute, man); err != nil {
		return nil, err
	}
	var adapter adapters.Adapter
	if o.Method == "" {
		o.Method = MethodFull
	}
	if o.Method != MethodFull {
		if adapter, err = newAdapter(o); err != nil {
			return nil, err
		}
		if _, err := adapter.Layers(man); err != nil {
			return nil, err
		}
		kind, _ := adapters.Lookup(o.Method)
		o.Adapter = kind.Settle(o.Adapter)
	} else {
		o.Adapter = nil
	}
	// Everything is checked and read before the run folder is created.
	if err := rundir.Check(o.Out, RunFolder(o.Model)); err != nil {
		return nil, err
	}
	// A data-parallel group reads the global batches (every rank all of
	// them, in the same order) and each rank trains on its rows; the run's
	// identity is the global batch, so a run resumes with any ranks ×
	// --batch-size that make it.
	group := o.Train.Group
	follower := group != nil && group.Rank() > 0
	if group != nil {
		o.BatchSize *= group.Size()
	}
	loader, stats, format, err := loadData(o, man)
	if err != nil {
		return nil, err
	}
	var src train.Source = loader
	if group != nil {
		o.BatchSize /= group.Size()
		src = train.ShardSource{Source: loader, Rank: group.Rank(), Size: group.Size()}
	}
	m := folder.Model
	var plan *train.Plan
	if adapter == nil {
		plan, err = train.FullPlan(m, man)
	} else {
		plan, err = adapterPlan(m, man, adapter, o.Seed)
	}
	if err != nil {
		return nil, err
	}
	if o.Train.TotalSteps == 0 {
		o.Train.TotalSteps = o.MaxSteps
		if o.Train.TotalSteps == 0 {
			o.Train.TotalSteps = int64(o.Epochs * loader.BatchesPerEpoch() / o.Train.GradAccum)
		}
	}
	identity, err := identity.Of(man, globalBatch(o))
	if err != nil {
		return nil, err
	}
	cfg := o.Train
	if cfg.MemoryLimit, err = ParseMemoryLimit(o.MemoryLimit); err != nil {
		return nil, err
	}
	cfg.PlanBatch, cfg.PlanSeq = int64(o.BatchSize), int64(max(stats.Longest, 1))
	// Rank 0 alone writes the run folder; the other ranks build their
	// training graphs in a scratch folder of their own.
	dir := o.Out
	if follower {
		if dir, err = os.MkdirTemp("", "migu-rank-*"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Progress = nil
	} else {
		lock, err := rundir.Open(o.Out, RunFolder(o.Model))
		if err != nil {
			return nil, err
		}
		defer lock.Release()
	}
	if o.Resume {
		if done, err := finishedRun(o.Out, identity); done != nil || err != nil {
			return done, err
		}
	} else if latest, _, _, _ := train.LatestCheckpoint(o.Out); latest != "" {
		return nil, badinput.Errorf("%s already holds checkpoints; pass %v to continue that run, or choose another %v", o.Out, badinput.Setting("resume"), badinput.Setting("out"))
	}
	tr, err := train.NewTrainer(plan, dir, cfg)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	if o.Progress != nil {
		fmt.Fprintln(o.Progress, tr.Memory)
		if w := tr.PrecisionWarning(); w != "" {
			fmt.Fprintln(o.Progress, w)
		}
	}
	// The trainer holds its own copies of the parameters: unmap the model's
	// weights now rather than carry them through the run.
	m.Close()
	run, err := train.Run(ctx, tr, src, o.Out, train.RunOptions{MaxSteps: o.MaxSteps, SaveEvery: o.SaveEvery, Keep: o.Keep,
		Resume: o.Resume, Unmasked: o.Unmasked, MaskRecord: o.MaskRecord, Identity: identity, Progress: o.Progress, Terminal: o.Terminal,
		Follower: follower})
	if err != nil {
		return nil, err
	}
	res := &JobResult{Method: o.Method, Steps: tr.Step, Resumed: run.Resumed, FirstLoss: run.FirstLoss, LastLoss: run.LastLoss,
		Tokens: run.Tokens, Format: format, Data: stats, Stopped: run.Stopped, Checkpoint: run.Checkpoint}
	if !run.Stopped {
		res.Output = filepath.Join(o.Out, outputDir(o.Method))
	}
	if !follower {
		if err := writeOutputs(o, res, man, adapter, tr); err != nil {
			return nil, err
		}
	}
	if group != nil {
		// The other ranks return once rank 0 has written the outputs they
		// name (a continual run trains its next task from them).
		if err := group.SumFloat64([]float64{0}); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// outputDir is the run folder's entry a finished run of method writes.
func outputDir(method string) string {
	if method == MethodFull {
		return "model"
	}
	return "adapter"
}

// writeOutputs writes a finished run's trained model folder (full) or
// adapter at res.Output, then run.json.
func writeOutputs(o JobOptions, res *JobResult, man *modeldir.Manifest, adapter adapters.Adapter, tr *train.Trainer) error {
	if res.Output != "" {
		params := tr.Finish()
		var err error
		if adapter == nil {
			os.RemoveAll(res.Output) // a model of an earlier completion of this run
			err = modeldir.WriteTrained(o.Model, res.Output, params)
		} else {
			err = adapter.Save(res.Output, man, params)
		}
		if err != nil {
			return err
		}
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(o.Out, "run.json"), append(raw, '\n'))
}

// globalBatch is o as its identity sees it: a data-parallel run's
// --batch-size times its ranks, the batch one process would take.
func globalBatch(o JobOptions) JobOptions {
	if o.Train.Group != nil {
		o.BatchSize *= o.Train.Group.Size()
	}
	return o
}

// ParseMemoryLimit reads --memory-limit: "" or "auto" (the memory
// available now), "off" (0: no cap), or a size in GB, MB or bytes from
// 1 byte to below 2⁶³ (NaN, infinities and fractions of a byte are not
// sizes).
func ParseMemoryLimit(s string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return train.AvailableMemory(), nil
	case "off":
		return 0, nil
	}
	units := []struct {
		suffix string
		scale  float64
	}{{"gb", 1e9}, {"g", 1e9}, {"mb", 1e6}, {"m", 1e6}, {"", 1}}
	lower := strings.ToLower(strings.TrimSpace(s))
	for _, u := range units {
		if num, ok := strings.CutSuffix(lower, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			bytes := v * u.scale
			if err != nil || !(bytes >= 1 && bytes < math.MaxInt64) {
				break
			}
			return int64(bytes), nil
		}
	}
	return 0, badinput.Errorf("%v %q is not auto, off or a size such as 20GB", badinput.Setting("memory_limit"), s)
}

// finishedRun is the result of a run in dir that finished, for --resume
// on it: its run.json when that says finished, its output is there and
// its newest checkpoint is its last step; nil when the run has more to
// do. A finished run of another model or configuration is refused, as
// its checkpoint would be.
func finishedRun(dir, identity string) (*JobResult, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if err != nil {
		return nil, nil
	}
	var res JobResult
	if json.Unmarshal(raw, &res) != nil || res.Stopped {
		return nil, nil
	}
	if res.Method == "" {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(dir, outputDir(res.Method))); err != nil {
		return nil, nil
	}
	latest, st, _, err := train.LatestCheckpoint(dir)
	if err != nil || st == nil || st.Step != res.Steps {
		return nil, err
	}
	if err := st.CheckIdentity(latest, identity); err != nil {
		return nil, err
	}
	res.AlreadyFinished = true
	return &res, nil
}

// The formats of JobOptions.Template (--template).
const (
	// FormatChat renders records with the model's chat template, the loss
	// on the assistant turns (data.Config.Chat).
	FormatChat = "chat"
	// FormatAlpaca is data.AlpacaTemplate.
	FormatAlpaca = "alpaca"
	// FormatPlain is data.PlainTemplate.
	FormatPlain = "plain"
)

// RecordFormat decides how a job's records of a kind become text: the
// text template, the chat template (nil unless the format is chat) and
// the format's name ("" for text records, which no format touches).
// Without --template, messages data and a --chat-template choose chat,
// anything else alpaca. Chat needs a template: the model folder's
// tokenizer_config.json or --chat-template.
func RecordFormat(o JobOptions, kind data.Kind, man *modeldir.Manifest, tok *tokenizer.Tokenizer) (data.Template, *chat.Template, string, error) {
	format := o.Template
	switch format {
	case "":
		format = FormatAlpaca
		if kind == data.Chat || o.ChatTemplate != "" {
			format = FormatChat
		}
	case FormatChat, FormatAlpaca, FormatPlain:
	default:
		return data.Template{}, nil, "", badinput.Errorf("unknown %v %q (chat, alpaca or plain)", badinput.Setting("template"), o.Template)
	}
	switch {
	case format != FormatChat && kind == data.Chat:
		return data.Template{}, nil, "", badinput.Errorf("%s holds chat records (messages), which only %v chat formats", o.Data, badinput.Setting("template"))
	case format != FormatChat && o.ChatTemplate != "":
		return data.Template{}, nil, "", badinput.Errorf("%v applies to %v chat, not %s", badinput.Setting("chat_template"), badinput.Setting("template"), format)
	case kind == data.Text:
		return data.AlpacaTemplate, nil, "", nil
	case format == FormatAlpaca:
		return data.AlpacaTemplate, nil, format, nil
	case format == FormatPlain:
		return data.PlainTemplate, nil, format, nil
	}
	var need any = badinput.Errorf("%v chat", badinput.Setting("template"))
	if kind == data.Chat {
		need = o.Data + " (chat records)"
	}
	tpl, err := data.LoadChat(o.Model, o.ChatTemplate, man, tok, need)
	return data.AlpacaTemplate, tpl, format, err
}

// loadData reads and encodes the data file into a batch loader.
func loadData(o JobOptions, man *modeldir.Manifest) (*data.Loader, data.Stats, string, error) {
	tok, err := tokenizer.Load(filepath.Join(o.Model, modeldir.TokenizerFile))
	if err != nil {
		return nil, data.Stats{}, "", err
	}
	cfg := data.ConfigFor(man)
	if o.MaxLen > 0 {
		cfg.MaxLen = o.MaxLen
	}
	if o.Train.Objective != "" {
		obj, err := data.ParseObjective(o.Train.Objective)
		if err != nil {
			return nil, data.Stats{}, "", err
		}
		cfg.Objective = obj
	}
	ds, err := data.Read(o.Data, data.ReadOptions{SkipBadLines: o.SkipBadLines, MaxLineBytes: o.MaxLineBytes})
	if err != nil {
		return nil, data.Stats{}, "", err
	}
	var format string
	if cfg.Template, cfg.Chat, format, err = RecordFormat(o, ds.Kind, man, tok); err != nil {
		return nil, data.Stats{}, "", err
	}
	enc, err := data.NewEncoder(tok, cfg)
	if err != nil {
		return nil, data.Stats{}, "", err
	}
	ex, err := enc.Encode(ds)
	if err != nil {
		return nil, data.Stats{}, "", err
	}
	batch := o.BatchSize
	epochs := o.Epochs
	if o.MaxSteps > 0 && epochs == 0 {
		epochs = -1 // run by steps
	}
	l, err := data.NewLoader(ex, data.BatchOptions{BatchSize: batch, Seed: o.Seed, Bucket: o.Bucket, Epochs: epochs})
	return l, ex.Stats, format, err
}

// newAdapter is the job's adapter: fresh from its settings, or the
// InitAdapter folder, which must be of the method's kind.
func newAdapter(o JobOptions) (adapters.Adapter, error) {
	if o.InitAdapter == "" {
		return adapters.New(o.Method, o.Adapter)
	}
	a, err := adapters.Load(o.InitAdapter)
	if err != nil {
		return nil, err
	}
	if a.Name() != o.Method {
		return nil, badinput.Errorf("%s is a %s adapter, not %s", o.InitAdapter, a.Name(), o.Method)
	}
	return a, nil
}

// adapterPlan injects an adapter and trains only its tensors, each masked
// by the rule the adapter gives it.
func adapterPlan(m *onnx.Model, man *modeldir.Manifest, a adapters.Adapter, seed uint64) (*train.Plan, error) {
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: seed, Training: true})
	if err != nil {
		return nil, err
	}
	return &train.Plan{Model: m, Manifest: man, Trainable: inj.ParamNames(), Points: inj.Points, Rules: inj.Masks}, nil
}
