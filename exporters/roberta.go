package exporters

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/tokenizer"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// RoBERTa (and XLM-RoBERTa, whose modeling code is the same) is a post-LN
// bidirectional encoder with learned absolute positions that start after
// the padding index. Two heads are exported: the masked-LM head (objective
// mlm) and the sequence-classification head on the <s> token (objective
// cls).
//
// The graph takes input_ids and attention_mask only, as transformers'
// own ONNX config for RoBERTa does. token_type_ids is not an input: RoBERTa
// checkpoints have type_vocab_size 1, and transformers feeds all-zero token
// types when none are given, so the graph adds row 0 of the token-type
// table to every position. Training and eval therefore feed the same two
// inputs for every encoder.

var _ Converter = (*robertaModel)(nil)

func init() {
	register(&Architecture{
		Name:       "roberta",
		ModelTypes: []string{"roberta", "xlm-roberta"},
		New:        newRoberta,
		Preset:     robertaPreset,
		Presets:    []string{"tiny", "small"},
		Tokenizer:  tokenizer.ByteLevelBPE,
	})
}

// robertaHead is the task head an architectures entry selects.
type robertaHead string

const (
	robertaMLM robertaHead = "mlm"
	robertaCLS robertaHead = "cls"
)

// robertaHeads maps the transformers classes migu exports to their heads.
var robertaHeads = map[string]robertaHead{
	"RobertaForMaskedLM":                  robertaMLM,
	"RobertaForSequenceClassification":    robertaCLS,
	"XLMRobertaForMaskedLM":               robertaMLM,
	"XLMRobertaForSequenceClassification": robertaCLS,
}

// robertaModel is a RoBERTa config.json. newRoberta pre-fills the defaults
// of transformers' RobertaConfig and PretrainedConfig, so a field that a
// saved config leaves out (save_pretrained omits values equal to the
// defaults) means what it means to transformers. The dimensions have no
// default: a config without them is refused.
type robertaModel struct {
	Architectures         []string `json:"architectures"`
	VocabSize             int64    `json:"vocab_size"`
	HiddenSize            int64    `json:"hidden_size"`
	NumHiddenLayers       int64    `json:"num_hidden_layers"`
	NumAttentionHeads     int64    `json:"num_attention_heads"`
	IntermediateSize      int64    `json:"intermediate_size"`
	MaxPositionEmbeddings int64    `json:"max_position_embeddings"`
	HiddenAct             string   `json:"hidden_act"`
	TypeVocabSize         int64    `json:"type_vocab_size"`
	LayerNormEps          float64  `json:"layer_norm_eps"`
	InitializerRange      float64  `json:"initializer_range"`
	PadTokenID            *int64   `json:"pad_token_id"`
	BOSTokenID            *int64   `json:"bos_token_id"`
	EOSTokenID            *int64   `json:"eos_token_id"`
	PositionEmbeddingType string   `json:"position_embedding_type"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	IsDecoder             bool     `json:"is_decoder"`
	AddCrossAttention     bool     `json:"add_cross_attention"`

	// Classification: the label count is len(id2label) (what config.json
	// stores); num_labels is accepted when it agrees.
	ID2Label    map[string]string `json:"id2label"`
	NumLabels   *int64            `json:"num_labels"`
	ProblemType *string           `json:"problem_type"`

	head      robertaHead // set by Validate
	numLabels int64       // set by Validate for the cls head
}

// newRoberta returns a config holding transformers' defaults.
func newRoberta() Converter {
	pad, bos, eos := int64(1), int64(0), int64(2)
	return &robertaModel{
		HiddenAct:             "gelu",
		TypeVocabSize:         2,
		LayerNormEps:          1e-12,
		InitializerRange:      0.02,
		PadTokenID:            &pad,
		BOSTokenID:            &bos,
		EOSTokenID:            &eos,
		PositionEmbeddingType: "absolute",
		TieWordEmbeddings:     true,
	}
}

// robertaActivations are the hidden_act values Builder.Activation emits.
var robertaActivations = []string{"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish"}

// Validate checks the config and resolves the head and label count.
func (c *robertaModel) Validate() error {
	if err := requirePositive(
		dim{"vocab_size", c.VocabSize},
		dim{"hidden_size", c.HiddenSize},
		dim{"num_hidden_layers", c.NumHiddenLayers},
		dim{"num_attention_heads", c.NumAttentionHeads},
		dim{"intermediate_size", c.IntermediateSize},
		dim{"max_position_embeddings", c.MaxPositionEmbeddings},
		dim{"type_vocab_size", c.TypeVocabSize},
	); err != nil {
		return err
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fieldError("num_attention_heads", "%d does not divide hidden_size %d", c.NumAttentionHeads, c.HiddenSize)
	}
	if !(c.LayerNormEps > 0) {
		return fieldError("layer_norm_eps", "is %g; it must be positive", c.LayerNormEps)
	}
	if !slices.Contains(robertaActivations, c.HiddenAct) {
		return fieldError("hidden_act", "%q is not supported (supported: %s)", c.HiddenAct, strings.Join(robertaActivations, ", "))
	}
	if c.PositionEmbeddingType != "absolute" {
		return fieldError("position_embedding_type", "%q is not supported (supported: absolute)", c.PositionEmbeddingType)
	}
	if c.IsDecoder {
		return fieldError("is_decoder", "true is not supported: migu exports RoBERTa as a bidirectional encoder")
	}
	if c.AddCrossAttention {
		return fieldError("add_cross_attention", "true is not supported: migu exports RoBERTa without cross-attention")
	}
	if c.PadTokenID == nil {
		return fieldError("pad_token_id", "is missing or null; RoBERTa's position ids count from the padding index")
	}
	pad := *c.PadTokenID
	for _, t := range []struct {
		name string
		id   *int64
	}{{"pad_token_id", c.PadTokenID}, {"bos_token_id", c.BOSTokenID}, {"eos_token_id", c.EOSTokenID}} {
		if t.id != nil && (*t.id < 0 || *t.id >= c.VocabSize) {
			return fieldError(t.name, "%d is outside the vocabulary (vocab_size %d)", *t.id, c.VocabSize)
		}
	}
	if c.MaxPositionEmbeddings <= pad+1 {
		return fieldError("max_position_embeddings", "%d leaves no position: positions start after pad_token_id %d, so it must exceed %d",
			c.MaxPositionEmbeddings, pad, pad+1)
	}
	switch len(c.Architectures) {
	case 0:
		c.head = robertaMLM
	case 1:
		head, ok := robertaHeads[c.Architectures[0]]
		if !ok {
			return fieldError("architectures", "%q is not supported (supported: %s)", c.Architectures[0], strings.Join(robertaHeadNames(), ", "))
		}
		c.head = head
	default:
		return fieldError("architectures", "lists %d classes (%s); migu exports one head", len(c.Architectures), strings.Join(c.Architectures, ", "))
	}
	if c.head == robertaCLS {
		return c.validateLabels()
	}
	return nil
}

// validateLabels resolves the label count of a classification head the way
// transformers does (id2label wins, two labels by default) and refuses the
// problem types other than single-label classification.
func (c *robertaModel) validateLabels() error {
	switch {
	case c.ID2Label != nil:
		c.numLabels = int64(len(c.ID2Label))
		if c.NumLabels != nil && *c.NumLabels != c.numLabels {
			return fieldError("num_labels", "%d contradicts id2label, which has %d labels", *c.NumLabels, c.numLabels)
		}
	case c.NumLabels != nil:
		c.numLabels = *c.NumLabels
	default:
		c.numLabels = 2
	}
	if c.numLabels < 1 {
		return fieldError("id2label", "a classification head needs at least one label")
	}
	if c.ProblemType != nil && *c.ProblemType != "single_label_classification" {
		return fieldError("problem_type", "%q is not supported (supported: single_label_classification)", *c.ProblemType)
	}
	if c.ProblemType == nil && c.numLabels == 1 {
		return fieldError("id2label", "one label makes transformers train a regression, which is not supported; give two or more labels")
	}
	return nil
}

// robertaHeadNames lists the supported architectures values, sorted.
func robertaHeadNames() []string {
	names := make([]string, 0, len(robertaHeads))
	for n := range robertaHeads {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Checkpoint names of RoBERTa's tensors (module paths; add .weight/.bias).
const (
	robertaWordEmb  = "roberta.embeddings.word_embeddings.weight"
	robertaPosEmb   = "roberta.embeddings.position_embeddings.weight"
	robertaTypeEmb  = "roberta.embeddings.token_type_embeddings.weight"
	robertaEmbNorm  = "roberta.embeddings.LayerNorm"
	robertaLMDense  = "lm_head.dense"
	robertaLMNorm   = "lm_head.layer_norm"
	robertaLMDecode = "lm_head.decoder"
	robertaLMBias   = "lm_head.bias" // shared with lm_head.decoder.bias, which save_pretrained drops
	robertaClsDense = "classifier.dense"
	robertaClsOut   = "classifier.out_proj"
)

// robertaBlock holds the module paths of one encoder layer.
type robertaBlock struct {
	q, k, v, o, attnNorm, ffnIn, ffnOut, outNorm string
}

// robertaBlockNames returns the module paths of encoder layer i.
func robertaBlockNames(i int64) robertaBlock {
	p := fmt.Sprintf("roberta.encoder.layer.%d.", i)
	return robertaBlock{
		q:        p + "attention.self.query",
		k:        p + "attention.self.key",
		v:        p + "attention.self.value",
		o:        p + "attention.output.dense",
		attnNorm: p + "attention.output.LayerNorm",
		ffnIn:    p + "intermediate.dense",
		ffnOut:   p + "output.dense",
		outNorm:  p + "output.LayerNorm",
	}
}

// Tensors lists the tensors of RobertaForMaskedLM or
// RobertaForSequenceClassification (no pooler: both build RobertaModel with
// add_pooling_layer=False). A tied decoder reads the word embeddings, so
// lm_head.decoder.weight is listed only when untied.
func (c *robertaModel) Tensors() []TensorSpec {
	h, std := c.HiddenSize, Normal(c.InitializerRange)
	var ts []TensorSpec
	add := func(name string, init Fill, shape ...int64) {
		ts = append(ts, TensorSpec{Name: name, Shape: shape, Init: init})
	}
	linear := func(name string, out, in int64) {
		add(name+".weight", std, out, in)
		add(name+".bias", Zeros, out)
	}
	norm := func(name string) {
		add(name+".weight", Ones, h)
		add(name+".bias", Zeros, h)
	}
	add(robertaWordEmb, std, c.VocabSize, h)
	add(robertaPosEmb, std, c.MaxPositionEmbeddings, h)
	add(robertaTypeEmb, std, c.TypeVocabSize, h)
	norm(robertaEmbNorm)
	for i := range c.NumHiddenLayers {
		n := robertaBlockNames(i)
		linear(n.q, h, h)
		linear(n.k, h, h)
		linear(n.v, h, h)
		linear(n.o, h, h)
		norm(n.attnNorm)
		linear(n.ffnIn, c.IntermediateSize, h)
		linear(n.ffnOut, h, c.IntermediateSize)
		norm(n.outNorm)
	}
	switch c.head {
	case robertaCLS:
		linear(robertaClsDense, h, h)
		linear(robertaClsOut, c.numLabels, h)
	default:
		linear(robertaLMDense, h, h)
		norm(robertaLMNorm)
		if !c.TieWordEmbeddings {
			add(robertaLMDecode+".weight", std, c.VocabSize, h)
		}
		add(robertaLMBias, Zeros, c.VocabSize)
	}
	return ts
}

// Build emits embeddings, the post-LN encoder layers and the head.
func (c *robertaModel) Build(b *Builder) error {
	batch, seq := onnx.Sym("batch"), onnx.Sym("seq")
	ids := b.Input("input_ids", onnx.Int64, batch, seq)
	mask := b.Input("attention_mask", onnx.Int64, batch, seq)

	wordEmb := b.Param(robertaWordEmb, c.VocabSize, c.HiddenSize)
	x := c.embed(b, ids, wordEmb)
	bias := b.PaddingBias(mask, "attention_bias")
	residuals := []string{x}
	for i := range c.NumHiddenLayers {
		x = c.layer(b, x, bias, i)
		residuals = append(residuals, x)
	}
	b.Residuals("", residuals)
	switch c.head {
	case robertaCLS:
		b.Output(c.classifier(b, x), "logits", onnx.Float, batch, onnx.D(c.numLabels))
		b.Manifest.Objective = "cls"
		b.Manifest.NumLabels = int(c.numLabels)
	default:
		b.Output(c.lmHead(b, x, wordEmb), "logits", onnx.Float, batch, seq, onnx.D(c.VocabSize))
		b.Manifest.Objective = "mlm"
	}

	m := b.Manifest
	m.VocabSize, m.HiddenSize, m.NumLayers = c.VocabSize, c.HiddenSize, int(c.NumHiddenLayers)
	pad := *c.PadTokenID
	m.MaxLength = c.MaxPositionEmbeddings - pad - 1
	m.SpecialTokens["pad"] = pad
	if c.BOSTokenID != nil {
		m.SpecialTokens["bos"] = *c.BOSTokenID
	}
	if c.EOSTokenID != nil {
		m.SpecialTokens["eos"] = *c.EOSTokenID
	}
	return b.Err()
}

// embed sums word, position and token-type embeddings and normalises them.
// Position ids follow fairseq: padding tokens get the padding index, the
// others count up from it, cumsum(ids ≠ pad)·(ids ≠ pad) + pad. These are
// integer ops, so they cost nothing in the backward pass.
func (c *robertaModel) embed(b *Builder, ids, wordEmb string) string {
	pad := *c.PadTokenID
	words := b.Gather(wordEmb, ids, "embeddings.words")

	isPad := b.Op("Equal", []string{ids, b.IntScalar(pad)}, "embeddings.is_pad")
	notPad := b.Op("Cast", []string{b.Op("Not", []string{isPad}, "embeddings.not_pad")}, "embeddings.tokens",
		onnx.AttrInt("to", int64(onnx.Int64)))
	count := b.Op("CumSum", []string{notPad, b.IntScalar(1)}, "embeddings.count")
	pos := b.Op("Mul", []string{count, notPad}, "embeddings.count_tokens")
	if pad != 0 {
		pos = b.Op("Add", []string{pos, b.IntScalar(pad)}, "embeddings.position_ids")
	}
	positions := b.Gather(b.Param(robertaPosEmb, c.MaxPositionEmbeddings, c.HiddenSize), pos, "embeddings.positions")

	// Token type 0 everywhere: one row, broadcast over batch and sequence.
	tokenType := b.Gather(b.Param(robertaTypeEmb, c.TypeVocabSize, c.HiddenSize), b.IntScalar(0), "embeddings.token_type")

	sum := b.Op("Add", []string{words, tokenType}, "embeddings.words_types")
	sum = b.Op("Add", []string{sum, positions}, "embeddings.sum")
	return c.norm(b, sum, robertaEmbNorm)
}

// norm applies a checkpoint LayerNorm by module path.
func (c *robertaModel) norm(b *Builder, x, name string) string {
	w := b.Param(name+".weight", c.HiddenSize)
	bias := b.Param(name+".bias", c.HiddenSize)
	return b.LayerNorm(x, w, bias, float32(c.LayerNormEps), name)
}

// layer is one post-LN encoder layer: LN(x + attn(x)), then LN(h + ffn(h)).
func (c *robertaModel) layer(b *Builder, x, bias string, i int64) string {
	h, n := c.HiddenSize, c.NumAttentionHeads
	d := h / n
	names := robertaBlockNames(i)
	lin := func(in, name string, role modeldir.Role, din, dout int64) string {
		return b.Linear(in, LinearSpec{Name: name, Role: role, Block: int(i), In: din, Out: dout, Bias: true})
	}
	q := b.SplitHeads(lin(x, names.q, modeldir.RoleQ, h, h), n, d, false, names.q)
	kT := b.SplitHeads(lin(x, names.k, modeldir.RoleK, h, h), n, d, true, names.k)
	v := b.SplitHeads(lin(x, names.v, modeldir.RoleV, h, h), n, d, false, names.v)
	ctx := b.Attend(q, kT, v, bias, n, n, d, float32(1/math.Sqrt(float64(d))), fmt.Sprintf("roberta.encoder.layer.%d.attention", i))
	attn := lin(b.MergeHeads(ctx, n, d, names.o+".in"), names.o, modeldir.RoleO, h, h)
	x = c.norm(b, b.Op("Add", []string{attn, x}, names.attnNorm+".residual"), names.attnNorm)

	up := b.Activation(c.HiddenAct, lin(x, names.ffnIn, modeldir.RoleFFNIn, h, c.IntermediateSize), names.ffnIn+".act")
	down := lin(up, names.ffnOut, modeldir.RoleFFNOut, c.IntermediateSize, h)
	return c.norm(b, b.Op("Add", []string{down, x}, names.outNorm+".residual"), names.outNorm)
}

// lmHead is RobertaLMHead: dense, exact GELU (whatever hidden_act says),
// LayerNorm, then the decoder to the vocabulary with lm_head.bias. Both
// linears are recorded with role head; the decoder's record includes the
// bias, as the nn.Linear it mirrors does.
func (c *robertaModel) lmHead(b *Builder, x, wordEmb string) string {
	h := c.HiddenSize
	y := b.Linear(x, LinearSpec{Name: robertaLMDense, Role: modeldir.RoleHead, Block: -1, In: h, Out: h, Bias: true})
	y = c.norm(b, b.GELU(y, robertaLMDense+".gelu"), robertaLMNorm)
	var logits string
	if c.TieWordEmbeddings {
		logits = b.TiedHead(y, wordEmb, robertaLMDecode, "", c.VocabSize, h)
	} else {
		logits = b.Linear(y, LinearSpec{Name: robertaLMDecode, Role: modeldir.RoleHead, Block: -1, In: h, Out: c.VocabSize})
	}
	bias := b.Param(robertaLMBias, c.VocabSize)
	out := b.Op("Add", []string{logits, bias}, robertaLMDecode+".out")
	if b.Err() == nil {
		l := &b.Manifest.Linears[len(b.Manifest.Linears)-1]
		l.Bias, l.Output = bias, out
	}
	return out
}

// classifier is RobertaClassificationHead: the <s> token's state (position
// 0), dense, tanh, out_proj → [batch, num_labels].
func (c *robertaModel) classifier(b *Builder, x string) string {
	h := c.HiddenSize
	first := b.Op("Gather", []string{x, b.IntScalar(0)}, "classifier.first_token", onnx.AttrInt("axis", 1))
	y := b.Linear(first, LinearSpec{Name: robertaClsDense, Role: modeldir.RoleHead, Block: -1, In: h, Out: h, Bias: true})
	y = b.Op("Tanh", []string{y}, robertaClsDense+".tanh")
	return b.Linear(y, LinearSpec{Name: robertaClsOut, Role: modeldir.RoleHead, Block: -1, In: h, Out: c.numLabels, Bias: true})
}

// robertaPresets are the sizes `migu init` makes; maxLen is the longest
// input, so max_position_embeddings is maxLen + pad + 1. With the tied
// decoder, tiny has 446,720 + 129·vocab parameters (1.48M at vocab 8000)
// and small 19,442,688 + 513·vocab (23.5M at 8000, 45.2M at 50265).
var robertaPresets = map[string]struct{ hidden, layers, heads, ffn, maxLen int64 }{
	"tiny":  {hidden: 128, layers: 2, heads: 4, ffn: 512, maxLen: 256},
	"small": {hidden: 512, layers: 6, heads: 8, ffn: 2048, maxLen: 512},
}

// robertaPreset returns the config.json of a RobertaForMaskedLM preset with
// the tokenizer's vocabulary size and special tokens (-1 ids become null).
func robertaPreset(name string, vocab int, special SpecialTokens) (map[string]any, error) {
	p, ok := robertaPresets[name]
	if !ok {
		return nil, badinput.Errorf("roberta has no preset %q (presets: small, tiny)", name)
	}
	if special.PAD < 0 {
		return nil, badinput.Errorf("roberta needs a padding token: its position ids count from the padding index")
	}
	id := func(v int64) any {
		if v < 0 {
			return nil
		}
		return v
	}
	cfg := map[string]any{
		"model_type":                   "roberta",
		"architectures":                []string{"RobertaForMaskedLM"},
		"vocab_size":                   vocab,
		"hidden_size":                  p.hidden,
		"num_hidden_layers":            p.layers,
		"num_attention_heads":          p.heads,
		"intermediate_size":            p.ffn,
		"hidden_act":                   "gelu",
		"max_position_embeddings":      p.maxLen + special.PAD + 1,
		"type_vocab_size":              1,
		"layer_norm_eps":               1e-5,
		"initializer_range":            0.02,
		"hidden_dropout_prob":          0.1,
		"attention_probs_dropout_prob": 0.1,
		"position_embedding_type":      "absolute",
		"tie_word_embeddings":          true,
		"pad_token_id":                 special.PAD,
		"bos_token_id":                 id(special.BOS),
		"eos_token_id":                 id(special.EOS),
	}
	// The preset must pass the same checks as an exported config.
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	conv := newRoberta()
	if err := json.Unmarshal(raw, conv); err != nil {
		return nil, err
	}
	if err := conv.Validate(); err != nil {
		return nil, badinput.Errorf("roberta preset %s: %v", name, err)
	}
	return cfg, nil
}
