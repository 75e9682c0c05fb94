package data

import (
	"slices"
	"testing"
)

// TestRowsRecount: the shares of a batch, whatever the split, hold its
// rows in order and add up to its token and loss-position counts, for every
// objective.
func TestRowsRecount(t *testing.T) {
	for _, c := range []struct {
		obj  Objective
		kind Kind
	}{{CLM, Text}, {CLM, Instruction}, {MLM, Text}, {Seq2Seq, Instruction}, {CLS, Classification}} {
		t.Run(string(c.obj)+"/"+string(c.kind), func(t *testing.T) {
			ex := objectiveExamples(t, c.obj, c.kind)
			l, err := NewLoader(ex, BatchOptions{BatchSize: len(ex.Items), Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			b, err := l.Next()
			if err != nil {
				t.Fatal(err)
			}
			for _, ranks := range []int{1, 2, 3, b.Size + 1} {
				var tokens, loss int
				var items []int
				for r := range ranks {
					s := b.Rows(r*b.Size/ranks, (r+1)*b.Size/ranks)
					if s.SeqLen != b.SeqLen || s.TgtLen != b.TgtLen {
						t.Fatalf("%d ranks: share %d is %d×%d, the batch %d×%d", ranks, r, s.SeqLen, s.TgtLen, b.SeqLen, b.TgtLen)
					}
					for name, f := range s.Feeds() {
						if int64(len(f.Values)) != product(f.Shape) {
							t.Fatalf("%d ranks: share %d feed %s has %d values for shape %v", ranks, r, name, len(f.Values), f.Shape)
						}
					}
					tokens += s.Tokens
					loss += s.LossTokens
					items = append(items, s.Items...)
				}
				if tokens != b.Tokens || loss != b.LossTokens || !slices.Equal(items, b.Items) {
					t.Fatalf("%d ranks: shares add to %d tokens, %d loss positions, rows %v; the batch has %d, %d, %v",
						ranks, tokens, loss, items, b.Tokens, b.LossTokens, b.Items)
				}
			}
		})
	}
}

func product(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// objectiveExamples encodes five records of kind and different lengths for
// obj with the test tokenizer (padding in every batch of them).
func objectiveExamples(t *testing.T, obj Objective, kind Kind) *Examples {
	t.Helper()
	words := []string{"a", "b c", "d e f g", "h", "p q r s t u"}
	ds := &Dataset{Path: "mem.jsonl", Kind: kind, Labels: []string{"good", "bad"}}
	for i, w := range words {
		switch kind {
		case Classification:
			ds.Records = append(ds.Records, Record{Kind: Classification, Sentence: w, Class: i % 2})
		case Text:
			ds.Records = append(ds.Records, Record{Kind: Text, Text: w + " " + w})
		default:
			ds.Records = append(ds.Records, Record{Kind: Instruction, Instruction: w, Output: words[len(words)-1-i]})
		}
	}
	enc, err := NewEncoder(wordTokenizer(t), testConfig(obj, 64))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := enc.Encode(ds)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}
