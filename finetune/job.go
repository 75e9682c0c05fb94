// Package finetune runs fine-tuning jobs as `migu train` describes them:
// read and encode the data, plan what to train (every parameter, or a
// LoRA adapter), run the trainer with checkpoints, and write the trained
// model folder or the adapter.
package finetune

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/tokenizer"
	"github.com/migu-ml/migu/train"
)

// Methods a job can train with.
const (
	MethodFull = "full"
	MethodLoRA = "lora"
)

// JobOptions are what `migu train` asks for.
type JobOptions struct {
	Model, Data, Out string
	Method           string       // full or lora
	LoRA             lora.Config  `json:"lora"`
	Train            train.Config `json:"train"`
	Epochs           int          `json:"epochs"`
	BatchSize        int          `json:"batch_size"`
	MaxLen           int          `json:"max_len"`
	Seed             uint64       `json:"seed"`
	Bucket           int          `json:"bucket"`
	SkipBadLines     bool         `json:"skip_bad_lines"`
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
	// InitAdapter starts a LoRA run from a trained adapter folder (its r,
	// alpha and layers replace LoRA's), so that one adapter continues
	// across the tasks of a sequence.
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
}

// RunJob trains a model folder on a data file into a run folder: builds
// the plan (all parameters, or a LoRA adapter), the training graph and the
// batches, trains with checkpoints, and on completion writes the trained
// model folder (run/model) or the adapter in PEFT's format (run/adapter)
// and run.json. A cancelled context checkpoints and stops.
func RunJob(ctx context.Context, o JobOptions) (*JobResult, error) {
	if o.Model == "" || o.Data == "" || o.Out == "" {
		return nil, badinput.Errorf("train needs --model MODEL_DIR, --data FILE and --out RUN_DIR")
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
	// The data is read before the run folder is made: bad data leaves
	// nothing behind.
	src, stats, format, err := loadData(o, man)
	if err != nil {
		return nil, err
	}
	if err := prepareRunDir(o.Out, o.Resume); err != nil {
		return nil, err
	}
	m := folder.Model
	var plan *train.Plan
	var adapter adapters.Adapter
	switch o.Method {
	case "", MethodFull:
		o.Method = MethodFull
		plan, err = train.FullPlan(m, man)
	case MethodLoRA:
		adapter, plan, err = loraPlan(m, man, o)
	default:
		err = badinput.Errorf("unknown --method %q (full, lora)", o.Method)
	}
	if err != nil {
		return nil, err
	}
	if o.Train.TotalSteps == 0 {
		o.Train.TotalSteps = o.MaxSteps
		if o.Train.TotalSteps == 0 {
			epochs := max(o.Epochs, 1)
			o.Train.TotalSteps = int64(epochs * src.BatchesPerEpoch() / max(o.Train.GradAccum, 1))
		}
	}
	identity, err := train.IdentityOf(man, o)
	if err != nil {
		return nil, err
	}
	cfg := o.Train
	if cfg.MemoryLimit, err = ParseMemoryLimit(o.MemoryLimit); err != nil {
		return nil, err
	}
	cfg.PlanBatch, cfg.PlanSeq = int64(max(o.BatchSize, 1)), int64(max(stats.Longest, 1))
	tr, err := train.NewTrainer(plan, o.Out, cfg)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	if o.Progress != nil {
		fmt.Fprintln(o.Progress, tr.Memory)
	}
	// The trainer holds its own copies of the parameters: unmap the model's
	// weights now rather than carry them through the run.
	m.Close()
	run, err := train.Run(ctx, tr, src, o.Out, train.RunOptions{MaxSteps: o.MaxSteps, SaveEvery: o.SaveEvery, Keep: o.Keep,
		Resume: o.Resume, Unmasked: o.Unmasked, MaskRecord: o.MaskRecord, Identity: identity, Progress: o.Progress, Terminal: o.Terminal})
	if err != nil {
		return nil, err
	}
	res := &JobResult{Method: o.Method, Steps: tr.Step, Resumed: run.Resumed, FirstLoss: run.FirstLoss, LastLoss: run.LastLoss,
		Tokens: run.Tokens, Format: format, Data: stats, Stopped: run.Stopped, Checkpoint: run.Checkpoint}
	if !run.Stopped {
		params := tr.Finish()
		switch o.Method {
		case MethodFull:
			res.Output = filepath.Join(o.Out, "model")
			os.RemoveAll(res.Output) // a model of an earlier completion of this run
			err = train.ExportModel(o.Model, res.Output, params)
		case MethodLoRA:
			res.Output = filepath.Join(o.Out, "adapter")
			err = adapter.Save(res.Output, man, params)
		}
		if err != nil {
			return nil, err
		}
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	return res, atomicfile.WriteFile(filepath.Join(o.Out, "run.json"), append(raw, '\n'))
}

// ParseMemoryLimit reads --memory-limit: "" or "auto" (the memory
// available now), "off" (0: no cap), or a size in GB, MB or bytes.
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
			if err != nil || v <= 0 {
				break
			}
			return int64(v * u.scale), nil
		}
	}
	return 0, badinput.Errorf("--memory-limit %q is not auto, off or a size such as 20GB", s)
}

// prepareRunDir creates the run folder; a folder with checkpoints is only
// reused with --resume, so a second run never mixes into the first.
func prepareRunDir(dir string, resume bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if latest, _, _, _ := train.LatestCheckpoint(dir); latest != "" && !resume {
		return badinput.Errorf("%s already holds checkpoints; pass --resume to continue that run, or choose another --out", dir)
	}
	return nil
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
		return data.Template{}, nil, "", badinput.Errorf("unknown --template %q (chat, alpaca or plain)", o.Template)
	}
	switch {
	case format != FormatChat && kind == data.Chat:
		return data.Template{}, nil, "", badinput.Errorf("%s holds chat records (messages), which only --template chat formats", o.Data)
	case format != FormatChat && o.ChatTemplate != "":
		return data.Template{}, nil, "", badinput.Errorf("--chat-template applies to --template chat, not %s", format)
	case kind == data.Text:
		return data.AlpacaTemplate, nil, "", nil
	case format == FormatAlpaca:
		return data.AlpacaTemplate, nil, format, nil
	case format == FormatPlain:
		return data.PlainTemplate, nil, format, nil
	}
	need := "--template chat"
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
	if batch == 0 {
		batch = 8
	}
	epochs := o.Epochs
	if o.MaxSteps > 0 && epochs == 0 {
		epochs = -1 // run by steps
	}
	l, err := data.NewLoader(ex, data.BatchOptions{BatchSize: batch, Seed: o.Seed, Bucket: o.Bucket, Epochs: epochs})
	return l, ex.Stats, format, err
}

// loraPlan injects a LoRA adapter and trains only its tensors, each masked
// by the point its rule names.
func loraPlan(m *onnx.Model, man *modeldir.Manifest, o JobOptions) (adapters.Adapter, *train.Plan, error) {
	a, err := lora.New(o.LoRA)
	if o.InitAdapter != "" {
		a, err = lora.Load(o.InitAdapter)
	}
	if err != nil {
		return nil, nil, err
	}
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: o.Seed, Training: true})
	if err != nil {
		return nil, nil, err
	}
	plan := &train.Plan{Model: m, Manifest: man, Trainable: inj.ParamNames(), Points: inj.Points}
	shapes := map[string][]int64{}
	for _, p := range inj.Params {
		shapes[p.Name] = p.Shape
	}
	for _, r := range inj.Masks {
		if shapes[r.Param] == nil {
			return nil, nil, fmt.Errorf("lora: mask rule for unknown tensor %s", r.Param)
		}
		plan.Rules = append(plan.Rules, migu.Rule{Param: r.Param, Shape: shapes[r.Param], Axis: r.Axis, Tap: r.Point})
	}
	return a, plan, nil
}
