package exporters

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/gguf"
)

var _ GGUFConverter = (*llamaConfig)(nil)

// llamaGGUFNames maps the tensors of one Llama block from Hugging Face
// module names to llama.cpp's (blk.N.…).
var llamaGGUFNames = map[string]string{
	"input_layernorm":          "attn_norm",
	"self_attn.q_proj":         "attn_q",
	"self_attn.k_proj":         "attn_k",
	"self_attn.v_proj":         "attn_v",
	"self_attn.o_proj":         "attn_output",
	"post_attention_layernorm": "ffn_norm",
	"mlp.gate_proj":            "ffn_gate",
	"mlp.up_proj":              "ffn_up",
	"mlp.down_proj":            "ffn_down",
}

// llamaGGUFGlobals maps the tensors outside the blocks.
var llamaGGUFGlobals = map[string]string{
	"model.embed_tokens.weight": "token_embd.weight",
	"model.norm.weight":         "output_norm.weight",
	"lm_head.weight":            "output.weight",
}

// GGUFTensor names a Llama tensor as llama.cpp does. Query and key
// projections (weights and biases) carry llama.cpp's interleaved rotary
// rows: queries over the attention heads, keys over the key-value heads.
func (c *llamaConfig) GGUFTensor(name string) (string, int64, bool) {
	if g, ok := llamaGGUFGlobals[name]; ok {
		return g, 0, true
	}
	rest, ok := strings.CutPrefix(name, "model.layers.")
	if !ok {
		return "", 0, false
	}
	num, rest, ok := strings.Cut(rest, ".")
	if _, err := strconv.Atoi(num); !ok || err != nil {
		return "", 0, false
	}
	for _, suffix := range []string{".weight", ".bias"} {
		module, ok := strings.CutSuffix(rest, suffix)
		if !ok {
			continue
		}
		g, ok := llamaGGUFNames[module]
		if !ok {
			return "", 0, false
		}
		var heads int64
		switch module {
		case "self_attn.q_proj":
			heads = c.NumAttentionHeads
		case "self_attn.k_proj":
			heads = c.kvHeads()
		}
		return "blk." + num + "." + g + suffix, heads, true
	}
	return "", 0, false
}

// GGUFMetadata writes the llama.* keys llama.cpp reads.
func (c *llamaConfig) GGUFMetadata() ([]gguf.KV, error) {
	u32 := func(key string, v int64) gguf.KV {
		return gguf.KV{Key: "llama." + key, Type: gguf.Uint32, Value: uint32(v)}
	}
	f32 := func(key string, v float64) gguf.KV {
		return gguf.KV{Key: "llama." + key, Type: gguf.Float32, Value: float32(v)}
	}
	kvs := []gguf.KV{
		{Key: "general.architecture", Type: gguf.String, Value: "llama"},
		u32("vocab_size", c.VocabSize),
		u32("context_length", c.maxPositions()),
		u32("embedding_length", c.HiddenSize),
		u32("block_count", c.NumHiddenLayers),
		u32("feed_forward_length", c.IntermediateSize),
		u32("rope.dimension_count", c.headDim()),
		u32("attention.head_count", c.NumAttentionHeads),
		u32("attention.head_count_kv", c.kvHeads()),
		f32("attention.layer_norm_rms_epsilon", c.eps()),
		f32("rope.freq_base", c.ropeTheta()),
	}
	if c.HiddenSize != c.NumAttentionHeads*c.headDim() {
		kvs = append(kvs, u32("attention.key_length", c.headDim()), u32("attention.value_length", c.headDim()))
	}
	return kvs, nil
}

// llamaFromGGUF derives a LlamaForCausalLM config.json from the metadata
// of a GGUF file of architecture llama (Llama 2/3, Mistral, SmolLM,
// TinyLlama), refusing what the graph does not compute: mixtures of
// experts, RoPE scaling, partial rotary embeddings.
func llamaFromGGUF(f *gguf.File) (map[string]any, error) {
	key := func(k string) string { return "llama." + k }
	required := func(k string) (int64, error) {
		v, ok, err := f.Uint(key(k))
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("key %s is missing", key(k))
		}
		if v == 0 || v > 1<<31 {
			return 0, fmt.Errorf("key %s is %d; it must be a positive size", key(k), v)
		}
		return int64(v), nil
	}
	optional := func(k string, def int64) (int64, error) {
		v, ok, err := f.Uint(key(k))
		if err != nil || !ok {
			return def, err
		}
		if v == 0 || v > 1<<31 {
			return 0, fmt.Errorf("key %s is %d; it must be a positive size", key(k), v)
		}
		return int64(v), nil
	}
	hidden, err := required("embedding_length")
	if err != nil {
		return nil, err
	}
	layers, err := required("block_count")
	if err != nil {
		return nil, err
	}
	ff, err := required("feed_forward_length")
	if err != nil {
		return nil, err
	}
	heads, err := required("attention.head_count")
	if err != nil {
		return nil, err
	}
	kv, err := optional("attention.head_count_kv", heads)
	if err != nil {
		return nil, err
	}
	ctx, err := optional("context_length", 2048)
	if err != nil {
		return nil, err
	}
	headDim, err := optional("attention.key_length", hidden/heads)
	if err != nil {
		return nil, err
	}
	if vl, err := optional("attention.value_length", headDim); err != nil {
		return nil, err
	} else if vl != headDim {
		return nil, fmt.Errorf("key %s is %d but %s is %d: migu needs equal key and value sizes", key("attention.value_length"), vl, key("attention.key_length"), headDim)
	}
	if rot, err := optional("rope.dimension_count", headDim); err != nil {
		return nil, err
	} else if rot != headDim {
		return nil, fmt.Errorf("key %s is %d, less than the head size %d: partial rotary embeddings are not supported", key("rope.dimension_count"), rot, headDim)
	}
	if n, ok, err := f.Uint(key("expert_count")); err != nil {
		return nil, err
	} else if ok && n > 0 {
		return nil, fmt.Errorf("key %s is %d: mixtures of experts are not supported", key("expert_count"), n)
	}
	if s, ok, err := f.String(key("rope.scaling.type")); err != nil {
		return nil, err
	} else if ok && s != "none" {
		return nil, fmt.Errorf("key %s is %q: RoPE scaling is not supported", key("rope.scaling.type"), s)
	}
	if _, ok := f.Tensor("rope_freqs.weight"); ok {
		return nil, fmt.Errorf("tensor rope_freqs.weight: Llama 3.1-style RoPE frequency scaling is not supported")
	}
	eps, ok, err := f.Float(key("attention.layer_norm_rms_epsilon"))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("key %s is missing", key("attention.layer_norm_rms_epsilon"))
	}
	theta, ok, err := f.Float(key("rope.freq_base"))
	if err != nil {
		return nil, err
	}
	if !ok {
		theta = 10000
	}
	embd, ok := f.Tensor("token_embd.weight")
	if !ok || len(embd.Shape()) != 2 {
		return nil, fmt.Errorf("tensor token_embd.weight is missing or not 2-D")
	}
	vocab := embd.Shape()[0]
	if n, ok, err := f.Uint(key("vocab_size")); err != nil {
		return nil, err
	} else if ok && int64(n) != vocab {
		return nil, fmt.Errorf("key %s is %d, but token_embd.weight has %d rows", key("vocab_size"), n, vocab)
	}
	_, hasOutput := f.Tensor("output.weight")
	_, attnBias := f.Tensor("blk.0.attn_q.bias")
	_, mlpBias := f.Tensor("blk.0.ffn_up.bias")
	cfg := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"vocab_size":              vocab,
		"hidden_size":             hidden,
		"intermediate_size":       ff,
		"num_hidden_layers":       layers,
		"num_attention_heads":     heads,
		"num_key_value_heads":     kv,
		"head_dim":                headDim,
		"hidden_act":              "silu",
		"max_position_embeddings": ctx,
		"rms_norm_eps":            float32ToJSON(eps),
		"rope_theta":              float32ToJSON(theta),
		"rope_scaling":            nil,
		"attention_bias":          attnBias,
		"mlp_bias":                mlpBias,
		"tie_word_embeddings":     !hasOutput,
		"torch_dtype":             "float32",
	}
	for _, t := range []struct{ hf, gg string }{{"bos_token_id", "bos_token_id"}, {"eos_token_id", "eos_token_id"}, {"pad_token_id", "padding_token_id"}} {
		id, ok, err := f.Uint("tokenizer.ggml." + t.gg)
		if err != nil {
			return nil, err
		}
		if ok && int64(id) < vocab {
			cfg[t.hf] = id
		}
	}
	return cfg, nil
}

// float32ToJSON gives the shortest decimal that reads back as the same
// float32, so 1e-5 stored as float32 is written 1e-05 rather than
// 9.999999747378752e-06; the graph narrows it to float32 again.
func float32ToJSON(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(float32(v)), 'g', -1, 32), 64)
	return f
}
