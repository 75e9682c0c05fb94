// Package demo is `migu demo`: the built-in default run a newcomer starts
// with. It needs no files: it makes a small model, exports it, runs it in
// ONNX Runtime, and shows which output features MIGU would let an update
// change in every linear layer. It grows with the toolkit; each step is an
// honest run of the real code paths.
package demo

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/tokenizer"
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

	step.start("3. forward pass in ONNX Runtime on %d generated sentences", opt.Texts)
	fw, err := forward(modelDir, man, opt)
	if err != nil {
		return err
	}
	step.done("%d tokens in %.1f ms (%.0f tokens/s, onnxruntime %s from %s)",
		fw.tokens, fw.elapsed.Seconds()*1000, float64(fw.tokens)/fw.elapsed.Seconds(), ort.Version(), ort.LibraryPath())
	fmt.Fprintf(w, "   %s loss %.3f (perplexity %.0f); a uniform guess over %d tokens scores %.3f\n",
		lossName[man.Objective], fw.loss, math.Exp(fw.loss), man.VocabSize, math.Log(float64(man.VocabSize)))

	step.start("4. MIGU: per-layer output magnitudes and the T = %.2f mask", opt.T)
	table, err := maskTable(man, fw, opt.T)
	if err != nil {
		return err
	}
	step.done("%d layers tapped", len(man.Linears))
	fmt.Fprint(w, table)
	fmt.Fprintf(w, "\nEverything is in %s. Inspect the model with:\n  bin/migu inspect %s\n", opt.Out, modelDir)
	return nil
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

// lossName says what the demo's loss measures for each objective.
var lossName = map[string]string{"clm": "next-token", "seq2seq": "decoder", "mlm": "token reconstruction"}

// forwardResult holds what the forward pass measured.
type forwardResult struct {
	tokens     int
	elapsed    time.Duration
	loss       float64
	magnitudes map[string][]float32 // linear name → Σ|y| per output feature
}

// forward tokenizes generated text, runs the model with every linear
// layer's output added as a graph output, and returns the next-token loss
// and each layer's per-feature sum of |y| over the real (unpadded) tokens —
// the statistic MIGU's mask is computed from.
func forward(dir string, man *modeldir.Manifest, opt Options) (*forwardResult, error) {
	tok, err := tokenizer.Load(filepath.Join(dir, modeldir.TokenizerFile))
	if err != nil {
		return nil, err
	}
	texts := tokenizer.SampleCorpus(opt.Texts, opt.Seed+1)
	encs, err := tok.EncodeBatch(texts, true)
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
	pad := int64(max(tok.SpecialIDs().PAD, 0))
	tokens := 0
	for b, e := range encs {
		for s := 0; s < seq; s++ {
			ids[b*seq+s] = pad
			if s < len(e.IDs) {
				ids[b*seq+s], mask[b*seq+s] = int64(e.IDs[s]), 1
				tokens++
			}
		}
	}

	// Tap every linear output: a copy of the graph with extra outputs.
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	g := m.Graph()
	names := []string{man.Outputs[0]}
	for _, l := range man.Linears {
		g.AddOutput(l.Output, onnx.Float, nil)
		names = append(names, l.Output)
	}
	tapped := filepath.Join(dir, "tapped.onnx")
	if err := m.Save(tapped, onnx.SaveOptions{External: onnx.ExternalAll, DataFile: "tapped.onnx.data"}); err != nil {
		return nil, err
	}
	defer os.Remove(tapped)
	defer os.Remove(tapped + ".data")

	if err := ort.Init(ort.InitOptions{}); err != nil {
		return nil, err
	}
	s, err := ort.NewSession(tapped, ort.SessionOptions{Threads: opt.Threads, Outputs: names})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	idT, err := ort.NewTensor(ids, int64(batch), int64(seq))
	if err != nil {
		return nil, err
	}
	defer idT.Close()
	maskT, err := ort.NewTensor(mask, int64(batch), int64(seq))
	if err != nil {
		return nil, err
	}
	defer maskT.Close()
	feeds := map[string]ort.Value{"input_ids": idT, "attention_mask": maskT}
	// A seq2seq model decodes the same text, shifted right behind the
	// decoder start token.
	if man.Objective == "seq2seq" {
		dec := make([]int64, len(ids))
		for b := 0; b < batch; b++ {
			dec[b*seq] = man.SpecialTokens["decoder_start"]
			copy(dec[b*seq+1:(b+1)*seq], ids[b*seq:(b+1)*seq-1])
		}
		decT, err := ort.NewTensor(dec, int64(batch), int64(seq))
		if err != nil {
			return nil, err
		}
		defer decT.Close()
		feeds["decoder_input_ids"], feeds["decoder_attention_mask"] = decT, maskT
	}
	if _, err := s.Run(feeds); err != nil { // warm-up: ORT's first run is slow
		return nil, err
	}
	start := time.Now()
	outs, err := s.Run(feeds)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	defer func() {
		for _, o := range outs {
			o.Close()
		}
	}()
	res := &forwardResult{tokens: tokens, elapsed: elapsed, magnitudes: map[string][]float32{}}
	logits := outs[0].(*ort.Tensor[float32]).Data()
	vocab := int(man.VocabSize)
	// The target at position s: the next token for a causal model, the
	// token itself for seq2seq (decoder inputs are shifted) and MLM.
	shift := 0
	if man.Objective == "clm" {
		shift = 1
	}
	var nll float64
	var count int
	for b := 0; b < batch; b++ {
		for s := 0; s+shift < seq; s++ {
			if mask[b*seq+s+shift] == 0 {
				continue
			}
			row := logits[(b*seq+s)*vocab : (b*seq+s+1)*vocab]
			nll += logSumExp(row) - float64(row[ids[b*seq+s+shift]])
			count++
		}
	}
	res.loss = nll / float64(count)
	for i, l := range man.Linears {
		y := outs[i+1].(*ort.Tensor[float32]).Data()
		n := make([]float32, l.DOut)
		for t := 0; t < batch*seq; t++ {
			if mask[t] == 0 {
				continue
			}
			for j := range n {
				n[j] += float32(math.Abs(float64(y[t*int(l.DOut)+j])))
			}
		}
		res.magnitudes[l.Name] = n
	}
	return res, nil
}

func logSumExp(row []float32) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(sum)
}

// maskTable applies MIGU's rule to each layer's magnitudes and tabulates,
// per role, the share of features kept and how concentrated the
// magnitudes are (the kept features' share of the total).
func maskTable(man *modeldir.Manifest, fw *forwardResult, t float64) (string, error) {
	type agg struct {
		layers          int
		kept, features  int
		keptMag, allMag float64
	}
	byRole := map[modeldir.Role]*agg{}
	for _, l := range man.Linears {
		n := fw.magnitudes[l.Name]
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
