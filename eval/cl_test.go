package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/testenv"
)

// clRefScript scores token sequences with transformers: for each request
// the sum of log-probabilities of the answer tokens (causal: ids[n:] after
// ids[:n]; seq2seq: the target after the encoder input).
const clRefScript = `
import json, sys
import torch, transformers
spec = json.load(open(sys.argv[1]))
cfg = transformers.AutoConfig.from_pretrained(spec["hf"])
seq2seq = cfg.model_type == "t5"
cls = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
model = cls.from_pretrained(spec["hf"]).eval()
out = []
with torch.no_grad():
    for r in spec["requests"]:
        if seq2seq:
            enc = torch.tensor([r["ctx"]])
            tgt = torch.tensor([r["cont"]])
            logits = model(input_ids=enc, labels=tgt).logits[0]
            lp = torch.log_softmax(logits.double(), -1)
            out.append(float(sum(lp[i, t] for i, t in enumerate(r["cont"]))))
        else:
            ids = r["ctx"] + r["cont"]
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits.double(), -1)
            n = len(r["ctx"])
            out.append(float(sum(lp[n + i - 1, t] for i, t in enumerate(r["cont"]))))
print(json.dumps(out))
`

// clRows writes a small classification file with three labels.
func clRows(t *testing.T) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "SC", "toy")
	os.MkdirAll(dir, 0o755)
	labels := []string{"positive", "negative", "neutral"}
	rows := []map[string]string{
		{"sentence": "the film was a joy from start to end", "label": "positive"},
		{"sentence": "dull and far too long", "label": "negative"},
		{"sentence": "it was a film", "label": "neutral"},
		{"sentence": "I would see it again", "label": "positive"},
		{"sentence": "the sound was broken", "label": "negative"},
	}
	raw, _ := json.Marshal(rows)
	os.WriteFile(filepath.Join(dir, "test.json"), raw, 0o644)
	lab, _ := json.Marshal(labels)
	os.WriteFile(filepath.Join(dir, data.LabelsFile), lab, 0o644)
	return filepath.Join(dir, "test.json"), labels
}

// Rank classification picks, for every row, the label transformers gives
// the highest log-likelihood, with each label's log-likelihood (label and
// end of sequence after the training prompt) equal to transformers'
// within 1e-4, for a causal and a seq2seq model.
func TestCLRankMatchesTransformers(t *testing.T) {
	for _, arch := range []string{"llama", "t5"} {
		t.Run(arch, func(t *testing.T) {
			hf, m := tinyModel(t, arch, Options{BatchSize: 3})
			path, labels := clRows(t)
			res, err := CLEvaluate(context.Background(), m, mustRead(t, path), CLOptions{Mode: CLRank})
			if err != nil {
				t.Fatal(err)
			}
			// The requests as training encodes them.
			ds := mustRead(t, path)
			cfg := data.ConfigFor(m.Manifest())
			enc, err := data.NewEncoder(m.Tokenizer(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			prompt := data.CLPromptFor(path, labels)
			if prompt.Task != "SC" || !strings.Contains(prompt.Format("x"), "Option: positive, negative, neutral \n") {
				t.Fatalf("prompt %q", prompt.Format("x"))
			}
			var reqs []map[string][]int32
			for _, r := range ds.Records {
				for _, l := range labels {
					rec := r
					rec.Label = l
					ex, err := enc.EncodeRecord(&rec, prompt)
					if err != nil {
						t.Fatal(err)
					}
					if m.Seq2Seq() {
						reqs = append(reqs, map[string][]int32{"ctx": ex.InputIDs, "cont": ex.Target})
					} else {
						reqs = append(reqs, map[string][]int32{"ctx": ex.InputIDs[:ex.PromptLen], "cont": ex.InputIDs[ex.PromptLen:]})
					}
				}
			}
			spec, _ := json.Marshal(map[string]any{"hf": hf, "requests": reqs})
			specPath := filepath.Join(t.TempDir(), "spec.json")
			os.WriteFile(specPath, spec, 0o644)
			var ref []float64
			if err := json.Unmarshal(testenv.RunPython(t, clRefScript, specPath), &ref); err != nil {
				t.Fatal(err)
			}
			correct := 0
			for i, p := range res.Predictions {
				best := 0
				for k := range labels {
					if d := math.Abs(p.LogProbs[k] - ref[i*len(labels)+k]); d > 1e-4 {
						t.Errorf("row %d label %q: log-likelihood %v, transformers %v", i, labels[k], p.LogProbs[k], ref[i*len(labels)+k])
					}
					if ref[i*len(labels)+k] > ref[i*len(labels)+best] {
						best = k
					}
				}
				if p.Rank != labels[best] {
					t.Errorf("row %d: ranked %q, transformers %q", i, p.Rank, labels[best])
				}
				if labels[best] == p.Gold {
					correct++
				}
			}
			if res.RankCorrect != correct || res.N != 5 || res.ExactCorrect != -1 {
				t.Errorf("result %d/%d correct (exact %d), want %d/5", res.RankCorrect, res.N, res.ExactCorrect, correct)
			}
			scores, err := CLScores(context.Background(), m, path, CLOptions{})
			if err != nil || len(scores) != 1 || scores[0].Metric != MetricCLRank || scores[0].Task != "cl:toy" || scores[0].Value != float64(correct)/5 {
				t.Errorf("CLScores: %+v %v", scores, err)
			}
		})
	}
}

// Generation mode compares the greedy answer, up to a new line, with the
// label; both modes together give both metrics with lm-eval's stderr.
func TestCLGenerate(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{})
	path, labels := clRows(t)
	ds := mustRead(t, path)
	res, err := CLEvaluate(context.Background(), m, ds, CLOptions{Mode: CLBoth, Limit: 3, MaxNewTokens: 6})
	if err != nil {
		t.Fatal(err)
	}
	if res.N != 3 || res.RankCorrect < 0 || res.ExactCorrect < 0 {
		t.Fatalf("%+v", res)
	}
	prompt := data.CLPromptFor(path, labels)
	for i, p := range res.Predictions {
		gens, err := m.Generate(context.Background(), []string{prompt.Format(ds.Records[i].Sentence)}, GenOptions{MaxNewTokens: 6, Stop: []string{"\n"}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(gens[0].Text) != p.Generated {
			t.Errorf("row %d: generated %q, Generate gives %q", i, p.Generated, gens[0].Text)
		}
	}
	scores, err := CLScores(context.Background(), m, path, CLOptions{Mode: CLBoth})
	if err != nil || len(scores) != 2 || scores[1].Metric != MetricCLExact || scores[0].N != 5 {
		t.Fatalf("%+v %v", scores, err)
	}
	// stderr of k right out of n: sqrt(p(1-p)·n/(n-1)/n).
	p := scores[0].Value
	if want := math.Sqrt(p * (1 - p) / 4); math.Abs(scores[0].Stderr-want) > 1e-12 {
		t.Errorf("stderr %v, want %v", scores[0].Stderr, want)
	}
	for _, bad := range []string{"best", "Rank"} {
		if _, err := CLEvaluate(context.Background(), m, ds, CLOptions{Mode: bad}); err == nil {
			t.Errorf("mode %q accepted", bad)
		}
	}
}

func mustRead(t *testing.T, path string) *data.Dataset {
	t.Helper()
	ds, err := data.Read(path, data.ReadOptions{Kind: data.Classification})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func BenchmarkCLRank(b *testing.B) {
	_, m := tinyModel(b, "llama", Options{})
	dir := filepath.Join(b.TempDir(), "SC", "toy")
	os.MkdirAll(dir, 0o755)
	var rows []map[string]string
	for i := range 64 {
		rows = append(rows, map[string]string{"sentence": strings.Repeat("word ", 10+i%20), "label": []string{"yes", "no"}[i%2]})
	}
	raw, _ := json.Marshal(rows)
	os.WriteFile(filepath.Join(dir, "test.json"), raw, 0o644)
	ds, err := data.Read(filepath.Join(dir, "test.json"), data.ReadOptions{Kind: data.Classification})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := CLEvaluate(context.Background(), m, ds, CLOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
}
