package exporters

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
)

// llamaTestConfig is a tiny Llama config with overrides applied (a nil
// value deletes the key).
func llamaTestConfig(over map[string]any) map[string]any {
	c := map[string]any{
		"model_type":              "llama",
		"vocab_size":              64,
		"hidden_size":             32,
		"intermediate_size":       48,
		"num_hidden_layers":       2,
		"num_attention_heads":     4,
		"num_key_value_heads":     4,
		"max_position_embeddings": 64,
		"rms_norm_eps":            1e-5,
		"bos_token_id":            1,
		"eos_token_id":            2,
		"pad_token_id":            0,
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// llamaParse reads a config map as ParseConfig would.
func llamaParse(t *testing.T, config map[string]any) *llamaConfig {
	t.Helper()
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	c := &llamaConfig{}
	if err := json.Unmarshal(raw, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// llamaBatch is a [3, seq] batch with rows of seq, seq − 2 and 2 tokens,
// padded on the right or on the left, and the position ids our graph
// derives from its mask: a real token counts the real tokens before it,
// padding keeps its index (transformers' default on right padding).
func llamaBatch(seq int, leftPad bool) (feeds map[string][][]int64, positions [][]int64) {
	var ids, mask [][]int64
	for r, n := range []int{seq, seq - 2, 2} {
		row, m, pos := make([]int64, seq), make([]int64, seq), make([]int64, seq)
		for s := range seq {
			tok := s
			if leftPad {
				tok = s - (seq - n)
			}
			if tok >= 0 && tok < n {
				row[s], m[s] = int64(3+(r*29+tok*11)%60), 1
			}
		}
		count := int64(0)
		for s := range seq {
			count += m[s]
			pos[s] = int64(s)
			if m[s] == 1 {
				pos[s] = count - 1
			}
		}
		ids, mask, positions = append(ids, row), append(mask, m), append(positions, pos)
	}
	return map[string][][]int64{"input_ids": ids, "attention_mask": mask}, positions
}

// TestLlamaParity exports random-weight transformers models and checks the
// logits ORT computes from our graph against PyTorch's on a padded batch,
// the manifest against the graph, and a second batch shape through the
// same export.
func TestLlamaParity(t *testing.T) {
	tiny, err := llamaPreset("tiny", 64, SpecialTokens{BOS: 1, EOS: 2, PAD: -1, UNK: 0, Mask: -1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		class   string
		config  map[string]any
		leftPad bool
		seq     int // 7 when 0
	}{
		{"mha_untied_1layer", "LlamaForCausalLM", llamaTestConfig(map[string]any{"num_hidden_layers": 1}), false, 0},
		{"gqa_tied_2layers_theta100", "LlamaForCausalLM", llamaTestConfig(map[string]any{
			"num_key_value_heads": 2, "tie_word_embeddings": true, "rope_theta": 100.0}), false, 0},
		{"head6_gqa_biases_3layers", "LlamaForCausalLM", llamaTestConfig(map[string]any{
			"hidden_size": 36, "num_attention_heads": 6, "num_key_value_heads": 3,
			"attention_bias": true, "mlp_bias": true, "num_hidden_layers": 3}), false, 0},
		{"explicit_head_dim10_mqa", "LlamaForCausalLM", llamaTestConfig(map[string]any{
			"hidden_size": 40, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 10}), false, 0},
		{"gqa_left_padding", "LlamaForCausalLM", llamaTestConfig(map[string]any{"num_key_value_heads": 2}), true, 0},
		{"mistral_no_window", "MistralForCausalLM", llamaTestConfig(map[string]any{
			"model_type": "mistral", "num_key_value_heads": 2, "sliding_window": json.RawMessage("null")}), false, 0},
		{"long_seq200_theta500k", "LlamaForCausalLM", llamaTestConfig(map[string]any{
			"hidden_size": 64, "num_key_value_heads": 2, "rope_theta": 500000.0, "max_position_embeddings": 256}), true, 200},
		{"preset_tiny", "LlamaForCausalLM", tiny, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seq := cmp.Or(tc.seq, 7)
			feeds, positions := llamaBatch(seq, tc.leftPad)
			var hfOnly map[string][][]int64
			if tc.leftPad {
				hfOnly = map[string][][]int64{"position_ids": positions}
			}
			ckpt, want, wantShape := hfReference(t, tc.class, tc.config, feeds, hfOnly)
			out := filepath.Join(t.TempDir(), "model")
			if _, err := Export(ckpt, out); err != nil {
				t.Fatal(err)
			}
			got, gotShape := runModel(t, out, feeds)
			compareLogits(t, got, want, gotShape, wantShape, feeds["attention_mask"], 1e-4)
			llamaCheckModel(t, out, llamaParse(t, tc.config))

			// The same export on another shape: the first row's (unpadded)
			// first four tokens alone, whose logits causal attention makes
			// equal to those of the batch run.
			const n = 4
			row := feeds["input_ids"][0][:n]
			small := map[string][][]int64{"input_ids": {row}, "attention_mask": {{1, 1, 1, 1}}}
			got, gotShape = runModel(t, out, small)
			vocab := int(wantShape[2])
			compareLogits(t, got, want[:n*vocab], gotShape, []int64{1, n, wantShape[2]}, small["attention_mask"], 1e-4)
		})
	}
}

// llamaCheckModel checks an exported folder: the manifest's dims and
// linear layers (names, roles, d_in, d_out), that onnx.FindLinears finds the
// same MatMuls, standard-domain ops only and none of the ops whose
// backward is slow, and symbolic batch and sequence dimensions.
func llamaCheckModel(t *testing.T, dir string, c *llamaConfig) {
	t.Helper()
	m, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Architecture != "llama" || m.Objective != "clm" || m.VocabSize != c.VocabSize || m.HiddenSize != c.HiddenSize ||
		m.NumLayers != int(c.NumHiddenLayers) || m.MaxLength != c.maxPositions() {
		t.Errorf("manifest header %+v does not match the config", m)
	}
	// The config's ids come first; the tokenizer adds the roles it lacks.
	special, err := c.specialTokens()
	if err != nil {
		t.Fatal(err)
	}
	for role, id := range special {
		if got, ok := m.SpecialTokens[role]; !ok || got != id {
			t.Errorf("special token %s is %d in migu.json, %d in the config", role, got, id)
		}
	}
	if _, ok := m.SpecialTokens["unk"]; !ok {
		t.Errorf("special tokens %v lack the tokenizer's unk", m.SpecialTokens)
	}
	if !slices.Equal(m.Inputs, []string{"input_ids", "attention_mask"}) || !slices.Equal(m.Outputs, []string{"logits"}) {
		t.Errorf("interface %v → %v", m.Inputs, m.Outputs)
	}

	type want struct {
		role      modeldir.Role
		block     int
		din, dout int64
	}
	h, ff, qd, kvd := c.HiddenSize, c.IntermediateSize, c.NumAttentionHeads*c.headDim(), c.kvHeads()*c.headDim()
	wants := map[string]want{"lm_head": {modeldir.RoleHead, -1, h, c.VocabSize}}
	for i := range int(c.NumHiddenLayers) {
		p := fmt.Sprintf("model.layers.%d.", i)
		wants[p+"self_attn.q_proj"] = want{modeldir.RoleQ, i, h, qd}
		wants[p+"self_attn.k_proj"] = want{modeldir.RoleK, i, h, kvd}
		wants[p+"self_attn.v_proj"] = want{modeldir.RoleV, i, h, kvd}
		wants[p+"self_attn.o_proj"] = want{modeldir.RoleO, i, qd, h}
		wants[p+"mlp.gate_proj"] = want{modeldir.RoleFFNGate, i, h, ff}
		wants[p+"mlp.up_proj"] = want{modeldir.RoleFFNIn, i, h, ff}
		wants[p+"mlp.down_proj"] = want{modeldir.RoleFFNOut, i, ff, h}
	}
	if len(m.Linears) != len(wants) {
		t.Errorf("manifest lists %d linears, want %d", len(m.Linears), len(wants))
	}
	for _, l := range m.Linears {
		w, ok := wants[l.Name]
		if !ok {
			t.Errorf("unexpected linear %s", l.Name)
			continue
		}
		if l.Role != w.role || l.Block != w.block || l.DIn != w.din || l.DOut != w.dout {
			t.Errorf("linear %s: role %s block %d %d→%d, want %s block %d %d→%d", l.Name, l.Role, l.Block, l.DIn, l.DOut, w.role, w.block, w.din, w.dout)
		}
		if tied := l.Tied != ""; tied != (c.TieWordEmbeddings && l.Role == modeldir.RoleHead) {
			t.Errorf("linear %s: tied %q", l.Name, l.Tied)
		}
		if (l.Bias != "") != ((l.Role == modeldir.RoleQ || l.Role == modeldir.RoleK || l.Role == modeldir.RoleV || l.Role == modeldir.RoleO) && c.attnBias() ||
			(l.Role == modeldir.RoleFFNGate || l.Role == modeldir.RoleFFNIn || l.Role == modeldir.RoleFFNOut) && c.mlpBias()) {
			t.Errorf("linear %s: bias %q", l.Name, l.Bias)
		}
	}

	s := checkGraph(t, dir, m)
	for _, op := range s.Ops {
		switch op.OpType {
		case "Pow", "Where", "Slice", "Pad", "Expand":
			t.Errorf("graph uses %s (%d×), whose backward is slow", op.OpType, op.Count)
		}
	}
}

// llamaWriteCheckpoint writes a Hugging Face-style folder (config.json,
// model.safetensors, tokenizer.json) with small deterministic weights for
// the config's tensors; edit may drop or change tensors first.
func llamaWriteCheckpoint(t *testing.T, config map[string]any, edit func([]safetensors.Tensor) []safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	c := &llamaConfig{}
	if err := json.Unmarshal(raw, c); err != nil {
		t.Fatal(err)
	}
	var tensors []safetensors.Tensor
	seed := uint32(1)
	if c.VocabSize > 0 && c.HiddenSize > 0 && c.NumAttentionHeads > 0 {
		for _, s := range c.Tensors() {
			n := int64(1)
			for _, d := range s.Shape {
				n *= d
			}
			vals := make([]float32, n)
			for i := range vals {
				seed = seed*1664525 + 1013904223
				vals[i] = float32(seed>>8)/float32(1<<24)*0.2 - 0.1
				if s.Init == Ones {
					vals[i] += 1
				}
			}
			tensors = append(tensors, safetensors.Tensor{Name: s.Name, DType: safetensors.F32, Shape: s.Shape, Values: vals})
		}
	}
	if edit != nil {
		tensors = edit(tensors)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, modeldir.ConfigFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tok := `{"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"},"added_tokens":[]}`
	if err := os.WriteFile(filepath.Join(dir, modeldir.TokenizerFile), []byte(tok), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLlamaBadInput checks that wrong checkpoints and unsupported configs
// fail with one line that names the field or tensor, marked bad input, and
// leave nothing at the output path.
func TestLlamaBadInput(t *testing.T) {
	gqa := map[string]any{"num_key_value_heads": 2}
	drop := func(name string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == name })
		}
	}
	cases := []struct {
		name   string
		config map[string]any
		edit   func([]safetensors.Tensor) []safetensors.Tensor
		want   []string // substrings of the error; none: the export succeeds
	}{
		{"ok", llamaTestConfig(gqa), nil, nil},
		{"tied_without_lm_head", llamaTestConfig(map[string]any{"tie_word_embeddings": true}), drop("lm_head.weight"), nil},
		{"missing_tensor", llamaTestConfig(gqa), drop("model.layers.1.mlp.up_proj.weight"),
			[]string{"model.layers.1.mlp.up_proj.weight", "missing"}},
		{"untied_without_lm_head", llamaTestConfig(nil), drop("lm_head.weight"), []string{"lm_head.weight", "missing"}},
		{"wrong_shape", llamaTestConfig(gqa), func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == "model.layers.0.self_attn.k_proj.weight" {
					ts[i].Shape = []int64{32, 16}
				}
			}
			return ts
		}, []string{"model.layers.0.self_attn.k_proj.weight", "[32 16]", "[16 32]"}},
		{"missing_bias", llamaTestConfig(map[string]any{"attention_bias": true}), drop("model.layers.0.self_attn.k_proj.bias"),
			[]string{"model.layers.0.self_attn.k_proj.bias", "missing"}},
		{"no_hidden_size", llamaTestConfig(map[string]any{"hidden_size": nil}), nil, []string{"config.json", "field hidden_size", "missing"}},
		{"no_layers", llamaTestConfig(map[string]any{"num_hidden_layers": nil}), nil, []string{"field num_hidden_layers"}},
		{"hidden_not_divisible", llamaTestConfig(map[string]any{"hidden_size": 30}), nil, []string{"field hidden_size", "30", "num_attention_heads 4"}},
		{"kv_not_dividing", llamaTestConfig(map[string]any{"num_key_value_heads": 3}), nil, []string{"field num_key_value_heads", "3", "4"}},
		{"odd_head_dim", llamaTestConfig(map[string]any{"head_dim": 7}), nil, []string{"field head_dim", "7"}},
		{"odd_head_size", llamaTestConfig(map[string]any{"hidden_size": 28}), nil, []string{"field hidden_size", "28", "head size 7"}},
		{"rope_scaling", llamaTestConfig(map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 2.0}}), nil,
			[]string{"field rope_scaling", `"type":"linear"`}},
		{"llama3_rope", llamaTestConfig(map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}), nil,
			[]string{"field rope_scaling", "llama3"}},
		{"partial_rotary", llamaTestConfig(map[string]any{"partial_rotary_factor": 0.5}), nil, []string{"field partial_rotary_factor", "0.5"}},
		{"gelu", llamaTestConfig(map[string]any{"hidden_act": "gelu"}), nil, []string{"field hidden_act", "gelu"}},
		{"mistral_window", llamaTestConfig(map[string]any{"model_type": "mistral", "sliding_window": 4096}), nil,
			[]string{"field sliding_window", "4096"}},
		{"mistral_default_window", llamaTestConfig(map[string]any{"model_type": "mistral"}), nil, []string{"field sliding_window", "missing"}},
		{"pad_past_vocab", llamaTestConfig(map[string]any{"pad_token_id": 64}), nil, []string{"field pad_token_id", "64"}},
		{"bad_token_id", llamaTestConfig(map[string]any{"eos_token_id": "two"}), nil, []string{"config.json", "field eos_token_id", "two"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := llamaWriteCheckpoint(t, tc.config, tc.edit)
			parent := t.TempDir()
			out := filepath.Join(parent, "model")
			_, err := Export(from, out)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("export succeeded, want an error naming %q", tc.want)
			}
			t.Log(err)
			msg := err.Error()
			if !badinput.Is(err) {
				t.Errorf("error is not marked bad input: %v", err)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output %s exists after a failed export (%v)", out, err)
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Errorf("failed export left %d entries in %s", len(left), parent)
			}
		})
	}
}

// TestLlamaGoCheckpoint exports a checkpoint written by Go (no Python) and
// runs it at two shapes: finite logits, causal (a row's prefix gives the
// same logits alone), and the same logits for a left-padded copy of a row.
func TestLlamaGoCheckpoint(t *testing.T) {
	from := llamaWriteCheckpoint(t, llamaTestConfig(map[string]any{"num_key_value_heads": 2}), nil)
	out := filepath.Join(t.TempDir(), "model")
	if _, err := Export(from, out); err != nil {
		t.Fatal(err)
	}
	right, _ := llamaBatch(7, false)
	left, _ := llamaBatch(7, true)
	gotR, shape := runModel(t, out, right)
	gotL, _ := runModel(t, out, left)
	vocab, seq := int(shape[2]), int(shape[1])
	for r, mask := range right["attention_mask"] {
		n := 0
		for _, m := range mask {
			n += int(m)
		}
		for s := range n {
			a := gotR[(r*seq+s)*vocab : (r*seq+s+1)*vocab]
			b := gotL[(r*seq+seq-n+s)*vocab : (r*seq+seq-n+s+1)*vocab]
			for k := range a {
				if d := a[k] - b[k]; d > 1e-4 || d < -1e-4 {
					t.Fatalf("row %d token %d: right-padded %g, left-padded %g", r, s, a[k], b[k])
				}
			}
		}
	}
}

// TestLlamaPreset checks that the presets are valid configs of the sizes
// promised, and logs their parameter counts.
func TestLlamaPreset(t *testing.T) {
	special := SpecialTokens{BOS: 1, EOS: 2, PAD: -1, UNK: 0, Mask: -1}
	cases := []struct {
		preset   string
		vocab    int
		min, max int64
	}{
		{"tiny", 4096, 500_000, 1_500_000},
		{"tiny", 8000, 500_000, 1_500_000},
		{"small", 8000, 20_000_000, 60_000_000},
		{"small", 32000, 20_000_000, 60_000_000},
	}
	for _, tc := range cases {
		config, err := llamaPreset(tc.preset, tc.vocab, special)
		if err != nil {
			t.Fatal(err)
		}
		if config["pad_token_id"] != nil || config["bos_token_id"] != int64(1) {
			t.Errorf("%s: special token ids %v %v", tc.preset, config["bos_token_id"], config["pad_token_id"])
		}
		c := llamaParse(t, config)
		n := Parameters(c.Tensors())
		t.Logf("%s preset, vocab %d: %d parameters", tc.preset, tc.vocab, n)
		if n < tc.min || n > tc.max {
			t.Errorf("%s preset, vocab %d: %d parameters, want %d–%d", tc.preset, tc.vocab, n, tc.min, tc.max)
		}
	}
	if _, err := llamaPreset("huge", 100, special); !badinput.Is(err) || !strings.Contains(err.Error(), "huge") {
		t.Errorf("unknown preset: %v", err)
	}
}

// TestLlamaTokenID reads the forms config.json gives special token ids in.
func TestLlamaTokenID(t *testing.T) {
	cases := []struct {
		json string
		id   int64
		set  bool
		bad  bool
	}{
		{"2", 2, true, false},
		{"null", 0, false, false},
		{"", 0, false, false},
		{"-1", 0, false, false},
		{"[128001, 128008]", 128001, true, false},
		{"[]", 0, false, false},
		{`"eos"`, 0, false, true},
	}
	for _, tc := range cases {
		id, set, err := llamaTokenID(json.RawMessage(tc.json))
		if (err != nil) != tc.bad || id != tc.id || set != tc.set {
			t.Errorf("%q: got %d %v %v; want %d %v (error %v)", tc.json, id, set, err, tc.id, tc.set, tc.bad)
		}
	}
}
