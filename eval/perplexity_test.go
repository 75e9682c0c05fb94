package eval

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// perplexityMaxLen is the context length of the perplexity comparison, far
// shorter than its text.
const perplexityMaxLen = 32

// perplexityText writes a text of a few hundred tokens with non-ASCII
// characters and returns its path.
func perplexityText(t *testing.T) string {
	var sb strings.Builder
	for i := range 40 {
		fmt.Fprintf(&sb, "Line %d: the quick brown fox — naïve café — jumps over dog %d.\n", i, i*i)
	}
	path := filepath.Join(t.TempDir(), "text.txt")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// comparePerplexity (run by TestMatchesReference) scores the text with
// lm-eval's disjoint windows and with a stride of 8 and compares the
// log-likelihood, every count and every metric with the reference.
func comparePerplexity(t *testing.T, m *Model, path string, ref refJob) {
	for i, stride := range []int{0, 8} {
		got, err := Perplexity(context.Background(), m, path, PerplexityOptions{Stride: stride})
		if err != nil {
			t.Fatal(err)
		}
		r := ref.Perplexity[i]
		if math.Abs(got.LogLik-r["loglik"]) > tolerance*float64(got.Windows) {
			t.Errorf("stride %d: log-likelihood %.6f, reference %.6f", stride, got.LogLik, r["loglik"])
		}
		if float64(got.Tokens) != r["tokens"] || float64(got.Words) != r["words"] || float64(got.Bytes) != r["bytes"] {
			t.Errorf("stride %d: tokens/words/bytes %d/%d/%d, reference %v/%v/%v", stride, got.Tokens, got.Words, got.Bytes, r["tokens"], r["words"], r["bytes"])
		}
		if got.Tokens <= 2*m.MaxLength() {
			t.Fatalf("%d tokens do not need several windows", got.Tokens)
		}
		for name, v := range map[string]float64{"token_perplexity": got.TokenPerplexity(), "word_perplexity": got.WordPerplexity(),
			"byte_perplexity": got.BytePerplexity(), "bits_per_byte": got.BitsPerByte()} {
			if math.Abs(v-r[name]) > 1e-6*math.Abs(r[name]) {
				t.Errorf("stride %d: %s %v, reference %v", stride, name, v, r[name])
			}
		}
	}
}

// TestRollingWindows checks by hand that every token is predicted once,
// with the context the stride promises: a window's input is always the
// maxLen tokens before its last prediction.
func TestRollingWindows(t *testing.T) {
	tokens := []int{10, 11, 12, 13, 14, 15, 16}
	tests := []struct {
		maxLen, stride int
		want           [][2][]int
	}{
		{4, 4, [][2][]int{{{1}, {10, 11, 12, 13}}, {{12, 13}, {14, 15, 16}}}},
		{4, 2, [][2][]int{{{1}, {10, 11, 12, 13}}, {{11, 12, 13}, {14, 15}}, {{12, 13, 14, 15}, {16}}}},
		{10, 10, [][2][]int{{{1}, tokens}}},
	}
	for _, tc := range tests {
		got := rollingWindows(tokens, 1, tc.maxLen, tc.stride)
		if fmt.Sprint(got) != fmt.Sprint(toRequests(tc.want)) {
			t.Errorf("maxLen %d stride %d: %v, want %v", tc.maxLen, tc.stride, got, tc.want)
		}
	}
}

func toRequests(w [][2][]int) []tokenRequest {
	out := make([]tokenRequest, len(w))
	for i, p := range w {
		out[i] = tokenRequest{ctx: p[0], cont: p[1]}
	}
	return out
}

// TestCountWords matches Python's len(re.split(r"\s+", text)).
func TestCountWords(t *testing.T) {
	for text, want := range map[string]int{"": 1, "a": 1, "a b": 2, " a  b\n": 4, "a\u00a0b": 2, "x\ty\r\nz": 3} {
		if got := countWords(text); got != want {
			t.Errorf("countWords(%q) = %d, want %d", text, got, want)
		}
	}
}

// TestPerplexityBadInput checks the file errors.
func TestPerplexityBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty.txt":     "  \n",
		"notext.jsonl":  "{\"text\": \"a\"}\n{\"body\": \"b\"}\n",
		"badjson.jsonl": "{\"text\": \"a\"}\nnot json\n",
		"blank.jsonl":   "{\"text\": \"\"}\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readTexts(path)
		if !badinput.Is(err) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want bad input naming the file", name, err)
		}
	}
	docs, err := parseTextRows("x.jsonl", []byte("{\"text\": \"a b\"}\n\n{\"page\": \"c\"}\n"))
	if err != nil || len(docs) != 2 || docs[1] != "c" {
		t.Errorf("rows %q, %v", docs, err)
	}
}

// FuzzParseTextRows feeds arbitrary JSON lines to the perplexity reader.
func FuzzParseTextRows(f *testing.F) {
	f.Add("{\"text\": \"a\"}\n{\"page\": \"b\"}\n")
	f.Add("{\"text\": null}")
	f.Fuzz(func(t *testing.T, rows string) {
		docs, err := parseTextRows("fuzz.jsonl", []byte(rows))
		if err != nil && !badinput.Is(err) {
			t.Fatalf("%v is not bad input", err)
		}
		for _, d := range docs {
			if d == "" {
				t.Fatal("empty document accepted")
			}
		}
	})
}
