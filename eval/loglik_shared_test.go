package eval

import (
	"context"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestSharedContextsMatchWholeSequences: requests scored after one pass
// of their shared context (loglik_shared.go) get the log-likelihoods,
// greediness and token counts of the whole-sequence path, for groups of
// one-token and long continuations, a group larger than maxShared, a
// context alone in its group and requests cut to the context length, and
// with a batch size that runs several groups' contexts (left-padded) and
// continuations together.
func TestSharedContextsMatchWholeSequences(t *testing.T) {
	var reqs []Request
	for _, c := range []string{"The cat sat", "Question: what is two plus two?\nAnswer:", strings.Repeat("a long shared context ", 6)} {
		for _, cont := range []string{" on", " on the mat.", " quietly by the window, watching the birds go by", " four", "\n"} {
			reqs = append(reqs, Request{c, cont})
		}
	}
	reqs = append(reqs, Request{"alone", " here"}, Request{"", " no context"})
	for i := range maxShared + 3 {
		reqs = append(reqs, Request{"Many labels:", strings.Repeat(" x", 1+i%4)})
	}
	for _, tc := range []struct{ batch, maxLen int }{{4, 0}, {4, 32}, {16, 0}} {
		maxLen := tc.maxLen
		_, m := tinyModel(t, "llama", Options{BatchSize: tc.batch, Threads: 1, MaxLength: maxLen})
		shared, err := m.LogLikelihood(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		if m.gen.sess == nil {
			t.Fatalf("the cached decoder was not built (%v): nothing was shared", m.gen.err)
		}
		m.unshared = true
		whole, err := m.LogLikelihood(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		groups, _ := sharedGroups(mustTokenize(t, m, reqs), m.maxLen)
		if len(groups) < 4 {
			t.Fatalf("max length %d: %d groups of shared contexts; the test does not exercise sharing", maxLen, len(groups))
		}
		together := 0
		for _, b := range sharedBatches(mustTokenize(t, m, reqs), groups, m.batch) {
			together = max(together, len(b))
		}
		if tc.batch > 4 && together < 3 {
			t.Fatalf("batch %d: at most %d groups run together; the test does not exercise batched contexts", tc.batch, together)
		}
		worst := 0.0
		for i := range reqs {
			d := math.Abs(shared[i].LogProb - whole[i].LogProb)
			worst = max(worst, d)
			if d > 1e-4 || shared[i].Greedy != whole[i].Greedy || shared[i].Tokens != whole[i].Tokens || shared[i].Truncated != whole[i].Truncated {
				t.Errorf("batch %d, max length %d, request %d %q: shared %+v, whole %+v", tc.batch, maxLen, i, reqs[i], shared[i], whole[i])
			}
		}
		t.Logf("batch %d, max length %d: %d requests, %d shared groups (up to %d per run), largest difference %.2g", tc.batch, m.maxLen, len(reqs), len(groups), together, worst)
	}
}

// TestSharedContinuationRuns: shared-context scoring with its
// continuations split into runs of similar length (contRuns) gives the
// scores of one run of them all to float32 rounding, greediness exactly,
// and does split them; a second pass over the same requests allocates
// less in Go than the key/value buffers hold: they are reused, not
// allocated again.
func TestSharedContinuationRuns(t *testing.T) {
	var reqs []Request
	for _, c := range []string{"The cat sat", "Question: what is two plus two?\nAnswer:", strings.Repeat("a long shared context ", 6), "Another context, longer than the first"} {
		for _, cont := range []string{" on", " on the mat.", " quietly by the window, watching the birds go by, one after another until the evening", " four"} {
			reqs = append(reqs, Request{c, cont})
		}
	}
	_, m := tinyModel(t, "llama", Options{BatchSize: 8, Threads: 1})
	score := func(cost int) ([]Result, uint64) {
		m.contRunCost = cost
		var res []Result
		var before, after runtime.MemStats
		for pass := range 2 {
			if pass == 1 {
				runtime.ReadMemStats(&before)
			}
			var err error
			if res, err = m.LogLikelihood(context.Background(), reqs); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		return res, after.TotalAlloc - before.TotalAlloc
	}
	want, _ := score(1 << 30)
	got, allocated := score(defaultContRunCost)
	if m.gen.sess == nil {
		t.Fatalf("the shared-context path did not run (%v)", m.gen.err)
	}
	for i := range reqs {
		if math.Abs(got[i].LogProb-want[i].LogProb) > 1e-5*max(1, math.Abs(want[i].LogProb)) || got[i].Greedy != want[i].Greedy || got[i].Tokens != want[i].Tokens {
			t.Errorf("request %d %q: in runs %+v, in one run %+v", i, reqs[i], got[i], want[i])
		}
	}
	toks := mustTokenize(t, m, reqs)
	groups, _ := sharedGroups(toks, m.maxLen)
	var conts []contRow
	for r, g := range groups {
		for _, i := range g {
			if len(toks[i].cont) > 1 {
				conts = append(conts, contRow{ctxRow: r, req: i, n: len(toks[i].cont) - 1})
			}
		}
	}
	if runs := contRuns(conts, defaultContRunCost); len(runs) < 2 {
		t.Fatalf("the continuations run as %d run(s); the test does not exercise splitting", len(runs))
	}
	var held uint64
	for _, b := range append(m.gen.kv.ctx, m.gen.kv.rows...) {
		held += 4 * uint64(cap(b))
	}
	if allocated >= held {
		t.Errorf("a second pass allocated %d bytes; the key/value buffers hold %d: they were allocated again", allocated, held)
	}
	t.Logf("a second pass allocated %d bytes; the key/value buffers hold %d", allocated, held)
}

// TestContRuns checks the split of continuations into runs: sorted by
// length, cut where the padding saved outweighs a run's cost.
func TestContRuns(t *testing.T) {
	lens := func(runs [][]contRow) [][]int {
		var out [][]int
		for _, r := range runs {
			var l []int
			for _, c := range r {
				l = append(l, c.n)
			}
			out = append(out, l)
		}
		return out
	}
	for _, tc := range []struct {
		lens []int
		cost int
		want [][]int
	}{
		{nil, 8, nil},
		{[]int{5, 5, 5}, 0, [][]int{{5, 5, 5}}},
		{[]int{20, 1, 1, 1}, 8, [][]int{{1, 1, 1}, {20}}},
		{[]int{20, 1, 1, 1}, 1 << 30, [][]int{{1, 1, 1, 20}}},
		{[]int{4, 5}, 8, [][]int{{4, 5}}},
		{[]int{3, 20, 4, 19, 21, 2}, 8, [][]int{{2, 3, 4}, {19, 20, 21}}},
	} {
		var conts []contRow
		for i, n := range tc.lens {
			conts = append(conts, contRow{req: i, n: n})
		}
		if got := lens(contRuns(conts, tc.cost)); !slices.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("lengths %v, cost %d: runs %v, want %v", tc.lens, tc.cost, got, tc.want)
		}
	}
}

// mustTokenize encodes requests as LogLikelihood does.
func mustTokenize(t *testing.T, m *Model, reqs []Request) []tokenRequest {
	t.Helper()
	out := make([]tokenRequest, len(reqs))
	for i, r := range reqs {
		c, cont, err := m.EncodePair(r.Context, r.Continuation)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = tokenRequest{ctx: c, cont: cont}
	}
	return out
}

// TestForwardSessionOpensOnFirstUse: scoring that the cached decoder
// serves whole loads the weights once, into the decoder's session, and
// opens the forward graph's session only for a request it has to score
// whole (a context of its own, or Options.WholeRequests).
func TestForwardSessionOpensOnFirstUse(t *testing.T) {
	shared := []Request{{"The cat sat", " on"}, {"The cat sat", " on the mat."}, {"Two plus two is", " four"}, {"Two plus two is", " five"}}
	for _, tc := range []struct {
		name    string
		reqs    []Request
		whole   bool
		forward bool // whether the forward session is open afterwards
	}{
		{"shared contexts", shared, false, false},
		{"a context alone", append(shared[:4:4], Request{"alone", " here"}), false, true},
		{"whole requests", shared, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m := tinyModel(t, "llama", Options{BatchSize: 4, Threads: 1, WholeRequests: tc.whole})
			if m.sess != nil {
				t.Fatal("Open opened the forward session")
			}
			if _, err := m.LogLikelihood(context.Background(), tc.reqs); err != nil {
				t.Fatal(err)
			}
			if (m.sess != nil) != tc.forward {
				t.Errorf("forward session open: %v, want %v", m.sess != nil, tc.forward)
			}
			if (m.gen.sess != nil) == tc.whole {
				t.Errorf("cached decoder built: %v (%v), want %v", m.gen.sess != nil, m.gen.err, !tc.whole)
			}
		})
	}
}
