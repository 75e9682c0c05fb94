package data

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/tokenizer"
)

// TestCLBenchmark reads one task of the CL benchmark in ../shared/data and
// builds batches for it with the real Llama 2 tokenizer: generative (clm,
// the CL prompt and the label as answer) and classification (cls, class
// indices from labels.json, shared by the test split).
func TestCLBenchmark(t *testing.T) {
	dir := testenv.SharedData(t, "cl_benchmark/NLI/CB")
	tok, err := tokenizer.Load(testenv.SharedData(t, "tokenizers/llama2/tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	raw, err := os.ReadFile(filepath.Join(dir, LabelsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &labels); err != nil {
		t.Fatal(err)
	}
	train, err := Read(filepath.Join(dir, "train.json"), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if train.Kind != Classification || len(train.Records) != 250 || !slices.Equal(train.Labels, labels) {
		t.Fatalf("train: kind %s, %d records, labels %q (labels.json %q)", train.Kind, len(train.Records), train.Labels, labels)
	}
	test, err := Read(filepath.Join(dir, "test.json"), ReadOptions{Labels: train.Labels})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range test.Records {
		if labels[r.Class] != r.Label {
			t.Fatalf("test record at line %d: class %d for label %q", r.Line, r.Class, r.Label)
		}
	}

	llama := Specials{BOS: 1, EOS: 2, PAD: -1, MASK: -1, DecoderStart: -1, All: []int64{0, 1, 2}}
	t.Run("clm", func(t *testing.T) {
		enc, err := NewEncoder(tok, Config{Objective: CLM, MaxLen: 256, Specials: llama, VocabSize: 32000})
		if err != nil {
			t.Fatal(err)
		}
		ex, err := enc.Encode(train)
		if err != nil {
			t.Fatal(err)
		}
		prompt := CLPromptFor(filepath.Join(dir, "train.json"), train.Labels)
		if prompt.Task != "NLI" || prompt.Dataset != "CB" {
			t.Errorf("prompt %+v", prompt)
		}
		ld, err := NewLoader(ex, BatchOptions{BatchSize: 8, Seed: 1, Bucket: 4})
		if err != nil {
			t.Fatal(err)
		}
		batches := drain(t, ld)
		if len(batches) != 32 {
			t.Errorf("%d batches of 8 for 250 examples", len(batches))
		}
		rows := 0
		for _, b := range batches {
			if b.SeqLen > 256 {
				t.Fatalf("sequence length %d", b.SeqLen)
			}
			for r, i := range b.Items {
				rows++
				rec, it := train.Records[i], ex.Items[i]
				row := b.InputIDs[r*b.SeqLen : r*b.SeqLen+len(it.InputIDs)]
				var answer []int
				for p, l := range b.Labels[r*b.SeqLen : (r+1)*b.SeqLen] {
					if l != IgnoreIndex {
						answer = append(answer, int(l))
						if l != row[p] {
							t.Fatalf("label %d at %d differs from the input %d", l, p, row[p])
						}
					}
				}
				want, err := tok.EncodeIDs(rec.Label, false)
				if err != nil {
					t.Fatal(err)
				}
				if want = append(want, 2); !slices.Equal(answer, want) {
					t.Fatalf("record %d: the loss is on %v, want the label %q and eos %v", rec.Line, answer, rec.Label, want)
				}
				if !it.Truncated {
					p, _ := tok.Decode(intsOf(row[1:it.PromptLen]), false)
					if p != prompt.Format(rec.Sentence) {
						t.Fatalf("record %d: prompt\n%q\nwant\n%q", rec.Line, p, prompt.Format(rec.Sentence))
					}
				} else {
					p, _ := tok.Decode(intsOf(row[1:it.PromptLen]), false)
					if !strings.HasPrefix(p, "Task:NLI\nDataset:CB\n") || !strings.HasSuffix(p, "\nAnswer:") {
						t.Fatalf("record %d: truncated prompt lost its wording: %q", rec.Line, p)
					}
				}
			}
		}
		if rows != 250 {
			t.Errorf("%d rows, want 250", rows)
		}
		t.Logf("clm: %v", ex.Stats)
	})
	t.Run("cls", func(t *testing.T) {
		enc, err := NewEncoder(tok, Config{Objective: CLS, MaxLen: 128, Specials: llama, NumLabels: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, ds := range []*Dataset{train, test} {
			ex, err := enc.Encode(ds)
			if err != nil {
				t.Fatal(err)
			}
			ld, err := NewLoader(ex, BatchOptions{BatchSize: 8, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range drain(t, ld) {
				if len(b.Labels) != b.Size {
					t.Fatalf("%d labels for %d rows", len(b.Labels), b.Size)
				}
				for r, i := range b.Items {
					if b.Labels[r] != int64(ds.Records[i].Class) || labels[b.Labels[r]] != ds.Records[i].Label {
						t.Fatalf("row label %d for %q", b.Labels[r], ds.Records[i].Label)
					}
				}
			}
			t.Logf("cls %s: %v", filepath.Base(ds.Path), ex.Stats)
		}
	})
}

func intsOf(ids []int64) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}
