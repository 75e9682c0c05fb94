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

// TestEvalCompletionsCLI scores a human-eval samples file without a model:
// the JSON report has pass@1 and names the sandbox level, which
// MIGU_SANDBOX picks; bad samples files, unknown tasks, an unavailable
// bubblewrap and flags that need a model get exit 2 and one line.
func TestEvalCompletionsCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	problems := write("problems.jsonl", `{"task_id": "t/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n", "test": "def check(c):\n    assert c(3) == 3\n", "entry_point": "f"}
{"task_id": "t/1", "prompt": "def g(x):\n", "canonical_solution": "    return -x\n", "test": "def check(c):\n    assert c(3) == -3\n", "entry_point": "g"}
`)
	samples := write("samples.jsonl", `{"task_id": "t/0", "completion": "    return x\n"}
{"task_id": "t/1", "completion": "    import sys,os;t=[a for a in sys.argv if a.startswith('token=')][0][6:];sys.stdout.write('\\n'+t+'\\n');sys.stdout.flush();os._exit(0)\n"}
`)
	for _, level := range []string{"auto", "fallback"} {
		t.Run(level, func(t *testing.T) {
			t.Setenv("MIGU_SANDBOX", level)
			code, out, errOut := runCLI(t, "eval", "--task", "humaneval", "--data", problems, "--completions", samples, "--json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var r struct {
				Isolation string `json:"isolation"`
				Scores    []struct {
					Metric string
					Value  float64
					N      int
				} `json:"scores"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if len(r.Scores) != 1 || r.Scores[0].Metric != "pass@1" || r.Scores[0].Value != 0.5 || r.Scores[0].N != 2 {
				t.Errorf("scores %+v, want pass@1 0.5 over 2 (the forged pass fails)", r.Scores)
			}
			if r.Isolation == "" || level == "fallback" && strings.HasPrefix(r.Isolation, "bubblewrap") {
				t.Errorf("isolation %q under MIGU_SANDBOX=%s", r.Isolation, level)
			}
		})
	}
	badLine := write("bad.jsonl", "{\"task_id\": \"t/0\", \"completion\": \"\"}\n{\"task_id\": \"t/0\"\n")
	unknown := write("unknown.jsonl", `{"task_id": "t/7", "completion": ""}`)
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"bad line", "", []string{"--completions", badLine}, badLine + ":2:"},
		{"unknown task", "", []string{"--completions", unknown}, `task_id "t/7"`},
		{"missing file", "", []string{"--completions", samples + ".nope"}, ".nope"},
		{"with a model", "", []string{"--completions", samples, "--model", dir}, "without a model"},
		{"other task", "", []string{"--completions", samples, "--task", "hellaswag"}, "--task humaneval"},
		{"bubblewrap unavailable", "bubblewrap", []string{"--completions", samples}, "MIGU_SANDBOX=bubblewrap"},
		{"unknown level", "jail", []string{"--completions", samples}, `MIGU_SANDBOX="jail"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("MIGU_SANDBOX", tc.env)
			}
			if tc.name == "bubblewrap unavailable" {
				t.Setenv("PATH", t.TempDir())
			}
			args := append([]string{"eval", "--task", "humaneval", "--data", problems}, tc.args...)
			code, _, errOut := runCLI(t, args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, errOut, tc.want)
			}
		})
	}
}
