package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/migu-ml/migu/internal/atomicfile"
)

// MaxNameLen is the longest tensor name llama.cpp loads (GGML_MAX_NAME
// less its terminating NUL); Writer refuses longer ones.
const MaxNameLen = 63

// Writer writes a GGUF v3 file: metadata in the order added, then tensor
// infos and data in the order added, each tensor's data aligned to
// general.alignment (32 unless set). Tensor data is asked for one tensor
// at a time while writing, so memory stays bounded by the largest tensor.
// The file appears at its path only when complete. A Writer is not safe
// for concurrent use.
type Writer struct {
	kvs     []KV
	keys    map[string]bool
	tensors []pendingTensor
	names   map[string]bool
}

type pendingTensor struct {
	info TensorInfo
	data func() ([]byte, error)
}

// NewWriter starts an empty file.
func NewWriter() *Writer {
	return &Writer{keys: map[string]bool{}, names: map[string]bool{}}
}

// Add adds a metadata key whose type follows from the Go type of value:
// string, bool, uint8 … int64, float32, float64, a slice of one of them,
// or []any holding such slices for an array of arrays. Other types (int
// among them: say which width you mean) are an error.
func (w *Writer) Add(key string, value any) error {
	kv := KV{Key: key, Value: value}
	if t, ok := scalarType(value); ok {
		kv.Type = t
	} else if et, ok := sliceElemType(value); ok {
		kv.Type, kv.ElemType = Array, et
	} else {
		return fmt.Errorf("gguf: key %s: cannot store a %T (use string, bool, a sized integer, float32, float64, or a slice of one)", key, value)
	}
	return w.AddKV(kv)
}

// AddKV adds a metadata key with an explicit type, such as a uint32 count.
// A scalar's Value may be any Go integer that fits an integer Type, and
// float32 or float64 for either float Type; an array's Value must be the
// slice of its ElemType ([]any for arrays of arrays). Duplicate keys are an
// error, and general.alignment must be a uint32 power of two. Slices are
// kept, not copied, until Write.
func (w *Writer) AddKV(kv KV) error {
	if w.keys[kv.Key] {
		return fmt.Errorf("gguf: key %s added twice", kv.Key)
	}
	if !kv.Type.valid() {
		return fmt.Errorf("gguf: key %s: unknown value type %d", kv.Key, uint32(kv.Type))
	}
	if kv.Type == Array {
		if err := checkArray(kv.ElemType, kv.Value, 1); err != nil {
			return fmt.Errorf("gguf: key %s: %w", kv.Key, err)
		}
	} else {
		v, err := convertScalar(kv.Type, kv.Value)
		if err != nil {
			return fmt.Errorf("gguf: key %s: %w", kv.Key, err)
		}
		kv.Value, kv.ElemType = v, 0
	}
	if kv.Key == AlignmentKey {
		a, ok := kv.Value.(uint32)
		if kv.Type != Uint32 || !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: key %s must be a uint32 power of two, got %s %v", kv.Key, describe(kv), kv.Value)
		}
	}
	w.keys[kv.Key] = true
	w.kvs = append(w.kvs, kv)
	return nil
}

// AddTensor declares a tensor of type t (one this package reads) and
// row-major shape (at most 4 dims, the last a whole number of blocks).
// data is called during Write and must return exactly the tensor's bytes
// (Quantize makes them from float32 values).
func (w *Writer) AddTensor(name string, t Type, shape []int64, data func() ([]byte, error)) error {
	switch {
	case name == "":
		return fmt.Errorf("gguf: tensor with an empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("gguf: tensor %s: name of %d bytes is longer than llama.cpp's %d", name, len(name), MaxNameLen)
	case w.names[name]:
		return fmt.Errorf("gguf: tensor %s added twice", name)
	case len(shape) > MaxDims:
		return fmt.Errorf("gguf: tensor %s: shape %v has more than %d dims", name, shape, MaxDims)
	case data == nil:
		return fmt.Errorf("gguf: tensor %s: no data function", name)
	}
	l, ok := layoutOf(t)
	if !ok {
		return fmt.Errorf("gguf: tensor %s: cannot write type %s (supported: %s)", name, t, supportedList)
	}
	info := TensorInfo{Name: name, Type: t, Dims: make([]uint64, len(shape))}
	elems := uint64(1)
	for i, d := range shape {
		if d <= 0 {
			return fmt.Errorf("gguf: tensor %s: shape %v has a dim that is not positive", name, shape)
		}
		hi, lo := bits.Mul64(elems, uint64(d))
		if hi != 0 || lo > math.MaxInt64/4 {
			return fmt.Errorf("gguf: tensor %s: shape %v is too large", name, shape)
		}
		elems = lo
		info.Dims[len(shape)-1-i] = uint64(d)
	}
	if len(shape) > 0 && shape[len(shape)-1]%int64(l.elems) != 0 {
		return fmt.Errorf("gguf: tensor %s: row length %d is not a multiple of the %d values of a %s block", name, shape[len(shape)-1], l.elems, t)
	}
	if elems%uint64(l.elems) != 0 {
		return fmt.Errorf("gguf: tensor %s: %d values are not a whole number of %s blocks", name, elems, t)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, pendingTensor{info, data})
	return nil
}

// Write writes the file to path atomically: a temporary file beside it is
// renamed into place once complete, and removed on any error.
func (w *Writer) Write(path string) error {
	align := w.alignment()
	infos := w.Tensors()
	hdr := encodeHeader(w.kvs, infos)

	f, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	fail := func(err error) error { return fmt.Errorf("gguf: writing %s: %w", path, err) }
	if _, err := bw.Write(hdr); err != nil {
		return fail(err)
	}
	if err := pad(bw, uint64(len(hdr)), align); err != nil {
		return fail(err)
	}
	for _, t := range w.tensors {
		data, err := t.data()
		if err != nil {
			return fmt.Errorf("gguf: writing %s: tensor %s: %w", path, t.info.Name, err)
		}
		size := uint64(t.info.Size())
		if uint64(len(data)) != size {
			return fmt.Errorf("gguf: writing %s: tensor %s (%s, shape %v) takes %d bytes, its data function gave %d", path, t.info.Name, t.info.Type, t.info.Shape(), size, len(data))
		}
		if _, err := bw.Write(data); err != nil {
			return fail(err)
		}
		if err := pad(bw, size, align); err != nil {
			return fail(err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	return f.Commit()
}

// pad writes the zeros that take n bytes to a multiple of align.
func pad(bw *bufio.Writer, n, align uint64) error {
	for range alignUp(n, align) - n {
		if err := bw.WriteByte(0); err != nil {
			return err
		}
	}
	return nil
}

// encodeHeader lays out everything before the data section, unpadded.
func encodeHeader(kvs []KV, infos []TensorInfo) []byte {
	b := []byte(Magic)
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(infos)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(kvs)))
	for _, kv := range kvs {
		b = appendString(b, kv.Key)
		b = binary.LittleEndian.AppendUint32(b, uint32(kv.Type))
		if kv.Type == Array {
			b = appendArray(b, kv.ElemType, kv.Value)
		} else {
			b = appendScalar(b, kv.Value)
		}
	}
	for _, t := range infos {
		b = appendString(b, t.Name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Dims)))
		for _, d := range t.Dims {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(t.Type))
		b = binary.LittleEndian.AppendUint64(b, t.Offset)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// appendScalar encodes a checked non-array value.
func appendScalar(b []byte, v any) []byte {
	le := binary.LittleEndian
	switch x := v.(type) {
	case string:
		return appendString(b, x)
	case bool:
		if x {
			return append(b, 1)
		}
		return append(b, 0)
	case uint8:
		return append(b, x)
	case int8:
		return append(b, uint8(x))
	case uint16:
		return le.AppendUint16(b, x)
	case int16:
		return le.AppendUint16(b, uint16(x))
	case uint32:
		return le.AppendUint32(b, x)
	case int32:
		return le.AppendUint32(b, uint32(x))
	case float32:
		return le.AppendUint32(b, math.Float32bits(x))
	case uint64:
		return le.AppendUint64(b, x)
	case int64:
		return le.AppendUint64(b, uint64(x))
	case float64:
		return le.AppendUint64(b, math.Float64bits(x))
	}
	panic(fmt.Sprintf("gguf: unchecked value %T", v))
}

// appendArray encodes a checked array: element type, length, elements.
func appendArray(b []byte, et ValueType, v any) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(et))
	b = binary.LittleEndian.AppendUint64(b, uint64(sliceLen(v)))
	switch x := v.(type) {
	case []string:
		for _, s := range x {
			b = appendString(b, s)
		}
	case []any:
		for _, e := range x {
			inner, _ := sliceElemType(e)
			b = appendArray(b, inner, e)
		}
	case []uint8:
		b = append(b, x...)
	default:
		for i := range sliceLen(v) {
			b = appendScalar(b, elemAt(v, i))
		}
	}
	return b
}

// scalarType is the value type of a Go scalar.
func scalarType(v any) (ValueType, bool) {
	switch v.(type) {
	case uint8:
		return Uint8, true
	case int8:
		return Int8, true
	case uint16:
		return Uint16, true
	case int16:
		return Int16, true
	case uint32:
		return Uint32, true
	case int32:
		return Int32, true
	case float32:
		return Float32, true
	case bool:
		return Bool, true
	case string:
		return String, true
	case uint64:
		return Uint64, true
	case int64:
		return Int64, true
	case float64:
		return Float64, true
	}
	return 0, false
}

// sliceElemType is the element type of a Go slice that holds an array.
func sliceElemType(v any) (ValueType, bool) {
	switch v.(type) {
	case []uint8:
		return Uint8, true
	case []int8:
		return Int8, true
	case []uint16:
		return Uint16, true
	case []int16:
		return Int16, true
	case []uint32:
		return Uint32, true
	case []int32:
		return Int32, true
	case []float32:
		return Float32, true
	case []bool:
		return Bool, true
	case []string:
		return String, true
	case []any:
		return Array, true
	case []uint64:
		return Uint64, true
	case []int64:
		return Int64, true
	case []float64:
		return Float64, true
	}
	return 0, false
}

func sliceLen(v any) int {
	switch x := v.(type) {
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []bool:
		return len(x)
	case []string:
		return len(x)
	case []any:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	}
	return 0
}

func elemAt(v any, i int) any {
	switch x := v.(type) {
	case []int8:
		return x[i]
	case []uint16:
		return x[i]
	case []int16:
		return x[i]
	case []uint32:
		return x[i]
	case []int32:
		return x[i]
	case []float32:
		return x[i]
	case []bool:
		return x[i]
	case []uint64:
		return x[i]
	case []int64:
		return x[i]
	case []float64:
		return x[i]
	}
	return nil
}

// checkArray checks that v is the slice of element type et, recursively
// for arrays of arrays.
func checkArray(et ValueType, v any, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("arrays nested more than %d deep", maxNesting)
	}
	got, ok := sliceElemType(v)
	if !ok {
		return fmt.Errorf("array value is a %T, not a slice of a GGUF type", v)
	}
	if got != et {
		return fmt.Errorf("ElemType is %s but the value is a %T", et, v)
	}
	if inner, ok := v.([]any); ok {
		for i, e := range inner {
			t, ok := sliceElemType(e)
			if !ok {
				return fmt.Errorf("element %d of an array of arrays is a %T, not a slice", i, e)
			}
			if err := checkArray(t, e, depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// convertScalar checks a scalar value against its declared type,
// converting Go integers that fit and floats of the other width.
func convertScalar(t ValueType, v any) (any, error) {
	mismatch := fmt.Errorf("type %s cannot hold a %T", t, v)
	switch t {
	case String:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, mismatch
	case Bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, mismatch
	case Float32, Float64:
		var f float64
		switch x := v.(type) {
		case float32:
			if t == Float32 {
				return x, nil
			}
			f = float64(x)
		case float64:
			f = x
		default:
			return nil, mismatch
		}
		if t == Float32 {
			return float32(f), nil
		}
		return f, nil
	}
	neg, mag, ok := goInt(v)
	if !ok {
		return nil, mismatch
	}
	lo, hi := intRange(t)
	if neg && mag > lo || !neg && mag > hi {
		sign := ""
		if neg {
			sign = "-"
		}
		return nil, fmt.Errorf("%s%d does not fit %s", sign, mag, t)
	}
	u := mag
	if neg {
		u = -mag
	}
	switch t {
	case Uint8:
		return uint8(u), nil
	case Int8:
		return int8(u), nil
	case Uint16:
		return uint16(u), nil
	case Int16:
		return int16(u), nil
	case Uint32:
		return uint32(u), nil
	case Int32:
		return int32(u), nil
	case Uint64:
		return u, nil
	default: // Int64
		return int64(u), nil
	}
}

// goInt splits any Go integer into sign and magnitude.
func goInt(v any) (neg bool, mag uint64, ok bool) {
	var i int64
	switch x := v.(type) {
	case uint:
		return false, uint64(x), true
	case uint8:
		return false, uint64(x), true
	case uint16:
		return false, uint64(x), true
	case uint32:
		return false, uint64(x), true
	case uint64:
		return false, x, true
	case uintptr:
		return false, uint64(x), true
	case int:
		i = int64(x)
	case int8:
		i = int64(x)
	case int16:
		i = int64(x)
	case int32:
		i = int64(x)
	case int64:
		i = x
	default:
		return false, 0, false
	}
	if i < 0 {
		return true, uint64(-(i + 1)) + 1, true
	}
	return false, uint64(i), true
}

// intRange is the largest magnitude an integer type holds below zero and
// above it.
func intRange(t ValueType) (neg, pos uint64) {
	switch t {
	case Uint8:
		return 0, math.MaxUint8
	case Int8:
		return 1 << 7, math.MaxInt8
	case Uint16:
		return 0, math.MaxUint16
	case Int16:
		return 1 << 15, math.MaxInt16
	case Uint32:
		return 0, math.MaxUint32
	case Int32:
		return 1 << 31, math.MaxInt32
	case Uint64:
		return 0, math.MaxUint64
	default: // Int64
		return 1 << 63, math.MaxInt64
	}
}

// alignment is general.alignment if added, else the default.
func (w *Writer) alignment() uint64 {
	for _, kv := range w.kvs {
		if kv.Key == AlignmentKey {
			return uint64(kv.Value.(uint32))
		}
	}
	return DefaultAlignment
}

// Tensors lists the tensors declared so far, with the offsets Write gives
// them.
func (w *Writer) Tensors() []TensorInfo {
	align := w.alignment()
	out := make([]TensorInfo, len(w.tensors))
	var off uint64
	for i, t := range w.tensors {
		out[i] = t.info
		out[i].Dims = slices.Clone(t.info.Dims)
		out[i].Offset = off
		off += alignUp(uint64(t.info.Size()), align)
	}
	return out
}
