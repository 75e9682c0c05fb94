package ggufexport

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/llamacpp"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// TestSmolLM2InLlamaCpp takes the real SmolLM2 from its Q4_1 GGUF through
// migu (export, then export-gguf) and runs the files we write in llama.cpp
// itself: every type loads; on the F32 file llama.cpp tokenizes the prompt
// as migu does, its logits equal migu's ONNX model's, and its greedy
// generation equals transformers' on the original file; a LoRA adapter GGUF
// applied by llama.cpp gives the logits of migu's merged model.
func TestSmolLM2InLlamaCpp(t *testing.T) {
	if testing.Short() {
		t.Skip("writes the 135M-parameter model several times")
	}
	original := testenv.SmolLM2(t)
	work := t.TempDir()
	model := filepath.Join(work, "model")
	if _, err := exporters.Export(original, model); err != nil {
		t.Fatal(err)
	}
	f32 := filepath.Join(work, "f32.gguf")
	if _, err := Model(model, f32, Options{Type: gguf.F32}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []gguf.Type{gguf.F16, gguf.BF16, gguf.Q8_0} {
		path := filepath.Join(work, typ.String()+".gguf")
		if _, err := Model(model, path, Options{Type: typ}); err != nil {
			t.Fatal(err)
		}
		info := llamacpp.Load(t, path)
		t.Logf("llama.cpp loads %s: %s", typ, info.Desc)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}

	prompt := "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
	tok, err := tokenizer.Load(filepath.Join(model, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := tok.EncodeIDs(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	if cpp := llamacpp.Tokenize(t, f32, []string{prompt}, true, true)[0]; !slices.Equal(ours, cpp) {
		t.Fatalf("prompt ids: migu %v, llama.cpp %v", ours, cpp)
	}
	ids := make([]int64, len(ours))
	for i, id := range ours {
		ids[i] = int64(id)
	}

	compare := func(name string, got []float32, want [][]float32, tol float64) {
		t.Helper()
		var flat []float32
		for _, row := range want {
			flat = append(flat, row...)
		}
		if len(flat) != len(got) {
			t.Fatalf("%s: %d logits from llama.cpp, %d from migu", name, len(flat), len(got))
		}
		d := maxAbsDiff(got, flat)
		t.Logf("%s: max |Δlogit| migu vs llama.cpp = %.3g over %d values", name, d, len(got))
		if d > tol {
			t.Errorf("%s: max |Δlogit| %.3g > %g", name, d, tol)
		}
	}
	compare("F32", testfix.Logits(t, model, ids), llamacpp.Logits(t, f32, ours, ""), 3e-4)

	const n = 20
	idsPath, refPath := filepath.Join(work, "ids.json"), filepath.Join(work, "greedy.json")
	raw, err := json.Marshal([][]int{ours})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idsPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunScript(t, ggufRef, "greedy", original, idsPath, "20", refPath)
	var ref [][]int
	readJSON(t, refPath, &ref)
	if cpp := llamacpp.Greedy(t, f32, ours, n); !slices.Equal(cpp, ref[0]) {
		t.Fatalf("greedy: llama.cpp on our F32 file %v, transformers on the original %v", cpp, ref[0])
	}

	adapter := randomAdapter(t, model, []string{"q", "k", "v", "o", "ffn_out"})
	loraFile, merged := filepath.Join(work, "lora.gguf"), filepath.Join(work, "merged")
	if _, err := Adapter(model, adapter, loraFile, gguf.F32); err != nil {
		t.Fatal(err)
	}
	if _, err := adapters.Merge(model, adapter, merged); err != nil {
		t.Fatal(err)
	}
	compare("F32 + LoRA adapter", testfix.Logits(t, merged, ids), llamacpp.Logits(t, f32, ours, loraFile), 3e-4)
}
