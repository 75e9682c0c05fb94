package continual

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// FuzzParseSequence: any bytes parse to a sequence or to bad input naming
// the file, never a panic or another kind of error.
func FuzzParseSequence(f *testing.F) {
	for _, s := range []string{
		"name: s\ndata_dir: d\ntrain_samples: 3\ntasks:\n  - name: a\n    train: a/train.json\n    test: a/test.json\n",
		"tasks:\n  - name: dbpedia\n  - {name: x, train: t, test: u, labels: l, test_samples: 4}\n",
		"tasks: [1, 2]\n", "tasks:\n  - name: a\n    train: x: y\n", "", "---\n", "tasks:\n  - name: a\n    train_samples: -1\n", "tasks:\n  - {name: a\n", "tasks:\n  - name: a\n\t- name: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		seq, err := parseSequence(raw, "fuzz.yaml")
		if err != nil {
			if !badinput.Is(err) || !strings.HasPrefix(err.Error(), "fuzz.yaml") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line of bad input naming the file", err)
			}
			// YAML breaks lines at \n, \r and the Unicode line breaks.
			lines := 1
			for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
				lines += bytes.Count(raw, []byte(brk))
			}
			var line int
			if _, scanErr := fmt.Sscanf(err.Error(), "fuzz.yaml:%d:", &line); scanErr == nil && (line < 1 || line > lines) {
				t.Fatalf("error %q names line %d of a file of at most %d lines", err, line, lines)
			}
			return
		}
		if len(seq.Tasks) == 0 {
			t.Fatal("a sequence without tasks parsed")
		}
		for _, task := range seq.Tasks {
			if task.Name == "" || task.Train == "" || task.Test == "" {
				t.Fatalf("incomplete task %+v", task)
			}
		}
	})
}
