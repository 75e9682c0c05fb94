package eval

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/badinput"
)

// DefaultFewshotSeed seeds few-shot sampling, lm-eval's default
// fewshot_random_seed.
const DefaultFewshotSeed = 1234

// TaskOptions choose which items are scored and how they are prompted.
type TaskOptions struct {
	// Limit scores only the first Limit rows (0: all).
	Limit int
	// NumFewshot puts that many solved examples before every item,
	// separated by blank lines (lm-eval's "\n\n" delimiter).
	NumFewshot int
	// FewshotPath is a file of the same task to draw examples from (say,
	// the train split); "" draws from the evaluated file itself, never
	// using the item being scored — what lm-eval does when the few-shot
	// split is the evaluation split.
	FewshotPath string
	// Seed seeds the example sampler (0: DefaultFewshotSeed). The sampler
	// is Go's PCG, so the examples are reproducible but not the ones
	// lm-eval's Python RNG would pick.
	Seed uint64
	// Log, when set, receives one line per task: items, requests, how
	// many contexts were cut to fit the model, tokens and time.
	Log io.Writer
}

// DocResult is the outcome of one item.
type DocResult struct {
	Line    int       // row of the data file
	LogLiks []float64 // one per choice
	Greedy  []bool    // one per choice: the continuation is the greedy one
	Gold    int
	Acc     float64 // 1 when the highest log-likelihood is the gold choice
	AccNorm float64 // 1 when the highest log-likelihood per character is gold (NaN without Choices)
}

// TaskResult is a scored task: the metrics and the per-item outcomes.
type TaskResult struct {
	Task      string
	Scores    []Score
	Docs      []DocResult
	Requests  int // log-likelihood requests scored
	Truncated int // requests whose context was cut to fit the model
	Tokens    int // continuation tokens scored
}

// TaskScores scores the named multiple-choice task on the data file at
// path and returns its metrics.
func TaskScores(ctx context.Context, m *Model, task, path string, o TaskOptions) ([]Score, error) {
	r, err := RunTask(ctx, m, task, path, o)
	if err != nil {
		return nil, err
	}
	return r.Scores, nil
}

// RunTask reads and checks every row of path, builds the requests of the
// first Limit items (with few-shot examples if asked), scores them in one
// batched LogLikelihood call, and computes acc (argmax of the
// log-likelihoods) and acc_norm (argmax of log-likelihood divided by the
// choice's length in characters) with lm-eval's standard errors.
func RunTask(ctx context.Context, m *Model, task, path string, o TaskOptions) (*TaskResult, error) {
	t, err := LookupTask(task)
	if err != nil {
		return nil, err
	}
	if o.Limit < 0 || o.NumFewshot < 0 {
		return nil, badinput.Errorf("%v and %v must not be negative (got %d, %d)", badinput.Setting("limit"), badinput.Setting("num_fewshot"), o.Limit, o.NumFewshot)
	}
	all, err := t.ReadDocs(path)
	if err != nil {
		return nil, err
	}
	docs := all
	if o.Limit > 0 && o.Limit < len(docs) {
		docs = docs[:o.Limit]
	}
	prefixes, err := fewshotPrefixes(t, all, len(docs), o)
	if err != nil {
		return nil, err
	}
	var reqs []Request
	for i, d := range docs {
		reqs = append(reqs, d.Requests(prefixes[i])...)
	}
	start := time.Now()
	res, err := m.LogLikelihood(ctx, reqs)
	if err != nil {
		return nil, err
	}
	out := &TaskResult{Task: t.Name, Docs: make([]DocResult, len(docs)), Requests: len(reqs)}
	for _, r := range res {
		out.Tokens += r.Tokens
		if r.Truncated {
			out.Truncated++
		}
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s: %d items, %d requests (%d contexts cut to the %d-token context), %d continuation tokens, %.1f s\n",
			t.Name, len(docs), len(reqs), out.Truncated, m.MaxLength(), out.Tokens, time.Since(start).Seconds())
	}
	acc := make([]float64, len(docs))
	accNorm := make([]float64, len(docs))
	k := 0
	for i, d := range docs {
		n := d.NumChoices()
		dr := DocResult{Line: d.Line, Gold: d.Gold, LogLiks: make([]float64, n), Greedy: make([]bool, n)}
		for j := range n {
			dr.LogLiks[j], dr.Greedy[j] = res[k+j].LogProb, res[k+j].Greedy
		}
		k += n
		dr.Acc, dr.AccNorm = d.score(dr.LogLiks)
		acc[i], accNorm[i] = dr.Acc, dr.AccNorm
		out.Docs[i] = dr
	}
	for _, metric := range t.Metrics {
		xs := acc
		if metric == "acc_norm" {
			xs = accNorm
		}
		out.Scores = append(out.Scores, MeanScore(t.Name, metric, xs))
	}
	return out, nil
}

// fewshotPrefixes returns, for each of the first n items of docs, the text
// of its few-shot examples ("" without few-shot): K solved examples joined
// by blank lines, followed by a blank line.
func fewshotPrefixes(t *Task, docs []*Doc, n int, o TaskOptions) ([]string, error) {
	out := make([]string, n)
	if o.NumFewshot == 0 {
		return out, nil
	}
	pool, self := docs, true
	if o.FewshotPath != "" {
		var err error
		if pool, err = t.ReadDocs(o.FewshotPath); err != nil {
			return nil, err
		}
		self = false
	}
	avail := len(pool)
	if self {
		avail--
	}
	if o.NumFewshot > avail {
		return nil, badinput.Errorf("%v %d: only %d examples are available to draw from", badinput.Setting("num_fewshot"), o.NumFewshot, avail)
	}
	seed := o.Seed
	if seed == 0 {
		seed = DefaultFewshotSeed
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for i := range n {
		// Draw K+1 distinct examples and drop the item itself, as lm-eval
		// does when examples come from the evaluated split.
		draw := min(o.NumFewshot+1, len(pool))
		picks := sampleDistinct(rng, len(pool), draw)
		var shots []string
		for _, p := range picks {
			if self && p == i {
				continue
			}
			if len(shots) < o.NumFewshot {
				shots = append(shots, pool[p].Example())
			}
		}
		out[i] = strings.Join(shots, FewshotDelimiter) + FewshotDelimiter
	}
	return out, nil
}

// score returns acc (the highest log-likelihood is gold) and acc_norm (the
// highest log-likelihood per character of the choice text is gold; NaN
// without Choices), as lm-eval's multiple-choice metrics.
func (d *Doc) score(lls []float64) (acc, accNorm float64) {
	acc, accNorm = indicator(argmax(lls) == d.Gold), nan()
	if d.Choices != nil {
		norm := make([]float64, len(lls))
		for j, c := range d.Choices {
			norm[j] = lls[j] / float64(utf8.RuneCountInString(c))
		}
		accNorm = indicator(argmax(norm) == d.Gold)
	}
	return acc, accNorm
}

// argmax is the index of the first largest value, as numpy's argmax.
func argmax(xs []float64) int {
	best := 0
	for j, x := range xs {
		if x > xs[best] {
			best = j
		}
	}
	return best
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sampleDistinct draws k distinct indices below n in random order.
func sampleDistinct(rng *rand.Rand, n, k int) []int {
	if 2*k > n {
		return rng.Perm(n)[:k]
	}
	out := make([]int, 0, k)
	for len(out) < k {
		p := rng.IntN(n)
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
