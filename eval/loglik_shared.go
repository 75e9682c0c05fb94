package eval

import "fmt"

// Requests that share a context — the labels of one CL row, the endings
// of one HellaSwag item, the choices of one ARC question — score the
// context once: it runs through the key/value-cache decoder as one row,
// its keys and values are copied to one row per continuation, and the
// continuations (all but their last token) run as one batch after them.
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

// scoreShared scores requests with one context (sharedGroups) through
// the cached decoder. The caller holds m.mu and has loaded m.gen.
func (m *Model) scoreShared(reqs []tokenRequest, group []int, out []Result) error {
	ctx := reqs[group[0]].ctx
	st := &cachedStepper{m: m, g: &m.gen}
	defer st.close()
	ids := make([]int64, len(ctx))
	mask := make([]int64, len(ctx))
	for s, id := range ctx {
		ids[s], mask[s] = int64(id), 1
	}
	first, err := st.first(ids, mask, 1, len(ctx))
	if err != nil {
		return err
	}
	rest := 0 // the longest continuation after its first token
	for _, i := range group {
		cont := reqs[i].cont
		lp, best := logSoftmaxAt(first, cont[0])
		out[i] = Result{LogProb: lp, Greedy: best == cont[0], Tokens: len(cont)}
		rest = max(rest, len(cont)-1)
	}
	if rest == 0 {
		return nil
	}
	rows := len(group)
	if err := st.keep(make([]int, rows)); err != nil { // row 0, once per request
		return err
	}
	// Each row feeds its continuation but the last token, right-padded
	// (a padded position comes after every real one, so no real query
	// sees it); the mask covers the context and the new tokens.
	next := make([]int64, rows*rest)
	st.mask = make([]int64, rows*(len(ctx)+rest))
	for k := range st.mask {
		st.mask[k] = 1
	}
	for r, i := range group {
		for s, id := range reqs[i].cont[:len(reqs[i].cont)-1] {
			next[r*rest+s] = int64(id)
		}
	}
	logits, err := st.runLogits(next, rest, rest)
	if err != nil {
		return err
	}
	for r, i := range group {
		cont := reqs[i].cont
		lp, greedy := m.sumLogProbs(logits, r*rest, cont[1:])
		out[i].LogProb += lp
		out[i].Greedy = out[i].Greedy && greedy
	}
	return nil
}
