// Package ggufexport writes migu model folders, and LoRA adapters trained on
// them, as GGUF files that llama.cpp and ollama run: the weights under
// llama.cpp's tensor names with the rows of rotary projections interleaved
// as its converter leaves them, the family's metadata, the tokenizer as
// tokenizer.ggml.* keys and the chat template.
package ggufexport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/tokenizer"
)

// Types are the storage types a written file may use for its matrices.
var Types = []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0}

// ParseType reads --type: f32, f16, bf16 or q8_0.
func ParseType(s string) (gguf.Type, error) {
	t, err := gguf.ParseType(s)
	if err == nil {
		for _, ok := range Types {
			if t == ok {
				return t, nil
			}
		}
	}
	return 0, badinput.Errorf("GGUF type %q is not one migu writes (f32, f16, bf16, q8_0)", s)
}

// fileType is general.file_type: llama.cpp's llama_ftype for a file whose
// matrices are all of one type.
var fileType = map[gguf.Type]uint32{gguf.F32: 0, gguf.F16: 1, gguf.Q8_0: 7, gguf.BF16: 32}

// Options configure Model.
type Options struct {
	// Type stores the matrices (F32, F16, BF16 or Q8_0); vectors such as
	// norm weights and biases stay F32, as llama.cpp keeps them.
	Type gguf.Type
	// Adapter, when set, is an adapter folder merged into the weights
	// before they are written.
	Adapter string
	// Name is general.name; "" takes the model folder's name.
	Name string
}

// Result describes a written file.
type Result struct {
	Path    string
	Tensors int
	Bytes   int64
	// Widened lists the matrices stored in a wider type than asked, each
	// with the reason (Q8_0 needs rows of whole 32-value blocks).
	Widened []string
}

// family is a model folder's architecture seen from the GGUF side.
type family struct {
	arch *exporters.Architecture
	conv exporters.GGUFConverter
	man  *modeldir.Manifest
}

func openFamily(modelDir string) (*family, error) {
	man, err := modeldir.Check(modelDir)
	if err != nil {
		return nil, err
	}
	arch, conv, err := exporters.ParseConfig(filepath.Join(modelDir, modeldir.ConfigFile))
	if err != nil {
		return nil, err
	}
	gc, ok := conv.(exporters.GGUFConverter)
	if !ok || arch.GGUFArch == "" {
		return nil, badinput.Errorf("%s: architecture %s has no GGUF form migu writes (llama.cpp runs the llama family)", modelDir, arch.Name)
	}
	return &family{arch: arch, conv: gc, man: man}, nil
}

// checkOut refuses an output path that is a folder; an existing file is
// replaced atomically.
func checkOut(out string) error {
	if out == "" {
		return badinput.Errorf("no output file given")
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return badinput.Errorf("%s is a folder; give the path of the .gguf file to write", out)
	}
	return nil
}

// Model writes the model folder modelDir (with opt.Adapter merged in) as a
// GGUF file at out.
func Model(modelDir, out string, opt Options) (*Result, error) {
	if err := checkOut(out); err != nil {
		return nil, err
	}
	ft, ok := fileType[opt.Type]
	if !ok {
		return nil, badinput.Errorf("GGUF type %v is not one migu writes (f32, f16, bf16, q8_0)", opt.Type)
	}
	fam, err := openFamily(modelDir)
	if err != nil {
		return nil, err
	}
	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if opt.Adapter != "" {
		a, err := adapters.Load(opt.Adapter)
		if err != nil {
			return nil, err
		}
		if err := a.Merge(m, fam.man); err != nil {
			return nil, err
		}
	}
	w := gguf.NewWriter()
	meta, err := fam.conv.GGUFMetadata()
	if err != nil {
		return nil, err
	}
	name := opt.Name
	if name == "" {
		name = filepath.Base(filepath.Clean(modelDir))
	}
	meta = append(meta,
		gguf.KV{Key: "general.type", Type: gguf.String, Value: "model"},
		gguf.KV{Key: "general.name", Type: gguf.String, Value: name},
		gguf.KV{Key: "general.file_type", Type: gguf.Uint32, Value: ft})
	if opt.Type == gguf.Q8_0 {
		meta = append(meta, gguf.KV{Key: "general.quantization_version", Type: gguf.Uint32, Value: uint32(2)})
	}
	tok, err := tokenizerKVs(modelDir, fam.man.VocabSize)
	if err != nil {
		return nil, err
	}
	for _, kv := range append(meta, tok...) {
		if err := w.AddKV(kv); err != nil {
			return nil, err
		}
	}
	res := &Result{Path: out}
	g := m.Graph()
	sources := weightSources(fam.man, g)
	for _, spec := range fam.conv.Tensors() {
		src, ok := sources(spec.Name)
		if !ok {
			if spec.Optional {
				continue
			}
			return nil, badinput.Errorf("%s: the model has no tensor %s", modelDir, spec.Name)
		}
		ggName, heads, ok := fam.conv.GGUFTensor(spec.Name)
		if !ok {
			return nil, fmt.Errorf("ggufexport: %s has no GGUF name for %s", fam.arch.Name, spec.Name)
		}
		t := g.Initializer(src.init)
		if t == nil {
			return nil, badinput.Errorf("%s: migu.json names weight %q, which model.onnx does not hold", modelDir, src.init)
		}
		typ := opt.Type
		if len(spec.Shape) < 2 {
			typ = gguf.F32
		} else if elems, _, _ := typ.BlockSize(); spec.Shape[len(spec.Shape)-1]%int64(elems) != 0 {
			res.Widened = append(res.Widened, fmt.Sprintf("%s: F16, rows of %d values are not whole %v blocks of %d", ggName, spec.Shape[len(spec.Shape)-1], typ, elems))
			typ = gguf.F16
		}
		shape := spec.Shape
		err := w.AddTensor(ggName, typ, shape, func() ([]byte, error) {
			vals, err := m.Float32s(t)
			if err != nil {
				return nil, err
			}
			if src.transposed {
				vals = transpose(vals, shape[1], shape[0])
			}
			if heads > 0 {
				cols := int64(1)
				if len(shape) == 2 {
					cols = shape[1]
				}
				if err := exporters.PermuteRotary(vals, shape[0], cols, heads); err != nil {
					return nil, fmt.Errorf("%s: %w", spec.Name, err)
				}
			}
			return gguf.Quantize(typ, vals)
		})
		if err != nil {
			return nil, err
		}
		res.Tensors++
	}
	if err := w.Write(out); err != nil {
		return nil, err
	}
	return res, fileSize(res)
}

// weightSource says where a checkpoint tensor lives in a model folder's
// graph: its initializer, and whether it is stored transposed (linear
// weights in MatMul orientation [d_in, d_out]).
type weightSource struct {
	init       string
	transposed bool
}

// weightSources maps Hugging Face tensor names to initializers: linear
// weights and biases through migu.json (a tied head has no weight of its
// own), every other tensor of g under its own name.
func weightSources(man *modeldir.Manifest, g *onnx.Graph) func(name string) (weightSource, bool) {
	linears := map[string]weightSource{}
	for _, l := range man.Linears {
		if l.Tied == "" {
			linears[l.Name+".weight"] = weightSource{l.Weight, true}
		}
		if l.Bias != "" {
			linears[l.Name+".bias"] = weightSource{l.Bias, false}
		}
	}
	return func(name string) (weightSource, bool) {
		if s, ok := linears[name]; ok {
			return s, true
		}
		if _, linear := strings.CutSuffix(name, ".weight"); linear && isLinearName(man, name) {
			return weightSource{}, false
		}
		return weightSource{name, false}, g.Initializer(name) != nil
	}
}

// isLinearName reports whether name is the weight of a linear of man (a
// tied head, whose checkpoint tensor does not exist).
func isLinearName(man *modeldir.Manifest, name string) bool {
	for _, l := range man.Linears {
		if l.Name+".weight" == name {
			return true
		}
	}
	return false
}

// transpose returns the [cols, rows] transpose of a row-major [rows, cols]
// matrix.
func transpose(v []float32, rows, cols int64) []float32 {
	out := make([]float32, len(v))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = v[i*cols+j]
		}
	}
	return out
}

func fileSize(res *Result) error {
	st, err := os.Stat(res.Path)
	if err != nil {
		return err
	}
	res.Bytes = st.Size()
	return nil
}

// tokenizerKVs reads the model folder's tokenizer.json and chat template
// as tokenizer.* keys. Vocabularies shorter than the embedding table are
// padded with unused [PADn] tokens, as llama.cpp's converter pads them,
// since llama.cpp expects one token per embedding row.
func tokenizerKVs(modelDir string, vocabSize int64) ([]gguf.KV, error) {
	tok, err := tokenizer.Load(filepath.Join(modelDir, modeldir.TokenizerFile))
	if err != nil {
		return nil, err
	}
	v, err := tok.ToGGUF()
	if err != nil {
		return nil, badinput.Errorf("%s: %v", filepath.Join(modelDir, modeldir.TokenizerFile), err)
	}
	if int64(len(v.Tokens)) > vocabSize {
		return nil, badinput.Errorf("%s: %d tokens, more than the model's %d embedding rows", modelDir, len(v.Tokens), vocabSize)
	}
	if v.Types == nil {
		v.Types = make([]int32, len(v.Tokens))
		for i := range v.Types {
			v.Types[i] = tokenNormal
		}
	}
	for i := int64(len(v.Tokens)); i < vocabSize; i++ {
		v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", i))
		v.Types = append(v.Types, tokenUnused)
		if v.Scores != nil {
			v.Scores = append(v.Scores, -1000)
		}
	}
	str := func(k, val string) gguf.KV { return gguf.KV{Key: "tokenizer." + k, Type: gguf.String, Value: val} }
	kvs := []gguf.KV{
		str("ggml.model", v.Model),
		{Key: "tokenizer.ggml.tokens", Type: gguf.Array, ElemType: gguf.String, Value: v.Tokens},
		{Key: "tokenizer.ggml.token_type", Type: gguf.Array, ElemType: gguf.Int32, Value: v.Types},
	}
	if v.Pre != "" {
		kvs = append(kvs, str("ggml.pre", v.Pre))
	}
	if v.Scores != nil {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.scores", Type: gguf.Array, ElemType: gguf.Float32, Value: v.Scores})
	}
	if len(v.Merges) > 0 {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.merges", Type: gguf.Array, ElemType: gguf.String, Value: v.Merges})
	}
	for _, id := range []struct {
		key string
		id  int
	}{{"bos_token_id", v.BOS}, {"eos_token_id", v.EOS}, {"unknown_token_id", v.UNK}, {"padding_token_id", v.PAD},
		{"seperator_token_id", v.SEP}, {"cls_token_id", v.CLS}, {"mask_token_id", v.MASK}} {
		if id.id >= 0 {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml." + id.key, Type: gguf.Uint32, Value: uint32(id.id)})
		}
	}
	for _, b := range []struct {
		key string
		v   *bool
	}{{"add_bos_token", v.AddBOS}, {"add_eos_token", v.AddEOS}, {"add_space_prefix", v.AddSpacePrefix}} {
		if b.v != nil {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml." + b.key, Type: gguf.Bool, Value: *b.v})
		}
	}
	cfg, err := chat.ReadConfig(modelDir)
	if err != nil {
		return nil, err
	}
	if cfg.Template != "" {
		kvs = append(kvs, str("chat_template", cfg.Template))
	}
	return kvs, nil
}

// GGUF token types (tokenizer.ggml.token_type).
const (
	tokenNormal = 1
	tokenUnused = 5
)

// Adapter writes the LoRA adapter folder adapterDir, trained on the model
// folder modelDir, as a llama.cpp adapter GGUF: general.type adapter,
// adapter.type lora, adapter.lora.alpha, and per adapted weight W the
// tensors W.lora_a [r, d_in] and W.lora_b [d_out, r], the rows of B
// interleaved like W's for queries and keys. llama.cpp scales by
// alpha / r, so an rsLoRA adapter (α/√r) is written with the alpha that
// gives the same scale.
func Adapter(modelDir, adapterDir, out string, typ gguf.Type) (*Result, error) {
	if err := checkOut(out); err != nil {
		return nil, err
	}
	if _, ok := fileType[typ]; !ok {
		return nil, badinput.Errorf("GGUF type %v is not one migu writes (f32, f16, bf16, q8_0)", typ)
	}
	fam, err := openFamily(modelDir)
	if err != nil {
		return nil, err
	}
	a, err := lora.Load(adapterDir)
	if err != nil {
		return nil, err
	}
	layers, err := a.Layers(fam.man)
	if err != nil {
		return nil, err
	}
	cfg := a.Config()
	r := int64(cfg.R)
	w := gguf.NewWriter()
	for _, kv := range []gguf.KV{
		{Key: "general.architecture", Type: gguf.String, Value: fam.arch.GGUFArch},
		{Key: "general.type", Type: gguf.String, Value: "adapter"},
		{Key: "general.name", Type: gguf.String, Value: filepath.Base(filepath.Clean(adapterDir))},
		{Key: "adapter.type", Type: gguf.String, Value: "lora"},
		{Key: "adapter.lora.alpha", Type: gguf.Float32, Value: float32(cfg.Scaling() * float64(r))},
	} {
		if err := w.AddKV(kv); err != nil {
			return nil, err
		}
	}
	res := &Result{Path: out}
	for _, l := range layers {
		if l.Tied != "" {
			return nil, badinput.Errorf("%s: layer %s shares the embedding table, and a llama.cpp adapter cannot adapt a tied head; merge the adapter (export-gguf without %v)", adapterDir, l.Name, badinput.Setting("lora_only"))
		}
		ggName, heads, ok := fam.conv.GGUFTensor(l.Name + ".weight")
		if !ok {
			return nil, fmt.Errorf("ggufexport: %s has no GGUF name for %s", fam.arch.Name, l.Name)
		}
		matA, matB, ok := a.Matrices(l.Name)
		if !ok {
			return nil, fmt.Errorf("ggufexport: adapter %s has no values for layer %s", adapterDir, l.Name)
		}
		if heads > 0 {
			if err := exporters.PermuteRotary(matB, l.DOut, r, heads); err != nil {
				return nil, fmt.Errorf("%s: %w", l.Name, err)
			}
		}
		for _, t := range []struct {
			suffix string
			shape  []int64
			vals   []float32
		}{{".lora_a", []int64{r, l.DIn}, matA}, {".lora_b", []int64{l.DOut, r}, matB}} {
			tt := typ
			if elems, _, _ := tt.BlockSize(); t.shape[1]%int64(elems) != 0 {
				res.Widened = append(res.Widened, fmt.Sprintf("%s%s: F16, rows of %d values are not whole %v blocks of %d", ggName, t.suffix, t.shape[1], tt, elems))
				tt = gguf.F16
			}
			vals := t.vals
			if err := w.AddTensor(ggName+t.suffix, tt, t.shape, func() ([]byte, error) { return gguf.Quantize(tt, vals) }); err != nil {
				return nil, err
			}
			res.Tensors++
		}
	}
	if err := w.Write(out); err != nil {
		return nil, err
	}
	return res, fileSize(res)
}
