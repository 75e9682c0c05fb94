package exporters

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/tokenizer"
)

// InitOptions configure Init.
type InitOptions struct {
	Arch   string // llama, t5, roberta
	Preset string // tiny, small; llama also 1b and 7b
	Seed   uint64
	// VocabSize overrides the preset's vocabulary size (tiny 4096, small
	// 8000, 1b and 7b 32000).
	VocabSize int
	// DType is the weights' dtype: f32, f16 or bf16 ("": f32 for tiny and
	// small, bf16 for 1b and 7b, whose float32 files would be 4.4 and 27 GB).
	DType string
	// Corpus trains the tokenizer; nil uses tokenizer.SampleCorpus.
	Corpus []string
}

// InitResult describes the checkpoint Init wrote.
type InitResult struct {
	Arch   string
	Preset string
	// VocabSize is the embedding table's size, config.json's vocab_size.
	VocabSize int
	// TokenizerSize is the tokenizer's: smaller than VocabSize where the
	// table keeps a real model's size that the corpus cannot fill.
	TokenizerSize int
	DType         safetensors.DType
	Parameters    int64
}

// initPreset is what `migu init` knows of a preset apart from its shape.
type initPreset struct {
	// vocab is the tokenizer size trained for by default.
	vocab int
	// fixedTable keeps the embedding table at vocab rows when the corpus
	// yields a smaller tokenizer: the real-shape presets must have their
	// models' parameter counts, and the generated text reaches only a few
	// thousand tokens. The extra rows are ids the tokenizer never produces,
	// as in checkpoints whose tables are padded to a round size.
	fixedTable bool
	dtype      safetensors.DType
}

var initPresets = map[string]initPreset{
	"tiny":  {vocab: 4096, dtype: safetensors.F32},
	"small": {vocab: 8000, dtype: safetensors.F32},
	"1b":    {vocab: 32000, fixedTable: true, dtype: safetensors.BF16},
	"7b":    {vocab: 32000, fixedTable: true, dtype: safetensors.BF16},
}

// initDTypes are the --dtype names Init accepts and config.json's
// torch_dtype for each.
var initDTypes = map[string]struct {
	dtype safetensors.DType
	torch string
}{
	"f32":  {safetensors.F32, "float32"},
	"f16":  {safetensors.F16, "float16"},
	"bf16": {safetensors.BF16, "bfloat16"},
}

// corpusLines is how much generated text trains an init tokenizer.
const corpusLines = 20000

// Init writes a random-initialised Hugging Face checkpoint (config.json,
// model.safetensors, tokenizer.json) to out: a tokenizer of the
// architecture's kind trained on generated text, the preset's config, and
// every tensor filled as its TensorSpec says, reproducibly from the seed
// and streamed to disk, so that a 7B checkpoint needs little memory.
// Both `migu export` and transformers load the result.
func Init(out string, opt InitOptions) (*InitResult, error) {
	p, err := planInit(opt)
	if err != nil {
		return nil, err
	}
	stage, err := modeldir.Stage(out)
	if err != nil {
		return nil, err
	}
	defer stage.Abort()
	params, err := writeRandomWeights(filepath.Join(stage.Dir, safetensors.SingleFile), p.specs, opt.Seed, p.dtype)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage.Dir, modeldir.ConfigFile), append(p.config, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := p.tok.Save(filepath.Join(stage.Dir, modeldir.TokenizerFile)); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	return &InitResult{Arch: p.arch.Name, Preset: opt.Preset, VocabSize: p.table, TokenizerSize: p.tok.VocabSize(), DType: p.dtype, Parameters: params}, nil
}

// initPlan is what Init decides before it writes anything.
type initPlan struct {
	arch   *Architecture
	tok    *tokenizer.Tokenizer
	table  int    // the embedding table's rows
	config []byte // config.json
	specs  []TensorSpec
	dtype  safetensors.DType
}

// planInit checks the options, trains the tokenizer and derives the config
// and the tensors from them.
func planInit(opt InitOptions) (*initPlan, error) {
	arch, err := Lookup(opt.Arch)
	if err != nil {
		return nil, err
	}
	preset, ok := initPresets[opt.Preset]
	if !ok || !slices.Contains(arch.Presets, opt.Preset) {
		return nil, badinput.Errorf("%s has no preset %q (presets: %s)", arch.Name, opt.Preset, strings.Join(arch.Presets, ", "))
	}
	p := &initPlan{arch: arch, dtype: preset.dtype}
	if opt.DType != "" {
		d, ok := initDTypes[opt.DType]
		if !ok {
			return nil, badinput.Errorf("unknown dtype %q (f32, f16, bf16)", opt.DType)
		}
		p.dtype = d.dtype
	}
	torchDType := ""
	for _, d := range initDTypes {
		if d.dtype == p.dtype {
			torchDType = d.torch
		}
	}
	vocab := opt.VocabSize
	if vocab == 0 {
		vocab = preset.vocab
	}
	corpus := opt.Corpus
	if corpus == nil {
		corpus = tokenizer.SampleCorpus(corpusLines, opt.Seed)
	}
	if p.tok, err = tokenizer.Train(corpus, tokenizer.TrainOptions{Kind: arch.Tokenizer, VocabSize: vocab}); err != nil {
		return nil, err
	}
	p.table = p.tok.VocabSize()
	if preset.fixedTable && vocab > p.table {
		p.table = vocab
	}
	ids := p.tok.SpecialIDs()
	special := SpecialTokens{BOS: int64(ids.BOS), EOS: int64(ids.EOS), PAD: int64(ids.PAD), UNK: int64(ids.UNK), Mask: int64(ids.MASK)}
	config, err := arch.Preset(opt.Preset, p.table, special)
	if err != nil {
		return nil, err
	}
	config["torch_dtype"] = torchDType
	if p.config, err = json.MarshalIndent(config, "", "  "); err != nil {
		return nil, err
	}
	conv := arch.New()
	if err := json.Unmarshal(p.config, conv); err != nil {
		return nil, fmt.Errorf("preset %s/%s: %w", arch.Name, opt.Preset, err)
	}
	if err := conv.Validate(); err != nil {
		return nil, fmt.Errorf("preset %s/%s: %w", arch.Name, opt.Preset, err)
	}
	p.specs = conv.Tensors()
	return p, nil
}

// fillChunk is how many values one random stream fills. Tensors are cut
// into chunks of this size, each drawn from its own ChaCha8 stream keyed by
// the seed, the tensor's name and the chunk's index, so that chunks fill in
// parallel and the file depends on the seed alone, not on the core count.
// A variable so that tests can cut small tensors into many chunks.
var fillChunk int64 = 1 << 20

// fillJob is one chunk of a tensor: filled by a worker, then appended to
// the file by the writer, in order.
type fillJob struct {
	spec   *TensorSpec
	chunk  int64
	values []float32
	done   chan struct{}
}

// fill draws the chunk's values.
func (j *fillJob) fill(seed uint64) {
	switch j.spec.Init.Kind {
	case "normal":
		var key [32]byte
		h := fnv.New64a()
		h.Write([]byte(j.spec.Name))
		binary.LittleEndian.PutUint64(key[0:], seed)
		binary.LittleEndian.PutUint64(key[8:], h.Sum64())
		binary.LittleEndian.PutUint64(key[16:], uint64(j.chunk))
		copy(key[24:], "miguinit")
		rng := rand.New(rand.NewChaCha8(key))
		std := j.spec.Init.Std
		for i := range j.values {
			j.values[i] = float32(rng.NormFloat64() * std)
		}
	case "ones":
		for i := range j.values {
			j.values[i] = 1
		}
	}
}

// writeRandomWeights fills each required tensor as its spec says and
// streams it into a safetensors file of the given dtype (values drawn in
// float32, then rounded to nearest even): workers on every core fill
// chunks while this goroutine appends the finished ones in order, so that
// only a few chunks are in memory at once. Optional tensors (tied copies)
// are left out: random values there would disagree with the tensor they
// mirror.
func writeRandomWeights(path string, specs []TensorSpec, seed uint64, dtype safetensors.DType) (int64, error) {
	var kept []safetensors.Spec
	var required []*TensorSpec
	var total int64
	for i, s := range specs {
		if s.Optional {
			continue
		}
		switch s.Init.Kind {
		case "normal", "ones", "zeros":
		default:
			return 0, fmt.Errorf("tensor %s: unknown init %q", s.Name, s.Init.Kind)
		}
		kept = append(kept, safetensors.Spec{Name: s.Name, DType: dtype, Shape: s.Shape})
		required = append(required, &specs[i])
		total += numElements(s.Shape)
	}
	w, err := safetensors.Create(path, kept, map[string]string{"format": "pt"})
	if err != nil {
		return 0, err
	}
	defer w.Abort()

	workers := runtime.GOMAXPROCS(0)
	work := make(chan *fillJob, 2*workers)
	order := make(chan *fillJob, 2*workers)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(work)
		defer close(order)
		for _, s := range required {
			n := numElements(s.Shape)
			for c := int64(0); c == 0 || c*fillChunk < n; c++ {
				j := &fillJob{spec: s, chunk: c, values: make([]float32, min(fillChunk, n-c*fillChunk)), done: make(chan struct{})}
				select {
				case order <- j:
				case <-stop:
					return
				}
				work <- j
			}
		}
	}()
	for range workers {
		go func() {
			for j := range work {
				j.fill(seed)
				close(j.done)
			}
		}()
	}
	for j := range order {
		<-j.done
		if err := w.AppendFloat32(j.spec.Name, j.values); err != nil {
			return 0, err
		}
	}
	return total, w.Commit()
}

// numElements is the product of a shape's dims.
func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}
