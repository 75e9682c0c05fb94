package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strconv"
)

const (
	// Magic opens every GGUF file.
	Magic = "GGUF"
	// Version is the version this package writes; it reads 2 and 3, which
	// share one layout.
	Version = 3
	// DefaultAlignment aligns tensor data when general.alignment is absent.
	DefaultAlignment = 32
	// MaxDims is the most dims a tensor may have (ggml's GGML_MAX_DIMS).
	MaxDims = 4
	// AlignmentKey sets the alignment of tensor data (a uint32 power of two).
	AlignmentKey = "general.alignment"
	// maxNesting bounds arrays of arrays, so a hostile file cannot recurse
	// deeply.
	maxNesting = 16
)

// Fewest bytes a metadata entry (key length, type, a one-byte value) and a
// tensor info (name length, dim count, type, offset) can take: counts are
// checked against them before anything is allocated.
const (
	minKVSize     = 8 + 4 + 1
	minTensorSize = 8 + 4 + 4 + 8
)

// decoder reads the little-endian fields of a file held in buf.
type decoder struct {
	path string
	buf  []byte
	off  int
}

func (d *decoder) remaining() int { return len(d.buf) - d.off }

// truncated is the error for n bytes of what (in field) that the file does
// not have.
func (d *decoder) truncated(field, what string, n uint64) error {
	return formatErr(d.path, field, "%s needs %d bytes at offset %d, past the end of the %d-byte file (truncated?)", what, n, d.off, len(d.buf))
}

func (d *decoder) u32(field, what string) (uint32, error) {
	if d.remaining() < 4 {
		return 0, d.truncated(field, what, 4)
	}
	v := binary.LittleEndian.Uint32(d.buf[d.off:])
	d.off += 4
	return v, nil
}

func (d *decoder) u64(field, what string) (uint64, error) {
	if d.remaining() < 8 {
		return 0, d.truncated(field, what, 8)
	}
	v := binary.LittleEndian.Uint64(d.buf[d.off:])
	d.off += 8
	return v, nil
}

// str reads a length-prefixed string, copied out of buf so that it outlives
// the mapping.
func (d *decoder) str(field, what string) (string, error) {
	n, err := d.u64(field, what+" length")
	if err != nil {
		return "", err
	}
	if n > uint64(d.remaining()) {
		return "", formatErr(d.path, field, "%s length %d at offset %d runs past the end of the %d-byte file", what, n, d.off-8, len(d.buf))
	}
	s := string(d.buf[d.off : d.off+int(n)])
	d.off += int(n)
	return s, nil
}

// parse validates a whole file held in buf; path only labels errors.
func parse(path string, buf []byte) (*File, error) {
	d := &decoder{path: path, buf: buf}
	if len(buf) < 4 {
		return nil, formatErr(path, "header", "file is %d bytes, too short for a GGUF header (empty or truncated file?)", len(buf))
	}
	if string(buf[:4]) != Magic {
		return nil, formatErr(path, "header", "magic is %q, want %q (not a GGUF file)", buf[:4], Magic)
	}
	d.off = 4
	version, err := d.u32("header", "version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, formatErr(path, "header", "GGUF version 1 is not supported (migu reads versions 2 and 3; convert the model again with a current llama.cpp)")
	case version&0xffff == 0 && bits.ReverseBytes32(version) <= 3:
		return nil, formatErr(path, "header", "version %#x: this is a big-endian GGUF file, which migu does not read", version)
	default:
		return nil, formatErr(path, "header", "unknown GGUF version %d (migu reads versions 2 and 3)", version)
	}
	nTensors, err := d.u64("header", "tensor count")
	if err != nil {
		return nil, err
	}
	nKVs, err := d.u64("header", "metadata key count")
	if err != nil {
		return nil, err
	}
	rest := uint64(d.remaining())
	if nKVs > rest/minKVSize {
		return nil, formatErr(path, "header", "metadata key count %d is more than the remaining %d bytes can hold (corrupt file?)", nKVs, rest)
	}
	if nTensors > (rest-nKVs*minKVSize)/minTensorSize {
		return nil, formatErr(path, "header", "tensor count %d is more than the remaining %d bytes can hold besides %d keys (corrupt file?)", nTensors, rest, nKVs)
	}

	f := &File{Path: path, Version: version, Alignment: DefaultAlignment, keys: map[string]int{}, tensors: map[string]int{}}
	for i := range nKVs {
		kv, err := d.kv(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.keys[kv.Key]; dup {
			return nil, formatErr(path, "key "+kv.Key, "appears twice in the metadata")
		}
		f.keys[kv.Key] = len(f.KVs)
		f.KVs = append(f.KVs, kv)
	}
	for i := range nTensors {
		t, err := d.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if j, dup := f.tensors[t.Name]; dup {
			return nil, formatErr(path, "tensor "+t.Name, "name appears twice (tensors %d and %d)", j, i)
		}
		f.tensors[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	if i, ok := f.keys[AlignmentKey]; ok {
		kv := f.KVs[i]
		if kv.Type != Uint32 {
			return nil, formatErr(path, "key "+AlignmentKey, "is %s, want uint32", kv.Type)
		}
		a := kv.Value.(uint32)
		if a == 0 || a&(a-1) != 0 {
			return nil, formatErr(path, "key "+AlignmentKey, "%d is not a power of two", a)
		}
		f.Alignment = uint64(a)
	}
	f.dataStart = alignUp(uint64(d.off), f.Alignment)
	if err := f.checkData(uint64(len(buf))); err != nil {
		return nil, err
	}
	f.buf = buf
	return f, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// kv reads the i-th metadata entry.
func (d *decoder) kv(i uint64) (KV, error) {
	field := "metadata key " + strconv.FormatUint(i, 10)
	key, err := d.str(field, "key")
	if err != nil {
		return KV{}, err
	}
	field = "key " + key
	raw, err := d.u32(field, "value type")
	if err != nil {
		return KV{}, err
	}
	vt := ValueType(raw)
	if !vt.valid() {
		return KV{}, formatErr(d.path, field, "unknown value type %d", raw)
	}
	kv := KV{Key: key, Type: vt}
	if vt == Array {
		kv.ElemType, kv.Value, err = d.array(field, 1)
	} else {
		kv.Value, err = d.value(field, vt)
	}
	return kv, err
}

// value reads one value of a type other than Array.
func (d *decoder) value(field string, vt ValueType) (any, error) {
	if vt == String {
		return d.str(field, "string")
	}
	n := vt.scalarSize()
	if d.remaining() < n {
		return nil, d.truncated(field, vt.String()+" value", uint64(n))
	}
	b := d.buf[d.off : d.off+n]
	d.off += n
	switch vt {
	case Uint8:
		return b[0], nil
	case Int8:
		return int8(b[0]), nil
	case Bool:
		if b[0] > 1 {
			return nil, formatErr(d.path, field, "bool value %d is neither 0 nor 1", b[0])
		}
		return b[0] == 1, nil
	case Uint16:
		return binary.LittleEndian.Uint16(b), nil
	case Int16:
		return int16(binary.LittleEndian.Uint16(b)), nil
	case Uint32:
		return binary.LittleEndian.Uint32(b), nil
	case Int32:
		return int32(binary.LittleEndian.Uint32(b)), nil
	case Float32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
	case Uint64:
		return binary.LittleEndian.Uint64(b), nil
	case Int64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // Float64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

// array reads an array's element type, count and elements; depth counts
// the arrays around it.
func (d *decoder) array(field string, depth int) (ValueType, any, error) {
	if depth > maxNesting {
		return 0, nil, formatErr(d.path, field, "arrays nested more than %d deep", maxNesting)
	}
	raw, err := d.u32(field, "array element type")
	if err != nil {
		return 0, nil, err
	}
	et := ValueType(raw)
	if !et.valid() {
		return 0, nil, formatErr(d.path, field, "unknown array element type %d", raw)
	}
	n, err := d.u64(field, "array length")
	if err != nil {
		return 0, nil, err
	}
	if n > uint64(d.remaining()/et.minSize()) {
		return 0, nil, formatErr(d.path, field, "array of %d %s values at offset %d is longer than the remaining %d bytes can hold", n, et, d.off-8, d.remaining())
	}
	count := int(n)
	if size := et.scalarSize(); size > 0 {
		b := d.buf[d.off : d.off+count*size]
		d.off += count * size
		v, bad := decodeScalars(et, b, count)
		if bad >= 0 {
			return 0, nil, formatErr(d.path, field, "element %d: bool value %d is neither 0 nor 1", bad, b[bad])
		}
		return et, v, nil
	}
	// Strings and arrays are appended as they are read, so memory follows
	// the bytes actually present rather than the count.
	capHint := min(count, 1<<12)
	if et == String {
		out := make([]string, 0, capHint)
		for i := range count {
			s, err := d.str(field, "element "+strconv.Itoa(i))
			if err != nil {
				return 0, nil, err
			}
			out = append(out, s)
		}
		return et, out, nil
	}
	out := make([]any, 0, capHint)
	for i := range count {
		_, v, err := d.array(field+"["+strconv.Itoa(i)+"]", depth+1)
		if err != nil {
			return 0, nil, err
		}
		out = append(out, v)
	}
	return et, out, nil
}

// decodeScalars converts count fixed-size values; bad is the index of a
// bool that is neither 0 nor 1, or -1.
func decodeScalars(et ValueType, b []byte, count int) (v any, bad int) {
	switch et {
	case Uint8:
		return append([]uint8{}, b...), -1
	case Int8:
		out := make([]int8, count)
		for i := range out {
			out[i] = int8(b[i])
		}
		return out, -1
	case Bool:
		out := make([]bool, count)
		for i := range out {
			if b[i] > 1 {
				return nil, i
			}
			out[i] = b[i] == 1
		}
		return out, -1
	case Uint16:
		out := make([]uint16, count)
		for i := range out {
			out[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
		return out, -1
	case Int16:
		out := make([]int16, count)
		for i := range out {
			out[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out, -1
	case Uint32:
		out := make([]uint32, count)
		for i := range out {
			out[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
		return out, -1
	case Int32:
		out := make([]int32, count)
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, -1
	case Float32:
		out := make([]float32, count)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, -1
	case Uint64:
		out := make([]uint64, count)
		for i := range out {
			out[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		return out, -1
	case Int64:
		out := make([]int64, count)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, -1
	default: // Float64
		out := make([]float64, count)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, -1
	}
}

// tensorInfo reads and checks the i-th tensor info: its dims, type and
// size; where its data lies is checked once the alignment is known.
func (d *decoder) tensorInfo(i uint64) (TensorInfo, error) {
	field := "tensor info " + strconv.FormatUint(i, 10)
	name, err := d.str(field, "name")
	if err != nil {
		return TensorInfo{}, err
	}
	field = "tensor " + name
	nDims, err := d.u32(field, "dim count")
	if err != nil {
		return TensorInfo{}, err
	}
	if nDims > MaxDims {
		return TensorInfo{}, formatErr(d.path, field, "has %d dims; GGUF allows at most %d", nDims, MaxDims)
	}
	t := TensorInfo{Name: name, Dims: make([]uint64, nDims)}
	elems := uint64(1)
	for j := range t.Dims {
		if t.Dims[j], err = d.u64(field, fmt.Sprintf("dim %d", j)); err != nil {
			return TensorInfo{}, err
		}
		if t.Dims[j] == 0 {
			return TensorInfo{}, formatErr(d.path, field, "dim %d is 0", j)
		}
		hi, lo := bits.Mul64(elems, t.Dims[j])
		if hi != 0 || lo > math.MaxInt64 {
			return TensorInfo{}, formatErr(d.path, field, "dims %v overflow 64 bits", t.Dims[:j+1])
		}
		elems = lo
	}
	raw, err := d.u32(field, "type")
	if err != nil {
		return TensorInfo{}, err
	}
	t.Type = Type(raw)
	l, ok := layoutOf(t.Type)
	if !ok {
		return TensorInfo{}, formatErr(d.path, field, "has ggml type %s, which migu cannot read (supported: %s)", typeLabel(t.Type), supportedList)
	}
	if nDims > 0 && t.Dims[0]%uint64(l.elems) != 0 {
		return TensorInfo{}, formatErr(d.path, field, "row length (dim 0) %d is not a multiple of the %d values of a %s block", t.Dims[0], l.elems, t.Type)
	}
	if elems%uint64(l.elems) != 0 {
		return TensorInfo{}, formatErr(d.path, field, "%d values are not a multiple of the %d values of a %s block", elems, l.elems, t.Type)
	}
	hi, size := bits.Mul64(elems/uint64(l.elems), uint64(l.bytes))
	if hi != 0 || size > math.MaxInt64 {
		return TensorInfo{}, formatErr(d.path, field, "dims %v of %s take more than 2^63 bytes", t.Dims, t.Type)
	}
	if t.Offset, err = d.u64(field, "data offset"); err != nil {
		return TensorInfo{}, err
	}
	return t, nil
}

// typeLabel names a type for messages: "IQ2_XXS (16)", or the bare number
// when ggml does not define it.
func typeLabel(t Type) string {
	if _, ok := typeNames[t]; ok {
		return fmt.Sprintf("%s (%d)", t, uint32(t))
	}
	return strconv.FormatUint(uint64(t), 10)
}

// checkData checks that every tensor's data is aligned, inside a file of
// fileSize bytes, and apart from every other tensor's.
func (f *File) checkData(fileSize uint64) error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.dataStart > fileSize {
		return formatErr(f.Path, "tensor "+f.Tensors[0].Name, "the data section would start at offset %d, past the end of the %d-byte file (truncated?)", f.dataStart, fileSize)
	}
	dataLen := fileSize - f.dataStart
	order := make([]int, len(f.Tensors))
	for i, t := range f.Tensors {
		order[i] = i
		field := "tensor " + t.Name
		if t.Offset%f.Alignment != 0 {
			return formatErr(f.Path, field, "data offset %d is not a multiple of the alignment %d", t.Offset, f.Alignment)
		}
		size := uint64(t.Size())
		if t.Offset > dataLen || size > dataLen-t.Offset {
			return formatErr(f.Path, field, "%d bytes of data at offset %d run past the end of the %d-byte data section (truncated?)", size, t.Offset, dataLen)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, t := f.Tensors[order[k-1]], f.Tensors[order[k]]
		if end := prev.Offset + uint64(prev.Size()); t.Offset < end {
			return formatErr(f.Path, "tensor "+t.Name, "data [%d, %d) overlaps tensor %s at [%d, %d)", t.Offset, t.Offset+uint64(t.Size()), prev.Name, prev.Offset, end)
		}
	}
	return nil
}
