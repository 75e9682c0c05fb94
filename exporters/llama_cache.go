package exporters

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// decoderWithPast builds, in memory, the key/value-cache decoder of the
// model folder dir: its architecture from config.json and its weights from
// the folder's own model.onnx, so that a fine-tuned folder (train's export)
// or one with a merged adapter is followed exactly. Weights the folder keeps
// as external data are referenced, not copied: the graph holds none of
// them, and ONNX Runtime reads them from the folder. The graph takes
// input_ids [batch, new], attention_mask [batch, past+new] and the past
// keys and values of every layer, and returns logits [batch, n, vocab] of
// the last n new positions (n the kvcache.LogitsLen input: 1 for
// generation) and the present keys and values [batch, kv_heads, past+new,
// head_dim]. Positions follow the forward graph's rule (positions) over
// the whole mask, so left-padded rows are handled and the cache holds the
// keys the forward graph computes. A folder whose config.json is not
// Llama-style gets a bad-input error. It is the llama architecture's
// kvcache.Builder.
func decoderWithPast(dir string) (*kvcache.Graphs, error) {
	_, conv, err := ParseConfig(filepath.Join(dir, modeldir.ConfigFile))
	if err != nil {
		return nil, err
	}
	c, ok := conv.(*llamaConfig)
	if !ok {
		return nil, badinput.Errorf("%s: the key/value-cache decoder is built for Llama-style models only", dir)
	}
	w, err := openFolderWeights(dir)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	b := newBuilder("llama_with_past", w)
	cache, err := c.buildWithPast(b)
	if err != nil {
		return nil, err
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: building the key/value-cache decoder: %w", dir, err)
	}
	b.Model.Dir = dir
	return &kvcache.Graphs{Decoder: b.Model, Cache: cache}, nil
}

// folderWeights reads checkpoint tensors back from a model folder's graph:
// the initializer that holds each Hugging Face tensor, with the linear
// weights turned back from MatMul orientation [in, out] to [out, in].
type folderWeights struct {
	m      *onnx.Model
	byName map[string]string // checkpoint name → initializer
	stored map[string]bool   // checkpoint names stored transposed
}

var _ Weights = (*folderWeights)(nil)

// openFolderWeights loads the model folder dir's graph and manifest for
// reading its weights back; Close releases the graph.
func openFolderWeights(dir string) (*folderWeights, error) {
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	w := &folderWeights{m: m, byName: map[string]string{}, stored: map[string]bool{}}
	for _, l := range man.Linears {
		if l.Tied != "" {
			continue
		}
		w.byName[l.Name+".weight"] = l.Weight
		w.stored[l.Name+".weight"] = true
		if l.Bias != "" {
			w.byName[l.Name+".bias"] = l.Bias
		}
	}
	return w, nil
}

// Reference returns a tensor that refers to the bytes of checkpoint tensor
// name in the folder's external data file (its location, offset and
// length, relative to the folder), when the folder stores it externally
// in the orientation asked for: linear weights in MatMul orientation (as
// ParamT wants them), every other tensor as in the checkpoint. The
// reference keeps the folder's element type (a bf16 or fp16 folder's
// matrices stay half precision, cast in the graph). It is nil otherwise.
// The reference is checked as reading it would be (the file inside the
// folder, the range inside the file, the length that of the shape), but no
// byte is read.
func (w *folderWeights) Reference(name string, transpose bool, shape []int64) (*onnxpb.TensorProto, error) {
	init := name
	if n, ok := w.byName[name]; ok {
		init = n
	}
	t := w.m.Graph().Initializer(init)
	if t == nil || !onnx.IsExternal(t) || w.stored[name] != transpose {
		return nil, nil
	}
	want := shape
	if transpose {
		if len(shape) != 2 {
			return nil, fmt.Errorf("linear weight %s: want a 2-D shape, got %v", name, shape)
		}
		want = []int64{shape[1], shape[0]}
	}
	if !slices.Equal(t.Dims, want) {
		return nil, fmt.Errorf("tensor %s: the model graph's %s has shape %v, want %v", name, init, t.Dims, want)
	}
	if _, err := w.m.TensorBytes(t); err != nil {
		return nil, err
	}
	ref := &onnxpb.TensorProto{
		DataType:     t.DataType,
		Dims:         slices.Clone(t.Dims),
		DataLocation: t.DataLocation,
	}
	for _, kv := range t.ExternalData {
		ref.ExternalData = append(ref.ExternalData, &onnxpb.StringStringEntryProto{Key: kv.Key, Value: kv.Value})
	}
	return ref, nil
}

// Close releases the folder's graph.
func (w *folderWeights) Close() error { return w.m.Close() }

// Float32 returns the tensor in checkpoint layout.
func (w *folderWeights) Float32(name string) ([]float32, error) {
	init := name
	if n, ok := w.byName[name]; ok {
		init = n
	}
	t := w.m.Graph().Initializer(init)
	if t == nil {
		return nil, fmt.Errorf("tensor %s: the model graph has no initializer %s", name, init)
	}
	data, err := w.m.Float32s(t)
	if err != nil || !w.stored[name] {
		return data, err
	}
	if len(t.Dims) != 2 {
		return nil, fmt.Errorf("linear weight %s has shape %v, want 2-D", init, t.Dims)
	}
	in, out := t.Dims[0], t.Dims[1]
	back := make([]float32, len(data))
	for r := range in {
		for k := range out {
			back[k*in+r] = data[r*out+k]
		}
	}
	return back, nil
}

// buildWithPast emits the cached decoder into b and returns its cache
// layout.
func (c *llamaConfig) buildWithPast(b *Builder) (*kvcache.Cache, error) {
	h, v := c.HiddenSize, c.VocabSize
	nkv, d := c.kvHeads(), c.headDim()
	layers := int(c.NumHiddenLayers)
	cache := &kvcache.Cache{Layers: layers, KVHeads: int(nkv), HeadDim: int(d)}
	ids := b.Input("input_ids", onnx.Int64, onnx.Sym("batch"), onnx.Sym("seq"))
	// The mask covers the past and the new tokens: its length named as
	// their sum lets shape inference tie the keys, the rotary table of the
	// new positions and the bias together (onnx/shapes reads "past+seq"
	// as past + seq), so that the kernels fuse the attention.
	mask := b.Input("attention_mask", onnx.Int64, onnx.Sym("batch"), onnx.Sym("past+seq"))
	for i := range layers {
		for _, kind := range []string{"key", "value"} {
			name := fmt.Sprintf("past_key_values.%d.%s", i, kind)
			b.G.AddInput(name, onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.D(nkv), onnx.Sym("past"), onnx.D(d)})
			b.Manifest.Inputs = append(b.Manifest.Inputs, name)
			if kind == "key" {
				cache.PastKey = append(cache.PastKey, name)
				cache.PresentKey = append(cache.PresentKey, fmt.Sprintf("present.%d.key", i))
			} else {
				cache.PastValue = append(cache.PastValue, name)
				cache.PresentValue = append(cache.PresentValue, fmt.Sprintf("present.%d.value", i))
			}
		}
	}

	embed := b.Param("model.embed_tokens.weight", v, h)
	x := b.Gather(embed, ids, "model.embed_tokens")

	// The new tokens are queries at absolute positions past … total−1 of
	// the keys 0 … total−1: key j is visible to query i when j ≤ past+i.
	total := b.Dim(mask, 1, "total_len")
	newLen := b.Dim(ids, 1, "new_len")
	past := b.Op("Sub", []string{total, newLen}, "past_len")
	rows := b.Op("Unsqueeze", []string{b.Op("Range", []string{past, total, b.IntScalar(1)}, "causal.rows_idx"), b.Ints(1)}, "causal.rows")
	cols := b.Op("Unsqueeze", []string{b.Op("Range", []string{b.IntScalar(0), total, b.IntScalar(1)}, "causal.cols_idx"), b.Ints(0)}, "causal.cols")
	future := b.Op("Cast", []string{b.Op("Greater", []string{cols, rows}, "causal.future")}, "causal.f", onnx.AttrInt("to", int64(onnx.Float)))
	causal := b.Op("Mul", []string{future, b.Scalar(MaskValue)}, "causal_bias")
	bias := b.Op("Add", []string{causal, b.PaddingBias(mask, "padding_bias")}, "attn_bias")
	cos, sin := c.rotaryWithPast(b, mask, past)

	for i := range layers {
		x = c.block(b, x, bias, cos, sin, i, cache)
	}
	// Only the last LogitsLen positions' logits (generation's one: the head
	// is the costliest MatMul of a prompt's first step).
	from := b.Op("Neg", []string{b.Input(kvcache.LogitsLen, onnx.Int64, onnx.D(1))}, "logits_from")
	last := b.Op("Slice", []string{x, from, b.Ints(math.MaxInt64), b.Ints(1)}, "last_positions")
	last = b.RMSNorm(last, b.Param("model.norm.weight", h), float32(c.eps()), "model.norm")
	var logits string
	if c.TieWordEmbeddings {
		logits = b.TiedHead(last, embed, "lm_head", "", v, h)
	} else {
		logits = b.Linear(last, LinearSpec{Name: "lm_head", Role: modeldir.RoleHead, Block: -1, In: h, Out: v})
	}
	b.Output(logits, "logits", onnx.Float, onnx.Sym("batch"), onnx.Sym(kvcache.LogitsLen), onnx.D(v))
	for i := range layers {
		kv := onnx.Shape{onnx.Sym("batch"), onnx.D(nkv), onnx.Sym("past+seq"), onnx.D(d)}
		b.G.AddOutput(cache.PresentKey[i], onnx.Float, kv)
		b.G.AddOutput(cache.PresentValue[i], onnx.Float, kv)
	}
	b.Manifest.Objective = "clm"
	return cache, b.Err()
}

// rotaryWithPast is the forward graph's rotary table for the new positions
// only: positions over the whole mask (past and new), sliced from past on,
// as cos and sin [B, new, 1, head_dim/2].
func (c *llamaConfig) rotaryWithPast(b *Builder, mask, past string) (cos, sin string) {
	start := b.Op("Unsqueeze", []string{past, b.Ints(0)}, "rope.start")
	pos := b.Op("Slice", []string{positions(b, mask), start, b.Ints(math.MaxInt64), b.Ints(1)}, "rope.new_pos")
	pos = b.Op("Unsqueeze", []string{pos, b.Ints(2, 3)}, "rope.pos4")
	return c.rotaryTable(b, pos)
}

// appendLayer concatenates layer i's new keys and values ([B, heads, S, d])
// to its past ones in cache along the sequence and names the results
// present.
func appendLayer(b *Builder, cache *kvcache.Cache, k, v string, i int, p string) (keys, values string) {
	keys = b.Op("Concat", []string{cache.PastKey[i], k}, p+"k.all", onnx.AttrInt("axis", 2))
	values = b.Op("Concat", []string{cache.PastValue[i], v}, p+"v.all", onnx.AttrInt("axis", 2))
	if b.Err() == nil {
		b.G.Rename(keys, cache.PresentKey[i])
		b.G.Rename(values, cache.PresentValue[i])
		keys, values = cache.PresentKey[i], cache.PresentValue[i]
	}
	return keys, values
}
