package data

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/badinput"
)

// FuzzReadJSONL feeds arbitrary bytes to the reader, with and without a
// small line cap: it must never panic, every error must be bad input
// naming the file, and what it returns must be consistent (records of one
// kind, lines in range, classes that index the label set, text that is
// valid UTF-8).
func FuzzReadJSONL(f *testing.F) {
	for _, s := range []string{
		"{\"instruction\": \"do\", \"input\": \"x\", \"output\": \"ok\"}\n{\"instruction\": \"do\", \"response\": \"ok\"}\n",
		"{\"prompt\": \"p\", \"completion\": \"c\"}\r\n\r\n",
		"{\"sentence\": \"s\", \"label\": \"a\"}\n{\"sentence\": \"t\", \"label\": 3}\n{\"sentence\": \"u\", \"label\": true}",
		"{\"text\": \"hello\"}\n{\"text\": 5}\n{oops}\n",
		"[{\"text\": \"a\"},\n{\"text\": \"b\"}]",
		"[{\"text\": \"a\"}] trailing",
		"\ufeff{\"text\": \"bom\"}",
		"", "\n\n", "[", "null", "{\"label\": null, \"sentence\": \"x\"}",
		"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\", \"weight\": 1}]}\n{\"messages\": []}\n",
		"[{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"assistant\", \"content\": 3}]}]",
	} {
		f.Add([]byte(s), false, "", uint8(0))
		f.Add([]byte(s), true, "", uint8(0))
		f.Add([]byte(s), true, "", uint8(16))
	}
	f.Add([]byte("{\"sentence\": \"s\", \"label\": \"b\"}\n"), true, "a,b", uint8(0))
	f.Add([]byte("{\"text\": \"a\xffb\"}\n{\"text\": \"long enough to pass the cap\"}\n{\"text\": \"c\"}"), true, "", uint8(20))
	f.Fuzz(func(t *testing.T, content []byte, skip bool, labels string, lineCap uint8) {
		opt := ReadOptions{SkipBadLines: skip, MaxLineBytes: int(lineCap)}
		if labels != "" {
			opt.Labels = strings.Split(labels, ",")
		}
		ds, err := ReadFrom(bytes.NewReader(content), "fuzz.jsonl", opt)
		if err != nil {
			if !badinput.Is(err) {
				t.Fatalf("error not marked as bad input: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.jsonl") && !strings.HasPrefix(err.Error(), "option") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		lines := bytes.Count(content, []byte("\n")) + 1
		if len(ds.Records) == 0 || ds.Kind == "" {
			t.Fatalf("no error and %d records of kind %q", len(ds.Records), ds.Kind)
		}
		last := 0
		for _, r := range ds.Records {
			if r.Kind != ds.Kind || r.Line < max(last, 1) || r.Line > lines {
				t.Fatalf("record %+v (kind %s, previous line %d, %d lines)", r, ds.Kind, last, lines)
			}
			last = r.Line
			for _, f := range []string{r.Text, r.Sentence, r.Label, r.Instruction, r.Input, r.Prompt, r.Output} {
				if !utf8.ValidString(f) {
					t.Fatalf("record on line %d holds invalid UTF-8 %q", r.Line, f)
				}
			}
			if r.Kind == Classification && (r.Class < 0 || r.Class >= len(ds.Labels) || ds.Labels[r.Class] != r.Label) {
				t.Fatalf("class %d of %q, labels %q", r.Class, r.Label, ds.Labels)
			}
			if r.Kind == Chat && (len(r.Messages) == 0 || len(r.Learn) != len(r.Messages)) {
				t.Fatalf("chat record with %d messages and %d learn flags", len(r.Messages), len(r.Learn))
			}
		}
		if !skip && ds.Skipped != 0 {
			t.Fatalf("%d skipped without SkipBadLines", ds.Skipped)
		}
	})
}
