package gguf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/pages"
)

// File is an open GGUF file: its metadata, parsed and copied out, and its
// tensors, read straight from a read-only memory mapping so that opening a
// multi-gigabyte model costs only the header. A File is safe for
// concurrent use by readers; Close must not race with them.
type File struct {
	Path      string
	Version   uint32
	Alignment uint64
	KVs       []KV         // in file order
	Tensors   []TensorInfo // in file order

	buf       []byte // the whole file
	mapped    bool   // buf is a mapping to unmap on Close
	closed    bool
	dataStart uint64
	keys      map[string]int // key → index in KVs
	tensors   map[string]int // name → index in Tensors
}

// tryMmap is switched off by tests of the read-into-memory fallback.
var tryMmap = true

// Open maps the file at path and validates it completely: header,
// metadata, tensor infos and where every tensor's data lies. Where mapping
// fails it reads the file into memory instead. The file must not be
// truncated or rewritten in place while open; replacing it by rename, as
// Writer does, is safe. A missing file is bad input.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badinput.Wrap(fmt.Errorf("gguf: %w", err))
	}
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, formatErr(path, "file", "not a regular file")
	}
	size := st.Size()
	if size > math.MaxInt {
		return nil, formatErr(path, "file", "%d bytes is too large to address", size)
	}
	var buf []byte
	mapped := false
	if size > 0 && tryMmap {
		if b, err := mmap(fh, int(size)); err == nil {
			buf, mapped = b, true
		}
	}
	if !mapped {
		buf = make([]byte, size)
		if _, err := io.ReadFull(fh, buf); err != nil {
			return nil, fmt.Errorf("gguf: reading %s: %w", path, err)
		}
	}
	f, err := parse(path, buf)
	if err != nil {
		if mapped {
			munmap(buf)
		}
		return nil, err
	}
	f.mapped = mapped
	return f, nil
}

// Parse reads a GGUF file held in memory, validating it as Open does; name
// labels errors. Tensor data aliases data, which must not change while the
// File is used.
func Parse(name string, data []byte) (*File, error) {
	return parse(name, data)
}

// Close releases the mapping. Slices returned by Bytes are invalid after
// it; the metadata stays readable.
func (f *File) Close() error {
	buf, mapped := f.buf, f.mapped
	f.buf, f.mapped, f.closed = nil, false, true
	if mapped {
		if err := munmap(buf); err != nil {
			return fmt.Errorf("gguf: unmapping %s: %w", f.Path, err)
		}
	}
	return nil
}

// DataOffset is where the data section starts in the file.
func (f *File) DataOffset() uint64 { return f.dataStart }

// KV looks up a metadata key.
func (f *File) KV(key string) (KV, bool) {
	i, ok := f.keys[key]
	if !ok {
		return KV{}, false
	}
	return f.KVs[i], true
}

// typeErr is the error for a key present with a type the caller cannot use.
func (f *File) typeErr(kv KV, want string) error {
	return badinput.Errorf("gguf: %s: key %s is %s, want %s", f.Path, kv.Key, describe(kv), want)
}

// describe names a key's type for messages: "uint32", "array of string".
func describe(kv KV) string {
	if kv.Type == Array {
		return "array of " + kv.ElemType.String()
	}
	return kv.Type.String()
}

// String returns a string value; ok is false when the key is absent, and
// err (bad input) reports a key of another type.
func (f *File) String(key string) (v string, ok bool, err error) {
	kv, ok := f.KV(key)
	if !ok {
		return "", false, nil
	}
	s, isStr := kv.Value.(string)
	if kv.Type != String || !isStr {
		return "", true, f.typeErr(kv, "a string")
	}
	return s, true, nil
}

// Uint returns an integer value as uint64: any unsigned type, or a signed
// one holding a non-negative value.
func (f *File) Uint(key string) (uint64, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return 0, false, nil
	}
	if u, isU := asUint(kv.Value); isU {
		return u, true, nil
	}
	if i, isI := asInt(kv.Value); isI {
		if i < 0 {
			return 0, true, badinput.Errorf("gguf: %s: key %s is %d, want a non-negative integer", f.Path, key, i)
		}
		return uint64(i), true, nil
	}
	return 0, true, f.typeErr(kv, "an unsigned integer")
}

// Int returns an integer value of any integer type that fits int64.
func (f *File) Int(key string) (int64, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return 0, false, nil
	}
	if i, isI := asInt(kv.Value); isI {
		return i, true, nil
	}
	if u, isU := asUint(kv.Value); isU {
		if u > math.MaxInt64 {
			return 0, true, badinput.Errorf("gguf: %s: key %s is %d, too large for a signed 64-bit integer", f.Path, key, u)
		}
		return int64(u), true, nil
	}
	return 0, true, f.typeErr(kv, "an integer")
}

// Float returns a float32 or float64 value as float64; integers are
// accepted too.
func (f *File) Float(key string) (float64, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return 0, false, nil
	}
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), true, nil
	case float64:
		return v, true, nil
	}
	if i, isI := asInt(kv.Value); isI {
		return float64(i), true, nil
	}
	if u, isU := asUint(kv.Value); isU {
		return float64(u), true, nil
	}
	return 0, true, f.typeErr(kv, "a number")
}

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return false, false, nil
	}
	b, isBool := kv.Value.(bool)
	if !isBool {
		return false, true, f.typeErr(kv, "a bool")
	}
	return b, true, nil
}

// Strings returns an array of strings (a copy of the slice).
func (f *File) Strings(key string) ([]string, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return nil, false, nil
	}
	s, isStrs := kv.Value.([]string)
	if !isStrs {
		return nil, true, f.typeErr(kv, "an array of string")
	}
	return slices.Clone(s), true, nil
}

// Float32s returns an array of float32, or of float64 narrowed to float32.
func (f *File) Float32s(key string) ([]float32, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return nil, false, nil
	}
	switch v := kv.Value.(type) {
	case []float32:
		return slices.Clone(v), true, nil
	case []float64:
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(x)
		}
		return out, true, nil
	}
	return nil, true, f.typeErr(kv, "an array of float32")
}

// Int32s returns an array of int32; arrays of other integer types are
// converted when every value fits.
func (f *File) Int32s(key string) ([]int32, bool, error) {
	kv, ok := f.KV(key)
	if !ok {
		return nil, false, nil
	}
	if v, isI32 := kv.Value.([]int32); isI32 {
		return slices.Clone(v), true, nil
	}
	n, isInts := intsLen(kv.Value)
	if !isInts {
		return nil, true, f.typeErr(kv, "an array of int32")
	}
	out := make([]int32, n)
	for i := range out {
		x, elem, fits := int32At(kv.Value, i)
		if !fits {
			return nil, true, badinput.Errorf("gguf: %s: key %s: element %d is %v, outside int32", f.Path, key, i, elem)
		}
		out[i] = x
	}
	return out, true, nil
}

// Architecture is general.architecture, or "" when absent or not a string.
func (f *File) Architecture() string {
	s, _, _ := f.String("general.architecture")
	return s
}

// Tensor looks up a tensor's info.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	t := f.Tensors[i]
	t.Dims = slices.Clone(t.Dims)
	return t, true
}

func (f *File) lookup(name string) (*TensorInfo, error) {
	if f.closed {
		return nil, fmt.Errorf("gguf: %s: file is closed", f.Path)
	}
	i, ok := f.tensors[name]
	if !ok {
		return nil, badinput.Wrap(fmt.Errorf("gguf: %s: no tensor %q: %w", f.Path, name, ErrNotFound))
	}
	return &f.Tensors[i], nil
}

func (f *File) raw(t *TensorInfo) []byte {
	start := f.dataStart + t.Offset
	end := start + uint64(t.Size())
	return f.buf[start:end:end]
}

// Bytes is the tensor's data as stored, without copying: it aliases the
// file's mapping, must not be modified, and is valid until Close.
func (f *File) Bytes(name string) ([]byte, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.raw(t), nil
}

// Float32 returns the tensor's values dequantized to float32, in row-major
// order.
func (f *File) Float32(name string) ([]float32, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	dst := make([]float32, t.NumElements())
	return dst, Dequantize(dst, t.Type, f.raw(t))
}

// Release gives a tensor's mapped pages back to the kernel after a
// streaming reader is done with them (see internal/pages); its data stays
// readable.
func (f *File) Release(name string) {
	if t, err := f.lookup(name); err == nil && f.mapped {
		pages.Release(f.raw(t))
	}
}

// ReadInto is Float32 into a slice the caller owns, which must hold exactly
// the tensor's values; it lets a loop reload weights without allocating.
func (f *File) ReadInto(name string, dst []float32) error {
	t, err := f.lookup(name)
	if err != nil {
		return err
	}
	if n := t.NumElements(); int64(len(dst)) != n {
		return fmt.Errorf("gguf: %s: tensor %s has %d values (shape %v), the destination %d", f.Path, name, n, t.Shape(), len(dst))
	}
	return Dequantize(dst, t.Type, f.raw(t))
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	}
	return 0, false
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// int32At converts element i of an integer array value; fits is false
// when it is outside int32 or v is not an integer array.
func int32At(v any, i int) (x int32, elem any, fits bool) {
	switch a := v.(type) {
	case []uint8:
		return int32(a[i]), a[i], true
	case []int8:
		return int32(a[i]), a[i], true
	case []uint16:
		return int32(a[i]), a[i], true
	case []int16:
		return int32(a[i]), a[i], true
	case []uint32:
		return int32(a[i]), a[i], a[i] <= math.MaxInt32
	case []uint64:
		return int32(a[i]), a[i], a[i] <= math.MaxInt32
	case []int64:
		return int32(a[i]), a[i], a[i] >= math.MinInt32 && a[i] <= math.MaxInt32
	}
	return 0, nil, false
}

// intsLen is the length of an integer array value other than []int32.
func intsLen(v any) (int, bool) {
	switch x := v.(type) {
	case []uint8:
		return len(x), true
	case []int8:
		return len(x), true
	case []uint16:
		return len(x), true
	case []int16:
		return len(x), true
	case []uint32:
		return len(x), true
	case []uint64:
		return len(x), true
	case []int64:
		return len(x), true
	}
	return 0, false
}
