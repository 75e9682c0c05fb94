package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

func TestGenerateCLI(t *testing.T) {
	dir := tinyModelDir(t, "llama")
	lib := testenv.ORTLib(t)
	generate := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"generate", "--ort-lib", lib, "--model", dir}, args...)...)
	}
	code, cached, errOut := generate("--prompt", "Once upon a time", "--max-new-tokens", "12")
	if code != 0 || !strings.Contains(errOut, "tokens/s") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, full, errOut := generate("--prompt", "Once upon a time", "--max-new-tokens", "12", "--no-cache")
	if code != 0 || full != cached {
		t.Errorf("--no-cache: exit %d %q, cached %q (%s)", code, full, cached, errOut)
	}

	code, out, errOut := generate("--prompt", "a", "--prompt", "bcd", "--max-new-tokens", "5",
		"--temperature", "0.9", "--top-p", "0.9", "--seed", "3", "--stop", `\n`, "--json")
	var rows []struct {
		Prompt, Text, Reason string
		Tokens               int
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 {
		t.Fatalf("--json: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, r := range rows {
		if r.Tokens > 5 || r.Reason == "" || strings.Contains(r.Text, "\n") {
			t.Errorf("row %+v breaks --max-new-tokens 5 or --stop \\n", r)
		}
	}

	for _, bad := range [][]string{
		{"--max-new-tokens", "12"}, // no prompt
		{"--prompt", "x", "--temperature", "-1"},
		{"--prompt", "x", "--top-p", "2"},
		{"--prompt", "x", "--stop", `\q`},
		{"--prompt", "x", "--max-new-tokens", "-3"},
	} {
		if code, _, errOut := generate(bad...); code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, want 2 with one line:\n%s", bad, code, errOut)
		}
	}
	if code, _, errOut := runCLI(t, "generate", "--ort-lib", lib, "--model", tinyModelDir(t, "roberta"), "--prompt", "x"); code != 2 {
		t.Errorf("roberta: exit %d, want 2: %s", code, errOut)
	}
}

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{`\n`, `\ndef`, `plain`, `a"b`, `\x41\t`, `\`, `\q`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := unescape(s)
		if !strings.Contains(s, `\`) && (err != nil || u != s) {
			t.Fatalf("unescape(%q) = %q, %v; text without a backslash must stay as it is", s, u, err)
		}
	})
}
