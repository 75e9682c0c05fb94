package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

func TestScenarios(t *testing.T) {
	cases := []struct {
		args []string
		want []scenario
	}{
		{[]string{"-shapes", "1b,7b", "-cases", "lora"}, []scenario{
			{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
			{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "layers"},
			{Shape: "7b", Case: "lora", Batch: 1, Seq: 256, Steps: 2, Recompute: "layers"},
		}},
		{[]string{"-shapes", "7b", "-cases", "export,full"}, []scenario{{Shape: "7b", Case: "export"}}},
		{[]string{"-shapes", "1b", "-cases", "lora", "-recompute", "none"}, []scenario{
			{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"},
		}},
		{[]string{"-shapes", "1b", "-cases", "export,full", "-steps", "5", "-batch", "2", "-recompute", "layers"}, []scenario{
			{Shape: "1b", Case: "export"},
			{Shape: "1b", Case: "full", Batch: 2, Seq: 128, Steps: 5, Recompute: "layers"},
		}},
	}
	for _, c := range cases {
		o, err := parseFlags(c.args)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.scenarios(); !slices.Equal(got, c.want) {
			t.Errorf("%v: scenarios %+v, want %+v", c.args, got, c.want)
		}
	}
}

func TestParseFlagsRefuses(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-shapes", "13b"}, `unknown shape "13b"`},
		{[]string{"-cases", "merge"}, `unknown case "merge"`},
		{[]string{"-sides", "jax"}, `unknown side "jax"`},
		{[]string{"-recompute", "all"}, `unknown recompute "all"`},
	}
	for _, c := range cases {
		if _, err := parseFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	cases := []struct {
		raw   string
		steps []float64
		want  string
	}{
		{`{"step":1,"loss":10.5,"seconds":12.5,"tokens":512}` + "\n" + `{"step":2,"loss":10.25,"seconds":4,"tokens":512}` + "\n", []float64{12.5, 4}, ""},
		{"\n" + `{"step":1,"loss":1,"seconds":2}`, []float64{2}, ""},
		{`{"step":1,"loss":1}`, nil, "line 1: no seconds"},
		{`{"step":1,"seconds":1}` + "\n{", nil, "line 2"},
	}
	for _, c := range cases {
		steps, _, err := parseMetrics([]byte(c.raw))
		if c.want != "" {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%q: error %v, want %q", c.raw, err, c.want)
			}
			continue
		}
		if err != nil || !slices.Equal(steps, c.steps) {
			t.Errorf("%q: steps %v (%v), want %v", c.raw, steps, err, c.steps)
		}
	}
}

func TestCommandLines(t *testing.T) {
	o := &options{threads: 2, exportDType: "keep"}
	cases := []struct {
		name       string
		got        []string
		has, lacks []string
	}{
		{"export keep", exportArgs(o, "hf", "m"), []string{"--dtype keep"}, nil},
		{"export default", exportArgs(&options{exportDType: "default"}, "hf", "m"), []string{"--from hf --out m"}, []string{"--dtype"}},
		{"7b lora", trainArgs(o, scenario{Shape: "7b", Case: "lora", Batch: 1, Seq: 256, Steps: 2, Recompute: "layers"}, "m", "d", "r"),
			[]string{"--method lora", "--batch-size 1 --max-len 256 --max-steps 2", "--lora-targets q,v --lora-r 8 --lora-alpha 32", "--recompute layers", "--threads 2"}, []string{"--migu"}},
		{"1b full", trainArgs(o, scenario{Shape: "1b", Case: "full", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"}, "m", "d", "r"),
			[]string{"--method full", "--batch-size 4 --max-len 128"}, []string{"--recompute", "--lora"}},
		{"torch 7b lora", torchArgs(o, "s.py", scenario{Shape: "7b", Case: "lora", Batch: 1, Seq: 256, Steps: 2, Recompute: "layers"}, "hf"),
			[]string{"s.py --hf hf --method lora --dtype bf16 --batch 1 --seq 256 --steps 2 --threads 2 --recompute layers"}, nil},
		{"torch full", torchArgs(o, "s.py", scenario{Shape: "1b", Case: "full", Batch: 4, Seq: 128, Steps: 3}, "hf"),
			[]string{"--method full", "--recompute none"}, nil},
	}
	for _, c := range cases {
		line := strings.Join(c.got, " ")
		for _, h := range c.has {
			if !strings.Contains(line, h) {
				t.Errorf("%s: %q lacks %q", c.name, line, h)
			}
		}
		for _, l := range c.lacks {
			if strings.Contains(line, l) {
				t.Errorf("%s: %q has %q", c.name, line, l)
			}
		}
	}
}

func TestVerdicts(t *testing.T) {
	oneB := &shapeInfo{Params: 1_100_048_384, FrozenBytes: 2_200_000_000}
	gb := func(v float64) float64 { return v * 1e9 / mib }
	cases := []struct {
		r      result
		target string
		want   string
	}{
		{result{scenario: scenario{Shape: "1b", Case: "export"}, Side: "migu", PeakRSSMB: gb(1.4)}, "≤ 1.5 GB", "met"},
		{result{scenario: scenario{Shape: "7b", Case: "export"}, Side: "migu", PeakRSSMB: gb(2.2)}, "≤ 2 GB", "over by 10 %"},
		{result{scenario: scenario{Shape: "1b", Case: "lora"}, Side: "migu", PeakRSSMB: gb(4.2)}, "≤ 1.25 × 2.20 GB frozen + 1.5 GB = 4.25 GB", "met"},
		{result{scenario: scenario{Shape: "7b", Case: "lora"}, Side: "migu", PeakRSSMB: gb(21)}, "≤ 20 GB", "over by 5 %"},
		{result{scenario: scenario{Shape: "1b", Case: "full"}, Side: "migu", PeakRSSMB: gb(19.36)}, "floor 16 B/param = 17.6 GB", "1.10 × floor"},
		{result{scenario: scenario{Shape: "1b", Case: "lora"}, Side: "torch", PeakRSSMB: gb(5.5)}, "", "—"},
		{result{scenario: scenario{Shape: "1b", Case: "export"}, Side: "migu", Note: "failed"}, "≤ 1.5 GB", "—"},
	}
	for _, c := range cases {
		if _, tgt := target(&c.r, oneB); tgt != c.target {
			t.Errorf("%s %s %s: target %q, want %q", c.r.Shape, c.r.Case, c.r.Side, tgt, c.target)
		}
		if got := verdict(&c.r, oneB); got != c.want {
			t.Errorf("%s %s %s: verdict %q, want %q", c.r.Shape, c.r.Case, c.r.Side, got, c.want)
		}
	}
}

// The data file's records each give at least seq+1 tokens, so that
// --max-len cuts every one to seq: batches without padding.
func TestPrepareData(t *testing.T) {
	work := t.TempDir()
	hf := filepath.Join(work, "small", "hf")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(hf, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int{16, 256} {
		path, err := prepareData(work, hf, scenario{Shape: "small", Case: "lora", Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec struct{ Text string }
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatal(err)
			}
			ids, err := tok.EncodeIDs(rec.Text, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) <= seq {
				t.Errorf("seq %d: record %d has %d tokens", seq, n, len(ids))
			}
			n++
		}
		f.Close()
		if n != dataRecords {
			t.Errorf("seq %d: %d records, want %d", seq, n, dataRecords)
		}
	}
}

// Every row of the results tables has as many cells as its header, failed
// runs included, and scenarios run on both sides get a ratio row.
func TestMarkdown(t *testing.T) {
	s := scenario{Shape: "1b", Case: "lora", Batch: 4, Seq: 128, Steps: 3, Recompute: "none"}
	rep := &report{Command: "make scale", ExportDType: "keep", Threads: 2,
		Shapes: map[string]*shapeInfo{"1b": {Params: 1_100_048_384, HFBytes: 2_200_119_864, FrozenBytes: 2_200_000_000, DType: "BF16"}},
		Results: []*result{
			{scenario: scenario{Shape: "1b", Case: "export"}, Side: "migu", WallS: 20, PeakRSSMB: 900},
			{scenario: s, Side: "migu", WallS: 30, StepS: []float64{20, 10, 12}, PeakRSSMB: 3800},
			{scenario: s, Side: "torch", WallS: 45, StepS: []float64{29, 12, 12}, PeakRSSMB: 5480},
			{scenario: scenario{Shape: "1b", Case: "full", Batch: 4, Seq: 128, Steps: 3}, Side: "torch", Note: "skipped: needs about 18.6 GB"},
		}}
	md := markdown(rep, "RESULTS.json")
	for _, want := range []string{"| 1b | lora | migu | 4 × 128 | none | 30 | 20.00 | 11.00 | 47 | 3.98 | ≤ 1.25 × 2.20 GB frozen + 1.5 GB = 4.25 GB | met |",
		"| 1b | lora | none | 0.69 | 1.09 |", "skipped: needs about 18.6 GB"} {
		if !strings.Contains(md, want) {
			t.Errorf("results lack %q:\n%s", want, md)
		}
	}
	cells := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cells = 0
			continue
		}
		n := strings.Count(line, "|")
		if cells == 0 {
			cells = n
		} else if n != cells {
			t.Errorf("row with %d cell borders under a header with %d: %s", n, cells, line)
		}
	}
}
