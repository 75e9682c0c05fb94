package data

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// textExamples encodes n text records of random lengths (1..maxWords words).
func textExamples(t testing.TB, obj Objective, n, maxWords int) *Examples {
	t.Helper()
	tok := wordTokenizer(t)
	rng := rand.New(rand.NewPCG(1, 2))
	words := testWords[:26]
	recs := make([]Record, n)
	for i := range recs {
		w := make([]string, 1+rng.IntN(maxWords))
		for j := range w {
			w[j] = words[rng.IntN(len(words))]
		}
		recs[i] = Record{Kind: Text, Text: strings.Join(w, " "), Line: i + 1}
	}
	enc, err := NewEncoder(tok, testConfig(obj, 512))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := enc.Encode(&Dataset{Path: "mem", Kind: Text, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func newLoader(t testing.TB, ex *Examples, opt BatchOptions) *Loader {
	t.Helper()
	ld, err := NewLoader(ex, opt)
	if err != nil {
		t.Fatal(err)
	}
	return ld
}

// order lists the example indices of batches, batch by batch.
func order(batches []*Batch) [][]int {
	out := make([][]int, len(batches))
	for i, b := range batches {
		out[i] = b.Items
	}
	return out
}

func TestShuffle(t *testing.T) {
	ex := textExamples(t, CLM, 103, 20)
	for _, bucket := range []int{0, 4} {
		t.Run(fmt.Sprintf("bucket %d", bucket), func(t *testing.T) {
			opt := BatchOptions{BatchSize: 8, Seed: 7, Epochs: 3, Bucket: bucket}
			a := drain(t, newLoader(t, ex, opt))
			b := drain(t, newLoader(t, ex, opt))
			if !reflect.DeepEqual(a, b) {
				t.Fatal("the same seed gave different batches")
			}
			per := 13 // ceil(103/8)
			if len(a) != 3*per {
				t.Fatalf("%d batches, want %d", len(a), 3*per)
			}
			for e := range 3 {
				var seen []int
				for _, batch := range a[e*per : (e+1)*per] {
					seen = append(seen, batch.Items...)
				}
				slices.Sort(seen)
				for i, v := range seen {
					if v != i {
						t.Fatalf("epoch %d does not visit every example once: %v", e, seen)
					}
				}
			}
			if reflect.DeepEqual(order(a[:per]), order(a[per:2*per])) {
				t.Error("two epochs in the same order")
			}
			opt.Seed = 8
			if reflect.DeepEqual(order(a), order(drain(t, newLoader(t, ex, opt)))) {
				t.Error("another seed gave the same order")
			}
		})
	}
	got := order(drain(t, newLoader(t, ex, BatchOptions{BatchSize: 50, NoShuffle: true})))
	if len(got) != 3 || got[0][0] != 0 || got[1][0] != 50 || len(got[2]) != 3 || got[2][2] != 102 {
		t.Errorf("unshuffled order %v", got)
	}
	if n := len(drain(t, newLoader(t, ex, BatchOptions{BatchSize: 50, DropLast: true}))); n != 2 {
		t.Errorf("DropLast: %d batches, want 2", n)
	}
}

func TestBucketingCutsPadding(t *testing.T) {
	ex := textExamples(t, CLM, 1000, 60)
	padding := func(bucket int) int {
		total := 0
		for _, b := range drain(t, newLoader(t, ex, BatchOptions{BatchSize: 8, Seed: 3, Bucket: bucket})) {
			total += b.Size*b.SeqLen - b.Tokens
		}
		return total
	}
	plain, bucketed := padding(0), padding(16)
	if bucketed*3 > plain {
		t.Errorf("padding %d with buckets of 16 batches, %d without: want at least 3× less", bucketed, plain)
	}
	t.Logf("padding tokens: %d without bucketing, %d with", plain, bucketed)
}

func TestResume(t *testing.T) {
	for _, obj := range []Objective{CLM, MLM} {
		ex := textExamples(t, obj, 37, 12)
		opt := BatchOptions{BatchSize: 4, Seed: 11, Epochs: 3, Bucket: 2}
		all := drain(t, newLoader(t, ex, opt))
		per := 10
		for _, k := range []int{0, 1, 9, 10, 11, 25, 30} {
			t.Run(fmt.Sprintf("%s after %d", obj, k), func(t *testing.T) {
				first := newLoader(t, ex, opt)
				for range k {
					if _, err := first.Next(); err != nil {
						t.Fatal(err)
					}
				}
				raw, err := first.State()
				if err != nil {
					t.Fatal(err)
				}
				var st State
				json.Unmarshal(raw, &st)
				if want := (State{Epoch: k / per, Index: k % per, Seed: 11, Examples: 37}); st != want {
					t.Errorf("state %+v, want %+v", st, want)
				}
				resumed := newLoader(t, ex, opt)
				if err := resumed.Restore(raw); err != nil {
					t.Fatal(err)
				}
				if rest := drain(t, resumed); len(rest) != len(all)-k || len(rest) > 0 && !reflect.DeepEqual(rest, all[k:]) {
					t.Errorf("a resumed loader gives other batches (%d vs %d)", len(rest), len(all)-k)
				}
			})
		}
	}
	ex := textExamples(t, CLM, 37, 12)
	ld := newLoader(t, ex, BatchOptions{BatchSize: 4, Seed: 1})
	for _, c := range []struct {
		state State
		want  string
	}{
		{State{Seed: 2}, "saved with seed 2, this run uses seed 1"},
		{State{Seed: 1, Examples: 36}, "saved for 36 examples, this data has 37"},
		{State{Seed: 1, Index: 11}, "outside the 10 batches"},
	} {
		raw, _ := json.Marshal(c.state)
		if err := ld.Restore(raw); !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("restore %+v: %v", c.state, err)
		}
	}
	if err := ld.Restore(json.RawMessage(`{"epoch": "x"}`)); !badinput.Is(err) {
		t.Errorf("restore of bad JSON: %v", err)
	}
	// The end of an epoch is the start of the next.
	ld.Restore(json.RawMessage(`{"epoch": 0, "index": 10, "seed": 1}`))
	if p := ld.Position(); p.Epoch != 1 || p.Index != 0 {
		t.Errorf("position %+v after restoring the end of epoch 0", p)
	}
	if _, err := ld.Next(); err != io.EOF {
		t.Errorf("one epoch: Next after it gives %v, want io.EOF", err)
	}
}

func TestMLMMasking(t *testing.T) {
	ex := textExamples(t, MLM, 2000, 100)
	batches := drain(t, newLoader(t, ex, BatchOptions{BatchSize: 16, Seed: 5}))
	var candidates, chosen, masked, random, kept int
	for _, b := range batches {
		for r, i := range b.Items {
			orig := ex.Items[i].InputIDs
			for p := range b.SeqLen {
				k := r*b.SeqLen + p
				if p >= len(orig) {
					if b.Labels[k] != IgnoreIndex || b.InputIDs[k] != tPad {
						t.Fatalf("padding position chosen or changed")
					}
					continue
				}
				special := orig[p] <= tMask
				if !special {
					candidates++
				}
				if b.Labels[k] == IgnoreIndex {
					if b.InputIDs[k] != int64(orig[p]) {
						t.Fatalf("an unchosen position changed")
					}
					continue
				}
				if special {
					t.Fatalf("special token %d chosen", orig[p])
				}
				if b.Labels[k] != int64(orig[p]) {
					t.Fatalf("label %d, want the original %d", b.Labels[k], orig[p])
				}
				chosen++
				switch b.InputIDs[k] {
				case tMask:
					masked++
				case int64(orig[p]):
					kept++
				default:
					random++
				}
			}
		}
	}
	share := func(n, of int) float64 { return float64(n) / float64(of) }
	t.Logf("%d candidates, %.4f chosen; of those %.4f masked, %.4f random, %.4f kept",
		candidates, share(chosen, candidates), share(masked, chosen), share(random, chosen), share(kept, chosen))
	// 100k candidates: three standard deviations of each share are below
	// the tolerances. A random token equal to the original counts as kept
	// (1 in VocabSize = 1000).
	for _, c := range []struct {
		name      string
		got, want float64
		tol       float64
	}{
		{"chosen", share(chosen, candidates), 0.15, 0.005},
		{"masked", share(masked, chosen), 0.8, 0.015},
		{"random", share(random, chosen), 0.1, 0.01},
		{"kept", share(kept, chosen), 0.1, 0.01},
	} {
		if math.Abs(c.got-c.want) > c.tol {
			t.Errorf("%s share %.4f, want %.2f ± %.3f", c.name, c.got, c.want, c.tol)
		}
	}
	if candidates < 90000 {
		t.Errorf("only %d candidate tokens", candidates)
	}

	// Deterministic for a seed; another epoch or seed masks differently.
	small := textExamples(t, MLM, 40, 30)
	opt := BatchOptions{BatchSize: 8, Seed: 5, Epochs: 2}
	a, b := drain(t, newLoader(t, small, opt)), drain(t, newLoader(t, small, opt))
	if !reflect.DeepEqual(a, b) {
		t.Error("the same seed masked differently")
	}
	ld := newLoader(t, small, BatchOptions{BatchSize: 40, NoShuffle: true, Epochs: 2})
	e0, _ := ld.Next()
	e1, _ := ld.Next()
	if reflect.DeepEqual(e0.Labels, e1.Labels) {
		t.Error("two epochs masked the same positions")
	}
	if !reflect.DeepEqual(ld.Build(e0.Items, 0), e0) {
		t.Error("Build of the same rows and epoch differs")
	}
}

func TestPadMultiple(t *testing.T) {
	tok := wordTokenizer(t)
	ds := &Dataset{Path: "m", Kind: Instruction, Records: []Record{{Kind: Instruction, Prompt: "a b c", Output: "x"}}}
	cases := []struct {
		maxLen, multiple, want int
	}{
		{64, 0, 6}, {64, 8, 8}, {64, 3, 6}, {7, 8, 7},
	}
	for _, c := range cases {
		enc, _ := NewEncoder(tok, testConfig(CLM, c.maxLen))
		ex, err := enc.Encode(ds)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := newLoader(t, ex, BatchOptions{BatchSize: 1, PadMultiple: c.multiple}).Next()
		if b.SeqLen != c.want || len(b.InputIDs) != c.want || b.AttentionMask[c.want-1] != int64(btoi(c.want == 6)) {
			t.Errorf("max %d multiple %d: length %d, want %d", c.maxLen, c.multiple, b.SeqLen, c.want)
		}
	}
}

func TestLoaderOptions(t *testing.T) {
	ex := textExamples(t, CLM, 5, 3)
	for _, opt := range []BatchOptions{{BatchSize: 0}, {BatchSize: 6, DropLast: true}, {BatchSize: 2, Bucket: -1}} {
		if _, err := NewLoader(ex, opt); !badinput.Is(err) {
			t.Errorf("options %+v: %v", opt, err)
		}
	}
	ld := newLoader(t, ex, BatchOptions{BatchSize: 2, Epochs: -1})
	for range 100 {
		if _, err := ld.Next(); err != nil {
			t.Fatalf("Epochs -1 ended: %v", err)
		}
	}
	if p := ld.Position(); p.Epoch != 33 || p.Index != 1 {
		t.Errorf("position %+v after 100 batches of 3 a epoch", p)
	}
}

func TestFeeds(t *testing.T) {
	cases := []struct {
		b    Batch
		want map[string][]int64
	}{
		{Batch{Objective: CLM, Size: 2, SeqLen: 3}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3}, "labels": {2, 3}}},
		{Batch{Objective: MLM, Size: 2, SeqLen: 3}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3}, "labels": {2, 3}}},
		{Batch{Objective: CLS, Size: 2, SeqLen: 1}, map[string][]int64{"input_ids": {2, 1}, "attention_mask": {2, 1}, "labels": {2}}},
		{Batch{Objective: Seq2Seq, Size: 2, SeqLen: 3, TgtLen: 4}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3},
			"labels": {2, 4}, "decoder_input_ids": {2, 4}, "decoder_attention_mask": {2, 4}}},
		// Hand-made batches without an objective: inferred from the shapes.
		{Batch{Size: 2, SeqLen: 3, Labels: make([]int64, 6)}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3}, "labels": {2, 3}}},
		{Batch{Size: 2, SeqLen: 3, Labels: make([]int64, 2)}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3}, "labels": {2}}},
		{Batch{Size: 2, SeqLen: 3, TgtLen: 4}, map[string][]int64{"input_ids": {2, 3}, "attention_mask": {2, 3},
			"labels": {2, 4}, "decoder_input_ids": {2, 4}, "decoder_attention_mask": {2, 4}}},
	}
	for _, c := range cases {
		got := map[string][]int64{}
		for name, f := range c.b.Feeds() {
			got[name] = f.Shape
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s batch: feeds %v, want %v", c.b.Objective, got, c.want)
		}
	}
}
