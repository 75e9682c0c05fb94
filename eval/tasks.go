package eval

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/migu-ml/migu/internal/badinput"
)

// Doc is one multiple-choice item, lm-eval style. Either one context is
// shared by every choice and each choice is a continuation (HellaSwag,
// ARC), or each choice completes its own context and one continuation is
// shared (Winogrande's partial scoring).
type Doc struct {
	// Contexts holds the shared context, or one context per choice.
	Contexts []string
	// Continuations holds one continuation per choice, or the shared one;
	// without the target delimiter.
	Continuations []string
	// Choices are the texts acc_norm divides by (by character length); nil
	// for tasks that report acc only.
	Choices []string
	Gold    int
	Line    int // line of the data file, for messages
}

// NumChoices is the number of options of the item.
func (d *Doc) NumChoices() int { return max(len(d.Contexts), len(d.Continuations)) }

// TargetDelimiter separates a context from its continuation, and
// FewshotDelimiter separates few-shot examples, as in lm-eval's defaults.
const (
	TargetDelimiter  = " "
	FewshotDelimiter = "\n\n"
)

// Requests are the log-likelihood queries of the item, one per choice,
// with prefix (the few-shot examples, or "") before each context.
func (d *Doc) Requests(prefix string) []Request {
	n := d.NumChoices()
	out := make([]Request, n)
	for i := range out {
		c, k := d.Contexts[0], d.Continuations[0]
		if len(d.Contexts) > 1 {
			c = d.Contexts[i]
		}
		if len(d.Continuations) > 1 {
			k = d.Continuations[i]
		}
		out[i] = Request{Context: prefix + c, Continuation: TargetDelimiter + k}
	}
	return out
}

// Example renders the item with its gold answer, as a few-shot example.
func (d *Doc) Example() string {
	c, k := d.Contexts[0], d.Continuations[0]
	if len(d.Contexts) > 1 {
		c = d.Contexts[d.Gold]
	}
	if len(d.Continuations) > 1 {
		k = d.Continuations[d.Gold]
	}
	return c + TargetDelimiter + k
}

// Task is a multiple-choice task as data: its name, the standard file name
// of its evaluation split, the metrics it reports and how one JSON row
// becomes a Doc. Scoring is shared (see RunTask).
type Task struct {
	Name    string
	File    string   // standard file name in a data folder
	Metrics []string // "acc", and "acc_norm" when Choices are set
	// Parse turns one JSON row into a Doc; ReadDocs prefixes its errors
	// with the file and line.
	Parse func(row []byte) (*Doc, error)
}

var (
	registeredMu    sync.RWMutex
	registeredTasks = map[string]*Task{}
)

func init() {
	RegisterTask(&Task{Name: "hellaswag", File: "hellaswag_validation.jsonl", Metrics: []string{"acc", "acc_norm"}, Parse: parseHellaSwag})
	RegisterTask(&Task{Name: "arc_challenge", File: "arc_challenge_test.jsonl", Metrics: []string{"acc", "acc_norm"}, Parse: parseARC})
	RegisterTask(&Task{Name: "winogrande", File: "winogrande_xl_validation.jsonl", Metrics: []string{"acc"}, Parse: parseWinogrande})
}

// RegisterTask adds a multiple-choice task; packages call it from init.
// Registering a name twice panics.
func RegisterTask(t *Task) {
	registeredMu.Lock()
	defer registeredMu.Unlock()
	if _, dup := registeredTasks[t.Name]; dup {
		panic("eval: task registered twice: " + t.Name)
	}
	registeredTasks[t.Name] = t
}

// TaskNames lists the multiple-choice task names in a stable order.
func TaskNames() []string {
	registeredMu.RLock()
	defer registeredMu.RUnlock()
	return taskNamesLocked()
}

func taskNamesLocked() []string {
	names := make([]string, 0, len(registeredTasks))
	for n := range registeredTasks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// LookupTask returns the named multiple-choice task, or a bad-input error
// listing the known ones.
func LookupTask(name string) (*Task, error) {
	registeredMu.RLock()
	defer registeredMu.RUnlock()
	t, ok := registeredTasks[name]
	if !ok {
		return nil, badinput.Errorf("unknown task %q (tasks: %s)", name, strings.Join(taskNamesLocked(), ", "))
	}
	return t, nil
}

// fieldError is a row problem; ReadDocs prefixes it with file:line.
type fieldError struct{ msg string }

func (e *fieldError) Error() string { return e.msg }

func rowErr(format string, args ...any) error { return &fieldError{fmt.Sprintf(format, args...)} }

// ReadDocs reads a JSON-lines file (optionally gzipped, by a .gz suffix)
// of task rows. Every row is checked before any scoring: a missing field,
// a gold answer outside the choices or an empty choice is a bad-input
// error naming file:line.
func (t *Task) ReadDocs(path string) ([]*Doc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badinput.Errorf("%s data: %v", t.Name, err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, badinput.Errorf("%s: %v", path, err)
		}
		defer gz.Close()
		r = gz
	}
	return t.readDocs(path, r)
}

func (t *Task) readDocs(path string, r io.Reader) ([]*Doc, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<20)
	var docs []*Doc
	line := 0
	for sc.Scan() {
		line++
		row := bytes.TrimSpace(sc.Bytes())
		if len(row) == 0 {
			continue
		}
		d, err := t.Parse(row)
		if err != nil {
			return nil, badinput.Errorf("%s:%d: %s row: %v", path, line, t.Name, err)
		}
		d.Line = line
		docs = append(docs, d)
	}
	if err := sc.Err(); err != nil {
		return nil, badinput.Errorf("%s:%d: %v", path, line+1, err)
	}
	if len(docs) == 0 {
		return nil, badinput.Errorf("%s: no %s rows", path, t.Name)
	}
	return docs, nil
}

// decodeRow unmarshals a JSON object and reports the first required field
// that is absent or null.
func decodeRow(row []byte, v any, required ...string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil {
		return rowErr("not a JSON object: %v", err)
	}
	for _, name := range required {
		if raw, ok := fields[name]; !ok || string(raw) == "null" {
			return rowErr("missing field %q", name)
		}
	}
	if err := json.Unmarshal(row, v); err != nil {
		return rowErr("%v", err)
	}
	return nil
}

// checkChoices rejects empty choices and a gold index outside them.
func checkChoices(what string, choices []string, gold int) error {
	if len(choices) < 2 {
		return rowErr("%d %s; a multiple-choice item needs at least 2", len(choices), what)
	}
	for i, c := range choices {
		if c == "" {
			return rowErr("%s %d is empty", what, i)
		}
	}
	if gold < 0 || gold >= len(choices) {
		return rowErr("gold answer %d is outside the %d %s", gold, len(choices), what)
	}
	return nil
}

// goldIndex reads an integer label given as a JSON number or string.
func goldIndex(raw json.RawMessage, field string) (int, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw)
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, rowErr("field %q is %s, not an integer", field, raw)
	}
	return n, nil
}

// parseHellaSwag follows lm-eval's hellaswag task: query =
// preprocess(activity_label + ": " + ctx_a + " " + capitalize(ctx_b)),
// choices = preprocess(each ending); rows with ctx but no ctx_a/ctx_b use
// ctx in their place.
func parseHellaSwag(row []byte) (*Doc, error) {
	var r struct {
		ActivityLabel string          `json:"activity_label"`
		Ctx           *string         `json:"ctx"`
		CtxA          *string         `json:"ctx_a"`
		CtxB          *string         `json:"ctx_b"`
		Endings       []string        `json:"endings"`
		Label         json.RawMessage `json:"label"`
	}
	if err := decodeRow(row, &r, "activity_label", "endings", "label"); err != nil {
		return nil, err
	}
	var ctx string
	switch {
	case r.CtxA != nil && r.CtxB != nil:
		ctx = *r.CtxA + " " + pyCapitalize(*r.CtxB)
	case r.Ctx != nil:
		ctx = *r.Ctx
	default:
		return nil, rowErr("missing field %q (or %q and %q)", "ctx", "ctx_a", "ctx_b")
	}
	gold, err := goldIndex(r.Label, "label")
	if err != nil {
		return nil, err
	}
	choices := make([]string, len(r.Endings))
	for i, e := range r.Endings {
		choices[i] = hellaSwagPreprocess(e)
	}
	if err := checkChoices("endings", choices, gold); err != nil {
		return nil, err
	}
	return &Doc{
		Contexts:      []string{hellaSwagPreprocess(r.ActivityLabel + ": " + ctx)},
		Continuations: choices,
		Choices:       choices,
		Gold:          gold,
	}, nil
}

var bracketSpan = regexp.MustCompile(`\[.*?\]`)

// hellaSwagPreprocess cleans WikiHow artifacts as lm-eval does: strip,
// " [title]" → ". ", drop every "[...]" span, then replace double spaces
// once.
func hellaSwagPreprocess(s string) string {
	s = pyStrip(s)
	s = strings.ReplaceAll(s, " [title]", ". ")
	s = bracketSpan.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "  ", " ")
}

// pyIsSpace is Python's str.isspace for one character.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// pyStrip is Python's str.strip() without arguments.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// parseARC follows lm-eval's arc_challenge: "Question: {question}\nAnswer:",
// choices = choices.text, gold = the index of answerKey in choices.label.
func parseARC(row []byte) (*Doc, error) {
	var r struct {
		Question string `json:"question"`
		Choices  struct {
			Text  []string `json:"text"`
			Label []string `json:"label"`
		} `json:"choices"`
		AnswerKey string `json:"answerKey"`
	}
	if err := decodeRow(row, &r, "question", "choices", "answerKey"); err != nil {
		return nil, err
	}
	if r.Choices.Text == nil || r.Choices.Label == nil {
		return nil, rowErr("field \"choices\" needs \"text\" and \"label\" lists")
	}
	if len(r.Choices.Text) != len(r.Choices.Label) {
		return nil, rowErr("choices has %d texts and %d labels", len(r.Choices.Text), len(r.Choices.Label))
	}
	gold := slices.Index(r.Choices.Label, r.AnswerKey)
	if gold < 0 {
		return nil, rowErr("answerKey %q is not one of the choice labels %v", r.AnswerKey, r.Choices.Label)
	}
	if err := checkChoices("choices", r.Choices.Text, gold); err != nil {
		return nil, err
	}
	return &Doc{
		Contexts:      []string{"Question: " + r.Question + "\nAnswer:"},
		Continuations: r.Choices.Text,
		Choices:       r.Choices.Text,
		Gold:          gold,
	}, nil
}

// parseWinogrande follows lm-eval's winogrande (partial scoring): each
// option replaces "_" in the sentence up to it, giving one context per
// option; the text after "_", stripped, is the shared continuation; gold
// comes from answer "1"/"2".
func parseWinogrande(row []byte) (*Doc, error) {
	var r struct {
		Sentence string `json:"sentence"`
		Option1  string `json:"option1"`
		Option2  string `json:"option2"`
		Answer   any    `json:"answer"`
	}
	if err := decodeRow(row, &r, "sentence", "option1", "option2", "answer"); err != nil {
		return nil, err
	}
	i := strings.Index(r.Sentence, "_")
	if i < 0 {
		return nil, rowErr("sentence has no \"_\" blank: %q", r.Sentence)
	}
	var gold int
	switch fmt.Sprint(r.Answer) {
	case "1":
		gold = 0
	case "2":
		gold = 1
	default:
		return nil, rowErr("answer %q is not \"1\" or \"2\" (a test split without answers cannot be scored)", fmt.Sprint(r.Answer))
	}
	options := []string{r.Option1, r.Option2}
	if err := checkChoices("options", options, gold); err != nil {
		return nil, err
	}
	target := pyStrip(r.Sentence[i+1:])
	if target == "" {
		return nil, rowErr("sentence has nothing after the \"_\" blank to score")
	}
	return &Doc{
		Contexts:      []string{r.Sentence[:i] + r.Option1, r.Sentence[:i] + r.Option2},
		Continuations: []string{target},
		Gold:          gold,
	}, nil
}
