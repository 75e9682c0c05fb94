package safetensors

import "strings"

// DType is a safetensors element type, spelled as in the header ("F32").
type DType string

// The element types of the safetensors format. The reader accepts all of
// them; Float32 converts the floating-point ones other than the 8-bit floats.
const (
	BOOL   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	F8E5M2 DType = "F8_E5M2"
	F8E4M3 DType = "F8_E4M3"
	I16    DType = "I16"
	U16    DType = "U16"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I32    DType = "I32"
	U32    DType = "U32"
	F32    DType = "F32"
	F64    DType = "F64"
	I64    DType = "I64"
	U64    DType = "U64"
)

// dtypeOrder lists the dtypes in the order of the reference implementation's
// enum; its writer places tensors of later dtypes first, so Write sorts by
// descending rank to produce the same bytes.
var dtypeOrder = []DType{BOOL, U8, I8, F8E5M2, F8E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64}

var dtypeRank = func() map[DType]int {
	m := make(map[DType]int, len(dtypeOrder))
	for i, d := range dtypeOrder {
		m[d] = i
	}
	return m
}()

// Size is the byte size of one element, or 0 for a dtype this package does
// not know.
func (d DType) Size() int {
	switch d {
	case BOOL, U8, I8, F8E5M2, F8E4M3:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Valid reports whether d is one of the dtypes the format defines.
func (d DType) Valid() bool { return d.Size() != 0 }

// converts reports whether Float32 can convert tensors of this dtype.
func (d DType) converts() bool { return d == F32 || d == F16 || d == BF16 || d == F64 }

func knownDTypes() string {
	s := make([]string, len(dtypeOrder))
	for i, d := range dtypeOrder {
		s[i] = string(d)
	}
	return strings.Join(s, ", ")
}
