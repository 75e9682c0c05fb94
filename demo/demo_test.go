package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx/ort"
)

// reduced is a demo small enough for a unit test: two tasks, a few dozen
// examples, one epoch.
func reduced(out, arch, methods string) Options {
	return Options{Out: out, Arch: arch, Threads: 1, Methods: methods, Tasks: 2, TrainSize: 24, TestSize: 12, Epochs: 1, PretrainLines: 48}
}

// TestDemoPrintsTheComparison runs a reduced demo and checks the table it
// prints against results.json, and AA and BWT in results.json against a
// hand computation from the accuracy matrix.
func TestDemoPrintsTheComparison(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ arch, methods string }{
		{"llama", "full,full+migu,lora+migu"},
		{"t5", "full+migu"},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "demo")
			var buf bytes.Buffer
			res, err := Run(&buf, reduced(out, tc.arch, tc.methods))
			if err != nil {
				t.Fatal(err)
			}
			report := buf.String()
			for _, want := range []string{"1. tasks", "2. init", "3. export", "4. pre-train", "5. continual", "[full+migu seed 0] task 2/2 compare: ", "method", "AA", "BWT", "forgetting", "wordsent", "compare", "Report: ", "Plots:"} {
				if !strings.Contains(report, want) {
					t.Errorf("output lacks %q:\n%s", want, report)
				}
			}
			var results struct {
				Runs []struct {
					Method   string `json:"method"`
					Matrices map[string]struct {
						R [][]float64 `json:"r"`
					} `json:"matrices"`
				} `json:"runs"`
				Summary []struct {
					Method string `json:"method"`
					Score  string `json:"score"`
					AA     struct{ Mean float64 }
					BWT    *struct{ Mean float64 }
				} `json:"summary"`
			}
			raw, err := os.ReadFile(filepath.Join(out, "continual", "results.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &results); err != nil {
				t.Fatal(err)
			}
			methods := strings.Split(tc.methods, ",")
			if len(results.Runs) != len(methods) || len(results.Summary) != len(methods) {
				t.Fatalf("%d runs, %d summary rows for %d methods", len(results.Runs), len(results.Summary), len(methods))
			}
			for i, run := range results.Runs {
				r := run.Matrices["rank"].R
				if len(r) != 2 || len(r[0]) != 2 || len(r[1]) != 2 {
					t.Fatalf("%s: matrix %v, want 2×2", run.Method, r)
				}
				aa := (r[1][0] + r[1][1]) / 2
				bwt := r[1][0] - r[0][0]
				s := results.Summary[i]
				if s.Method != run.Method || math.Abs(s.AA.Mean-aa) > 1e-9 || s.BWT == nil || math.Abs(s.BWT.Mean-bwt) > 1e-9 {
					t.Errorf("%s: summary AA %v BWT %+v, by hand %v and %v", run.Method, s.AA.Mean, s.BWT, aa, bwt)
				}
				// The printed row carries the same AA, BWT and last-row accuracies.
				row := fmt.Sprintf("%-11s %6.1f%% %7s", run.Method, 100*aa, fmt.Sprintf("%+.1f", 100*bwt))
				if !strings.Contains(report, row) {
					t.Errorf("no table row starting %q in:\n%s", row, report)
				}
				if !strings.Contains(report, fmt.Sprintf(" %9.1f%%\n", 100*r[1][1])) {
					t.Errorf("%s: the last task's final accuracy %.1f%% is not printed", run.Method, 100*r[1][1])
				}
			}
			if len(res.Report.Plots) == 0 {
				t.Error("no plots")
			}
			for _, p := range res.Report.Plots {
				b, err := os.ReadFile(p)
				if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
					t.Errorf("%s: not a PNG file (%v)", p, err)
				}
			}
			// A rerun replaces the demo's own folder.
			if tc.arch == "llama" {
				o := reduced(out, tc.arch, "full")
				o.Tasks, o.PretrainLines = 2, -1
				if _, err := Run(&bytes.Buffer{}, o); err != nil {
					t.Fatalf("rerun: %v", err)
				}
			}
		})
	}
}

func TestDemoRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("keep me"), 0o644)
	if _, err := Run(&bytes.Buffer{}, Options{Out: dir}); err == nil || !strings.Contains(err.Error(), "not made by migu demo") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "precious.txt")); err != nil {
		t.Fatal("demo deleted a file it did not make")
	}
}

func TestDemoRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Methods: "full,adam"},
		{Arch: "roberta"},
		{Tasks: 9},
	} {
		o.Out = filepath.Join(t.TempDir(), "demo")
		if _, err := Run(&bytes.Buffer{}, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
		if _, err := os.Stat(o.Out); err == nil {
			t.Errorf("%+v: the refused run created its folder", o)
		}
	}
}

// TestDemoOnGivenModel runs the sequence on a model folder made outside
// the demo: no init, export or pre-training, the folder itself as the
// starting model (left unchanged by full fine-tuning), and the defaults
// for a given model (1 epoch, learning rate 1e-4).
func TestDemoOnGivenModel(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	_, model := testfix.TinyModel(t, "llama")
	before, err := os.ReadFile(filepath.Join(model, "model.onnx.data"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "demo")
	var buf bytes.Buffer
	res, err := Run(&buf, Options{Out: out, Model: model, Threads: 1, Methods: "full,lora+migu", Tasks: 2, TrainSize: 16, TestSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	report := buf.String()
	for _, want := range []string{"1. tasks", "2. model: " + model, "steps 3 and 4 (export, pre-train) skipped", "5. continual", "[lora+migu seed 0] task 2/2 compare: ", "Report: "} {
		if !strings.Contains(report, want) {
			t.Errorf("output lacks %q:\n%s", want, report)
		}
	}
	for _, not := range []string{"2. init", "3. export", "4. pre-train: every weight"} {
		if strings.Contains(report, not) {
			t.Errorf("output has %q with a given model:\n%s", not, report)
		}
	}
	if res.Model != model || res.Report.Config.Model != model {
		t.Errorf("started from %q (report: %q), want %q", res.Model, res.Report.Config.Model, model)
	}
	if _, err := os.Stat(filepath.Join(out, "model")); err == nil {
		t.Error("the demo made its own model despite --model")
	}
	job := res.Report.Config.Job
	if job.Epochs != 1 || job.Train.Optim.LR != 1e-4 {
		t.Errorf("epochs %d, lr %g; want the given-model defaults 1 and 1e-4", job.Epochs, job.Train.Optim.LR)
	}
	if len(res.Report.Runs) != 2 || len(res.Report.Runs[0].Tasks) != 2 || res.Report.Runs[0].Tasks[0].Steps != 2 {
		t.Errorf("runs %+v; want 2 methods × 2 tasks of 16/8 = 2 steps", res.Report.Runs)
	}
	after, err := os.ReadFile(filepath.Join(model, "model.onnx.data"))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the given model's weights changed (%v)", err)
	}
}

func TestDemoRefusesBadModel(t *testing.T) {
	root := t.TempDir()
	_, model := testfix.TinyModel(t, "llama")
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Model: filepath.Join(root, "absent"), Out: filepath.Join(root, "d1")}, "model"},
		{Options{Model: filepath.Join(root, "d2", "model"), Out: filepath.Join(root, "d2")}, "lies inside out"},
	} {
		if tc.want == "lies inside out" {
			if err := os.CopyFS(tc.o.Model, os.DirFS(model)); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Run(&bytes.Buffer{}, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "d1")); err == nil {
		t.Error("a refused run created its folder")
	}
	if _, err := os.Stat(filepath.Join(root, "d2", "model", "migu.json")); err != nil {
		t.Error("the refused run deleted the model inside --out")
	}
}
