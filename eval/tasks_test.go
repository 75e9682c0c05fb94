package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// proofRows is how many rows of each task file the proof test scores.
const proofRows = 20

// compareTasks is the proof of issue 8 (run by TestMatchesReference for
// tiny random Llama and T5 models): every request of the first proofRows
// rows of each task file in ../shared/data/eval is built as the reference
// script builds it from lm-eval's task definitions, its log-likelihood
// equals the one PyTorch computes within 1e-4, and acc and acc_norm are
// identical per item.
func compareTasks(t *testing.T, m *Model, files map[string]string, ref refJob) {
	for _, name := range TaskNames() {
		var docsRef []refDoc
		if err := json.Unmarshal(ref.raw[name], &docsRef); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := RunTask(context.Background(), m, name, files[name], TaskOptions{Limit: proofRows})
		if err != nil {
			t.Fatal(err)
		}
		docs, err := registeredTasks[name].ReadDocs(files[name])
		if err != nil {
			t.Fatal(err)
		}
		compareTask(t, name, docs[:proofRows], got, docsRef)
	}
}

func compareTask(t *testing.T, name string, docs []*Doc, got *TaskResult, ref []refDoc) {
	t.Helper()
	if len(got.Docs) != len(ref) {
		t.Fatalf("%s: %d items, reference %d", name, len(got.Docs), len(ref))
	}
	var acc, accNorm []float64
	for i, r := range ref {
		g := got.Docs[i]
		reqs := docs[i].Requests("")
		if len(reqs) != len(r.Requests) || g.Gold != r.Gold {
			t.Fatalf("%s item %d: %d requests gold %d, reference %d gold %d", name, i, len(reqs), g.Gold, len(r.Requests), r.Gold)
		}
		for j, q := range reqs {
			if q.Context != r.Requests[j][0] || q.Continuation != r.Requests[j][1] {
				t.Errorf("%s item %d choice %d: request %q, reference %q", name, i, j, q, r.Requests[j])
			}
			if math.Abs(g.LogLiks[j]-r.LLs[j]) > tolerance {
				t.Errorf("%s item %d choice %d: log-likelihood %.6f, reference %.6f", name, i, j, g.LogLiks[j], r.LLs[j])
			}
			if g.Greedy[j] != r.Greedy[j] {
				t.Errorf("%s item %d choice %d: greedy %v, reference %v", name, i, j, g.Greedy[j], r.Greedy[j])
			}
		}
		if g.Acc != r.Acc {
			t.Errorf("%s item %d: acc %v, reference %v", name, i, g.Acc, r.Acc)
		}
		acc = append(acc, r.Acc)
		if r.AccNorm != nil {
			if g.AccNorm != *r.AccNorm {
				t.Errorf("%s item %d: acc_norm %v, reference %v", name, i, g.AccNorm, *r.AccNorm)
			}
			accNorm = append(accNorm, *r.AccNorm)
		}
	}
	for _, s := range got.Scores {
		xs := acc
		if s.Metric == "acc_norm" {
			xs = accNorm
		}
		if s.Value != Mean(xs) || s.N != len(xs) {
			t.Errorf("%s %s: %v over %d items, reference %v over %d", name, s.Metric, s.Value, s.N, Mean(xs), len(xs))
		}
	}
}

// TestDocsByHand checks request building on rows worked out by hand.
func TestDocsByHand(t *testing.T) {
	tests := []struct {
		task, row string
		want      []Request
		gold      int
		choices   []string
	}{
		{
			task: "hellaswag",
			row:  `{"activity_label": "Baking", "ctx_a": "A man mixes flour.", "ctx_b": "THEN he", "endings": [" adds [header] eggs.", "bakes  it [title] Done"], "label": "1"}`,
			want: []Request{{"Baking: A man mixes flour. Then he", " adds eggs."}, {"Baking: A man mixes flour. Then he", " bakes it. Done"}},
			gold: 1, choices: []string{"adds eggs.", "bakes it. Done"},
		},
		{
			task: "hellaswag",
			row:  `{"activity_label": "Roof", "ctx": "A man is on a roof. he", "endings": ["a", "b", "c"], "label": 0}`,
			want: []Request{{"Roof: A man is on a roof. he", " a"}, {"Roof: A man is on a roof. he", " b"}, {"Roof: A man is on a roof. he", " c"}},
			gold: 0, choices: []string{"a", "b", "c"},
		},
		{
			task: "arc_challenge",
			row:  `{"question": "Which is hot?", "choices": {"text": ["ice", "fire", "snow"], "label": ["1", "2", "3"]}, "answerKey": "2"}`,
			want: []Request{{"Question: Which is hot?\nAnswer:", " ice"}, {"Question: Which is hot?\nAnswer:", " fire"}, {"Question: Which is hot?\nAnswer:", " snow"}},
			gold: 1, choices: []string{"ice", "fire", "snow"},
		},
		{
			task: "winogrande",
			row:  `{"sentence": "Ann beat Bo because _ ran  faster. ", "option1": "Ann", "option2": "Bo", "answer": "1"}`,
			want: []Request{{"Ann beat Bo because Ann", " ran  faster."}, {"Ann beat Bo because Bo", " ran  faster."}},
			gold: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.task, func(t *testing.T) {
			d, err := registeredTasks[tc.task].Parse([]byte(tc.row))
			if err != nil {
				t.Fatal(err)
			}
			got := d.Requests("")
			if len(got) != len(tc.want) {
				t.Fatalf("%d requests, want %d: %q", len(got), len(tc.want), got)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("request %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
			if d.Gold != tc.gold || strings.Join(d.Choices, "|") != strings.Join(tc.choices, "|") {
				t.Errorf("gold %d choices %q, want %d %q", d.Gold, d.Choices, tc.gold, tc.choices)
			}
		})
	}
}

// TestFewshotPrefix checks the few-shot layout: K solved examples of other
// items, blank-line separated, before the item's context.
func TestFewshotPrefix(t *testing.T) {
	rows := []string{
		`{"question": "Q0", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}`,
		`{"question": "Q1", "choices": {"text": ["c", "d"], "label": ["A", "B"]}, "answerKey": "B"}`,
		`{"question": "Q2", "choices": {"text": ["e", "f"], "label": ["A", "B"]}, "answerKey": "A"}`,
	}
	docs, err := registeredTasks["arc_challenge"].readDocs("arc.jsonl", strings.NewReader(strings.Join(rows, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	examples := map[string]bool{"Question: Q0\nAnswer: a": true, "Question: Q1\nAnswer: d": true, "Question: Q2\nAnswer: e": true}
	prefixes, err := fewshotPrefixes(registeredTasks["arc_challenge"], docs, 3, TaskOptions{NumFewshot: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prefixes {
		if !strings.HasSuffix(p, "\n\n") {
			t.Fatalf("prefix %q does not end with a blank line", p)
		}
		shots := strings.Split(strings.TrimSuffix(p, "\n\n"), "\n\n")
		if len(shots) != 2 || shots[0] == shots[1] {
			t.Fatalf("item %d: shots %q, want 2 distinct", i, shots)
		}
		for _, s := range shots {
			if !examples[s] || strings.Contains(s, "Q"+string(rune('0'+i))) {
				t.Errorf("item %d: shot %q is not another item's solved example", i, s)
			}
		}
	}
	again, _ := fewshotPrefixes(registeredTasks["arc_challenge"], docs, 3, TaskOptions{NumFewshot: 2})
	if strings.Join(again, "") != strings.Join(prefixes, "") {
		t.Error("few-shot examples differ between two runs with the same seed")
	}
	if _, err := fewshotPrefixes(registeredTasks["arc_challenge"], docs, 3, TaskOptions{NumFewshot: 3}); !badinput.Is(err) {
		t.Errorf("3 shots from 2 other items: %v, want a bad-input error", err)
	}
	// Winogrande: the example is the gold option's context and the target.
	d, err := registeredTasks["winogrande"].Parse([]byte(`{"sentence": "X or _ won.", "option1": "A", "option2": "B", "answer": "2"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Example(); got != "X or B won." {
		t.Errorf("winogrande example %q", got)
	}
	if got := d.Requests("S.\n\n"); got[0].Context != "S.\n\nX or A" || got[1].Continuation != " won." {
		t.Errorf("winogrande few-shot requests %q", got)
	}
}

// TestBadRows checks that every malformed row is refused as bad input
// naming file:line.
func TestBadRows(t *testing.T) {
	tests := []struct{ task, row, want string }{
		{"hellaswag", `{"activity_label": "A", "ctx": "c", "label": 0}`, `missing field "endings"`},
		{"hellaswag", `{"activity_label": "A", "endings": ["a", "b"], "label": 0}`, `missing field "ctx"`},
		{"hellaswag", `{"activity_label": "A", "ctx": "c", "endings": ["a", "b"], "label": 2}`, "outside the 2 endings"},
		{"hellaswag", `{"activity_label": "A", "ctx": "c", "endings": ["a", "[x]"], "label": 0}`, "endings 1 is empty"},
		{"hellaswag", `{"activity_label": "A", "ctx": "c", "endings": ["a", "b"], "label": "x"}`, "not an integer"},
		{"arc_challenge", `{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}`, "not one of the choice labels"},
		{"arc_challenge", `{"question": "q", "choices": {"text": ["a", ""], "label": ["A", "B"]}, "answerKey": "A"}`, "choices 1 is empty"},
		{"arc_challenge", `{"choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}`, `missing field "question"`},
		{"winogrande", `{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}`, "no \"_\" blank"},
		{"winogrande", `{"sentence": "a _ b", "option1": "a", "option2": "b", "answer": ""}`, "not \"1\" or \"2\""},
		{"winogrande", `{"sentence": "a _ b", "option1": "a", "answer": "1"}`, `missing field "option2"`},
		{"winogrande", `[1, 2]`, "not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.task, func(t *testing.T) {
			good := map[string]string{
				"hellaswag":     `{"activity_label": "A", "ctx": "c", "endings": ["a", "b"], "label": 0}`,
				"arc_challenge": `{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}`,
				"winogrande":    `{"sentence": "a _ b", "option1": "a", "option2": "b", "answer": "1"}`,
			}[tc.task]
			path := filepath.Join(t.TempDir(), "rows.jsonl")
			if err := os.WriteFile(path, []byte(good+"\n\n"+tc.row+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := registeredTasks[tc.task].ReadDocs(path)
			if !badinput.Is(err) || !strings.Contains(err.Error(), path+":3:") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want bad input at %s:3 saying %q", err, path, tc.want)
			}
		})
	}
}

// TestTextHelpers checks the Python string functions the tasks rely on.
func TestTextHelpers(t *testing.T) {
	for in, want := range map[string]string{"hello WORLD": "Hello world", "": "", "ébc D": "Ébc d", " x": " x"} {
		if got := pyCapitalize(in); got != want {
			t.Errorf("capitalize(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"  a [title] b  ": "a. b",
		"x [step] y":      "x y",
		"a [b] [c] d":     "a  d",
		"a   b":           "a  b",
	} {
		if got := hellaSwagPreprocess(in); got != want {
			t.Errorf("preprocess(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzReadDocs feeds arbitrary rows to every task parser: it must return
// docs or a bad-input error, never panic, and every doc must be scorable.
func FuzzReadDocs(f *testing.F) {
	f.Add(`{"activity_label": "A", "ctx": "c", "endings": ["a", "b"], "label": 0}`)
	f.Add(`{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}`)
	f.Add(`{"sentence": "a _ b", "option1": "a", "option2": "b", "answer": "1"}`)
	f.Add(`{"sentence": "_", "option1": "", "option2": "b", "answer": 2}`)
	f.Fuzz(func(t *testing.T, rows string) {
		for _, name := range TaskNames() {
			docs, err := registeredTasks[name].readDocs("fuzz.jsonl", strings.NewReader(rows))
			if err != nil {
				if !badinput.Is(err) {
					t.Fatalf("%s: %v is not bad input", name, err)
				}
				continue
			}
			for _, d := range docs {
				n := d.NumChoices()
				if n < 2 || d.Gold < 0 || d.Gold >= n || len(d.Requests("")) != n || d.Example() == "" {
					t.Fatalf("%s: unscorable doc %+v", name, d)
				}
				for _, c := range d.Choices {
					if c == "" {
						t.Fatalf("%s: empty choice in %+v", name, d)
					}
				}
			}
		}
	})
}

// TestDocScore checks acc and acc_norm on log-likelihoods chosen by hand:
// normalisation by characters (not bytes), and ties going to the first
// choice as numpy's argmax.
func TestDocScore(t *testing.T) {
	tests := []struct {
		name         string
		choices      []string
		lls          []float64
		gold         int
		acc, accNorm float64
	}{
		{"plain", []string{"ab", "abcd"}, []float64{-3, -4}, 0, 1, 0},                   // per char: -1.5, -1
		{"characters not bytes", []string{"éééé", "abc"}, []float64{-4, -2.7}, 1, 1, 1}, // by chars -1 vs -0.9; by bytes -0.5 would win
		{"tie to first", []string{"a", "b"}, []float64{-2, -2}, 1, 0, 0},
		{"gold last", []string{"x", "y", "z"}, []float64{-9, -8, -1}, 2, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Doc{Choices: tc.choices, Gold: tc.gold}
			acc, accNorm := d.score(tc.lls)
			if acc != tc.acc || accNorm != tc.accNorm {
				t.Errorf("acc %v acc_norm %v, want %v %v", acc, accNorm, tc.acc, tc.accNorm)
			}
		})
	}
	if _, n := (&Doc{Gold: 0}).score([]float64{-1, -2}); !math.IsNaN(n) {
		t.Errorf("acc_norm without choices = %v, want NaN", n)
	}
}

// The built-in tasks are registered, LookupTask names them when refusing
// an unknown one, and registering a name twice panics.
func TestTaskRegistry(t *testing.T) {
	if got := strings.Join(TaskNames(), ","); got != "arc_challenge,hellaswag,winogrande" {
		t.Errorf("TaskNames = %s", got)
	}
	if _, err := LookupTask("mmlu"); !badinput.Is(err) || !strings.Contains(err.Error(), "hellaswag") {
		t.Errorf("LookupTask(mmlu): %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering hellaswag twice did not panic")
		}
	}()
	RegisterTask(&Task{Name: "hellaswag"})
}
