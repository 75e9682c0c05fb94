package eval

import (
	"context"
	"fmt"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
)

// A masked-language model (RoBERTa trained with objective mlm) has no
// classification head and no left-to-right likelihood, so CL rank mode
// scores each candidate label by its pseudo-log-likelihood (Salazar et
// al. 2020, "Masked Language Model Scoring"): the sequence is built as
// training builds a CL row for a causal model (CLS + prompt + label +
// SEP, the same truncation), each label token is replaced by the mask
// token in turn, and the log-probabilities the model gives the true token
// at the masked position are summed. The label with the highest sum wins.

// pllRequest is one sequence to score: its token ids and the positions
// (label tokens) masked one at a time.
type pllRequest struct {
	ids       []int64
	positions []int
}

// pllRequests encodes every (row, label) pair, row-major, and reports the
// rows whose prompt was cut to fit.
func pllRequests(m *Model, rows []data.Record, labels []string, prompt data.CLPrompt, cfg data.Config) ([]pllRequest, []bool, error) {
	cfg.Objective = data.CLM // bos + prompt + label + eos, as CL rows are encoded for causal models
	enc, err := data.NewEncoder(m.Tokenizer(), cfg)
	if err != nil {
		return nil, nil, err
	}
	reqs := make([]pllRequest, 0, len(rows)*len(labels))
	truncated := make([]bool, len(rows))
	for i, r := range rows {
		for _, l := range labels {
			rec := r
			rec.Label = l
			ex, err := enc.EncodeRecord(&rec, prompt)
			if err != nil {
				return nil, nil, fmt.Errorf("%d: %w", r.Line, err)
			}
			lab, err := m.Tokenizer().EncodeIDs(l, false)
			if err != nil {
				return nil, nil, err
			}
			n := min(len(lab), len(ex.InputIDs)-ex.PromptLen)
			if n <= 0 {
				return nil, nil, badinput.Errorf("label %q has no tokens left after truncating row %d", l, r.Line)
			}
			req := pllRequest{ids: make([]int64, len(ex.InputIDs)), positions: make([]int, n)}
			for k, id := range ex.InputIDs {
				req.ids[k] = int64(id)
			}
			for k := range req.positions {
				req.positions[k] = ex.PromptLen + k
			}
			truncated[i] = truncated[i] || ex.Truncated
			reqs = append(reqs, req)
		}
	}
	return reqs, truncated, nil
}

// pseudoLogLikelihoods scores each request: one masked copy of the
// sequence per position, run BatchSize copies at a time (right-padded),
// summing log p(true token | copy) at the masked positions.
func (m *Model) pseudoLogLikelihoods(ctx context.Context, reqs []pllRequest) ([]float64, error) {
	maskID, ok := m.man.SpecialTokens["mask"]
	if !ok {
		return nil, badinput.Errorf("%s: the model has no mask token (special_tokens.mask in migu.json)", m.dir)
	}
	pad := m.man.SpecialTokens["pad"]
	type copyRef struct{ req, pos int }
	var copies []copyRef
	for i, r := range reqs {
		for _, p := range r.positions {
			copies = append(copies, copyRef{i, p})
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]float64, len(reqs))
	var ids, mask, pos, target []int64
	for start := 0; start < len(copies); start += m.batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := copies[start:min(start+m.batch, len(copies))]
		seq := 0
		for _, c := range batch {
			seq = max(seq, len(reqs[c.req].ids))
		}
		ids, mask = ids[:0], mask[:0]
		for _, c := range batch {
			r := reqs[c.req].ids
			for s := range seq {
				switch {
				case s >= len(r):
					ids, mask = append(ids, pad), append(mask, 0)
				case s == c.pos:
					ids, mask = append(ids, maskID), append(mask, 1)
				default:
					ids, mask = append(ids, r[s]), append(mask, 1)
				}
			}
		}
		pos, target = pos[:0], target[:0]
		for _, c := range batch {
			pos, target = append(pos, int64(c.pos)), append(target, reqs[c.req].ids[c.pos])
		}
		res, err := m.run(len(batch), seq, []namedInput{{"input_ids", ids, seq}, {"attention_mask", mask, seq}}, pos, target, 1)
		if err != nil {
			return nil, err
		}
		for b, c := range batch {
			out[c.req] += float64(res.logp[b])
		}
		if m.progress != nil {
			m.progress(start+len(batch), len(copies))
		}
	}
	return out, nil
}

// clRankMLM is clRank for masked-LM models: each label's score is its
// pseudo-log-likelihood after the prompt.
func clRankMLM(ctx context.Context, m *Model, cfg data.Config, rows []data.Record, labels []string, prompt data.CLPrompt, res *CLResult) error {
	reqs, truncated, err := pllRequests(m, rows, labels, prompt, cfg)
	if err != nil {
		return err
	}
	scores, err := m.pseudoLogLikelihoods(ctx, reqs)
	if err != nil {
		return err
	}
	res.RankCorrect = 0
	for i, r := range rows {
		lp := scores[i*len(labels) : (i+1)*len(labels)]
		best := 0
		for k := range lp {
			if lp[k] > lp[best] {
				best = k
			}
		}
		res.Predictions[i].LogProbs = append([]float64(nil), lp...)
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
