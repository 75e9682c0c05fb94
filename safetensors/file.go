package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"slices"
	"unsafe"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/half"
)

// File is an open safetensors file. Its tensors are read straight from a
// read-only memory mapping, so opening a multi-gigabyte checkpoint costs
// only the header. A File is safe for concurrent use by readers; Close must
// not race with them.
type File struct {
	path   string
	buf    []byte // the whole file
	mapped bool   // buf is a mapping to unmap on Close
	h      *header
}

// tryMmap is switched off by tests of the read-into-memory fallback.
var tryMmap = true

// Open maps the file at path and validates its header; when mapping fails
// (a filesystem without mmap) it reads the file into memory instead. The
// file must not be truncated or rewritten in place while open; replacing it
// by rename, as Write does, is safe. A missing file is bad input.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badinput.Wrap(fmt.Errorf("safetensors: %w", err))
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	return openFile(f, path)
}

// openFile loads f, labelling errors with path.
func openFile(f *os.File, path string) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, formatErr(path, "", "not a regular file")
	}
	size := st.Size()
	if size > math.MaxInt {
		return nil, formatErr(path, "", "%d bytes is too large to address", size)
	}
	file := &File{path: path}
	if size > 0 && tryMmap {
		if b, err := mmap(f, int(size)); err == nil {
			file.buf, file.mapped = b, true
		}
	}
	if !file.mapped {
		file.buf = make([]byte, size)
		if _, err := io.ReadFull(f, file.buf); err != nil {
			return nil, fmt.Errorf("safetensors: reading %s: %w", path, err)
		}
	}
	h, err := parseHeader(path, file.buf)
	if err != nil {
		file.Close()
		return nil, err
	}
	file.h = h
	return file, nil
}

// Close releases the mapping. Slices returned by Bytes are invalid after it.
func (f *File) Close() error {
	buf, mapped := f.buf, f.mapped
	f.buf, f.mapped, f.h = nil, false, nil
	if mapped {
		if err := munmap(buf); err != nil {
			return fmt.Errorf("safetensors: unmapping %s: %w", f.path, err)
		}
	}
	return nil
}

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Names lists the tensors in sorted order.
func (f *File) Names() []string {
	if f.h == nil {
		return nil
	}
	return slices.Clone(f.h.names)
}

// Metadata is the header's __metadata__ (nil when absent); the map is a copy.
func (f *File) Metadata() map[string]string {
	if f.h == nil {
		return nil
	}
	return maps.Clone(f.h.meta)
}

// Info describes a tensor; the error matches ErrNotFound for a name the file
// lacks.
func (f *File) Info(name string) (TensorInfo, error) {
	t, err := f.lookup(name)
	if err != nil {
		return TensorInfo{}, err
	}
	info := *t
	info.Shape = slices.Clone(t.Shape)
	return info, nil
}

func (f *File) lookup(name string) (*TensorInfo, error) {
	if f.h == nil {
		return nil, fmt.Errorf("safetensors: %s: file is closed", f.path)
	}
	t, ok := f.h.tensors[name]
	if !ok {
		return nil, notFound(f.path, name)
	}
	return t, nil
}

// Bytes is the tensor's raw little-endian data, without copying: it aliases
// the file's mapping, must not be modified, and is valid until Close.
func (f *File) Bytes(name string) ([]byte, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.raw(t), nil
}

func (f *File) raw(t *TensorInfo) []byte {
	return f.buf[f.h.dataStart+t.Begin : f.h.dataStart+t.End : f.h.dataStart+t.End]
}

// Float32 returns the tensor's values widened or narrowed to float32, from
// F32, F16, BF16 or F64 data.
func (f *File) Float32(name string) ([]float32, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if !t.DType.converts() {
		return nil, unconvertible(f.path, t)
	}
	dst := make([]float32, t.NumElements())
	decodeFloat32(dst, t.DType, f.raw(t))
	return dst, nil
}

// ReadInto is Float32 into a slice the caller owns, which must have exactly
// as many elements as the tensor; it lets a training loop reload weights
// without allocating.
func (f *File) ReadInto(name string, dst []float32) error {
	t, err := f.lookup(name)
	if err != nil {
		return err
	}
	if !t.DType.converts() {
		return unconvertible(f.path, t)
	}
	if n := t.NumElements(); int64(len(dst)) != n {
		return fmt.Errorf("safetensors: %s: tensor %q has %d elements (shape %s), destination has %d", f.path, t.Name, n, fmtShape(t.Shape), len(dst))
	}
	decodeFloat32(dst, t.DType, f.raw(t))
	return nil
}

// ErrDType is matched by the error for a tensor whose dtype Float32 cannot
// convert.
var ErrDType = errors.New("dtype does not convert to float32")

func unconvertible(path string, t *TensorInfo) error {
	return fmt.Errorf("safetensors: %s: tensor %q is %s, want F32, F16, BF16 or F64: %w", path, t.Name, t.DType, ErrDType)
}

// decodeFloat32 converts little-endian src of dtype d into dst, which has
// exactly len(src)/d.Size() elements.
func decodeFloat32(dst []float32, d DType, src []byte) {
	switch d {
	case F32:
		if half.HostLittleEndian && len(dst) > 0 {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
			return
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		// Four values per 8-byte load; a BF16 is the top half of a float32.
		src = src[:2*len(dst)]
		i := 0
		for ; i+4 <= len(dst); i += 4 {
			v := binary.LittleEndian.Uint64(src[2*i:])
			q := dst[i : i+4 : i+4]
			q[0] = math.Float32frombits(uint32(v) << 16)
			q[1] = math.Float32frombits(uint32(v>>16) << 16)
			q[2] = math.Float32frombits(uint32(v>>32) << 16)
			q[3] = math.Float32frombits(uint32(v>>48) << 16)
		}
		for ; i < len(dst); i++ {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case F16:
		src = src[:2*len(dst)]
		table := half.F16Table()
		for i := range dst {
			dst[i] = table[uint16(src[2*i])|uint16(src[2*i+1])<<8]
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	}
}
