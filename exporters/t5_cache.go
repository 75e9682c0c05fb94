package exporters

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// seq2seqWithPast builds, in memory, the two graphs of cached T5
// generation for the model folder dir, with the folder's own weights (see
// decoderWithPast); it is the t5 architecture's kvcache.Builder. The encoder graph runs once per prompt: input_ids and
// attention_mask [batch, src] in, and for every decoder layer the
// cross-attention keys and values [batch, heads, src, d_kv] out (named
// cache.CrossKey/CrossValue). The decoder graph runs once per token:
// decoder_input_ids [batch, new], the encoder's attention_mask, the cross
// keys and values, and the past self-attention keys and values in; logits
// [batch, 1, vocab] of the last new position and the present keys and
// values out. The decoder has no padding: every row has the same length.
func seq2seqWithPast(dir string) (*kvcache.Graphs, error) {
	_, conv, err := ParseConfig(filepath.Join(dir, modeldir.ConfigFile))
	if err != nil {
		return nil, err
	}
	m, ok := conv.(*t5Model)
	if !ok {
		return nil, badinput.Errorf("%s: the cached encoder-decoder graphs are built for T5 models only", dir)
	}
	w, err := openFolderWeights(dir)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	n, dkv := m.NumHeads, m.DKV
	cache := &kvcache.Cache{Layers: int(m.decLayers), KVHeads: int(n), HeadDim: int(dkv)}
	for i := range cache.Layers {
		cache.PastKey = append(cache.PastKey, fmt.Sprintf("past_key_values.%d.decoder.key", i))
		cache.PastValue = append(cache.PastValue, fmt.Sprintf("past_key_values.%d.decoder.value", i))
		cache.PresentKey = append(cache.PresentKey, fmt.Sprintf("present.%d.decoder.key", i))
		cache.PresentValue = append(cache.PresentValue, fmt.Sprintf("present.%d.decoder.value", i))
		cache.CrossKey = append(cache.CrossKey, fmt.Sprintf("past_key_values.%d.encoder.key", i))
		cache.CrossValue = append(cache.CrossValue, fmt.Sprintf("past_key_values.%d.encoder.value", i))
	}
	eb := newBuilder("t5_encoder", w)
	m.buildEncoderWithCross(eb, cache)
	if err := eb.Err(); err != nil {
		return nil, fmt.Errorf("%s: building the cached T5 encoder: %w", dir, err)
	}
	db := newBuilder("t5_decoder_with_past", w)
	m.buildDecoderWithPast(db, cache)
	if err := db.Err(); err != nil {
		return nil, fmt.Errorf("%s: building the cached T5 decoder: %w", dir, err)
	}
	eb.Model.Dir, db.Model.Dir = dir, dir
	return &kvcache.Graphs{Encoder: eb.Model, Decoder: db.Model, Cache: cache}, nil
}

// buildEncoderWithCross emits the encoder stack and, from its output, the
// cross-attention keys and values of every decoder layer.
func (m *t5Model) buildEncoderWithCross(b *Builder, cache *kvcache.Cache) {
	batch, src := onnx.Sym("batch"), onnx.Sym("src_seq")
	ids := b.Input("input_ids", onnx.Int64, batch, src)
	mask := b.Input("attention_mask", onnx.Int64, batch, src)
	shared := b.Param("shared.weight", m.VocabSize, m.DModel)
	dec := m.stacks()[1]
	encOut, _ := m.encoder(b, shared, ids, mask)
	n, dkv, d := m.NumHeads, m.DKV, m.DModel
	kv := onnx.Shape{batch, onnx.D(n), src, onnx.D(dkv)}
	for i := range cache.Layers {
		name := dec.block(i) + ".layer.1.EncDecAttention"
		for _, p := range []struct {
			proj, out string
			role      modeldir.Role
		}{{"k", cache.CrossKey[i], modeldir.RoleK}, {"v", cache.CrossValue[i], modeldir.RoleV}} {
			y := b.Linear(encOut, LinearSpec{Name: name + "." + p.proj, Role: p.role, Block: i, Stack: dec.name, In: d, Out: n * dkv, Mask: m.stacks()[0].mask})
			heads := b.SplitHeads(y, n, dkv, false, name+"."+p.proj)
			if b.Err() == nil {
				b.G.Rename(heads, p.out)
			}
			b.G.AddOutput(p.out, onnx.Float, kv)
		}
	}
}

// buildDecoderWithPast emits one cached decoder step.
func (m *t5Model) buildDecoderWithPast(b *Builder, cache *kvcache.Cache) {
	batch := onnx.Sym("batch")
	n, dkv, d := m.NumHeads, m.DKV, m.DModel
	ids := b.Input("decoder_input_ids", onnx.Int64, batch, onnx.Sym("new"))
	mask := b.Input("attention_mask", onnx.Int64, batch, onnx.Sym("src_seq"))
	for i := range cache.Layers {
		for _, name := range []string{cache.CrossKey[i], cache.CrossValue[i]} {
			b.G.AddInput(name, onnx.Float, onnx.Shape{batch, onnx.D(n), onnx.Sym("src_seq"), onnx.D(dkv)})
		}
		for _, name := range []string{cache.PastKey[i], cache.PastValue[i]} {
			b.G.AddInput(name, onnx.Float, onnx.Shape{batch, onnx.D(n), onnx.Sym("past"), onnx.D(dkv)})
		}
	}
	shared := b.Param("shared.weight", m.VocabSize, m.DModel)
	dec := m.stacks()[1]

	// Queries sit at past … total−1 among keys 0 … total−1.
	past := b.Dim(cache.PastKey[0], 2, "decoder.past_len")
	total := b.Op("Add", []string{past, b.Dim(ids, 1, "decoder.new_len")}, "decoder.total_len")
	query := b.Op("Unsqueeze", []string{b.Op("Range", []string{past, total, b.IntScalar(1)}, "decoder.query_pos"), b.Ints(1)}, "decoder.query")
	key := b.Op("Unsqueeze", []string{b.Op("Range", []string{b.IntScalar(0), total, b.IntScalar(1)}, "decoder.key_pos"), b.Ints(0)}, "decoder.key")
	rel := b.Op("Sub", []string{key, query}, "decoder.relative")
	hint := "decoder.position_bias"
	clipped := b.Op("Clip", []string{rel, b.IntScalar(-m.maxDist), b.IntScalar(m.maxDist)}, hint+".clipped")
	idx := b.Op("Add", []string{clipped, b.IntScalar(m.maxDist)}, hint+".index")
	table := t5BucketTable(false, m.buckets, m.maxDist)
	buckets := b.Gather(b.G.ConstInt64(hint+".bucket_table", []int64{int64(len(table))}, table...), idx, hint+".buckets")
	weightT := b.Op("Transpose", []string{b.Param(dec.biasTable(), m.buckets, m.NumHeads)}, hint+".table_t", onnx.AttrInts("perm", 1, 0))
	posBias := b.Op("Gather", []string{weightT, buckets}, hint, onnx.AttrInt("axis", 1))
	future := b.Op("Cast", []string{b.Op("Greater", []string{key, query}, "decoder.future")}, "decoder.future_f", onnx.AttrInt("to", int64(onnx.Float)))
	selfBias := b.Op("Add", []string{posBias, b.Op("Mul", []string{future, b.Scalar(MaskValue)}, "decoder.causal_bias")}, "decoder.attention_bias")
	crossBias := b.PaddingBias(mask, "encoder.padding_bias")

	y := b.Gather(shared, ids, "decoder.embed")
	for i := range cache.Layers {
		blk := dec.block(i)
		self := blk + ".layer.0"
		y = m.residual(b, y, self, func(h string) string {
			name := self + ".SelfAttention"
			lin := func(in, proj string, role modeldir.Role, din, dout int64) string {
				return b.Linear(in, LinearSpec{Name: name + "." + proj, Role: role, Block: i, Stack: dec.name, In: din, Out: dout, Mask: dec.mask})
			}
			q := b.SplitHeads(lin(h, "q", modeldir.RoleQ, d, n*dkv), n, dkv, false, name+".q")
			k := b.SplitHeads(lin(h, "k", modeldir.RoleK, d, n*dkv), n, dkv, false, name+".k")
			v := b.SplitHeads(lin(h, "v", modeldir.RoleV, d, n*dkv), n, dkv, false, name+".v")
			keys, values := appendLayer(b, cache, k, v, i, name+".")
			kT := b.Op("Transpose", []string{keys}, name+".k_all_t", onnx.AttrInts("perm", 0, 1, 3, 2))
			ctx := b.Attend(q, kT, values, selfBias, n, n, dkv, 1, name)
			return lin(b.MergeHeads(ctx, n, dkv, name+".merge"), "o", modeldir.RoleO, n*dkv, d)
		})
		cross := blk + ".layer.1"
		y = m.residual(b, y, cross, func(h string) string {
			name := cross + ".EncDecAttention"
			q := b.SplitHeads(b.Linear(h, LinearSpec{Name: name + ".q", Role: modeldir.RoleQ, Block: i, Stack: dec.name, In: d, Out: n * dkv, Mask: dec.mask}), n, dkv, false, name+".q")
			kT := b.Op("Transpose", []string{cache.CrossKey[i]}, name+".k_t", onnx.AttrInts("perm", 0, 1, 3, 2))
			ctx := b.Attend(q, kT, cache.CrossValue[i], crossBias, n, n, dkv, 1, name)
			return b.Linear(b.MergeHeads(ctx, n, dkv, name+".merge"), LinearSpec{Name: name + ".o", Role: modeldir.RoleO, Block: i, Stack: dec.name, In: n * dkv, Out: d, Mask: dec.mask})
		})
		ffn := fmt.Sprintf("%s.layer.%d", blk, dec.ffnLayer())
		y = m.residual(b, y, ffn, func(h string) string { return m.feedForward(b, dec, i, ffn+".DenseReluDense", h) })
	}
	y = b.Op("Slice", []string{y, b.Ints(-1), b.Ints(math.MaxInt64), b.Ints(1)}, "last_position")
	y = m.norm(b, y, dec.name+".final_layer_norm")
	var logits string
	if m.tied {
		y = b.Op("Mul", []string{y, b.Scalar(float32(math.Pow(float64(m.DModel), -0.5)))}, "lm_head.rescale")
		logits = b.TiedHead(y, shared, "lm_head", dec.mask, m.VocabSize, m.DModel)
	} else {
		logits = b.Linear(y, LinearSpec{Name: "lm_head", Role: modeldir.RoleHead, Block: -1, In: m.DModel, Out: m.VocabSize, Mask: dec.mask})
	}
	b.Output(logits, "logits", onnx.Float, batch, onnx.D(1), onnx.D(m.VocabSize))
	for i := range cache.Layers {
		kv := onnx.Shape{batch, onnx.D(n), onnx.Sym("past+new"), onnx.D(dkv)}
		b.G.AddOutput(cache.PresentKey[i], onnx.Float, kv)
		b.G.AddOutput(cache.PresentValue[i], onnx.Float, kv)
	}
}
