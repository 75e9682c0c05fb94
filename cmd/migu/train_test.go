package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/train"
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
			raw, err := os.ReadFile(filepath.Join(out, "run.json"))
			if err != nil || json.Unmarshal(raw, &res) != nil {
				t.Fatalf("run.json: %v", err)
			}
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
			raw, err := os.ReadFile(filepath.Join(out, train.ArtifactFile))
			if err != nil || json.Unmarshal(raw, &art) != nil {
				t.Fatalf("train.json: %v", err)
			}
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
