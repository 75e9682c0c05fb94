package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataCodeInstructions(t *testing.T) {
	src := t.TempDir()
	code := "class A:\n    @property\n    def size(self):\n        \"\"\"The size of the thing,\n        in bytes.\"\"\"\n        n = len(self.data)\n        return n\n\n\ndef _hidden():\n    \"\"\"Not exported.\"\"\"\n    a = 1\n    return a\n"
	if err := os.WriteFile(filepath.Join(src, "mod.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "code.jsonl")
	status, stdout, stderr := runCLI(t, "data", "code-instructions", "--from", src, "--out", out)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	if !strings.Contains(stdout, "wrote 1 of 1 records") || !strings.Contains(stdout, "1 private") {
		t.Errorf("output:\n%s", stdout)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r map[string]string
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	want := map[string]string{"instruction": "The size of the thing,\nin bytes.", "input": "@property\ndef size(self):",
		"output": "    n = len(self.data)\n    return n", "source": "mod.py:3"}
	if len(recs) != 1 || len(recs[0]) != len(want) {
		t.Fatalf("records %v", recs)
	}
	for k, v := range want {
		if recs[0][k] != v {
			t.Errorf("%s = %q, want %q", k, recs[0][k], v)
		}
	}
	// The file trains: migu train reads it as instruction records (checked
	// by data's tests); here the JSON summary.
	status, stdout, _ = runCLI(t, "data", "code-instructions", "--from", src, "--out", out, "--keep-private", "--json")
	var sum struct {
		Stats struct {
			Written int `json:"written"`
		} `json:"stats"`
	}
	if status != 0 || json.Unmarshal([]byte(stdout), &sum) != nil || sum.Stats.Written != 2 {
		t.Errorf("--json: exit %d, %q", status, stdout)
	}
}

func TestDataTasks(t *testing.T) {
	out := t.TempDir()
	status, stdout, stderr := runCLI(t, "data", "tasks", "--out", out, "--tasks", "wordsent,majority", "--train", "20", "--test", "10")
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	for _, p := range []string{"SC/wordsent/train.json", "SC/wordsent/test.json", "SC/wordsent/labels.json", "SYN/majority/train.json"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(stdout, "wordsent") {
		t.Errorf("output %q", stdout)
	}
	var recs []struct{ Sentence, Label string }
	raw, _ := os.ReadFile(filepath.Join(out, "SC/wordsent/train.json"))
	if err := json.Unmarshal(raw, &recs); err != nil || len(recs) != 20 {
		t.Errorf("train.json: %d records, %v", len(recs), err)
	}
}

func TestDataBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"data", "code-instructions", "--out", "x.jsonl"}, "needs --from DIR and --out"},
		{[]string{"data", "code-instructions", "--from", filepath.Join(dir, "nope"), "--out", filepath.Join(dir, "x.jsonl")}, "no such file"},
		{[]string{"data", "code-instructions", "--from", dir, "--out", filepath.Join(dir, "x.jsonl")}, "no documented functions matched"},
		{[]string{"data", "code-instructions", "--from", dir, "--out", filepath.Join(dir, "x.jsonl"), "--format", "xml"}, `unknown --format "xml"`},
		{[]string{"data", "code-instructions", "--from", dir, "--out", filepath.Join(dir, "x.jsonl"), "--limit", "-2"}, "negative"},
		{[]string{"data", "tasks"}, "needs --out"},
		{[]string{"data", "tasks", "--out", dir, "--tasks", "chess"}, `unknown generated task "chess"`},
		{[]string{"data", "tasks", "--out", dir, "--train", "x"}, "invalid argument"},
	} {
		status, _, stderr := runCLI(t, tc.args...)
		if status != 2 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", tc.args, status, stderr, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.jsonl")); err == nil {
		t.Error("a failed run left its output behind")
	}
}

// TestInitCorpusFlag: --corpus trains the tokenizer on the given lines (a
// word repeated there becomes one token), and an empty corpus is bad input.
func TestInitCorpusFlag(t *testing.T) {
	dir := t.TempDir()
	corpus := filepath.Join(dir, "corpus.txt")
	os.WriteFile(corpus, []byte(strings.Repeat("the quokka jumps over the quokka\n", 300)), 0o644)
	out := filepath.Join(dir, "hf")
	status, _, stderr := runCLI(t, "init", "--arch", "llama", "--preset", "tiny", "--corpus", corpus, "--vocab-size", "300", "--out", out)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	raw, err := os.ReadFile(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\"▁quokka\"") {
		t.Error("the corpus word is not a token of the trained tokenizer")
	}
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, []byte("\n\n"), 0o644)
	status, _, stderr = runCLI(t, "init", "--arch", "llama", "--corpus", empty, "--out", filepath.Join(dir, "hf2"))
	if status != 2 || !strings.Contains(stderr, "the corpus is empty") {
		t.Errorf("empty corpus: exit %d, %q", status, stderr)
	}
}

// TestInitPresetAndDType: --dtype reaches the file and the summary line;
// presets an architecture lacks and unknown dtypes are one-line bad input.
func TestInitPresetAndDType(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{"--arch", "llama", "--preset", "tiny", "--dtype", "bf16", "--vocab-size", "600"}, 0, "parameters (BF16)"},
		{[]string{"--arch", "t5", "--preset", "7b"}, 2, `t5 has no preset "7b" (presets: tiny, small)`},
		{[]string{"--arch", "llama", "--preset", "tiny", "--dtype", "f8"}, 2, `unknown dtype "f8"`},
	}
	for i, c := range cases {
		out := filepath.Join(dir, fmt.Sprint(i))
		status, stdout, stderr := runCLI(t, append([]string{"init", "--out", out}, c.args...)...)
		if status != c.status || !strings.Contains(stdout+stderr, c.want) {
			t.Errorf("%v: exit %d, %q %q; want %d and %q", c.args, status, stdout, stderr, c.status, c.want)
		}
		if _, err := os.Stat(out); (err == nil) != (c.status == 0) {
			t.Errorf("%v: output folder present %v after exit %d", c.args, err == nil, status)
		}
	}
}
