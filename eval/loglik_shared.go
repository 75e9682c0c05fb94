package eval

import (
	"fmt"
	"slices"

	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/onnx/ort"
)

// Requests that share a context — the labels of one CL row, the endings
// of one HellaSwag item, the choices of one ARC question — score the
// context once: it runs through the key/value-cache decoder as one row,
// its keys and values are copied to one row per continuation (in memory
// kept from batch to batch, kvBuffers), and the
// continuations (all but their last token) run as one batch after them.
// Groups with few continuations share their runs: the contexts of as
// many groups as BatchSize continuations allow run as one left-padded
// batch, and all their continuations as the next.
// The tokens the model sees and the positions it reads are those of the
// whole-sequence path (scoreCausal), so the log-probabilities agree to
// float32 rounding; only requests cut to MaxLength take that path.

// maxShared caps the continuations scored after one pass of their
// context; a larger group runs its context once per maxShared of them.
const maxShared = 64

// sharedGroups splits causal requests into groups of two or more with
// the same context, which scoreShared takes, and the rest.
func sharedGroups(reqs []tokenRequest, maxLen int) (groups [][]int, rest []int) {
	byCtx := map[string]int{} // context → index in groups
	for i, r := range reqs {
		if len(r.ctx) == 0 || len(r.ctx)+len(r.cont)-1 > maxLen {
			rest = append(rest, i)
			continue
		}
		key := fmt.Sprint(r.ctx)
		g, ok := byCtx[key]
		if !ok || len(groups[g]) == maxShared {
			g = len(groups)
			byCtx[key] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	kept := groups[:0]
	for _, g := range groups {
		if len(g) == 1 {
			rest = append(rest, g[0])
		} else {
			kept = append(kept, g)
		}
	}
	return kept, rest
}

// sharedBatches packs groups into runs of at most batch continuations
// (a group of batch or more runs alone), longest context first, so that the
// contexts of several items run as one batch and their continuations as
// another.
func sharedBatches(reqs []tokenRequest, groups [][]int, batch int) [][][]int {
	groups = slices.Clone(groups)
	slices.SortStableFunc(groups, func(a, b []int) int { return len(reqs[b[0]].ctx) - len(reqs[a[0]].ctx) })
	var out [][][]int
	open, rows := -1, 0 // the batch being filled and its continuations
	for _, g := range groups {
		if len(g) >= batch {
			out = append(out, [][]int{g})
			continue
		}
		if open < 0 || rows+len(g) > batch {
			out = append(out, nil)
			open, rows = len(out)-1, 0
		}
		out[open] = append(out[open], g)
		rows += len(g)
	}
	return out
}

// scoreShared scores groups of requests that share a context
// (sharedGroups) through the cached decoder: the contexts as one batch,
// left-padded, then the continuations of every group after their
// context's keys and values. The first run returns the logits of each
// context's last position (one row of the vocabulary per group), which
// score every continuation's first token; the continuation runs return
// the log-probabilities and argmaxes of the other tokens alone (the
// decoder's scoring outputs, scoregraph.go). The continuations run in
// runs of similar length (contRuns), so that few positions are padding.
// The caller holds m.mu and has loaded m.gen.
func (m *Model) scoreShared(reqs []tokenRequest, groups [][]int, out []Result) error {
	st := &cachedStepper{m: m, g: &m.gen}
	defer st.close()
	seq := 0
	for _, g := range groups {
		seq = max(seq, len(reqs[g[0]].ctx))
	}
	n := len(groups)
	ids := make([]int64, n*seq)
	mask := make([]int64, n*seq)
	for r, g := range groups {
		ctx := reqs[g[0]].ctx
		pad := seq - len(ctx)
		for s := range pad {
			ids[r*seq+s] = m.padToken()
		}
		for s, id := range ctx {
			ids[r*seq+pad+s], mask[r*seq+pad+s] = int64(id), 1
		}
	}
	first, err := st.contexts(ids, mask, n, seq, &m.gen.kv)
	if err != nil {
		return err
	}
	var conts []contRow // the requests with tokens after their first
	for r, g := range groups {
		for _, i := range g {
			cont := reqs[i].cont
			lp, best := logSoftmaxAt(first[r*m.vocab:(r+1)*m.vocab], cont[0])
			out[i] = Result{LogProb: lp, Greedy: best == cont[0], Tokens: len(cont)}
			if len(cont) > 1 {
				conts = append(conts, contRow{ctxRow: r, req: i, n: len(cont) - 1})
			}
		}
	}
	for _, run := range contRuns(conts, m.contRunCost) {
		if err := m.scoreConts(st, reqs, run, mask, n, out); err != nil {
			return err
		}
	}
	return nil
}

// contRow is a continuation to score after its context: the context's
// row in the context run, the request, and its tokens after the first.
type contRow struct {
	ctxRow, req, n int
}

// defaultContRunCost is what one more continuation run costs, counted in
// padded positions (Model.contRunCost): the fixed work of a run of the
// decoder — some 600 operators of SmolLM2 — against the layers' work per
// position.
const defaultContRunCost = 24

// contRuns splits continuations into runs: sorted by length, cut where
// the padding a cut saves is worth more than cost positions, the
// partition of least rows·longest + cost summed over the runs (dynamic
// programming over the sorted lengths; of equal costs, the fewer runs).
// Cost 1<<30 keeps them all in one run.
func contRuns(conts []contRow, cost int) [][]contRow {
	if len(conts) == 0 {
		return nil
	}
	conts = slices.Clone(conts)
	slices.SortStableFunc(conts, func(a, b contRow) int { return a.n - b.n })
	// best[j]: the least cost of the first j rows; cut[j]: where its last
	// run starts.
	best, cut := make([]int, len(conts)+1), make([]int, len(conts)+1)
	for j := 1; j <= len(conts); j++ {
		best[j] = -1
		for i := range j { // on a tie, the longer last run: fewer runs
			c := best[i] + (j-i)*conts[j-1].n + cost
			if best[j] < 0 || c < best[j] {
				best[j], cut[j] = c, i
			}
		}
	}
	var runs [][]contRow
	for j := len(conts); j > 0; j = cut[j] {
		runs = append(runs, conts[cut[j]:j])
	}
	slices.Reverse(runs)
	return runs
}

// scoreConts runs the continuations run after their contexts (whose
// presents the context run left in st's buffers; ctxMask is its mask, of
// ctxRows rows): each row feeds its continuation but the last token,
// right-padded (a padded position comes after every real one, so no real
// query sees it), and the scores of the real positions are added to out.
func (m *Model) scoreConts(st *cachedStepper, reqs []tokenRequest, run []contRow, ctxMask []int64, ctxRows int, out []Result) error {
	expand := make([]int, len(run))
	rest := 0
	for k, c := range run {
		expand[k], rest = c.ctxRow, max(rest, c.n)
	}
	if err := st.expand(expand, ctxMask, ctxRows); err != nil {
		return err
	}
	for range rest {
		st.mask = appendColumn(st.mask, len(run), len(st.mask)/len(run), nil)
	}
	next := make([]int64, len(run)*rest)
	var index, target []int64
	for r, c := range run {
		cont := reqs[c.req].cont
		for s, id := range cont[:len(cont)-1] {
			next[r*rest+s] = int64(id)
		}
		for s, id := range cont[1:] {
			index, target = append(index, int64(r*rest+s)), append(target, int64(id))
		}
	}
	res, err := st.score(next, rest, index, target)
	if err != nil {
		return err
	}
	at := 0
	for _, c := range run {
		cont := reqs[c.req].cont[1:]
		lp, greedy := m.sumScores(runOut{logp: res.logp[at : at+c.n], argmax: res.argmax[at : at+c.n]}, 0, c.n, cont)
		out[c.req].LogProb += lp
		out[c.req].Greedy = out[c.req].Greedy && greedy
		at += c.n
	}
	return nil
}

// kvBuffers are the key/value-cache memory of shared-context scoring,
// kept from batch to batch (the generator owns them, and Model.mu guards
// their use): ctx holds the context run's presents, which ORT writes
// there through a Binding, and rows each continuation's copy of its
// context's rows, which the continuation run reads. Go allocates them at
// the largest batch once; copied out of ORT by Session.Run and then row
// by row into new slices, they were ~350 MB of garbage per pass of
// SmolLM2-135M at batch 8 (8 contexts of ~176 tokens, 32 continuations).
type kvBuffers struct {
	ctx, rows [][]float32
	logits    []float32
}

// growFloats returns s with length n, reallocated where it is too small.
// The values are not cleared: every element is written before it is read.
func growFloats(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// contexts runs the contexts ids ([rows, seq], left-padded, mask alike)
// through the cached decoder from an empty cache, as first does, and
// returns the logits of each row's last position ([rows, vocab]; buf's
// memory, valid until the next call). ORT writes the presents into buf,
// from which expand makes the past of the continuation runs.
func (c *cachedStepper) contexts(ids, mask []int64, rows, seq int, buf *kvBuffers) ([]float32, error) {
	cache := c.g.cache
	b, err := c.g.sess.NewBinding()
	if err != nil {
		return nil, err
	}
	defer b.Close()
	var vals []ort.Value
	defer func() {
		for _, v := range vals {
			v.Close()
		}
	}()
	buf.logits = growFloats(buf.logits, rows*c.m.vocab)
	r, s, kv, hd := int64(rows), int64(seq), int64(cache.KVHeads), int64(cache.HeadDim)
	for _, err := range []error{
		bindTensor(b, &vals, "input_ids", false, ids, r, s),
		bindTensor(b, &vals, "attention_mask", false, mask, r, s),
		bindTensor(b, &vals, kvcache.LogitsLen, false, []int64{1}, 1),
		bindTensor(b, &vals, scoreIndex, false, rowIndex(rows), r, 1),
		bindTensor(b, &vals, scoreTarget, false, make([]int64, rows), r, 1, 1), // any token: these scores are not read
		bindTensor(b, &vals, "logits", true, buf.logits, r, 1, int64(c.m.vocab)),
	} {
		if err != nil {
			return nil, err
		}
	}
	per := cache.KVHeads * seq * cache.HeadDim // one row of one present
	for len(buf.ctx) < 2*cache.Layers {
		buf.ctx, buf.rows = append(buf.ctx, nil), append(buf.rows, nil)
	}
	for i := range cache.Layers {
		for j, name := range []string{cache.PastKey[i], cache.PastValue[i]} {
			if err := bindTensor(b, &vals, name, false, []float32{}, r, kv, 0, hd); err != nil {
				return nil, err
			}
			k := 2*i + j
			buf.ctx[k] = growFloats(buf.ctx[k], rows*per)
			if err := bindTensor(b, &vals, []string{cache.PresentKey[i], cache.PresentValue[i]}[j], true, buf.ctx[k], r, kv, s, hd); err != nil {
				return nil, err
			}
		}
	}
	if err := b.Run(); err != nil {
		return nil, err
	}
	c.buf, c.ctxSeq = buf, seq
	return buf.logits, nil
}

// expand makes the past of the next run (score) hold the context run's
// row expand[i] as its row i, copied from the presents contexts left in
// the buffers, and its mask the context rows' (ctxMask, of ctxRows rows).
// The past of an earlier expand is released first.
func (c *cachedStepper) expand(expand []int, ctxMask []int64, ctxRows int) error {
	for _, v := range c.past {
		v.Close()
	}
	c.past = c.past[:0]
	cache, buf := c.g.cache, c.buf
	per := cache.KVHeads * c.ctxSeq * cache.HeadDim
	for k := range 2 * cache.Layers {
		dst := growFloats(buf.rows[k], len(expand)*per)
		buf.rows[k] = dst
		for row, from := range expand {
			copy(dst[row*per:(row+1)*per], buf.ctx[k][from*per:(from+1)*per])
		}
		t, err := ort.NewTensor(dst, int64(len(expand)), int64(cache.KVHeads), int64(c.ctxSeq), int64(cache.HeadDim))
		if err != nil {
			return err
		}
		c.past = append(c.past, t)
	}
	c.mask, c.rows, c.seq = keepRows(ctxMask, ctxRows, expand), len(expand), c.ctxSeq
	return nil
}
