package data

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// SyntheticTask is a small classification task generated from a seed, laid
// out like a task of the continual-learning benchmark (TYPE/NAME with
// train.json, test.json and labels.json), so that `migu continual` and
// `migu demo` can run a task sequence on any machine without data files.
// The first three are easy enough for a tiny, briefly pre-trained model to
// learn in about a hundred steps (wordtopic and majority take longer),
// and the tasks differ in their inputs and labels, so training one after
// another overwrites what the earlier ones taught — the forgetting that
// continual-learning methods try to prevent.
type SyntheticTask struct {
	// Name is the task's dataset folder and its name in sequences.
	Name string
	// Type is the task-type folder above it; SC and TC select the CL
	// benchmark's sentiment and topic instructions (CLPromptFor), other
	// types the generic one.
	Type string
	// Labels are the label texts, in class order (labels.json).
	Labels []string
	// About says in a few words what decides the label.
	About string
	// gen writes one sentence whose label is class.
	gen func(r *rand.Rand, class int) string
}

// The word lists the tasks draw from: common English words, so a
// tokenizer trained on ordinary text splits them into few pieces.
var (
	synPositive = strings.Fields("good great happy lovely bright kind warm nice fine glad calm sweet fresh clean")
	synNegative = strings.Fields("bad awful sad ugly dark cruel cold poor rude angry dull sour stale dirty")
	synNeutral  = strings.Fields("the a this that room day car book door chair table road window paper street house box town")
	synTopics   = [][]string{
		strings.Fields("ball team game goal coach player match score"),
		strings.Fields("bread soup cheese apple rice salad cake butter"),
		strings.Fields("rain snow wind storm cloud sun fog frost"),
		strings.Fields("song piano guitar drum singer band melody violin"),
	}
	synFiller  = strings.Fields("we saw it and then there was some time near our old place with many people")
	synColors  = []string{"red", "blue"}
	synNumbers = strings.Fields("zero one two three four five six seven eight nine")
)

// syntheticTasks is the registry, in the default sequence order.
var syntheticTasks = []SyntheticTask{
	{Name: "wordsent", Type: "SC", Labels: []string{"positive", "negative"},
		About: "whether the sentence has more positive or more negative words", gen: genSentiment},
	{Name: "compare", Type: "SYN", Labels: []string{"first", "second"},
		About: "which of two numbers written as words is larger", gen: genCompare},
	{Name: "length", Type: "SYN", Labels: []string{"short", "long"},
		About: "whether the list has at most 5 or at least 9 words", gen: genLength},
	{Name: "wordtopic", Type: "TC", Labels: []string{"sports", "food", "weather", "music"},
		About: "which topic's words appear", gen: genTopic},
	{Name: "majority", Type: "SYN", Labels: []string{"red", "blue"},
		About: "which colour appears more often", gen: genMajority},
}

// SyntheticTasks returns the generated tasks, in the default sequence
// order (the demo trains the first three).
func SyntheticTasks() []SyntheticTask {
	return slices.Clone(syntheticTasks)
}

// SyntheticTaskNamed looks a generated task up by name.
func SyntheticTaskNamed(name string) (SyntheticTask, error) {
	for _, t := range syntheticTasks {
		if t.Name == name {
			return t, nil
		}
	}
	names := make([]string, len(syntheticTasks))
	for i, t := range syntheticTasks {
		names[i] = t.Name
	}
	return SyntheticTask{}, badinput.Errorf("unknown generated task %q (%s)", name, strings.Join(names, ", "))
}

// Dir is the task's folder under root: root/TYPE/NAME.
func (t SyntheticTask) Dir(root string) string {
	return filepath.Join(root, t.Type, t.Name)
}

// SyntheticRecord is one generated example, with the JSON field names of
// the CL benchmark.
type SyntheticRecord struct {
	Sentence string `json:"sentence"`
	Label    string `json:"label"`
}

// Generate returns n examples with balanced labels in shuffled order,
// the same for the same seed. Sentences listed in avoid are not produced
// (so a test split can exclude the train split) as long as the task has
// enough distinct sentences; avoid may be nil.
func (t SyntheticTask) Generate(n int, seed uint64, avoid map[string]bool) []SyntheticRecord {
	r := rand.New(rand.NewPCG(seed, taskStream(t.Name)))
	out := make([]SyntheticRecord, 0, n)
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		class := i % len(t.Labels)
		var s string
		// A few retries find a new sentence; small spaces may repeat.
		for try := 0; try < 20; try++ {
			s = t.gen(r, class)
			if !avoid[s] && !seen[s] {
				break
			}
		}
		seen[s] = true
		out = append(out, SyntheticRecord{Sentence: s, Label: t.Labels[class]})
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// taskStream gives each task its own random stream for the same seed.
func taskStream(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// SyntheticOptions configure WriteSyntheticTasks.
type SyntheticOptions struct {
	Train, Test int // examples per split (defaults 200 and 100)
	Seed        uint64
}

// SyntheticFiles are the files WriteSyntheticTasks wrote for one task.
type SyntheticFiles struct {
	Task             SyntheticTask
	Train, Test, Dir string
}

// WriteSyntheticTasks writes the named tasks (all when names is empty)
// under root as the CL benchmark lays tasks out — root/TYPE/NAME/
// train.json, test.json (JSON arrays of {"sentence", "label"}) and
// labels.json — each file atomically. The test split avoids the train
// split's sentences where the task allows.
func WriteSyntheticTasks(root string, names []string, o SyntheticOptions) ([]SyntheticFiles, error) {
	if o.Train == 0 {
		o.Train = 200
	}
	if o.Test == 0 {
		o.Test = 100
	}
	if o.Train < 0 || o.Test < 0 {
		return nil, badinput.Errorf("generated tasks: negative split size (train %d, test %d)", o.Train, o.Test)
	}
	tasks := syntheticTasks
	if len(names) > 0 {
		tasks = nil
		for _, n := range names {
			t, err := SyntheticTaskNamed(n)
			if err != nil {
				return nil, err
			}
			tasks = append(tasks, t)
		}
	}
	var files []SyntheticFiles
	for _, t := range tasks {
		dir := t.Dir(root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		train := t.Generate(o.Train, o.Seed, nil)
		inTrain := make(map[string]bool, len(train))
		for _, r := range train {
			inTrain[r.Sentence] = true
		}
		// The test split draws from a stream of its own.
		test := t.Generate(o.Test, o.Seed^0x7465737473706c74, inTrain)
		f := SyntheticFiles{Task: t, Dir: dir, Train: filepath.Join(dir, "train.json"), Test: filepath.Join(dir, "test.json")}
		for _, w := range []struct {
			path string
			v    any
		}{{f.Train, train}, {f.Test, test}, {filepath.Join(dir, LabelsFile), t.Labels}} {
			raw, err := json.MarshalIndent(w.v, "", " ")
			if err != nil {
				return nil, err
			}
			if err := atomicfile.WriteFile(w.path, append(raw, '\n')); err != nil {
				return nil, err
			}
		}
		files = append(files, f)
	}
	return files, nil
}

// SyntheticText returns n unlabelled sentences in the tasks' vocabulary
// (each drawn from a random task and class), for training a tokenizer or
// briefly pre-training a model before a generated task sequence.
func SyntheticText(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 0x74657874))
	out := make([]string, n)
	for i := range out {
		t := syntheticTasks[r.IntN(len(syntheticTasks))]
		out[i] = t.gen(r, r.IntN(len(t.Labels)))
	}
	return out
}

func pick(r *rand.Rand, words []string) string { return words[r.IntN(len(words))] }

// shuffled joins words in a random order.
func shuffled(r *rand.Rand, words []string) string {
	r.Shuffle(len(words), func(i, j int) { words[i], words[j] = words[j], words[i] })
	return strings.Join(words, " ")
}

// genSentiment: 3–4 words of the class's polarity, at most one of the
// other, neutral words up to 8.
func genSentiment(r *rand.Rand, class int) string {
	major, minor := synPositive, synNegative
	if class == 1 {
		major, minor = minor, major
	}
	var w []string
	for k := 3 + r.IntN(2); k > 0; k-- {
		w = append(w, pick(r, major))
	}
	if r.IntN(2) == 0 {
		w = append(w, pick(r, minor))
	}
	for len(w) < 8 {
		w = append(w, pick(r, synNeutral))
	}
	return shuffled(r, w)
}

// genTopic: two words of the class's topic among filler words.
func genTopic(r *rand.Rand, class int) string {
	w := []string{pick(r, synTopics[class]), pick(r, synTopics[class])}
	for len(w) < 7 {
		w = append(w, pick(r, synFiller))
	}
	return shuffled(r, w)
}

// genMajority: 7 or 9 colour words, the class's colour in the majority.
func genMajority(r *rand.Rand, class int) string {
	n := 7 + 2*r.IntN(2)
	more := n/2 + 1 + r.IntN(2)
	w := make([]string, n)
	for i := range w {
		w[i] = synColors[1-class]
		if i < more {
			w[i] = synColors[class]
		}
	}
	return shuffled(r, w)
}

// genLength: 3–5 words (short) or 9–11 (long), from the neutral list.
func genLength(r *rand.Rand, class int) string {
	n := 3 + r.IntN(3)
	if class == 1 {
		n = 9 + r.IntN(3)
	}
	w := make([]string, n)
	for i := range w {
		w[i] = pick(r, synNeutral)
	}
	return strings.Join(w, " ")
}

// genCompare: "seven or three": which of two different numbers is larger.
func genCompare(r *rand.Rand, class int) string {
	a := r.IntN(10)
	b := r.IntN(9)
	if b >= a {
		b++
	}
	if (a > b) != (class == 0) {
		a, b = b, a
	}
	return synNumbers[a] + " or " + synNumbers[b]
}

// SyntheticSequence is the default order of generated tasks, named as
// sequence files name them; n picks the first n (all when n <= 0 or
// larger than the registry).
func SyntheticSequence(n int) []string {
	if n <= 0 || n > len(syntheticTasks) {
		n = len(syntheticTasks)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = syntheticTasks[i].Name
	}
	return out
}

// String describes the task in one line.
func (t SyntheticTask) String() string {
	return fmt.Sprintf("%s/%s: %s (%s)", t.Type, t.Name, t.About, strings.Join(quoteAll(t.Labels), ", "))
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strconv.Quote(x)
	}
	return out
}
