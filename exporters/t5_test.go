package exporters

import (
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
)

// t5Feeds makes a padded seq2seq batch: srcLens and tgtLens give each row's
// unpadded length (a negative length pads on the left instead of the right).
func t5Feeds(seed int64, vocab int64, src, tgt int, srcLens, tgtLens []int) map[string][][]int64 {
	r := rand.New(rand.NewSource(seed))
	side := func(width int, lens []int) (ids, mask [][]int64) {
		for _, n := range lens {
			idRow, maskRow := make([]int64, width), make([]int64, width)
			start := 0
			if n < 0 {
				n, start = -n, width+n
			}
			for j := start; j < start+n; j++ {
				idRow[j], maskRow[j] = 2+r.Int63n(vocab-2), 1
			}
			ids, mask = append(ids, idRow), append(mask, maskRow)
		}
		return ids, mask
	}
	ids, mask := side(src, srcLens)
	decIDs, decMask := side(tgt, tgtLens)
	return map[string][][]int64{"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decIDs, "decoder_attention_mask": decMask}
}

func t5Config(over map[string]any) map[string]any {
	cfg := map[string]any{
		"model_type": "t5", "vocab_size": 61, "d_model": 32, "d_kv": 8, "d_ff": 48,
		"num_layers": 2, "num_heads": 4, "feed_forward_proj": "relu",
		"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
	}
	for k, v := range over {
		cfg[k] = v
	}
	return cfg
}

// TestT5Parity exports random transformers models and compares their
// logits with the ONNX graph's over the unpadded decoder positions.
func TestT5Parity(t *testing.T) {
	preset, err := t5Preset("tiny", 96, SpecialTokens{BOS: -1, EOS: 1, PAD: 0, UNK: 2, Mask: -1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		class  string
		config map[string]any
		feeds  map[string][][]int64
		// again is a second batch of other shapes run through the same export.
		again map[string][][]int64
	}{
		{name: "relu_tied", config: t5Config(nil),
			feeds: t5Feeds(1, 61, 7, 5, []int{7, 4, -5}, []int{5, 3, 2})},
		{name: "gated_gelu_untied", config: t5Config(map[string]any{"feed_forward_proj": "gated-gelu", "tie_word_embeddings": false}),
			feeds: t5Feeds(2, 61, 6, 6, []int{3, 6}, []int{6, 4})},
		{name: "mt5_3_encoder_1_decoder", class: "MT5ForConditionalGeneration",
			config: t5Config(map[string]any{"model_type": "mt5", "num_layers": 3, "num_decoder_layers": 1, "feed_forward_proj": "gated-gelu"}),
			feeds:  t5Feeds(3, 61, 5, 7, []int{5, 2}, []int{7, 5})},
		{name: "odd_d_kv", config: t5Config(map[string]any{"d_model": 24, "d_kv": 5, "num_heads": 3, "feed_forward_proj": "gated-silu", "tie_word_embeddings": false}),
			feeds: t5Feeds(4, 61, 6, 4, []int{6, 5}, []int{4, 1})},
		{name: "long_source_small_buckets", config: t5Config(map[string]any{"relative_attention_num_buckets": 8, "relative_attention_max_distance": 8, "feed_forward_proj": "gelu"}),
			feeds: t5Feeds(5, 61, 20, 12, []int{20, 13, -17}, []int{12, 10, 9}),
			again: t5Feeds(6, 61, 9, 4, []int{9, 6}, []int{4, 3})},
		{name: "tiny_preset", config: preset,
			feeds: t5Feeds(7, 96, 9, 6, []int{9, 4}, []int{6, 5})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			class := c.class
			if class == "" {
				class = "T5ForConditionalGeneration"
			}
			ckpt, want, wantShape := hfReference(t, class, c.config, c.feeds, nil)
			out := filepath.Join(t.TempDir(), "model")
			man, err := Export(ckpt, out)
			if err != nil {
				t.Fatal(err)
			}
			checkT5Export(t, out, man, c.config)
			got, gotShape := runModel(t, out, c.feeds)
			compareLogits(t, got, want, gotShape, wantShape, c.feeds["decoder_attention_mask"], 1e-4)
			if c.again != nil {
				_, want, wantShape := hfReference(t, class, c.config, c.again, nil)
				got, gotShape := runModel(t, out, c.again)
				compareLogits(t, got, want, gotShape, wantShape, c.again["decoder_attention_mask"], 1e-4)
			}
		})
	}
}

// checkT5Export checks migu.json against the graph: every linear with its
// role and dims, the same MatMuls as onnx.FindLinears sees, the standard
// domain only, dynamic batch and sequence dimensions.
func checkT5Export(t *testing.T, dir string, man *modeldir.Manifest, config map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(config)
	m := &t5Model{}
	if err := json.Unmarshal(raw, m); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if man.Objective != "seq2seq" || man.MaxLength != 0 || man.VocabSize != m.VocabSize || man.HiddenSize != m.DModel {
		t.Errorf("manifest objective %q max_length %d vocab %d hidden %d", man.Objective, man.MaxLength, man.VocabSize, man.HiddenSize)
	}
	if man.SpecialTokens["pad"] != 0 || man.SpecialTokens["eos"] != 1 || man.SpecialTokens["decoder_start"] != 0 {
		t.Errorf("special tokens %v", man.SpecialTokens)
	}
	wantInputs := []string{"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}
	if !slices.Equal(man.Inputs, wantInputs) || !slices.Equal(man.Outputs, []string{"logits"}) {
		t.Errorf("interface %v → %v", man.Inputs, man.Outputs)
	}

	// Every 2-D checkpoint tensor but the embeddings is a linear layer; its
	// role follows from the module name, its stack and block from the path.
	roles := map[string]modeldir.Role{"q": modeldir.RoleQ, "k": modeldir.RoleK, "v": modeldir.RoleV, "o": modeldir.RoleO,
		"wi": modeldir.RoleFFNIn, "wi_1": modeldir.RoleFFNIn, "wi_0": modeldir.RoleFFNGate, "wo": modeldir.RoleFFNOut, "lm_head": modeldir.RoleHead}
	byName := map[string]modeldir.Linear{}
	for _, l := range man.Linears {
		byName[l.Name] = l
	}
	wantCount := 0
	for _, spec := range m.Tensors() {
		name := strings.TrimSuffix(spec.Name, ".weight")
		parts := strings.Split(name, ".")
		role, ok := roles[parts[len(parts)-1]]
		if !ok || len(spec.Shape) != 2 {
			continue
		}
		wantCount++
		want := modeldir.Linear{Role: role, Block: -1, DIn: spec.Shape[1], DOut: spec.Shape[0]}
		if len(parts) > 2 {
			want.Stack = parts[0]
			want.Block, _ = strconv.Atoi(parts[2])
		}
		l, ok := byName[name]
		if !ok {
			t.Errorf("migu.json lacks %s", name)
			continue
		}
		if l.Role != want.Role || l.Stack != want.Stack || l.Block != want.Block || l.DIn != want.DIn || l.DOut != want.DOut {
			t.Errorf("%s: role %s stack %q block %d %d→%d, want %s %q %d %d→%d", name, l.Role, l.Stack, l.Block, l.DIn, l.DOut, want.Role, want.Stack, want.Block, want.DIn, want.DOut)
		}
	}
	if len(man.Linears) != wantCount {
		t.Errorf("%d linears in migu.json, want %d", len(man.Linears), wantCount)
	}
	if head := byName["lm_head"]; (head.Tied != "") != m.tied {
		t.Errorf("lm_head tied to %q, config tie_word_embeddings %v", head.Tied, m.tied)
	}

	checkGraph(t, dir, man)
}

// TestT5BucketTable compares the bucket ids of every relative position with
// T5Attention._relative_position_bucket, including distances past
// max_distance and the exact ties at power-of-two boundaries.
func TestT5BucketTable(t *testing.T) {
	type tc struct {
		Bidirectional bool  `json:"bidirectional"`
		Buckets       int64 `json:"buckets"`
		MaxDist       int64 `json:"max_distance"`
	}
	var cases []tc
	for _, bm := range [][2]int64{{32, 128}, {8, 8}, {4, 3}, {16, 20}, {32, 64}, {10, 50}, {64, 256}, {7, 30}} {
		for _, bi := range []bool{true, false} {
			cases = append(cases, tc{bi, bm[0], bm[1]})
		}
	}
	spec, _ := json.Marshal(cases)
	script := `
import json, sys, torch
from transformers.models.t5.modeling_t5 import T5Attention
out = []
for c in json.loads(sys.argv[1]):
    md = c["max_distance"]
    rel = torch.arange(-md - 40, md + 41)[None, :]
    b = T5Attention._relative_position_bucket(rel, bidirectional=c["bidirectional"], num_buckets=c["buckets"], max_distance=md)
    out.append(b[0].tolist())
print(json.dumps(out))
`
	var want [][]int64
	if err := json.Unmarshal(testenv.RunPython(t, script, string(spec)), &want); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		table := t5BucketTable(c.Bidirectional, c.Buckets, c.MaxDist)
		for j, w := range want[i] {
			rel := int64(j) - c.MaxDist - 40
			got := table[min(max(rel, -c.MaxDist), c.MaxDist)+c.MaxDist]
			if got != w {
				t.Errorf("%+v: relative position %d: bucket %d, transformers %d", c, rel, got, w)
				break
			}
		}
	}
}

// writeT5Checkpoint writes a random checkpoint for config with a minimal
// tokenizer; edit may change the tensor list before it is written.
func writeT5Checkpoint(t *testing.T, config map[string]any, edit func([]safetensors.Tensor) []safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	raw, _ := json.Marshal(config)
	if err := os.WriteFile(filepath.Join(dir, modeldir.ConfigFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, modeldir.TokenizerFile), []byte(`{"model":{"type":"WordLevel","vocab":{"<pad>":0,"</s>":1,"a":2},"unk_token":"<pad>"},"added_tokens":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &t5Model{}
	if err := json.Unmarshal(raw, m); err != nil {
		t.Fatal(err)
	}
	var tensors []safetensors.Tensor
	if m.Validate() == nil {
		r := rand.New(rand.NewSource(1))
		for _, s := range m.Tensors() {
			n := int64(1)
			for _, d := range s.Shape {
				n *= d
			}
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(r.NormFloat64() * 0.1)
			}
			tensors = append(tensors, safetensors.Tensor{Name: s.Name, DType: safetensors.F32, Shape: s.Shape, Values: v})
		}
	}
	if edit != nil {
		tensors = edit(tensors)
	}
	if len(tensors) == 0 {
		tensors = []safetensors.Tensor{{Name: "shared.weight", DType: safetensors.F32, Shape: []int64{1}, Values: []float32{0}}}
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func t5DropTensor(name string) func([]safetensors.Tensor) []safetensors.Tensor {
	return func(ts []safetensors.Tensor) []safetensors.Tensor {
		return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == name })
	}
}

// TestT5Export covers checkpoints that export (tied copies present or
// absent) and bad input: one error line naming the field or tensor, marked
// bad input, and no output folder.
func TestT5Export(t *testing.T) {
	swapShape := func(name string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == name {
					ts[i].Shape = []int64{ts[i].Shape[1], ts[i].Shape[0]}
				}
			}
			return ts
		}
	}
	cases := []struct {
		name    string
		config  map[string]any
		edit    func([]safetensors.Tensor) []safetensors.Tensor
		wantErr []string // substrings of the error; none: the export succeeds
	}{
		{name: "tied_with_head_and_copies", config: t5Config(nil)},
		{name: "tied_without_copies", config: t5Config(nil), edit: func(ts []safetensors.Tensor) []safetensors.Tensor {
			for _, n := range []string{"lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} {
				ts = t5DropTensor(n)(ts)
			}
			return ts
		}},
		{name: "saved_activation_fields", config: t5Config(map[string]any{"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": true})},
		{name: "missing_tensor", config: t5Config(nil), edit: t5DropTensor("decoder.block.1.layer.1.EncDecAttention.k.weight"),
			wantErr: []string{"tensor decoder.block.1.layer.1.EncDecAttention.k.weight is missing"}},
		{name: "untied_head_missing", config: t5Config(map[string]any{"tie_word_embeddings": false}), edit: t5DropTensor("lm_head.weight"),
			wantErr: []string{"tensor lm_head.weight is missing"}},
		{name: "wrong_shape", config: t5Config(nil), edit: swapShape("encoder.block.0.layer.1.DenseReluDense.wo.weight"),
			wantErr: []string{"encoder.block.0.layer.1.DenseReluDense.wo.weight has shape [48 32]", "[32 48]"}},
		{name: "wrong_bias_table", config: t5Config(nil), edit: swapShape("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
			wantErr: []string{"relative_attention_bias.weight has shape [4 32]"}},
		{name: "missing_d_model", config: t5Config(map[string]any{"d_model": nil}), wantErr: []string{"config.json", "field d_model: is missing"}},
		{name: "negative_d_kv", config: t5Config(map[string]any{"d_kv": -8}), wantErr: []string{"field d_kv: is -8; it must be positive"}},
		{name: "zero_decoder_layers", config: t5Config(map[string]any{"num_decoder_layers": 0}), wantErr: []string{"field num_decoder_layers"}},
		{name: "unknown_activation", config: t5Config(map[string]any{"feed_forward_proj": "gated-swiglu"}), wantErr: []string{"field feed_forward_proj", `"swiglu" is not supported`}},
		{name: "malformed_proj", config: t5Config(map[string]any{"feed_forward_proj": "relu-gated"}), wantErr: []string{"field feed_forward_proj", "gated-ACT"}},
		{name: "contradicting_act", config: t5Config(map[string]any{"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu"}), wantErr: []string{"field dense_act_fn", "gelu_new"}},
		{name: "contradicting_gate", config: t5Config(map[string]any{"is_gated_act": true}), wantErr: []string{"field is_gated_act"}},
		{name: "max_distance_too_small", config: t5Config(map[string]any{"relative_attention_max_distance": 16}), wantErr: []string{"field relative_attention_max_distance"}},
		{name: "few_buckets", config: t5Config(map[string]any{"relative_attention_num_buckets": 2}), wantErr: []string{"field relative_attention_num_buckets"}},
		{name: "pad_outside_vocab", config: t5Config(map[string]any{"pad_token_id": 61}), wantErr: []string{"field pad_token_id: 61 is outside"}},
		{name: "bad_epsilon", config: t5Config(map[string]any{"layer_norm_epsilon": 0}), wantErr: []string{"field layer_norm_epsilon"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeT5Checkpoint(t, c.config, c.edit)
			out := filepath.Join(t.TempDir(), "model")
			_, err := Export(dir, out)
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("export succeeded")
			}
			msg := err.Error()
			for _, w := range c.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if !badinput.Is(err) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: bad input %v, want one line marked bad input", msg, badinput.Is(err))
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output folder left behind: %v", err)
			}
		})
	}
}

// TestT5Preset checks the presets validate, names their sizes, and refuses
// what they cannot build.
func TestT5Preset(t *testing.T) {
	special := SpecialTokens{BOS: -1, EOS: 1, PAD: 0, UNK: 2, Mask: -1}
	for _, c := range []struct {
		name     string
		vocab    int
		min, max int64
	}{
		{"tiny", 1000, 0.7e6, 1.3e6},
		{"small", 8000, 20e6, 60e6},
		{"small", 32128, 20e6, 60e6},
	} {
		cfg, err := t5Preset(c.name, c.vocab, special)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(cfg)
		m := &t5Model{}
		if err := json.Unmarshal(raw, m); err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n := Parameters(m.Tensors())
		t.Logf("%s preset, vocab %d: %d parameters", c.name, c.vocab, n)
		if n < c.min || n > c.max {
			t.Errorf("%s preset, vocab %d: %d parameters, want %d–%d", c.name, c.vocab, n, c.min, c.max)
		}
		if m.special["unk"] != 2 || m.special["decoder_start"] != 0 || cfg["architectures"] == nil {
			t.Errorf("%s preset: special tokens %v, config %v", c.name, m.special, cfg)
		}
	}
	for _, bad := range []struct {
		name    string
		vocab   int
		special SpecialTokens
	}{
		{"huge", 100, special},
		{"tiny", 0, special},
		{"tiny", 100, SpecialTokens{BOS: -1, EOS: 1, PAD: -1, UNK: 2, Mask: -1}},
		{"tiny", 2, special},
	} {
		if _, err := t5Preset(bad.name, bad.vocab, bad.special); err == nil || !badinput.Is(err) {
			t.Errorf("preset %q vocab %d special %+v: error %v, want bad input", bad.name, bad.vocab, bad.special, err)
		}
	}
}
