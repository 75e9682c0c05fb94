package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// FormatError reports a tokenizer file that cannot be used: it names the
// file, the JSON field (a path such as "normalizer.normalizers[1].type")
// and what is wrong with it.
type FormatError struct {
	File  string
	Field string
	Msg   string
}

func (e *FormatError) Error() string {
	file := e.File
	if file == "" {
		file = "tokenizer.json"
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", file, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", file, e.Field, e.Msg)
}

func fieldErr(field, format string, args ...any) error {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func unsupported(field, kind, typ string, supported []string) error {
	return fieldErr(field, "unsupported %s type %q (supported: %s)", kind, typ, strings.Join(supported, ", "))
}

// jsonObj is a JSON object being read, with its path for error messages.
type jsonObj struct {
	path string
	m    map[string]json.RawMessage
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func decodeObj(path string, raw json.RawMessage) (jsonObj, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return jsonObj{}, fieldErr(path, "expected an object, got %s", jsonKind(raw))
	}
	return jsonObj{path: path, m: m}, nil
}

func (o jsonObj) field(k string) string {
	if o.path == "" {
		return k
	}
	return o.path + "." + k
}

// get returns the value of k when it is present and not null.
func (o jsonObj) get(k string) (json.RawMessage, bool) {
	raw, ok := o.m[k]
	if !ok || isNull(raw) {
		return nil, false
	}
	return raw, true
}

func (o jsonObj) has(k string) bool {
	_, ok := o.get(k)
	return ok
}

func (o jsonObj) str(k, def string) (string, error) {
	raw, ok := o.get(k)
	if !ok {
		return def, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(o.field(k), "expected a string, got %s", jsonKind(raw))
	}
	return s, nil
}

func (o jsonObj) reqStr(k string) (string, error) {
	if !o.has(k) {
		return "", fieldErr(o.field(k), "missing")
	}
	return o.str(k, "")
}

// optStr returns nil for a missing or null string.
func (o jsonObj) optStr(k string) (*string, error) {
	if !o.has(k) {
		return nil, nil
	}
	s, err := o.str(k, "")
	return &s, err
}

func (o jsonObj) boolean(k string, def bool) (bool, error) {
	raw, ok := o.get(k)
	if !ok {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fieldErr(o.field(k), "expected true or false, got %s", jsonKind(raw))
	}
	return b, nil
}

func (o jsonObj) integer(k string, def int) (int, error) {
	raw, ok := o.get(k)
	if !ok {
		return def, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > 1<<31 {
		return 0, fieldErr(o.field(k), "expected a non-negative integer, got %s", strings.TrimSpace(string(raw)))
	}
	return int(n), nil
}

func (o jsonObj) float(k string, def float64) (float64, error) {
	raw, ok := o.get(k)
	if !ok {
		return def, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, fieldErr(o.field(k), "expected a number, got %s", jsonKind(raw))
	}
	return f, nil
}

func (o jsonObj) array(k string) ([]json.RawMessage, error) {
	raw, ok := o.get(k)
	if !ok {
		return nil, fieldErr(o.field(k), "missing")
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fieldErr(o.field(k), "expected an array, got %s", jsonKind(raw))
	}
	return a, nil
}

// typeName reads the "type" tag of a component.
func (o jsonObj) typeName() (string, error) {
	return o.reqStr("type")
}

// indexPath names element i of the array at path.
func indexPath(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// pattern is the {"String": s} or {"Regex": r} form of Split and Replace.
func (o jsonObj) pattern(k string) (string, bool, error) {
	raw, ok := o.get(k)
	if !ok {
		return "", false, fieldErr(o.field(k), "missing")
	}
	p, err := decodeObj(o.field(k), raw)
	if err != nil {
		return "", false, err
	}
	if p.has("String") {
		s, err := p.str("String", "")
		return s, false, err
	}
	if p.has("Regex") {
		s, err := p.str("Regex", "")
		return s, true, err
	}
	return "", false, fieldErr(o.field(k), `expected {"String": ...} or {"Regex": ...}`)
}

// singleRune reads a one-character string field.
func (o jsonObj) singleRune(k string, def rune) (rune, error) {
	s, err := o.str(k, string(def))
	if err != nil {
		return 0, err
	}
	r := []rune(s)
	if len(r) != 1 {
		return 0, fieldErr(o.field(k), "expected a single character, got %q", s)
	}
	return r[0], nil
}

// decodeComponent opens a typed component (a normalizer, pre-tokenizer,
// post-processor or decoder) and returns it with its "type".
func decodeComponent(path string, raw json.RawMessage) (jsonObj, string, error) {
	o, err := decodeObj(path, raw)
	if err != nil {
		return o, "", err
	}
	typ, err := o.typeName()
	return o, typ, err
}

// parseSequence parses the items of a "Sequence" component, listed under
// key, with parse.
func parseSequence[T any](o jsonObj, key string, parse func(string, json.RawMessage) (T, error)) ([]T, error) {
	items, err := o.array(key)
	if err != nil {
		return nil, err
	}
	seq := make([]T, 0, len(items))
	for i, item := range items {
		x, err := parse(indexPath(o.field(key), i), item)
		if err != nil {
			return nil, err
		}
		seq = append(seq, x)
	}
	return seq, nil
}
