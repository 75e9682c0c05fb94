package train

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"
	"unsafe"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
)

// kernelLibrary resolves Config.Kernels (and $MIGU_KERNELS when it is
// empty) to the fused-kernel library to load, "" for none.
func kernelLibrary(cfg Config) (string, error) {
	if cfg.Session.Provider != "" && cfg.Session.Provider != ort.ProviderCPU {
		return "", nil
	}
	if cfg.Kernels == "" {
		return kernels.Find()
	}
	return kernels.Resolve(cfg.Kernels)
}

// Config holds the training hyperparameters.
type Config struct {
	Optim    AdamWConfig `json:"optim"`
	Schedule string      `json:"schedule"` // constant, linear, cosine
	Warmup   int64       `json:"warmup"`
	// TotalSteps sizes the linear and cosine schedules.
	TotalSteps int64   `json:"total_steps"`
	GradAccum  int     `json:"grad_accum"` // micro-batches per optimizer step
	ClipNorm   float64 `json:"clip_norm"`  // 0: no clipping
	// MIGU is on when UseMIGU is set: T is the fraction of output features
	// not updated, Mode how the mask acts.
	UseMIGU bool      `json:"migu"`
	T       float64   `json:"migu_t"`
	Mode    migu.Mode `json:"migu_mode"`
	// SkipPaddingTaps leaves padding out of the magnitudes.
	SkipPaddingTaps bool   `json:"taps_skip_padding"`
	Objective       string `json:"objective,omitempty"`
	Threads         int    `json:"-"`
	// HiddenPad widens slow feed-forward widths in the graph (the zero
	// value: off; it changes speed, not results).
	HiddenPad HiddenPad `json:"-"`
	// AllRows runs the head on every token (GraphOptions.AllRows; it
	// changes speed, not results).
	AllRows bool `json:"-"`
	// BiasAdds keeps the bias Adds apart from the products
	// (GraphOptions.BiasAdds; it changes speed, not results).
	BiasAdds bool `json:"-"`
	// UnfusedAttention keeps attention in standard operators where the
	// trainer would fuse it (GraphOptions.FusedAttention: fp32 with the
	// kernel library on an AVX-512 CPU); benchmarks compare the two.
	UnfusedAttention bool `json:"-"`
	// BF16Sharing is BF16ShareAuto (""), BF16ShareNever or
	// BF16ShareAlways: where a bf16 run rounds the products' operands
	// once (GraphOptions.ShareBF16). Tests and benchmarks compare them.
	BF16Sharing string `json:"-"`
	// PlanBatch and PlanSeq, when set, are the largest batch's shape:
	// NewTrainer then plans the run's memory (Trainer.Memory) before it
	// allocates the trained tensors, and refuses a plan above MemoryLimit
	// bytes (0: no limit).
	PlanBatch, PlanSeq int64 `json:"-"`
	MemoryLimit        int64 `json:"-"`
	// Recompute is GraphOptions.Recompute: none (or "") or layers. It
	// changes memory and speed, not results (gradients equal to float32
	// rounding), so a run may resume with another choice; train.json in
	// the run folder records the graph's.
	Recompute string `json:"-"`
	// Session adds ONNX Runtime options (provider, optimisation level,
	// profiling, config entries) to the training session; Threads above
	// sets its intra-op threads.
	Session ort.SessionOptions `json:"-"`
	// Kernels chooses migu's fused kernels (package onnx/kernels): ""
	// uses the library kernels.Find finds ($MIGU_KERNELS, else the one
	// `make build` made) and standard operators where there is none,
	// "off" standard operators only, anything else is the library's path.
	// The CUDA provider always runs standard operators (the kernels are
	// CPU kernels).
	Kernels string `json:"-"`
	// Precision is the weight products' precision: fp32 (or "") or bf16
	// (PrecisionBF16, which needs the bf16 library, kernels.FindBF16). It
	// changes speed and rounding, not the state a checkpoint holds (float32
	// master weights and moments), so a run may resume with the other
	// precision; train.json records the graph's.
	Precision string `json:"-"`
	// OneDNN picks the float32 products that run in oneDNN instead of
	// MLAS (GraphOptions.OneDNN; ParseProducts reads --products): nil
	// decides by the machine (OneDNNRoles), a value says which. They need
	// the bf16 library; results equal MLAS's to float32 rounding, so a
	// run may resume with another choice.
	OneDNN *kernels.F32Roles `json:"-"`
	// Group, when set, is the data-parallel group this trainer is one rank
	// of (Group); nil trains alone.
	Group Group `json:"-"`
}

// DefaultConfig is the configuration `migu train` starts from: AdamW
// with PyTorch's betas and eps, learning rate 1e-4 and weight decay 0.01,
// a constant schedule, one micro-batch per step, the gradient norm
// clipped at 1, MIGU off (T 0.7 and grad mode once it is turned on).
func DefaultConfig() Config {
	opt := DefaultAdamW()
	opt.LR = 1e-4
	return Config{Optim: opt, Schedule: "constant", GradAccum: 1, ClipNorm: 1, T: 0.7, Mode: migu.ModeGrad}
}

// Check checks every setting's range before anything is built or
// written, each error one line naming the flag and what it accepts.
func (c Config) Check() error {
	if err := c.Optim.Check(); err != nil {
		return err
	}
	switch {
	case c.GradAccum < 1:
		return badinput.Range("grad_accum", c.GradAccum, "≥ 1")
	case c.Warmup < 0:
		return badinput.Range("warmup", c.Warmup, "≥ 0")
	case c.TotalSteps < 0:
		return badinput.Range("total_steps", c.TotalSteps, "≥ 0")
	case !finiteAtLeast(c.ClipNorm, 0):
		return badinput.Range("clip_norm", c.ClipNorm, "a finite number ≥ 0 (0: off)")
	case c.MemoryLimit < 0:
		return badinput.Range("memory_limit", c.MemoryLimit, "≥ 0 bytes (0: off)")
	}
	if c.UseMIGU {
		if err := migu.CheckT(c.T); err != nil {
			return err
		}
		if c.Mode != migu.ModeNone {
			if _, err := migu.ParseMode(string(c.Mode)); err != nil {
				return err
			}
		}
	}
	if err := ort.CheckThreads("threads", c.Threads); err != nil {
		return err
	}
	if _, err := ParseSchedule(c.Schedule); err != nil {
		return err
	}
	if err := CheckPrecision(c.Precision); err != nil {
		return err
	}
	return CheckRecompute(c.Recompute, nil)
}

// Trainer owns a training session: the train.onnx graph in ONNX Runtime,
// the trainable tensors and their optimizer state in Go memory (bound to
// the session without copies), and MIGU's masker.
type Trainer struct {
	Art     *Artifact
	Tensors []*Tensor
	cfg     Config
	opt     *AdamW
	sched   Schedule
	masker  *migu.Masker
	// kernels is the fused-kernel library the session loads, or "";
	// bf16 the library of the bf16 products and of the float32 products
	// in oneDNN (Config.OneDNN), or "".
	kernels, bf16 string
	// Step counts optimizer steps taken.
	Step int64
	// Memory is the run's memory plan (nil unless Config.PlanBatch and
	// PlanSeq are set).
	Memory *MemoryPlan

	session *ort.Session
	binding *ort.Binding
	// frozen are the weights that are not trained, bound as graph inputs
	// straight from the model folder's mapped data file (frozenData) in
	// their stored precision: nothing copies them.
	frozen     []*onnxpb.TensorProto
	frozenData *onnx.Model
	owned      []ort.Value
	gradOut    map[*Tensor][]float32 // per-micro-batch gradient buffers when accumulating
	tapOut     map[string][]float32
	lossOut    []float32
	keepOpt    map[*Tensor]*migu.Keep
	// bf16Stale says that the weights' bf16 twins (Tensor.BF16) may not
	// match the weights: after open and LoadCheckpoint, until TrainStep
	// rounds them all; the optimizer keeps them after that.
	bf16Stale bool
	inputs    map[string]ort.Value
	dataDims  map[string][]int64
}

// StepResult reports one optimizer step.
type StepResult struct {
	Step     int64   `json:"step"`
	Loss     float64 `json:"loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Tokens   int     `json:"tokens"`
	Seconds  float64 `json:"seconds"`
	// UpdateSeconds is the part of Seconds after the graph's runs: the
	// gradients' reduction across ranks, the norm, MIGU's masks and the
	// optimizer pass (memory-bound: AdamW reads and writes 28 bytes a
	// parameter).
	UpdateSeconds float64               `json:"update_seconds"`
	Masks         map[string]migu.Stats `json:"masks,omitempty"`
}

// ErrNonFinite is returned when a step's loss is NaN or infinite.
var ErrNonFinite = errors.New("the loss is not finite")

// NewTrainer builds train.onnx and train.json for the plan into dir and
// opens it in ONNX Runtime with every trainable tensor, gradient and tap bound to Go memory.
func NewTrainer(plan *Plan, dir string, cfg Config) (*Trainer, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.UseMIGU && cfg.Mode == "" {
		cfg.Mode = migu.ModeGrad
	}
	opt, err := NewAdamW(cfg.Optim)
	if err != nil {
		return nil, err
	}
	kind, err := ParseSchedule(cfg.Schedule)
	if err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, opt: opt, sched: Schedule{Kind: kind, Base: cfg.Optim.LR, Warmup: cfg.Warmup, Total: cfg.TotalSteps},
		gradOut: map[*Tensor][]float32{}, tapOut: map[string][]float32{}, keepOpt: map[*Tensor]*migu.Keep{},
		inputs: map[string]ort.Value{}, dataDims: map[string][]int64{}}

	// The trainable tensors are found before Build turns them into inputs,
	// and read after the memory plan has accepted the run.
	g := plan.Model.Graph()
	inits := make([]*onnxpb.TensorProto, len(plan.Trainable))
	var trainable int64
	for i, name := range plan.Trainable {
		if inits[i] = g.Initializer(name); inits[i] == nil {
			return nil, fmt.Errorf("trainable tensor %s is not an initializer", name)
		}
		n, err := onnx.NumElements(inits[i].Dims)
		if err != nil {
			return nil, err
		}
		trainable += n
	}
	lib, err := kernelLibrary(cfg)
	if err != nil {
		return nil, err
	}
	t.kernels = lib
	if t.bf16, err = BF16Library(cfg); err != nil {
		return nil, err
	}
	oneDNN, lib16, err := OneDNNRoles(cfg, t.bf16)
	if err != nil {
		return nil, err
	}
	t.bf16 = lib16
	art, err := Build(plan.Model, plan.Manifest, GraphOptions{Objective: cfg.Objective, Names: plan.Trainable,
		Taps: cfg.UseMIGU, TapPoints: plan.Points, TapsSkipPadding: cfg.SkipPaddingTaps, HiddenPad: cfg.HiddenPad, Recompute: cfg.Recompute,
		Fused: lib != "", FusedTaps: lib != "", Precision: cfg.Precision, OneDNN: oneDNN, AllRows: cfg.AllRows,
		BiasAdds: cfg.BiasAdds, FusedAttention: lib != "" && !cfg.UnfusedAttention && kernels.AttentionFast(), ShareBF16: shareBF16(cfg)})
	if err != nil {
		return nil, err
	}
	if cfg.PlanBatch > 0 && cfg.PlanSeq > 0 {
		if t.Memory, err = planMemory(plan.Model, art, trainable, cfg.GradAccum, cfg.PlanBatch, cfg.PlanSeq); err != nil {
			return nil, err
		}
		if err := t.Memory.Check(cfg.MemoryLimit, false); err != nil {
			return nil, err
		}
	}
	for i, init := range inits {
		vals, err := plan.Model.Float32s(init)
		if err != nil {
			return nil, err
		}
		plan.Model.Release(init)
		n := len(vals)
		t.Tensors = append(t.Tensors, &Tensor{Name: plan.Trainable[i], Shape: append([]int64(nil), init.Dims...), Value: vals,
			Grad: make([]float32, n), M: make([]float32, n), V: make([]float32, n)})
	}
	t.Art = art
	t.frozen = freezeExternal(g)
	t.frozenData = plan.Model.Remap()
	err = plan.Model.Save(filepath.Join(dir, GraphFile), onnx.SaveOptions{External: onnx.ExternalAll, DataFile: GraphData})
	restoreFrozen(g, t.frozen)
	if err != nil {
		t.Close()
		return nil, err
	}
	if err := writeArtifact(dir, art); err != nil {
		return nil, err
	}
	if cfg.UseMIGU {
		dims := map[string]int64{}
		for _, tap := range art.Taps {
			dims[tap.Name] = tap.Dim
		}
		if t.masker, err = migu.NewMasker(cfg.T, plan.Rules, dims); err != nil {
			return nil, err
		}
	}
	if err := t.open(filepath.Join(dir, GraphFile)); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// open starts the session and binds tensors, gradients, taps and the loss.
func (t *Trainer) open(path string) error {
	so := t.cfg.Session
	so.Threads = t.cfg.Threads
	// A training graph keeps many activations alive into the backward
	// pass; ORT's one-block memory plan for them costs about a third more
	// peak memory than reusing freed tensors, and no time (ort.SessionOptions).
	so.NoMemPattern = true
	so.Config = trainingSessionConfig(so.Config)
	for _, lib := range []string{t.kernels, t.bf16} {
		if lib != "" {
			so.CustomOps = append(slices.Clip(so.CustomOps), lib)
		}
	}
	s, err := ort.NewSession(path, so)
	if err != nil {
		return err
	}
	t.session = s
	if t.binding, err = s.NewBinding(); err != nil {
		return err
	}
	bind := func(input bool, name string, vals []float32, shape ...int64) error {
		v, err := ort.NewTensor(vals, shape...)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		t.owned = append(t.owned, v)
		if input {
			return t.binding.BindInput(name, v)
		}
		return t.binding.BindOutput(name, v)
	}
	for _, f := range t.frozen {
		v, err := frozenValue(t.frozenData, f)
		if err != nil {
			return err
		}
		t.owned = append(t.owned, v)
		if err := t.binding.BindInput(f.GetName(), v); err != nil {
			return err
		}
		if twin := t.Art.FrozenBF16[f.GetName()]; twin != "" {
			if err := t.bindFrozenTwin(f, twin); err != nil {
				return err
			}
		}
	}
	byName := map[string]*Tensor{}
	for _, tt := range t.Tensors {
		byName[tt.Name] = tt
	}
	for _, p := range t.Art.Params {
		tt := byName[p.Name]
		if err := bind(true, p.Name, tt.Value, tt.Shape...); err != nil {
			return err
		}
		if p.BF16 != "" {
			tt.BF16 = make([]uint16, len(tt.Value))
			t.bf16Stale = true
			v, err := ort.NewBFloat16Tensor(tt.BF16, tt.Shape...)
			if err != nil {
				return fmt.Errorf("%s: %w", p.BF16, err)
			}
			t.owned = append(t.owned, v)
			if err := t.binding.BindInput(p.BF16, v); err != nil {
				return err
			}
		}
		out := tt.Grad
		if t.cfg.GradAccum > 1 {
			out = make([]float32, len(tt.Grad))
			t.gradOut[tt] = out
		}
		if err := bind(false, p.Grad, out, tt.Shape...); err != nil {
			return err
		}
	}
	for _, tap := range t.Art.Taps {
		buf := make([]float32, tap.Dim)
		t.tapOut[tap.Name] = buf
		if err := bind(false, tap.Output, buf, tap.Dim); err != nil {
			return err
		}
	}
	t.lossOut = make([]float32, 1)
	return bind(false, t.Art.Loss, t.lossOut, 1)
}

// Close releases the session and its tensors; calling it again does
// nothing.
func (t *Trainer) Close() error {
	var errs []error
	if t.binding != nil {
		errs = append(errs, t.binding.Close())
	}
	for _, v := range t.owned {
		errs = append(errs, v.Close())
	}
	for _, v := range t.inputs {
		errs = append(errs, v.Close())
	}
	if t.session != nil {
		errs = append(errs, t.session.Close())
	}
	if t.frozenData != nil {
		errs = append(errs, t.frozenData.Close())
	}
	t.binding, t.owned, t.inputs, t.session, t.frozenData = nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

// Finish ends training and keeps only the trained values: it closes the
// session and drops gradients and optimizer moments (a checkpoint holds
// them), so that writing the trained model out does not need memory on
// top of the whole training state. Params stays valid; TrainStep does not.
func (t *Trainer) Finish() map[string][]float32 {
	params := t.Params()
	t.Close()
	for _, tt := range t.Tensors {
		tt.Grad, tt.M, tt.V = nil, nil, nil
	}
	clear(t.gradOut)
	clear(t.tapOut)
	debug.FreeOSMemory()
	return params
}

// trainingSessionConfig adds to ORT's session configuration what the
// training graph needs: common subexpression elimination off, since it
// would merge the backward pass's recomputed values (grad.Recompute) back
// into the forward ones and keep them alive in between; and, unless the
// caller says otherwise, ORT's intra-op threads stop spinning when a run
// returns (they spin again in the next), so that the optimizer pass in
// between has the cores to itself.
func trainingSessionConfig(cfg map[string]string) map[string]string {
	out := maps.Clone(cfg)
	if out == nil {
		out = map[string]string{}
	}
	if _, set := out[forceSpinningStop]; !set {
		out[forceSpinningStop] = "1"
	}
	const key = "optimization.disable_specified_optimizers"
	if prev := out[key]; prev != "" {
		out[key] = prev + ";CommonSubexpressionElimination"
	} else {
		out[key] = "CommonSubexpressionElimination"
	}
	return out
}

// forceSpinningStop is ORT's session option that parks the intra-op
// threads when the last concurrent run returns. Left spinning, one of them
// held a core through the AdamW pass: roberta-small's update took 25–29 ms
// against 18–19 ms with spinning off (2 threads, Xeon with AMX).
const forceSpinningStop = "session.force_spinning_stop"

// freezeExternal turns the floating-point initializers whose bytes live in
// the model folder's data file (every weight; the trainable ones are inputs
// already) into graph inputs of the training graph, so that train.onnx
// carries no copy of them, and returns them. Integer tables (T5's relative
// position buckets) stay initializers.
func freezeExternal(g *onnx.Graph) []*onnxpb.TensorProto {
	var frozen []*onnxpb.TensorProto
	for _, t := range slices.Clone(g.P.Initializer) {
		switch onnx.DType(t.GetDataType()) {
		case onnx.Float, onnx.Float16, onnx.BFloat16:
		default:
			continue
		}
		if !onnx.IsExternal(t) {
			continue
		}
		g.RemoveInitializer(t.GetName())
		g.AddInput(t.GetName(), onnx.DType(t.GetDataType()), dims(t.Dims))
		frozen = append(frozen, t)
	}
	return frozen
}

// restoreFrozen puts the frozen weights back as initializers, leaving the
// plan's model as it was before the trainer saved its graph.
func restoreFrozen(g *onnx.Graph, frozen []*onnxpb.TensorProto) {
	for _, t := range frozen {
		g.RemoveInput(t.GetName())
		g.AddInitializer(t)
	}
}

// bindFrozenTwin binds the bf16 twin of the float32 frozen weight f
// (Artifact.FrozenBF16): its mapped values rounded to bfloat16, once.
func (t *Trainer) bindFrozenTwin(f *onnxpb.TensorProto, twin string) error {
	raw, err := t.frozenData.TensorBytes(f)
	if err != nil {
		return err
	}
	if onnx.DType(f.GetDataType()) != onnx.Float || len(raw) == 0 {
		return fmt.Errorf("frozen weight %s: a bf16 twin needs float32 values", f.GetName())
	}
	vals := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/4)
	bits := make([]uint16, len(vals))
	roundBF16(bits, vals)
	v, err := ort.NewBFloat16Tensor(bits, f.Dims...)
	if err != nil {
		return fmt.Errorf("%s: %w", twin, err)
	}
	t.owned = append(t.owned, v)
	return t.binding.BindInput(twin, v)
}

// frozenValue wraps a frozen weight's mapped bytes as an ORT tensor of its
// stored type, without copying.
func frozenValue(m *onnx.Model, t *onnxpb.TensorProto) (ort.Value, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	name, shape := t.GetName(), t.Dims
	if len(raw) == 0 {
		return nil, fmt.Errorf("frozen weight %s is empty", name)
	}
	ptr := unsafe.Pointer(unsafe.SliceData(raw))
	switch dt := onnx.DType(t.GetDataType()); dt {
	case onnx.Float:
		return ort.NewTensor(unsafe.Slice((*float32)(ptr), len(raw)/4), shape...)
	case onnx.Float16:
		return ort.NewFloat16Tensor(unsafe.Slice((*uint16)(ptr), len(raw)/2), shape...)
	case onnx.BFloat16:
		return ort.NewBFloat16Tensor(unsafe.Slice((*uint16)(ptr), len(raw)/2), shape...)
	default:
		return nil, fmt.Errorf("frozen weight %s is %v; weights are float32, float16 or bfloat16", name, dt)
	}
}

// feed binds one batch's inputs (ids, masks, labels).
func (t *Trainer) feed(b *data.Batch) error {
	for name, f := range b.Feeds() {
		if t.session != nil {
			if _, ok := t.session.Input(name); !ok {
				continue
			}
		}
		old := t.inputs[name]
		if o, ok := old.(*ort.Tensor[int64]); ok && slices.Equal(t.dataDims[name], f.Shape) {
			// The shape of the last batch: copy into the bound tensor, with
			// no new ORT value and no new binding.
			copy(o.Data(), f.Values)
			continue
		}
		v, err := ort.NewTensor(slices.Clone(f.Values), f.Shape...)
		if err != nil {
			return badinput.Errorf("batch input %s: %v", name, err)
		}
		if err := t.binding.BindInput(name, v); err != nil {
			v.Close()
			return err
		}
		t.inputs[name] = v
		t.dataDims[name] = slices.Clone(f.Shape)
		if old != nil {
			old.Close()
		}
	}
	return nil
}

// TrainStep runs one optimizer step over micro-batches (len must equal
// GradAccum): forward and backward per micro-batch, gradients averaged and
// taps summed over them, global-norm clipping, the MIGU mask, AdamW. The
// masks parameter can turn MIGU off for this step (the first task of a
// sequence is trained unmasked).
func (t *Trainer) TrainStep(batches []*data.Batch, masked bool) (*StepResult, error) {
	if len(batches) != t.cfg.GradAccum {
		return nil, fmt.Errorf("train step with %d micro-batches, configured for %d", len(batches), t.cfg.GradAccum)
	}
	start := time.Now()
	res := &StepResult{Step: t.Step + 1}
	if t.bf16Stale {
		for _, tt := range t.Tensors {
			if tt.BF16 != nil {
				roundBF16(tt.BF16, tt.Value)
			}
		}
		t.bf16Stale = false
	}
	for _, tt := range t.Tensors {
		if t.cfg.GradAccum > 1 {
			clear(tt.Grad)
		}
	}
	weights, err := t.microWeights(batches)
	if err != nil {
		return nil, err
	}
	var loss float64
	for k, b := range batches {
		// Like loss/accum in PyTorch: the step's gradient is the mean over
		// micro-batches; a data-parallel rank's share of one is weighted by
		// its part of the micro-batch's loss positions.
		w := 1.0
		if weights != nil {
			w = weights[k]
		}
		if b.Size == 0 { // a rank's empty share of a short last batch
			if t.cfg.GradAccum == 1 {
				for _, tt := range t.Tensors {
					clear(tt.Grad)
				}
			}
			continue
		}
		if err := t.feed(b); err != nil {
			return nil, err
		}
		if err := t.binding.Run(); err != nil {
			return nil, err
		}
		l := float64(t.lossOut[0])
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return nil, fmt.Errorf("step %d: %w (%v)", res.Step, ErrNonFinite, l)
		}
		loss += l * w
		res.Tokens += b.Tokens
		if scale := float32(w / float64(t.cfg.GradAccum)); t.cfg.GradAccum > 1 {
			addScaled(t.Tensors, t.gradOut, scale)
		} else if weights != nil {
			addScaled(t.Tensors, nil, scale)
		}
		if t.masker != nil {
			t.masker.Accumulate(t.tapOut)
		}
	}
	update := time.Now()
	if loss, err = t.reduce(res, loss); err != nil {
		return nil, err
	}
	res.Loss = loss / float64(len(batches))
	// Clipping multiplies the gradients inside the AdamW pass, not in a
	// pass of its own; it needs the norm first. Without clipping the AdamW
	// pass sums the norm as it goes.
	clip := t.cfg.ClipNorm > 0
	scale := float32(1)
	if clip {
		res.GradNorm = GradNorm(t.Tensors)
		scale = ClipScale(res.GradNorm, t.cfg.ClipNorm)
	}
	mode := migu.ModeNone
	if t.masker != nil {
		if err := t.masker.Compute(); err != nil {
			return nil, err
		}
		if masked {
			res.Masks = t.masker.Stats()
			mode = t.cfg.Mode
			clear(t.keepOpt)
			for _, tt := range t.Tensors {
				if k := t.masker.Keep(tt.Name); k != nil {
					t.keepOpt[tt] = k
				}
			}
		}
	}
	res.LR = t.sched.LR(t.Step)
	if clip {
		t.opt.StepScaled(t.Tensors, res.LR, scale, t.keepOpt, mode)
	} else {
		res.GradNorm = t.opt.StepNorm(t.Tensors, res.LR, t.keepOpt, mode)
	}
	t.Step++
	res.Seconds = time.Since(start).Seconds()
	res.UpdateSeconds = time.Since(update).Seconds()
	return res, nil
}

// Params returns the current value of every trainable tensor by name.
func (t *Trainer) Params() map[string][]float32 {
	out := make(map[string][]float32, len(t.Tensors))
	for _, tt := range t.Tensors {
		out[tt.Name] = tt.Value
	}
	return out
}

// Masker exposes MIGU's masker (nil without MIGU), for reports.
func (t *Trainer) Masker() *migu.Masker { return t.masker }
