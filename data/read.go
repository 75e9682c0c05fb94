package data

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/badinput"
)

// ReadOptions control Read.
type ReadOptions struct {
	// Kind forces the record kind; empty detects it from the fields of each
	// record (every record of a file must then be of the same kind).
	Kind Kind
	// TextField names the field of text records (default "text"); with
	// Kind Text and TextField "sentence", the sentences of a classification
	// file serve as unlabelled text.
	TextField string
	// Labels fixes the label set of classification records, so that a test
	// file shares the train file's class indices. Nil: labels.json beside
	// the file when present, else the sorted distinct labels of the file.
	Labels []string
	// SkipBadLines counts and skips records that are not JSON, are not
	// valid UTF-8, lack a field, carry an unknown label or are longer than
	// MaxLineBytes, instead of failing on the first.
	SkipBadLines bool
	// MaxLineBytes caps the length of one line of JSON lines, or of one
	// element of a JSON array, so that a single huge record cannot take
	// the machine's memory; 0 means DefaultMaxLineBytes. A longer record
	// is bad input naming file:line.
	MaxLineBytes int
}

// DefaultMaxLineBytes is the default ReadOptions.MaxLineBytes (16 MiB):
// far above any real training record, small enough that reading and
// tokenizing one is cheap. `--max-line-bytes` changes it.
const DefaultMaxLineBytes = 16 << 20

// LineError is a bad record: where it is, which field, and what is wrong.
// Read returns it marked as bad input.
type LineError struct {
	File    string
	Line    int // 1-based line where the record starts
	Element int // 1-based element of a JSON array; 0 in JSON lines
	Field   string
	Msg     string
	// cause, when set, is the error Msg was taken from (a bad-input error
	// naming a setting, which the CLI respells as its flag).
	cause error
}

func (e *LineError) Error() string {
	loc := fmt.Sprintf("%s:%d", e.File, e.Line)
	if e.Element > 0 {
		loc += fmt.Sprintf(" (element %d)", e.Element)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: field %q: %s", loc, e.Field, e.Msg)
	}
	return loc + ": " + e.Msg
}

// Unwrap returns the error the message came from, if any.
func (e *LineError) Unwrap() error { return e.cause }

// LabelsFile is the file beside a classification data file that lists its
// labels, as in the CL benchmark.
const LabelsFile = "labels.json"

// Read reads a data file: JSON lines (one object per line, blank lines
// skipped) or a JSON array of objects, told apart by the first character,
// optionally gzip-compressed (.gz). Problems with the file's content are
// bad input naming file:line and the field.
func Read(path string, opt ReadOptions) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, badinput.Errorf("%s: not a gzip file: %v", path, err)
		}
		defer gz.Close()
		r = gz
	}
	labels := filepath.Join(filepath.Dir(path), LabelsFile)
	if _, err := os.Stat(labels); err != nil {
		labels = ""
	}
	ds, err := read(r, path, labels, opt)
	var pe *fs.PathError
	switch {
	case err == nil || badinput.Is(err):
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, badinput.Errorf("%s: damaged gzip data: %v", path, err)
	case errors.As(err, &pe):
		return nil, badinput.Wrap(err) // a folder, say
	}
	return ds, err
}

// ReadFrom reads records from r as Read does; name stands for the file in
// messages and in CLPromptFor. No labels.json is consulted.
func ReadFrom(r io.Reader, name string, opt ReadOptions) (*Dataset, error) {
	return read(r, name, "", opt)
}

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

// read streams JSON lines, switching to a JSON array when the first
// non-blank line opens one.
func read(r io.Reader, name, labelsPath string, opt ReadOptions) (*Dataset, error) {
	if opt.TextField == "" {
		opt.TextField = "text"
	}
	if opt.MaxLineBytes < 0 {
		return nil, badinput.Errorf("%s: %v %d is negative (0: the default, %d)", name, badinput.Setting("max_line_bytes"), opt.MaxLineBytes, DefaultMaxLineBytes)
	}
	if opt.MaxLineBytes == 0 {
		opt.MaxLineBytes = DefaultMaxLineBytes
	}
	rd := &reader{name: name, opt: opt, labelsPath: labelsPath, ds: &Dataset{Path: name}}
	if opt.Labels != nil {
		if err := rd.setLabels(opt.Labels, "option"); err != nil {
			return nil, err
		}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if b, _ := br.Peek(3); bytes.Equal(b, utf8BOM) {
		br.Discard(3)
	}
	// A file whose first non-blank character is [ is a JSON array, which
	// may well be one long line: it is read whole, its elements capped.
	first, err := skipBlank(br)
	if err != nil {
		return nil, err
	}
	if b, _ := br.Peek(1); len(b) == 1 && b[0] == '[' {
		if err := rd.readArray(br, first); err != nil {
			return nil, err
		}
		return rd.finish()
	}
	var buf []byte
	for lineNo := first; ; lineNo++ {
		line, tooLong, err := readLine(br, &buf, opt.MaxLineBytes)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if tooLong {
			if err := rd.rejectCause(lineNo, 0, "", tooLongError("line", opt.MaxLineBytes)); err != nil {
				return nil, err
			}
		} else if t := bytes.TrimSpace(line); len(t) > 0 {
			if err := rd.add(lineNo, 0, t); err != nil {
				return nil, err
			}
		}
		if err == io.EOF {
			break
		}
	}
	return rd.finish()
}

// skipBlank consumes the white space at the start of br and returns the
// number of the line it stops on.
func skipBlank(br *bufio.Reader) (int, error) {
	line := 1
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return line, nil
		}
		if err != nil {
			return line, err
		}
		switch c {
		case '\n':
			line++
		case ' ', '\t', '\r', '\f', '\v':
		default:
			return line, br.UnreadByte()
		}
	}
}

// readLine returns the next line without its end (\n or \r\n); the slice
// is valid until the next call. It returns io.EOF with the last line. A
// line longer than limit bytes (its end not counted) is read to its end
// without being kept and reported as tooLong, so the caller can refuse or
// skip it and go on with the next line. Unlike bufio.Scanner, which stops
// at 64 KiB unless told otherwise, the only limit is the one given.
func readLine(br *bufio.Reader, buf *[]byte, limit int) (line []byte, tooLong bool, err error) {
	line, err = br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		*buf = append((*buf)[:0], line...)
		for err == bufio.ErrBufferFull && len(*buf) <= limit+2 {
			line, err = br.ReadSlice('\n')
			*buf = append(*buf, line...)
		}
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		line = *buf
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > limit {
		return nil, true, err
	}
	return line, false, err
}

// readArray reads a JSON array of objects starting at line firstLine.
func (rd *reader) readArray(r io.Reader, firstLine int) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	line, seen := firstLine, 0
	lineAt := func(off int) int {
		line += bytes.Count(data[seen:off], []byte("\n"))
		seen = off
		return line
	}
	fatal := func(off, elem int, msg string) error {
		return badinput.Wrap(&LineError{File: rd.name, Line: lineAt(min(off, len(data))), Element: elem, Msg: msg})
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return fatal(0, 0, "not a valid JSON array: "+jsonError(err))
	}
	// next is where the next token starts: past blanks and a comma.
	next := func() int {
		off := int(dec.InputOffset())
		for off < len(data) && strings.IndexByte(" \t\r\n,", data[off]) >= 0 {
			off++
		}
		return off
	}
	for elem := 1; dec.More(); elem++ {
		off := next()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fatal(off, elem, "not valid JSON: "+jsonError(err))
		}
		if len(raw) > rd.opt.MaxLineBytes {
			if err := rd.rejectCause(lineAt(off), elem, "", tooLongError("element", rd.opt.MaxLineBytes)); err != nil {
				return err
			}
			continue
		}
		if err := rd.add(lineAt(off), elem, raw); err != nil {
			return err
		}
	}
	end := next()
	if _, err := dec.Token(); err != nil {
		return fatal(end, 0, "the JSON array is not closed by ]: "+jsonError(err))
	}
	end = next()
	if _, err := dec.Token(); err != io.EOF {
		return fatal(end, 0, "unexpected data after the JSON array's closing ]")
	}
	return nil
}

// jsonError words a decoding error without Go type names.
func jsonError(err error) string {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return "unexpected end of file"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// reader accumulates the records of one file.
type reader struct {
	name       string
	opt        ReadOptions
	labelsPath string // labels.json beside the file ("" when none)
	ds         *Dataset
	classes    map[string]int // label → class (fixed sets) or seen labels
	fixed      bool           // the label set is known before reading
}

// reject handles a bad record: with SkipBadLines it is counted (the first
// kept for the report) and nil returned, otherwise the bad-input error
// naming file:line and the field.
func (rd *reader) reject(line, elem int, field, msg string) error {
	return rd.record(&LineError{File: rd.name, Line: line, Element: elem, Field: field, Msg: msg})
}

// rejectCause is reject with the message taken from an error, which the
// LineError wraps.
func (rd *reader) rejectCause(line, elem int, field string, cause error) error {
	return rd.record(&LineError{File: rd.name, Line: line, Element: elem, Field: field, Msg: cause.Error(), cause: cause})
}

// tooLongError says that a line (or an array element) is over the
// max_line_bytes cap.
func tooLongError(what string, limit int) error {
	return badinput.Errorf("%s longer than %d bytes (%v)", what, limit, badinput.Setting("max_line_bytes"))
}

// record fails on a rejected record, or skips and counts it under
// SkipBadLines.
func (rd *reader) record(e *LineError) error {
	err := badinput.Wrap(e)
	if !rd.opt.SkipBadLines {
		return err
	}
	if rd.ds.Skipped == 0 {
		rd.ds.FirstSkipped = err
	}
	rd.ds.Skipped++
	return nil
}

// add parses one record; a bad record is skipped or returned as an error.
func (rd *reader) add(line, elem int, b []byte) error {
	bad := func(field, msg string) error { return rd.reject(line, elem, field, msg) }
	// JSON decoding would replace invalid UTF-8 by U+FFFD without a word;
	// a record is refused (or skipped and counted) instead.
	if !utf8.Valid(b) {
		return bad("", fmt.Sprintf("invalid UTF-8 at byte %d of the record", invalidUTF8At(b)+1))
	}
	if k := jsonKind(b); k != "an object" {
		if !json.Valid(b) {
			var v any
			return bad("", "not valid JSON: "+jsonError(json.Unmarshal(b, &v)))
		}
		return bad("", "not a JSON object (got "+k+")")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return bad("", "not valid JSON: "+jsonError(err))
	}
	rec, err := parseRecord(obj, rd.opt.Kind, rd.opt.TextField)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return bad(fe.field, fe.msg)
		}
		return err
	}
	if rd.ds.Kind != "" && rec.Kind != rd.ds.Kind {
		return bad("", fmt.Sprintf("%s record in a file of %s records (the first record decides; ReadOptions.Kind forces one)", article(string(rec.Kind)), rd.ds.Kind))
	}
	if rec.Kind == Classification {
		if err := rd.loadLabels(); err != nil {
			return err
		}
		class, ok := rd.classes[rec.Label]
		switch {
		case ok:
		case rd.fixed:
			return bad("label", fmt.Sprintf("%q is not in the label set (%s: %s)", rec.Label, rd.ds.LabelSource, listLabels(rd.ds.Labels)))
		default:
			class = len(rd.classes)
			rd.classes[rec.Label] = class
		}
		rec.Class = class
	}
	rec.Line = line
	rd.ds.Kind = rec.Kind
	rd.ds.Records = append(rd.ds.Records, rec)
	return nil
}

// invalidUTF8At returns the offset of the first byte of b that does not
// start a valid UTF-8 sequence, or len(b).
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func article(s string) string {
	if strings.IndexByte("aeiou", s[0]) >= 0 {
		return "an " + s
	}
	return "a " + s
}

// loadLabels reads labels.json the first time a classification record
// needs the label set.
func (rd *reader) loadLabels() error {
	if rd.classes != nil {
		return nil
	}
	if rd.labelsPath == "" {
		rd.classes = map[string]int{}
		return nil
	}
	raw, err := os.ReadFile(rd.labelsPath)
	if err != nil {
		return badinput.Wrap(err)
	}
	var vals []json.RawMessage
	if err := json.Unmarshal(raw, &vals); err != nil {
		if json.Valid(raw) {
			return badinput.Errorf("%s: expected a JSON array of labels, got %s", rd.labelsPath, jsonKind(raw))
		}
		return badinput.Errorf("%s: not valid JSON: %s", rd.labelsPath, jsonError(err))
	}
	labels := make([]string, len(vals))
	for i, v := range vals {
		if labels[i], err = labelText("", v); err != nil {
			return badinput.Errorf("%s: element %d: %v", rd.labelsPath, i+1, err)
		}
	}
	return rd.setLabels(labels, rd.labelsPath)
}

func (rd *reader) setLabels(labels []string, source string) error {
	if len(labels) == 0 {
		return badinput.Errorf("%s: the label set is empty", source)
	}
	rd.classes = make(map[string]int, len(labels))
	for i, l := range labels {
		if _, dup := rd.classes[l]; dup {
			return badinput.Errorf("%s: label %q appears twice", source, l)
		}
		rd.classes[l] = i
	}
	rd.fixed = true
	rd.ds.Labels = append([]string(nil), labels...)
	rd.ds.LabelSource = source
	return nil
}

// finish checks that records were found and numbers labels seen in the
// data, sorted, when no label set was given.
func (rd *reader) finish() (*Dataset, error) {
	ds := rd.ds
	if len(ds.Records) == 0 {
		if ds.Skipped > 0 {
			return nil, badinput.Errorf("%s: no usable records: all %d were bad and skipped; the first: %v", rd.name, ds.Skipped, ds.FirstSkipped)
		}
		return nil, badinput.Errorf("%s: no records: the file is empty", rd.name)
	}
	if ds.Kind == Classification && !rd.fixed {
		ds.Labels = sortLabels(rd.classes)
		ds.LabelSource = "data"
		index := make(map[string]int, len(ds.Labels))
		for i, l := range ds.Labels {
			index[l] = i
		}
		for i := range ds.Records {
			ds.Records[i].Class = index[ds.Records[i].Label]
		}
	}
	if ds.Kind != Classification {
		ds.Labels, ds.LabelSource = nil, ""
	}
	return ds, nil
}

// listLabels shortens a label list for a message.
func listLabels(labels []string) string {
	const most = 10
	q := make([]string, 0, most+1)
	for i, l := range labels {
		if i == most {
			q = append(q, fmt.Sprintf("… %d more", len(labels)-most))
			break
		}
		q = append(q, fmt.Sprintf("%q", l))
	}
	return strings.Join(q, ", ")
}

// sortLabels orders the labels seen in a file: numerically when they are
// all numbers (so 10 follows 9), else as strings.
func sortLabels(seen map[string]int) []string {
	labels := make([]string, 0, len(seen))
	numeric := true
	for l := range seen {
		labels = append(labels, l)
		if _, err := strconv.ParseFloat(l, 64); err != nil {
			numeric = false
		}
	}
	if numeric {
		slices.SortFunc(labels, func(a, b string) int {
			x, _ := strconv.ParseFloat(a, 64)
			y, _ := strconv.ParseFloat(b, 64)
			return cmp.Or(cmp.Compare(x, y), strings.Compare(a, b))
		})
	} else {
		slices.Sort(labels)
	}
	return labels
}
