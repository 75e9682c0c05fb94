package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/migu-ml/migu/internal/half"
)

// Spec declares a tensor before its data is written.
type Spec struct {
	Name  string
	DType DType
	Shape []int64
}

// Tensor is a tensor to Write: exactly one of Data (raw little-endian bytes
// of DType) or Values (float32 values, converted to DType, which must be
// F32, F16, BF16 or F64) holds its contents.
type Tensor struct {
	Name   string
	DType  DType
	Shape  []int64
	Data   []byte
	Values []float32
}

// Write writes tensors and metadata to path in the reference layout,
// atomically: either the complete file appears at path or nothing changes.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{t.Name, t.DType, t.Shape}
	}
	w, err := Create(path, specs, metadata)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, t := range tensors {
		switch {
		case t.Data != nil && t.Values != nil:
			return fmt.Errorf("safetensors: writing %s: tensor %q has both Data and Values", path, t.Name)
		case t.Values != nil:
			err = w.WriteFloat32(t.Name, t.Values)
		default:
			err = w.WriteBytes(t.Name, t.Data)
		}
		if err != nil {
			return err
		}
	}
	return w.Commit()
}

// Writer writes a safetensors file one tensor at a time, so a checkpoint
// never has to be in memory all at once. Create fixes the layout from the
// specs; tensors may then be written in any order; Commit makes the file
// appear at its path, and Abort (safe to defer) removes the partial file.
// A Writer is not safe for concurrent use.
type Writer struct {
	path      string
	tmp       *os.File
	dataStart int64
	layout    map[string]*TensorInfo
	written   map[string]bool
	filled    map[string]int64 // values AppendFloat32 has written so far, per tensor
	buf       []byte
	err       error // sticky: the first I/O failure, or errDone
}

var errDone = errors.New("writer already committed or aborted")

// Create starts writing path: it validates the specs, lays them out as the
// reference writer does, and writes the header to a temporary file beside
// path.
func Create(path string, specs []Spec, metadata map[string]string) (*Writer, error) {
	layout, hdr, err := planLayout(specs, metadata)
	if err != nil {
		return nil, fmt.Errorf("safetensors: writing %s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	w := &Writer{path: path, tmp: tmp, dataStart: int64(len(hdr)), layout: layout, written: map[string]bool{}, filled: map[string]int64{}}
	if _, err := tmp.Write(hdr); err != nil {
		return nil, w.fail(err)
	}
	return w, nil
}

// planLayout orders and places the tensors and encodes the header with its
// 8-byte length prefix and space padding.
func planLayout(specs []Spec, metadata map[string]string) (map[string]*TensorInfo, []byte, error) {
	ts := make([]*TensorInfo, len(specs))
	layout := make(map[string]*TensorInfo, len(specs))
	for i, s := range specs {
		switch {
		case s.Name == metadataKey:
			return nil, nil, fmt.Errorf("tensor name %q is reserved for metadata", s.Name)
		case !utf8.ValidString(s.Name):
			return nil, nil, fmt.Errorf("tensor name %q is not valid UTF-8", s.Name)
		case !s.DType.Valid():
			return nil, nil, fmt.Errorf("tensor %q: unknown dtype %q (known: %s)", s.Name, s.DType, knownDTypes())
		case layout[s.Name] != nil:
			return nil, nil, fmt.Errorf("tensor %q given twice", s.Name)
		}
		nbytes := uint64(s.DType.Size())
		overflow := false
		for _, d := range s.Shape {
			if d < 0 {
				return nil, nil, fmt.Errorf("tensor %q: shape %s has a negative dim", s.Name, fmtShape(s.Shape))
			}
			hi, lo := bits.Mul64(nbytes, uint64(d))
			overflow = overflow || hi != 0
			nbytes = lo
		}
		if (overflow || nbytes > math.MaxInt64) && !hasZero(s.Shape) {
			return nil, nil, fmt.Errorf("tensor %q: shape %s of %s overflows 64 bits", s.Name, fmtShape(s.Shape), s.DType)
		}
		if hasZero(s.Shape) {
			nbytes = 0
		}
		ts[i] = &TensorInfo{Name: s.Name, DType: s.DType, Shape: slices.Clone(s.Shape), End: int64(nbytes)}
		layout[s.Name] = ts[i]
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
		}
	}
	// Largest alignment first, then by name: every tensor then starts at a
	// multiple of its element size, and the bytes match the reference writer.
	sort.Slice(ts, func(i, j int) bool {
		ri, rj := dtypeRank[ts[i].DType], dtypeRank[ts[j].DType]
		if ri != rj {
			return ri > rj
		}
		return ts[i].Name < ts[j].Name
	})
	var at int64
	for _, t := range ts {
		n := t.End
		if n > math.MaxInt64-at {
			return nil, nil, errors.New("total size overflows 64 bits")
		}
		t.Begin, t.End = at, at+n
		at += n
	}

	var b strings.Builder
	b.WriteString("        ") // room for the length
	b.WriteByte('{')
	first := true
	if metadata != nil {
		b.WriteString(`"` + metadataKey + `":{`)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	for _, t := range ts {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":"` + string(t.DType) + `","shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString(`],"data_offsets":[` + strconv.FormatInt(t.Begin, 10) + "," + strconv.FormatInt(t.End, 10) + "]}")
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	hdr := []byte(b.String())
	n := len(hdr) - 8
	if n > MaxHeaderSize {
		return nil, nil, fmt.Errorf("header of %d bytes exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(hdr, uint64(n))
	return layout, hdr, nil
}

// writeJSONString quotes s the way serde_json does: only the quote, the
// backslash and control characters are escaped, so headers match the
// reference writer byte for byte.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// slot finds a declared, not yet written tensor and checks that n elements
// of data fit it.
func (w *Writer) slot(name string, n int64, unit string) (*TensorInfo, error) {
	if w.err != nil {
		return nil, fmt.Errorf("safetensors: writing %s: %w", w.path, w.err)
	}
	t, ok := w.layout[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("safetensors: writing %s: tensor %q was not declared to Create", w.path, name)
	case w.written[name] || w.filled[name] > 0:
		return nil, fmt.Errorf("safetensors: writing %s: tensor %q written twice", w.path, name)
	}
	want := t.NumElements()
	if unit == "bytes" {
		want = t.End - t.Begin
	}
	if n != want {
		return nil, fmt.Errorf("safetensors: writing %s: tensor %q (%s %s) takes %d %s, got %d", w.path, name, t.DType, fmtShape(t.Shape), want, unit, n)
	}
	return t, nil
}

// WriteBytes writes a tensor's raw little-endian data.
func (w *Writer) WriteBytes(name string, data []byte) error {
	t, err := w.slot(name, int64(len(data)), "bytes")
	if err != nil {
		return err
	}
	if _, err := w.tmp.WriteAt(data, w.dataStart+t.Begin); err != nil {
		return w.fail(err)
	}
	w.written[name] = true
	return nil
}

// WriteFloat32 writes a tensor from float32 values, converting them to its
// dtype (F32, F16, BF16 or F64) with round-to-nearest-even.
func (w *Writer) WriteFloat32(name string, values []float32) error {
	t, err := w.slot(name, int64(len(values)), "values")
	if err != nil {
		return err
	}
	if err := w.putFloat32(t, 0, values); err != nil {
		return err
	}
	w.written[name] = true
	return nil
}

// AppendFloat32 writes the next len(values) elements of a tensor, converted
// as WriteFloat32 does, so that a tensor larger than one buffer (a 7B
// model's embedding table, say) can be produced and written in pieces, in
// order. The tensor counts as written once its last element has been.
func (w *Writer) AppendFloat32(name string, values []float32) error {
	if w.err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", w.path, w.err)
	}
	t, ok := w.layout[name]
	switch {
	case !ok:
		return fmt.Errorf("safetensors: writing %s: tensor %q was not declared to Create", w.path, name)
	case w.written[name]:
		return fmt.Errorf("safetensors: writing %s: tensor %q written twice", w.path, name)
	}
	at := w.filled[name]
	if n := t.NumElements(); at+int64(len(values)) > n {
		return fmt.Errorf("safetensors: writing %s: tensor %q (%s %s) takes %d values, got %d", w.path, name, t.DType, fmtShape(t.Shape), n, at+int64(len(values)))
	}
	if err := w.putFloat32(t, at, values); err != nil {
		return err
	}
	w.filled[name] = at + int64(len(values))
	if w.filled[name] == t.NumElements() {
		w.written[name] = true
	}
	return nil
}

// putFloat32 converts values to t's dtype and writes them as its elements
// from index at on.
func (w *Writer) putFloat32(t *TensorInfo, at int64, values []float32) error {
	if !t.DType.converts() {
		return fmt.Errorf("safetensors: writing %s: tensor %q is %s, not a float dtype WriteFloat32 converts to: %w", w.path, t.Name, t.DType, ErrDType)
	}
	size := t.DType.Size()
	off := w.dataStart + t.Begin + at*int64(size)
	if t.DType == F32 && half.HostLittleEndian && len(values) > 0 {
		if _, err := w.tmp.WriteAt(unsafe.Slice((*byte)(unsafe.Pointer(&values[0])), 4*len(values)), off); err != nil {
			return w.fail(err)
		}
		return nil
	}
	const chunk = 1 << 14
	if w.buf == nil {
		w.buf = make([]byte, chunk*8)
	}
	for len(values) > 0 {
		v := values[:min(chunk, len(values))]
		values = values[len(v):]
		b := w.buf[:len(v)*size]
		encodeFloat32(b, t.DType, v)
		if _, err := w.tmp.WriteAt(b, off); err != nil {
			return w.fail(err)
		}
		off += int64(len(b))
	}
	return nil
}

// encodeFloat32 converts src to little-endian dtype d in dst.
func encodeFloat32(dst []byte, d DType, src []float32) {
	switch d {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], half.F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], half.F32ToBF16(v))
		}
	case F64:
		for i, v := range src {
			binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(float64(v)))
		}
	}
}

// Commit checks that every declared tensor was written, flushes the file to
// disk and renames it into place.
func (w *Writer) Commit() error {
	if w.err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", w.path, w.err)
	}
	var missing []string
	for name := range w.layout {
		switch {
		case w.filled[name] > 0 && !w.written[name]:
			missing = append(missing, fmt.Sprintf("%q (%d of %d values)", name, w.filled[name], w.layout[name].NumElements()))
		case !w.written[name]:
			missing = append(missing, strconv.Quote(name))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		if len(missing) > 5 {
			missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
		}
		return fmt.Errorf("safetensors: writing %s: tensors never written: %s", w.path, strings.Join(missing, ", "))
	}
	if err := w.tmp.Chmod(0o644); err != nil {
		return w.fail(err)
	}
	if err := w.tmp.Sync(); err != nil {
		return w.fail(err)
	}
	name := w.tmp.Name()
	if err := w.tmp.Close(); err != nil {
		return w.fail(err)
	}
	if err := os.Rename(name, w.path); err != nil {
		os.Remove(name)
		w.err = errDone
		return fmt.Errorf("safetensors: %w", err)
	}
	w.err = errDone
	// Persist the rename itself; best effort, as not every filesystem can
	// sync a directory.
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort removes the partial file. It does nothing after Commit, so it can be
// deferred.
func (w *Writer) Abort() error {
	if w.err == nil {
		w.fail(errDone)
	}
	return nil
}

// fail closes and removes the temporary file after an I/O error, and makes
// every later call report err.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.err = err
	}
	return fmt.Errorf("safetensors: writing %s: %w", w.path, err)
}
