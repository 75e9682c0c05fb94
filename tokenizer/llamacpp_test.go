package tokenizer

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/llamacpp"
	"github.com/migu-ml/migu/internal/testenv"
)

// vocabGGUF writes a vocabulary-only llama GGUF (the hyper-parameters
// llama.cpp reads even for its vocabulary, no tensors) for llama.cpp to
// tokenize with.
func vocabGGUF(t *testing.T, v GGUFVocab) string {
	t.Helper()
	w := gguf.NewWriter()
	add := func(kv gguf.KV) {
		if err := w.AddKV(kv); err != nil {
			t.Fatal(err)
		}
	}
	u32 := func(k string, n uint32) { add(gguf.KV{Key: k, Type: gguf.Uint32, Value: n}) }
	add(gguf.KV{Key: "general.architecture", Type: gguf.String, Value: "llama"})
	u32("llama.context_length", 4096)
	u32("llama.embedding_length", 64)
	u32("llama.block_count", 1)
	u32("llama.feed_forward_length", 128)
	u32("llama.attention.head_count", 4)
	add(gguf.KV{Key: "llama.attention.layer_norm_rms_epsilon", Type: gguf.Float32, Value: float32(1e-5)})
	add(gguf.KV{Key: "tokenizer.ggml.model", Type: gguf.String, Value: v.Model})
	if v.Pre != "" {
		add(gguf.KV{Key: "tokenizer.ggml.pre", Type: gguf.String, Value: v.Pre})
	}
	add(gguf.KV{Key: "tokenizer.ggml.tokens", Type: gguf.Array, ElemType: gguf.String, Value: v.Tokens})
	if v.Scores != nil {
		add(gguf.KV{Key: "tokenizer.ggml.scores", Type: gguf.Array, ElemType: gguf.Float32, Value: v.Scores})
	}
	if v.Types != nil {
		add(gguf.KV{Key: "tokenizer.ggml.token_type", Type: gguf.Array, ElemType: gguf.Int32, Value: v.Types})
	}
	for key, id := range map[string]int{"bos_token_id": v.BOS, "eos_token_id": v.EOS, "unknown_token_id": v.UNK, "padding_token_id": v.PAD} {
		if id >= 0 {
			u32("tokenizer.ggml."+key, uint32(id))
		}
	}
	path := filepath.Join(t.TempDir(), "vocab.gguf")
	if err := w.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGGUFMatchesLlamaCpp tokenizes the corpus with llama.cpp itself, from
// the GGUF vocabulary, and with the tokenizer FromGGUF builds from the same
// vocabulary: SmolLM2's real GGUF (byte-level BPE, pre-tokenizer smollm)
// and Llama 2's SentencePiece vocabulary as llama.cpp's converter stores
// it. Special tokens written in the text are parsed on both sides, and
// each side adds what its vocabulary asks for (Llama 2 a BOS).
func TestGGUFMatchesLlamaCpp(t *testing.T) {
	f := ggufWork(t)
	for _, c := range []struct {
		name  string
		vocab func() (GGUFVocab, string)
	}{
		{"smollm2", func() (GGUFVocab, string) { return f.smolLM2(t), testenv.SmolLM2(t) }},
		{"llama2", func() (GGUFVocab, string) {
			v := f.llama2(t).Vocab.vocab()
			return v, vocabGGUF(t, v)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, path := c.vocab()
			tk, err := FromGGUF(v)
			if err != nil {
				t.Fatal(err)
			}
			want := llamacpp.Tokenize(t, path, f.corpus, true, true)
			bad := 0
			for i, line := range f.corpus {
				got, err := tk.EncodeIDs(line, true)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want[i]) {
					bad++
					if bad <= 5 {
						t.Errorf("%q:\n  migu:      %v\n  llama.cpp: %v", line, got, want[i])
					}
				}
			}
			if bad > 0 {
				t.Fatalf("llama.cpp differs on %d of %d lines", bad, len(f.corpus))
			}
			t.Logf("llama.cpp gives the same ids on all %d lines", len(f.corpus))
		})
	}
}
