package exporters

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
)

// robertaBase is a tiny RoBERTa config; test cases override fields.
func robertaBase(overrides map[string]any) map[string]any {
	cfg := map[string]any{
		"model_type":              "roberta",
		"architectures":           []string{"RobertaForMaskedLM"},
		"vocab_size":              67,
		"hidden_size":             32,
		"num_hidden_layers":       2,
		"num_attention_heads":     4,
		"intermediate_size":       48,
		"hidden_act":              "gelu",
		"max_position_embeddings": 24,
		"type_vocab_size":         1,
		"layer_norm_eps":          1e-5,
		"pad_token_id":            1,
		"bos_token_id":            0,
		"eos_token_id":            2,
		"attn_implementation":     "eager",
	}
	for k, v := range overrides {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	return cfg
}

// robertaFeeds makes a right-padded batch: row r has lens[r] tokens (the
// first is bos), then pad_token_id under a zero mask. No real token equals
// pad, so positions count every real token, as in a tokenizer's output.
func robertaFeeds(seed int64, vocab, pad, bos int64, seq int, lens ...int) (ids, mask [][]int64) {
	rng := rand.New(rand.NewSource(seed))
	for _, n := range lens {
		idRow, maskRow := make([]int64, seq), make([]int64, seq)
		for s := range seq {
			switch {
			case s >= n:
				idRow[s] = pad
			case s == 0:
				idRow[s], maskRow[s] = bos, 1
			default:
				id := pad
				for id == pad {
					id = rng.Int63n(vocab)
				}
				idRow[s], maskRow[s] = id, 1
			}
		}
		ids, mask = append(ids, idRow), append(mask, maskRow)
	}
	return ids, mask
}

// robertaRows keeps rows [0, n) of a [batch, …] float tensor.
func robertaRows(x []float32, shape []int64, from, n int) ([]float32, []int64) {
	row := 1
	for _, d := range shape[1:] {
		row *= int(d)
	}
	return x[from*row : (from+n)*row], append([]int64{int64(n)}, shape[1:]...)
}

// robertaPrefix keeps positions [0, seq) of a [batch, S, n] tensor.
func robertaPrefix(x []float32, shape []int64, seq int) ([]float32, []int64) {
	b, s, n := int(shape[0]), int(shape[1]), int(shape[2])
	var out []float32
	for i := range b {
		out = append(out, x[(i*s)*n:(i*s+seq)*n]...)
	}
	return out, []int64{int64(b), int64(seq), int64(n)}
}

// TestRobertaParity exports random transformers models and compares the
// logits ORT computes with transformers' own on a right-padded batch, then
// runs the same export at a second batch size and sequence length.
func TestRobertaParity(t *testing.T) {
	cases := []struct {
		name   string
		class  string
		config map[string]any
		labels int // cls heads: logits are [batch, labels]
	}{
		{"mlm_tied_1layer", "RobertaForMaskedLM", robertaBase(map[string]any{"num_hidden_layers": 1}), 0},
		{"mlm_untied_2layers_2types", "RobertaForMaskedLM", robertaBase(map[string]any{
			"tie_word_embeddings": false, "type_vocab_size": 2}), 0},
		{"cls_3labels", "RobertaForSequenceClassification", robertaBase(map[string]any{
			"architectures": []string{"RobertaForSequenceClassification"}, "num_labels": 3}), 3},
		{"odd_head_size_3layers", "RobertaForMaskedLM", robertaBase(map[string]any{
			"hidden_size": 36, "num_attention_heads": 4, "num_hidden_layers": 3, "intermediate_size": 40}), 0},
		{"pad0_gelu_new", "RobertaForMaskedLM", robertaBase(map[string]any{
			"pad_token_id": 0, "bos_token_id": 3, "hidden_act": "gelu_new", "layer_norm_eps": 1e-12}), 0},
		{"xlm_roberta_mlm", "XLMRobertaForMaskedLM", robertaBase(map[string]any{
			"model_type": "xlm-roberta", "architectures": []string{"XLMRobertaForMaskedLM"}, "num_hidden_layers": 1}), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.config
			pad, bos := int64(cfg["pad_token_id"].(int)), int64(cfg["bos_token_id"].(int))
			ids, mask := robertaFeeds(1, int64(cfg["vocab_size"].(int)), pad, bos, 9, 9, 5, 1)
			feeds := map[string][][]int64{"input_ids": ids, "attention_mask": mask}
			ckpt, want, wantShape := hfReference(t, tc.class, cfg, feeds, nil)

			out := filepath.Join(t.TempDir(), "model")
			m, err := Export(ckpt, out)
			if err != nil {
				t.Fatal(err)
			}
			checkRobertaModel(t, out, m, cfg, tc.labels)

			got, gotShape := runModel(t, out, feeds)
			compare := func(got, want []float32, gotShape, wantShape []int64, mask [][]int64) {
				t.Helper()
				if tc.labels > 0 {
					// [batch, labels]: one "position" per row, all compared.
					mask = make([][]int64, gotShape[0])
					for i := range mask {
						mask[i] = []int64{1}
					}
				}
				compareLogits(t, got, want, gotShape, wantShape, mask, 1e-4)
			}
			compare(got, want, gotShape, wantShape, mask)

			// The second shape: rows 1 and 2 (5 and 1 tokens) padded to 6
			// instead of 9. Right padding leaves their real positions'
			// logits unchanged, so the reference is the same rows.
			ids2, mask2 := robertaFeeds(1, int64(cfg["vocab_size"].(int)), pad, bos, 9, 9, 5, 1)
			for i := range ids2 {
				ids2[i], mask2[i] = ids2[i][:6], mask2[i][:6]
			}
			ids2, mask2 = ids2[1:], mask2[1:]
			got2, gotShape2 := runModel(t, out, map[string][][]int64{"input_ids": ids2, "attention_mask": mask2})
			want2, wantShape2 := robertaRows(want, wantShape, 1, 2)
			if tc.labels == 0 {
				want2, wantShape2 = robertaPrefix(want2, wantShape2, 6)
			}
			compare(got2, want2, gotShape2, wantShape2, mask2)
		})
	}
}

// checkRobertaModel checks the manifest against the config and the graph:
// every linear with its role and dims, the same MatMuls onnx.FindLinears
// finds, standard ops only, dynamic batch and sequence.
func checkRobertaModel(t *testing.T, dir string, m *modeldir.Manifest, cfg map[string]any, labels int) {
	t.Helper()
	h, v, ffn := int64(cfg["hidden_size"].(int)), int64(cfg["vocab_size"].(int)), int64(cfg["intermediate_size"].(int))
	layers := cfg["num_hidden_layers"].(int)
	type want struct {
		role      modeldir.Role
		block     int
		din, dout int64
	}
	expect := map[string]want{}
	for i := range layers {
		p := fmt.Sprintf("roberta.encoder.layer.%d.", i)
		expect[p+"attention.self.query"] = want{modeldir.RoleQ, i, h, h}
		expect[p+"attention.self.key"] = want{modeldir.RoleK, i, h, h}
		expect[p+"attention.self.value"] = want{modeldir.RoleV, i, h, h}
		expect[p+"attention.output.dense"] = want{modeldir.RoleO, i, h, h}
		expect[p+"intermediate.dense"] = want{modeldir.RoleFFNIn, i, h, ffn}
		expect[p+"output.dense"] = want{modeldir.RoleFFNOut, i, ffn, h}
	}
	objective := "mlm"
	if labels > 0 {
		objective = "cls"
		expect["classifier.dense"] = want{modeldir.RoleHead, -1, h, h}
		expect["classifier.out_proj"] = want{modeldir.RoleHead, -1, h, int64(labels)}
	} else {
		expect["lm_head.dense"] = want{modeldir.RoleHead, -1, h, h}
		expect["lm_head.decoder"] = want{modeldir.RoleHead, -1, h, v}
	}
	if m.Objective != objective || m.NumLabels != labels || m.VocabSize != v || m.HiddenSize != h || m.NumLayers != layers {
		t.Errorf("manifest objective %q labels %d vocab %d hidden %d layers %d", m.Objective, m.NumLabels, m.VocabSize, m.HiddenSize, m.NumLayers)
	}
	pad := int64(cfg["pad_token_id"].(int))
	if wantMax := int64(cfg["max_position_embeddings"].(int)) - pad - 1; m.MaxLength != wantMax {
		t.Errorf("max_length %d, want %d", m.MaxLength, wantMax)
	}
	if m.SpecialTokens["pad"] != pad || m.SpecialTokens["bos"] != int64(cfg["bos_token_id"].(int)) || m.SpecialTokens["eos"] != 2 {
		t.Errorf("special tokens %v", m.SpecialTokens)
	}
	if strings.Join(m.Inputs, ",") != "input_ids,attention_mask" || strings.Join(m.Outputs, ",") != "logits" {
		t.Errorf("interface %v → %v", m.Inputs, m.Outputs)
	}
	if len(m.Linears) != len(expect) {
		t.Errorf("%d linears in migu.json, want %d", len(m.Linears), len(expect))
	}
	tied := cfg["tie_word_embeddings"] != false && labels == 0
	for _, l := range m.Linears {
		w, ok := expect[l.Name]
		if !ok {
			t.Errorf("unexpected linear %s", l.Name)
			continue
		}
		if l.Role != w.role || l.Block != w.block || l.DIn != w.din || l.DOut != w.dout {
			t.Errorf("linear %s: role %s block %d %d→%d, want %s %d %d→%d", l.Name, l.Role, l.Block, l.DIn, l.DOut, w.role, w.block, w.din, w.dout)
		}
		if l.Bias == "" {
			t.Errorf("linear %s has no bias", l.Name)
		}
		if isTied := l.Tied != ""; isTied != (tied && l.Name == "lm_head.decoder") {
			t.Errorf("linear %s tied to %q", l.Name, l.Tied)
		}
	}

	checkGraph(t, dir, m)
}

// writeRobertaCheckpoint writes a Hugging Face folder for cfg with random
// tensors (as `migu init` fills them) and a small tokenizer.json; drop
// names tensors to leave out.
func writeRobertaCheckpoint(t *testing.T, dir string, cfg map[string]any, drop ...string) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conv := newRoberta()
	if err := json.Unmarshal(raw, conv); err != nil {
		t.Fatal(err)
	}
	if err := conv.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	var tensors []safetensors.Tensor
	for _, s := range conv.Tensors() {
		if slices.Contains(drop, s.Name) {
			continue
		}
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		vals := make([]float32, n)
		for i := range vals {
			switch s.Init.Kind {
			case "normal":
				vals[i] = float32(rng.NormFloat64() * s.Init.Std)
			case "ones":
				vals[i] = 1
			}
		}
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, DType: safetensors.F32, Shape: s.Shape, Values: vals})
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, modeldir.ConfigFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tok := `{"version":"1.0","model":{"type":"WordLevel","vocab":{"<s>":0,"<pad>":1,"</s>":2,"a":3},"unk_token":"<pad>"},"added_tokens":[]}`
	if err := os.WriteFile(filepath.Join(dir, modeldir.TokenizerFile), []byte(tok), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRobertaBadInput checks that broken configs and checkpoints fail with
// one bad-input line naming the field or tensor, and leave no output.
func TestRobertaBadInput(t *testing.T) {
	base := robertaBase(map[string]any{"attn_implementation": nil})
	cases := []struct {
		name     string
		config   map[string]any // overrides of base written as config.json
		ckpt     map[string]any // overrides of base the weights are made for
		drop     string         // a tensor left out of the weights
		wantText []string
	}{
		{name: "missing hidden_size", config: map[string]any{"hidden_size": nil}, wantText: []string{"hidden_size", "missing"}},
		{name: "heads do not divide hidden", config: map[string]any{"num_attention_heads": 5}, wantText: []string{"num_attention_heads", "5", "32"}},
		{name: "relative positions", config: map[string]any{"position_embedding_type": "relative_key"}, wantText: []string{"position_embedding_type", "relative_key", "absolute"}},
		{name: "other head", config: map[string]any{"architectures": []string{"RobertaForTokenClassification"}}, wantText: []string{"architectures", "RobertaForTokenClassification", "RobertaForMaskedLM", "RobertaForSequenceClassification"}},
		{name: "activation", config: map[string]any{"hidden_act": "mish"}, wantText: []string{"hidden_act", "mish"}},
		{name: "decoder", config: map[string]any{"is_decoder": true}, wantText: []string{"is_decoder"}},
		{name: "pad null", config: map[string]any{"pad_token_id": json.RawMessage("null")}, wantText: []string{"pad_token_id"}},
		{name: "pad outside vocab", config: map[string]any{"pad_token_id": 67}, wantText: []string{"pad_token_id", "67", "vocab_size"}},
		{name: "no positions", config: map[string]any{"max_position_embeddings": 2}, wantText: []string{"max_position_embeddings", "pad_token_id"}},
		{name: "multi-label", config: map[string]any{"architectures": []string{"RobertaForSequenceClassification"}, "num_labels": 3, "problem_type": "multi_label_classification"},
			wantText: []string{"problem_type", "multi_label_classification"}},
		{name: "labels contradict", config: map[string]any{"architectures": []string{"RobertaForSequenceClassification"}, "num_labels": 3,
			"id2label": map[string]string{"0": "no", "1": "yes"}}, wantText: []string{"num_labels", "id2label"}},
		{name: "regression", config: map[string]any{"architectures": []string{"RobertaForSequenceClassification"}, "num_labels": 1}, wantText: []string{"regression"}},
		{name: "untied config, tied weights", config: map[string]any{"tie_word_embeddings": false}, wantText: []string{"tensor lm_head.decoder.weight", "missing"}},
		{name: "cls config, mlm weights", config: map[string]any{"architectures": []string{"RobertaForSequenceClassification"}}, wantText: []string{"tensor classifier.dense.weight", "missing"}},
		{name: "tensor missing", drop: "roberta.encoder.layer.1.attention.self.key.bias", wantText: []string{"tensor roberta.encoder.layer.1.attention.self.key.bias", "missing"}},
		{name: "wrong shape", ckpt: map[string]any{"intermediate_size": 40},
			wantText: []string{"tensor roberta.encoder.layer.0.intermediate.dense.weight", "[40 32]", "[48 32]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			from := filepath.Join(dir, "hf")
			ckptCfg := robertaBase(map[string]any{"attn_implementation": nil})
			for k, v := range tc.ckpt {
				ckptCfg[k] = v
			}
			var drop []string
			if tc.drop != "" {
				drop = append(drop, tc.drop)
			}
			writeRobertaCheckpoint(t, from, ckptCfg, drop...)
			cfg := map[string]any{}
			for k, v := range base {
				cfg[k] = v
			}
			for k, v := range tc.config {
				if v == nil {
					delete(cfg, k)
				} else {
					cfg[k] = v
				}
			}
			raw, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(from, modeldir.ConfigFile), raw, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			_, err = Export(from, out)
			if err == nil {
				t.Fatal("export succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			if !badinput.Is(err) {
				t.Errorf("not marked bad input: %v", err)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output %s left behind (%v)", out, err)
			}
		})
	}
}

// TestRobertaPresets checks that the presets validate, export and run, and
// reports their sizes; with the Python reference present it also checks
// that transformers builds them with the same parameter count.
func TestRobertaPresets(t *testing.T) {
	arch, err := Lookup("roberta")
	if err != nil {
		t.Fatal(err)
	}
	special := SpecialTokens{BOS: 0, PAD: 1, EOS: 2, UNK: 3, Mask: 4}
	const vocab = 8000
	sizes := map[string][2]int64{"tiny": {500_000, 2_000_000}, "small": {20_000_000, 60_000_000}}
	counts := map[string]int64{}
	configs := map[string]map[string]any{}
	for _, name := range []string{"tiny", "small"} {
		cfg, err := arch.Preset(name, vocab, special)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(cfg)
		conv := newRoberta()
		if err := json.Unmarshal(raw, conv); err != nil {
			t.Fatal(err)
		}
		if err := conv.Validate(); err != nil {
			t.Fatal(err)
		}
		counts[name] = Parameters(conv.Tensors())
		t.Logf("preset %s (vocab %d): %d parameters", name, vocab, counts[name])
		if r := sizes[name]; counts[name] < r[0] || counts[name] > r[1] {
			t.Errorf("preset %s has %d parameters, want %d–%d", name, counts[name], r[0], r[1])
		}
		configs[name] = cfg
	}
	for _, bad := range []struct {
		name    string
		special SpecialTokens
	}{{"huge", special}, {"tiny", SpecialTokens{BOS: 0, PAD: -1, EOS: 2, UNK: 3, Mask: 4}}} {
		if _, err := arch.Preset(bad.name, vocab, bad.special); err == nil || !badinput.Is(err) {
			t.Errorf("preset %s with pad %d: error %v, want bad input", bad.name, bad.special.PAD, err)
		}
	}

	t.Run("tiny exports and runs", func(t *testing.T) {
		dir := t.TempDir()
		from := filepath.Join(dir, "hf")
		writeRobertaCheckpoint(t, from, configs["tiny"])
		out := filepath.Join(dir, "model")
		m, err := Export(from, out)
		if err != nil {
			t.Fatal(err)
		}
		if m.MaxLength != 256 || m.Objective != "mlm" {
			t.Errorf("max_length %d objective %s", m.MaxLength, m.Objective)
		}
		ids, mask := robertaFeeds(3, vocab, 1, 0, 11, 11, 6)
		logits, shape := runModel(t, out, map[string][][]int64{"input_ids": ids, "attention_mask": mask})
		if fmt.Sprint(shape) != "[2 11 8000]" {
			t.Fatalf("logits shape %v", shape)
		}
		for _, x := range logits {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatal("non-finite logit")
			}
		}
	})

	t.Run("transformers builds them", func(t *testing.T) {
		spec, _ := json.Marshal(configs)
		out := testenv.RunPython(t, `
import json, sys, transformers
counts = {}
for name, cfg in json.loads(sys.argv[1]).items():
    model = transformers.RobertaForMaskedLM(transformers.AutoConfig.for_model(**cfg))
    counts[name] = sum(p.numel() for p in model.parameters())
print(json.dumps(counts))
`, string(spec))
		var hf map[string]int64
		if err := json.Unmarshal(out, &hf); err != nil {
			t.Fatal(err)
		}
		for name, n := range counts {
			if hf[name] != n {
				t.Errorf("preset %s: transformers counts %d parameters, Tensors() %d", name, hf[name], n)
			}
		}
	})
}
