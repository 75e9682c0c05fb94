package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/rundir"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/train"
	"github.com/spf13/pflag"
)

// TestMain lets the test binary act as the migu command (for tests that
// must kill a real process): with MIGU_TEST_CLI set it runs the CLI.
func TestMain(m *testing.M) {
	if os.Getenv("MIGU_TEST_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// cliCommand runs this test binary as `migu args…`.
func cliCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MIGU_TEST_CLI=1")
	return cmd
}

var (
	modelsOnce sync.Map // arch → *modelFixture
)

type modelFixture struct {
	once sync.Once
	dir  string
	err  error
}

// tinyModelDir makes (once per test binary) a tiny model folder of arch
// with `migu init` and `migu export`.
func tinyModelDir(t *testing.T, arch string) string {
	t.Helper()
	testenv.ORTLib(t)
	v, _ := modelsOnce.LoadOrStore(arch, &modelFixture{})
	f := v.(*modelFixture)
	f.once.Do(func() {
		root, err := os.MkdirTemp("", "migu-cli-"+arch+"-")
		if err != nil {
			f.err = err
			return
		}
		var out, errOut bytes.Buffer
		for _, args := range [][]string{
			{"init", "--arch", arch, "--preset", "tiny", "--out", filepath.Join(root, "hf")},
			{"export", "--from", filepath.Join(root, "hf"), "--out", filepath.Join(root, "model")},
		} {
			if code := run(args, &out, &errOut); code != 0 {
				f.err = fmt.Errorf("migu %v: %s", args, errOut.String())
				return
			}
		}
		f.dir = filepath.Join(root, "model")
	})
	if f.err != nil {
		t.Fatal(f.err)
	}
	return f.dir
}

// fixture writes a small learnable data file: instructions that repeat a
// word n times, or plain text for MLM.
func fixture(t *testing.T, kind string, n int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields("apple river stone cloud orange table garden window yellow silver paper mountain")
	var b strings.Builder
	for i := 0; i < n; i++ {
		w := words[rng.IntN(len(words))]
		var rec map[string]string
		if kind == "text" {
			var parts []string
			for k := 0; k < 10; k++ {
				parts = append(parts, words[rng.IntN(len(words))])
			}
			rec = map[string]string{"text": strings.Join(parts, " ")}
		} else {
			k := 1 + rng.IntN(3)
			rec = map[string]string{"instruction": fmt.Sprintf("Repeat the word %d times.", k), "input": w, "output": strings.TrimSpace(strings.Repeat(w+" ", k))}
		}
		raw, _ := json.Marshal(rec)
		b.Write(raw)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), kind+".jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type runJSON struct {
	Steps     int64   `json:"steps"`
	FirstLoss float64 `json:"first_loss"`
	LastLoss  float64 `json:"last_loss"`
	Output    string  `json:"output"`
}

// `migu train` lowers the loss on a small fixture for each family and each
// method, with MIGU on, and writes the model or the adapter.
func TestTrainLowersLoss(t *testing.T) {
	cases := []struct{ arch, data, method string }{
		{"llama", "instruction", "full"}, {"llama", "instruction", "lora"},
		{"t5", "instruction", "full"}, {"t5", "instruction", "lora"},
		{"roberta", "text", "full"}, {"roberta", "text", "lora"},
	}
	for _, c := range cases {
		t.Run(c.arch+"/"+c.method, func(t *testing.T) {
			model := tinyModelDir(t, c.arch)
			out := filepath.Join(t.TempDir(), "run")
			args := []string{"train", "--model", model, "--data", fixture(t, c.data, 160), "--out", out, "--method", c.method,
				"--migu", "0.7", "--lr", "3e-3", "--epochs", "2", "--batch-size", "16", "--threads", "1", "--seed", "1"}
			if c.method == "lora" {
				args = append(args, "--lora-targets", "all", "--lr", "1e-2")
			}
			if code, stdout, stderr := runCLI(t, args...); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			var res runJSON
			readJSON(t, filepath.Join(out, "run.json"), &res)
			if !(res.LastLoss < res.FirstLoss) {
				t.Errorf("loss %.4f → %.4f did not fall", res.FirstLoss, res.LastLoss)
			}
			t.Logf("%s %s: %d steps, loss %.3f → %.3f", c.arch, c.method, res.Steps, res.FirstLoss, res.LastLoss)
			want := "model/model.onnx"
			if c.method == "lora" {
				want = "adapter/adapter_model.safetensors"
			}
			if _, err := os.Stat(filepath.Join(out, want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// withoutBlocks copies a model folder with the block boundaries removed
// from its migu.json, as folders exported before they existed are.
func withoutBlocks(t *testing.T, model string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "old-model")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(model, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	man.Blocks = nil
	if err := modeldir.WriteManifest(dir, man); err != nil {
		t.Fatal(err)
	}
	return dir
}

// `migu train --recompute layers` trains and records the choice in the
// run folder's train.json, with the number of recomputed nodes.
func TestTrainRecomputeLayers(t *testing.T) {
	for _, method := range []string{"full", "lora"} {
		t.Run(method, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			code, stdout, stderr := runCLI(t, "train", "--model", tinyModelDir(t, "llama"), "--data", fixture(t, "instruction", 40), "--out", out,
				"--method", method, "--migu", "0.7", "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--recompute", "layers")
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			var art train.Artifact
			readJSON(t, filepath.Join(out, train.ArtifactFile), &art)
			if art.Recompute != train.RecomputeLayers || art.RecomputedNodes == 0 {
				t.Errorf("train.json records recompute %q with %d recomputed nodes", art.Recompute, art.RecomputedNodes)
			}
		})
	}
}

// A run killed with SIGKILL at a random step and resumed ends with
// parameters bit-identical to an uninterrupted run.
func TestKilledRunResumesBitIdentical(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 96)
	common := []string{"train", "--model", model, "--data", data, "--migu", "0.7", "--lr", "3e-3", "--epochs", "2",
		"--batch-size", "8", "--threads", "1", "--seed", "5", "--save-every", "2", "--keep", "0"}
	straight := filepath.Join(t.TempDir(), "straight")
	if out, err := cliCommand(t, append(common, "--out", straight)...).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}

	killed := filepath.Join(t.TempDir(), "killed")
	cmd := cliCommand(t, append(common, "--out", killed)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAt := 3 + rand.IntN(14)
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), fmt.Sprintf("step %d ", killAt)) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(killed, "run.json")); err == nil {
		t.Fatal("the killed run finished before it was killed")
	}
	resume := cliCommand(t, append(common, "--out", killed, "--resume")...)
	if out, err := resume.CombinedOutput(); err != nil || !strings.Contains(string(out), "resumed from") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	a, err := os.ReadFile(filepath.Join(straight, "model", "model.onnx.data"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(killed, "model", "model.onnx.data"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("killed at step %d and resumed: parameters differ from the uninterrupted run", killAt)
	}
	t.Logf("killed at step %d, resumed: parameters bit-identical", killAt)
}

// Bad input stops `migu train` before training with exit status 2 and one
// line naming the problem; a NaN loss stops it with the step named.
func TestTrainBadInput(t *testing.T) {
	model := tinyModelDir(t, "llama")
	good := fixture(t, "instruction", 40)
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(notJSON, []byte("{\"instruction\": \"a\", \"output\": \"b\"}\nnot json\n"), 0o644)
	noField := filepath.Join(dir, "nofield.jsonl")
	os.WriteFile(noField, []byte("{\"instruction\": \"a\"}\n"), 0o644)
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, nil, 0o644)
	base := func(data, out string, extra ...string) []string {
		return append([]string{"train", "--model", model, "--data", data, "--out", filepath.Join(dir, out), "--threads", "1", "--max-steps", "2"}, extra...)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"not JSON", base(notJSON, "a"), 2, "bad.jsonl:2"},
		{"missing field", base(noField, "b"), 2, "nofield.jsonl:1"},
		{"empty data", base(empty, "c"), 2, "empty.jsonl"},
		{"unknown lora role", base(good, "d", "--method", "lora", "--lora-targets", "q,gate"), 2, "gate"},
		{"T out of range", base(good, "e", "--migu", "1.5"), 2, "--migu 1.5"},
		{"unknown method", base(good, "f", "--method", "qlora"), 2, "qlora"},
		{"nan loss", base(good, "g", "--lr", "1e38", "--max-steps", "5", "--clip", "0"), 1, "not finite"},
		{"unknown recompute", base(good, "i", "--recompute", "all"), 2, `--recompute "all" is not one of none, layers`},
		{"epochs out of range", base(good, "k", "--epochs", "-1"), 2, "--epochs -1 is outside its range: ≥ 1, or 0 with --max-steps"},
		{"clip out of range", base(good, "l", "--clip", "-1"), 2, "--clip -1 is outside its range"},
		{"lora rank out of range", base(good, "m", "--method", "lora", "--lora-r", "0"), 2, "--lora-r 0 is outside its range"},
		{"unknown template", base(good, "n", "--template", "vicuna"), 2, `unknown --template "vicuna"`},
		{"recompute on an old model folder", append(base(good, "j", "--recompute", "layers"), "--model", withoutBlocks(t, model)), 2, "re-export the model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, c.args...)
			last := strings.TrimSpace(stderr)
			if i := strings.LastIndex(last, "\n"); i >= 0 {
				last = last[i+1:]
			}
			if code != c.code || !strings.Contains(last, c.want) {
				t.Fatalf("exit %d, last line %q; want exit %d and %q", code, last, c.code, c.want)
			}
		})
	}
	// A checkpoint of another model is refused on resume.
	out := filepath.Join(dir, "h")
	if code, _, stderr := runCLI(t, "train", "--model", model, "--data", good, "--out", out, "--threads", "1", "--max-steps", "2"); code != 0 {
		t.Fatal(stderr)
	}
	other := tinyModelDir(t, "roberta")
	code, _, stderr := runCLI(t, "train", "--model", other, "--data", fixture(t, "text", 40), "--out", out, "--threads", "1", "--max-steps", "4", "--resume")
	if code != 2 || !strings.Contains(stderr, "another model or configuration") {
		t.Fatalf("resume on another model: exit %d, %q", code, stderr)
	}
}

// lastLine is the last line of a command's stderr.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Every numeric flag out of its range stops `migu train` with exit
// status 2 and one line naming the flag and its range, before the run
// folder (or anything in it) exists.
func TestTrainRangeChecks(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 40)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--epochs", "-1"}, "--epochs -1 is outside its range: ≥ 1"},
		{[]string{"--epochs", "0", "--max-steps", "0"}, "--epochs 0 is outside its range"},
		{[]string{"--max-steps", "-5"}, "--max-steps -5 is outside its range: ≥ 0"},
		{[]string{"--batch-size", "0"}, "--batch-size 0 is outside its range: ≥ 1"},
		{[]string{"--grad-accum", "0"}, "--grad-accum 0 is outside its range: ≥ 1"},
		{[]string{"--max-len", "-5"}, "--max-len -5 is outside its range: ≥ 0"},
		{[]string{"--keep", "-1"}, "--keep -1 is outside its range: ≥ 0"},
		{[]string{"--clip", "-1"}, "--clip -1 is outside its range: a finite number ≥ 0"},
		{[]string{"--warmup", "-5"}, "--warmup -5 is outside its range: ≥ 0"},
		{[]string{"--save-every", "-1"}, "--save-every -1 is outside its range: ≥ 0"},
		{[]string{"--bucket", "-1"}, "--bucket -1 is outside its range: ≥ 0"},
		{[]string{"--lr", "NaN"}, "--lr NaN is outside its range: a finite number ≥ 0"},
		{[]string{"--lr", "Inf"}, "--lr +Inf is outside its range"},
		{[]string{"--lr", "-1e-3"}, "--lr -0.001 is outside its range"},
		{[]string{"--weight-decay", "NaN"}, "--weight-decay NaN is outside its range"},
		{[]string{"--threads", "-2"}, "--threads -2 is outside its range: 0 (one per core) … 1024"},
		{[]string{"--migu", "NaN"}, "--migu NaN is outside [0, 1)"},
		{[]string{"--memory-limit", "NaNGB"}, `--memory-limit "NaNGB" is not auto, off or a size`},
		{[]string{"--method", "lora", "--lora-r", "0"}, "--lora-r 0 is outside its range: 1 …"},
		{[]string{"--method", "lora", "--lora-r", "100000"}, "--lora-r 100000 is outside its range: 1 … 32, the width of the narrowest adapted layer (model.layers.0.self_attn.v_proj, 64→32)"},
		{[]string{"--method", "lora", "--lora-alpha", "0"}, "--lora-alpha 0 is outside its range: a finite number > 0"},
		{[]string{"--method", "lora", "--lora-dropout", "1"}, "--lora-dropout 1 is outside its range: [0, 1)"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			args := append([]string{"train", "--model", model, "--data", data, "--out", out, "--threads", "1", "--max-steps", "2"}, c.args...)
			code, _, stderr := runCLI(t, args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Fatalf("exit %d, stderr %q; want exit 2 and one line with %q", code, stderr, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("the refused run created %s (%v)", out, err)
			}
		})
	}
}

// numericFlags lists a command's flags that take numbers.
func numericFlags(t *testing.T, name string) map[string]string {
	t.Helper()
	cmd, _, err := newRootCmd().Find([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		switch f.Value.Type() {
		case "int", "int64", "float64":
			out[f.Name] = f.Usage
		}
	})
	return out
}

// `--help` of train and continual gives every numeric flag's range.
func TestHelpGivesRanges(t *testing.T) {
	rangeText := regexp.MustCompile(`≥ \d|> 0|\[0, 1\)|1 … |0 \(one per core\) … \d`)
	for _, name := range []string{"train", "continual"} {
		flags := numericFlags(t, name)
		if len(flags) < 10 {
			t.Fatalf("%s: only %d numeric flags found", name, len(flags))
		}
		for flag, usage := range flags {
			if !rangeText.MatchString(usage) {
				t.Errorf("%s --%s: the help %q gives no range", name, flag, usage)
			}
		}
	}
}

// The run folder is locked for the whole run, and a folder that is not
// the run's (the model folder, a non-empty folder of something else) is
// refused with exit status 2 before anything is written.
func TestTrainRunFolder(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 40)
	root := t.TempDir()
	held := filepath.Join(root, "held")
	lock, err := rundir.Open(held, finetune.RunFolder(model))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	unrelated := filepath.Join(root, "photos")
	os.MkdirAll(unrelated, 0o755)
	os.WriteFile(filepath.Join(unrelated, "cat.jpg"), []byte("jpeg"), 0o644)
	cases := []struct {
		out, want string
	}{
		{held, fmt.Sprintf("run folder %s is in use by PID %d", held, os.Getpid())},
		{model, fmt.Sprintf("--out %s is the model folder itself", model)},
		{unrelated, fmt.Sprintf("--out %s is not empty and holds no run of this command", unrelated)},
	}
	for _, c := range cases {
		before := snapshot(t, c.out)
		code, _, stderr := runCLI(t, "train", "--model", model, "--data", data, "--out", c.out, "--threads", "1", "--max-steps", "2")
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("--out %s: exit %d, stderr %q; want exit 2 and one line with %q", c.out, code, stderr, c.want)
		}
		if after := snapshot(t, c.out); !maps.Equal(before, after) {
			t.Errorf("--out %s: the refused run changed the folder", c.out)
		}
	}
}

// snapshot reads every file under dir: path → content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		files[path] = string(raw)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// metricSteps reads the step of every row of metrics.jsonl.
func metricSteps(t *testing.T, out string) []int64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(out, train.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var row struct {
			Step int64 `json:"step"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("metrics row %q: %v", line, err)
		}
		steps = append(steps, row.Step)
	}
	return steps
}

// A run killed after logging steps past its last checkpoint resumes with
// one metrics row per step and without the killed checkpoint's temporary
// folder; --resume on the finished run says so and changes no file.
func TestTrainResume(t *testing.T) {
	model := tinyModelDir(t, "llama")
	out := filepath.Join(t.TempDir(), "run")
	args := []string{"train", "--model", model, "--data", fixture(t, "instruction", 40), "--out", out, "--threads", "1",
		"--max-steps", "4", "--batch-size", "4", "--save-every", "2", "--keep", "0", "--lr", "3e-3"}
	if code, stdout, stderr := runCLI(t, args...); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	// What a kill between step 4's metrics row and its checkpoint leaves:
	// the rows of steps 3 and 4, the checkpoint of step 2, and the
	// checkpoint of step 4 still in its temporary folder.
	ckpt := filepath.Join(out, train.CheckpointsDir)
	orphan := filepath.Join(ckpt, ".step-00000004.tmp-12345")
	if err := os.Rename(filepath.Join(ckpt, "step-00000004"), orphan); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(out, "run.json"))
	os.RemoveAll(filepath.Join(out, "model"))
	code, stdout, stderr := runCLI(t, append(args, "--resume")...)
	if code != 0 || !strings.Contains(stderr, "resumed from") {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
	}
	if steps := metricSteps(t, out); !slices.Equal(steps, []int64{1, 2, 3, 4}) {
		t.Errorf("metrics.jsonl after the resume holds the steps %v, want 1 2 3 4 once each", steps)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the killed checkpoint's temporary folder survived the resume (%v)", err)
	}

	before := snapshot(t, out)
	code, stdout, stderr = runCLI(t, append(args, "--resume")...)
	if code != 0 || !strings.Contains(stdout, "already finished at step 4") {
		t.Fatalf("resume of a finished run: exit %d\n%s%s", code, stdout, stderr)
	}
	after := snapshot(t, out)
	if !maps.Equal(before, after) {
		for p := range after {
			if before[p] != after[p] {
				t.Errorf("resume of a finished run changed %s", p)
			}
		}
		t.Errorf("resume of a finished run changed the folder: %d files before, %d after", len(before), len(after))
	}
}

// --skip-bad-lines says on the terminal how many records it skipped.
func TestTrainPrintsSkippedLines(t *testing.T) {
	model := tinyModelDir(t, "llama")
	good, err := os.ReadFile(fixture(t, "instruction", 40))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "some-bad.jsonl")
	os.WriteFile(data, append(append([]byte("not json\n"), good...), "{\"instruction\": \"no output\"}\n"...), 0o644)
	code, stdout, stderr := runCLI(t, "train", "--model", model, "--data", data, "--out", filepath.Join(t.TempDir(), "run"),
		"--threads", "1", "--max-steps", "1", "--skip-bad-lines")
	if code != 0 || !strings.Contains(stdout, "skipped 2 bad records of "+data+" (--skip-bad-lines)") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}
