// Package continual trains a model on a sequence of tasks, one after the
// other, and measures after each task what it has learned and forgotten:
// the accuracy matrix R[i][j] (accuracy on task j after training task i),
// average accuracy, backward and forward transfer, forgetting, and MIGU's
// mask overlap between tasks, written as results.json, report.md and PNG
// plots.
package continual

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"gopkg.in/yaml.v3"
)

// Task is one task of a sequence: classification data ({"sentence",
// "label"} records) to train on and to test on.
type Task struct {
	Name string `json:"name"`
	// Train and Test are the data files; Labels optionally names a JSON
	// array of labels (default: labels.json beside Train, else the labels
	// seen in the train file).
	Train  string `json:"train"`
	Test   string `json:"test"`
	Labels string `json:"labels,omitempty"`
	// TrainSamples and TestSamples override the sequence's counts (0: the
	// sequence's; negative: every row).
	TrainSamples int `json:"train_samples,omitempty"`
	TestSamples  int `json:"test_samples,omitempty"`
	// line is where the task was declared in a sequence file (0: in code).
	line int
}

// Skipped is a task a sequence names whose data is absent.
type Skipped struct {
	Task   string `json:"task"`
	Reason string `json:"reason"`
}

// Sequence is an ordered list of tasks and how many rows of each to use.
type Sequence struct {
	Name  string `json:"name"`
	Tasks []Task `json:"tasks"`
	// TrainSamples and TestSamples are the rows drawn per task (0 or
	// negative: every row). Training rows are drawn per seed; test rows with
	// SampleSeed, the same for every method and seed.
	TrainSamples int `json:"train_samples,omitempty"`
	TestSamples  int `json:"test_samples,omitempty"`
	// ValSamples holds this many rows of each task's training file out
	// (drawn with SampleSeed, before the training rows are drawn from the
	// rest) as a validation split, scored after every task like the test
	// rows; 0: none. It is what hyperparameters are chosen on.
	ValSamples int    `json:"val_samples,omitempty"`
	SampleSeed uint64 `json:"sample_seed"`
	// Source is the sequence file or the built-in order's name.
	Source string `json:"source"`
	// Skipped lists tasks left out because their data is absent.
	Skipped []Skipped `json:"skipped,omitempty"`
	// MaxLineBytes caps the lines of the tasks' data files
	// (data.ReadOptions.MaxLineBytes); it comes from --max-line-bytes, not
	// from the sequence file.
	MaxLineBytes int `json:"-"`
}

// NewSequence builds a sequence in code, e.g. over generated files.
func NewSequence(name string, tasks ...Task) *Sequence {
	return &Sequence{Name: name, Tasks: tasks, Source: "code"}
}

// benchmarkTasks maps the CL benchmark's task names to their folders
// (TYPE/DATASET) under the benchmark's data directory.
var benchmarkTasks = map[string]string{
	"dbpedia": "TC/dbpedia", "amazon": "SC/amazon", "yahoo": "TC/yahoo", "agnews": "TC/agnews",
	"MNLI": "NLI/MNLI", "CB": "NLI/CB", "WiC": "WiC/WiC", "COPA": "COPA/COPA", "QQP": "QQP/QQP",
	"BoolQA": "BoolQA/BoolQA", "RTE": "NLI/RTE", "IMDB": "SC/IMDB", "yelp": "SC/yelp",
	"SST-2": "SC/SST-2", "MultiRC": "MultiRC/MultiRC",
}

// orders are the task orders 1–6 of the O-LoRA and MIGU papers: 1–3 the
// standard benchmark, 4–6 the long (15-task) one.
var orders = map[string][]string{
	"order1": {"dbpedia", "amazon", "yahoo", "agnews"},
	"order2": {"dbpedia", "amazon", "agnews", "yahoo"},
	"order3": {"yahoo", "amazon", "agnews", "dbpedia"},
	"order4": {"MNLI", "CB", "WiC", "COPA", "QQP", "BoolQA", "RTE", "IMDB", "yelp", "amazon", "SST-2", "dbpedia", "agnews", "MultiRC", "yahoo"},
	"order5": {"MultiRC", "BoolQA", "WiC", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews", "yelp", "amazon", "yahoo"},
	"order6": {"yelp", "amazon", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews", "yahoo", "MultiRC", "BoolQA", "WiC"},
}

// Order returns the tasks of a built-in order (order1 … order6), a copy
// the caller may change, and whether the name is one.
func Order(name string) ([]string, bool) {
	tasks, ok := orders[name]
	return slices.Clone(tasks), ok
}

// LongTrainSamples is how many training rows per task the long benchmark
// (orders 4–6) draws.
const LongTrainSamples = 1000

// DataDirEnv names the environment variable that points at the CL
// benchmark's data when --data-dir is not given.
const DataDirEnv = "MIGU_CL_DATA"

// DefaultDataDir finds the CL benchmark's data: $MIGU_CL_DATA, else
// shared/data/cl_benchmark beside the working directory or one of its
// parents (where a checkout next to the shared data finds it). It returns
// the first candidate when none exists, for the error message.
func DefaultDataDir() string {
	if d := os.Getenv(DataDirEnv); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return filepath.Join("..", "shared", "data", "cl_benchmark")
	}
	first := ""
	for dir := wd; ; dir = filepath.Dir(dir) {
		c := filepath.Join(dir, "shared", "data", "cl_benchmark")
		if first == "" {
			first = filepath.Join(filepath.Dir(wd), "shared", "data", "cl_benchmark")
		}
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c
		}
		if filepath.Dir(dir) == dir {
			return first
		}
	}
}

// Resolve returns the sequence spec names: a built-in order (order1 …
// order6) over dataDir, or a sequence file.
func Resolve(spec, dataDir string) (*Sequence, error) {
	if _, ok := Order(spec); ok {
		return BuiltinSequence(spec, dataDir)
	}
	if strings.HasPrefix(spec, "order") && !strings.ContainsAny(spec, `./\`) {
		return nil, badinput.Errorf("unknown order %q (order1 … order6, or a sequence file)", spec)
	}
	return ReadSequence(spec)
}

// BuiltinSequence returns a built-in order over the CL benchmark in
// dataDir. Tasks whose train or test file is absent are skipped and
// listed in Skipped; orders 4–6 draw LongTrainSamples training rows per
// task.
func BuiltinSequence(name, dataDir string) (*Sequence, error) {
	order, ok := Order(name)
	if !ok {
		return nil, badinput.Errorf("unknown order %q (order1 … order6)", name)
	}
	if st, err := os.Stat(dataDir); err != nil || !st.IsDir() {
		return nil, badinput.Errorf("the CL benchmark data is not at %s; pass %v DIR (the folder holding TC/, SC/, NLI/ …) or set $%s", dataDir, badinput.Setting("data_dir"), DataDirEnv)
	}
	seq := &Sequence{Name: name, Source: name}
	if name >= "order4" {
		seq.TrainSamples = LongTrainSamples
	}
	for _, t := range order {
		task, reason := benchmarkTask(t, dataDir)
		if reason != "" {
			seq.Skipped = append(seq.Skipped, Skipped{Task: t, Reason: reason})
			continue
		}
		seq.Tasks = append(seq.Tasks, task)
	}
	if len(seq.Tasks) == 0 {
		return nil, badinput.Errorf("%s: none of its tasks has data in %s", name, dataDir)
	}
	return seq, nil
}

// benchmarkTask locates a benchmark task's files; the reason is non-empty
// when they are absent.
func benchmarkTask(name, dataDir string) (Task, string) {
	dir := filepath.Join(dataDir, filepath.FromSlash(benchmarkTasks[name]))
	t := Task{Name: name, Train: filepath.Join(dir, "train.json"), Test: filepath.Join(dir, "test.json")}
	for _, f := range []string{t.Train, t.Test} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			return t, fmt.Sprintf("no %s in %s", filepath.Base(f), dir)
		}
	}
	return t, ""
}

// seqFile is a sequence file as written.
type seqFile struct {
	Name         string      `yaml:"name"`
	DataDir      string      `yaml:"data_dir"`
	TrainSamples int         `yaml:"train_samples"`
	TestSamples  int         `yaml:"test_samples"`
	ValSamples   int         `yaml:"val_samples"`
	SampleSeed   uint64      `yaml:"sample_seed"`
	Tasks        []yaml.Node `yaml:"tasks"`
}

type taskEntry struct {
	Name         string `yaml:"name"`
	Train        string `yaml:"train"`
	Test         string `yaml:"test"`
	Labels       string `yaml:"labels"`
	TrainSamples int    `yaml:"train_samples"`
	TestSamples  int    `yaml:"test_samples"`
}

// ReadSequence reads a sequence file (YAML):
//
//	name: my-seq
//	data_dir: ../data        # optional, relative to this file
//	train_samples: 1000      # optional: rows drawn per task (default all)
//	test_samples: 200
//	val_samples: 50          # optional: rows of train held out for validation
//	tasks:
//	  - name: dbpedia        # a benchmark task: its files under data_dir
//	  - name: mine
//	    train: mine/train.json
//	    test: mine/test.json
//	    labels: mine/labels.json   # optional
//
// Relative paths are relative to data_dir. Mistakes are bad input naming
// the file and line; the data files themselves are checked by Check.
func ReadSequence(path string) (*Sequence, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	return parseSequence(raw, path)
}

// parseSequence parses a sequence file's content; name stands for the
// file in messages and anchors relative paths.
func parseSequence(raw []byte, name string) (*Sequence, error) {
	var f seqFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, fs.ErrNotExist) || err.Error() == "EOF" {
			return nil, badinput.Errorf("%s: empty sequence file: it needs a tasks: list", name)
		}
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te) && len(te.Errors) > 0:
			// Type errors name the node's own line, correctly.
			if m := typeErrorLine.FindStringSubmatch(te.Errors[0]); m != nil {
				return nil, badinput.Errorf("%s:%s: %s", name, m[1], oneLine(m[2]))
			}
		default:
			if line := syntaxLine(raw); line > 0 {
				return nil, badinput.Errorf("%s:%d: %s", name, line, yamlLinePrefix.ReplaceAllString(err.Error(), ""))
			}
		}
		return nil, badinput.Errorf("%s: %s", name, oneLine(strings.TrimPrefix(err.Error(), "yaml: ")))
	}
	if len(f.Tasks) == 0 {
		return nil, badinput.Errorf("%s: no tasks: the file needs a tasks: list", name)
	}
	base := filepath.Dir(name)
	dataDir := base
	if f.DataDir != "" {
		dataDir = f.DataDir
		if !filepath.IsAbs(dataDir) {
			dataDir = filepath.Join(base, dataDir)
		}
	}
	if f.TrainSamples < 0 || f.TestSamples < 0 || f.ValSamples < 0 {
		return nil, badinput.Errorf("%s: train_samples, test_samples and val_samples must be ≥ 0 (0: every row; val_samples 0: no validation split)", name)
	}
	seq := &Sequence{Name: f.Name, TrainSamples: f.TrainSamples, TestSamples: f.TestSamples, ValSamples: f.ValSamples, SampleSeed: f.SampleSeed, Source: name}
	if seq.Name == "" {
		seq.Name = strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	}
	seen := map[string]int{}
	for _, n := range f.Tasks {
		var e taskEntry
		if n.Kind != yaml.MappingNode {
			return nil, badinput.Errorf("%s:%d: a task is a mapping with name, train and test (got %s)", name, n.Line, nodeKind(n))
		}
		if err := n.Decode(&e); err != nil {
			line, msg := n.Line, strings.TrimPrefix(err.Error(), "yaml: ")
			var te *yaml.TypeError
			if errors.As(err, &te) && len(te.Errors) > 0 {
				if m := typeErrorLine.FindStringSubmatch(te.Errors[0]); m != nil {
					line, _ = strconv.Atoi(m[1])
					msg = m[2]
				}
			}
			return nil, badinput.Errorf("%s:%d: %s", name, line, oneLine(msg))
		}
		if err := checkFields(&n, name); err != nil {
			return nil, err
		}
		if e.Name == "" {
			return nil, badinput.Errorf("%s:%d: the task has no name", name, n.Line)
		}
		if first, dup := seen[e.Name]; dup {
			return nil, badinput.Errorf("%s:%d: task %q appears twice (first at line %d)", name, n.Line, e.Name, first)
		}
		seen[e.Name] = n.Line
		t := Task{Name: e.Name, TrainSamples: e.TrainSamples, TestSamples: e.TestSamples, line: n.Line}
		switch {
		case e.Train == "" && e.Test == "":
			if benchmarkTasks[e.Name] == "" {
				return nil, badinput.Errorf("%s:%d: unknown task %q: give its train and test files, or name a benchmark task (%s)",
					name, n.Line, e.Name, strings.Join(slices.Sorted(maps.Keys(benchmarkTasks)), ", "))
			}
			dir := filepath.Join(dataDir, filepath.FromSlash(benchmarkTasks[e.Name]))
			t.Train, t.Test = filepath.Join(dir, "train.json"), filepath.Join(dir, "test.json")
		case e.Train == "":
			return nil, badinput.Errorf("%s:%d: task %q has a test file but no train file", name, n.Line, e.Name)
		case e.Test == "":
			return nil, badinput.Errorf("%s:%d: task %q has a train file but no test file", name, n.Line, e.Name)
		default:
			t.Train, t.Test = under(dataDir, e.Train), under(dataDir, e.Test)
		}
		if e.Labels != "" {
			t.Labels = under(dataDir, e.Labels)
		}
		seq.Tasks = append(seq.Tasks, t)
	}
	return seq, nil
}

// yamlLinePrefix is the "yaml: line N: " in front of a syntax error.
var yamlLinePrefix = regexp.MustCompile(`^yaml: (line \d+: )?`)

// typeErrorLine splits one of yaml.TypeError's messages, "line N: …".
var typeErrorLine = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)

// oneLine keeps a YAML message, which may quote a multi-line value, on
// one line.
func oneLine(msg string) string { return strings.ReplaceAll(msg, "\n", `\n`) }

// syntaxScanLines bounds the files syntaxLine searches (it parses the file
// once per line).
const syntaxScanLines = 5000

// syntaxLine returns the 1-based line of a YAML syntax error in raw, or 0
// when the file is too long to search. yaml.v3 reports the line where the
// construct around the problem starts, and counts it from 0 for parser
// errors, so a bad second item of a list that starts on line 1 is
// reported on line 1. The problem is on the first line after the longest
// beginning of the file that parses.
func syntaxLine(raw []byte) int {
	lines := bytes.SplitAfter(raw, []byte("\n"))
	if len(lines) > syntaxScanLines {
		return 0
	}
	good := 0
	for k := 1; k < len(lines); k++ {
		var n yaml.Node
		if yaml.Unmarshal(bytes.Join(lines[:k], nil), &n) == nil {
			good = k
		}
	}
	return good + 1
}

// taskFields are the keys a task entry may have.
var taskFields = []string{"name", "train", "test", "labels", "train_samples", "test_samples"}

// checkFields refuses unknown keys and negative sample counts in a task
// entry.
func checkFields(n *yaml.Node, file string) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(taskFields, k.Value) {
			return badinput.Errorf("%s:%d: unknown task field %q (%s)", file, k.Line, k.Value, strings.Join(taskFields, ", "))
		}
		if (k.Value == "train_samples" || k.Value == "test_samples") && strings.HasPrefix(v.Value, "-") {
			return badinput.Errorf("%s:%d: %s must be ≥ 0 (0: the sequence's count)", file, v.Line, k.Value)
		}
	}
	return nil
}

func nodeKind(n yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func under(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, filepath.FromSlash(p))
}

// where names a task's declaration for messages.
func (t Task) where(seq *Sequence) string {
	if t.line > 0 {
		return fmt.Sprintf("%s:%d: task %q", seq.Source, t.line, t.Name)
	}
	return fmt.Sprintf("task %q", t.Name)
}
