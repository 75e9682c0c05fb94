package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Hostile data files: a line over --max-line-bytes and a record with
// invalid UTF-8 are refused with exit 2 and one line naming file:line
// before the run folder is made; with --skip-bad-lines they are counted
// in run.json and training goes on.
func TestTrainHostileData(t *testing.T) {
	model := tinyModelDir(t, "llama")
	good, err := os.ReadFile(fixture(t, "instruction", 16))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSpace(string(good)), "\n")
	dir := t.TempDir()
	write := func(name string, insert string) string {
		content := lines[0] + insert + "\n" + strings.Join(lines[1:], "") + "\n"
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := write("long.jsonl", `{"instruction": "x", "output": "`+strings.Repeat("y", 3000)+`"}`)
	badUTF8 := write("utf8.jsonl", "{\"instruction\": \"caf\xe9\", \"output\": \"ok\"}")
	cases := []struct {
		name    string
		data    string
		extra   []string
		code    int
		want    string
		skipped int
	}{
		{"line over the cap", long, []string{"--max-line-bytes", "1000"}, 2, long + ":2: line longer than 1000 bytes (--max-line-bytes)", 0},
		{"line under a raised cap", long, []string{"--max-line-bytes", "5000"}, 0, "", 0},
		{"line over the cap, skipped", long, []string{"--max-line-bytes", "1000", "--skip-bad-lines"}, 0, "", 1},
		{"invalid UTF-8", badUTF8, nil, 2, badUTF8 + ":2: invalid UTF-8 at byte 21 of the record", 0},
		{"invalid UTF-8, skipped", badUTF8, []string{"--skip-bad-lines"}, 0, "", 1},
		{"negative cap", long, []string{"--max-line-bytes", "-1"}, 2, "--max-line-bytes -1 is negative (0: the default, 16777216)", 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "run", string(rune('a'+i)))
			args := append([]string{"train", "--model", model, "--data", c.data, "--out", out, "--threads", "1", "--max-steps", "1", "--max-len", "32"}, c.extra...)
			code, _, stderr := runCLI(t, args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, stderr)
			}
			if c.code != 0 {
				if line := strings.TrimSpace(stderr); !strings.HasSuffix(line, c.want) || strings.Contains(line, "\n") {
					t.Fatalf("stderr %q; want one line ending %q", stderr, c.want)
				}
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Fatalf("bad data left %s behind", out)
				}
				return
			}
			raw, err := os.ReadFile(filepath.Join(out, "run.json"))
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Data struct {
					Skipped int `json:"skipped"`
				} `json:"data"`
			}
			if err := json.Unmarshal(raw, &res); err != nil || res.Data.Skipped != c.skipped {
				t.Fatalf("run.json skipped %d (%v), want %d", res.Data.Skipped, err, c.skipped)
			}
		})
	}
}
