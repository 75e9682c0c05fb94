package eval

import (
	"context"
	_ "embed"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

//go:embed testdata/mlm_ref.py
var mlmRefScript string

// mlmRows is a small CL test file: sentences of different lengths, one
// long enough to be cut at a small max length.
var mlmRows = []map[string]string{
	{"sentence": "The team won the final match last night.", "label": "Sports"},
	{"sentence": "Stocks fell sharply after the bank report.", "label": "Business"},
	{"sentence": "A new phone was released today.", "label": "Sci/Tech"},
}

// writeCLFile writes rows as a JSON CL test file and returns its path.
func writeCLFile(t *testing.T, rows []map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "TC", "news")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(rows)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "test.json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPseudoLogLikelihoodMatchesReference scores CL rows with a tiny
// random RoBERTa by pseudo-log-likelihood and compares every candidate's
// score, and the predicted labels, with transformers' RobertaForMaskedLM
// run on the same token ids (one masked position at a time, unbatched).
func TestPseudoLogLikelihoodMatchesReference(t *testing.T) {
	labels := []string{"World", "Sports", "Business", "Sci/Tech"}
	for _, c := range []struct {
		name   string
		batch  int
		maxLen int
	}{{"batched", 5, 0}, {"truncated", 3, 24}} {
		t.Run(c.name, func(t *testing.T) {
			hf, m := tinyModel(t, "roberta", Options{BatchSize: c.batch})
			ds, err := data.Read(writeCLFile(t, mlmRows), data.ReadOptions{Kind: data.Classification})
			if err != nil {
				t.Fatal(err)
			}
			res, err := CLEvaluate(context.Background(), m, ds, CLOptions{Labels: labels, MaxLen: c.maxLen})
			if err != nil {
				t.Fatal(err)
			}
			cfg := data.ConfigFor(m.Manifest())
			if c.maxLen > 0 {
				cfg.MaxLen = c.maxLen
			}
			reqs, _, err := pllRequests(m, ds.Records, labels, data.CLPromptFor(ds.Path, labels), cfg)
			if err != nil {
				t.Fatal(err)
			}
			masked := 0
			jreqs := make([]map[string]any, len(reqs))
			for i, r := range reqs {
				jreqs[i] = map[string]any{"ids": r.ids, "positions": r.positions}
				masked += len(r.positions)
			}
			if masked <= len(reqs) {
				t.Fatalf("every label is one token (%d masked positions for %d sequences): the test would not cover multi-token labels", masked, len(reqs))
			}
			if c.maxLen > 0 && res.Truncated == 0 {
				t.Fatal("no row was truncated at max length", c.maxLen)
			}
			spec, err := json.Marshal(map[string]any{"hf": hf, "labels": len(labels), "requests": jreqs})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "spec.json")
			if err := os.WriteFile(path, spec, 0o644); err != nil {
				t.Fatal(err)
			}
			var ref struct {
				Scores []float64
				Best   []int
			}
			if out := testenv.RunPython(t, mlmRefScript, path); json.Unmarshal(out, &ref) != nil || len(ref.Scores) != len(reqs) {
				t.Fatalf("reference output: %.2000s", out)
			}
			for i, p := range res.Predictions {
				for k, lp := range p.LogProbs {
					if want := ref.Scores[i*len(labels)+k]; math.Abs(lp-want) > tolerance {
						t.Errorf("row %d label %q: PLL %.6f, reference %.6f", i, labels[k], lp, want)
					}
				}
				t.Logf("row %d: PLL %.4f (reference %.4f), predicted %q", i, p.LogProbs, ref.Scores[i*len(labels):(i+1)*len(labels)], p.Rank)
				if p.Rank != labels[ref.Best[i]] {
					t.Errorf("row %d: predicted %q, reference %q", i, p.Rank, labels[ref.Best[i]])
				}
			}
		})
	}
}

// TestMaskedLMRefusesOtherScoring checks that everything but CL rank mode
// fails on a masked-LM model with a bad-input error.
func TestMaskedLMRefusesOtherScoring(t *testing.T) {
	_, m := tinyModel(t, "roberta", Options{})
	if !m.MaskedLM() {
		t.Fatal("a roberta model folder is not masked-LM")
	}
	ctx := context.Background()
	path := writeCLFile(t, mlmRows[:1])
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"loglikelihood", func() error {
			_, err := m.LogLikelihood(ctx, []Request{{"a", " b"}})
			return err
		}},
		{"generate", func() error {
			_, err := m.Generate(ctx, []string{"a"}, GenOptions{MaxNewTokens: 2})
			return err
		}},
		{"cl generate", func() error {
			_, err := CLScores(ctx, m, path, CLOptions{Mode: CLGenerate})
			return err
		}},
		{"cl both", func() error {
			_, err := CLScores(ctx, m, path, CLOptions{Mode: CLBoth})
			return err
		}},
	} {
		err := c.run()
		if !badinput.Is(err) || !strings.Contains(err.Error(), "masked-LM") {
			t.Errorf("%s: got %v, want a masked-LM bad-input error", c.name, err)
		}
	}
	if _, err := CLScores(ctx, m, path, CLOptions{Mode: CLRank}); err != nil {
		t.Errorf("cl rank: %v", err)
	}
}
