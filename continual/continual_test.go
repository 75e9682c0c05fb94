package continual

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
)

// fixtureTask is a generated classification task: the label is the
// keyword the sentence contains.
type fixtureTask struct {
	typ, name string
	keys      map[string]string // keyword → label
}

var fixtureTasks = []fixtureTask{
	{"TC", "weather", map[string]string{"sun": "warm", "snow": "cold"}},
	{"SC", "pets", map[string]string{"bark": "dog", "meow": "cat"}},
	{"NLI", "moves", map[string]string{"run": "fast", "walk": "slow"}},
}

var filler = []string{"the", "a", "big", "small", "day", "house", "tree", "road", "and", "then", "old", "new"}

// writeFixture writes the tasks as root/TYPE/NAME/{train,test,labels}.json
// and returns a Sequence over them.
func writeFixture(t *testing.T, root string, nTrain, nTest int) *Sequence {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	seq := &Sequence{Name: "fixture", Source: "test"}
	for _, ft := range fixtureTasks {
		dir := filepath.Join(root, ft.typ, ft.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var keys, labels []string
		for k, l := range ft.keys {
			keys, labels = append(keys, k), append(labels, l)
		}
		rows := func(n int) []map[string]string {
			out := make([]map[string]string, n)
			for i := range out {
				k := keys[i%len(keys)]
				words := []string{filler[rng.IntN(len(filler))], filler[rng.IntN(len(filler))], k, filler[rng.IntN(len(filler))]}
				out[i] = map[string]string{"sentence": strings.Join(words, " "), "label": ft.keys[k]}
			}
			return out
		}
		for name, v := range map[string]any{"train.json": rows(nTrain), "test.json": rows(nTest), "labels.json": labels} {
			raw, _ := json.Marshal(v)
			if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		seq.Tasks = append(seq.Tasks, Task{Name: ft.name, Train: filepath.Join(dir, "train.json"), Test: filepath.Join(dir, "test.json")})
	}
	return seq
}

// tinyLlama makes a tiny llama model folder and initialises ORT.
func tinyLlama(t *testing.T) string {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	_, dir := testfix.TinyModel(t, "llama")
	return dir
}

func f64(v float64) *float64 { return &v }

// The metrics of hand-made matrices, computed by hand.
func TestMetricsByHand(t *testing.T) {
	cases := []struct {
		name string
		m    Matrix
		want Metrics
	}{
		{
			name: "three tasks",
			// R[T-1] = .5 .6 .9: AA = 2.0/3.
			// BWT = ((.5-.8) + (.6-.7))/2 = -.2.
			// forgetting: task 0 best of R[0][0], R[1][0] = .8 → .3; task 1 best .7 → .1; mean .2.
			// FWT = ((R[0][1]-.5) + (R[1][2]-.4))/2 = (.0 + .1)/2 = .05.
			m: Matrix{Base: []float64{.5, .5, .4}, R: [][]float64{
				{.8, .5, .3},
				{.6, .7, .5},
				{.5, .6, .9}}},
			want: Metrics{AA: 2.0 / 3, BWT: f64(-.2), Forgetting: f64(.2), FWT: f64(.05)},
		},
		{
			name: "later gain counts as negative forgetting",
			// task 0: best before last .4, last .6 → -.2.
			m:    Matrix{R: [][]float64{{.4, .1}, {.6, 1}}},
			want: Metrics{AA: .8, BWT: f64(.2), Forgetting: f64(-.2)},
		},
		{name: "one task", m: Matrix{Base: []float64{.1}, R: [][]float64{{.7}}}, want: Metrics{AA: .7}},
	}
	near := func(a, b *float64) bool {
		if a == nil || b == nil {
			return a == b
		}
		return math.Abs(*a-*b) < 1e-12
	}
	for _, c := range cases {
		got := c.m.Compute()
		if !near(&got.AA, &c.want.AA) || !near(got.BWT, c.want.BWT) || !near(got.Forgetting, c.want.Forgetting) || !near(got.FWT, c.want.FWT) {
			t.Errorf("%s: got %s, want %s", c.name, metricsText(got), metricsText(c.want))
		}
	}
}

func metricsText(m Metrics) string {
	p := func(v *float64) string {
		if v == nil {
			return "nil"
		}
		return fmt.Sprint(*v)
	}
	return fmt.Sprintf("AA %v BWT %s forgetting %s FWT %s", m.AA, p(m.BWT), p(m.Forgetting), p(m.FWT))
}

func TestStatOf(t *testing.T) {
	s := statOf([]float64{1, 2, 3, 4})
	// mean 2.5, sample variance (2.25+.25+.25+2.25)/3 = 5/3.
	if s.Mean != 2.5 || math.Abs(s.Std-math.Sqrt(5.0/3)) > 1e-12 || s.N != 4 {
		t.Errorf("statOf = %+v", s)
	}
	if s := statOf([]float64{.3}); s.Std != 0 {
		t.Errorf("one value: std %v", s.Std)
	}
}

// Sequence files: good ones resolve paths; mistakes are bad input naming
// the file and line, before any training.
func TestReadSequence(t *testing.T) {
	root := t.TempDir()
	writeFixture(t, filepath.Join(root, "data"), 4, 2)
	os.MkdirAll(filepath.Join(root, "data", "X", "empty"), 0o755)
	os.WriteFile(filepath.Join(root, "data", "X", "empty", "train.json"), []byte("[]"), 0o644)
	os.WriteFile(filepath.Join(root, "data", "X", "empty", "test.json"), []byte(`[{"sentence":"a","label":"b"}]`), 0o644)
	os.MkdirAll(filepath.Join(root, "data", "X", "extra"), 0o755)
	os.WriteFile(filepath.Join(root, "data", "X", "extra", "train.json"), []byte(`[{"sentence":"a","label":"b"}]`), 0o644)
	os.WriteFile(filepath.Join(root, "data", "X", "extra", "test.json"), []byte(`[{"sentence":"a","label":"b"},{"sentence":"c","label":"z"},{"sentence":"d","label":"z"}]`), 0o644)

	cases := []struct {
		name, yaml string
		parse      string // error of ReadSequence, "" for none
		check      string // error of Check
		warn       string
	}{
		{name: "good", yaml: "name: s\ndata_dir: data\ntrain_samples: 3\ntasks:\n  - name: weather\n    train: TC/weather/train.json\n    test: TC/weather/test.json\n  - name: pets\n    train: SC/pets/train.json\n    test: SC/pets/test.json\n"},
		{name: "invalid yaml", yaml: "name: s\ntasks:\n  - name: a\n    train: x: y\n", parse: "s.yaml:4: mapping values are not allowed in this context"},
		{name: "unclosed flow mapping on line 2", yaml: "tasks:\n  - {name: a\n", parse: "s.yaml:2: did not find expected ',' or '}'"},
		{name: "key outside the list on line 3", yaml: "tasks:\n  - name: a\n  name: b\n", parse: "s.yaml:3: did not find expected '-' indicator"},
		{name: "tab on line 3", yaml: "tasks:\n  - name: a\n\t- name: b\n", parse: "s.yaml:3: found a tab character that violates indentation"},
		{name: "unknown field", yaml: "name: s\ntasks:\n  - name: a\n    trian: x.json\n", parse: `s.yaml:4: unknown task field "trian"`},
		{name: "unknown task", yaml: "tasks:\n  - name: weather\n    train: data/TC/weather/train.json\n    test: data/TC/weather/test.json\n  - name: nosuch\n", parse: `s.yaml:5: unknown task "nosuch"`},
		{name: "no tasks", yaml: "name: s\n", parse: "no tasks"},
		{name: "train without test", yaml: "tasks:\n  - name: a\n    train: a.json\n", parse: `s.yaml:2: task "a" has a train file but no test file`},
		{name: "duplicate", yaml: "tasks:\n  - {name: a, train: a, test: b}\n  - {name: a, train: a, test: b}\n", parse: `s.yaml:3: task "a" appears twice (first at line 2)`},
		{name: "missing file", yaml: "tasks:\n  - name: a\n    train: data/TC/weather/nope.json\n    test: data/TC/weather/test.json\n", check: `s.yaml:2: task "a": data file ` + filepath.Join(root, "data/TC/weather/nope.json") + " does not exist"},
		{name: "empty task", yaml: "tasks:\n  - name: e\n    train: data/X/empty/train.json\n    test: data/X/empty/test.json\n", check: `s.yaml:2: task "e": ` + filepath.Join(root, "data/X/empty/train.json") + ": no records"},
		{name: "test labels the train set lacks", yaml: "tasks:\n  - name: x\n    train: data/X/extra/train.json\n    test: data/X/extra/test.json\n", warn: `task x: 2 of 3 test rows have a label the training rows lack (1 label(s), e.g. "z")`},
	}
	for _, c := range cases {
		path := filepath.Join(root, "s.yaml")
		os.WriteFile(path, []byte(c.yaml), 0o644)
		seq, err := ReadSequence(path)
		if c.parse != "" {
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.parse) {
				t.Errorf("%s: error %v, want bad input with %q", c.name, err, c.parse)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		warnings, err := Check(seq)
		if c.check != "" {
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.check) {
				t.Errorf("%s: Check error %v, want bad input with %q", c.name, err, c.check)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Check: %v", c.name, err)
		}
		if got := strings.Join(warnings, "\n"); c.warn != got && !(c.warn != "" && strings.Contains(got, c.warn)) {
			t.Errorf("%s: warnings %q, want %q", c.name, got, c.warn)
		}
		if c.name == "good" && (seq.TrainSamples != 3 || len(seq.Tasks) != 2 || seq.Tasks[1].Train != filepath.Join(root, "data/SC/pets/train.json")) {
			t.Errorf("good: %+v", seq)
		}
	}
}

// Built-in orders follow the papers; absent tasks are skipped and named.
func TestBuiltinOrders(t *testing.T) {
	root := t.TempDir()
	for _, task := range []string{"dbpedia", "amazon", "agnews"} {
		dir := filepath.Join(root, benchmarkTasks[task])
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{"train.json", "test.json"} {
			os.WriteFile(filepath.Join(dir, f), []byte(`[{"sentence":"a","label":"b"}]`), 0o644)
		}
	}
	seq, err := Resolve("order3", root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, t := range seq.Tasks {
		names = append(names, t.Name)
	}
	if strings.Join(names, ",") != "amazon,agnews,dbpedia" || len(seq.Skipped) != 1 || seq.Skipped[0].Task != "yahoo" {
		t.Errorf("order3: tasks %v, skipped %+v", names, seq.Skipped)
	}
	if seq, err := Resolve("order4", root); err != nil || seq.TrainSamples != LongTrainSamples || len(seq.Skipped) != 12 {
		t.Errorf("order4: %v, %+v", err, seq)
	}
	for _, bad := range []string{"order7", "order0"} {
		if _, err := Resolve(bad, root); !badinput.Is(err) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := Resolve("order1", filepath.Join(root, "none")); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Errorf("absent data dir: %v", err)
	}
	t.Setenv(DataDirEnv, root)
	if got := DefaultDataDir(); got != root {
		t.Errorf("DefaultDataDir with $%s: %s", DataDirEnv, got)
	}
	t.Setenv(DataDirEnv, "")
	if got := DefaultDataDir(); !strings.HasSuffix(got, filepath.Join("shared", "data", "cl_benchmark")) {
		t.Errorf("DefaultDataDir: %s", got)
	}
	for o := range orders {
		tasks, ok := Order(o)
		if !ok {
			t.Fatalf("Order(%s) is not found", o)
		}
		if want := map[bool]int{true: 4, false: 15}[o <= "order3"]; len(tasks) != want {
			t.Errorf("%s has %d tasks", o, len(tasks))
		}
	}
}

func TestParseMethods(t *testing.T) {
	ms, err := ParseMethods(AllMethods)
	if err != nil || len(ms) != 4 || !ms[1].MIGU || ms[1].Adapter != "" || ms[3].Adapter != lora.Kind || !ms[3].MIGU || ms[3].Base() != lora.Kind {
		t.Errorf("%+v %v", ms, err)
	}
	for _, bad := range []string{"", "full,full", "adapter", "full+magic"} {
		if _, err := ParseMethods(bad); !badinput.Is(err) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// cancelAfter is a progress writer that cancels a context at the n-th
// trainer step line after a line containing marker.
type cancelAfter struct {
	mu     sync.Mutex
	marker string
	n      int
	armed  bool
	cancel context.CancelFunc
	buf    bytes.Buffer
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, c.marker) {
			c.armed = true
		}
		if c.armed && strings.HasPrefix(line, "step ") {
			if c.n--; c.n == 0 {
				c.cancel()
			}
		}
	}
	return len(p), nil
}

func lines(t *testing.T, path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(raw, []byte("\n"))
}

// A run interrupted inside task 2 continues there with --resume: task 1
// is not trained again, task 2 resumes from its checkpoint's step, and
// the finished run has the full matrices, metrics, mask overlap and plots.
func TestRunResume(t *testing.T) {
	model := tinyLlama(t)
	root := t.TempDir()
	seq := writeFixture(t, filepath.Join(root, "data"), 24, 6)
	out := filepath.Join(root, "run")
	methods, _ := ParseMethods("full+migu,lora")
	o := DefaultOptions()
	o.Model, o.Out, o.Methods, o.Seeds = model, out, methods, []uint64{1}
	o.Job.Train.Optim, o.Job.Train.ClipNorm = train.DefaultAdamW(), 0
	o.Job.Epochs, o.Job.BatchSize, o.Job.MaxSteps, o.Job.MaxLen = 0, 4, 4, 128
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAfter{marker: "task 2/3", n: 2, cancel: cancel}
	o.Progress = w
	rep, err := Run(ctx, seq, o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Stopped {
		t.Fatalf("not stopped:\n%s", w.buf.String())
	}
	if _, err := os.Stat(filepath.Join(out, ResultsFile)); err == nil {
		t.Error("a stopped run wrote results.json")
	}
	task1 := filepath.Join(out, "full+migu", "seed-1", "01-weather", train.MetricsFile)
	n1 := lines(t, task1)
	if n1 != 4 {
		t.Errorf("task 1 logged %d steps, want 4", n1)
	}

	o.Resume = true
	o.Progress = nil
	if _, err := Run(context.Background(), seq, Options{Model: model, Out: out, Methods: methods, Seeds: []uint64{2}, Job: o.Job, Resume: true}); !badinput.Is(err) {
		t.Errorf("resume with other seeds: %v", err)
	}
	rep, err = Run(context.Background(), seq, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stopped || len(rep.Runs) != 2 {
		t.Fatalf("stopped %v, %d runs", rep.Stopped, len(rep.Runs))
	}
	if n := lines(t, task1); n != n1 {
		t.Errorf("task 1 was trained again: %d metric lines, before %d", n, n1)
	}
	mig := rep.Runs[0]
	if mig.Tasks[0].Trained || !mig.Tasks[1].Trained || mig.Tasks[1].Resumed != 2 || mig.Tasks[1].Steps != 4 {
		t.Errorf("tasks after resume: %+v", mig.Tasks)
	}
	if n := lines(t, filepath.Join(out, "full+migu", "seed-1", "02-pets", train.MetricsFile)); n != 4 {
		t.Errorf("task 2 logged %d steps over both runs, want 4", n)
	}
	for _, rr := range rep.Runs {
		m := rr.Matrices[eval.CLRank]
		if len(m.R) != 3 || len(m.Base) != 3 {
			t.Fatalf("%s: matrix %v", rr.Method, m)
		}
		for _, row := range m.R {
			if len(row) != 3 {
				t.Fatalf("%s: row %v", rr.Method, row)
			}
		}
		got := rr.Metrics[eval.CLRank]
		aa := (m.R[2][0] + m.R[2][1] + m.R[2][2]) / 3
		bwt := (m.R[2][0] - m.R[0][0] + m.R[2][1] - m.R[1][1]) / 2
		if math.Abs(got.AA-aa) > 1e-12 || got.BWT == nil || math.Abs(*got.BWT-bwt) > 1e-12 {
			t.Errorf("%s: AA %v BWT %v, by hand %v %v", rr.Method, got.AA, got.BWT, aa, bwt)
		}
	}
	ov := mig.Overlap
	if ov == nil || len(ov.Consecutive) != 2 || len(ov.Layers) == 0 || ov.Pairs[0][0] != 1 {
		t.Fatalf("overlap %+v", ov)
	}
	if rep.Runs[1].Overlap != nil {
		t.Error("a run without MIGU has a mask overlap")
	}
	if len(rep.Plots) != 5 { // matrix and curves per method, overlap for full+migu
		t.Errorf("plots %v", rep.Plots)
	}
	for _, p := range rep.Plots {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Errorf("%s: %v", p, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, ReportFile))
	for _, want := range []string{"| full+migu |", "| lora |", "MIGU mask overlap", "weather → pets"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// A finished run resumed again trains nothing.
	rep, err = Run(context.Background(), seq, o)
	if err != nil || rep.Runs[0].Tasks[2].Trained {
		t.Errorf("second resume: %v", err)
	}
}

// A LoRA job started from an adapter continues it: with learning rate 0
// the second job's adapter is the first one's, value for value (a fresh
// adapter would have B = 0).
func TestLoRAContinuesAdapter(t *testing.T) {
	model := tinyLlama(t)
	root := t.TempDir()
	seq := writeFixture(t, filepath.Join(root, "data"), 8, 2)
	job := finetune.JobOptions{Model: model, Data: seq.Tasks[0].Train, Out: filepath.Join(root, "a"), Method: lora.Kind,
		Adapter: lora.DefaultConfig().Settings(), Train: train.Config{GradAccum: 1, Optim: train.DefaultAdamW()}, BatchSize: 4, MaxSteps: 2, MaxLen: 128}
	job.Train.Optim.LR = 1e-2
	first, err := finetune.RunJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	job.Data, job.Out, job.InitAdapter = seq.Tasks[1].Train, filepath.Join(root, "b"), first.Output
	job.Train.Optim.LR = 0
	second, err := finetune.RunJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(first.Output, "adapter_model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(second.Output, "adapter_model.safetensors"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Error("the second job did not start from the first job's adapter")
	}
	job.Out, job.InitAdapter = filepath.Join(root, "c"), ""
	fresh, err := finetune.RunJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := os.ReadFile(filepath.Join(fresh.Output, "adapter_model.safetensors"))
	if bytes.Equal(a, c) {
		t.Error("a fresh adapter equals the trained one")
	}
}

// Training and test rows are written under the training file's folder
// names, so that evaluation prompts the way training did even when the
// test file lives elsewhere; the rows drawn follow the counts and seeds.
func TestSampledFiles(t *testing.T) {
	model := tinyLlama(t)
	root := t.TempDir()
	seq := writeFixture(t, filepath.Join(root, "data"), 20, 10)
	other := filepath.Join(root, "elsewhere", "tests")
	os.MkdirAll(other, 0o755)
	raw, _ := os.ReadFile(seq.Tasks[0].Test)
	os.WriteFile(filepath.Join(other, "t.json"), raw, 0o644)
	seq.Tasks[0].Test = filepath.Join(other, "t.json")
	seq.TrainSamples, seq.TestSamples = 5, 4
	o := DefaultOptions()
	o.Model, o.Out = model, filepath.Join(root, "run")
	r, err := newRunner(seq, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.lock.Release()
	tr, err := r.trainFile(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	te, err := r.testFile(0)
	if err != nil {
		t.Fatal(err)
	}
	tt, td := promptDirs(tr)
	et, ed := promptDirs(te)
	if tt != "TC" || td != "weather" || et != tt || ed != td {
		t.Errorf("train in %s/%s, test in %s/%s", tt, td, et, ed)
	}
	for path, want := range map[string]int{tr: 5, te: 4} {
		var rows []map[string]string
		raw, _ := os.ReadFile(path)
		if err := json.Unmarshal(raw, &rows); err != nil || len(rows) != want {
			t.Errorf("%s: %d rows (%v), want %d", path, len(rows), err, want)
		}
	}
	other1, _ := os.ReadFile(tr)
	tr2, _ := r.trainFile(0, 2)
	other2, _ := os.ReadFile(tr2)
	if bytes.Equal(other1, other2) {
		t.Error("seeds 1 and 2 drew the same training rows")
	}
}

// A validation split is held out of each training file before the
// training rows are drawn, shares no row with them, and is scored after
// every task under validation-rank beside the test rows' rank; holding out
// every training row is bad input naming the file.
func TestValidationSplit(t *testing.T) {
	model := tinyLlama(t)
	root := t.TempDir()
	seq := writeFixture(t, filepath.Join(root, "data"), 20, 6)
	seq.ValSamples = 7
	o := DefaultOptions()
	o.Model, o.Out, o.Seeds = model, filepath.Join(root, "run"), []uint64{1}
	o.Job.Epochs, o.Job.BatchSize, o.Job.MaxSteps, o.Job.MaxLen = 0, 4, 2, 128
	rep, err := Run(context.Background(), seq, o)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rank", ValidationPrefix + "rank"}; !slices.Equal(rep.Scores, want) {
		t.Fatalf("scores %v, want %v", rep.Scores, want)
	}
	for _, s := range rep.Scores {
		m := rep.Runs[0].Matrices[s]
		if len(m.Base) != len(seq.Tasks) || len(m.R) != len(seq.Tasks) || len(m.R[len(m.R)-1]) != len(seq.Tasks) {
			t.Fatalf("%s: matrix %v / %v is not %d tasks square", s, m.Base, m.R, len(seq.Tasks))
		}
		// The per-item outcomes are behind every accuracy: 6 test rows or
		// 7 validation rows per task.
		rows := 6
		if strings.HasPrefix(s, ValidationPrefix) {
			rows = 7
		}
		accs, items := append([][]float64{m.Base}, m.R...), append([][]string{m.BaseItems}, m.RItems...)
		if len(items) != len(accs) {
			t.Fatalf("%s: %d rows of items for %d rows of accuracies", s, len(items), len(accs))
		}
		for i := range accs {
			for j, acc := range accs[i] {
				if it := items[i][j]; len(it) != rows || float64(strings.Count(it, "1"))/float64(rows) != acc {
					t.Errorf("%s row %d task %d: items %q, accuracy %v", s, i, j, it, acc)
				}
			}
		}
	}
	readRows := func(path string) map[string]bool {
		var rows []map[string]string
		raw, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(raw, &rows) != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out := map[string]bool{}
		for _, r := range rows {
			out[r["sentence"]+"\x00"+r["label"]] = true
		}
		return out
	}
	for i, task := range seq.Tasks {
		dir := taskDir(i, task)
		tt, td := promptDirs(task.Train)
		val := readRows(filepath.Join(o.Out, "data", "validation", dir, tt, td, "validation.json"))
		tr := readRows(filepath.Join(o.Out, "data", "seed-1", dir, tt, td, "train.json"))
		if len(val) == 0 || len(tr) == 0 {
			t.Fatalf("task %s: %d validation and %d training rows", task.Name, len(val), len(tr))
		}
		for r := range val {
			if tr[r] {
				t.Errorf("task %s: validation row %q is also a training row", task.Name, r)
			}
		}
	}
	seq.ValSamples = 20
	o.Out = filepath.Join(root, "run2")
	if _, err := Run(context.Background(), seq, o); !badinput.Is(err) || !strings.Contains(err.Error(), "leaves none to train on") || !strings.Contains(err.Error(), "train.json") {
		t.Errorf("every row held out: %v", err)
	}
}

// Options.Check refuses each number outside its range with one line
// naming the flag, and MIGU's T is taken as given: 0 stays 0 (it was
// once replaced by 0.7).
func TestOptionsCheck(t *testing.T) {
	loraOnly, _ := ParseMethods("lora")
	cases := []struct {
		name string
		set  func(*Options, *Sequence)
		want string // "" passes
	}{
		{"defaults", func(*Options, *Sequence) {}, ""},
		{"T 0", func(o *Options, _ *Sequence) { o.Job.Train.T = 0 }, ""},
		{"T 1", func(o *Options, _ *Sequence) { o.Job.Train.T = 1 }, "migu_t 1 is outside [0, 1)"},
		{"eval batch", func(o *Options, _ *Sequence) { o.EvalBatch = -1 }, "eval_batch_size -1 is outside its range: ≥ 0"},
		{"train samples", func(_ *Options, s *Sequence) { s.TrainSamples = -1 }, "train_samples -1 is outside its range: ≥ 0"},
		{"test samples", func(_ *Options, s *Sequence) { s.TestSamples = -2 }, "test_samples -2 is outside"},
		{"val samples", func(_ *Options, s *Sequence) { s.ValSamples = -1 }, "val_samples -1 is outside"},
		{"epochs", func(o *Options, _ *Sequence) { o.Job.Epochs = -1 }, "epochs -1 is outside"},
		{"lr", func(o *Options, _ *Sequence) { o.Job.Train.Optim.LR = math.Inf(1) }, "lr +Inf is outside"},
		{"lora r 0, full", func(o *Options, _ *Sequence) { o.Job.Adapter[lora.OptionR] = "0" }, ""},
		{"lora r 0, lora", func(o *Options, _ *Sequence) { o.Methods, o.Job.Adapter[lora.OptionR] = loraOnly, "0" }, "lora-r 0 is outside"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, seq := DefaultOptions(), NewSequence("s")
			c.set(&o, seq)
			err := o.Check(seq)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want bad input with %q", err, c.want)
			}
		})
	}
	model := tinyLlama(t)
	seq := writeFixture(t, filepath.Join(t.TempDir(), "data"), 8, 2)
	o := DefaultOptions()
	o.Model, o.Out, o.Job.Train.T = model, filepath.Join(t.TempDir(), "run"), 0
	r, err := newRunner(seq, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.lock.Release()
	if r.o.Job.Train.T != 0 {
		t.Errorf("T 0 became %v", r.o.Job.Train.T)
	}
	if _, err := newRunner(seq, o); !badinput.Is(err) || !strings.Contains(err.Error(), "is in use by PID") {
		t.Errorf("a second runner on the same folder: %v", err)
	}
}
