package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/internal/testfix"
)

// fixture is a made-up results set with known outcomes: 20 items per
// task, the starting model right on the first 10 of each, full right on
// every item (a difference far beyond its uncertainty), full+migu equal
// to the start except on 2 items (within it), two held-out documents and
// four HumanEval problems.
func fixture() *CodeResults {
	items := func(right func(i int) bool) map[string][]float64 {
		out := map[string][]float64{}
		for _, t := range suiteTasks {
			for i := range 20 {
				v := 0.0
				if right(i) {
					v = 1
				}
				out[t] = append(out[t], v)
			}
		}
		return out
	}
	tl := func(lr float64) *TrainLog {
		return &TrainLog{LR: lr, Steps: 4, Loss: []float64{2, 1.5, 1.2, 1}, StepSeconds: 8, WallSeconds: 12, CPUSeconds: 20, PeakRSSMB: 3000}
	}
	return &CodeResults{
		Config: CodeConfig{Model: ".deps/models/smollm2", Methods: []string{"full", "full+migu"}, Seeds: []uint64{1}, Records: 16, Heldout: 2,
			Items: 20, HumanEval: 4, MaxNewTokens: 64, LRFull: 1e-4, LRLoRA: 1e-4, T: 0.7, Epochs: 1, Batch: 8, MaxLen: 512, Resamples: 500, Template: "chat"},
		Machine: "test", Commands: []string{"bin/migu train --model m --data d"},
		Timings: []Timing{{Command: "bin/migu train --model m --data d", Wall: 12, CPU: 20, PeakRSSMB: 3000}},
		Models: []ModelResult{
			{Method: "before", Items: items(func(i int) bool { return i < 10 }), CodeLogLik: []float64{-20, -10}, CodeTokens: []int{10, 10},
				HumanEval: []float64{0, 0, 1, 0}, Seconds: map[string]float64{"suite": 60, "code_ppl": 2}},
			{Method: "full", Seed: 1, Train: tl(1e-4), Items: items(func(int) bool { return true }), CodeLogLik: []float64{-10, -5}, CodeTokens: []int{10, 10},
				HumanEval: []float64{1, 0, 1, 0}, Seconds: map[string]float64{"suite": 60}},
			{Method: "full+migu", Seed: 1, Train: tl(1e-4), Items: items(func(i int) bool { return i < 10 || i == 15 || i == 16 }), CodeLogLik: []float64{-19, -10},
				CodeTokens: []int{10, 10}, HumanEval: []float64{0, 0, 1, 0}, Seconds: map[string]float64{"suite": 60}},
		},
	}
}

// TestCodeReport writes the report of the fixture and checks its numbers
// against hand computations, its words about uncertainty, and its plots.
func TestCodeReport(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "RESULTS-code")
	if err := writeCode(fixture(), base); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(base + ".md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(md)
	// before: 10 of 20 right, stderr √(0.25·20/19)/√20 = 0.1147; full: 20 of 20, stderr 0;
	// full+migu: 12 of 20, stderr √(0.6·0.4·20/19)/√20 = 0.1124.
	// Code perplexity before: exp(30/20) = 4.482; full: exp(15/20) = 2.117.
	// HumanEval before 1/4, stderr √(0.25·0.75·4/3)/2 = 0.25.
	for _, want := range []string{
		"| before | 1 | 50.0 ± 11.5 | 50.0 ± 11.5 | 50.0 ± 11.5 | 50.0 ± 6.6 | 4.482 ± ",
		"| 25.0 ± 25.0 |",
		"| full | 1 | 100.0 ± 0.0 |",
		"| full+migu | 1 | 60.0 ± 11.2 |",
		"| before | full | HellaSwag acc_norm | +50.0 [+",
		"| 10/0/10 | 0.00195 | yes |",
		"| full | full+migu | HellaSwag acc_norm | -40.0 [",
		"| 0/8/12 | 0.00781 | yes |",
		"| before | full+migu | Winogrande acc | +10.0 [",
		"| 2/0/18 | 0.5 | no |",
		"| before | full | held-out code perplexity | -2.365 [",
		"| full | 1 | 0.0001 | 4 | 2.0000 → 1.0000 (1.4250) | 2.00 | 12 | 20 | 3.00 |",
		"| before | 0 | 60 (1.00) | 2 (1.00) |",
		"![RESULTS-code-general.png](plots/RESULTS-code-general.png)",
		"bin/migu train --model m --data d",
		"| `bin/migu train --model m --data d` | 12 | 20 | 3.00 |",
		"Differences larger than their uncertainty (95% interval excludes 0): full − before on HellaSwag acc_norm",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "full+migu − before on HellaSwag") {
		t.Errorf("the 2-item difference is reported as beyond its uncertainty:\n%s", text)
	}
	for _, name := range []string{"general", "code-ppl", "humaneval", "loss"} {
		checkPNG(t, filepath.Join(dir, "plots", "RESULTS-code-"+name+".png"))
	}
	// The JSON holds everything: rewriting the report from it gives the
	// same Markdown.
	os.Remove(base + ".md")
	if err := rewriteReport(base + ".json"); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(base + ".md")
	if !bytes.Equal(again, md) {
		t.Error("the report rewritten from the JSON differs")
	}
}

// checkPNG decodes a PNG and checks it is a real picture: larger than a
// thumbnail and with more than two colours.
func checkPNG(t *testing.T, path string) {
	t.Helper()
	img := testfix.DecodePNG(t, path, 200, 150)
	if n := colours(img); n < 3 {
		t.Errorf("%s: %d colours", path, n)
	}
}

func colours(img image.Image) int {
	seen := map[color.RGBA]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bb, a := img.At(x, y).RGBA()
			seen[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bb >> 8), uint8(a >> 8)}] = true
		}
	}
	return len(seen)
}

// TestCLReport writes the CL report of a made-up continual result: the
// comparison table, MIGU's per-seed differences and the copied plots.
func TestCLReport(t *testing.T) {
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run-1")
	plot := filepath.Join(runDir, continual.PlotsDir, "matrix-full-rank.png")
	os.MkdirAll(filepath.Dir(plot), 0o755)
	var buf bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	png.Encode(&buf, img)
	os.WriteFile(plot, buf.Bytes(), 0o644)
	mat := func(last float64) continual.Matrix {
		return continual.Matrix{Base: []float64{.1, .2}, R: [][]float64{{.9, .3}, {last, .8}}}
	}
	rep := &continual.Report{Sequence: "order1", Tasks: []string{"dbpedia", "amazon"}, Scores: []string{"rank"}, Out: runDir, Plots: []string{plot},
		Config: continual.ReportConfig{Model: "m", Methods: []string{"full", "full+migu"}, Seeds: []uint64{1, 2}, TrainSamples: 16, TestSamples: 20}}
	rep.Config.Job.Train.Optim.LR = 1e-4
	for _, seed := range []uint64{1, 2} {
		for m, last := range map[string]float64{"full": .5, "full+migu": .7} {
			last += float64(seed) / 100
			mm := mat(last)
			met := mm.Compute()
			rep.Runs = append(rep.Runs, continual.RunReport{Method: m, Seed: seed, Matrices: map[string]continual.Matrix{"rank": mm},
				Metrics: map[string]continual.Metrics{"rank": met}, Tasks: []continual.TaskReport{{Task: "dbpedia", Steps: 2, FirstLoss: 3, LastLoss: 1, Seconds: 5}}})
		}
	}
	rep.Summary = []continual.Summary{{Method: "full", Score: "rank", AA: continual.Stat{Mean: .655, Std: .007, N: 2}, BWT: &continual.Stat{Mean: -.385, N: 2}, Mean: mat(.5)}}
	res := &CLResults{Machine: "test", Commands: []string{"bin/migu continual"}, Reports: []*continual.Report{rep}}
	base := filepath.Join(dir, "out", "RESULTS-cl")
	if err := writeCL(res, base, true); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(base + ".md")
	text := string(md)
	// full's last row (0.5+s/100, 0.8) against full+migu's (0.7+s/100, 0.8):
	// ΔAA = 10 points on both seeds; ΔBWT = 20 points.
	for _, want := range []string{"dbpedia → amazon", "| full | full+migu | 0.0001 | 1: +10.0, 2: +10.0 | +10.0 ± 0.0 | – | 1: +20.0, 2: +20.0 | +20.0 ± 0.0 | – |",
		"| full | 0.0001 | 65.5 ± 0.7 |", "| start | 10.0 | 20.0 |", "| full | 0.0001 | 1 | dbpedia | 2 | 3.0000 → 1.0000 | 2.50 |",
		"![matrix-full-rank.png](plots/RESULTS-cl/matrix-full-rank.png)"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "plots", "RESULTS-cl", "matrix-full-rank.png")); err != nil {
		t.Error("plot not copied")
	}
	var back CLResults
	raw, _ := os.ReadFile(base + ".json")
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Reports) != 1 || len(back.Plots) != 1 {
		t.Fatalf("results JSON: %v, %+v", err, back)
	}
	os.Remove(base + ".md")
	if err := rewriteReport(base + ".json"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(base + ".md"); !bytes.Equal(again, md) {
		t.Errorf("rewritten CL report differs:\n%s", again)
	}
}

// Each method's learning rate is the candidate with the best validation
// AA, whatever the test rows say; the comparison at the chosen rates pairs
// each +migu method with its base at their own choices.
func TestChooseLR(t *testing.T) {
	stat := func(v float64) continual.Stat { return continual.Stat{Mean: v, N: 1} }
	report := func(lr float64, val, test map[string]float64) *continual.Report {
		rep := &continual.Report{Tasks: []string{"a"}, Scores: []string{"rank", "validation-rank"},
			Config: continual.ReportConfig{Methods: []string{"full", "full+migu"}, ValSamples: 10}}
		rep.Config.Job.Train.Optim.LR = lr
		for _, m := range rep.Config.Methods {
			rep.Summary = append(rep.Summary, continual.Summary{Method: m, Score: "rank", AA: stat(test[m])},
				continual.Summary{Method: m, Score: "validation-rank", AA: stat(val[m])})
			rep.Runs = append(rep.Runs, continual.RunReport{Method: m, Seed: 1, Metrics: map[string]continual.Metrics{"rank": {AA: test[m]}}})
		}
		return rep
	}
	res := &CLResults{Reports: []*continual.Report{
		report(1e-4, map[string]float64{"full": .5, "full+migu": .6}, map[string]float64{"full": .9, "full+migu": .2}),
		report(1e-3, map[string]float64{"full": .7, "full+migu": .6}, map[string]float64{"full": .1, "full+migu": .8}),
	}}
	choices := chooseLR(lrRuns(res))
	got := map[string]float64{}
	for _, c := range choices {
		got[c.method] = c.cands[c.chosen].lr
	}
	// full: validation .7 at 1e-3 beats .5; full+migu: a tie keeps 1e-4.
	if want := map[string]float64{"full": 1e-3, "full+migu": 1e-4}; !maps.Equal(got, want) {
		t.Fatalf("chosen %v, want %v", got, want)
	}
	text := clMarkdown(res, t.TempDir())
	for _, want := range []string{"| full | 0.001 | 70.0 | 10.0 | – | ✓ |", "| full+migu | 0.0001 | 60.0 | 20.0 | – | ✓ |",
		"| full | full+migu | 0.001 / 0.0001 | 1: +10.0 |"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if one := chooseLR(lrRuns(&CLResults{Reports: res.Reports[:1]})); one != nil {
		t.Errorf("one learning rate per method: chose %v", one)
	}
}

// Per-item differences, worked by hand: two tasks of two items, two seeds.
func TestItemDiffs(t *testing.T) {
	run := func(method string, rows map[uint64][][]string) lrRun {
		r := lrRun{method: method, seeds: map[uint64]continual.RunReport{}}
		for seed, items := range rows {
			r.seeds[seed] = continual.RunReport{Method: method, Seed: seed, Matrices: map[string]continual.Matrix{"rank": {BaseItems: []string{"00", "00"}, RItems: items}}}
		}
		return r
	}
	// Rows: after task 1, after task 2; columns: tasks.
	base := run("full", map[uint64][][]string{1: {{"11", "00"}, {"01", "11"}}, 2: {{"11", "00"}, {"00", "11"}}})
	mg := run("full+migu", map[uint64][][]string{1: {{"11", "00"}, {"11", "11"}}, 2: {{"10", "00"}, {"10", "01"}}})
	aa, bwt, ok := itemDiffs(base, mg)
	if !ok {
		t.Fatal("no item differences")
	}
	// Seed 1: last rows 11|11 vs 01|11 → task 1 (+1, 0), task 2 (0, 0).
	// Seed 2: 10|01 vs 00|11 → task 1 (+1, 0), task 2 (−1, 0).
	// BWT of task 1: seed 1 migu (11−11)=(0,0), base (01−11)=(−1,0) → (+1, 0);
	// seed 2 migu (10−10)=(0,0), base (00−11)=(−1,−1) → (+1, +1).
	wantAA, wantBWT := [][]float64{{1, 0}, {-0.5, 0}}, [][]float64{{1, 0.5}}
	if !reflect.DeepEqual(aa, wantAA) || !reflect.DeepEqual(bwt, wantBWT) {
		t.Fatalf("aa %v bwt %v, want %v and %v", aa, bwt, wantAA, wantBWT)
	}
	// ΔAA = mean over tasks (0.5, −0.25) = +12.5 points; ΔBWT = +75.
	if got := taskMeanInterval(aa); !strings.HasPrefix(got, "+12.5 [") {
		t.Errorf("ΔAA interval %q", got)
	}
	if got := taskMeanInterval(bwt); !strings.HasPrefix(got, "+75.0 [+50.0, +100.0] *") {
		t.Errorf("ΔBWT interval %q", got)
	}
	delete(mg.seeds, 1)
	delete(mg.seeds, 2)
	if _, _, ok := itemDiffs(base, mg); ok {
		t.Error("differences without common seeds")
	}
}

// real table gathers the runs of several results files by method, lr, T
// and validation split, each seed once.
func TestCLTable(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, T float64, val int, runs map[string]map[uint64]float64) string {
		rep := &continual.Report{Tasks: []string{"a", "b"}, Config: continual.ReportConfig{ValSamples: val}}
		rep.Config.Job.Train.Optim.LR, rep.Config.Job.Train.T = 1e-4, T
		for m, seeds := range runs {
			for seed, aa := range seeds {
				bwt := aa - 1
				rep.Runs = append(rep.Runs, continual.RunReport{Method: m, Seed: seed, Metrics: map[string]continual.Metrics{"rank": {AA: aa, BWT: &bwt}}})
			}
		}
		raw, _ := json.Marshal(&CLResults{Reports: []*continual.Report{rep}})
		p := filepath.Join(dir, name)
		os.WriteFile(p, raw, 0o644)
		return p
	}
	a := file("a.json", 0.7, 0, map[string]map[uint64]float64{"full": {1: .4}, "full+migu": {1: .5}})
	b := file("b.json", 0.7, 0, map[string]map[uint64]float64{"full": {2: .6, 1: .9}, "full+migu": {2: .3}})
	c := file("c.json", 0.5, 0, map[string]map[uint64]float64{"full+migu": {1: .2}})
	d := file("d.json", 0.7, 30, map[string]map[uint64]float64{"full": {1: .8}})
	text, err := clTable([]string{a, b, c, d})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| full | 0 | 0.0001 | – | 2 | 1: 40.0, 2: 60.0 | 50.0 ± 14.1 | 1: -60.0, 2: -40.0 | -50.0 ± 14.1 |", // b's seed 1 is a's
		"| full+migu | 0 | 0.0001 | 0.5 | 1 | 1: 20.0 | 20.0 |",
		"| full+migu | 0 | 0.0001 | 0.7 | 2 | 1: 50.0, 2: 30.0 | 40.0 ± 14.1 |",
		"| full | 30 | 0.0001 | – | 1 | 1: 80.0 |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	if _, err := clTable([]string{filepath.Join(dir, "none.json")}); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseCode([]string{"-records", "16", "-heldout", "4", "-items", "20", "-seeds", "1,2", "-methods", "full,lora+migu", "-lr-lora", "3e-4"})
	if err != nil {
		t.Fatal(err)
	}
	if o.records != 16 || len(o.seeds) != 2 || len(o.methods) != 2 || o.lr("lora+migu") != 3e-4 || o.lr("full") != 1e-4 {
		t.Errorf("parsed %+v", o)
	}
	if got := o.runName("lora+migu"); got != "lora-migu-lr0.0003-e1-b8-len512-T0.7-r8-a32-qv" {
		t.Errorf("run name %q", got)
	}
	if got := o.runName("full"); got != "full-lr0.0001-e1-b8-len512" {
		t.Errorf("run name %q", got)
	}
	if got := o.resultsBase("code"); got != filepath.Join("benchmarks", "real", "RESULTS-code") {
		t.Errorf("results base %q", got)
	}
	for _, args := range [][]string{
		{"-methods", "full,sgd"},
		{"-seeds", "x"},
		{"-seeds", ""},
		{"-T", "1"},
		{"-records", "0"},
	} {
		if _, err := parseCode(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	for _, args := range [][]string{
		{"-train-samples", "0"},
		{"-lr-grid-full", "1e-4,1e-3"},
		{"-val-samples", "10", "-lr-grid-lora", "1e-4,x"},
		{"-val-samples", "10", "-lr-grid-lora", "0"},
	} {
		if _, err := parseCL(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	cl, err := parseCL([]string{"-val-samples", "10", "-lr-grid-lora", "1e-4,1e-3,1e-4", "-lr-full", "3e-5"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.candidates("lora+migu"); !slices.Equal(got, []float64{1e-4, 1e-3}) {
		t.Errorf("lora candidates %v", got)
	}
	if got := cl.candidates("full"); !slices.Equal(got, []float64{3e-5}) {
		t.Errorf("full candidates %v", got)
	}
}

// TestComparisons checks the pairs compared: each method against the
// start, and each +migu method against its base when both ran.
func TestComparisons(t *testing.T) {
	got := comparisons([]string{"full", "full+migu", "lora+migu"})
	want := [][2]string{{"before", "full"}, {"before", "full+migu"}, {"before", "lora+migu"}, {"full", "full+migu"}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%v, want %v", got, want)
		}
	}
}

// TestCommandLog runs a stand-in for the migu binary twice, as two
// invocations would, and checks that the work folder's log keeps both
// commands with their costs, and that a failing command is not logged.
func TestCommandLog(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "migu")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n[ \"$1\" = fail ] && exit 3\necho \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"data", "code-instructions", "--out", "a b.jsonl"}, {"eval", "--json"}} {
		r := &codeRun{o: &codeOptions{common: common{migu: bin, work: dir}}, res: &CodeResults{}}
		var out bytes.Buffer
		if _, err := r.run(&out, args...); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out.String()); got != strings.Join(args, " ") {
			t.Errorf("standard output %q", got)
		}
	}
	r := &codeRun{o: &codeOptions{common: common{migu: bin, work: dir}}, res: &CodeResults{}}
	if err := r.migu("fail"); err == nil || !strings.Contains(err.Error(), "fail") {
		t.Errorf("failing command: %v", err)
	}
	if err := r.loadCommands(); err != nil {
		t.Fatal(err)
	}
	want := []string{bin + " data code-instructions --out 'a b.jsonl'", bin + " eval --json"}
	if len(r.res.Commands) != 2 || r.res.Commands[0] != want[0] || r.res.Commands[1] != want[1] {
		t.Errorf("commands %q, want %q", r.res.Commands, want)
	}
	for _, tm := range r.res.Timings {
		if tm.Wall <= 0 || tm.CPU < 0 || tm.PeakRSSMB <= 0 {
			t.Errorf("timing %+v", tm)
		}
	}
}
