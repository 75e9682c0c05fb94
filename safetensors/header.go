package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize caps the JSON header at 100 MB, as the reference
// implementation does, so a corrupt length cannot make us allocate or scan
// gigabytes.
const MaxHeaderSize = 100_000_000

// metadataKey is the header member that holds free-form string metadata
// instead of a tensor.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are the tensor's byte range, relative to the first byte
	// after the header (the header's data_offsets).
	Begin, End int64
}

// NumElements is the product of the dims (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// header is a validated header: every tensor lies inside the data section,
// and together they cover it exactly.
type header struct {
	tensors   map[string]*TensorInfo
	names     []string // sorted
	meta      map[string]string
	dataStart int64 // 8 + header length
}

// parseHeader validates the header of a whole file held in buf; path only
// labels errors.
func parseHeader(path string, buf []byte) (*header, error) {
	if len(buf) < 8 {
		return nil, formatErr(path, "", "file is %d bytes, too short for the 8-byte header length (empty or truncated file?)", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	switch {
	case n > MaxHeaderSize:
		return nil, formatErr(path, "", "header length %d exceeds the %d-byte limit (not a safetensors file?)", n, MaxHeaderSize)
	case n > uint64(len(buf)-8):
		return nil, formatErr(path, "", "header length %d runs past the end of the %d-byte file (truncated?)", n, len(buf))
	case n < 2:
		return nil, formatErr(path, "", "header length %d is too short for a JSON object", n)
	}
	js := buf[8 : 8+n]
	if !utf8.Valid(js) {
		return nil, formatErr(path, "", "header is not valid UTF-8")
	}
	if js[0] != '{' {
		return nil, formatErr(path, "", "header does not start with '{' (not a safetensors file?)")
	}
	dataLen := uint64(len(buf)) - 8 - n
	h := &header{tensors: map[string]*TensorInfo{}, dataStart: int64(8 + n)}
	err := walkObject(js, func(key string, val json.RawMessage) error {
		if key == metadataKey {
			m, err := parseMetadata(val)
			if err != nil {
				return formatErr(path, "", "%s: %v", metadataKey, err)
			}
			h.meta = m
			return nil
		}
		t, err := parseEntry(key, val, dataLen)
		if err != nil {
			return formatErr(path, key, "%v", err)
		}
		h.tensors[key] = t
		return nil
	})
	if err != nil {
		var dup *dupKeyError
		switch {
		case errors.As(err, &dup) && dup.key == metadataKey:
			return nil, formatErr(path, "", "header has %s twice", metadataKey)
		case errors.As(err, &dup):
			return nil, formatErr(path, dup.key, "tensor appears twice in the header")
		case errors.Is(err, ErrFormat):
			return nil, err
		}
		return nil, formatErr(path, "", "header is not valid JSON: %v", err)
	}
	if err := checkCoverage(path, h.tensors, dataLen); err != nil {
		return nil, err
	}
	h.names = make([]string, 0, len(h.tensors))
	for name := range h.tensors {
		h.names = append(h.names, name)
	}
	sort.Strings(h.names)
	return h, nil
}

// parseEntry validates one tensor's header entry against the size of the
// data section.
func parseEntry(name string, val json.RawMessage, dataLen uint64) (*TensorInfo, error) {
	if !isObject(val) {
		return nil, fmt.Errorf("header entry is %s, want an object with dtype, shape and data_offsets", describe(val))
	}
	var (
		t                    = &TensorInfo{Name: name}
		haveDType, haveShape bool
		haveOffsets          bool
		shapeRaw, offsetsRaw []json.RawMessage
	)
	err := walkObject(val, func(key string, v json.RawMessage) error {
		switch key {
		case "dtype":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("dtype is %s, want a string", describe(v))
			}
			t.DType, haveDType = DType(s), true
		case "shape":
			if !isArray(v) {
				return fmt.Errorf("shape is %s, want an array of integers", describe(v))
			}
			if err := json.Unmarshal(v, &shapeRaw); err != nil {
				return fmt.Errorf("shape: %v", err)
			}
			haveShape = true
		case "data_offsets":
			if !isArray(v) {
				return fmt.Errorf("data_offsets is %s, want [begin, end]", describe(v))
			}
			if err := json.Unmarshal(v, &offsetsRaw); err != nil {
				return fmt.Errorf("data_offsets: %v", err)
			}
			haveOffsets = true
		default:
			return fmt.Errorf("unknown field %q (want dtype, shape, data_offsets)", key)
		}
		return nil
	})
	if err != nil {
		var dup *dupKeyError
		if errors.As(err, &dup) {
			return nil, fmt.Errorf("field %q appears twice", dup.key)
		}
		return nil, err
	}
	switch {
	case !haveDType:
		return nil, errors.New("missing field dtype")
	case !haveShape:
		return nil, errors.New("missing field shape")
	case !haveOffsets:
		return nil, errors.New("missing field data_offsets")
	}
	size := uint64(t.DType.Size())
	if size == 0 {
		return nil, fmt.Errorf("unknown dtype %q (known: %s)", t.DType, knownDTypes())
	}

	t.Shape = make([]int64, len(shapeRaw))
	nbytes, overflow := size, false
	for i, raw := range shapeRaw {
		d, err := parseCount(raw)
		if err != nil {
			return nil, fmt.Errorf("shape[%d]: %v", i, err)
		}
		t.Shape[i] = int64(d)
		hi, lo := bits.Mul64(nbytes, d)
		overflow = overflow || hi != 0
		nbytes = lo
	}
	if overflow || nbytes > math.MaxInt64 {
		// A zero dim makes the true size 0 even if the running product
		// overflowed first.
		if !hasZero(t.Shape) {
			return nil, fmt.Errorf("shape %s of %s overflows 64 bits", fmtShape(t.Shape), t.DType)
		}
		nbytes = 0
	}

	if len(offsetsRaw) != 2 {
		return nil, fmt.Errorf("data_offsets has %d elements, want [begin, end]", len(offsetsRaw))
	}
	begin, err := parseCount(offsetsRaw[0])
	if err != nil {
		return nil, fmt.Errorf("data_offsets begin: %v", err)
	}
	end, err := parseCount(offsetsRaw[1])
	if err != nil {
		return nil, fmt.Errorf("data_offsets end: %v", err)
	}
	switch {
	case begin > end:
		return nil, fmt.Errorf("data_offsets [%d, %d] begin after they end", begin, end)
	case end-begin != nbytes:
		return nil, fmt.Errorf("data_offsets [%d, %d] span %d bytes, but shape %s of %s needs %d", begin, end, end-begin, fmtShape(t.Shape), t.DType, nbytes)
	case end > dataLen:
		return nil, fmt.Errorf("data_offsets [%d, %d] run past the %d-byte data section (file truncated?)", begin, end, dataLen)
	}
	t.Begin, t.End = int64(begin), int64(end)
	return t, nil
}

// checkCoverage requires the tensors to tile the data section exactly: no
// overlap, no gap, no trailing bytes.
func checkCoverage(path string, tensors map[string]*TensorInfo, dataLen uint64) error {
	ts := make([]*TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	var at int64
	var prev *TensorInfo
	for _, t := range ts {
		switch {
		case t.Begin < at:
			return formatErr(path, t.Name, "data_offsets [%d, %d] overlap tensor %q at [%d, %d]", t.Begin, t.End, prev.Name, prev.Begin, prev.End)
		case t.Begin > at:
			return formatErr(path, t.Name, "data_offsets [%d, %d] leave bytes [%d, %d) of the data section to no tensor", t.Begin, t.End, at, t.Begin)
		}
		at, prev = t.End, t
	}
	if uint64(at) != dataLen {
		return formatErr(path, "", "data section is %d bytes but the tensors cover %d; %d trailing bytes belong to no tensor", dataLen, at, dataLen-uint64(at))
	}
	return nil
}

// parseMetadata reads the __metadata__ object: string keys to string values.
func parseMetadata(val json.RawMessage) (map[string]string, error) {
	if !isObject(val) {
		return nil, fmt.Errorf("is %s, want an object of strings", describe(val))
	}
	m := map[string]string{}
	err := walkObject(val, func(key string, v json.RawMessage) error {
		var s string
		if !isString(v) || json.Unmarshal(v, &s) != nil {
			return fmt.Errorf("key %q is %s, want a string", key, describe(v))
		}
		m[key] = s
		return nil
	})
	var dup *dupKeyError
	if errors.As(err, &dup) {
		return nil, fmt.Errorf("key %q appears twice", dup.key)
	}
	return m, err
}

// dupKeyError reports a key that occurs twice in one JSON object; Go's
// decoder would silently keep the last one.
type dupKeyError struct{ key string }

func (e *dupKeyError) Error() string { return fmt.Sprintf("duplicate key %q", e.key) }

// walkObject calls fn for each member of the JSON object in raw, in order,
// rejecting duplicate keys and anything after the closing brace but
// whitespace.
func walkObject(raw []byte, fn func(key string, val json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object, got %s", describe(raw))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key is %v, want a string", tok)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return err
		}
		if seen[key] {
			return &dupKeyError{key}
		}
		seen[key] = true
		if err := fn(key, val); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return err
		}
		return fmt.Errorf("unexpected %v after the closing brace", tok)
	}
	return nil
}

// parseCount reads a non-negative JSON integer that fits in int64, the range
// of dims and offsets.
func parseCount(raw json.RawMessage) (uint64, error) {
	s := strings.TrimSpace(string(raw))
	v, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err == nil && v <= math.MaxInt64:
		return v, nil
	case err == nil || errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%s is too large", s)
	case strings.HasPrefix(s, "-"):
		return 0, fmt.Errorf("%s is negative", s)
	}
	return 0, fmt.Errorf("%s is not a non-negative integer", describe(raw))
}

func firstByte(raw []byte) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

func isObject(raw []byte) bool { return firstByte(raw) == '{' }
func isArray(raw []byte) bool  { return firstByte(raw) == '[' }
func isString(raw []byte) bool { return firstByte(raw) == '"' }

// describe names the kind of a JSON value for error messages, quoting short
// scalars so the user sees what was there.
func describe(raw []byte) string {
	switch firstByte(raw) {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		if len(raw) <= 40 {
			return "the string " + string(raw)
		}
		return "a string"
	}
	if len(raw) <= 40 {
		return string(raw)
	}
	return "a number"
}

func hasZero(shape []int64) bool {
	for _, d := range shape {
		if d == 0 {
			return true
		}
	}
	return false
}

func fmtShape(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}
