package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
)

// evalRows are small task files under their standard names.
var evalRows = map[string]string{
	"hellaswag_validation.jsonl": `{"activity_label": "Roofing", "ctx": "A man is on a roof. he", "endings": ["removes shingles.", "eats a cake.", "sings.", "flies away."], "label": 0}
{"activity_label": "Baking", "ctx_a": "A woman mixes flour.", "ctx_b": "she", "endings": ["adds eggs.", "drives a car.", "jumps.", "reads."], "label": "0"}
{"activity_label": "Running", "ctx": "A boy runs. he", "endings": ["stops.", "flies.", "swims.", "cooks."], "label": 0}
`,
	"arc_challenge_test.jsonl": `{"question": "Which is hot?", "choices": {"text": ["ice", "fire", "snow"], "label": ["A", "B", "C"]}, "answerKey": "B"}
{"question": "Which is wet?", "choices": {"text": ["water", "sand"], "label": ["1", "2"]}, "answerKey": "1"}
`,
	"winogrande_xl_validation.jsonl": `{"sentence": "Ann beat Bo because _ was faster.", "option1": "Ann", "option2": "Bo", "answer": "1"}
{"sentence": "The cup broke the plate since _ was hard.", "option1": "cup", "option2": "plate", "answer": "1"}
`,
}

func evalDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, rows := range evalRows {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(rows), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type evalJSON struct {
	Model  string `json:"model"`
	Scores []struct {
		Task, Metric  string
		Value, Stderr *float64
		N             int
	} `json:"scores"`
	Compare *evalJSON `json:"compare"`
	Diff    []struct {
		Task, Metric       string
		Base, Other, Delta float64
	} `json:"diff"`
}

func TestEvalCLI(t *testing.T) {
	testenv.ORTLib(t)
	_, llama := testfix.TinyModel(t, "llama")
	_, t5 := testfix.TinyModel(t, "t5")
	data := evalDataDir(t)

	// One task, as a table.
	code, out, errOut := runCLI(t, "eval", "--model", llama, "--task", "hellaswag", "--data", filepath.Join(data, "hellaswag_validation.jsonl"), "--threads", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"task", "hellaswag  acc ", "hellaswag  acc_norm", "  3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "hellaswag: 3 items, 12 requests") {
		t.Errorf("log lacks the task line:\n%s", errOut)
	}

	// Per-item samples: one line per item with a log-likelihood per choice.
	samples := filepath.Join(t.TempDir(), "samples.jsonl")
	code, _, errOut = runCLI(t, "eval", "--model", llama, "--task", "arc_challenge", "--data", filepath.Join(data, "arc_challenge_test.jsonl"), "--threads", "1", "--log-samples", samples)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	logged, err := os.ReadFile(samples)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(logged)), "\n")
	var first struct {
		Task    string
		Line    int
		Gold    int
		Logliks []float64
	}
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || first.Task != "arc_challenge" || first.Gold != 1 || len(first.Logliks) != 3 || first.Line != 1 {
		t.Errorf("samples %+v from:\n%s", first, logged)
	}

	// The suite as JSON: each score plus the average of the papers' metrics.
	code, out, errOut = runCLI(t, "eval", "--model", llama, "--tasks", "hellaswag,arc_challenge,winogrande", "--data-dir", data, "--json", "--limit", "2", "--threads", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep evalJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	vals := map[string]float64{}
	for _, s := range rep.Scores {
		vals[s.Task+"/"+s.Metric] = *s.Value
		if s.N != 2 && s.Task != "suite" {
			t.Errorf("%s %s: n = %d, want 2 (--limit 2)", s.Task, s.Metric, s.N)
		}
	}
	avg := (vals["hellaswag/acc_norm"] + vals["arc_challenge/acc_norm"] + vals["winogrande/acc"]) / 3
	if len(rep.Scores) != 6 || math.Abs(vals["suite/average"]-avg) > 1e-12 {
		t.Errorf("scores %v: want 5 task rows and the average %v", vals, avg)
	}

	// Two models compared: differences per metric.
	code, out, errOut = runCLI(t, "eval", "--model", llama, "--compare", t5, "--tasks", "winogrande", "--data-dir", data, "--json", "--threads", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rep = evalJSON{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Compare == nil || rep.Compare.Model != t5 || len(rep.Diff) != 2 {
		t.Fatalf("compare report %s", out)
	}
	for _, d := range rep.Diff {
		if math.Abs(d.Delta-(d.Other-d.Base)) > 1e-12 {
			t.Errorf("diff %+v", d)
		}
	}
	code, out, _ = runCLI(t, "eval", "--model", llama, "--compare", t5, "--tasks", "winogrande", "--data-dir", data, "--threads", "1")
	if code != 0 || !strings.Contains(out, "delta") || !strings.Contains(out, "suite       average") {
		t.Errorf("compare table (exit %d):\n%s", code, out)
	}
}

func TestEvalCLIBadInput(t *testing.T) {
	testenv.ORTLib(t)
	_, llama := testfix.TinyModel(t, "llama")
	data := evalDataDir(t)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(evalRows["arc_challenge_test.jsonl"]+`{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"}`+"\n"), 0o644)
	noTok := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(noTok, os.DirFS(llama)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(noTok, modeldir.TokenizerFile))
	hs := filepath.Join(data, "hellaswag_validation.jsonl")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no model", []string{"eval", "--task", "hellaswag", "--data", hs}, "--model"},
		{"no task", []string{"eval", "--model", llama}, "--task"},
		{"unknown task", []string{"eval", "--model", llama, "--task", "mmlu", "--data", hs}, `unknown --task "mmlu"`},
		{"no data", []string{"eval", "--model", llama, "--task", "hellaswag"}, "--data"},
		{"missing data", []string{"eval", "--model", llama, "--task", "hellaswag", "--data", hs + ".nope"}, ".nope"},
		{"suite without dir", []string{"eval", "--model", llama, "--tasks", "hellaswag"}, "--data-dir"},
		{"suite missing file", []string{"eval", "--model", llama, "--tasks", "arc_challenge", "--data-dir", t.TempDir()}, "arc_challenge_test.jsonl"},
		{"gold outside", []string{"eval", "--model", llama, "--task", "arc_challenge", "--data", bad}, bad + ":3:"},
		{"no tokenizer", []string{"eval", "--model", noTok, "--task", "hellaswag", "--data", hs}, "no tokenizer.json"},
		{"both compares", []string{"eval", "--model", llama, "--task", "hellaswag", "--data", hs, "--compare", llama, "--compare-adapter", llama}, "not both"},
		{"bad batch", []string{"eval", "--model", llama, "--task", "hellaswag", "--data", hs, "--batch-size", "0"}, "--batch-size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, errOut, tc.want)
			}
		})
	}
}
