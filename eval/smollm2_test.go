package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx/ort"
)

// TestSmolLM2MatchesTransformers exports the real SmolLM2-135M-Instruct
// from its Q4_1 GGUF and compares it with transformers running the same
// weights, dequantized by gguf-py and put in Hugging Face order by the
// reference script: logits of a 16-token chat prompt within 2e-4, and
// greedy generation token for token.
func TestSmolLM2MatchesTransformers(t *testing.T) {
	if testing.Short() {
		t.Skip("exports a 135M-parameter model")
	}
	path := testenv.SmolLM2(t)
	dir := filepath.Join(t.TempDir(), "smollm2")
	if _, err := exporters.Export(path, dir); err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompts := []string{
		"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
		"<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
	}
	var ids [][]int64
	for _, p := range prompts {
		enc, err := m.Tokenizer().EncodeIDs(p, true)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]int64, len(enc))
		for i, id := range enc {
			row[i] = int64(id)
		}
		ids = append(ids, row)
	}
	if len(ids[0]) != 16 || ids[0][0] != 1 {
		t.Fatalf("the first prompt encodes to %v; want 16 tokens starting with <|im_start|> (1)", ids[0])
	}

	work := t.TempDir()
	idsPath := filepath.Join(work, "ids.json")
	writeJSON(t, idsPath, ids[:1])
	logitsPath := filepath.Join(work, "logits.bin")
	testenv.RunScript(t, "exporters/testdata/gguf_ref.py", "logits", path, idsPath, logitsPath)
	want := testfix.ReadFloat32s(t, logitsPath)
	got := testfix.Logits(t, dir, ids[0])
	if len(got) != len(want) || len(got) != 16*49152 {
		t.Fatalf("%d logits, reference %d", len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	t.Logf("max |Δlogit| = %.3g over 16 positions × 49152", worst)
	if worst > 2e-4 {
		t.Fatalf("max |Δlogit| = %.3g > 2e-4", worst)
	}

	const n = 20
	writeJSON(t, idsPath, ids)
	greedyPath := filepath.Join(work, "greedy.json")
	testenv.RunScript(t, "exporters/testdata/gguf_ref.py", "greedy", path, idsPath, "20", greedyPath)
	var ref [][]int64
	raw, err := os.ReadFile(greedyPath)
	if err != nil || json.Unmarshal(raw, &ref) != nil {
		t.Fatalf("reference greedy ids: %v", err)
	}
	gens, err := m.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: n})
	if err != nil {
		t.Fatal(err)
	}
	eos := m.Manifest().SpecialTokens["eos"]
	for i, g := range gens {
		// The reference loop runs past the end-of-turn token; migu stops.
		wantIDs := ref[i]
		for k, id := range wantIDs {
			if id == eos {
				wantIDs = wantIDs[:k]
				break
			}
		}
		if len(g.ids) != len(wantIDs) {
			t.Fatalf("prompt %d: migu generated %v (%s), transformers %v", i, g.ids, g.Reason, ref[i])
		}
		for k := range g.ids {
			if g.ids[k] != wantIDs[k] {
				t.Fatalf("prompt %d: token %d is %d, transformers %d (migu %v, transformers %v)", i, k, g.ids[k], wantIDs[k], g.ids, ref[i])
			}
		}
		t.Logf("prompt %d: %d tokens identical (%s): %q", i, len(g.ids), g.Reason, g.Text)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
