package eval

import (
	"fmt"
	"slices"
)

// Requests that share a context — the labels of one CL row, the endings
// of one HellaSwag item, the choices of one ARC question — score the
// context once: it runs through the key/value-cache decoder as one row,
// its keys and values are copied to one row per continuation, and the
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
// left-padded, then every continuation of every group as one batch after
// its context's keys and values. The first run returns the logits of each
// context's last position (one row of the vocabulary per group), which
// score every continuation's first token; the second returns the
// log-probabilities and argmaxes of the other tokens alone (the decoder's
// scoring outputs, scoregraph.go). The caller holds m.mu and has loaded
// m.gen.
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
	first, err := st.first(ids, mask, n, seq)
	if err != nil {
		return err
	}
	rest := 0 // the longest continuation after its first token
	var rows []int
	for r, g := range groups {
		for _, i := range g {
			cont := reqs[i].cont
			lp, best := logSoftmaxAt(first[r*m.vocab:(r+1)*m.vocab], cont[0])
			out[i] = Result{LogProb: lp, Greedy: best == cont[0], Tokens: len(cont)}
			rest = max(rest, len(cont)-1)
			rows = append(rows, r)
		}
	}
	if rest == 0 {
		return nil
	}
	if err := st.keep(rows); err != nil { // each context's row, once per request
		return err
	}
	// Each row feeds its continuation but the last token, right-padded
	// (a padded position comes after every real one, so no real query
	// sees it); the mask covers the context and the new tokens.
	next := make([]int64, len(rows)*rest)
	for range rest {
		st.mask = appendColumn(st.mask, len(rows), len(st.mask)/len(rows), nil)
	}
	r := 0
	for _, g := range groups {
		for _, i := range g {
			for s, id := range reqs[i].cont[:len(reqs[i].cont)-1] {
				next[r*rest+s] = int64(id)
			}
			r++
		}
	}
	target := make([]int64, len(rows)*rest)
	r = 0
	for _, g := range groups {
		for _, i := range g {
			for s, id := range reqs[i].cont[1:] {
				target[r*rest+s] = int64(id)
			}
			r++
		}
	}
	res, err := st.score(next, rest, target, rest)
	if err != nil {
		return err
	}
	r = 0
	for _, g := range groups {
		for _, i := range g {
			cont := reqs[i].cont
			lp, greedy := m.sumScores(res, r, rest, cont[1:])
			out[i].LogProb += lp
			out[i].Greedy = out[i].Greedy && greedy
			r++
		}
	}
	return nil
}
