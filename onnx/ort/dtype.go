package ort

import "github.com/migu-ml/migu/onnx"

// Element is the set of Go types a Tensor can hold. float16 and bfloat16
// data are held as their bit patterns in uint16 (see NewFloat16Tensor).
type Element interface {
	float32 | float64 | int8 | uint8 | int16 | uint16 | int32 | uint32 | int64 | uint64 | bool
}

// dtypeOf is the natural element type of T.
func dtypeOf[T Element]() onnx.DType {
	var zero T
	switch any(zero).(type) {
	case float32:
		return onnx.Float
	case float64:
		return onnx.Double
	case int8:
		return onnx.Int8
	case uint8:
		return onnx.Uint8
	case int16:
		return onnx.Int16
	case uint16:
		return onnx.Uint16
	case int32:
		return onnx.Int32
	case uint32:
		return onnx.Uint32
	case int64:
		return onnx.Int64
	case uint64:
		return onnx.Uint64
	case bool:
		return onnx.Bool
	}
	return onnx.Undefined
}
