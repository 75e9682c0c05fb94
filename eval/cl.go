package eval

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
)

// CL scoring modes.
const (
	// CLRank picks the label with the highest log-likelihood (small
	// models, which rarely generate a label verbatim, need it).
	CLRank = "rank"
	// CLGenerate generates greedily and counts exact matches of the label,
	// the CL benchmark's published metric.
	CLGenerate = "generate"
	// CLBoth does both.
	CLBoth = "both"
)

// Metric names of CLScores.
const (
	MetricCLRank  = "acc_rank"
	MetricCLExact = "exact_match"
)

// CLOptions configure CL-benchmark accuracy.
type CLOptions struct {
	// Labels are the candidate labels (nil: the file's label set —
	// labels.json beside it, else its distinct labels, sorted).
	Labels []string
	// Prompt is the prompt the model was trained with (nil:
	// data.CLPromptFor(path, Labels), as training builds it).
	Prompt *data.CLPrompt
	// Limit scores the first N rows (0: all).
	Limit int
	// Mode is CLRank (default), CLGenerate or CLBoth.
	Mode string
	// MaxNewTokens bounds generation (0: the longest label's tokens + 2).
	MaxNewTokens int
	// MaxLen truncates prompt and answer as training did (0: training's
	// default, data.ConfigFor's; never more than the model's MaxLength).
	MaxLen int
	// Chat is the chat template the model was trained with (--template
	// chat), nil for the plain prompt: each row is then a user message
	// holding Prompt's text, the label the assistant's answer, scored and
	// generated as training rendered them (data.Conversation).
	Chat *chat.Template
}

// CLResult holds the outcome of one test file.
type CLResult struct {
	N int `json:"n"`
	// RankCorrect and ExactCorrect count right answers per mode (-1 when
	// the mode did not run).
	RankCorrect  int `json:"rank_correct"`
	ExactCorrect int `json:"exact_correct"`
	// Truncated counts rows whose prompt was cut to fit.
	Truncated   int            `json:"truncated"`
	Predictions []CLPrediction `json:"predictions,omitempty"`
}

// CLPrediction is one row's answers.
type CLPrediction struct {
	Gold      string `json:"gold"`
	Rank      string `json:"rank,omitempty"`
	Generated string `json:"generated,omitempty"`
	// LogProbs are the log-likelihoods of the candidate labels (rank).
	LogProbs []float64 `json:"log_probs,omitempty"`
}

// RankAccuracy is the share of rows whose best-scoring label is the gold
// one (NaN when rank mode did not run).
func (r *CLResult) RankAccuracy() float64 { return share(r.RankCorrect, r.N) }

// ExactAccuracy is the share of rows whose generated answer is the gold
// label exactly (NaN when generation did not run).
func (r *CLResult) ExactAccuracy() float64 { return share(r.ExactCorrect, r.N) }

func share(k, n int) float64 {
	if k < 0 || n == 0 {
		return math.NaN()
	}
	return float64(k) / float64(n)
}

// CheckCLMode validates a --score value.
func CheckCLMode(mode string) error {
	switch mode {
	case "", CLRank, CLGenerate, CLBoth:
		return nil
	}
	return badinput.Errorf("unknown CL scoring mode %q (rank, generate, both)", mode)
}

// CLScores scores a CL-benchmark test file ({"sentence","label"} rows) as
// accuracy rows: acc_rank (the label with the highest log-likelihood of
// label + end of sequence after the training prompt) and exact_match (the
// greedily generated answer equals the label), with lm-eval's standard
// error of a mean.
func CLScores(ctx context.Context, m *Model, path string, o CLOptions) ([]Score, error) {
	ds, err := data.Read(path, data.ReadOptions{Kind: data.Classification})
	if err != nil {
		return nil, err
	}
	res, err := CLEvaluate(ctx, m, ds, o)
	if err != nil {
		return nil, err
	}
	task := "cl:" + filepath.Base(filepath.Dir(path))
	var out []Score
	if res.RankCorrect >= 0 {
		out = append(out, MeanScore(task, MetricCLRank, res.Outcomes(CLRank)))
	}
	if res.ExactCorrect >= 0 {
		out = append(out, MeanScore(task, MetricCLExact, res.Outcomes(CLGenerate)))
	}
	return out, nil
}

// Outcomes is 1 for each row whose answer in mode (CLRank or CLGenerate)
// is the gold label, else 0: the per-item outcomes paired comparisons
// between models resample.
func (r *CLResult) Outcomes(mode string) []float64 {
	xs := make([]float64, len(r.Predictions))
	for i, p := range r.Predictions {
		answer := p.Rank
		if mode == CLGenerate {
			answer = p.Generated
		}
		if answer == p.Gold {
			xs[i] = 1
		}
	}
	return xs
}

// CLEvaluate scores the classification rows of ds. Rank mode encodes each
// candidate label exactly as training encodes a row (prompt, label, end of
// sequence, the same truncation) and scores the label tokens and the end
// of sequence after the prompt; generation compares the greedy answer,
// trimmed of surrounding spaces, with the label. A masked-LM model
// (objective mlm) has rank mode only, scored by pseudo-log-likelihood
// (mlm.go).
func CLEvaluate(ctx context.Context, m *Model, ds *data.Dataset, o CLOptions) (*CLResult, error) {
	if err := CheckCLMode(o.Mode); err != nil {
		return nil, err
	}
	if o.Mode == "" {
		o.Mode = CLRank
	}
	if ds.Kind != data.Classification {
		return nil, badinput.Errorf("%s: CL accuracy needs classification rows (sentence and label), not %s records", ds.Path, ds.Kind)
	}
	labels := o.Labels
	if labels == nil {
		labels = ds.Labels
	}
	if len(labels) == 0 {
		return nil, badinput.Errorf("%s: no candidate labels", ds.Path)
	}
	rows := ds.Records
	if o.Limit > 0 && o.Limit < len(rows) {
		rows = rows[:o.Limit]
	}
	prompt := data.CLPromptFor(ds.Path, labels)
	if o.Prompt != nil {
		prompt = *o.Prompt
	}
	cfg := data.ConfigFor(m.Manifest())
	if o.MaxLen > 0 {
		cfg.MaxLen = o.MaxLen
	}
	cfg.MaxLen = min(cfg.MaxLen, m.MaxLength())
	cfg.Chat = o.Chat
	if m.mlm && o.Mode != CLRank {
		return nil, badinput.Errorf("%s: a masked-LM model cannot generate; score it with %v rank (pseudo-log-likelihood of each label)", ds.Path, badinput.Setting("cl_mode"))
	}
	enc, err := data.NewEncoder(m.Tokenizer(), cfg)
	if err != nil {
		return nil, err
	}
	res := &CLResult{N: len(rows), RankCorrect: -1, ExactCorrect: -1, Predictions: make([]CLPrediction, len(rows))}
	for i, r := range rows {
		res.Predictions[i].Gold = r.Label
	}
	if m.mlm {
		if err := clRankMLM(ctx, m, cfg, rows, labels, prompt, res); err != nil {
			return nil, err
		}
	} else if o.Mode == CLRank || o.Mode == CLBoth {
		if err := clRank(ctx, m, enc, rows, labels, prompt, res); err != nil {
			return nil, err
		}
	}
	if o.Mode == CLGenerate || o.Mode == CLBoth {
		if err := clGenerate(ctx, m, rows, labels, prompt, o.MaxNewTokens, o.Chat, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// clRank scores every (row, label) pair and keeps each row's best label
// (the first of equals).
func clRank(ctx context.Context, m *Model, enc *data.Encoder, rows []data.Record, labels []string, prompt data.CLPrompt, res *CLResult) error {
	reqs := make([]tokenRequest, 0, len(rows)*len(labels))
	truncated := make([]bool, len(rows))
	for i, r := range rows {
		for _, l := range labels {
			rec := r
			rec.Label = l
			ex, err := enc.EncodeRecord(&rec, prompt)
			if err != nil {
				return fmt.Errorf("%d: %w", r.Line, err)
			}
			var req tokenRequest
			if m.seq2seq {
				req = tokenRequest{ctx: ints(ex.InputIDs), cont: ints(ex.Target)}
			} else {
				// In the chat format the answer ends with the assistant
				// turn (its end-of-turn token), before the template's
				// text between turns.
				end := len(ex.InputIDs)
				for end > ex.PromptLen && ex.LossMask != nil && !ex.LossMask[end-1] {
					end--
				}
				req = tokenRequest{ctx: ints(ex.InputIDs[:ex.PromptLen]), cont: ints(ex.InputIDs[ex.PromptLen:end])}
			}
			if len(req.cont) == 0 {
				return badinput.Errorf("label %q has no tokens left after truncating row %d", l, r.Line)
			}
			truncated[i] = truncated[i] || ex.Truncated
			reqs = append(reqs, req)
		}
	}
	out, err := m.logLikelihoodTokens(ctx, reqs)
	if err != nil {
		return err
	}
	res.RankCorrect = 0
	for i, r := range rows {
		best := 0
		res.Predictions[i].LogProbs = make([]float64, len(labels))
		for k := range labels {
			res.Predictions[i].LogProbs[k] = out[i*len(labels)+k].LogProb
			if out[i*len(labels)+k].LogProb > out[i*len(labels)+best].LogProb {
				best = k
			}
		}
		res.Predictions[i].Rank = labels[best]
		if labels[best] == r.Label {
			res.RankCorrect++
		}
		if truncated[i] {
			res.Truncated++
		}
	}
	return nil
}

func ints(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// clGenerate generates each row's answer greedily (up to the end of
// sequence or a new line; with a chat template, after the generation
// prompt and up to the end of the turn) and counts exact matches of the
// label.
func clGenerate(ctx context.Context, m *Model, rows []data.Record, labels []string, prompt data.CLPrompt, maxNew int, tpl *chat.Template, res *CLResult) error {
	if maxNew <= 0 {
		for _, l := range labels {
			ids, err := m.Tokenizer().EncodeIDs(l, false)
			if err != nil {
				return err
			}
			maxNew = max(maxNew, len(ids)+2)
		}
	}
	prompts := make([]string, len(rows))
	for i, r := range rows {
		prompts[i] = prompt.Format(r.Sentence)
	}
	gens, err := m.Generate(ctx, prompts, GenOptions{MaxNewTokens: maxNew, Stop: []string{"\n"}, Chat: tpl})
	if err != nil {
		return err
	}
	res.ExactCorrect = 0
	for i, g := range gens {
		ans := strings.TrimSpace(g.Text)
		res.Predictions[i].Generated = ans
		if ans == rows[i].Label {
			res.ExactCorrect++
		}
	}
	return nil
}
