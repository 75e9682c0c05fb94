package exporters

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
)

// The tokenizer beside the weights is checked against the model: a type we
// cannot run, or ids past the embedding table, stop the export.
func TestExportChecksTokenizer(t *testing.T) {
	cases := []struct {
		name, tokenizer string
		want            string
	}{
		{"unsupported model", `{"model":{"type":"WordPiece","vocab":{"[UNK]":0}}}`, `unsupported model type "WordPiece"`},
		{"ids past the embeddings", `{"model":{"type":"WordLevel","vocab":{"[UNK]":0,"far":500},"unk_token":"[UNK]"}}`, "ids up to 500, past the model's embedding table (vocab_size 64)"},
		{"not JSON", `{"model":`, "tokenizer.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := llamaWriteCheckpoint(t, llamaTestConfig(nil), nil)
			if err := os.WriteFile(filepath.Join(dir, modeldir.TokenizerFile), []byte(c.tokenizer), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "model")
			_, err := Export(dir, out)
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v; want bad input containing %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("partial output left at %s", out)
			}
		})
	}
	t.Run("no tokenizer", func(t *testing.T) {
		dir := llamaWriteCheckpoint(t, llamaTestConfig(nil), nil)
		os.Remove(filepath.Join(dir, modeldir.TokenizerFile))
		if _, err := Export(dir, filepath.Join(t.TempDir(), "model")); err == nil || !strings.Contains(err.Error(), "no tokenizer.json") {
			t.Fatalf("got %v", err)
		}
	})
}

// A Llama checkpoint that ships only SentencePiece's tokenizer.model gets a
// tokenizer.json in the model folder, converted by our loader.
func TestExportConvertsSentencePiece(t *testing.T) {
	spm := testenv.SharedData(t, "tokenizers/llama2/tokenizer.model")
	dir := llamaWriteCheckpoint(t, llamaTestConfig(map[string]any{"vocab_size": 32000}), nil)
	os.Remove(filepath.Join(dir, modeldir.TokenizerFile))
	data, err := os.ReadFile(spm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.model"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "model")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if man.SpecialTokens["unk"] != 0 || man.SpecialTokens["bos"] != 1 || man.SpecialTokens["eos"] != 2 {
		t.Errorf("special tokens %v", man.SpecialTokens)
	}
	if _, err := os.Stat(filepath.Join(out, modeldir.TokenizerFile)); err != nil {
		t.Fatal(err)
	}
}
