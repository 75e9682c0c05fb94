package data

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/tokenizer"
)

// Special ids of the test tokenizer.
const (
	tPad  = 0
	tBOS  = 1
	tEOS  = 2
	tUnk  = 3
	tMask = 4
)

var testSpecials = Specials{BOS: tBOS, EOS: tEOS, PAD: tPad, MASK: tMask, DecoderStart: tPad, All: []int64{tPad, tBOS, tEOS, tUnk, tMask}}

// testWords are the words of the test tokenizer after its five specials.
var testWords = strings.Fields(`a b c d e f g h p q r s t u v x y z do this ok fine more nice film bad good
	pick Option: good, Answer: yes no hello world Task:SC Dataset:films system user assistant be`)

// wordTokenizer builds a word-level tokenizer (one id per
// whitespace-separated word, <unk> for the rest), so that tests can spell
// out ids exactly.
func wordTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	vocab := map[string]int{}
	var added []map[string]any
	for i, s := range []string{"<pad>", "<s>", "</s>", "<unk>", "<mask>"} {
		vocab[s] = i
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	for _, w := range testWords {
		if _, dup := vocab[w]; !dup {
			vocab[w] = len(vocab)
		}
	}
	doc := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": added,
		"normalizer": nil, "pre_tokenizer": map[string]any{"type": "WhitespaceSplit"},
		"post_processor": nil, "decoder": nil,
		"model": map[string]any{"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// seq spells ids with words of the test tokenizer ("<s>", "do", …); a
// number stands for itself ("-100").
func seq(t testing.TB, tok *tokenizer.Tokenizer, words string) []int64 {
	t.Helper()
	var out []int64
	for _, w := range strings.Fields(words) {
		if w == "-" {
			out = append(out, IgnoreIndex)
			continue
		}
		id, ok := tok.TokenToID(w)
		if !ok {
			t.Fatalf("word %q is not in the test vocabulary", w)
		}
		out = append(out, int64(id))
	}
	return out
}

// testConfig is a configuration for the test tokenizer.
func testConfig(obj Objective, maxLen int) Config {
	return Config{Objective: obj, MaxLen: maxLen, Specials: testSpecials, VocabSize: 1000, Template: PlainTemplate}
}

// writeFile writes content to name inside dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// encodeAll encodes records and returns all batches of one unshuffled epoch.
func encodeAll(t testing.TB, tok *tokenizer.Tokenizer, cfg Config, ds *Dataset, batch int) (*Examples, []*Batch) {
	t.Helper()
	enc, err := NewEncoder(tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := enc.Encode(ds)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := NewLoader(ex, BatchOptions{BatchSize: batch, NoShuffle: true})
	if err != nil {
		t.Fatal(err)
	}
	return ex, drain(t, ld)
}

// drain returns every batch a loader still has.
func drain(t testing.TB, ld *Loader) []*Batch {
	t.Helper()
	var out []*Batch
	for {
		b, err := ld.Next()
		if err != nil {
			return out
		}
		out = append(out, b)
	}
}
