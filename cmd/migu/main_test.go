package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// runCLI runs the CLI in-process and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// readJSON decodes the JSON file at path (a run folder's run.json,
// train.json, results.json) into v, or ends the test naming the file.
func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
}

// torchExport writes a model exported by torch.onnx.export (the onnx
// package's test fixture script) and returns its path.
func torchExport(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	py := testenv.Python(t)
	script := filepath.Join(testenv.Root(), "onnx", "testdata", "export_torch.py")
	if out, err := exec.Command(py, script, dir).CombinedOutput(); err != nil {
		t.Fatalf("export_torch.py: %v\n%s", err, out)
	}
	return filepath.Join(dir, "mlp.onnx")
}

func TestInspectTorchExport(t *testing.T) {
	path := torchExport(t)
	code, out, errOut := runCLI(t, "inspect", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"x     float32  [batch, seq, 16]", // input with symbolic dims
		"y      float32  [batch, 5]",      // output
		"LayerNormalization  ai.onnx  1",  // op histogram with domains
		"MatMul              ai.onnx  2",
		"linear layers (3)",
		"/up/MatMul       onnx::MatMul_25                 16    48",
		"/head/Gemm       head.weight (stored [out, in])  8     5",
		"non-standard domains  none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "inspect", "--json", filepath.Dir(path)+"/ext")
	if code != 0 || !strings.Contains(out, `"d_out": 48`) {
		t.Errorf("inspect --json of a model folder: exit %d\n%s", code, out)
	}
}

func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.onnx")
	os.WriteFile(garbage, []byte("definitely not protobuf \xff\xff\xff"), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"unknown flag", []string{"inspect", "--bogus"}, 2, "unknown flag: --bogus"},
		{"missing argument", []string{"inspect"}, 2, "accepts 1 arg"},
		{"missing file", []string{"inspect", filepath.Join(dir, "none.onnx")}, 2, "none.onnx"},
		{"folder without model", []string{"inspect", dir}, 2, "no model.onnx in this folder"},
		{"garbage model", []string{"inspect", garbage}, 2, "garbage.onnx: not an ONNX model"},
		{"missing ORT", []string{"version", "--ort-lib", filepath.Join(dir, "nope.so")}, 2, "nope.so"},
		{"export without flags", []string{"export"}, 2, "--from"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut, c.code, c.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Fatalf("error spans several lines: %q", errOut)
			}
		})
	}
}

func TestVersionNamesORT(t *testing.T) {
	lib := testenv.ORTLib(t)
	code, out, errOut := runCLI(t, "version", "--ort-lib", lib)
	if code != 0 || !strings.Contains(out, "migu ") || !strings.Contains(out, "onnxruntime 1.30.0") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// init → export → prepare → inspect: the training graph uses only the
// standard ONNX domain and outputs the loss, gradients and magnitudes.
func TestPrepareThenInspect(t *testing.T) {
	testenv.ORTLib(t)
	dir := t.TempDir()
	hf, model, art := filepath.Join(dir, "hf"), filepath.Join(dir, "model"), filepath.Join(dir, "train")
	steps := [][]string{
		{"init", "--arch", "roberta", "--preset", "tiny", "--out", hf},
		{"export", "--from", hf, "--out", model},
		{"prepare", "--model", model, "--out", art, "--trainable", "all"},
	}
	for _, args := range steps {
		if code, out, errOut := runCLI(t, args...); code != 0 {
			t.Fatalf("migu %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	code, out, errOut := runCLI(t, "inspect", "--json", filepath.Join(art, "train.onnx"))
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, errOut)
	}
	var s struct {
		Domains []string `json:"domains"`
		Outputs []struct {
			Name string `json:"name"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Domains) != 1 || s.Domains[0] != "" {
		t.Errorf("op domains %q, want only the standard one", s.Domains)
	}
	kinds := map[string]int{}
	for _, o := range s.Outputs {
		kind, _, _ := strings.Cut(o.Name, "/")
		kinds[kind]++
	}
	if kinds["loss"] != 1 || kinds["grad"] == 0 || kinds["magnitude"] == 0 {
		t.Errorf("outputs by kind %v", kinds)
	}
	if code, _, errOut := runCLI(t, "prepare", "--model", model); code != 2 || !strings.Contains(errOut, "--out") {
		t.Errorf("prepare without --out: exit %d, %q", code, errOut)
	}
}

// prepare writes only into a folder of its own: the model folder, one
// holding it, or a non-empty folder without a training graph is refused
// with exit status 2, and the folder is left as it was.
func TestPrepareRunFolder(t *testing.T) {
	model := tinyModelDir(t, "llama")
	other := filepath.Join(t.TempDir(), "notes")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "todo.txt"), []byte("x"), 0o644)
	cases := []struct{ out, want string }{
		{model, "is the model folder itself"},
		{filepath.Dir(model), "holds the model folder"},
		{other, "is not empty and holds no run of this command"},
	}
	for _, c := range cases {
		before := snapshot(t, c.out)
		code, _, stderr := runCLI(t, "prepare", "--model", model, "--out", c.out)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("--out %s: exit %d, %q; want exit 2 and one line with %q", c.out, code, stderr, c.want)
		}
		if after := snapshot(t, c.out); len(after) != len(before) {
			t.Errorf("--out %s: %d files before, %d after", c.out, len(before), len(after))
		}
	}
	out := filepath.Join(t.TempDir(), "graph")
	for range 2 { // a second prepare into its own folder replaces the graph
		if code, _, stderr := runCLI(t, "prepare", "--model", model, "--out", out); code != 0 {
			t.Fatalf("prepare: exit %d, %s", code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ".migu.lock")); !os.IsNotExist(err) {
		t.Errorf("the lock outlived prepare (%v)", err)
	}
}
