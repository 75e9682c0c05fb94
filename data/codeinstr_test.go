package data

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// pyFixture exercises what ParsePython must handle. Tabs and a CRLF file
// are covered by the tests below.
const pyFixture = `"""Module docstring, not a function's."""
import os


def plain(a, b):
    """Add two numbers.

    Returns the sum.
    """
    c = a + b
    return c


class Box:
    '''A box.'''

    @staticmethod
    @cache(size=(1, 2))
    def make(x: int = 3, y: str = "a:b # not a comment",
             z=(lambda q: q)) -> dict[str, int]:
        'Make a box.'
        if x:
            return {"x": x}
        return {}

    async def fetch(self):
        r"""Fetch \d+ items; raw."""
        await self.go()
        return 1

    def nested(self):
        """Outer \x41\tB."""
        def inner():
            "Inner " "part."
            text = """
not indented
  at all"""
            return text
# a comment at column 0 inside the method
        total = 1 + \
            2
        return inner() + str(total)


def no_doc(x):
    y = x * 2
    return y


def one_liner(): return 1


def fstring_first(x):
    f"""{x} is not a docstring"""
    return x


def bytes_first():
    b"not a docstring either"
    return None


def _private(v):
    """Private helper."""
    w = v
    return w


def test_something():
    """A test function."""
    assert 1
    assert 2


def trailing(a,
             b):
    """Docstring only, then a short body."""
    return a
`

func TestParsePythonByHand(t *testing.T) {
	fs := ParsePython(pyFixture)
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
	}
	want := []string{"plain", "make", "fetch", "nested", "inner", "no_doc", "fstring_first", "bytes_first", "_private", "test_something", "trailing"}
	if !slices.Equal(names, want) {
		t.Fatalf("functions %v, want %v", names, want)
	}
	byName := map[string]PyFunction{}
	for _, f := range fs {
		byName[f.Name] = f
	}
	for _, tc := range []struct {
		name, field, got, want string
	}{
		{"plain", "Docstring", byName["plain"].Docstring, "Add two numbers.\n\nReturns the sum."},
		{"plain", "Signature", byName["plain"].Signature, "def plain(a, b):"},
		{"plain", "Body", byName["plain"].Body, "    c = a + b\n    return c"},
		{"make", "Signature", byName["make"].Signature, "@staticmethod\n@cache(size=(1, 2))\ndef make(x: int = 3, y: str = \"a:b # not a comment\",\n         z=(lambda q: q)) -> dict[str, int]:"},
		{"make", "Docstring", byName["make"].Docstring, "Make a box."},
		{"make", "RawDocstring", byName["make"].RawDocstring, "    'Make a box.'"},
		{"make", "Body", byName["make"].Body, "    if x:\n        return {\"x\": x}\n    return {}"},
		{"fetch", "Docstring", byName["fetch"].Docstring, `Fetch \d+ items; raw.`},
		{"nested", "Docstring", byName["nested"].Docstring, "Outer A B."},
		{"inner", "Docstring", byName["inner"].Docstring, "Inner part."},
		{"inner", "Body", byName["inner"].Body, "    text = \"\"\"\nnot indented\n  at all\"\"\"\n    return text"},
		{"nested", "Body", byName["nested"].Body, "    def inner():\n        \"Inner \" \"part.\"\n        text = \"\"\"\nnot indented\n  at all\"\"\"\n        return text\n# a comment at column 0 inside the method\n    total = 1 + \\\n        2\n    return inner() + str(total)"},
		{"fstring_first", "Docstring", byName["fstring_first"].Docstring, ""},
		{"bytes_first", "Docstring", byName["bytes_first"].Docstring, ""},
		{"no_doc", "Body", byName["no_doc"].Body, "    y = x * 2\n    return y"},
		{"trailing", "Signature", byName["trailing"].Signature, "def trailing(a,\n             b):"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s.%s = %q, want %q", tc.name, tc.field, tc.got, tc.want)
		}
	}
	if f := byName["fetch"]; !f.Async || f.Indent != "    " || f.BodyLines != 2 {
		t.Errorf("fetch: async %v, indent %q, %d body lines", f.Async, f.Indent, f.BodyLines)
	}
	if f := byName["plain"]; f.Line != 5 || f.EndLine != 11 {
		t.Errorf("plain: lines %d–%d, want 5–11", f.Line, f.EndLine)
	}
	// Tabs and CRLF line ends read the same as spaces and LF.
	tabbed := "def f():\r\n\t\"\"\"Doc\r\n\t\tmore.\"\"\"\r\n\tif 1:\r\n\t\treturn 2\r\n"
	if got := ParsePython(tabbed); len(got) != 1 || got[0].Docstring != "Doc\nmore." || got[0].Body != "\tif 1:\n\t\treturn 2" {
		t.Errorf("tabs and CRLF: %+v", got)
	}
}

// astScript lists, for each file argument, every function with the line
// of its def, the last line of its body, its docstring as
// ast.get_docstring(clean=True) returns it, and whether its body starts on
// the def line (one-line functions, which ParsePython skips).
const astScript = `
import ast, json, sys
out = []
for path in sys.argv[1:]:
    src = open(path, encoding="utf-8").read()
    lines = src.encode("utf-8").split(b"\n")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            b0 = node.body[0]
            one = lines[b0.lineno - 1][:b0.col_offset].strip() != b""
            out.append({"file": path, "name": node.name, "line": node.lineno, "end": node.end_lineno,
                        "doc": ast.get_docstring(node, clean=True) or "", "oneline": one})
json.dump(out, sys.stdout)
`

type astFunc struct {
	File    string `json:"file"`
	Name    string `json:"name"`
	Line    int    `json:"line"`
	End     int    `json:"end"`
	Doc     string `json:"doc"`
	OneLine bool   `json:"oneline"`
}

// TestParsePythonMatchesAST compares ParsePython with Python's own parser
// on the fixture and on standard-library modules: the same functions at
// the same lines, the same extent, the same cleaned docstrings.
func TestParsePythonMatchesAST(t *testing.T) {
	dir := t.TempDir()
	fixture := filepath.Join(dir, "fixture.py")
	if err := os.WriteFile(fixture, []byte(pyFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	stdlib := strings.TrimSpace(string(testenv.RunPython(t, `import sysconfig; print(sysconfig.get_paths()["stdlib"])`)))
	files := []string{fixture}
	for _, m := range []string{"argparse", "textwrap", "inspect", "dataclasses", "json/decoder", "email/message", "asyncio/tasks", "collections/__init__", "pathlib", "typing", "difflib", "statistics"} {
		p := filepath.Join(stdlib, m+".py")
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	var ref []astFunc
	if err := json.Unmarshal(testenv.RunPython(t, astScript, files...), &ref); err != nil {
		t.Fatal(err)
	}
	want := map[string]astFunc{}
	for _, f := range ref {
		if !f.OneLine {
			want[fmt.Sprintf("%s:%d", f.File, f.Line)] = f
		}
	}
	got := map[string]PyFunction{}
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ParsePython(string(src)) {
			got[fmt.Sprintf("%s:%d", file, f.Line)] = f
		}
	}
	docs := 0
	for key, w := range want {
		g, ok := got[key]
		switch {
		case !ok:
			t.Errorf("%s: ast finds %s, ParsePython does not", key, w.Name)
		case g.Name != w.Name || g.EndLine != w.End:
			t.Errorf("%s: got %s ending at %d, ast %s ending at %d", key, g.Name, g.EndLine, w.Name, w.End)
		case g.Docstring != w.Doc:
			t.Errorf("%s (%s): docstring\n got %q\nwant %q", key, w.Name, g.Docstring, w.Doc)
		}
		if w.Doc != "" {
			docs++
		}
	}
	for key, g := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: ParsePython finds %s, ast does not", key, g.Name)
		}
	}
	if len(want) < 200 || docs < 100 {
		t.Fatalf("only %d functions (%d documented) compared: too few standard-library files found", len(want), docs)
	}
	t.Logf("%d functions in %d files, %d documented: all match ast", len(want), len(files), docs)
}

// writeTree writes files (path → content) under a new folder.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCodeInstructions(t *testing.T) {
	copyOfPlain := "def plain(a, b):\n    \"\"\"Add two numbers.\n\n    Returns the sum.\n    \"\"\"\n    c = a + b\n    return c\n"
	long := "def long_one():\n    \"\"\"A long function body.\"\"\"\n" + strings.Repeat("    x = 1\n", 50)
	root := writeTree(t, map[string]string{
		"pkg/mod.py":            pyFixture,
		"pkg/again.py":          copyOfPlain, // the same function again: deduplicated
		"pkg/long.py":           long,
		"pkg/tests/helpers.py":  copyOfPlain + "\ndef other():\n    \"\"\"In a test folder.\"\"\"\n    a = 1\n    return a\n",
		"pkg/test_mod.py":       "def helper():\n    \"\"\"In a test file.\"\"\"\n    a = 1\n    return a\n",
		"pkg/latin1.py":         "def f():\n    \"\"\"caf\xe9 in Latin-1.\"\"\"\n    a = 1\n    return a\n",
		"pkg/__pycache__/x.py":  copyOfPlain,
		"pkg/notes.txt":         "def g(): pass",
		".hidden/mod.py":        copyOfPlain,
		"pkg/sub/ordered_b.py":  "def b_func(x):\n    \"\"\"Second by path.\"\"\"\n    y = x\n    return y\n",
		"pkg/sub/a/ordered.py":  "def a_func(x):\n    \"\"\"First by path.\"\"\"\n    y = x\n    return y\n",
		"pkg/sub/z_private.py":  "def _hidden(x):\n    \"\"\"Private but kept on request.\"\"\"\n    y = x\n    return y\n",
		"pkg/sub/short_body.py": "def short(x):\n    \"\"\"Only one body line.\"\"\"\n    return x\n",
	})
	recs, st, err := CodeInstructions(root, CodeInstructionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, r := range recs {
		sources = append(sources, r.Source)
	}
	wantSources := []string{"pkg/again.py:1", "pkg/mod.py:19", "pkg/mod.py:26", "pkg/mod.py:31", "pkg/mod.py:33", "pkg/sub/a/ordered.py:1", "pkg/sub/ordered_b.py:1"}
	if !slices.Equal(sources, wantSources) {
		t.Errorf("sources %v\nwant %v", sources, wantSources)
	}
	wantStats := CodeInstructionStats{Files: 8, SkippedFiles: 1, Functions: 17, Documented: 14, Tests: 1, Private: 2, TooShort: 2, TooLong: 1, Duplicates: 1, Kept: 7, Written: 7}
	if st != wantStats {
		t.Errorf("stats %+v\nwant  %+v", st, wantStats)
	}
	if r := recs[0]; r.Instruction != "Add two numbers.\n\nReturns the sum." || r.Input != "def plain(a, b):" || r.Output != "    c = a + b\n    return c" {
		t.Errorf("first record %+v", r)
	}

	// Options: keep tests and private functions, the completion format, a
	// limit spread over the list.
	recs, st, err = CodeInstructions(root, CodeInstructionOptions{KeepTests: true, KeepPrivate: true, MinBodyLines: 1, Format: CodeFormatCompletion, Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if st.Kept != 14 || st.Written != 4 || len(recs) != 4 {
		t.Errorf("kept %d, written %d (%d records), want 14 and 4", st.Kept, st.Written, len(recs))
	}
	if r := recs[0]; r.Prompt != "def plain(a, b):\n    \"\"\"Add two numbers.\n\n    Returns the sum.\n    \"\"\"\n" || r.Completion != "    c = a + b\n    return c\n" || r.Instruction != "" {
		t.Errorf("completion record %+v", r)
	}

	// The written file is read back as instruction records.
	for _, format := range []string{CodeFormatInstruction, CodeFormatCompletion} {
		recs, _, err := CodeInstructions(root, CodeInstructionOptions{Format: format})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "sub", "code.jsonl")
		if err := WriteCodeInstructions(out, recs); err != nil {
			t.Fatal(err)
		}
		ds, err := Read(out, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Kind != Instruction || len(ds.Records) != len(recs) {
			t.Fatalf("%s: read back %d %s records, wrote %d", format, len(ds.Records), ds.Kind, len(recs))
		}
		if r := ds.Records[1]; format == CodeFormatInstruction && (r.Instruction != "Make a box." || !strings.HasPrefix(r.Input, "@staticmethod\n") || r.Output != recs[1].Output) {
			t.Errorf("read back %+v", r)
		}
	}
}

func TestCodeInstructionsBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "x.py")
	os.WriteFile(file, []byte("x = 1\n"), 0o644)
	for _, tc := range []struct {
		root string
		o    CodeInstructionOptions
		want string
	}{
		{filepath.Join(dir, "absent"), CodeInstructionOptions{}, "no such file"},
		{file, CodeInstructionOptions{}, "is not a folder"},
		{dir, CodeInstructionOptions{Format: "yaml"}, `unknown format "yaml"`},
		{dir, CodeInstructionOptions{Limit: -1}, "is negative"},
	} {
		_, _, err := CodeInstructions(tc.root, tc.o)
		if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: got %v, want bad input with %q", tc.root, tc.o, err, tc.want)
		}
	}
	out := filepath.Join(dir, "out.jsonl")
	if err := WriteCodeInstructions(out, nil); err == nil || !badinput.Is(err) {
		t.Errorf("no records: got %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an empty result left a file behind")
	}
}

// FuzzParsePython feeds arbitrary text to the Python reader: it must not
// panic, and what it returns must be consistent: names that are
// identifiers, line ranges inside the source, bodies that count their
// lines, cleaned docstrings without blank first or last lines.
func FuzzParsePython(f *testing.F) {
	for _, s := range []string{
		pyFixture,
		"def f(:\n",
		"def f():\n    '''unterminated\n",
		"def f(x=\"\n    return 1\n",
		"@d\n@e\nasync def g(a,\n b):\n\t'doc'\n\treturn (1,\n2)\n",
		"class C:\n  def m(self): pass\n  def n(self):\n    \"x\"\n    return 1\n",
		"def 1x():\n  pass\n", "def\n", "\\\n", "\"\"\"", "'''\\", "\x00def f():\n  'a'\n  b\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		n := strings.Count(strings.ReplaceAll(strings.TrimPrefix(src, "\ufeff"), "\r\n", "\n"), "\n") + 1
		for _, fn := range ParsePython(src) {
			if fn.Name == "" || fn.Name[0] >= '0' && fn.Name[0] <= '9' {
				t.Fatalf("bad name %q", fn.Name)
			}
			if fn.Line < 1 || fn.EndLine < fn.Line || fn.EndLine > n {
				t.Fatalf("%s: lines %d–%d of %d", fn.Name, fn.Line, fn.EndLine, n)
			}
			lines := 0
			for _, l := range strings.Split(fn.Body, "\n") {
				if strings.TrimSpace(l) != "" {
					lines++
				}
			}
			if lines != fn.BodyLines {
				t.Fatalf("%s: BodyLines %d, counted %d", fn.Name, fn.BodyLines, lines)
			}
			if d := fn.Docstring; d != "" && (strings.HasPrefix(d, "\n") || strings.HasSuffix(d, "\n")) {
				t.Fatalf("%s: docstring %q not cleaned", fn.Name, d)
			}
			if !strings.Contains(fn.Signature, "def") {
				t.Fatalf("%s: signature %q", fn.Name, fn.Signature)
			}
		}
	})
}

// BenchmarkParsePython reads about 100 KB of Python (the fixture repeated).
func BenchmarkParsePython(b *testing.B) {
	src := strings.Repeat(pyFixture, 40)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if len(ParsePython(src)) == 0 {
			b.Fatal("no functions")
		}
	}
}
