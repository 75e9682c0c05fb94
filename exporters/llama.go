package exporters

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strings"

	"github.com/migu-ml/migu/tokenizer"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// llamaConfig is the config.json of a Llama-2-style decoder
// (LlamaForCausalLM), and of a Mistral without sliding window, whose maths
// is the same. Pointer fields are optional and take transformers' defaults.
type llamaConfig struct {
	ModelType             string          `json:"model_type"`
	VocabSize             int64           `json:"vocab_size"`
	HiddenSize            int64           `json:"hidden_size"`
	IntermediateSize      int64           `json:"intermediate_size"`
	NumHiddenLayers       int64           `json:"num_hidden_layers"`
	NumAttentionHeads     int64           `json:"num_attention_heads"`
	NumKeyValueHeads      *int64          `json:"num_key_value_heads"`
	HeadDim               *int64          `json:"head_dim"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	PartialRotaryFactor   *float64        `json:"partial_rotary_factor"`
	MaxPositionEmbeddings *int64          `json:"max_position_embeddings"`
	HiddenAct             *string         `json:"hidden_act"`
	AttentionBias         bool            `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
	TieWordEmbeddings     bool            `json:"tie_word_embeddings"`
	InitializerRange      *float64        `json:"initializer_range"`
	// SlidingWindow is Mistral's; only null (no window) is supported.
	SlidingWindow json.RawMessage `json:"sliding_window"`
	BOSTokenID    json.RawMessage `json:"bos_token_id"`
	EOSTokenID    json.RawMessage `json:"eos_token_id"`
	PADTokenID    json.RawMessage `json:"pad_token_id"`
}

var _ Converter = (*llamaConfig)(nil)

func init() {
	register(&Architecture{
		Name:       "llama",
		ModelTypes: []string{"llama", "mistral"},
		New:        func() Converter { return &llamaConfig{} },
		Preset:     llamaPreset,
		Presets:    llamaPresetNames,
		Tokenizer:  tokenizer.SentencePieceBPE,
		GGUFArch:   "llama",
		FromGGUF:   llamaFromGGUF,

		CachedGraphs: decoderWithPast,
	})
}

// llamaTokenID reads a special token id from config.json: null, a number,
// or a list (Llama 3 lists several eos ids; the first is kept). Negative
// ids mean none, as some converted checkpoints write pad_token_id -1.
func llamaTokenID(raw json.RawMessage) (id int64, set bool, err error) {
	if llamaIsNull(raw) {
		return 0, false, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) != nil {
		if err := json.Unmarshal(raw, &id); err != nil {
			return 0, false, fmt.Errorf("%s is neither an integer nor a list of integers", llamaCompactJSON(raw))
		}
		ids = []int64{id}
	}
	if len(ids) == 0 || ids[0] < 0 {
		return 0, false, nil
	}
	return ids[0], true, nil
}

// specialTokens returns the bos, eos and pad ids the config sets, or the
// first field that is malformed.
func (c *llamaConfig) specialTokens() (map[string]int64, error) {
	out := map[string]int64{}
	for _, t := range []struct {
		name, field string
		raw         json.RawMessage
	}{{"bos", "bos_token_id", c.BOSTokenID}, {"eos", "eos_token_id", c.EOSTokenID}, {"pad", "pad_token_id", c.PADTokenID}} {
		id, set, err := llamaTokenID(t.raw)
		if err != nil {
			return nil, fieldError(t.field, "%v", err)
		}
		if set && id >= c.VocabSize {
			return nil, fieldError(t.field, "%d is past the embedding table (vocab_size %d)", id, c.VocabSize)
		}
		if set {
			out[t.name] = id
		}
	}
	return out, nil
}

func (c *llamaConfig) isMistral() bool { return c.ModelType == "mistral" }

// kvHeads is num_key_value_heads, defaulting as the transformers class does
// (Llama: the query heads; Mistral: 8).
func (c *llamaConfig) kvHeads() int64 {
	switch {
	case c.NumKeyValueHeads != nil:
		return *c.NumKeyValueHeads
	case c.isMistral():
		return 8
	}
	return c.NumAttentionHeads
}

// headDim is head_dim, or hidden_size / num_attention_heads without it.
func (c *llamaConfig) headDim() int64 {
	if c.HeadDim != nil {
		return *c.HeadDim
	}
	if c.NumAttentionHeads <= 0 {
		return 0
	}
	return c.HiddenSize / c.NumAttentionHeads
}

func (c *llamaConfig) eps() float64 {
	if c.RMSNormEps != nil {
		return *c.RMSNormEps
	}
	return 1e-6
}

func (c *llamaConfig) ropeTheta() float64 {
	if c.RopeTheta != nil {
		return *c.RopeTheta
	}
	return 10000
}

func (c *llamaConfig) maxPositions() int64 {
	switch {
	case c.MaxPositionEmbeddings != nil:
		return *c.MaxPositionEmbeddings
	case c.isMistral():
		return 4096 * 32
	}
	return 2048
}

func (c *llamaConfig) act() string {
	if c.HiddenAct != nil {
		return *c.HiddenAct
	}
	return "silu"
}

func (c *llamaConfig) initStd() float64 {
	if c.InitializerRange != nil {
		return *c.InitializerRange
	}
	return 0.02
}

// attnBias and mlpBias: MistralForCausalLM has no biases whatever its
// config says.
func (c *llamaConfig) attnBias() bool { return c.AttentionBias && !c.isMistral() }
func (c *llamaConfig) mlpBias() bool  { return c.MLPBias && !c.isMistral() }

// llamaIsNull reports whether an optional JSON value is absent or null.
func llamaIsNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

func llamaCompactJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// Validate checks the dimensions and refuses options whose maths the graph
// does not implement (RoPE scaling, partial rotary, sliding window,
// activations other than SiLU).
func (c *llamaConfig) Validate() error {
	if err := requirePositive(
		dim{"vocab_size", c.VocabSize},
		dim{"hidden_size", c.HiddenSize},
		dim{"intermediate_size", c.IntermediateSize},
		dim{"num_hidden_layers", c.NumHiddenLayers},
		dim{"num_attention_heads", c.NumAttentionHeads},
	); err != nil {
		return err
	}
	heads, kv := c.NumAttentionHeads, c.kvHeads()
	if c.HeadDim == nil && c.HiddenSize%heads != 0 {
		return fieldError("hidden_size", "%d is not divisible by num_attention_heads %d (and head_dim is not given)", c.HiddenSize, heads)
	}
	if hd := c.headDim(); hd <= 0 || hd%2 != 0 {
		if c.HeadDim == nil {
			return fieldError("hidden_size", "%d / num_attention_heads %d gives head size %d: rotary embeddings need an even head size", c.HiddenSize, heads, hd)
		}
		return fieldError("head_dim", "%d: rotary embeddings need a positive even head size", hd)
	}
	if kv <= 0 || heads%kv != 0 {
		return fieldError("num_key_value_heads", "%d does not divide num_attention_heads %d", kv, heads)
	}
	if a := c.act(); a != "silu" && a != "swish" {
		return fieldError("hidden_act", "%q is not supported (only silu)", a)
	}
	if c.eps() < 0 {
		return fieldError("rms_norm_eps", "%g is negative", c.eps())
	}
	if c.ropeTheta() <= 0 {
		return fieldError("rope_theta", "%g is not positive", c.ropeTheta())
	}
	if c.maxPositions() <= 0 {
		return fieldError("max_position_embeddings", "%d is not positive", c.maxPositions())
	}
	if !llamaIsNull(c.RopeScaling) {
		var rs struct {
			RopeType string `json:"rope_type"`
			Type     string `json:"type"`
		}
		if err := json.Unmarshal(c.RopeScaling, &rs); err != nil || (rs.RopeType != "default" && rs.Type != "default") {
			return fieldError("rope_scaling", "%s is not supported (only null)", llamaCompactJSON(c.RopeScaling))
		}
	}
	if c.PartialRotaryFactor != nil && *c.PartialRotaryFactor != 1 {
		return fieldError("partial_rotary_factor", "%g is not supported (only 1)", *c.PartialRotaryFactor)
	}
	if c.isMistral() {
		if len(c.SlidingWindow) == 0 {
			return fieldError("sliding_window", "is missing (Mistral's default is 4096); only null (no sliding window) is supported")
		}
		if !llamaIsNull(c.SlidingWindow) {
			return fieldError("sliding_window", "%s is not supported (only null)", llamaCompactJSON(c.SlidingWindow))
		}
	}
	if _, err := c.specialTokens(); err != nil {
		return err
	}
	return nil
}

// Tensors lists the checkpoint tensors by their Hugging Face names. A tied
// head has no lm_head.weight: save_pretrained drops it.
func (c *llamaConfig) Tensors() []TensorSpec {
	h, v, ff := c.HiddenSize, c.VocabSize, c.IntermediateSize
	qd, kvd := c.NumAttentionHeads*c.headDim(), c.kvHeads()*c.headDim()
	std := Normal(c.initStd())
	specs := []TensorSpec{{Name: "model.embed_tokens.weight", Shape: []int64{v, h}, Init: std}}
	linear := func(name string, out, in int64, bias bool) {
		specs = append(specs, TensorSpec{Name: name + ".weight", Shape: []int64{out, in}, Init: std})
		if bias {
			specs = append(specs, TensorSpec{Name: name + ".bias", Shape: []int64{out}, Init: Zeros})
		}
	}
	for i := range c.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", i)
		specs = append(specs, TensorSpec{Name: p + "input_layernorm.weight", Shape: []int64{h}, Init: Ones})
		linear(p+"self_attn.q_proj", qd, h, c.attnBias())
		linear(p+"self_attn.k_proj", kvd, h, c.attnBias())
		linear(p+"self_attn.v_proj", kvd, h, c.attnBias())
		linear(p+"self_attn.o_proj", h, qd, c.attnBias())
		specs = append(specs, TensorSpec{Name: p + "post_attention_layernorm.weight", Shape: []int64{h}, Init: Ones})
		linear(p+"mlp.gate_proj", ff, h, c.mlpBias())
		linear(p+"mlp.up_proj", ff, h, c.mlpBias())
		linear(p+"mlp.down_proj", h, ff, c.mlpBias())
	}
	specs = append(specs,
		TensorSpec{Name: "model.norm.weight", Shape: []int64{h}, Init: Ones},
		TensorSpec{Name: "lm_head.weight", Shape: []int64{v, h}, Init: std, Optional: c.TieWordEmbeddings})
	return specs
}

// Build emits the decoder: embeddings, pre-norm blocks of grouped-query
// attention with rotary positions and a SwiGLU MLP, the final norm and the
// LM head. Positions come from attention_mask (see positions): a
// left-padded row's text gets the positions of the same text unpadded, a
// right-padded row those of transformers' default, padding included.
func (c *llamaConfig) Build(b *Builder) error {
	h, v := c.HiddenSize, c.VocabSize
	ids := b.Input("input_ids", onnx.Int64, onnx.Sym("batch"), onnx.Sym("seq"))
	mask := b.Input("attention_mask", onnx.Int64, onnx.Sym("batch"), onnx.Sym("seq"))

	embed := b.Param("model.embed_tokens.weight", v, h)
	x := b.Gather(embed, ids, "model.embed_tokens")

	// One additive [B, 1, S, S] bias, causal plus padding, shared by all
	// blocks.
	causal := b.CausalBias(b.Dim(ids, 1, "seq_len"), "causal_bias")
	bias := b.Op("Add", []string{causal, b.PaddingBias(mask, "padding_bias")}, "attn_bias")
	cos, sin := c.rotary(b, mask)

	residuals := []string{x}
	for i := range int(c.NumHiddenLayers) {
		x = c.block(b, x, bias, cos, sin, i, nil)
		residuals = append(residuals, x)
	}
	b.Residuals("", residuals)
	x = b.RMSNorm(x, b.Param("model.norm.weight", h), float32(c.eps()), "model.norm")
	var logits string
	if c.TieWordEmbeddings {
		logits = b.TiedHead(x, embed, "lm_head", "", v, h)
	} else {
		logits = b.Linear(x, LinearSpec{Name: "lm_head", Role: modeldir.RoleHead, Block: -1, In: h, Out: v})
	}
	b.Output(logits, "logits", onnx.Float, onnx.Sym("batch"), onnx.Sym("seq"), onnx.D(v))

	m := b.Manifest
	m.Objective = "clm"
	m.VocabSize, m.HiddenSize, m.NumLayers = v, h, int(c.NumHiddenLayers)
	m.MaxLength = c.maxPositions()
	special, err := c.specialTokens()
	if err != nil {
		return badinput.Wrap(err)
	}
	maps.Copy(m.SpecialTokens, special)
	return b.Err()
}

// rotary returns cos and sin of position·inv_freq as [B, S, 1, head_dim/2],
// ready to broadcast over [B, S, heads, head_dim/2] halves, at the
// positions that positions numbers from the mask.
func (c *llamaConfig) rotary(b *Builder, mask string) (cos, sin string) {
	pos := b.Op("Unsqueeze", []string{positions(b, mask), b.Ints(2, 3)}, "rope.pos4")
	return c.rotaryTable(b, pos)
}

// rotaryTable returns cos and sin of pos·inv_freq for float positions pos
// [B, S, 1, 1].
func (c *llamaConfig) rotaryTable(b *Builder, pos string) (cos, sin string) {
	half := c.headDim() / 2
	invFreq := make([]float32, half)
	dim, base := float32(c.headDim()), float64(float32(c.ropeTheta()))
	for i := range invFreq {
		// As transformers computes it in float32: 1 / base^(2i/dim).
		e := float32(2*i) / dim
		invFreq[i] = 1 / float32(math.Pow(base, float64(e)))
	}
	freqs := b.Op("Mul", []string{pos, b.Floats("rope.inv_freq", []int64{half}, invFreq...)}, "rope.freqs")
	return b.Op("Cos", []string{freqs}, "rope.cos"), b.Op("Sin", []string{freqs}, "rope.sin")
}

// positions returns the float positions [B, S] of a decoder batch from its
// attention_mask [B, S]: a real token (mask 1) is numbered by the real
// tokens before it, cumsum(mask) − 1, and a padding position by its index
// in the row. A right-padded row thus gets 0 … S−1 throughout, exactly
// transformers' default arange (what the MIGU authors' code runs, so the
// padding-inclusive magnitudes equal theirs), and a left-padded row's text
// gets the positions of the same text unpadded, as transformers' generate
// numbers it; padding never changes a real token's output, since no real
// token attends to it. At padding, cumsum(mask) − 1 plus the padding
// positions so far is the index; the arithmetic form keeps Where (whose
// backward is slow) out of the graph.
func positions(b *Builder, mask string) string {
	f := b.Op("Cast", []string{mask}, "rope.mask_f", onnx.AttrInt("to", int64(onnx.Float)))
	counted := b.Op("Sub", []string{b.Op("CumSum", []string{f, b.IntScalar(1)}, "rope.count"), b.Scalar(1)}, "rope.counted")
	pad := b.Op("Sub", []string{b.Scalar(1), f}, "rope.pad")
	pads := b.Op("CumSum", []string{pad, b.IntScalar(1)}, "rope.pads")
	return b.Op("Add", []string{counted, b.Op("Mul", []string{pad, pads}, "rope.pad_shift")}, "rope.pos")
}

// rope rotates x [B, S, n, d] in HF's rotate-half layout: with halves x1, x2
// it returns [x1·cos − x2·sin, x2·cos + x1·sin]. Split and Concat keep the
// backward free of Slice/Pad.
func (c *llamaConfig) rope(b *Builder, x, cos, sin string, hint string) string {
	if b.Err() != nil {
		return ""
	}
	half := c.headDim() / 2
	xs := b.G.OpN("Split", []string{x, b.Ints(half, half)}, 2, hint+".half", onnx.AttrInt("axis", -1))
	x1, x2 := xs[0], xs[1]
	r1 := b.Op("Sub", []string{b.Op("Mul", []string{x1, cos}, hint+".x1cos"), b.Op("Mul", []string{x2, sin}, hint+".x2sin")}, hint+".r1")
	r2 := b.Op("Add", []string{b.Op("Mul", []string{x2, cos}, hint+".x2cos"), b.Op("Mul", []string{x1, sin}, hint+".x1sin")}, hint+".r2")
	return b.Op("Concat", []string{r1, r2}, hint, onnx.AttrInt("axis", -1))
}

// block is one decoder layer: x + attn(norm(x)), then + mlp(norm(x)).
// With a cache (the generation graph, llama_cache.go) the layer's keys and
// values are appended to its past ones and returned as present before
// attention; the training and scoring graph passes nil.
func (c *llamaConfig) block(b *Builder, x, bias, cos, sin string, i int, cache *kvcache.Cache) string {
	h, ff := c.HiddenSize, c.IntermediateSize
	n, nkv, d := c.NumAttentionHeads, c.kvHeads(), c.headDim()
	p := fmt.Sprintf("model.layers.%d.", i)
	lin := func(in, name string, role modeldir.Role, din, dout int64, bias bool) string {
		return b.Linear(in, LinearSpec{Name: p + name, Role: role, Block: i, In: din, Out: dout, Bias: bias})
	}

	hn := b.RMSNorm(x, b.Param(p+"input_layernorm.weight", h), float32(c.eps()), p+"input_layernorm")
	q := lin(hn, "self_attn.q_proj", modeldir.RoleQ, h, n*d, c.attnBias())
	k := lin(hn, "self_attn.k_proj", modeldir.RoleK, h, nkv*d, c.attnBias())
	val := lin(hn, "self_attn.v_proj", modeldir.RoleV, h, nkv*d, c.attnBias())
	// Rotate in [B, S, heads, d], where cos/sin broadcast, then transpose
	// once: queries to [B, n, S, d], keys straight to [B, nkv, d, S].
	q = c.rope(b, b.Op("Reshape", []string{q, b.Ints(0, 0, n, d)}, p+"q.heads"), cos, sin, p+"q.rope")
	q = b.Op("Transpose", []string{q}, p+"q.t", onnx.AttrInts("perm", 0, 2, 1, 3))
	k = c.rope(b, b.Op("Reshape", []string{k, b.Ints(0, 0, nkv, d)}, p+"k.heads"), cos, sin, p+"k.rope")
	val = b.SplitHeads(val, nkv, d, false, p+"v")
	if cache == nil {
		k = b.Op("Transpose", []string{k}, p+"k.t", onnx.AttrInts("perm", 0, 2, 3, 1))
	} else {
		k = b.Op("Transpose", []string{k}, p+"k.t", onnx.AttrInts("perm", 0, 2, 1, 3))
		k, val = appendLayer(b, cache, k, val, i, p)
		k = b.Op("Transpose", []string{k}, p+"k.all_t", onnx.AttrInts("perm", 0, 1, 3, 2))
	}
	ctx := b.Attend(q, k, val, bias, n, nkv, d, float32(1/math.Sqrt(float64(d))), p+"attn")
	o := lin(b.MergeHeads(ctx, n, d, p+"attn.merged"), "self_attn.o_proj", modeldir.RoleO, n*d, h, c.attnBias())
	x = b.Op("Add", []string{x, o}, p+"attn.residual")

	hn = b.RMSNorm(x, b.Param(p+"post_attention_layernorm.weight", h), float32(c.eps()), p+"post_attention_layernorm")
	gate := b.SiLU(lin(hn, "mlp.gate_proj", modeldir.RoleFFNGate, h, ff, c.mlpBias()), p+"mlp.act")
	up := lin(hn, "mlp.up_proj", modeldir.RoleFFNIn, h, ff, c.mlpBias())
	down := lin(b.Op("Mul", []string{gate, up}, p+"mlp.glu"), "mlp.down_proj", modeldir.RoleFFNOut, ff, h, c.mlpBias())
	return b.Op("Add", []string{x, down}, p+"mlp.residual")
}

// llamaPresets are the shapes `migu init` makes: "tiny" (hidden 64, 4
// layers; about 0.2M parameters plus 128 per vocabulary entry) for tests,
// "small" (hidden 512, 8 layers, GQA with 4 kv heads; about 23M plus 1024
// per vocabulary entry) for benchmarks, and "1b" and "7b" with the exact
// shapes of TinyLlama-1.1B and Llama-2-7B (at vocabulary 32000,
// 1,100,048,384 and 6,738,415,616 parameters) for tests at scale.
var llamaPresets = map[string]struct{ hidden, ff, layers, heads, kv, positions int64 }{
	"tiny":  {hidden: 64, ff: 176, layers: 4, heads: 4, kv: 2, positions: 512},
	"small": {hidden: 512, ff: 1376, layers: 8, heads: 8, kv: 4, positions: 2048},
	"1b":    {hidden: 2048, ff: 5632, layers: 22, heads: 32, kv: 4, positions: 2048},
	"7b":    {hidden: 4096, ff: 11008, layers: 32, heads: 32, kv: 32, positions: 4096},
}

// llamaPresetNames lists llamaPresets from small to large.
var llamaPresetNames = []string{"tiny", "small", "1b", "7b"}

// llamaPreset returns the config.json of a fresh Llama-2-style model of
// one of llamaPresets' shapes: RMSNorm eps 1e-5, rope θ 10000, untied head,
// as TinyLlama and Llama 2 have.
func llamaPreset(name string, vocab int, special SpecialTokens) (map[string]any, error) {
	d, ok := llamaPresets[name]
	if !ok {
		return nil, badinput.Errorf("unknown llama preset %q (presets: %s)", name, strings.Join(llamaPresetNames, ", "))
	}
	if vocab <= 0 {
		return nil, badinput.Errorf("llama preset %s: vocabulary size %d is not positive", name, vocab)
	}
	id := func(v int64) any {
		if v < 0 {
			return nil
		}
		return v
	}
	return map[string]any{
		"model_type":              "llama",
		"architectures":           []string{"LlamaForCausalLM"},
		"vocab_size":              vocab,
		"hidden_size":             d.hidden,
		"intermediate_size":       d.ff,
		"num_hidden_layers":       d.layers,
		"num_attention_heads":     d.heads,
		"num_key_value_heads":     d.kv,
		"head_dim":                d.hidden / d.heads,
		"hidden_act":              "silu",
		"max_position_embeddings": d.positions,
		"rms_norm_eps":            1e-5,
		"rope_theta":              10000.0,
		"rope_scaling":            nil,
		"attention_bias":          false,
		"mlp_bias":                false,
		"tie_word_embeddings":     false,
		"initializer_range":       0.02,
		"bos_token_id":            id(special.BOS),
		"eos_token_id":            id(special.EOS),
		"pad_token_id":            id(special.PAD),
		"torch_dtype":             "float32",
	}, nil
}
