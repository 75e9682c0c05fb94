// Command perf is migu's side-by-side performance benchmark (`make bench`):
// it trains the small presets of llama, t5 and roberta — full fine-tuning
// and LoRA, each with and without MIGU — for a fixed number of steps in
// migu (ONNX Runtime + Go AdamW) and in PyTorch eager (transformers,
// torch.optim.AdamW), from the same Hugging Face folder, on the same
// batches, with the same thread count, in separate processes whose order
// is reversed from round to round so that a noisy machine hurts every
// configuration alike. It reports tokens/s, the median step time and its
// spread, each process's peak RSS, migu's speed relative to PyTorch, and
// MFU against a large MatMul timed in the same run, and writes RESULTS.md.
//
// The same binary is its own worker: -worker migu trains in this process,
// -worker matmul times ORT's MatMul, -worker migu-pair MIGU's cost in one
// process, -worker onednn-pair oneDNN's float32 products against MLAS in
// one process, -worker model-pair two exports of one model, -worker
// rows-pair the head on every token against the labelled ones, -worker
// share-pair bf16 operands rounded per product against once, bias-pair
// the bias Adds apart from the products against folded in (pair.go);
// -worker eval scores as migu eval does (eval.go), -worker eval-pair two
// evaluation setups in one process (evalpair.go).
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
	"google.golang.org/protobuf/proto"
)

// options are the command line (defaults from BENCH_* variables, so that
// `make bench BENCH_MODELS=llama` works).
type options struct {
	worker  string
	models  string
	methods string
	migus   string
	steps   int
	warmup  int
	rounds  int
	batch   int
	seq     int
	// prompt is the share of each clm sequence left unlabelled, as the
	// prompt of instruction data is.
	prompt   float64
	threads  int
	provider string
	python   string
	work     string
	out      string
	torchCfg string
	// torch2 is the interpreter of PyPI's PyTorch 2.x (benchmarks/perf/torch2.sh).
	torch2 string
	// precisions are the precisions both sides run: fp32, and bf16 (migu's
	// --precision bf16 where its library is built, PyTorch's autocast).
	precisions string
	// ortSpinSearch times migu with ORT's spinning on and off first.
	ortSpinSearch bool
	// worker-only
	model, hf, arch, method string
	modelB                  string // model-pair: the second model folder
	withMIGU                bool
	ortProfile, cpuProfile  string
	optLevel                string
	ortSpin                 string
	// ortSpinStop is the worker's session.force_spinning_stop (empty: the
	// trainer's default, 1: ORT's threads park when a run returns).
	ortSpinStop string
	hiddenPad   bool
	// unfusedAttention keeps attention in standard operators (-unfused-attention).
	unfusedAttention bool
	// precision is migu's weight-product precision (train.Config.Precision).
	precision string
	// onednn names the float32 products the worker runs in oneDNN
	// (train.Config.OneDNN; parseOneDNN).
	onednn string
	// onednnOff is the onednn-pair worker's first trainer's -onednn.
	onednnOff string
	// BENCH_EVAL=1: the evaluation throughput benchmark (eval.go).
	evalMode   bool
	evalModel  string
	evalItems  int
	evalBatch  int
	evalPasses int
	// eval worker-only
	items, kernels string
	whole          bool
	// evalProducts is the eval worker's eval.Options.Products; evalPair
	// the change the eval-pair worker measures (workEvalPair).
	evalProducts, evalPair string
}

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.worker, "worker", "", "internal: run as a worker (migu, migu-pair, onednn-pair, model-pair, rows-pair, share-pair, bias-pair, attention-pair, eval, eval-pair or matmul)")
	flag.StringVar(&o.models, "models", bench.EnvOr("BENCH_MODELS", "llama,t5,roberta"), "models to benchmark: architectures (small presets) and smollm2 (SmolLM2-135M-Instruct from its GGUF)")
	flag.StringVar(&o.methods, "methods", bench.EnvOr("BENCH_METHODS", "full,lora"), "training methods")
	flag.StringVar(&o.migus, "migu", bench.EnvOr("BENCH_MIGU", "off,on"), "MIGU settings to run (off, on)")
	flag.IntVar(&o.steps, "steps", bench.EnvInt("BENCH_STEPS", 5), "timed steps per process")
	flag.IntVar(&o.warmup, "warmup", bench.EnvInt("BENCH_WARMUP", 2), "untimed warm-up steps per process")
	flag.IntVar(&o.rounds, "rounds", bench.EnvInt("BENCH_ROUNDS", 2), "processes per side and configuration (rounds, each in reversed order of the last)")
	flag.IntVar(&o.batch, "batch", bench.EnvInt("BENCH_BATCH", 4), "sequences per batch")
	flag.IntVar(&o.seq, "seq", bench.EnvInt("BENCH_SEQ", 128), "tokens per sequence (t5: encoder and decoder each)")
	flag.Float64Var(&o.prompt, "prompt", 0, "worker: the share of each clm sequence unlabelled, as an instruction's prompt (0: every token labelled)")
	flag.IntVar(&o.threads, "threads", bench.EnvInt("BENCH_THREADS", runtime.NumCPU()), "intra-op threads on both sides")
	flag.StringVar(&o.provider, "provider", bench.EnvOr("PROVIDER", "cpu"), "cpu or cuda (ORT's CUDA EP; PyTorch on cuda)")
	flag.StringVar(&o.python, "python", bench.EnvOr("BENCH_PYTHON", ".venv/bin/python"), "Python with torch and transformers")
	flag.StringVar(&o.work, "work", bench.EnvOr("BENCH_WORK", ""), "scratch folder (default: a temporary one, removed)")
	flag.StringVar(&o.out, "out", bench.EnvOr("BENCH_OUT", "benchmarks/perf/RESULTS.md"), "where to write the results table")
	flag.StringVar(&o.torchCfg, "torch-config", bench.EnvOr("BENCH_TORCH_CONFIG", ""), "search only the PyTorch configurations whose name contains one of these |-separated substrings")
	flag.StringVar(&o.torch2, "torch2", bench.EnvOr("BENCH_TORCH2_PYTHON", ".deps/torch2/bin/python"), "Python of PyPI's PyTorch 2.x (benchmarks/perf/torch2.sh); none there: PyTorch 1.13 only")
	flag.StringVar(&o.precisions, "precisions", bench.EnvOr("BENCH_PRECISIONS", "fp32,bf16"), "precisions on both sides: fp32, bf16 (migu --precision bf16 where bin/libmigu_bf16.so is built; PyTorch 2.x autocast)")
	flag.BoolVar(&o.ortSpinSearch, "ort-spin-search", bench.EnvOr("BENCH_ORT_SPIN", "") == "", "time migu with ORT's intra-op spinning on and off, keep the faster")
	flag.StringVar(&o.model, "model", "", "worker: model folder")
	flag.StringVar(&o.modelB, "model-b", "", "model-pair worker: the second model folder (the same model exported another way)")
	flag.StringVar(&o.hf, "hf", "", "worker: Hugging Face folder")
	flag.StringVar(&o.arch, "arch", "", "worker: architecture")
	flag.StringVar(&o.method, "method", "full", "worker: full or lora")
	flag.BoolVar(&o.withMIGU, "with-migu", false, "worker: train with MIGU (T = 0.7, grad mode)")
	flag.StringVar(&o.ortProfile, "ort-profile", bench.EnvOr("BENCH_ORT_PROFILE", ""), "worker: ORT profile file prefix")
	flag.StringVar(&o.cpuProfile, "cpuprofile", bench.EnvOr("BENCH_CPUPROFILE", ""), "worker: Go CPU profile file")
	flag.BoolVar(&o.unfusedAttention, "unfused-attention", false, "worker: attention in standard operators (train.Config.UnfusedAttention)")
	flag.BoolVar(&o.hiddenPad, "hidden-pad", false, "worker: widen feed-forward layers whose width is a multiple of 4 KB (train.PadFourKB)")
	flag.StringVar(&o.ortSpinStop, "ort-spin-stop", "", "worker: ORT's session.force_spinning_stop, 0 or 1 (empty: the trainer's default, 1)")
	flag.StringVar(&o.ortSpin, "ort-spin", bench.EnvOr("BENCH_ORT_SPIN", ""), "worker: ORT intra-op spinning, 0 or 1 (empty: ORT's default, on)")
	flag.StringVar(&o.precision, "migu-precision", "fp32", "worker: migu's weight products, fp32 or bf16 (--precision; bf16 needs the bf16 library, $MIGU_BF16 or bin/libmigu_bf16.so)")
	flag.StringVar(&o.onednn, "onednn", "", "worker: where the float32 products run: empty (as migu train --products auto decides), mlas, or the products moved to oneDNN (needs the bf16 library): forward, input-grads, weight-grads, attention (comma-separated) or all")
	flag.StringVar(&o.onednnOff, "onednn-off", "mlas", "onednn-pair worker: the products the first trainer runs in oneDNN, as -onednn")
	flag.StringVar(&o.optLevel, "opt-level", bench.EnvOr("BENCH_OPT_LEVEL", "all"), "worker: ORT graph optimisation level")
	flag.BoolVar(&o.evalMode, "eval", bench.EnvOr("BENCH_EVAL", "") == "1", "benchmark evaluation throughput (log-likelihood scoring) against transformers instead of training")
	flag.StringVar(&o.evalModel, "eval-model", bench.EnvOr("BENCH_EVAL_MODEL", ""), "eval: smollm2 or llama (default: smollm2 when `make smollm2` exported it)")
	flag.IntVar(&o.evalItems, "eval-items", bench.EnvInt("BENCH_EVAL_ITEMS", 8), "eval: multiple-choice items (4 requests each)")
	flag.IntVar(&o.evalBatch, "eval-batch", bench.EnvInt("BENCH_EVAL_BATCH", 8), "eval: batch size on both sides")
	flag.IntVar(&o.evalPasses, "eval-passes", bench.EnvInt("BENCH_EVAL_PASSES", 2), "eval: timed passes over all items per process")
	flag.StringVar(&o.items, "items", "", "eval worker: items JSON")
	flag.StringVar(&o.kernels, "kernels", "", "eval worker: fused-kernel library, or off")
	flag.BoolVar(&o.whole, "whole", false, "eval worker: score every request whole (no shared context)")
	flag.StringVar(&o.evalProducts, "eval-products", "", "eval worker: where the weight products run (eval.Options.Products): empty or auto, mlas, onednn")
	flag.StringVar(&o.evalPair, "eval-pair", "products", "eval-pair worker: the change to measure: products (MLAS against -eval-products) or attention (standard operators against the fused kernel)")
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	var err error
	switch o.worker {
	case "":
		if o.evalMode {
			err = driveEval(o)
		} else {
			err = drive(o)
		}
	case "eval":
		err = workEval(o)
	case "migu":
		err = workMIGU(o)
	case "migu-pair":
		err = workPair(o)
	case "onednn-pair":
		err = workOneDNNPair(o)
	case "model-pair":
		err = workModelPair(o)
	case "rows-pair":
		err = workRowsPair(o)
	case "share-pair":
		err = workSharePair(o)
	case "bias-pair":
		err = workBiasPair(o)
	case "attention-pair":
		err = workAttentionPair(o)
	case "eval-pair":
		err = workEvalPair(o)
	case "matmul":
		err = workMatMul(o)
	default:
		err = fmt.Errorf("unknown -worker %q", o.worker)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "perf:", err)
		os.Exit(1)
	}
}

// sample is what a worker prints: one process's timed steps.
type sample struct {
	StepS []float64 `json:"step_s"`
	CPUS  []float64 `json:"cpu_s,omitempty"` // process CPU time per step (migu side)
	// UpdateS is each timed step's update after the backward pass: migu's
	// train.StepResult.UpdateSeconds, PyTorch's MIGU masks, opt.step()
	// and zero_grad().
	UpdateS []float64 `json:"update_s,omitempty"`
	Tokens  []int     `json:"tokens"`
	Loss    []float64 `json:"loss"`
	// WarmupLoss are the losses of the untimed steps before Loss: with it,
	// the loss curve over every step the process ran.
	WarmupLoss []float64 `json:"warmup_loss,omitempty"`
	// Torch and Precision are what the PyTorch worker ran: torch's
	// version, fp32 or bf16 (autocast).
	Torch     string `json:"torch,omitempty"`
	Precision string `json:"precision,omitempty"`
	// BF16Path is the path migu's bf16 products took
	// (kernels.BF16Hardware.Path); "" for fp32.
	BF16Path string `json:"bf16_path,omitempty"`
	// OneDNNProducts counts the float32 products the migu worker ran in
	// oneDNN (train --products; Artifact.OneDNNProducts), 0: all in MLAS;
	// AttentionProducts attention's (Artifact.AttentionProducts),
	// BiasedProducts those that add a bias (Artifact.BiasedProducts).
	OneDNNProducts    int `json:"onednn_products,omitempty"`
	AttentionProducts int `json:"attention_products,omitempty"`
	// FusedAttention counts the attentions the fused kernel computes
	// (Artifact.Fused["Attention"]).
	FusedAttention int     `json:"fused_attention,omitempty"`
	BiasedProducts int     `json:"biased_products,omitempty"`
	Params         int64   `json:"params"`
	Trainable      int64   `json:"trainable"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	GFLOPS         float64 `json:"gflops"`
	Threads        int     `json:"threads"`
}

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// batches makes n deterministic full-length batches (no padding) for arch:
// random ids from 3 up, clm labels equal to the ids (the first prompt share
// of each sequence unlabelled), mlm labels on 15% of the positions,
// seq2seq decoder inputs and labels of the same length.
func batches(arch string, vocab int64, n, size, seq int, prompt float64) []*data.Batch {
	rng := rand.New(rand.NewPCG(7, 11))
	id := func() int64 { return 3 + rng.Int64N(vocab-3) }
	out := make([]*data.Batch, n)
	for k := range out {
		b := &data.Batch{Size: size, SeqLen: seq, Tokens: size * seq}
		for range size * seq {
			b.InputIDs = append(b.InputIDs, id())
			b.AttentionMask = append(b.AttentionMask, 1)
		}
		switch arch {
		case "t5":
			b.Objective, b.TgtLen = data.Seq2Seq, seq
			for range size * seq {
				b.DecoderInputIDs = append(b.DecoderInputIDs, id())
				b.DecoderAttentionMask = append(b.DecoderAttentionMask, 1)
				b.Labels = append(b.Labels, id())
			}
		case "roberta":
			b.Objective = data.MLM
			for _, v := range b.InputIDs {
				l := int64(data.IgnoreIndex)
				if rng.Float64() < 0.15 {
					l = v
				}
				b.Labels = append(b.Labels, l)
			}
		default:
			b.Objective = data.CLM
			b.Labels = slices.Clone(b.InputIDs)
			for i := range b.Labels {
				if float64(i%seq) < prompt*float64(seq) {
					b.Labels[i] = data.IgnoreIndex
				}
			}
		}
		out[k] = b
	}
	return out
}

// writeBatches writes the batches as the PyTorch script reads them.
func writeBatches(path string, bs []*data.Batch) error {
	type jb struct {
		Feeds  map[string][][]int64 `json:"feeds"`
		Tokens int                  `json:"tokens"`
	}
	var all []jb
	for _, b := range bs {
		f := map[string][][]int64{}
		for name, feed := range b.Feeds() {
			rows := int(feed.Shape[0])
			cols := len(feed.Values) / rows
			for r := range rows {
				f[name] = append(f[name], feed.Values[r*cols:(r+1)*cols])
			}
		}
		all = append(all, jb{f, b.Tokens})
	}
	raw, err := json.Marshal(all)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// workMIGU trains the model folder in this process and prints a sample.
// benchTrainer is a trainer set up as the migu worker runs it.
type benchTrainer struct {
	tr     *train.Trainer
	man    *modeldir.Manifest
	params int64 // weights and biases of the model, trainable or not
	dir    string
}

// benchSetup is what a worker's trainers may differ in.
type benchSetup struct {
	withMIGU    bool
	oneDNN      *kernels.F32Roles // nil: as migu train decides
	model       string            // model folder; empty: -model
	allRows     bool              // the head on every token (train.Config.AllRows)
	biasAdds    bool              // bias Adds apart from the products (train.Config.BiasAdds)
	bf16Sharing string            // train.Config.BF16Sharing
	unfusedAtt  bool              // attention in standard operators (train.Config.UnfusedAttention)
}

// parseOneDNN reads -onednn: "" decides as migu train does (nil:
// --products auto), mlas runs every product in MLAS, and a
// comma-separated list of forward, input-grads, weight-grads and
// attention (or all four, "all") moves those products to oneDNN.
func parseOneDNN(s string) (*kernels.F32Roles, error) {
	var r kernels.F32Roles
	switch s {
	case "":
		return nil, nil
	case "mlas":
		return &r, nil
	}
	for _, role := range strings.Split(s, ",") {
		switch role {
		case "forward":
			r.Forward = true
		case "input-grads":
			r.InputGrads = true
		case "weight-grads":
			r.WeightGrads = true
		case "attention":
			r.Attention = true
		case "all":
			r = kernels.F32Roles{Forward: true, InputGrads: true, WeightGrads: true, Attention: true}
		default:
			return nil, fmt.Errorf("-onednn %q: %q is not mlas, forward, input-grads, weight-grads, attention or all", s, role)
		}
	}
	return &r, nil
}

func (b *benchTrainer) close() error {
	defer os.RemoveAll(b.dir)
	return b.tr.Close()
}

// newBenchTrainer builds the trainer of the migu worker: the plan of
// o.method, AdamW at lr 1e-4, MIGU (T = 0.7, grad mode) when withMIGU.
func newBenchTrainer(o *options, setup benchSetup) (*benchTrainer, error) {
	dir := cmp.Or(setup.model, o.model)
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	params := int64(0)
	for _, t := range m.Graph().P.Initializer {
		if onnx.DType(t.GetDataType()).IsFloat() && (strings.HasSuffix(t.GetName(), ".weight") || strings.HasSuffix(t.GetName(), ".bias")) {
			n := int64(1)
			for _, d := range t.Dims {
				n *= d
			}
			params += n
		}
	}
	var plan *train.Plan
	if o.method == "lora" {
		plan, err = loraPlan(m, man)
	} else {
		plan, err = train.FullPlan(m, man)
	}
	if err != nil {
		return nil, err
	}
	level, err := ort.ParseOptLevel(o.optLevel)
	if err != nil {
		return nil, err
	}
	runDir, err := os.MkdirTemp("", "perf-train-")
	if err != nil {
		return nil, err
	}
	opt := train.DefaultAdamW()
	opt.LR = 1e-4
	cfg := train.Config{Optim: opt, GradAccum: 1, UseMIGU: setup.withMIGU, T: 0.7, Mode: migu.ModeGrad, Threads: o.threads,
		Session: ort.SessionOptions{Provider: o.provider, OptLevel: level, ProfilePrefix: o.ortProfile}, Precision: o.precision,
		OneDNN: setup.oneDNN, AllRows: setup.allRows, BiasAdds: setup.biasAdds, UnfusedAttention: setup.unfusedAtt,
		BF16Sharing: setup.bf16Sharing}
	if o.hiddenPad {
		cfg.HiddenPad = train.PadFourKB
	}
	cfg.Session.Config = map[string]string{}
	if o.ortSpin != "" {
		cfg.Session.Config["session.intra_op.allow_spinning"] = o.ortSpin
	}
	if o.ortSpinStop != "" {
		cfg.Session.Config["session.force_spinning_stop"] = o.ortSpinStop
	}
	tr, err := train.NewTrainer(plan, runDir, cfg)
	if err != nil {
		os.RemoveAll(runDir)
		return nil, err
	}
	// The trainer holds its own copies: unmap the model file now, so that
	// its pages leave the resident set before training starts.
	if err := m.Close(); err != nil {
		tr.Close()
		os.RemoveAll(runDir)
		return nil, err
	}
	return &benchTrainer{tr: tr, man: man, params: params, dir: runDir}, nil
}

func workMIGU(o *options) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	roles, err := parseOneDNN(o.onednn)
	if err != nil {
		return err
	}
	b, err := newBenchTrainer(o, benchSetup{withMIGU: o.withMIGU, oneDNN: roles, unfusedAtt: o.unfusedAttention})
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	tr, man, params := b.tr, b.man, b.params
	bs := batches(o.arch, man.VocabSize, 4, o.batch, o.seq, o.prompt)
	s := sample{Params: params, Threads: o.threads, Precision: o.precision, OneDNNProducts: tr.Art.OneDNNProducts, AttentionProducts: tr.Art.AttentionProducts,
		BiasedProducts: tr.Art.BiasedProducts, FusedAttention: tr.Art.Fused["Attention"]}
	if o.precision == train.PrecisionBF16 {
		s.BF16Path = kernels.ReadBF16Hardware().Path()
	}
	for _, t := range tr.Tensors {
		s.Trainable += int64(len(t.Value))
	}
	for i := range o.warmup + o.steps {
		if i == o.warmup && o.cpuProfile != "" {
			f, err := os.Create(o.cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		start, cpu := time.Now(), cpuSeconds()
		res, err := tr.TrainStep([]*data.Batch{bs[i%len(bs)]}, true)
		if err != nil {
			return err
		}
		if i >= o.warmup {
			s.StepS = append(s.StepS, time.Since(start).Seconds())
			s.UpdateS = append(s.UpdateS, res.UpdateSeconds)
			s.CPUS = append(s.CPUS, cpuSeconds()-cpu)
			s.Tokens = append(s.Tokens, res.Tokens)
			s.Loss = append(s.Loss, res.Loss)
		} else {
			s.WarmupLoss = append(s.WarmupLoss, res.Loss)
		}
	}
	if err := tr.Close(); err != nil { // writes the ORT profile
		return err
	}
	s.PeakRSSMB = bench.PeakRSSMB()
	// The MatMul ceiling at this moment, in this process, after the peak
	// RSS is read: MFU against it holds up when the machine's load changes.
	if s.GFLOPS, err = matmulGFLOPS(o, 3); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(s)
}

// loraPlan injects LoRA (q and v, r 8, α 32, as the MIGU paper's runs and
// finetune's defaults) and masks A and B as finetune does.
func loraPlan(m *onnx.Model, man *modeldir.Manifest) (*train.Plan, error) {
	a, err := lora.New(lora.DefaultConfig())
	if err != nil {
		return nil, err
	}
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: 1, Training: true})
	if err != nil {
		return nil, err
	}
	return &train.Plan{Model: m, Manifest: man, Trainable: inj.ParamNames(), Points: inj.Points, Rules: inj.Masks}, nil
}

// workMatMul times an n×n·n×n float32 MatMul in ORT and prints its
// GFLOP/s.
func workMatMul(o *options) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	gf, err := matmulGFLOPS(o, 5)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(sample{GFLOPS: gf, Threads: o.threads, PeakRSSMB: bench.PeakRSSMB()})
}

// ceilingSizes are the square MatMuls whose faster one is the ceiling.
// 2048³ is the customary size, but ORT's CPU GEMM (MLAS) loses up to a
// fifth of its speed when a matrix row is a multiple of 4 KB, which 2000³
// avoids; a ceiling from 2048³ alone would flatter MFU.
var ceilingSizes = []int64{2048, 2000}

// matmulGFLOPS is the MatMul ceiling in ORT: the best GFLOP/s of
// ceilingSizes.
func matmulGFLOPS(o *options, reps int) (float64, error) {
	best := 0.0
	for _, n := range ceilingSizes {
		gf, err := squareMatMulGFLOPS(o, n, reps)
		if err != nil {
			return 0, err
		}
		best = max(best, gf)
	}
	return best, nil
}

// squareMatMulGFLOPS times an n³ float32 MatMul in ORT with bound inputs
// and output: the median of reps runs after 2.
func squareMatMulGFLOPS(o *options, n int64, reps int) (float64, error) {
	m := onnx.New("matmul", nil)
	g := m.Graph()
	g.AddInput("X", onnx.Float, onnx.Shape{onnx.D(n), onnx.D(n)})
	g.AddInput("W", onnx.Float, onnx.Shape{onnx.D(n), onnx.D(n)})
	g.AddOutput(g.Op("MatMul", []string{"X", "W"}, "Y"), onnx.Float, onnx.Shape{onnx.D(n), onnx.D(n)})
	raw, err := proto.Marshal(m.Proto)
	if err != nil {
		return 0, err
	}
	s, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: o.threads, Provider: o.provider})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	vals := func() []float32 {
		v := make([]float32, n*n)
		for i := range v {
			v[i] = float32(i%13)*0.01 - 0.06
		}
		return v
	}
	x, err := ort.NewTensor(vals(), n, n)
	if err != nil {
		return 0, err
	}
	defer x.Close()
	w, err := ort.NewTensor(vals(), n, n)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	y, err := ort.Zeros[float32](n, n)
	if err != nil {
		return 0, err
	}
	defer y.Close()
	b, err := s.NewBinding()
	if err != nil {
		return 0, err
	}
	defer b.Close()
	outName := g.P.Output[0].GetName()
	for _, e := range []error{b.BindInput("X", x), b.BindInput("W", w), b.BindOutput(outName, y)} {
		if e != nil {
			return 0, e
		}
	}
	var times []float64
	for i := range reps + 2 {
		start := time.Now()
		if err := b.Run(); err != nil {
			return 0, err
		}
		if i >= 2 {
			times = append(times, time.Since(start).Seconds())
		}
	}
	slices.Sort(times)
	return 2 * float64(n*n*n) / times[len(times)/2] / 1e9, nil
}

// runJSON runs a worker process and decodes the sample it prints.
func runJSON(env []string, name string, args ...string) (*sample, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, bench.LastLines(errb.String(), 15))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	s := &sample{}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), s); err != nil {
		return nil, fmt.Errorf("%s: reading its result: %v (%q)", name, err, bench.LastLines(out.String(), 3))
	}
	return s, nil
}
