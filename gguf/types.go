package gguf

import (
	"fmt"
	"strconv"
	"strings"
)

// Type is a ggml tensor type, numbered as ggml numbers them in files.
type Type uint32

// The ggml tensor types. The package reads (and dequantizes) F32, F16, BF16,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K; the
// others are named so that messages about them are readable.
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
)

var typeNames = map[Type]string{
	F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1",
	Q8_0: "Q8_0", Q8_1: "Q8_1", Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K",
	Q6_K: "Q6_K", Q8_K: "Q8_K", IQ2_XXS: "IQ2_XXS", IQ2_XS: "IQ2_XS", IQ3_XXS: "IQ3_XXS",
	IQ1_S: "IQ1_S", IQ4_NL: "IQ4_NL", IQ3_S: "IQ3_S", IQ2_S: "IQ2_S", IQ4_XS: "IQ4_XS",
	I8: "I8", I16: "I16", I32: "I32", I64: "I64", F64: "F64", IQ1_M: "IQ1_M", BF16: "BF16",
	TQ1_0: "TQ1_0", TQ2_0: "TQ2_0", MXFP4: "MXFP4",
}

// String is ggml's name for the type ("Q4_K"), or "type(N)" for a number
// ggml does not define.
func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "type(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// ParseType finds a type by its ggml name, in any case ("q8_0", "BF16").
func ParseType(s string) (Type, error) {
	for t, name := range typeNames {
		if strings.EqualFold(s, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown tensor type %q (migu reads %s)", s, supportedList)
}

// blockLayout is a type's block: elems values stored in bytes bytes.
type blockLayout struct{ elems, bytes int }

// layouts holds the types this package reads, in the order messages list
// them.
var layouts = []struct {
	t Type
	blockLayout
}{
	{F32, blockLayout{1, 4}},
	{F16, blockLayout{1, 2}},
	{BF16, blockLayout{1, 2}},
	{Q8_0, blockLayout{32, 34}},
	{Q4_0, blockLayout{32, 18}},
	{Q4_1, blockLayout{32, 20}},
	{Q5_0, blockLayout{32, 22}},
	{Q5_1, blockLayout{32, 24}},
	{Q2_K, blockLayout{256, 84}},
	{Q3_K, blockLayout{256, 110}},
	{Q4_K, blockLayout{256, 144}},
	{Q5_K, blockLayout{256, 176}},
	{Q6_K, blockLayout{256, 210}},
	{Q8_K, blockLayout{256, 292}},
}

// supportedList names the readable types for messages.
var supportedList = func() string {
	names := make([]string, len(layouts))
	for i, l := range layouts {
		names[i] = l.t.String()
	}
	return strings.Join(names, ", ")
}()

func layoutOf(t Type) (blockLayout, bool) {
	for _, l := range layouts {
		if l.t == t {
			return l.blockLayout, true
		}
	}
	return blockLayout{}, false
}

// BlockSize is the number of values in one block of the type and the bytes
// that block takes (1 and 4 for F32; 256 and 144 for Q4_K). ok is false for
// types this package cannot read, so it doubles as "can dequantize".
func (t Type) BlockSize() (elems, bytes int, ok bool) {
	l, ok := layoutOf(t)
	return l.elems, l.bytes, ok
}

// ValueType is the type of a metadata value.
type ValueType uint32

// The metadata value types, numbered as in the file.
const (
	Uint8   ValueType = 0
	Int8    ValueType = 1
	Uint16  ValueType = 2
	Int16   ValueType = 3
	Uint32  ValueType = 4
	Int32   ValueType = 5
	Float32 ValueType = 6
	Bool    ValueType = 7
	String  ValueType = 8
	Array   ValueType = 9
	Uint64  ValueType = 10
	Int64   ValueType = 11
	Float64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

// String is the lower-case name of the type ("uint32"), or "type(N)".
func (v ValueType) String() string {
	if int(v) < len(valueTypeNames) {
		return valueTypeNames[v]
	}
	return "type(" + strconv.FormatUint(uint64(v), 10) + ")"
}

// valid reports whether v is a value type of the format.
func (v ValueType) valid() bool { return v <= Float64 }

// scalarSize is the encoded size of a fixed-size value, 0 for strings and
// arrays.
func (v ValueType) scalarSize() int {
	switch v {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16:
		return 2
	case Uint32, Int32, Float32:
		return 4
	case Uint64, Int64, Float64:
		return 8
	}
	return 0
}

// minSize is the fewest bytes a value of type v can take: what a count of
// such values is checked against before anything is allocated.
func (v ValueType) minSize() int {
	switch v {
	case String:
		return 8 // the length
	case Array:
		return 12 // element type and count
	}
	return v.scalarSize()
}

// KV is one metadata key/value. Value holds uint8, int8, uint16, int16,
// uint32, int32, uint64, int64, float32, float64, bool or string; an array
// holds the typed slice ([]uint8 … []float64, []bool, []string), or []any
// for an array of arrays, whose elements are such slices in turn. ElemType
// is an array's element type (unused otherwise).
type KV struct {
	Key      string
	Type     ValueType
	ElemType ValueType
	Value    any
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name string
	// Dims in GGUF order: Dims[0] varies fastest (the row length).
	Dims []uint64
	Type Type
	// Offset is where the data starts, from the start of the data section.
	Offset uint64
}

// Shape is the row-major (numpy, PyTorch) shape: the reversed Dims.
func (t TensorInfo) Shape() []int64 {
	s := make([]int64, len(t.Dims))
	for i, d := range t.Dims {
		s[len(t.Dims)-1-i] = int64(d)
	}
	return s
}

// NumElements is the product of the dims (1 for a tensor without dims).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= int64(d)
	}
	return n
}

// Size is the number of bytes the tensor takes in the file, 0 for a type
// the package cannot read.
func (t TensorInfo) Size() int64 {
	l, ok := layoutOf(t.Type)
	if !ok {
		return 0
	}
	return t.NumElements() / int64(l.elems) * int64(l.bytes)
}
