package exporters

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// The PyTorch exporter (python/export) and the Go exporter describe the
// same model identically: the same linear layers in migu.json and in
// `migu inspect`, and logits equal to transformers'.
func TestPythonExporterAgreesWithGo(t *testing.T) {
	feeds := map[string][][]int64{
		"input_ids":      {{5, 9, 12, 3, 7}, {4, 8, 1, 1, 1}},
		"attention_mask": {{1, 1, 1, 1, 1}, {1, 1, 0, 0, 0}},
	}
	t5Feeds := map[string][][]int64{
		"input_ids":              feeds["input_ids"],
		"attention_mask":         feeds["attention_mask"],
		"decoder_input_ids":      {{0, 6, 2}, {0, 3, 0}},
		"decoder_attention_mask": {{1, 1, 1}, {1, 1, 0}},
	}
	cases := []struct {
		name, class string
		config      map[string]any
		feeds       map[string][][]int64
		mask        string
	}{
		{"llama", "LlamaForCausalLM", map[string]any{"model_type": "llama", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48,
			"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": false}, feeds, "attention_mask"},
		{"t5", "T5ForConditionalGeneration", map[string]any{"model_type": "t5", "vocab_size": 40, "d_model": 24, "d_kv": 8, "d_ff": 40,
			"num_layers": 2, "num_heads": 3, "feed_forward_proj": "gated-gelu", "decoder_start_token_id": 0}, t5Feeds, "decoder_attention_mask"},
		{"roberta", "RobertaForMaskedLM", map[string]any{"model_type": "roberta", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48,
			"num_hidden_layers": 2, "num_attention_heads": 4, "pad_token_id": 1, "max_position_embeddings": 40}, feeds, "attention_mask"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hf, ref, refShape := hfReference(t, c.class, c.config, c.feeds, nil)
			goDir := filepath.Join(t.TempDir(), "go")
			goMan, err := Export(hf, goDir)
			if err != nil {
				t.Fatal(err)
			}
			pyDir := filepath.Join(t.TempDir(), "py")
			script := filepath.Join(testenv.Root(), "python", "export", "export.py")
			if out, err := exec.Command(testenv.Python(t), script, hf, pyDir).CombinedOutput(); err != nil {
				t.Fatalf("export.py: %v\n%s", err, out)
			}
			pyMan, err := modeldir.ReadManifest(pyDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(pyMan.Linears) != len(goMan.Linears) {
				t.Fatalf("python lists %d linears, go %d", len(pyMan.Linears), len(goMan.Linears))
			}
			for i, g := range goMan.Linears {
				p := pyMan.Linears[i]
				if p.Name != g.Name || p.Role != g.Role || p.DIn != g.DIn || p.DOut != g.DOut || p.Weight != g.Weight || p.Tied != g.Tied || p.Mask != g.Mask {
					t.Errorf("linear %d: python %+v\n go %+v", i, p, g)
				}
			}
			goLin, pyLin := inspectLinears(t, goDir), inspectLinears(t, pyDir)
			if len(goLin) != len(pyLin) {
				t.Fatalf("inspect finds %d linears in the Go graph, %d in the Python one", len(goLin), len(pyLin))
			}
			for i := range goLin {
				if goLin[i] != pyLin[i] {
					t.Errorf("inspect linear %d: go %v, python %v", i, goLin[i], pyLin[i])
				}
			}
			for _, dir := range []string{goDir, pyDir} {
				got, shape := runModel(t, dir, c.feeds)
				compareLogits(t, got, ref, shape, refShape, c.feeds[c.mask], 1e-4)
			}
		})
	}
}

// inspectLinears lists what `migu inspect` reports per linear layer: the
// weight initializer and its dims.
func inspectLinears(t *testing.T, dir string) [][3]any {
	t.Helper()
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var out [][3]any
	for _, l := range onnx.Inspect(m).Linears {
		out = append(out, [3]any{l.Weight, l.DIn, l.DOut})
	}
	return out
}
