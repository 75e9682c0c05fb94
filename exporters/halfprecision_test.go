package exporters

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// Half-precision checkpoints keep their precision through export (the
// default --dtype keep) and give transformers' logits on the same values;
// --dtype f32 widens them, --dtype bf16 narrows a float32 checkpoint.
func TestHalfPrecisionExport(t *testing.T) {
	llamaFeeds, _ := llamaBatch(7, false)
	robertaIDs, robertaMask := robertaFeeds(1, 64, 1, 0, 9, 9, 5, 1)
	cases := []struct {
		name, class string
		config      map[string]any
		feeds       map[string][][]int64
		saved       string // the checkpoint's torch dtype
		export      DType
		want        onnx.DType // the weight matrices' stored type
	}{
		{"llama_bf16_keep", "LlamaForCausalLM", llamaTestConfig(map[string]any{"num_key_value_heads": 2}), llamaFeeds, "bfloat16", DTypeKeep, onnx.BFloat16},
		{"llama_f16_keep", "LlamaForCausalLM", llamaTestConfig(nil), llamaFeeds, "float16", DTypeKeep, onnx.Float16},
		{"llama_bf16_as_f32", "LlamaForCausalLM", llamaTestConfig(nil), llamaFeeds, "bfloat16", DTypeF32, onnx.Float},
		{"t5_bf16_keep", "T5ForConditionalGeneration", t5Config(nil), t5Feeds(1, 61, 7, 5, []int{7, 4}, []int{5, 3}), "bfloat16", DTypeKeep, onnx.BFloat16},
		{"roberta_bf16_keep", "RobertaForMaskedLM", robertaBase(nil), map[string][][]int64{"input_ids": robertaIDs, "attention_mask": robertaMask}, "bfloat16", DTypeKeep, onnx.BFloat16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ckpt, want, wantShape := hfReferenceDType(t, tc.class, tc.config, tc.feeds, nil, tc.saved)
			out := filepath.Join(t.TempDir(), "model")
			man, err := ExportWith(ckpt, out, ExportOptions{DType: tc.export})
			if err != nil {
				t.Fatal(err)
			}
			m, err := onnx.Load(filepath.Join(out, modeldir.ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for _, l := range man.Linears {
				w := m.Graph().Initializer(l.Weight)
				if w == nil || onnx.DType(w.GetDataType()) != tc.want {
					t.Fatalf("linear %s: weight %s is not %v", l.Name, l.Weight, tc.want)
				}
			}
			if len(onnx.FindLinears(m.Proto.Graph)) != len(man.Linears) {
				t.Errorf("FindLinears finds %d linears, migu.json lists %d", len(onnx.FindLinears(m.Proto.Graph)), len(man.Linears))
			}
			got, gotShape := runModel(t, out, tc.feeds)
			mask := tc.feeds["attention_mask"]
			if m, ok := tc.feeds["decoder_attention_mask"]; ok {
				mask = m // seq2seq logits are per decoder position
			}
			compareLogits(t, got, want, gotShape, wantShape, mask, 1e-4)
		})
	}
}
