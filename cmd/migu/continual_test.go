package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// clFixture writes three small classification tasks (the label is the
// keyword in the sentence) and a sequence file over them, and returns the
// sequence file's path.
func clFixture(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	tasks := []struct {
		dir  string
		keys [2]string
		labs [2]string
	}{
		{"TC/weather", [2]string{"sun", "snow"}, [2]string{"warm", "cold"}},
		{"SC/pets", [2]string{"bark", "meow"}, [2]string{"dog", "cat"}},
		{"NLI/moves", [2]string{"run", "walk"}, [2]string{"fast", "slow"}},
	}
	words := strings.Fields("the a big small day house tree road and then old new")
	var yaml strings.Builder
	yaml.WriteString("name: fixture\ndata_dir: data\ntest_samples: 6\ntasks:\n")
	for ti, task := range tasks {
		dir := filepath.Join(root, "data", task.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rows := func(n, salt int) []map[string]string {
			out := make([]map[string]string, n)
			for i := range out {
				k := i % 2
				s := fmt.Sprintf("%s %s %s %s", words[(i*7+salt)%len(words)], words[(i*3+ti)%len(words)], task.keys[k], words[(i+salt)%len(words)])
				out[i] = map[string]string{"sentence": s, "label": task.labs[k]}
			}
			return out
		}
		for name, v := range map[string]any{"train.json": rows(24, 1), "test.json": rows(8, 5), "labels.json": task.labs} {
			raw, _ := json.Marshal(v)
			os.WriteFile(filepath.Join(dir, name), raw, 0o644)
		}
		name := filepath.Base(task.dir)
		fmt.Fprintf(&yaml, "  - name: %s\n    train: %s/train.json\n    test: %s/test.json\n", name, task.dir, task.dir)
	}
	path := filepath.Join(root, "seq.yaml")
	os.WriteFile(path, []byte(yaml.String()), 0o644)
	return path
}

// clResults is the part of results.json the tests read.
type clResults struct {
	Tasks []string `json:"tasks"`
	Runs  []struct {
		Method   string `json:"method"`
		Matrices map[string]struct {
			Base []float64   `json:"base"`
			R    [][]float64 `json:"r"`
		} `json:"matrices"`
		Metrics map[string]struct {
			AA  float64  `json:"aa"`
			BWT *float64 `json:"bwt"`
		} `json:"metrics"`
		Tasks []struct {
			Steps   int64 `json:"steps"`
			Resumed int64 `json:"resumed_from"`
		} `json:"tasks"`
	} `json:"runs"`
	Summary []struct {
		Method string `json:"method"`
	} `json:"summary"`
	Plots []string `json:"plots"`
}

func readResults(t *testing.T, out string) clResults {
	t.Helper()
	var res clResults
	readJSON(t, filepath.Join(out, "results.json"), &res)
	return res
}

// `migu continual` over a 3-task sequence with the four methods: a 3×3
// matrix (plus the starting row) per method, AA and BWT equal to a hand
// computation from the matrix, the comparison table, and plots that decode
// as PNG.
func TestContinual(t *testing.T) {
	model := tinyModelDir(t, "llama")
	seq := clFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := runCLI(t, "continual", "--model", model, "--sequence", seq, "--out", out, "--methods", "full,full+migu,lora,lora+migu",
		"--max-steps", "3", "--batch-size", "4", "--lr", "3e-3", "--threads", "1", "--seeds", "1", "--max-len", "128")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"fixture: weather → pets → moves", "| method | AA | BWT | forgetting | FWT | seeds |", "| lora+migu |", "report: " + filepath.Join(out, "report.md"), "plots: 10 in"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	res := readResults(t, out)
	if len(res.Runs) != 4 || len(res.Summary) != 4 {
		t.Fatalf("%d runs, %d summary rows", len(res.Runs), len(res.Summary))
	}
	for _, run := range res.Runs {
		m := run.Matrices["rank"]
		if len(m.Base) != 3 || len(m.R) != 3 || len(m.R[0]) != 3 || len(m.R[1]) != 3 || len(m.R[2]) != 3 {
			t.Fatalf("%s: matrix %v / %v", run.Method, m.Base, m.R)
		}
		aa := (m.R[2][0] + m.R[2][1] + m.R[2][2]) / 3
		bwt := ((m.R[2][0] - m.R[0][0]) + (m.R[2][1] - m.R[1][1])) / 2
		got := run.Metrics["rank"]
		if math.Abs(got.AA-aa) > 1e-9 || got.BWT == nil || math.Abs(*got.BWT-bwt) > 1e-9 {
			t.Errorf("%s: AA %v BWT %v; from the matrix %v %v", run.Method, got.AA, got.BWT, aa, bwt)
		}
		for _, tk := range run.Tasks {
			if tk.Steps != 3 {
				t.Errorf("%s: a task trained %d steps", run.Method, tk.Steps)
			}
		}
	}
	if len(res.Plots) != 10 {
		t.Errorf("plots: %v", res.Plots)
	}
	for _, p := range res.Plots {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(raw)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// Running again into the same folder needs --resume; with it nothing
	// is trained again.
	if code, _, stderr := runCLI(t, "continual", "--model", model, "--sequence", seq, "--out", out, "--methods", "full,full+migu,lora,lora+migu",
		"--max-steps", "3", "--batch-size", "4", "--lr", "3e-3", "--threads", "1", "--seeds", "1", "--max-len", "128"); code != 2 || !strings.Contains(stderr, "--resume") {
		t.Errorf("rerun without --resume: exit %d: %s", code, stderr)
	}
}

// A `migu continual` process killed inside task 2 and resumed continues at
// task 2's last checkpoint; task 1 is not trained again.
func TestContinualKilledResumes(t *testing.T) {
	model := tinyModelDir(t, "llama")
	seq := clFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	args := []string{"continual", "--model", model, "--sequence", seq, "--out", out, "--methods", "full+migu", "--max-steps", "6",
		"--batch-size", "4", "--threads", "1", "--seed", "3", "--save-every", "1", "--max-len", "128"}
	cmd := cliCommand(t, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	inTask2 := false
	for sc.Scan() {
		line := sc.Text()
		inTask2 = inTask2 || strings.Contains(line, "task 2/3")
		if inTask2 && strings.HasPrefix(line, "step 3 ") {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	task1 := filepath.Join(out, "full+migu", "seed-3", "01-weather", "metrics.jsonl")
	before, err := os.ReadFile(task1)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, errOut := runCLI(t, append(args, "--resume")...)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, errOut)
	}
	if strings.Contains(errOut, "task 1/3") {
		t.Errorf("task 1 trained again:\n%s", errOut)
	}
	if !strings.Contains(errOut, "resumed from") {
		t.Errorf("task 2 did not resume from a checkpoint:\n%s", errOut)
	}
	after, _ := os.ReadFile(task1)
	if !bytes.Equal(before, after) {
		t.Error("task 1's metrics changed")
	}
	res := readResults(t, out)
	tasks := res.Runs[0].Tasks
	if len(tasks) != 3 || tasks[1].Resumed < 2 || tasks[1].Steps != 6 || len(res.Runs[0].Matrices["rank"].R) != 3 {
		t.Errorf("after resume: %+v", res.Runs[0])
	}
}

// Bad sequences: one line, exit status 2, before any training.
func TestContinualBadInput(t *testing.T) {
	model := tinyModelDir(t, "llama")
	seq := clFixture(t)
	dir := filepath.Dir(seq)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	os.MkdirAll(filepath.Join(dir, "data", "X", "empty"), 0o755)
	os.WriteFile(filepath.Join(dir, "data", "X", "empty", "train.json"), []byte("[]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "data", "X", "empty", "test.json"), []byte(`[{"sentence":"a","label":"b"}]`), 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown task", []string{"--sequence", write("u.yaml", "tasks:\n  - name: weather\n    train: data/TC/weather/train.json\n    test: data/TC/weather/test.json\n  - name: nosuch\n")}, `u.yaml:5: unknown task "nosuch"`},
		{"missing file", []string{"--sequence", write("m.yaml", "tasks:\n  - name: w\n    train: data/TC/weather/gone.json\n    test: data/TC/weather/test.json\n")}, `m.yaml:2: task "w": data file`},
		{"empty task", []string{"--sequence", write("e.yaml", "tasks:\n  - name: e\n    train: data/X/empty/train.json\n    test: data/X/empty/test.json\n")}, `e.yaml:2: task "e": ` + filepath.Join(dir, "data/X/empty/train.json") + ": no records"},
		{"invalid yaml", []string{"--sequence", write("i.yaml", "tasks:\n  - name: a\n    train: x: y\n")}, "i.yaml:3: mapping values are not allowed"},
		{"line over --max-line-bytes", []string{"--sequence", seq, "--max-line-bytes", "10"}, "train.json:1 (element 1): element longer than 10 bytes (--max-line-bytes)"},
		{"unknown order", []string{"--sequence", "order9"}, `unknown order "order9"`},
		{"unknown method", []string{"--sequence", seq, "--methods", "full,magic"}, `unknown method "magic"`},
		{"bad seeds", []string{"--sequence", seq, "--seeds", "1,x"}, `--seeds: "x"`},
		{"bad score", []string{"--sequence", seq, "--score", "best"}, `unknown CL scoring mode "best"`},
		{"bad recompute", []string{"--sequence", seq, "--recompute", "blocks"}, `--recompute "blocks" is not one of none, layers`},
	}
	for _, c := range cases {
		out := filepath.Join(t.TempDir(), "run")
		code, _, stderr := runCLI(t, append([]string{"continual", "--model", model, "--out", out}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want 2 and one line with %q", c.name, code, stderr, c.want)
		}
		if _, err := os.Stat(filepath.Join(out, "state.json")); err == nil {
			t.Errorf("%s: the run folder was started", c.name)
		}
	}
}

// Numbers out of range stop `migu continual` with exit status 2 and one
// line naming the flag, before the run folder exists.
func TestContinualRangeChecks(t *testing.T) {
	model := tinyModelDir(t, "llama")
	seq := clFixture(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--epochs", "-1"}, "--epochs -1 is outside its range"},
		{[]string{"--max-steps", "-5"}, "--max-steps -5 is outside"},
		{[]string{"--batch-size", "0"}, "--batch-size 0 is outside"},
		{[]string{"--grad-accum", "0"}, "--grad-accum 0 is outside"},
		{[]string{"--lr", "NaN"}, "--lr NaN is outside"},
		{[]string{"--threads", "-2"}, "--threads -2 is outside"},
		{[]string{"--eval-batch-size", "-1"}, "--eval-batch-size -1 is outside"},
		{[]string{"--train-samples", "-1"}, "--train-samples -1 is outside"},
		{[]string{"--test-samples", "-1"}, "--test-samples -1 is outside"},
		{[]string{"--methods", "lora", "--lora-r", "0"}, "--lora-r 0 is outside"},
		{[]string{"--methods", "lora", "--lora-r", "100000"}, "--lora-r 100000 is outside its range: 1 … 32"},
	}
	for _, c := range cases {
		out := filepath.Join(t.TempDir(), "run")
		code, _, stderr := runCLI(t, append([]string{"continual", "--model", model, "--sequence", seq, "--out", out}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v: the refused run created %s", c.args, out)
		}
	}
}
