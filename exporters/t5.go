package exporters

import (
	"fmt"
	"math"
	"strings"

	"github.com/migu-ml/migu/tokenizer"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

func init() {
	register(&Architecture{
		Name:       "t5",
		ModelTypes: []string{"t5", "mt5"},
		New:        func() Converter { return &t5Model{} },
		Preset:     t5Preset,
		Presets:    []string{"tiny", "small"},
		Tokenizer:  tokenizer.Unigram,

		CachedGraphs: seq2seqWithPast,
	})
}

var _ Converter = (*t5Model)(nil)

// t5Model is T5ForConditionalGeneration (t5 v1.0, v1.1, flan-t5, and mT5,
// whose maths is the same) as config.json describes it. Fields that
// transformers defaults are pointers so that Validate can tell absent from
// zero and apply the defaults of T5Config or MT5Config.
type t5Model struct {
	ModelType           string   `json:"model_type"`
	VocabSize           int64    `json:"vocab_size"`
	DModel              int64    `json:"d_model"`
	DKV                 int64    `json:"d_kv"`
	DFF                 int64    `json:"d_ff"`
	NumLayers           int64    `json:"num_layers"`
	NumDecoderLayers    *int64   `json:"num_decoder_layers"`
	NumHeads            int64    `json:"num_heads"`
	NumBuckets          *int64   `json:"relative_attention_num_buckets"`
	MaxDistance         *int64   `json:"relative_attention_max_distance"`
	LayerNormEpsilon    *float64 `json:"layer_norm_epsilon"`
	FeedForwardProj     *string  `json:"feed_forward_proj"`
	DenseActFn          *string  `json:"dense_act_fn"`
	IsGatedAct          *bool    `json:"is_gated_act"`
	TieWordEmbeddings   *bool    `json:"tie_word_embeddings"`
	PadTokenID          *int64   `json:"pad_token_id"`
	EOSTokenID          *int64   `json:"eos_token_id"`
	DecoderStartTokenID *int64   `json:"decoder_start_token_id"`
	UNKTokenID          *int64   `json:"unk_token_id"`

	// Resolved by Validate.
	decLayers, buckets, maxDist int64
	eps                         float32
	act                         string
	gated, tied                 bool
	special                     map[string]int64
}

// t5Activations are the dense_act_fn values the graph implements.
var t5Activations = []string{"relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish"}

// Validate checks the dimensions and resolves the defaults and the
// feed-forward activation the way T5Config does.
func (m *t5Model) Validate() error {
	mt5 := m.ModelType == "mt5"
	if err := requirePositive(dim{"vocab_size", m.VocabSize}, dim{"d_model", m.DModel}, dim{"d_kv", m.DKV}, dim{"d_ff", m.DFF}, dim{"num_layers", m.NumLayers}, dim{"num_heads", m.NumHeads}); err != nil {
		return err
	}
	m.decLayers = t5Default(m.NumDecoderLayers, m.NumLayers)
	if m.decLayers <= 0 {
		return fieldError("num_decoder_layers", "must be positive, got %d", m.decLayers)
	}
	m.buckets = t5Default(m.NumBuckets, 32)
	m.maxDist = t5Default(m.MaxDistance, 128)
	// The encoder's buckets are split by direction, then half of each half
	// is exact; the log-spaced rest needs max_distance beyond that.
	if m.buckets < 4 {
		return fieldError("relative_attention_num_buckets", "must be at least 4, got %d", m.buckets)
	}
	if m.maxDist <= m.buckets/2 {
		return fieldError("relative_attention_max_distance", "must exceed relative_attention_num_buckets/2 = %d, got %d", m.buckets/2, m.maxDist)
	}
	eps := t5Default(m.LayerNormEpsilon, 1e-6)
	if !(eps > 0) {
		return fieldError("layer_norm_epsilon", "must be positive, got %g", eps)
	}
	m.eps = float32(eps)
	if err := m.resolveActivation(mt5); err != nil {
		return err
	}
	m.tied = t5Default(m.TieWordEmbeddings, !mt5)

	m.special = map[string]int64{
		"pad": t5Default(m.PadTokenID, 0),
		"eos": t5Default(m.EOSTokenID, 1),
	}
	if m.DecoderStartTokenID != nil {
		m.special["decoder_start"] = *m.DecoderStartTokenID
	} else if mt5 {
		m.special["decoder_start"] = 0
	}
	if m.UNKTokenID != nil {
		m.special["unk"] = *m.UNKTokenID
	}
	for _, k := range []string{"pad", "eos", "decoder_start", "unk"} {
		if id, ok := m.special[k]; ok && (id < 0 || id >= m.VocabSize) {
			return fieldError(k+"_token_id", "%d is outside the vocabulary (vocab_size %d)", id, m.VocabSize)
		}
	}
	return nil
}

// resolveActivation parses feed_forward_proj as T5Config does ("act" or
// "gated-act", with "gated-gelu" meaning the tanh approximation) and checks
// that the derived dense_act_fn and is_gated_act, which save_pretrained also
// writes and which transformers prefers when present, agree with it.
func (m *t5Model) resolveActivation(mt5 bool) error {
	proj := "relu"
	if mt5 {
		proj = "gated-gelu"
	}
	proj = t5Default(m.FeedForwardProj, proj)
	parts := strings.Split(proj, "-")
	if len(parts) > 2 || len(parts) == 2 && parts[0] != "gated" {
		return fieldError("feed_forward_proj", "%q is not of the form ACT or gated-ACT (e.g. relu, gated-gelu)", proj)
	}
	m.act, m.gated = parts[len(parts)-1], len(parts) == 2
	if proj == "gated-gelu" {
		m.act = "gelu_new"
	}
	supported := false
	for _, a := range t5Activations {
		supported = supported || a == m.act
	}
	if !supported {
		return fieldError("feed_forward_proj", "%q: activation %q is not supported (%s)", proj, m.act, strings.Join(t5Activations, ", "))
	}
	if m.DenseActFn != nil && *m.DenseActFn != m.act {
		return fieldError("dense_act_fn", "%q contradicts feed_forward_proj %q (which means %s)", *m.DenseActFn, proj, m.act)
	}
	if m.IsGatedAct != nil && *m.IsGatedAct != m.gated {
		return fieldError("is_gated_act", "%v contradicts feed_forward_proj %q", *m.IsGatedAct, proj)
	}
	return nil
}

func t5Default[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// t5Stack names the encoder or the decoder, where its sublayers sit, and
// the padding-mask input of its positions.
type t5Stack struct {
	name    string // "encoder" or "decoder"
	layers  int64
	decoder bool
	mask    string // attention_mask or decoder_attention_mask
}

func (m *t5Model) stacks() []t5Stack {
	return []t5Stack{{"encoder", m.NumLayers, false, "attention_mask"}, {"decoder", m.decLayers, true, "decoder_attention_mask"}}
}

// ffnLayer is the index of the feed-forward sublayer in a block: after
// self-attention, and after cross-attention in the decoder.
func (s t5Stack) ffnLayer() int {
	if s.decoder {
		return 2
	}
	return 1
}

func (s t5Stack) block(i int) string { return fmt.Sprintf("%s.block.%d", s.name, i) }

// biasTable is the name of a stack's relative position embedding, held by
// its first block and shared by all.
func (s t5Stack) biasTable() string {
	return s.name + ".block.0.layer.0.SelfAttention.relative_attention_bias.weight"
}

// t5Proj is a feed-forward input projection and its role.
type t5Proj struct {
	name string
	role modeldir.Role
}

// ffnProjs lists the feed-forward input projections in module order.
func (m *t5Model) ffnProjs() []t5Proj {
	if m.gated {
		return []t5Proj{{"wi_0", modeldir.RoleFFNGate}, {"wi_1", modeldir.RoleFFNIn}}
	}
	return []t5Proj{{"wi", modeldir.RoleFFNIn}}
}

// Tensors lists the checkpoint in Hugging Face names. The initialisation is
// T5's own (initializer_factor 1): attention has no 1/√d_kv scaling in the
// graph, so the query weights carry it.
func (m *t5Model) Tensors() []TensorSpec {
	d, v, inner, dff := m.DModel, m.VocabSize, m.NumHeads*m.DKV, m.DFF
	rsqrt := func(x int64) float64 { return 1 / math.Sqrt(float64(x)) }
	specs := []TensorSpec{{Name: "shared.weight", Shape: []int64{v, d}, Init: Normal(1)}}
	// Tied copies of the embedding that some checkpoints carry; unused.
	for _, s := range m.stacks() {
		specs = append(specs, TensorSpec{Name: s.name + ".embed_tokens.weight", Shape: []int64{v, d}, Init: Normal(1), Optional: true})
	}
	attn := func(prefix string) {
		for _, p := range []struct {
			name    string
			out, in int64
			std     float64
		}{{"q", inner, d, rsqrt(d * m.DKV)}, {"k", inner, d, rsqrt(d)}, {"v", inner, d, rsqrt(d)}, {"o", d, inner, rsqrt(inner)}} {
			specs = append(specs, TensorSpec{Name: prefix + "." + p.name + ".weight", Shape: []int64{p.out, p.in}, Init: Normal(p.std)})
		}
	}
	norm := func(name string) {
		specs = append(specs, TensorSpec{Name: name, Shape: []int64{d}, Init: Ones})
	}
	for _, s := range m.stacks() {
		for i := range int(s.layers) {
			blk := s.block(i)
			attn(blk + ".layer.0.SelfAttention")
			if i == 0 {
				specs = append(specs, TensorSpec{Name: s.biasTable(), Shape: []int64{m.buckets, m.NumHeads}, Init: Normal(rsqrt(d))})
			}
			norm(blk + ".layer.0.layer_norm.weight")
			if s.decoder {
				attn(blk + ".layer.1.EncDecAttention")
				norm(blk + ".layer.1.layer_norm.weight")
			}
			ffn := fmt.Sprintf("%s.layer.%d", blk, s.ffnLayer())
			for _, p := range m.ffnProjs() {
				specs = append(specs, TensorSpec{Name: ffn + ".DenseReluDense." + p.name + ".weight", Shape: []int64{dff, d}, Init: Normal(rsqrt(d))})
			}
			specs = append(specs, TensorSpec{Name: ffn + ".DenseReluDense.wo.weight", Shape: []int64{d, dff}, Init: Normal(rsqrt(dff))})
			norm(ffn + ".layer_norm.weight")
		}
		norm(s.name + ".final_layer_norm.weight")
	}
	// save_pretrained drops a tied head's weight; other writers keep it.
	specs = append(specs, TensorSpec{Name: "lm_head.weight", Shape: []int64{v, d}, Init: Normal(1), Optional: m.tied})
	return specs
}

// Build emits encoder, decoder and LM head. Each stack computes its
// relative position bias once, adds its masks to it, and shares the sum
// with every block, as transformers does.
func (m *t5Model) Build(b *Builder) error {
	man := b.Manifest
	man.Objective = "seq2seq"
	man.VocabSize, man.HiddenSize, man.NumLayers = m.VocabSize, m.DModel, int(m.NumLayers)
	for k, id := range m.special {
		man.SpecialTokens[k] = id
	}
	batch, src, tgt := onnx.Sym("batch"), onnx.Sym("src_seq"), onnx.Sym("tgt_seq")
	ids := b.Input("input_ids", onnx.Int64, batch, src)
	mask := b.Input("attention_mask", onnx.Int64, batch, src)
	decIDs := b.Input("decoder_input_ids", onnx.Int64, batch, tgt)
	decMask := b.Input("decoder_attention_mask", onnx.Int64, batch, tgt)
	shared := b.Param("shared.weight", m.VocabSize, m.DModel)
	dec := m.stacks()[1]
	encOut, srcPad := m.encoder(b, shared, ids, mask)

	tgtLen := b.Dim(decIDs, 1, "decoder.length")
	causal := b.Op("Add", []string{m.positionBias(b, tgtLen, dec), b.CausalBias(tgtLen, "decoder.causal_bias")}, "decoder.position_causal_bias")
	decBias := b.Op("Add", []string{causal, b.PaddingBias(decMask, "decoder.padding_bias")}, "decoder.attention_bias")
	y := b.Gather(shared, decIDs, "decoder.embed")
	residuals := []string{y}
	for i := range int(dec.layers) {
		y = m.block(b, dec, i, y, decBias, encOut, srcPad)
		residuals = append(residuals, y)
	}
	b.Residuals(dec.name, residuals)
	y = m.norm(b, y, dec.name+".final_layer_norm")

	var logits string
	if m.tied {
		// Mesh TensorFlow's rescale before a head shared with the embedding.
		y = b.Op("Mul", []string{y, b.Scalar(float32(math.Pow(float64(m.DModel), -0.5)))}, "lm_head.rescale")
		logits = b.TiedHead(y, shared, "lm_head", dec.mask, m.VocabSize, m.DModel)
	} else {
		logits = b.Linear(y, LinearSpec{Name: "lm_head", Role: modeldir.RoleHead, Block: -1, In: m.DModel, Out: m.VocabSize, Mask: dec.mask})
	}
	b.Output(logits, "logits", onnx.Float, batch, tgt, onnx.D(m.VocabSize))
	return b.Err()
}

// encoder emits the encoder stack over ids and returns its normalised
// output and the padding bias of the source (cross-attention uses it too).
func (m *t5Model) encoder(b *Builder, shared, ids, mask string) (out, srcPad string) {
	enc := m.stacks()[0]
	srcPad = b.PaddingBias(mask, "encoder.padding_bias")
	encBias := b.Op("Add", []string{m.positionBias(b, b.Dim(ids, 1, "encoder.length"), enc), srcPad}, "encoder.attention_bias")
	x := b.Gather(shared, ids, "encoder.embed")
	residuals := []string{x}
	for i := range int(enc.layers) {
		x = m.block(b, enc, i, x, encBias, "", "")
		residuals = append(residuals, x)
	}
	b.Residuals(enc.name, residuals)
	return m.norm(b, x, enc.name+".final_layer_norm"), srcPad
}

// block is one T5 block: pre-norm residual self-attention, cross-attention
// over encOut in the decoder, then the feed-forward network.
func (m *t5Model) block(b *Builder, s t5Stack, i int, x, bias, encOut, encBias string) string {
	blk := s.block(i)
	self := blk + ".layer.0"
	x = m.residual(b, x, self, func(h string) string {
		return m.attention(b, s, i, self+".SelfAttention", h, h, s.mask, bias)
	})
	if s.decoder {
		cross := blk + ".layer.1"
		x = m.residual(b, x, cross, func(h string) string {
			return m.attention(b, s, i, cross+".EncDecAttention", h, encOut, m.stacks()[0].mask, encBias)
		})
	}
	ffn := fmt.Sprintf("%s.layer.%d", blk, s.ffnLayer())
	return m.residual(b, x, ffn, func(h string) string { return m.feedForward(b, s, i, ffn+".DenseReluDense", h) })
}

// residual returns x + f(norm(x)) with the sublayer's layer_norm.
func (m *t5Model) residual(b *Builder, x, prefix string, f func(string) string) string {
	return b.Op("Add", []string{x, f(m.norm(b, x, prefix+".layer_norm"))}, prefix+".out")
}

// norm is T5's RMS layer norm (no mean, no bias) with the weight name+".weight".
func (m *t5Model) norm(b *Builder, x, name string) string {
	return b.RMSNorm(x, b.Param(name+".weight", m.DModel), m.eps, name)
}

// attention is T5Attention without a KV cache: queries from x, keys and
// values from kv (whose positions lie on the padding mask kvMask), no
// 1/√d_kv scaling, and an additive bias that already holds position bias
// and masks.
func (m *t5Model) attention(b *Builder, s t5Stack, i int, name, x, kv, kvMask, bias string) string {
	n, dkv, d := m.NumHeads, m.DKV, m.DModel
	lin := func(in, proj string, role modeldir.Role, din, dout int64, mask string) string {
		return b.Linear(in, LinearSpec{Name: name + "." + proj, Role: role, Block: i, Stack: s.name, In: din, Out: dout, Mask: mask})
	}
	q := b.SplitHeads(lin(x, "q", modeldir.RoleQ, d, n*dkv, s.mask), n, dkv, false, name+".q")
	kT := b.SplitHeads(lin(kv, "k", modeldir.RoleK, d, n*dkv, kvMask), n, dkv, true, name+".k")
	v := b.SplitHeads(lin(kv, "v", modeldir.RoleV, d, n*dkv, kvMask), n, dkv, false, name+".v")
	ctx := b.Attend(q, kT, v, bias, n, n, dkv, 1, name)
	return lin(b.MergeHeads(ctx, n, dkv, name+".merge"), "o", modeldir.RoleO, n*dkv, d, s.mask)
}

// feedForward is T5DenseActDense (wi → act → wo) or T5DenseGatedActDense
// (act(wi_0 x) · wi_1 x → wo).
func (m *t5Model) feedForward(b *Builder, s t5Stack, i int, name, x string) string {
	lin := func(in, proj string, role modeldir.Role, din, dout int64) string {
		return b.Linear(in, LinearSpec{Name: name + "." + proj, Role: role, Block: i, Stack: s.name, In: din, Out: dout, Mask: s.mask})
	}
	var h string
	if m.gated {
		g := b.Activation(m.act, lin(x, "wi_0", modeldir.RoleFFNGate, m.DModel, m.DFF), name+".act")
		h = b.Op("Mul", []string{g, lin(x, "wi_1", modeldir.RoleFFNIn, m.DModel, m.DFF)}, name+".gated")
	} else {
		h = b.Activation(m.act, lin(x, "wi", modeldir.RoleFFNIn, m.DModel, m.DFF), name+".act")
	}
	return lin(h, "wo", modeldir.RoleFFNOut, m.DFF, m.DModel)
}

// positionBias is a stack's relative position bias [heads, S, S] for the
// runtime sequence length (an int64 scalar): bucket ids come from a constant
// table indexed by the clipped distance key − query, then select rows of
// the first block's relative_attention_bias. The table is computed here, in
// Go, with the float32 arithmetic of transformers, so the buckets match it
// exactly on every execution provider.
func (m *t5Model) positionBias(b *Builder, length string, s t5Stack) string {
	hint := s.name + ".position_bias"
	pos := b.Op("Range", []string{b.IntScalar(0), length, b.IntScalar(1)}, hint+".positions")
	key := b.Op("Unsqueeze", []string{pos, b.Ints(0)}, hint+".key")
	query := b.Op("Unsqueeze", []string{pos, b.Ints(1)}, hint+".query")
	rel := b.Op("Sub", []string{key, query}, hint+".relative")
	clipped := b.Op("Clip", []string{rel, b.IntScalar(-m.maxDist), b.IntScalar(m.maxDist)}, hint+".clipped")
	idx := b.Op("Add", []string{clipped, b.IntScalar(m.maxDist)}, hint+".index")
	table := t5BucketTable(!s.decoder, m.buckets, m.maxDist)
	buckets := b.Gather(b.G.ConstInt64(hint+".bucket_table", []int64{int64(len(table))}, table...), idx, hint+".buckets")
	// Gathering columns of the [heads, buckets] transpose yields [heads, S, S]
	// directly; transposing the small table beats transposing S²·heads values.
	weightT := b.Op("Transpose", []string{b.Param(s.biasTable(), m.buckets, m.NumHeads)}, hint+".table_t", onnx.AttrInts("perm", 1, 0))
	return b.Op("Gather", []string{weightT, buckets}, hint, onnx.AttrInt("axis", 1))
}

// t5BucketTable returns the bucket of every relative position −maxDist …
// maxDist (index rel+maxDist); distances beyond maxDist share the bucket of
// maxDist. It follows T5Attention._relative_position_bucket step by step,
// in float32 like torch, so that ties at bucket boundaries fall the same way.
func t5BucketTable(bidirectional bool, numBuckets, maxDist int64) []int64 {
	table := make([]int64, 2*maxDist+1)
	for i := range table {
		rel := int64(i) - maxDist
		nb, bucket := numBuckets, int64(0)
		var dist int64
		if bidirectional {
			nb /= 2
			if rel > 0 {
				bucket = nb
			}
			dist = max(rel, -rel)
		} else {
			dist = max(-rel, 0)
		}
		exact := nb / 2
		if dist < exact {
			table[i] = bucket + dist
			continue
		}
		ratio := float32(dist) / float32(exact)
		logRatio := float32(math.Log(float64(ratio)))
		scaled := float32(logRatio/float32(math.Log(float64(maxDist)/float64(exact)))) * float32(nb-exact)
		table[i] = bucket + min(exact+int64(scaled), nb-1)
	}
	return table
}

// t5Presets are `migu init` shapes in the t5 v1.1 style (gated-GELU) with
// the head tied to the embedding, which keeps the count down for large
// vocabularies.
var t5Presets = map[string]map[string]any{
	"tiny":  {"d_model": 128, "d_kv": 32, "num_heads": 4, "d_ff": 256, "num_layers": 2, "num_decoder_layers": 2},
	"small": {"d_model": 512, "d_kv": 64, "num_heads": 8, "d_ff": 1024, "num_layers": 6, "num_decoder_layers": 6},
}

// t5Preset returns a T5ForConditionalGeneration config.json for `migu
// init`. The pad token doubles as the decoder start token, as in T5.
func t5Preset(name string, vocab int, special SpecialTokens) (map[string]any, error) {
	shape, ok := t5Presets[name]
	if !ok {
		return nil, badinput.Errorf("t5 has no preset %q (tiny, small)", name)
	}
	if vocab <= 0 {
		return nil, badinput.Errorf("t5 preset %s: vocabulary size must be positive, got %d", name, vocab)
	}
	if special.PAD < 0 || special.EOS < 0 {
		return nil, badinput.Errorf("t5 preset %s: the tokenizer needs a pad token (also the decoder start) and an eos token", name)
	}
	for _, id := range []int64{special.PAD, special.EOS, special.UNK} {
		if id >= int64(vocab) {
			return nil, badinput.Errorf("t5 preset %s: special token id %d is outside the vocabulary (%d)", name, id, vocab)
		}
	}
	cfg := map[string]any{
		"model_type":                      "t5",
		"architectures":                   []string{"T5ForConditionalGeneration"},
		"vocab_size":                      vocab,
		"relative_attention_num_buckets":  32,
		"relative_attention_max_distance": 128,
		"layer_norm_epsilon":              1e-6,
		"feed_forward_proj":               "gated-gelu",
		"tie_word_embeddings":             true,
		"dropout_rate":                    0.1,
		"initializer_factor":              1.0,
		"is_encoder_decoder":              true,
		"pad_token_id":                    special.PAD,
		"eos_token_id":                    special.EOS,
		"decoder_start_token_id":          special.PAD,
	}
	if special.UNK >= 0 {
		cfg["unk_token_id"] = special.UNK
	}
	for k, v := range shape {
		cfg[k] = v
	}
	return cfg, nil
}
