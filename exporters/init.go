package exporters

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/tokenizer"
)

// InitOptions configure Init.
type InitOptions struct {
	Arch   string // llama, t5, roberta
	Preset string // tiny or small
	Seed   uint64
	// VocabSize overrides the preset's vocabulary size (tiny 4096, small 8000).
	VocabSize int
	// Corpus trains the tokenizer; nil uses tokenizer.SampleCorpus.
	Corpus []string
}

// InitResult describes the checkpoint Init wrote.
type InitResult struct {
	Arch       string
	Preset     string
	VocabSize  int
	Parameters int64
}

// presetVocab is the tokenizer size each preset trains by default.
var presetVocab = map[string]int{"tiny": 4096, "small": 8000}

// corpusLines is how much generated text trains an init tokenizer.
const corpusLines = 20000

// Init writes a random-initialised Hugging Face checkpoint (config.json,
// model.safetensors, tokenizer.json) to out: a tokenizer of the
// architecture's kind trained on generated text, the preset's config, and
// every tensor filled as its TensorSpec says, reproducibly from the seed.
// Both `migu export` and transformers load the result.
func Init(out string, opt InitOptions) (*InitResult, error) {
	arch, err := Lookup(opt.Arch)
	if err != nil {
		return nil, err
	}
	vocab := opt.VocabSize
	if vocab == 0 {
		var ok bool
		if vocab, ok = presetVocab[opt.Preset]; !ok {
			return nil, badinput.Errorf("unknown preset %q (tiny, small)", opt.Preset)
		}
	}
	corpus := opt.Corpus
	if corpus == nil {
		corpus = tokenizer.SampleCorpus(corpusLines, opt.Seed)
	}
	tok, err := tokenizer.Train(corpus, tokenizer.TrainOptions{Kind: arch.Tokenizer, VocabSize: vocab})
	if err != nil {
		return nil, err
	}
	ids := tok.SpecialIDs()
	special := SpecialTokens{BOS: int64(ids.BOS), EOS: int64(ids.EOS), PAD: int64(ids.PAD), UNK: int64(ids.UNK), Mask: int64(ids.MASK)}
	config, err := arch.Preset(opt.Preset, tok.VocabSize(), special)
	if err != nil {
		return nil, err
	}
	configJSON, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, err
	}
	conv := arch.New()
	if err := json.Unmarshal(configJSON, conv); err != nil {
		return nil, fmt.Errorf("preset %s/%s: %w", arch.Name, opt.Preset, err)
	}
	if err := conv.Validate(); err != nil {
		return nil, fmt.Errorf("preset %s/%s: %w", arch.Name, opt.Preset, err)
	}

	stage, err := modeldir.Stage(out)
	if err != nil {
		return nil, err
	}
	defer stage.Abort()
	params, err := writeRandomWeights(filepath.Join(stage.Dir, safetensors.SingleFile), conv.Tensors(), opt.Seed)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage.Dir, modeldir.ConfigFile), append(configJSON, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := tok.Save(filepath.Join(stage.Dir, modeldir.TokenizerFile)); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	return &InitResult{Arch: arch.Name, Preset: opt.Preset, VocabSize: tok.VocabSize(), Parameters: params}, nil
}

// writeRandomWeights fills each required tensor from one seeded stream, in
// spec order, and streams them into a safetensors file. Optional tensors
// (tied copies) are left out: random values there would disagree with the
// tensor they mirror.
func writeRandomWeights(path string, specs []TensorSpec, seed uint64) (int64, error) {
	var kept []safetensors.Spec
	var required []TensorSpec
	for _, s := range specs {
		if !s.Optional {
			kept = append(kept, safetensors.Spec{Name: s.Name, DType: safetensors.F32, Shape: s.Shape})
			required = append(required, s)
		}
	}
	w, err := safetensors.Create(path, kept, map[string]string{"format": "pt"})
	if err != nil {
		return 0, err
	}
	defer w.Abort()
	rng := rand.New(rand.NewPCG(seed, 0x696e6974))
	var total int64
	for _, s := range required {
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		values := make([]float32, n)
		switch s.Init.Kind {
		case "normal":
			for i := range values {
				values[i] = float32(rng.NormFloat64() * s.Init.Std)
			}
		case "ones":
			for i := range values {
				values[i] = 1
			}
		case "zeros":
		default:
			return 0, fmt.Errorf("tensor %s: unknown init %q", s.Name, s.Init.Kind)
		}
		if err := w.WriteFloat32(s.Name, values); err != nil {
			return 0, err
		}
		total += n
	}
	return total, w.Commit()
}
