// Package exporters turns Hugging Face checkpoints (config.json, safetensors
// weights, tokenizer.json) into migu model folders: a forward ONNX graph
// with its weights as external data, and migu.json listing every linear
// layer with its role. One file per architecture (llama.go, t5.go,
// roberta.go), each a Converter registered by name; the graphs use only
// standard ONNX operators in forms whose gradients are cheap.
package exporters

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/ollama"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/tokenizer"
)

// Converter builds one architecture's forward graph. A fresh Converter is
// filled from config.json by encoding/json (its fields carry the Hugging
// Face names as JSON tags), then validated, then asked for its tensors and
// its graph.
type Converter interface {
	// Validate rejects missing or contradictory config fields, naming them.
	Validate() error
	// Tensors lists every checkpoint tensor the graph reads, with its
	// Hugging Face name and shape, and how `migu init` fills it.
	Tensors() []TensorSpec
	// Build adds the graph's inputs, nodes and outputs to b and fills the
	// architecture fields of b.Manifest (objective, dims, special tokens).
	Build(b *Builder) error
}

// Architecture registers a model family.
type Architecture struct {
	// Name is migu.json's architecture and `migu init --arch`.
	Name string
	// ModelTypes are the config.json model_type values it accepts.
	ModelTypes []string
	// New returns an empty Converter for json.Unmarshal to fill.
	New func() Converter
	// Preset returns a config.json for `migu init` (one of Presets) with the
	// given vocabulary size and special token ids.
	Preset func(name string, vocab int, special SpecialTokens) (map[string]any, error)
	// Presets names the sizes Preset makes, smallest first.
	Presets []string
	// Tokenizer is the tokenizer family `migu init` trains for it.
	Tokenizer tokenizer.Kind
	// GGUFArch is general.architecture of the family's GGUF files ("": the
	// family has none); its Converter then implements GGUFConverter.
	GGUFArch string
	// FromGGUF derives config.json from a GGUF file's metadata, naming the
	// GGUF key behind any problem.
	FromGGUF func(f *gguf.File) (map[string]any, error)
	// CachedGraphs builds a model folder's key/value-cache graphs for
	// generation, where the family has them; register adds it to
	// kvcache's registry under Name.
	CachedGraphs kvcache.Builder
}

// SpecialTokens are the ids of a tokenizer's special tokens (-1: none).
type SpecialTokens struct {
	BOS, EOS, PAD, UNK, Mask int64
}

var registry = map[string]*Architecture{}

// register adds an architecture; each architecture file calls it from init.
func register(a *Architecture) {
	if _, dup := registry[a.Name]; dup {
		panic("exporters: architecture registered twice: " + a.Name)
	}
	registry[a.Name] = a
	if a.CachedGraphs != nil {
		kvcache.Register(a.Name, a.CachedGraphs)
	}
}

// Names lists the registered architectures.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns an architecture by name, or a bad-input error listing the
// ones that exist.
func Lookup(name string) (*Architecture, error) {
	if a, ok := registry[name]; ok {
		return a, nil
	}
	return nil, badinput.Errorf("unknown architecture %q (supported: %s)", name, strings.Join(Names(), ", "))
}

// forModelType finds the architecture of a config.json model_type.
func forModelType(modelType string) (*Architecture, error) {
	var known []string
	for _, n := range Names() {
		a := registry[n]
		for _, t := range a.ModelTypes {
			if t == modelType {
				return a, nil
			}
			known = append(known, t)
		}
	}
	return nil, badinput.Errorf("model_type %q is not supported (supported: %s)", modelType, strings.Join(known, ", "))
}

// ParseConfig reads a config.json into its architecture's validated
// Converter.
func ParseConfig(path string) (*Architecture, Converter, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, badinput.Wrap(err)
	}
	return parseConfig(path, raw)
}

// parseConfig is ParseConfig on the contents of a config.json; label names
// it in errors.
func parseConfig(label string, raw []byte) (*Architecture, Converter, error) {
	var head struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, nil, badinput.Errorf("%s: %v", label, err)
	}
	if head.ModelType == "" {
		return nil, nil, badinput.Errorf("%s: field model_type is missing", label)
	}
	arch, err := forModelType(head.ModelType)
	if err != nil {
		return nil, nil, badinput.Errorf("%s: %v", label, err)
	}
	conv := arch.New()
	if err := json.Unmarshal(raw, conv); err != nil {
		return nil, nil, badinput.Errorf("%s: %v", label, err)
	}
	if err := conv.Validate(); err != nil {
		return nil, nil, badinput.Errorf("%s: %v", label, err)
	}
	return arch, conv, nil
}

// source is a checkpoint opened for export: a Hugging Face folder or a GGUF
// file, seen the same way — a config.json, weights under Hugging Face
// names, a tokenizer and, where the model has one, tokenizer_config.json.
type source struct {
	label  string // the folder or file, for errors
	config []byte
	// configLabel names config in errors: the config.json, or the GGUF
	// file it was derived from.
	configLabel string
	weights     Weights
	tok         *tokenizer.Tokenizer
	tokConfig   []byte // nil: none
	// check compares the weights with the tensors the converter reads.
	check func(specs []TensorSpec) error
	close func() error
}

// DType is the precision `migu export --dtype` stores weight matrices in.
// Training keeps float32 master copies of whatever it trains, so a
// half-precision folder halves the memory of the frozen weights only.
type DType string

const (
	DTypeKeep DType = "keep" // the checkpoint's own: F16 and BF16 stay, the rest is float32
	DTypeF32  DType = "f32"
	DTypeF16  DType = "f16"
	DTypeBF16 DType = "bf16"
)

// ParseDType checks a --dtype value ("" is keep).
func ParseDType(s string) (DType, error) {
	switch d := DType(s); d {
	case "":
		return DTypeKeep, nil
	case DTypeKeep, DTypeF32, DTypeF16, DTypeBF16:
		return d, nil
	}
	return "", badinput.Errorf("%v %q is not one of keep, f32, f16, bf16", badinput.Setting("dtype"), s)
}

// ExportOptions tune Export.
type ExportOptions struct {
	// DType is where weight matrices are stored (default keep).
	DType DType
}

// Export converts a checkpoint into a model folder at out, with default
// options. from is a Hugging Face checkpoint folder, a GGUF file, or
// ollama:NAME[:TAG] for a model pulled by ollama. Nothing is left at out
// unless the whole export succeeds.
func Export(from, out string) (*modeldir.Manifest, error) {
	return ExportWith(from, out, ExportOptions{})
}

// ExportWith is Export with options. It streams: each weight goes from the
// checkpoint's mapping to the data file before the next is read, so memory
// stays that of the largest tensor, not of the model.
func ExportWith(from, out string, opt ExportOptions) (*modeldir.Manifest, error) {
	dtype, err := ParseDType(string(opt.DType))
	if err != nil {
		return nil, err
	}
	src, err := openSource(from)
	if err != nil {
		return nil, err
	}
	defer src.close()
	arch, conv, err := parseConfig(src.configLabel, src.config)
	if err != nil {
		return nil, err
	}
	if err := src.check(conv.Tensors()); err != nil {
		return nil, err
	}
	stage, err := modeldir.Stage(out)
	if err != nil {
		return nil, err
	}
	defer stage.Abort()
	data, err := onnx.CreateData(stage.Dir, modeldir.DataFile)
	if err != nil {
		return nil, err
	}
	defer data.Abort()
	b := newBuilder(arch.Name, src.weights)
	b.dtype, b.data = dtype, data
	b.Manifest.Source = modeldir.Source{Exporter: "migu", From: from}
	if err := conv.Build(b); err != nil {
		return nil, err
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	if err := checkTokenizer(src.label, src.tok, b.Manifest); err != nil {
		return nil, err
	}
	if err := data.Commit(); err != nil {
		return nil, err
	}
	if err := b.Model.Save(filepath.Join(stage.Dir, modeldir.ModelFile), onnx.SaveOptions{External: onnx.ExternalKeep}); err != nil {
		return nil, err
	}
	files := map[string][]byte{modeldir.ConfigFile: src.config, modeldir.TokenizerConfigFile: src.tokConfig}
	for name, data := range files {
		if data == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(stage.Dir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := src.tok.Save(filepath.Join(stage.Dir, modeldir.TokenizerFile)); err != nil {
		return nil, err
	}
	if err := modeldir.WriteManifest(stage.Dir, b.Manifest); err != nil {
		return nil, err
	}
	return b.Manifest, stage.Commit()
}

// openSource opens what --from names: ollama:NAME[:TAG], a GGUF file, or a
// Hugging Face checkpoint folder.
func openSource(from string) (*source, error) {
	if ref, ok := strings.CutPrefix(from, ollama.Prefix); ok {
		m, err := ollama.Resolve(ref, "")
		if err != nil {
			return nil, err
		}
		return openGGUF(m.GGUF)
	}
	st, err := os.Stat(from)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", from, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return openGGUF(from)
	}
	return openHF(from)
}

// openHF opens a Hugging Face checkpoint folder: config.json, safetensors
// weights, tokenizer.json (or a SentencePiece model) and, when present,
// tokenizer_config.json.
func openHF(dir string) (*source, error) {
	cfgPath := filepath.Join(dir, modeldir.ConfigFile)
	config, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	tok, err := loadTokenizer(dir)
	if err != nil {
		return nil, err
	}
	tokConfig, err := os.ReadFile(filepath.Join(dir, modeldir.TokenizerConfigFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ckpt, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return &source{
		label: dir, config: config, configLabel: cfgPath, weights: hfWeights{ckpt}, tok: tok, tokConfig: tokConfig,
		check: func(specs []TensorSpec) error { return checkTensors(dir, ckpt, specs) },
		close: ckpt.Close,
	}, nil
}

// hfWeights are a safetensors checkpoint's tensors, with their stored types.
type hfWeights struct{ *safetensors.Checkpoint }

// StoredType maps F16 and BF16 to their ONNX types and everything else to
// float32.
func (w hfWeights) StoredType(name string) onnx.DType {
	info, err := w.Info(name)
	if err != nil {
		return onnx.Float
	}
	switch info.DType {
	case safetensors.F16:
		return onnx.Float16
	case safetensors.BF16:
		return onnx.BFloat16
	}
	return onnx.Float
}

// checkTensors compares the checkpoint with what the architecture reads:
// every tensor present, with the expected shape and a float dtype.
func checkTensors(dir string, ckpt *safetensors.Checkpoint, specs []TensorSpec) error {
	for _, s := range specs {
		info, err := ckpt.Info(s.Name)
		if err != nil {
			if s.Optional {
				continue
			}
			return badinput.Errorf("%s: tensor %s is missing from the checkpoint", dir, s.Name)
		}
		if !slices.Equal(info.Shape, s.Shape) {
			return badinput.Errorf("%s: tensor %s has shape %v, the config implies %v", dir, s.Name, info.Shape, s.Shape)
		}
		switch info.DType {
		case safetensors.F32, safetensors.F16, safetensors.BF16:
		default:
			return badinput.Errorf("%s: tensor %s is %v; weights must be F32, F16 or BF16", dir, s.Name, info.DType)
		}
	}
	return nil
}

// loadTokenizer reads the checkpoint's tokenizer.json, or converts a
// SentencePiece tokenizer.model when that is all the checkpoint has.
func loadTokenizer(dir string) (*tokenizer.Tokenizer, error) {
	for _, name := range []string{modeldir.TokenizerFile, "tokenizer.model", "spiece.model"} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err == nil {
			return tokenizer.Load(path)
		}
	}
	return nil, badinput.Errorf("%s: no %s (or SentencePiece tokenizer.model): migu needs the tokenizer beside the weights", dir, modeldir.TokenizerFile)
}

// checkTokenizer refuses a tokenizer whose ids would index past the
// embedding table, and fills the special tokens the config does not name
// (unk, mask, …) from the tokenizer.
func checkTokenizer(dir string, tok *tokenizer.Tokenizer, man *modeldir.Manifest) error {
	if n := int64(tok.VocabSize()); n > man.VocabSize {
		return badinput.Errorf("%s: the tokenizer has ids up to %d, past the model's embedding table (vocab_size %d)", dir, n-1, man.VocabSize)
	}
	ids := tok.SpecialIDs()
	for role, id := range map[string]int{"bos": ids.BOS, "eos": ids.EOS, "pad": ids.PAD, "unk": ids.UNK, "mask": ids.MASK} {
		if _, set := man.SpecialTokens[role]; !set && id >= 0 {
			man.SpecialTokens[role] = int64(id)
		}
	}
	return nil
}

// TensorSpec is a checkpoint tensor an architecture reads.
type TensorSpec struct {
	Name  string  // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
	Shape []int64 // Hugging Face layout ([out, in] for linear weights)
	Init  Fill    // how `migu init` fills it
	// Optional tensors may be absent (a tied head's weight, say).
	Optional bool
}

// Fill says how `migu init` fills a tensor.
type Fill struct {
	Kind string  // "normal", "zeros", "ones"
	Std  float64 // for normal
}

// Normal, Zeros and Ones are the initialisations migu init uses.
func Normal(std float64) Fill { return Fill{Kind: "normal", Std: std} }

var (
	Zeros = Fill{Kind: "zeros"}
	Ones  = Fill{Kind: "ones"}
)

// fieldError names a config field in a validation error.
func fieldError(field string, format string, args ...any) error {
	return fmt.Errorf("field %s: %s", field, fmt.Sprintf(format, args...))
}

// dim is a config size field for requirePositive.
type dim struct {
	name string
	v    int64
}

// requirePositive checks that every size field is present and positive,
// naming the first one that is not.
func requirePositive(dims ...dim) error {
	for _, d := range dims {
		if d.v == 0 {
			return fieldError(d.name, "is missing or 0")
		}
		if d.v < 0 {
			return fieldError(d.name, "is %d; it must be positive", d.v)
		}
	}
	return nil
}

// Parameters counts the elements of the tensors a checkpoint must hold
// (optional tied copies excluded).
func Parameters(specs []TensorSpec) int64 {
	var n int64
	for _, s := range specs {
		if s.Optional {
			continue
		}
		e := int64(1)
		for _, d := range s.Shape {
			e *= d
		}
		n += e
	}
	return n
}
