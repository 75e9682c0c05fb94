package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// Code-instruction record formats.
const (
	// CodeFormatInstruction writes {"instruction": docstring, "input":
	// signature, "output": body}: the docstring says what to do, the
	// signature is the context, the body without the docstring is the
	// answer. With the Alpaca template, the model sees the docstring, then
	// the def line, and learns to write the body.
	CodeFormatInstruction = "instruction"
	// CodeFormatCompletion writes {"prompt": signature + docstring as
	// written, "completion": body}: the shape of a HumanEval problem, whose
	// prompt is a def line and a docstring and whose answer is the body.
	CodeFormatCompletion = "completion"
)

// CodeInstructionOptions configure CodeInstructions.
type CodeInstructionOptions struct {
	// Format is CodeFormatInstruction (default) or CodeFormatCompletion.
	Format string
	// MinBodyLines and MaxBodyLines bound the non-blank lines of a body
	// (defaults 2 and 40; 0 keeps the default, a negative maximum means no
	// bound). Long bodies are mostly cut by a small model's context anyway.
	MinBodyLines, MaxBodyLines int
	// MinDocChars skips docstrings shorter than this (default 10): "TODO"
	// is no instruction.
	MinDocChars int
	// KeepTests keeps test folders (test, tests, idle_test), test files
	// (test_*.py, *_test.py, conftest.py) and functions named test*.
	KeepTests bool
	// KeepPrivate keeps functions whose names start with an underscore
	// (dunder methods included).
	KeepPrivate bool
	// Limit keeps at most this many records (0: all), spread evenly over
	// the path-ordered list so every part of the tree is represented.
	Limit int
}

// CodeInstructionStats count what CodeInstructions saw and kept.
type CodeInstructionStats struct {
	Files        int `json:"files"`
	SkippedFiles int `json:"skipped_files"` // not UTF-8, or too large
	Functions    int `json:"functions"`
	Documented   int `json:"documented"`
	Tests        int `json:"skipped_tests"`
	Private      int `json:"skipped_private"`
	TooShort     int `json:"skipped_short"`
	TooLong      int `json:"skipped_long"`
	Duplicates   int `json:"skipped_duplicates"`
	Kept         int `json:"kept"`
	Written      int `json:"written"`
}

// CodeInstruction is one record: a documented function split into what to
// do and how. Source is "path:line" relative to the walked folder.
type CodeInstruction struct {
	Instruction string `json:"instruction,omitempty"`
	Input       string `json:"input,omitempty"`
	Output      string `json:"output,omitempty"`
	Prompt      string `json:"prompt,omitempty"`
	Completion  string `json:"completion,omitempty"`
	Source      string `json:"source"`
}

// maxPySource is the largest Python file read (larger ones are generated
// tables, not code worth learning from).
const maxPySource = 2 << 20

// CodeInstructions walks a folder of Python sources in path order and
// turns every documented function into an instruction record: docstring
// as the instruction, body without the docstring as the answer, and the
// signature as the input (or, in the completion format, signature and
// docstring as the prompt). Records whose docstring and body repeat an
// earlier one are dropped. The order is deterministic: files in lexical
// path order, functions in source order.
func CodeInstructions(root string, o CodeInstructionOptions) ([]CodeInstruction, CodeInstructionStats, error) {
	var st CodeInstructionStats
	switch o.Format {
	case "":
		o.Format = CodeFormatInstruction
	case CodeFormatInstruction, CodeFormatCompletion:
	default:
		return nil, st, badinput.Errorf("unknown %v %q (instruction, completion)", badinput.Setting("format"), o.Format)
	}
	if o.MinBodyLines == 0 {
		o.MinBodyLines = 2
	}
	if o.MaxBodyLines == 0 {
		o.MaxBodyLines = 40
	}
	if o.MinDocChars == 0 {
		o.MinDocChars = 10
	}
	if o.Limit < 0 {
		return nil, st, badinput.Errorf("%v %d is negative", badinput.Setting("limit"), o.Limit)
	}
	info, err := os.Stat(root)
	if err != nil {
		return nil, st, badinput.Wrap(err)
	}
	if !info.IsDir() {
		return nil, st, badinput.Errorf("%s is not a folder (%v names a folder of Python sources)", root, badinput.Setting("from"))
	}
	var recs []CodeInstruction
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // an unreadable corner of the tree
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && skipPyDir(name, o.KeepTests) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(name, ".py") {
			return nil
		}
		if !o.KeepTests && isTestFile(name) {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		st.Files++
		if len(src) > maxPySource || !utf8.Valid(src) || bytes.IndexByte(src, 0) >= 0 {
			st.SkippedFiles++
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		for _, f := range ParsePython(string(src)) {
			st.Functions++
			if f.Docstring == "" {
				continue
			}
			st.Documented++
			switch {
			case !o.KeepTests && strings.HasPrefix(f.Name, "test"):
				st.Tests++
			case !o.KeepPrivate && strings.HasPrefix(f.Name, "_"):
				st.Private++
			case f.BodyLines < o.MinBodyLines || len(strings.TrimSpace(f.Docstring)) < o.MinDocChars:
				st.TooShort++
			case o.MaxBodyLines > 0 && f.BodyLines > o.MaxBodyLines:
				st.TooLong++
			default:
				key := f.Docstring + "\x00" + f.Body
				if seen[key] {
					st.Duplicates++
					continue
				}
				seen[key] = true
				recs = append(recs, codeRecord(f, o.Format, fmt.Sprintf("%s:%d", filepath.ToSlash(rel), f.Line)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, st, badinput.Wrap(err)
	}
	st.Kept = len(recs)
	if o.Limit > 0 && len(recs) > o.Limit {
		picked := make([]CodeInstruction, o.Limit)
		for i := range picked {
			picked[i] = recs[i*len(recs)/o.Limit]
		}
		recs = picked
	}
	st.Written = len(recs)
	return recs, st, nil
}

// codeRecord builds the record of one documented function.
func codeRecord(f PyFunction, format, source string) CodeInstruction {
	if format == CodeFormatCompletion {
		return CodeInstruction{Prompt: f.Signature + "\n" + f.RawDocstring + "\n", Completion: f.Body + "\n", Source: source}
	}
	return CodeInstruction{Instruction: f.Docstring, Input: f.Signature, Output: f.Body, Source: source}
}

// skipPyDir reports whether a folder is left out of the walk: hidden
// folders, byte-code caches, installed third-party packages and, unless
// kept, test folders.
func skipPyDir(name string, keepTests bool) bool {
	switch {
	case strings.HasPrefix(name, "."), name == "__pycache__", name == "site-packages", name == "dist-packages":
		return true
	case !keepTests && (name == "test" || name == "tests" || name == "idle_test"):
		return true
	}
	return false
}

// isTestFile reports whether a Python file name is a test module's.
func isTestFile(name string) bool {
	return strings.HasPrefix(name, "test_") || strings.HasSuffix(name, "_test.py") || name == "conftest.py"
}

// WriteCodeInstructions writes records as JSON lines, atomically: the
// file appears complete or not at all.
func WriteCodeInstructions(path string, recs []CodeInstruction) error {
	if len(recs) == 0 {
		return badinput.Errorf("no documented functions matched; nothing written to %s", path)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return atomicfile.WriteFile(path, b.Bytes())
}
