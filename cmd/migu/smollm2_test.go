package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// TestSmolLM2ChatLoRA fine-tunes the real SmolLM2-135M-Instruct end to end
// through the CLI: export from its GGUF, LoRA with MIGU on 200 chat records
// in the model's own chat template, then PEFT loads the adapter onto the
// same weights in transformers (dequantized by gguf-py) and gives the
// logits of migu's model with the adapter.
func TestSmolLM2ChatLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes a 135M-parameter model")
	}
	original := testenv.SmolLM2(t)
	work := t.TempDir()
	model := filepath.Join(work, "smollm2")
	if code, stdout, stderr := runCLI(t, "export", "--from", original, "--out", model); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
	}
	chats, _ := chatFixture(t, 200)
	run := filepath.Join(work, "run")
	code, stdout, stderr := runCLI(t, "train", "--model", model, "--data", chats, "--out", run, "--method", "lora",
		"--migu", "0.7", "--lr", "2e-3", "--max-steps", "8", "--batch-size", "8", "--seed", "1")
	if code != 0 {
		t.Fatalf("train: exit %d\n%s%s", code, stdout, stderr)
	}
	var res struct {
		FirstLoss float64 `json:"first_loss"`
		LastLoss  float64 `json:"last_loss"`
		Format    string  `json:"format"`
		Output    string  `json:"output"`
	}
	readJSON(t, filepath.Join(run, "run.json"), &res)
	t.Logf("%s format, loss %.3f → %.3f", res.Format, res.FirstLoss, res.LastLoss)
	if res.Format != "chat" || !(res.LastLoss < 0.7*res.FirstLoss) {
		t.Fatalf("format %q, loss %.4f → %.4f: want the model's chat template and a falling loss", res.Format, res.FirstLoss, res.LastLoss)
	}

	tok, err := tokenizer.Load(filepath.Join(model, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	prompt := "<|im_start|>user\nriver 2<|im_end|>\n<|im_start|>assistant\nriver river<|im_end|>\n"
	enc, err := tok.EncodeIDs(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, len(enc))
	for i, id := range enc {
		ids[i] = int64(id)
	}
	merged := filepath.Join(work, "merged")
	if _, err := adapters.Merge(model, res.Output, merged); err != nil {
		t.Fatal(err)
	}
	got := testfix.Logits(t, merged, ids)
	idsPath, out := filepath.Join(work, "ids.json"), filepath.Join(work, "peft.bin")
	raw, _ := json.Marshal([][]int64{ids})
	if err := os.WriteFile(idsPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunScript(t, "exporters/testdata/gguf_ref.py", "peft", original, res.Output, idsPath, out)
	want := testfix.ReadFloat32s(t, out)
	if len(got) != len(want) {
		t.Fatalf("%d logits, PEFT %d", len(got), len(want))
	}
	// The 30-layer base model alone differs from transformers by 2–3e-4 on
	// logits up to 42 (float32 sums in another order), so both, with and
	// without the adapter, must agree to 1e-5 of the largest logit.
	base := testfix.Logits(t, model, ids)
	testenv.RunScript(t, "exporters/testdata/gguf_ref.py", "logits", original, idsPath, out)
	wantBase := testfix.ReadFloat32s(t, out)
	for _, c := range []struct {
		name      string
		got, want []float32
	}{{"with the adapter (PEFT)", got, want}, {"base model", base, wantBase}} {
		worst, scale := 0.0, 0.0
		for i := range c.got {
			worst = max(worst, math.Abs(float64(c.got[i]-c.want[i])))
			scale = max(scale, math.Abs(float64(c.want[i])))
		}
		t.Logf("%s: max |Δlogit| %.3g over %d positions (max |logit| %.3g)", c.name, worst, len(ids), scale)
		if worst > 1e-5*scale {
			t.Errorf("%s: max |Δlogit| %.3g > 1e-5 × %.3g", c.name, worst, scale)
		}
	}
}
