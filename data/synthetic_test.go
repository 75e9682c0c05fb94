package data

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// labelByRule recomputes a generated sentence's label from its words,
// independently of the generators.
func labelByRule(t *testing.T, task, s string) string {
	t.Helper()
	words := strings.Fields(s)
	count := func(set []string) int {
		n := 0
		for _, w := range words {
			if slices.Contains(set, w) {
				n++
			}
		}
		return n
	}
	switch task {
	case "wordsent":
		pos, neg := count(synPositive), count(synNegative)
		if len(words) != 8 || pos == neg {
			t.Fatalf("%q: %d words, %d positive, %d negative", s, len(words), pos, neg)
		}
		if pos > neg {
			return "positive"
		}
		return "negative"
	case "wordtopic":
		names := []string{"sports", "food", "weather", "music"}
		found := ""
		for i, set := range synTopics {
			if n := count(set); n > 0 {
				if found != "" || n != 2 {
					t.Fatalf("%q: topic words of several topics or not 2", s)
				}
				found = names[i]
			}
		}
		return found
	case "majority":
		red, blue := count([]string{"red"}), count([]string{"blue"})
		if red+blue != len(words) || red == blue {
			t.Fatalf("%q: not a colour list with a majority", s)
		}
		if red > blue {
			return "red"
		}
		return "blue"
	case "length":
		switch n := len(words); {
		case n >= 3 && n <= 5:
			return "short"
		case n >= 9 && n <= 11:
			return "long"
		}
		t.Fatalf("%q: %d words", s, len(words))
	case "compare":
		if len(words) != 3 || words[1] != "or" {
			t.Fatalf("%q: not 'X or Y'", s)
		}
		a, b := slices.Index(synNumbers, words[0]), slices.Index(synNumbers, words[2])
		if a < 0 || b < 0 || a == b {
			t.Fatalf("%q: numbers %d and %d", s, a, b)
		}
		if a > b {
			return "first"
		}
		return "second"
	}
	t.Fatalf("no rule for task %s", task)
	return ""
}

func TestSyntheticLabelsFollowTheirRule(t *testing.T) {
	for _, task := range SyntheticTasks() {
		t.Run(task.Name, func(t *testing.T) {
			recs := task.Generate(400, 3, nil)
			if len(recs) != 400 {
				t.Fatalf("%d records", len(recs))
			}
			perLabel := map[string]int{}
			for _, r := range recs {
				if got := labelByRule(t, task.Name, r.Sentence); got != r.Label {
					t.Errorf("%q labelled %q, rule says %q", r.Sentence, r.Label, got)
				}
				perLabel[r.Label]++
			}
			for _, l := range task.Labels {
				if perLabel[l] != 400/len(task.Labels) {
					t.Errorf("label %q: %d of 400 (want balanced)", l, perLabel[l])
				}
			}
		})
	}
}

func TestSyntheticDeterministicBySeed(t *testing.T) {
	for _, task := range SyntheticTasks() {
		a, b := task.Generate(50, 9, nil), task.Generate(50, 9, nil)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: the same seed gave different data", task.Name)
		}
		if c := task.Generate(50, 10, nil); reflect.DeepEqual(a, c) {
			t.Errorf("%s: seeds 9 and 10 gave the same data", task.Name)
		}
	}
	if !reflect.DeepEqual(SyntheticText(20, 1), SyntheticText(20, 1)) {
		t.Error("SyntheticText is not deterministic")
	}
}

func TestWriteSyntheticTasksLikeTheBenchmark(t *testing.T) {
	root := t.TempDir()
	files, err := WriteSyntheticTasks(root, []string{"wordsent", "majority"}, SyntheticOptions{Train: 60, Test: 30, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Dir != filepath.Join(root, "SC", "wordsent") || files[1].Dir != filepath.Join(root, "SYN", "majority") {
		t.Fatalf("files: %+v", files)
	}
	for _, f := range files {
		train, err := Read(f.Train, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		test, err := Read(f.Test, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(train.Records) != 60 || len(test.Records) != 30 || train.Kind != Classification {
			t.Fatalf("%s: %d train, %d test records of kind %s", f.Task.Name, len(train.Records), len(test.Records), train.Kind)
		}
		if !slices.Equal(train.Labels, f.Task.Labels) || train.LabelSource != filepath.Join(f.Dir, LabelsFile) {
			t.Errorf("%s: labels %v from %s", f.Task.Name, train.Labels, train.LabelSource)
		}
		// The wordsent space is large: no test sentence is a train sentence.
		if f.Task.Name == "wordsent" {
			seen := map[string]bool{}
			for _, r := range train.Records {
				seen[r.Sentence] = true
			}
			for _, r := range test.Records {
				if seen[r.Sentence] {
					t.Errorf("test sentence %q is in train", r.Sentence)
				}
			}
		}
	}
	p := CLPromptFor(files[0].Train, files[0].Task.Labels)
	if p.Task != "SC" || p.Dataset != "wordsent" || p.Instruction != CLInstructions["SC"] {
		t.Errorf("prompt for the sentiment task: %+v", p)
	}
	// Rewriting gives identical files.
	before, _ := os.ReadFile(files[0].Train)
	if _, err := WriteSyntheticTasks(root, []string{"wordsent"}, SyntheticOptions{Train: 60, Test: 30, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(files[0].Train)
	if string(before) != string(after) {
		t.Error("the same options wrote a different train.json")
	}
}

func TestSyntheticBadInput(t *testing.T) {
	for _, tc := range []struct {
		names []string
		o     SyntheticOptions
		want  string
	}{
		{[]string{"nope"}, SyntheticOptions{}, `unknown generated task "nope"`},
		{nil, SyntheticOptions{Train: -1}, "negative split size"},
	} {
		_, err := WriteSyntheticTasks(t.TempDir(), tc.names, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %+v: got %v, want %q", tc.names, tc.o, err, tc.want)
		}
	}
	if got := SyntheticSequence(3); !slices.Equal(got, []string{"wordsent", "compare", "length"}) {
		t.Errorf("SyntheticSequence(3) = %v", got)
	}
}
