package exporters

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/tokenizer"
)

// GGUFConverter is a Converter whose family llama.cpp and ollama store as
// GGUF files: it names each checkpoint tensor as GGUF does and writes the
// family's metadata. The architecture's FromGGUF does the reverse for the
// config.
type GGUFConverter interface {
	Converter
	// GGUFTensor maps a Hugging Face tensor name of Tensors() to its GGUF
	// name. heads > 0 says llama.cpp's converter interleaved the rows of
	// that tensor's rotary halves within each of that many heads.
	GGUFTensor(name string) (ggufName string, heads int64, ok bool)
	// GGUFMetadata returns the keys of the family (general.architecture
	// and ARCH.*), tokenizer keys aside.
	GGUFMetadata() ([]gguf.KV, error)
}

// ggufArchitecture finds the architecture whose GGUF files have the given
// general.architecture.
func ggufArchitecture(name string) (*Architecture, error) {
	var known []string
	for _, n := range Names() {
		a := registry[n]
		if a.GGUFArch == "" {
			continue
		}
		if a.GGUFArch == name {
			return a, nil
		}
		known = append(known, a.GGUFArch)
	}
	return nil, fmt.Errorf("general.architecture %q is not supported (supported: %s)", name, strings.Join(known, ", "))
}

// openGGUF opens a GGUF file as an export source: config.json from its
// metadata, weights dequantized to float32 under Hugging Face names (rows
// of rotary projections put back in Hugging Face order), the tokenizer from
// tokenizer.ggml.*, and tokenizer_config.json with the chat template.
func openGGUF(path string) (src *source, err error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if t, _, err := f.String("general.type"); err == nil && t != "" && t != "model" {
		return nil, badinput.Errorf("%s: general.type is %q: migu exports models (a LoRA adapter GGUF applies to its base model in llama.cpp)", path, t)
	}
	arch, err := ggufArchitecture(f.Architecture())
	if err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	cfg, err := arch.FromGGUF(f)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	config, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	config = append(config, '\n')
	vocab, err := ggufVocab(f)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	tok, err := tokenizer.FromGGUF(vocab)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	tokConfig, err := ggufTokenizerConfig(f, vocab, cfg)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	w := &ggufWeights{file: f}
	return &source{
		label: path, config: config, configLabel: path, weights: w, tok: tok, tokConfig: tokConfig,
		check: func(specs []TensorSpec) error { return w.check(path, arch, config, specs) },
		close: f.Close,
	}, nil
}

// ggufWeights reads a GGUF file's tensors by Hugging Face name.
type ggufWeights struct {
	file  *gguf.File
	names map[string]ggufTensor // Hugging Face name → GGUF tensor
}

type ggufTensor struct {
	name  string
	heads int64
}

// check maps every tensor the converter reads to the file, comparing
// shapes and types, and refuses tensors of the file that the graph would
// leave out: they mean the model computes something migu does not.
func (w *ggufWeights) check(path string, arch *Architecture, config []byte, specs []TensorSpec) error {
	_, conv, err := parseConfig(path, config)
	if err != nil {
		return err
	}
	gc, ok := conv.(GGUFConverter)
	if !ok {
		return fmt.Errorf("exporters: architecture %s declares GGUF files but its converter does not name GGUF tensors", arch.Name)
	}
	w.names = map[string]ggufTensor{}
	used := map[string]bool{}
	for _, s := range specs {
		name, heads, ok := gc.GGUFTensor(s.Name)
		if !ok {
			return fmt.Errorf("exporters: %s has no GGUF name for tensor %s", arch.Name, s.Name)
		}
		info, present := w.file.Tensor(name)
		if !present {
			if s.Optional {
				continue
			}
			return badinput.Errorf("%s: tensor %s is missing (the config implies it)", path, name)
		}
		if !slices.Equal(info.Shape(), s.Shape) {
			return badinput.Errorf("%s: tensor %s has shape %v, the metadata implies %v", path, name, info.Shape(), s.Shape)
		}
		w.names[s.Name] = ggufTensor{name, heads}
		used[name] = true
	}
	var extra []string
	for _, t := range w.file.Tensors {
		if !used[t.Name] {
			extra = append(extra, t.Name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return badinput.Errorf("%s: tensor %s is not part of the %s model migu builds (%d such tensors); its maths is not supported", path, extra[0], arch.Name, len(extra))
	}
	return nil
}

// StoredType keeps F16 and BF16 tensors in their type; quantized and F32
// tensors become float32.
func (w *ggufWeights) StoredType(name string) onnx.DType {
	if t, ok := w.names[name]; ok {
		if info, ok := w.file.Tensor(t.name); ok {
			switch info.Type {
			case gguf.F16:
				return onnx.Float16
			case gguf.BF16:
				return onnx.BFloat16
			}
		}
	}
	return onnx.Float
}

// Release gives a tensor's mapped pages back after export has read it.
func (w *ggufWeights) Release(name string) {
	if t, ok := w.names[name]; ok {
		w.file.Release(t.name)
	}
}

// Float32 dequantizes a tensor and puts permuted rows back in Hugging Face
// order.
func (w *ggufWeights) Float32(name string) ([]float32, error) {
	t, ok := w.names[name]
	if !ok {
		return nil, fmt.Errorf("tensor %s: not in the GGUF file", name)
	}
	data, err := w.file.Float32(t.name)
	if err != nil {
		return nil, err
	}
	if t.heads > 0 {
		info, _ := w.file.Tensor(t.name)
		shape := info.Shape()
		cols := int64(1)
		if len(shape) == 2 {
			cols = shape[1]
		}
		if err := UnpermuteRotary(data, shape[0], cols, t.heads); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.name, err)
		}
	}
	return data, nil
}

// PermuteRotary reorders the rows of a rotary projection (q or k, [rows,
// cols] row-major) from Hugging Face's layout, where each head holds the
// first halves of its rotary pairs and then the second halves, to the
// interleaved layout of llama.cpp's GGUF files, where the two members of
// each pair are adjacent: within a head of d rows, row j·d/2 + i moves to
// row 2i + j.
func PermuteRotary(data []float32, rows, cols, heads int64) error {
	return reorderRotary(data, rows, cols, heads, true)
}

// UnpermuteRotary undoes PermuteRotary.
func UnpermuteRotary(data []float32, rows, cols, heads int64) error {
	return reorderRotary(data, rows, cols, heads, false)
}

func reorderRotary(data []float32, rows, cols, heads int64, toGGUF bool) error {
	if heads <= 0 || rows%heads != 0 || (rows/heads)%2 != 0 || int64(len(data)) != rows*cols {
		return fmt.Errorf("cannot reorder %d×%d rows as %d heads of rotary pairs", rows, cols, heads)
	}
	d := rows / heads
	half := d / 2
	out := make([]float32, len(data))
	for h := range heads {
		for j := range int64(2) {
			for i := range half {
				hf := h*d + j*half + i
				gg := h*d + 2*i + j
				src, dst := hf, gg
				if !toGGUF {
					src, dst = gg, hf
				}
				copy(out[dst*cols:(dst+1)*cols], data[src*cols:(src+1)*cols])
			}
		}
	}
	copy(data, out)
	return nil
}

// ggufVocab reads tokenizer.ggml.* into the tokenizer package's form.
func ggufVocab(f *gguf.File) (tokenizer.GGUFVocab, error) {
	v := tokenizer.GGUFVocab{BOS: -1, EOS: -1, UNK: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1}
	var err error
	var ok bool
	if v.Model, ok, err = f.String("tokenizer.ggml.model"); err != nil {
		return v, err
	} else if !ok {
		return v, fmt.Errorf("key tokenizer.ggml.model is missing: the file carries no tokenizer")
	}
	if v.Pre, _, err = f.String("tokenizer.ggml.pre"); err != nil {
		return v, err
	}
	if v.Tokens, ok, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		return v, err
	} else if !ok {
		return v, fmt.Errorf("key tokenizer.ggml.tokens is missing")
	}
	if v.Scores, _, err = f.Float32s("tokenizer.ggml.scores"); err != nil {
		return v, err
	}
	if v.Types, _, err = f.Int32s("tokenizer.ggml.token_type"); err != nil {
		return v, err
	}
	if v.Merges, _, err = f.Strings("tokenizer.ggml.merges"); err != nil {
		return v, err
	}
	for _, id := range []struct {
		key string
		dst *int
	}{
		{"bos_token_id", &v.BOS}, {"eos_token_id", &v.EOS}, {"unknown_token_id", &v.UNK},
		{"padding_token_id", &v.PAD}, {"seperator_token_id", &v.SEP}, {"cls_token_id", &v.CLS}, {"mask_token_id", &v.MASK},
	} {
		n, set, err := f.Uint("tokenizer.ggml." + id.key)
		if err != nil {
			return v, err
		}
		if set {
			if n >= uint64(len(v.Tokens)) {
				return v, fmt.Errorf("key tokenizer.ggml.%s is %d, past the %d tokens", id.key, n, len(v.Tokens))
			}
			*id.dst = int(n)
		}
	}
	for _, b := range []struct {
		key string
		dst **bool
	}{{"add_bos_token", &v.AddBOS}, {"add_eos_token", &v.AddEOS}, {"add_space_prefix", &v.AddSpacePrefix}} {
		x, set, err := f.Bool("tokenizer.ggml." + b.key)
		if err != nil {
			return v, err
		}
		if set {
			*b.dst = &x
		}
	}
	return v, nil
}

// ggufTokenizerConfig writes the tokenizer_config.json a Hugging Face
// checkpoint of the model would have: the special tokens' strings, whether
// bos/eos are added, the context length and the chat template.
func ggufTokenizerConfig(f *gguf.File, v tokenizer.GGUFVocab, cfg map[string]any) ([]byte, error) {
	tc := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"clean_up_tokenization_spaces": false,
	}
	for _, s := range []struct {
		key string
		id  int
	}{{"bos_token", v.BOS}, {"eos_token", v.EOS}, {"unk_token", v.UNK}, {"pad_token", v.PAD}, {"sep_token", v.SEP}, {"cls_token", v.CLS}, {"mask_token", v.MASK}} {
		if s.id >= 0 {
			tc[s.key] = v.Tokens[s.id]
		}
	}
	if v.AddBOS != nil {
		tc["add_bos_token"] = *v.AddBOS
	}
	if v.AddEOS != nil {
		tc["add_eos_token"] = *v.AddEOS
	}
	if n, ok := cfg["max_position_embeddings"]; ok {
		tc["model_max_length"] = n
	}
	tmpl, ok, err := f.String("tokenizer.chat_template")
	if err != nil {
		return nil, err
	}
	if ok {
		tc["chat_template"] = tmpl
	}
	raw, err := json.MarshalIndent(tc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(raw, '\n'), nil
}
