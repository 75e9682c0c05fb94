package eval

import (
	"context"
	"math"
	"runtime"
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

// TestSharedCacheMemory: shared-context scoring through kvBuffers (the
// context's presents written by ORT into kept memory, each continuation's
// rows copied there) gives bit for bit the scores of the way generation
// keeps rows (presents copied out by Session.Run, rows into new slices),
// and a second pass over the same requests allocates at least the
// continuations' key/value rows less in Go than that way does: the
// buffers are reused, not allocated again.
func TestSharedCacheMemory(t *testing.T) {
	var reqs []Request
	for _, c := range []string{"The cat sat", "Question: what is two plus two?\nAnswer:", strings.Repeat("a long shared context ", 6), "Another context, longer than the first"} {
		for _, cont := range []string{" on", " on the mat.", " quietly by the window, watching the birds go by", " four"} {
			reqs = append(reqs, Request{c, cont})
		}
	}
	_, m := tinyModel(t, "llama", Options{BatchSize: 8, Threads: 1})
	allocated := func(goCopy bool) ([]Result, uint64) {
		m.kvThroughGo = goCopy
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
	want, viaGo := allocated(true)
	got, kept := allocated(false)
	if m.gen.sess == nil || len(m.gen.kv.rows) == 0 {
		t.Fatalf("the shared-context path did not run (%v)", m.gen.err)
	}
	for i := range reqs {
		if got[i] != want[i] {
			t.Errorf("request %d %q: through kept buffers %+v, through Go copies %+v", i, reqs[i], got[i], want[i])
		}
	}
	var rows uint64
	for _, r := range m.gen.kv.rows {
		rows += 4 * uint64(len(r))
	}
	// Each batch's rows are at most the largest batch's, which the
	// buffers hold; there are at least two batches.
	if kept+rows > viaGo {
		t.Errorf("a pass allocated %d bytes through kept buffers, %d through Go copies: not the %d bytes of the largest batch's rows less", kept, viaGo, rows)
	}
	t.Logf("a pass allocated %d bytes through kept buffers, %d through Go copies (largest batch's rows: %d bytes)", kept, viaGo, rows)
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
