package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

func TestReadKinds(t *testing.T) {
	cases := []struct {
		name, file, content string
		opt                 ReadOptions
		kind                Kind
		labels              []string
		want                []Record
	}{
		{
			name: "instruction with input, blank lines and CRLF", file: "a.jsonl",
			content: "{\"instruction\": \"do this\", \"input\": \"x y\", \"output\": \"ok\"}\r\n\r\n  \n{\"instruction\": \"do\", \"output\": \"fine\"}\n",
			kind:    Instruction,
			want: []Record{
				{Kind: Instruction, Instruction: "do this", Input: "x y", Output: "ok", Line: 1},
				{Kind: Instruction, Instruction: "do", Output: "fine", Line: 4},
			},
		},
		{
			name: "instruction and response", file: "a.jsonl",
			content: `{"instruction": "do", "response": "ok", "id": 7}`,
			kind:    Instruction,
			want:    []Record{{Kind: Instruction, Instruction: "do", Output: "ok", Line: 1}},
		},
		{
			name: "prompt and completion, null input ignored", file: "a.jsonl",
			content: `{"prompt": "Q: hi\nA:", "completion": " hello", "input": null}`,
			kind:    Instruction,
			want:    []Record{{Kind: Instruction, Prompt: "Q: hi\nA:", Output: " hello", Line: 1}},
		},
		{
			name: "classification, labels sorted from the data", file: "a.jsonl",
			content: "{\"sentence\": \"s1\", \"label\": \"neg\"}\n{\"sentence\": \"s2\", \"label\": \"pos\"}\n{\"sentence\": \"s3\", \"label\": \"neg\"}\n",
			kind:    Classification, labels: []string{"neg", "pos"},
			want: []Record{
				{Kind: Classification, Sentence: "s1", Label: "neg", Class: 0, Line: 1},
				{Kind: Classification, Sentence: "s2", Label: "pos", Class: 1, Line: 2},
				{Kind: Classification, Sentence: "s3", Label: "neg", Class: 0, Line: 3},
			},
		},
		{
			name: "numeric labels sort as numbers", file: "a.jsonl",
			content: "{\"sentence\": \"s\", \"label\": 10}\n{\"sentence\": \"s\", \"label\": 9}\n{\"sentence\": \"s\", \"label\": \"2\"}\n",
			kind:    Classification, labels: []string{"2", "9", "10"},
			want: []Record{
				{Kind: Classification, Sentence: "s", Label: "10", Class: 2, Line: 1},
				{Kind: Classification, Sentence: "s", Label: "9", Class: 1, Line: 2},
				{Kind: Classification, Sentence: "s", Label: "2", Class: 0, Line: 3},
			},
		},
		{
			name: "fixed label list", file: "a.jsonl",
			content: "{\"sentence\": \"s\", \"label\": \"pos\"}\n",
			opt:     ReadOptions{Labels: []string{"pos", "neg"}},
			kind:    Classification, labels: []string{"pos", "neg"},
			want: []Record{{Kind: Classification, Sentence: "s", Label: "pos", Class: 0, Line: 1}},
		},
		{
			name: "text", file: "a.jsonl",
			content: "{\"text\": \"hello world\"}\n{\"text\": \"\"}",
			kind:    Text,
			want:    []Record{{Kind: Text, Text: "hello world", Line: 1}, {Kind: Text, Line: 2}},
		},
		{
			name: "sentences as text", file: "a.jsonl",
			content: `{"sentence": "hello", "label": "x"}`,
			opt:     ReadOptions{Kind: Text, TextField: "sentence"},
			kind:    Text,
			want:    []Record{{Kind: Text, Text: "hello", Line: 1}},
		},
		{
			name: "JSON array over lines", file: "a.json",
			content: "[\n  {\"text\": \"one\"},\n  {\"text\":\n    \"two\"}\n]\n",
			kind:    Text,
			want:    []Record{{Kind: Text, Text: "one", Line: 2}, {Kind: Text, Text: "two", Line: 3}},
		},
		{
			name: "JSON array on one line after blank lines, with BOM", file: "a.json",
			content: "\ufeff\n\n[{\"sentence\": \"s\", \"label\": \"A\"}, {\"sentence\": \"t\", \"label\": \"B\"}]",
			kind:    Classification, labels: []string{"A", "B"},
			want: []Record{
				{Kind: Classification, Sentence: "s", Label: "A", Class: 0, Line: 3},
				{Kind: Classification, Sentence: "t", Label: "B", Class: 1, Line: 3},
			},
		},
		{
			name: "JSON lines in a .json file", file: "a.json",
			content: "{\"text\": \"one\"}\n{\"text\": \"two\"}\n",
			kind:    Text,
			want:    []Record{{Kind: Text, Text: "one", Line: 1}, {Kind: Text, Text: "two", Line: 2}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), c.file, c.content)
			ds, err := Read(path, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			if ds.Kind != c.kind || !reflect.DeepEqual(ds.Labels, c.labels) {
				t.Errorf("kind %q labels %q, want %q %q", ds.Kind, ds.Labels, c.kind, c.labels)
			}
			if !reflect.DeepEqual(ds.Records, c.want) {
				t.Errorf("records\n got %+v\nwant %+v", ds.Records, c.want)
			}
		})
	}
}

func TestReadGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("{\"text\": \"one\"}\n{\"text\": \"two\"}\n"))
	zw.Close()
	dir := t.TempDir()
	ds, err := Read(writeFile(t, dir, "a.jsonl.gz", buf.String()), ReadOptions{})
	if err != nil || len(ds.Records) != 2 || ds.Records[1].Text != "two" {
		t.Fatalf("records %+v, err %v", ds, err)
	}
	_, err = Read(writeFile(t, dir, "b.jsonl.gz", "not gzip"), ReadOptions{})
	if !badinput.Is(err) || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("plain text named .gz: %v", err)
	}
}

func TestReadLabelsFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "SC/films/labels.json", `["good", "bad", "so-so"]`)
	path := writeFile(t, dir, "SC/films/train.json", `[{"sentence": "s", "label": "bad"}, {"sentence": "t", "label": "good"}]`)
	ds, err := Read(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ds.Labels, []string{"good", "bad", "so-so"}) || ds.LabelSource != filepath.Join(dir, "SC/films/labels.json") {
		t.Errorf("labels %q from %s", ds.Labels, ds.LabelSource)
	}
	if ds.Records[0].Class != 1 || ds.Records[1].Class != 0 {
		t.Errorf("classes %d %d, want 1 0 (labels.json order)", ds.Records[0].Class, ds.Records[1].Class)
	}
	// A fixed list wins over labels.json.
	ds, err = Read(path, ReadOptions{Labels: []string{"bad", "good"}})
	if err != nil || ds.Records[0].Class != 0 || ds.LabelSource != "option" {
		t.Errorf("fixed labels: %+v %v", ds, err)
	}
	// labels.json is not read for other kinds.
	writeFile(t, dir, "txt/labels.json", `broken`)
	if _, err := Read(writeFile(t, dir, "txt/a.jsonl", `{"text": "x"}`), ReadOptions{}); err != nil {
		t.Errorf("a broken labels.json beside text data: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	cases := []struct {
		name, file, content string
		labels              string // labels.json beside the file
		opt                 ReadOptions
		want                string // the whole message after the directory
		line                int    // LineError.Line, 0 when not a LineError
		field               string
	}{
		{name: "not JSON", file: "f.jsonl", content: "{\"text\": \"a\"}\n{oops}\n",
			want: `f.jsonl:2: not valid JSON: invalid character 'o' looking for beginning of object key string`, line: 2},
		{name: "truncated object", file: "f.jsonl", content: "{\"text\": \"a\"",
			want: `f.jsonl:1: not valid JSON: unexpected end of JSON input`, line: 1},
		{name: "not an object", file: "f.jsonl", content: "{\"text\": \"a\"}\n\"a\"\n",
			want: `f.jsonl:2: not a JSON object (got a string)`, line: 2},
		{name: "missing output", file: "f.jsonl", content: `{"instruction": "x", "input": "y"}`,
			want: `f.jsonl:1: field "output": missing: an instruction record needs "output" (or "response", "completion")`, line: 1, field: "output"},
		{name: "missing completion", file: "f.jsonl", content: `{"prompt": "x"}`,
			want: `f.jsonl:1: field "completion": missing: a prompt record needs "completion" (or "output", "response")`, line: 1, field: "completion"},
		{name: "missing sentence", file: "f.jsonl", content: "\n\n{\"label\": \"x\"}",
			want: `f.jsonl:3: field "sentence": missing: a classification record needs "sentence" and "label"`, line: 3, field: "sentence"},
		{name: "missing label", file: "f.jsonl", content: `{"sentence": "x"}`,
			want: `f.jsonl:1: field "label": missing: a classification record needs "sentence" and "label"`, line: 1, field: "label"},
		{name: "missing forced text field", file: "f.jsonl", content: `{"sentence": "x", "label": "y"}`, opt: ReadOptions{Kind: Text},
			want: `f.jsonl:1: field "text": missing: a text record needs it`, line: 1, field: "text"},
		{name: "no known field", file: "f.jsonl", content: `{"question": "x"}`,
			want: `f.jsonl:1: no known fields: expected "messages", "instruction" and "output" (or "response"), "prompt" and "completion", "sentence" and "label", or "text"`, line: 1},
		{name: "wrong type", file: "f.jsonl", content: `{"text": 5}`,
			want: `f.jsonl:1: field "text": expected a string, got a number`, line: 1, field: "text"},
		{name: "label of wrong type", file: "f.jsonl", content: `{"sentence": "s", "label": ["a"]}`,
			want: `f.jsonl:1: field "label": expected a string, number or boolean, got an array`, line: 1, field: "label"},
		{name: "mixed kinds", file: "f.jsonl", content: "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"text\": \"z\"}",
			want: `f.jsonl:2: a text record in a file of instruction records (the first record decides; ReadOptions.Kind forces one)`, line: 2},
		{name: "label not in labels.json", file: "f.jsonl", labels: `["yes", "no"]`,
			content: "{\"sentence\": \"s\", \"label\": \"yes\"}\n{\"sentence\": \"s\", \"label\": \"maybe\"}",
			want:    `f.jsonl:2: field "label": "maybe" is not in the label set (DIR/labels.json: "yes", "no")`, line: 2, field: "label"},
		{name: "label not in the fixed list", file: "f.jsonl", opt: ReadOptions{Labels: []string{"a"}},
			content: `{"sentence": "s", "label": "b"}`,
			want:    `f.jsonl:1: field "label": "b" is not in the label set (option: "a")`, line: 1, field: "label"},
		{name: "empty file", file: "f.jsonl", content: "",
			want: `f.jsonl: no records: the file is empty`},
		{name: "blank lines only", file: "f.jsonl", content: "\n  \n\t\n",
			want: `f.jsonl: no records: the file is empty`},
		{name: "empty array", file: "f.json", content: "[]",
			want: `f.json: no records: the file is empty`},
		{name: "array element not JSON", file: "f.json", content: "[\n{\"text\": \"a\"},\n{\"text\": }\n]",
			want: `f.json:3 (element 2): not valid JSON: invalid character '}' looking for beginning of value`, line: 3},
		{name: "array element not an object", file: "f.json", content: "[{\"text\": \"a\"},\n 7]",
			want: `f.json:2 (element 2): not a JSON object (got a number)`, line: 2},
		{name: "array element missing field", file: "f.json", content: "[{\"sentence\": \"a\", \"label\": \"x\"},\n\n {\"sentence\": \"b\"}]",
			want: `f.json:3 (element 2): field "label": missing: a classification record needs "sentence" and "label"`, line: 3, field: "label"},
		{name: "array not closed", file: "f.json", content: "[{\"text\": \"a\"},\n{\"text\": \"b\"}\n",
			want: `f.json:3: the JSON array is not closed by ]: unexpected end of file`, line: 3},
		{name: "data after the array", file: "f.json", content: "[{\"text\": \"a\"}]\n{\"text\": \"b\"}",
			want: `f.json:2: unexpected data after the JSON array's closing ]`, line: 2},
		{name: "line over the cap", file: "f.jsonl", opt: ReadOptions{MaxLineBytes: 20}, content: "{\"text\": \"a\"}\n{\"text\": \"" + strings.Repeat("a", 30) + "\"}\n",
			want: `f.jsonl:2: line longer than 20 bytes (max_line_bytes)`, line: 2},
		{name: "array element over the cap", file: "f.json", opt: ReadOptions{MaxLineBytes: 20}, content: "[{\"text\": \"a\"},\n {\"text\": \"" + strings.Repeat("a", 30) + "\"}]",
			want: `f.json:2 (element 2): element longer than 20 bytes (max_line_bytes)`, line: 2},
		{name: "negative cap", file: "f.jsonl", opt: ReadOptions{MaxLineBytes: -1}, content: `{"text": "a"}`,
			want: `f.jsonl: max_line_bytes -1 is negative (0: the default, 16777216)`},
		{name: "invalid UTF-8", file: "f.jsonl", content: "{\"text\": \"a\"}\n{\"text\": \"b\xffc\"}\n",
			want: `f.jsonl:2: invalid UTF-8 at byte 12 of the record`, line: 2},
		{name: "invalid UTF-8 in a key", file: "f.jsonl", content: "{\"te\xc3xt\": \"a\"}",
			want: `f.jsonl:1: invalid UTF-8 at byte 5 of the record`, line: 1},
		{name: "invalid UTF-8 in an array element", file: "f.json", content: "[{\"text\": \"a\"},\n\n{\"text\": \"\xed\xa0\x80\"}]",
			want: `f.json:3 (element 2): invalid UTF-8 at byte 11 of the record`, line: 3},
		{name: "broken labels.json", file: "f.jsonl", labels: `{"a": 1}`, content: `{"sentence": "s", "label": "a"}`,
			want: `DIR/labels.json: expected a JSON array of labels, got an object`},
		{name: "labels.json not JSON", file: "f.jsonl", labels: `["a",`, content: `{"sentence": "s", "label": "a"}`,
			want: `DIR/labels.json: not valid JSON: unexpected end of JSON input`},
		{name: "duplicate in labels.json", file: "f.jsonl", labels: `["a", "a"]`, content: `{"sentence": "s", "label": "a"}`,
			want: `DIR/labels.json: label "a" appears twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.labels != "" {
				writeFile(t, dir, LabelsFile, c.labels)
			}
			_, err := Read(writeFile(t, dir, c.file, c.content), c.opt)
			if err == nil {
				t.Fatal("no error")
			}
			if !badinput.Is(err) {
				t.Errorf("not marked as bad input: %v", err)
			}
			want := strings.ReplaceAll(c.want, "DIR", dir)
			if !strings.HasPrefix(want, dir) {
				want = filepath.Join(dir, want)
			}
			if err.Error() != want {
				t.Errorf("error\n got %s\nwant %s", err, want)
			}
			var le *LineError
			if errors.As(err, &le) != (c.line > 0) || c.line > 0 && (le.Line != c.line || le.Field != c.field) {
				t.Errorf("LineError %+v, want line %d field %q", le, c.line, c.field)
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "absent.jsonl"), ReadOptions{}); !badinput.Is(err) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestSkipBadLines(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, LabelsFile, `["yes", "no"]`)
	content := strings.Join([]string{
		`{"sentence": "a", "label": "yes"}`,
		`not json`,
		`{"sentence": "b"}`,
		`{"sentence": "c", "label": "maybe"}`,
		`{"text": "d"}`,
		`{"sentence": "e", "label": "no"}`,
	}, "\n")
	ds, err := Read(writeFile(t, dir, "f.jsonl", content), ReadOptions{SkipBadLines: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Skipped != 4 || len(ds.Records) != 2 || ds.Records[1].Line != 6 || ds.Records[1].Class != 1 {
		t.Errorf("skipped %d, records %+v", ds.Skipped, ds.Records)
	}
	var le *LineError
	if !errors.As(ds.FirstSkipped, &le) || le.Line != 2 {
		t.Errorf("first skipped: %v", ds.FirstSkipped)
	}
	_, err = Read(writeFile(t, dir, "g.jsonl", "x\ny\n"), ReadOptions{SkipBadLines: true})
	if !badinput.Is(err) || !strings.Contains(err.Error(), "all 2 were bad and skipped; the first: ") || !strings.Contains(err.Error(), "g.jsonl:1: not valid JSON") {
		t.Errorf("all bad: %v", err)
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": "", "auto": "", "text": Text, "instruction": Instruction, "classification": Classification, "chat": Chat} {
		if k, err := ParseKind(in); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %q, %v", in, k, err)
		}
	}
	if _, err := ParseKind("dialogue"); err == nil {
		t.Error("ParseKind accepted dialogue")
	}
}

func TestSample(t *testing.T) {
	ds := &Dataset{Path: "m", Kind: Text}
	for i := range 100 {
		ds.Records = append(ds.Records, Record{Kind: Text, Line: i + 1})
	}
	a, b, c := ds.Sample(10, 1), ds.Sample(10, 1), ds.Sample(10, 2)
	if len(a.Records) != 10 || !reflect.DeepEqual(a, b) || reflect.DeepEqual(a.Records, c.Records) {
		t.Errorf("samples: %v / %v / %v", a.Records, b.Records, c.Records)
	}
	for i := 1; i < len(a.Records); i++ {
		if a.Records[i].Line <= a.Records[i-1].Line {
			t.Fatalf("sample not in file order: %v", a.Records)
		}
	}
	if all := ds.Sample(1000, 1); len(all.Records) != 100 || len(ds.Records) != 100 {
		t.Errorf("sample of more than there is: %d", len(all.Records))
	}
	held, rest := ds.Split(10, 1)
	if !reflect.DeepEqual(held.Records, a.Records) || len(rest.Records) != 90 {
		t.Fatalf("split: held %d (same as Sample: %v), rest %d", len(held.Records), reflect.DeepEqual(held.Records, a.Records), len(rest.Records))
	}
	seen := map[int]bool{}
	for _, r := range append(held.Records, rest.Records...) {
		if seen[r.Line] {
			t.Fatalf("split: line %d in both parts", r.Line)
		}
		seen[r.Line] = true
	}
	for i := 1; i < len(rest.Records); i++ {
		if rest.Records[i].Line <= rest.Records[i-1].Line {
			t.Fatalf("rest not in file order")
		}
	}
	if held, rest := ds.Split(1000, 1); len(held.Records) != 100 || len(rest.Records) != 0 {
		t.Errorf("split of more than there is: %d held, %d left", len(held.Records), len(rest.Records))
	}
}

func TestReadFolder(t *testing.T) {
	if _, err := Read(t.TempDir(), ReadOptions{}); !badinput.Is(err) {
		t.Errorf("a folder: %v", err)
	}
}

// Lines are read whole whatever their length up to the cap (no 64 KiB
// limit as bufio.Scanner has), the cap counts the line without its end,
// a one-line JSON array is capped per element, and with SkipBadLines a
// line over the cap or with invalid UTF-8 is counted and reading goes on
// at the next line.
func TestReadLineCap(t *testing.T) {
	dir := t.TempDir()
	rec := func(n int) string { return `{"text": "` + strings.Repeat("x", n-12) + `"}` } // n bytes
	long := rec(100 << 10)
	ds, err := Read(writeFile(t, dir, "long.jsonl", long+"\n"+rec(20)+"\n"), ReadOptions{})
	if err != nil || len(ds.Records) != 2 || len(ds.Records[0].Text) != 100<<10-12 {
		t.Fatalf("a 100 KiB line: %v", err)
	}
	ds, err = Read(writeFile(t, dir, "cap.jsonl", rec(40)+"\r\n"+rec(40)), ReadOptions{MaxLineBytes: 40})
	if err != nil || len(ds.Records) != 2 {
		t.Fatalf("lines of exactly the cap: %v", err)
	}
	if _, err := Read(writeFile(t, dir, "over.jsonl", rec(40)+"\n"+rec(41)), ReadOptions{MaxLineBytes: 40}); err == nil || !strings.HasSuffix(err.Error(), "over.jsonl:2: line longer than 40 bytes (max_line_bytes)") {
		t.Fatalf("a line one byte over the cap: %v", err)
	}
	array := "[" + strings.Repeat(rec(30)+", ", 200) + rec(30) + "]"
	ds, err = Read(writeFile(t, dir, "array.json", "\n\n"+array), ReadOptions{MaxLineBytes: 100})
	if err != nil || len(ds.Records) != 201 || ds.Records[200].Line != 3 {
		t.Fatalf("a %d-byte one-line array, elements under the cap: %v", len(array), err)
	}
	content := strings.Join([]string{rec(20), rec(5000), rec(20), "{\"text\": \"\xc3\"}", rec(20), long}, "\n")
	ds, err = Read(writeFile(t, dir, "skip.jsonl", content), ReadOptions{MaxLineBytes: 4096, SkipBadLines: true})
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, r := range ds.Records {
		lines = append(lines, r.Line)
	}
	if ds.Skipped != 3 || !reflect.DeepEqual(lines, []int{1, 3, 5}) || !strings.Contains(ds.FirstSkipped.Error(), "skip.jsonl:2: line longer than 4096 bytes") {
		t.Fatalf("skipped %d (first %v), records on lines %v; want 3 skipped, lines 1, 3, 5", ds.Skipped, ds.FirstSkipped, lines)
	}
}
