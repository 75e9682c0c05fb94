package eval

import (
	"context"
	"math"
	"slices"
	"strings"
	"unicode"

	"github.com/migu-ml/migu/internal/badinput"
)

// Request is one log-likelihood query, lm-eval style: the probability of
// Continuation following Context. The continuation already includes its
// leading delimiter (" ").
type Request struct{ Context, Continuation string }

// Result is the answer to one Request.
type Result struct {
	LogProb   float64 // sum of log-probabilities of the continuation tokens
	Greedy    bool    // every continuation token is the argmax
	Tokens    int     // continuation tokens
	Truncated bool    // context was cut from the left to fit MaxLength
}

// tokenRequest is a request already tokenized: the model scores cont
// after ctx.
type tokenRequest struct {
	ctx, cont []int
}

// LogLikelihood scores requests and returns one Result per request, in
// request order. It follows lm-evaluation-harness's HFLM:
//
//   - trailing whitespace of the context moves to the front of the
//     continuation;
//   - causal models: context+continuation is encoded whole (no special
//     tokens) and split at len(encode(context)), so a token spanning the
//     boundary counts as continuation; the model sees
//     (context+continuation)[-(MaxLength+1):][:-1];
//   - seq2seq models: the context, encoded with the tokenizer's special
//     tokens, feeds the encoder (its last MaxLength tokens) and the
//     continuation, encoded without them, is the decoder target;
//   - an empty context stands for the prefix token (BOS, else EOS).
//
// Requests are sorted by length, longest first, and run in batches of
// BatchSize, so padding stays small.
func (m *Model) LogLikelihood(ctx context.Context, reqs []Request) ([]Result, error) {
	toks := make([]tokenRequest, len(reqs))
	for i, r := range reqs {
		c, k, err := m.EncodePair(r.Context, r.Continuation)
		if err != nil {
			return nil, err
		}
		if len(k) == 0 {
			return nil, badinput.Errorf("request %d: continuation %q has no tokens", i, r.Continuation)
		}
		if len(k) > m.maxLen {
			return nil, badinput.Errorf("request %d: continuation has %d tokens, more than the model's context of %d", i, len(k), m.maxLen)
		}
		toks[i] = tokenRequest{c, k}
	}
	return m.logLikelihoodTokens(ctx, toks)
}

// EncodePair tokenizes a request as lm-eval's _encode_pair does (see
// LogLikelihood): the context and continuation token ids the model scores,
// before truncation to MaxLength.
func (m *Model) EncodePair(context, continuation string) (ctx, cont []int, err error) {
	tok := m.tok
	if context == "" {
		k, err := tok.EncodeIDs(continuation, false)
		if err != nil {
			return nil, nil, err
		}
		p := int(m.prefixToken())
		if len(k) > 0 && k[0] == p {
			return k[:1], k[1:], nil
		}
		return []int{p}, k, nil
	}
	trimmed := strings.TrimRightFunc(context, unicode.IsSpace)
	if n := len(context) - len(trimmed); n > 0 {
		continuation = context[len(trimmed):] + continuation
		context = trimmed
	}
	if m.seq2seq {
		if ctx, err = tok.EncodeIDs(context, true); err != nil {
			return nil, nil, err
		}
		cont, err = tok.EncodeIDs(continuation, false)
		return ctx, cont, err
	}
	whole, err := tok.EncodeIDs(context+continuation, false)
	if err != nil {
		return nil, nil, err
	}
	ctx, err = tok.EncodeIDs(context, false)
	if err != nil {
		return nil, nil, err
	}
	n := min(len(ctx), len(whole))
	return whole[:n], whole[n:], nil
}

// logLikelihoodTokens scores tokenized requests in batches sorted by
// length. Every cont is non-empty and at most MaxLength tokens.
func (m *Model) logLikelihoodTokens(ctx context.Context, reqs []tokenRequest) ([]Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	// Longest first (lm-eval's order), ties by the tokens for determinism.
	slices.SortStableFunc(order, func(a, b int) int {
		la, lb := len(reqs[a].ctx)+len(reqs[a].cont), len(reqs[b].ctx)+len(reqs[b].cont)
		if la != lb {
			return lb - la
		}
		return 0
	})
	out := make([]Result, len(reqs))
	done := 0
	if !m.seq2seq && !m.unshared && m.gen.load(m.dir, m.man.Architecture, false) == nil {
		groups, rest := sharedGroups(reqs, m.maxLen)
		for _, b := range sharedBatches(reqs, groups, m.batch) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := m.scoreShared(reqs, b, out); err != nil {
				return nil, err
			}
			for _, g := range b {
				done += len(g)
			}
			if m.progress != nil {
				m.progress(done, len(reqs))
			}
		}
		left := make([]bool, len(reqs))
		for _, i := range rest {
			left[i] = true
		}
		order = slices.DeleteFunc(order, func(i int) bool { return !left[i] })
	}
	var sc batchScratch
	for start := 0; start < len(order); start += m.batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		idx := order[start:min(start+m.batch, len(order))]
		var err error
		if m.seq2seq {
			err = m.scoreSeq2Seq(reqs, idx, out, &sc)
		} else {
			err = m.scoreCausal(reqs, idx, out, &sc)
		}
		if err != nil {
			return nil, err
		}
		if m.progress != nil {
			m.progress(done+start+len(idx), len(reqs))
		}
	}
	return out, nil
}

// batchScratch holds the input buffers reused from batch to batch.
type batchScratch struct {
	ids, mask, dec, decMask []int64
}

func grow(s []int64, n int) []int64 {
	if cap(s) < n {
		return make([]int64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// scoreCausal runs one batch of a causal model: each row is the request's
// last MaxLength+1 tokens without the final one, right-padded.
func (m *Model) scoreCausal(reqs []tokenRequest, idx []int, out []Result, sc *batchScratch) error {
	inps := make([][]int, len(idx))
	seq := 0
	for r, i := range idx {
		full := slices.Concat(reqs[i].ctx, reqs[i].cont)
		keep := full[max(0, len(full)-(m.maxLen+1)):]
		inps[r] = keep[:len(keep)-1]
		out[i].Truncated = len(full)-1 > m.maxLen
		seq = max(seq, len(inps[r]))
	}
	rows := len(idx)
	sc.ids, sc.mask = grow(sc.ids, rows*seq), grow(sc.mask, rows*seq)
	for r, inp := range inps {
		for s, id := range inp {
			sc.ids[r*seq+s] = int64(id)
			sc.mask[r*seq+s] = 1
		}
	}
	if err := m.checkCausal(sc.ids, sc.mask, rows, seq); err != nil {
		return err
	}
	conts := make([][]int, rows)
	firsts := make([]int, rows)
	for r, i := range idx {
		conts[r] = reqs[i].cont
		firsts[r] = len(inps[r]) - len(conts[r]) // position whose logits predict cont[0]
	}
	pos, target, n := contQuery(firsts, conts)
	res, err := m.run(rows, seq, []namedInput{{"input_ids", sc.ids, seq}, {"attention_mask", sc.mask, seq}}, pos, target, n)
	if err != nil {
		return err
	}
	for r, i := range idx {
		out[i].LogProb, out[i].Greedy = m.sumScores(res, r, n, conts[r])
		out[i].Tokens = len(conts[r])
	}
	return nil
}

// scoreSeq2Seq runs one batch of a seq2seq model: the context's last
// MaxLength tokens to the encoder, the continuation as decoder target
// (decoder inputs: the start token, then the target shifted right).
func (m *Model) scoreSeq2Seq(reqs []tokenRequest, idx []int, out []Result, sc *batchScratch) error {
	encs := make([][]int, len(idx))
	encLen, decLen := 0, 0
	for r, i := range idx {
		c := reqs[i].ctx
		encs[r] = c[max(0, len(c)-m.maxLen):]
		out[i].Truncated = len(c) > m.maxLen
		encLen = max(encLen, len(encs[r]))
		decLen = max(decLen, len(reqs[i].cont))
	}
	rows := len(idx)
	sc.ids, sc.mask = grow(sc.ids, rows*encLen), grow(sc.mask, rows*encLen)
	sc.dec, sc.decMask = grow(sc.dec, rows*decLen), grow(sc.decMask, rows*decLen)
	start := m.decoderStart()
	for r, i := range idx {
		for s, id := range encs[r] {
			sc.ids[r*encLen+s] = int64(id)
			sc.mask[r*encLen+s] = 1
		}
		cont := reqs[i].cont
		for s := range cont {
			prev := start
			if s > 0 {
				prev = int64(cont[s-1])
			}
			sc.dec[r*decLen+s] = prev
			sc.decMask[r*decLen+s] = 1
		}
	}
	if err := m.checkSeq2Seq(sc.ids, sc.mask, encLen, sc.dec, sc.decMask, decLen, rows); err != nil {
		return err
	}
	conts := make([][]int, rows)
	for r, i := range idx {
		conts[r] = reqs[i].cont
	}
	pos, target, n := contQuery(make([]int, rows), conts)
	res, err := m.run(rows, decLen, seq2seqInputs(sc.ids, sc.mask, encLen, sc.dec, sc.decMask, decLen), pos, target, n)
	if err != nil {
		return err
	}
	for r, i := range idx {
		out[i].LogProb, out[i].Greedy = m.sumScores(res, r, n, conts[r])
		out[i].Tokens = len(conts[r])
	}
	return nil
}

// contQuery lays out what a scoring run reads: row r's continuation
// conts[r], whose first token the position firsts[r] predicts, at n
// positions per row (the longest continuation; the rest of a shorter
// row reads position 0 for token 0 and is ignored).
func contQuery(firsts []int, conts [][]int) (pos, target []int64, n int) {
	for _, c := range conts {
		n = max(n, len(c))
	}
	pos, target = make([]int64, len(conts)*n), make([]int64, len(conts)*n)
	for r, c := range conts {
		for k, tok := range c {
			pos[r*n+k], target[r*n+k] = int64(firsts[r]+k), int64(tok)
		}
	}
	return pos, target, n
}

// sumScores adds the log-probabilities of row r's tokens cont, scored at
// the first len(cont) of its n positions, in float64, and reports whether
// every one is the argmax (the first maximum, as torch.argmax). A token
// outside the vocabulary has probability 0 and is never the argmax.
func (m *Model) sumScores(res runOut, r, n int, cont []int) (float64, bool) {
	sum, greedy := 0.0, true
	for k, tok := range cont {
		if tok < 0 || tok >= m.vocab {
			sum, greedy = math.Inf(-1), false
			continue
		}
		sum += float64(res.logp[r*n+k])
		if res.argmax[r*n+k] != int64(tok) {
			greedy = false
		}
	}
	return sum, greedy
}

// logSoftmaxAt returns log-softmax(row)[tok] computed in float64, and the
// index of the first maximum of row (torch.argmax's choice).
func logSoftmaxAt(row []float32, tok int) (float64, int) {
	best := 0
	mx := row[0]
	for j, x := range row {
		if x > mx {
			mx, best = x, j
		}
	}
	var s float64
	for _, x := range row {
		s += math.Exp(float64(x - mx))
	}
	if tok < 0 || tok >= len(row) {
		return math.Inf(-1), best
	}
	return float64(row[tok]-mx) - math.Log(s), best
}
