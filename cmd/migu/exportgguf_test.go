package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/llamacpp"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// `migu export-gguf` then `migu export` of the file: a model made by `migu
// init` (a SentencePiece-style BPE tokenizer trained on generated text,
// stored in tokenizer.json without scores) comes back with the same
// weights, the same logits and a tokenizer that gives the same ids; q8_0
// writes a smaller file; bad flags exit 2.
func TestExportGGUFRoundTrip(t *testing.T) {
	model := tinyModelDir(t, "llama")
	dir := t.TempDir()
	f32, q8 := filepath.Join(dir, "tiny.gguf"), filepath.Join(dir, "tiny-q8.gguf")
	code, stdout, stderr := runCLI(t, "export-gguf", "--model", model, "--out", f32, "--type", "f32")
	if code != 0 || !strings.Contains(stdout, "wrote "+f32) {
		t.Fatalf("export-gguf: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = runCLI(t, "export-gguf", "--model", model, "--out", q8, "--type", "q8_0"); code != 0 {
		t.Fatalf("export-gguf --type q8_0: exit %d\n%s%s", code, stdout, stderr)
	}
	again := filepath.Join(dir, "again")
	if code, stdout, stderr = runCLI(t, "export", "--from", f32, "--out", again); code != 0 {
		t.Fatalf("export of our GGUF: exit %d\n%s%s", code, stdout, stderr)
	}
	ids := []int64{1, 40, 41, 300, 7, 599, 2, 13}
	a, b := testfix.Logits(t, model, ids), testfix.Logits(t, again, ids)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("logit %d: %v before the round trip, %v after", i, a[i], b[i])
		}
	}
	before, err := tokenizer.Load(filepath.Join(model, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	after, err := tokenizer.Load(filepath.Join(again, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	// llama.cpp reads the file too, and its SentencePiece tokenizer,
	// merging by the scores ToGGUF derived, gives our ids.
	lines := tokenizer.SampleCorpus(200, 9)
	cpp := llamacpp.Tokenize(t, f32, lines, true, true)
	for i, s := range lines {
		x, _ := before.EncodeIDs(s, true)
		y, _ := after.EncodeIDs(s, true)
		if !slices.Equal(x, y) || !slices.Equal(x, cpp[i]) {
			t.Fatalf("%q: ids %v before the round trip, %v after, llama.cpp %v", s, x, y, cpp[i])
		}
	}
	llamacpp.Load(t, q8)

	// A truncated GGUF is bad input: one line naming the file, nothing
	// left at --out.
	raw, err := os.ReadFile(f32)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.gguf")
	if err := os.WriteFile(cut, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "cut-model")
	code, _, stderr = runCLI(t, "export", "--from", cut, "--out", out)
	if code != 2 || !strings.Contains(stderr, cut) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("export of a truncated GGUF: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s left behind", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", model, "--out", filepath.Join(dir, "x.gguf"), "--type", "q4_k"}, "not one migu writes"},
		{[]string{"--model", model, "--out", filepath.Join(dir, "x.gguf"), "--lora-only"}, "--lora-only needs --adapter"},
		{[]string{"--model", model}, "needs --model MODEL_DIR and --out"},
		{[]string{"--model", tinyModelDir(t, "t5"), "--out", filepath.Join(dir, "x.gguf")}, "has no GGUF form"},
		{[]string{"--model", model, "--out", dir}, "is a folder"},
	} {
		code, _, stderr := runCLI(t, append([]string{"export-gguf"}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("export-gguf %v: exit %d, %q; want 2 and one line mentioning %q", c.args, code, stderr, c.want)
		}
	}
}
