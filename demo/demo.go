// Package demo is `migu demo`: the built-in default run a newcomer starts
// with. It needs no files: it makes a small model, exports it, builds its
// training graph, runs forward and backward once in ONNX Runtime, shows
// which output features MIGU lets an update change in every linear layer,
// and fine-tunes the model with MIGU on a generated task. It grows with the
// toolkit; each step is an honest run of the real code paths.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/tokenizer"
	"github.com/migu-ml/migu/train"
)

// Options configure Run.
type Options struct {
	Out     string  // run folder; its previous demo content is replaced
	Arch    string  // architecture of the demo model (default llama)
	Preset  string  // tiny or small (default tiny)
	Seed    uint64  // for the tokenizer corpus, the weights and the texts
	T       float64 // MIGU threshold: fraction of features NOT updated (default 0.7)
	Threads int     // ONNX Runtime intra-op threads (0: ORT's choice)
	Texts   int     // number of generated sentences in the batch (default 16)
	// TaskSize is the number of records of the generated fine-tuning task
	// (default 240).
	TaskSize int
}

// marker identifies a folder made by the demo, so a rerun may replace it.
const marker = ".migu-demo"

// Run performs the demo and writes its report to w.
func Run(w io.Writer, opt Options) error {
	if opt.Arch == "" {
		opt.Arch = "llama"
	}
	if opt.Preset == "" {
		opt.Preset = "tiny"
	}
	if opt.T == 0 {
		opt.T = 0.7
	}
	if opt.Texts == 0 {
		opt.Texts = 16
	}
	if opt.TaskSize == 0 {
		opt.TaskSize = 240
	}
	if err := prepare(opt.Out); err != nil {
		return err
	}
	step := newSteps(w)

	hf := filepath.Join(opt.Out, "hf")
	step.start("1. init: a random %s %s checkpoint with a tokenizer trained on generated text", opt.Preset, opt.Arch)
	res, err := exporters.Init(hf, exporters.InitOptions{Arch: opt.Arch, Preset: opt.Preset, Seed: opt.Seed})
	if err != nil {
		return err
	}
	step.done("%d parameters, vocabulary %d -> %s", res.Parameters, res.VocabSize, hf)

	modelDir := filepath.Join(opt.Out, "model")
	step.start("2. export: Hugging Face checkpoint -> ONNX forward graph + migu.json")
	man, err := exporters.Export(hf, modelDir)
	if err != nil {
		return err
	}
	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		return err
	}
	summary := onnx.Inspect(m)
	m.Close()
	step.done("%d nodes, %d ops kinds, standard ONNX domain only: %v -> %s",
		summary.Nodes, len(summary.Ops), len(summary.NonStandardDomains()) == 0, modelDir)
	fmt.Fprintf(w, "   linear layers by role: %s\n", rolesLine(man))

	trainDir := filepath.Join(opt.Out, "train")
	step.start("3. prepare: differentiate the graph into train.onnx (loss, gradients, MIGU taps)")
	if err := os.MkdirAll(trainDir, 0o755); err != nil {
		return err
	}
	art, err := train.BuildGraph(modelDir, trainDir, train.GraphOptions{Trainable: train.TrainAll, Taps: true})
	if err != nil {
		return err
	}
	step.done("%d trainable tensors, %d forward + %d gradient nodes, %d magnitude taps -> %s",
		len(art.Params), art.Nodes, art.GradNodes, len(art.Taps), trainDir)

	step.start("4. one forward+backward Run of train.onnx on %d generated sentences", opt.Texts)
	run, err := runTraining(modelDir, trainDir, man, art, opt)
	if err != nil {
		return err
	}
	step.done("%d tokens in %.1f ms (%.0f tokens/s, onnxruntime %s from %s)",
		run.tokens, run.elapsed.Seconds()*1000, float64(run.tokens)/run.elapsed.Seconds(), ort.Version(), ort.LibraryPath())
	fmt.Fprintf(w, "   %s loss %.3f (a uniform guess over %d tokens scores %.3f), gradient norm %.3g\n",
		man.Objective, run.loss, man.VocabSize, math.Log(float64(man.VocabSize)), run.gradNorm)

	step.start("5. MIGU: the T = %.2f mask of every linear layer, from the taps", opt.T)
	table, err := maskTable(man, run.magnitudes, opt.T)
	if err != nil {
		return err
	}
	step.done("%d layers", len(man.Linears))
	fmt.Fprint(w, table)

	task := filepath.Join(opt.Out, "task.jsonl")
	if err := writeTask(task, man.Objective, opt.TaskSize, opt.Seed); err != nil {
		return err
	}
	runDir := filepath.Join(opt.Out, "run")
	step.start("6. migu train: fine-tune every weight with MIGU (T = %.2f) on a generated task (%s)", opt.T, task)
	job, err := finetune.RunJob(context.Background(), finetune.JobOptions{
		Model: modelDir, Data: task, Out: runDir, Method: finetune.MethodFull, Epochs: 2, BatchSize: 16, Seed: opt.Seed,
		Train: train.Config{Optim: train.AdamWConfig{LR: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01},
			ClipNorm: 1, UseMIGU: true, T: opt.T, Mode: migu.ModeGrad, Threads: opt.Threads},
	})
	if err != nil {
		return err
	}
	step.done("%d steps, %d tokens: loss %.3f → %.3f; trained model in %s", job.Steps, job.Tokens, job.FirstLoss, job.LastLoss, job.Output)
	fmt.Fprintf(w, "\nEverything is in %s. Look at:\n  bin/migu inspect %s\n  bin/migu inspect %s/train.onnx\n  %s/metrics.jsonl (per step: loss, lr, masks)\n",
		opt.Out, modelDir, trainDir, runDir)
	return nil
}

// writeTask generates a small learnable task: instructions to repeat a word
// a few times, or, for masked language models, plain sentences.
func writeTask(path, objective string, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	words := strings.Fields("apple river stone cloud orange table garden window yellow silver paper mountain")
	var b strings.Builder
	for i := 0; i < n; i++ {
		var rec map[string]string
		if objective == "mlm" {
			parts := make([]string, 10)
			for k := range parts {
				parts[k] = words[rng.IntN(len(words))]
			}
			rec = map[string]string{"text": strings.Join(parts, " ")}
		} else {
			w, n := words[rng.IntN(len(words))], 1+rng.IntN(3)
			rec = map[string]string{"instruction": fmt.Sprintf("Repeat the word %d times.", n), "input": w,
				"output": strings.TrimSpace(strings.Repeat(w+" ", n))}
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		b.Write(raw)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// prepare empties a previous demo folder (only one the demo made) or
// creates a new one.
func prepare(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return fmt.Errorf("%s exists and was not made by migu demo; choose another --out", dir)
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

// runResult holds what one Run of the training graph measured.
type runResult struct {
	tokens     int
	elapsed    time.Duration
	loss       float64
	gradNorm   float64
	magnitudes map[string][]float32 // linear name → Σ|y| per output feature
}

// runTraining tokenizes generated text into a batch (labels: the tokens
// themselves; for MLM every sixth token), binds the model's parameters,
// and runs train.onnx once after a warm-up run.
func runTraining(modelDir, trainDir string, man *modeldir.Manifest, art *train.Artifact, opt Options) (*runResult, error) {
	tok, err := tokenizer.Load(filepath.Join(modelDir, modeldir.TokenizerFile))
	if err != nil {
		return nil, err
	}
	encs, err := tok.EncodeBatch(tokenizer.SampleCorpus(opt.Texts, opt.Seed+1), true)
	if err != nil {
		return nil, err
	}
	seq := 0
	for _, e := range encs {
		seq = max(seq, min(len(e.IDs), 64))
	}
	batch := len(encs)
	ids := make([]int64, batch*seq)
	mask := make([]int64, batch*seq)
	labels := make([]int64, batch*seq)
	pad := int64(max(tok.SpecialIDs().PAD, 0))
	tokens := 0
	for b, e := range encs {
		for s := 0; s < seq; s++ {
			i := b*seq + s
			ids[i], labels[i] = pad, train.IgnoreIndex
			if s < len(e.IDs) {
				ids[i], mask[i], labels[i] = int64(e.IDs[s]), 1, int64(e.IDs[s])
				if man.Objective == "mlm" && s%6 != 1 {
					labels[i] = train.IgnoreIndex
				}
				tokens++
			}
		}
	}
	feeds := map[string][]int64{"input_ids": ids, "attention_mask": mask, "labels": labels}
	if man.Objective == "seq2seq" {
		// The decoder reads the same text shifted right behind its start token.
		dec := make([]int64, len(ids))
		for b := 0; b < batch; b++ {
			dec[b*seq] = man.SpecialTokens["decoder_start"]
			copy(dec[b*seq+1:(b+1)*seq], ids[b*seq:(b+1)*seq-1])
		}
		feeds["decoder_input_ids"], feeds["decoder_attention_mask"] = dec, mask
	}

	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	in := map[string]ort.Value{}
	defer func() {
		for _, v := range in {
			v.Close()
		}
	}()
	for name, v := range feeds {
		t, err := ort.NewTensor(v, int64(batch), int64(seq))
		if err != nil {
			return nil, err
		}
		in[name] = t
	}
	for _, p := range art.Params {
		vals, err := m.Float32s(m.Graph().Initializer(p.Name))
		if err != nil {
			return nil, err
		}
		t, err := ort.NewTensor(vals, p.Shape...)
		if err != nil {
			return nil, err
		}
		in[p.Name] = t
	}
	s, err := ort.NewSession(filepath.Join(trainDir, train.GraphFile), ort.SessionOptions{Threads: opt.Threads})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	warm, err := s.Run(in) // ORT's first run is slow
	if err != nil {
		return nil, err
	}
	for _, o := range warm {
		o.Close()
	}
	start := time.Now()
	outs, err := s.Run(in)
	if err != nil {
		return nil, err
	}
	res := &runResult{tokens: tokens, elapsed: time.Since(start), magnitudes: map[string][]float32{}}
	byName := map[string][]float32{}
	for i, info := range s.Outputs() {
		byName[info.Name] = outs[i].(*ort.Tensor[float32]).Data()
		defer outs[i].Close()
	}
	res.loss = float64(byName[art.Loss][0])
	var sq float64
	for _, p := range art.Params {
		for _, g := range byName[p.Grad] {
			sq += float64(g) * float64(g)
		}
	}
	res.gradNorm = math.Sqrt(sq)
	for _, t := range art.Taps {
		res.magnitudes[t.Name] = append([]float32(nil), byName[t.Output]...)
	}
	return res, nil
}

// maskTable applies MIGU's rule to each layer's magnitudes and tabulates,
// per role, the share of features kept and how concentrated the
// magnitudes are (the kept features' share of the total).
func maskTable(man *modeldir.Manifest, magnitudes map[string][]float32, t float64) (string, error) {
	type agg struct {
		layers          int
		kept, features  int
		keptMag, allMag float64
	}
	byRole := map[modeldir.Role]*agg{}
	for _, l := range man.Linears {
		n := magnitudes[l.Name]
		keep := make([]bool, len(n))
		kept, err := migu.Mask(n, t, keep)
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", l.Name, err)
		}
		a := byRole[l.Role]
		if a == nil {
			a = &agg{}
			byRole[l.Role] = a
		}
		a.layers++
		a.kept += kept
		a.features += len(n)
		for j, v := range n {
			a.allMag += float64(v)
			if keep[j] {
				a.keptMag += float64(v)
			}
		}
	}
	roles := make([]modeldir.Role, 0, len(byRole))
	for r := range byRole {
		roles = append(roles, r)
	}
	sort.Slice(roles, func(i, j int) bool { return roleIndex(roles[i]) < roleIndex(roles[j]) })
	var sb strings.Builder
	fmt.Fprintf(&sb, "   %-9s %6s %9s %13s %22s\n", "role", "layers", "features", "updated", "share of Σ|y| updated")
	for _, r := range roles {
		a := byRole[r]
		fmt.Fprintf(&sb, "   %-9s %6d %9d %12.1f%% %21.1f%%\n", r, a.layers, a.features,
			100*float64(a.kept)/float64(a.features), 100*a.keptMag/a.allMag)
	}
	return sb.String(), nil
}

func roleIndex(r modeldir.Role) int {
	for i, x := range modeldir.Roles {
		if x == r {
			return i
		}
	}
	return len(modeldir.Roles)
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
