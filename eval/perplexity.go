package eval

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
)

// PerplexityOptions choose how a text is cut into windows.
type PerplexityOptions struct {
	// Stride is the number of tokens each window after the first predicts;
	// such a window sees at least the MaxLength−Stride+1 tokens before them
	// as context. 0 means MaxLength: lm-eval's rolling log-likelihood, whose
	// disjoint windows give the first token of each window a single token
	// of context. A smaller stride costs more forward runs and gives every
	// token more context (lower perplexity).
	Stride int
	// Limit scores only the first Limit documents (0: all).
	Limit int
}

// PerplexityResult is the log-likelihood of a corpus and the counts the
// perplexities divide by.
type PerplexityResult struct {
	LogLik  float64 // sum over every token of every document
	Tokens  int     // predicted tokens
	Words   int     // whitespace-separated words, counted as lm-eval's wikitext
	Bytes   int     // UTF-8 bytes
	Docs    int     // documents
	Windows int     // forward windows scored
}

// TokenPerplexity is exp(−loglik / tokens).
func (r *PerplexityResult) TokenPerplexity() float64 {
	return math.Exp(-r.LogLik / float64(r.Tokens))
}

// WordPerplexity is exp(−loglik / words), lm-eval's word_perplexity.
func (r *PerplexityResult) WordPerplexity() float64 { return math.Exp(-r.LogLik / float64(r.Words)) }

// BytePerplexity is exp(−loglik / bytes), lm-eval's byte_perplexity.
func (r *PerplexityResult) BytePerplexity() float64 { return math.Exp(-r.LogLik / float64(r.Bytes)) }

// BitsPerByte is −loglik / bytes / ln 2, lm-eval's bits_per_byte.
func (r *PerplexityResult) BitsPerByte() float64 { return -r.LogLik / float64(r.Bytes) / math.Ln2 }

// PerplexityScores scores the text file at path (see Perplexity) and
// reports token, word and byte perplexity and bits per byte; N is the
// number of documents, and the standard errors are undefined (NaN).
func PerplexityScores(ctx context.Context, m *Model, path string, o PerplexityOptions) ([]Score, error) {
	r, err := Perplexity(ctx, m, path, o)
	if err != nil {
		return nil, err
	}
	row := func(metric string, v float64) Score {
		return Score{Task: "perplexity", Metric: metric, Value: v, Stderr: nan(), N: r.Docs}
	}
	return []Score{
		row("token_perplexity", r.TokenPerplexity()),
		row("word_perplexity", r.WordPerplexity()),
		row("byte_perplexity", r.BytePerplexity()),
		row("bits_per_byte", r.BitsPerByte()),
	}, nil
}

// Perplexity computes the log-likelihood of every token of the documents
// in path: a .jsonl (or .jsonl.gz) file of rows with a "text" (or
// wikitext's "page") field, one document per row, or any other file as one
// plain-text document. Each document is tokenized whole (without special
// tokens for causal models; with them, as lm-eval's tok_encode, for
// seq2seq) and cut into windows of at most MaxLength tokens; the first
// window starts from the prefix token (BOS, else EOS), so every token is
// predicted exactly once.
func Perplexity(ctx context.Context, m *Model, path string, o PerplexityOptions) (*PerplexityResult, error) {
	if o.Stride < 0 || o.Stride > m.maxLen {
		return nil, badinput.Errorf("%v %d must be between 1 and the context length %d (0: the context length)", badinput.Setting("stride"), o.Stride, m.maxLen)
	}
	if o.Limit < 0 {
		return nil, badinput.Errorf("%v %d must not be negative", badinput.Setting("limit"), o.Limit)
	}
	docs, err := readTexts(path)
	if err != nil {
		return nil, err
	}
	if o.Limit > 0 && o.Limit < len(docs) {
		docs = docs[:o.Limit]
	}
	stride := o.Stride
	if stride == 0 {
		stride = m.maxLen
	}
	res := &PerplexityResult{Docs: len(docs)}
	var reqs []tokenRequest
	for _, text := range docs {
		ids, err := m.tok.EncodeIDs(text, m.seq2seq)
		if err != nil {
			return nil, err
		}
		res.Tokens += len(ids)
		res.Words += countWords(text)
		res.Bytes += len(text)
		reqs = append(reqs, rollingWindows(ids, int(m.prefixToken()), m.maxLen, stride)...)
	}
	res.Windows = len(reqs)
	if res.Tokens == 0 {
		return nil, badinput.Errorf("%s: the text has no tokens", path)
	}
	out, err := m.logLikelihoodTokens(ctx, reqs)
	if err != nil {
		return nil, err
	}
	for _, r := range out {
		res.LogLik += r.LogProb
	}
	return res, nil
}

// rollingWindows cuts tokens into scoring requests that predict every
// token once: the first predicts up to maxLen tokens after the prefix
// token; each later one predicts the next stride tokens (fewer at the end)
// from the maxLen tokens before its last one, so every prediction has at
// least maxLen−stride+1 tokens of context (lm-eval's
// get_rolling_token_windows with context_len = maxLen−stride+1, made
// disjoint).
func rollingWindows(tokens []int, prefix, maxLen, stride int) []tokenRequest {
	if len(tokens) == 0 {
		return nil
	}
	first := min(maxLen, len(tokens))
	out := []tokenRequest{{ctx: []int{prefix}, cont: tokens[:first]}}
	for done := first; done < len(tokens); {
		n := min(len(tokens)-done, stride)
		end := done + n
		out = append(out, tokenRequest{ctx: tokens[max(0, end-maxLen-1) : end-n], cont: tokens[end-n : end]})
		done = end
	}
	return out
}

// countWords counts as len(re.split(r"\s+", text)) in Python: the number
// of whitespace runs plus one.
func countWords(text string) int {
	n, inSpace := 1, false
	for _, r := range text {
		sp := pyIsSpace(r)
		if sp && !inSpace {
			n++
		}
		inSpace = sp
	}
	return n
}

// readTexts reads the documents of a perplexity file.
func readTexts(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, badinput.Errorf("perplexity data: %v", err)
	}
	name := path
	if strings.HasSuffix(name, ".gz") {
		gz, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, badinput.Errorf("%s: %v", path, err)
		}
		if data, err = io.ReadAll(gz); err != nil {
			return nil, badinput.Errorf("%s: %v", path, err)
		}
		name = strings.TrimSuffix(name, ".gz")
	}
	if !strings.HasSuffix(name, ".jsonl") {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, badinput.Errorf("%s: the file is empty", path)
		}
		return []string{string(data)}, nil
	}
	return parseTextRows(path, data)
}

// parseTextRows reads JSON lines with a "text" or "page" string field.
func parseTextRows(path string, data []byte) ([]string, error) {
	var docs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1<<16), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		row := bytes.TrimSpace(sc.Bytes())
		if len(row) == 0 {
			continue
		}
		var r struct {
			Text *string `json:"text"`
			Page *string `json:"page"`
		}
		if err := json.Unmarshal(row, &r); err != nil {
			return nil, badinput.Errorf("%s:%d: not a JSON object with a \"text\" field: %v", path, line, err)
		}
		if r.Text == nil {
			r.Text = r.Page
		}
		if r.Text == nil {
			return nil, badinput.Errorf("%s:%d: missing field \"text\"", path, line)
		}
		if *r.Text == "" {
			return nil, badinput.Errorf("%s:%d: field \"text\" is empty", path, line)
		}
		docs = append(docs, *r.Text)
	}
	if err := sc.Err(); err != nil {
		return nil, badinput.Errorf("%s:%d: %v", path, line+1, err)
	}
	if len(docs) == 0 {
		return nil, badinput.Errorf("%s: no documents", path)
	}
	return docs, nil
}
