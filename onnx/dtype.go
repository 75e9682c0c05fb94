package onnx

import (
	"fmt"

	"github.com/migu-ml/migu/onnx/onnxpb"
)

// DType is an ONNX tensor element type (TensorProto.DataType).
type DType int32

// The element types migu handles; the others still load, print and round-trip.
const (
	Undefined  DType = DType(onnxpb.TensorProto_UNDEFINED)
	Float      DType = DType(onnxpb.TensorProto_FLOAT)
	Uint8      DType = DType(onnxpb.TensorProto_UINT8)
	Int8       DType = DType(onnxpb.TensorProto_INT8)
	Uint16     DType = DType(onnxpb.TensorProto_UINT16)
	Int16      DType = DType(onnxpb.TensorProto_INT16)
	Int32      DType = DType(onnxpb.TensorProto_INT32)
	Int64      DType = DType(onnxpb.TensorProto_INT64)
	String     DType = DType(onnxpb.TensorProto_STRING)
	Bool       DType = DType(onnxpb.TensorProto_BOOL)
	Float16    DType = DType(onnxpb.TensorProto_FLOAT16)
	Double     DType = DType(onnxpb.TensorProto_DOUBLE)
	Uint32     DType = DType(onnxpb.TensorProto_UINT32)
	Uint64     DType = DType(onnxpb.TensorProto_UINT64)
	Complex64  DType = DType(onnxpb.TensorProto_COMPLEX64)
	Complex128 DType = DType(onnxpb.TensorProto_COMPLEX128)
	BFloat16   DType = DType(onnxpb.TensorProto_BFLOAT16)
)

var dtypeNames = map[DType]string{
	Undefined: "undefined", Float: "float32", Uint8: "uint8", Int8: "int8",
	Uint16: "uint16", Int16: "int16", Int32: "int32", Int64: "int64",
	String: "string", Bool: "bool", Float16: "float16", Double: "float64",
	Uint32: "uint32", Uint64: "uint64", Complex64: "complex64",
	Complex128: "complex128", BFloat16: "bfloat16",
	DType(onnxpb.TensorProto_FLOAT8E4M3FN):   "float8e4m3fn",
	DType(onnxpb.TensorProto_FLOAT8E4M3FNUZ): "float8e4m3fnuz",
	DType(onnxpb.TensorProto_FLOAT8E5M2):     "float8e5m2",
	DType(onnxpb.TensorProto_FLOAT8E5M2FNUZ): "float8e5m2fnuz",
	DType(onnxpb.TensorProto_UINT4):          "uint4",
	DType(onnxpb.TensorProto_INT4):           "int4",
	DType(onnxpb.TensorProto_FLOAT4E2M1):     "float4e2m1",
}

// String gives the numpy-style name (float32, int64, …).
func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Known reports whether d is an element type ONNX defines; Undefined is
// not one.
func (d DType) Known() bool {
	_, ok := dtypeNames[d]
	return ok && d != Undefined
}

// Size is the byte size of one element, or 0 for types that are not a whole
// number of bytes per element (string, 4-bit types) or unknown.
func (d DType) Size() int {
	switch d {
	case Bool, Uint8, Int8:
		return 1
	case Float16, BFloat16, Uint16, Int16:
		return 2
	case Float, Int32, Uint32:
		return 4
	case Double, Int64, Uint64, Complex64:
		return 8
	case Complex128:
		return 16
	}
	if d >= DType(onnxpb.TensorProto_FLOAT8E4M3FN) && d <= DType(onnxpb.TensorProto_FLOAT8E5M2FNUZ) {
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type, the ones that carry
// gradients.
func (d DType) IsFloat() bool {
	switch d {
	case Float, Float16, Double, BFloat16:
		return true
	}
	return false
}

// ByteSize is the storage size of a tensor with these dims, or an error when
// the element type has no fixed size or the product overflows.
func ByteSize(d DType, dims []int64) (int64, error) {
	size := int64(d.Size())
	if d == DType(onnxpb.TensorProto_UINT4) || d == DType(onnxpb.TensorProto_INT4) || d == DType(onnxpb.TensorProto_FLOAT4E2M1) {
		n, err := NumElements(dims)
		if err != nil {
			return 0, err
		}
		return (n + 1) / 2, nil
	}
	if size == 0 {
		return 0, fmt.Errorf("element type %v has no fixed byte size", d)
	}
	n, err := NumElements(dims)
	if err != nil {
		return 0, err
	}
	if n > (1<<62)/size {
		return 0, fmt.Errorf("tensor of %v elements of %v overflows", n, d)
	}
	return n * size, nil
}
