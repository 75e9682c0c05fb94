package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// littleEndian is true on the hosts Go runs ONNX Runtime on; the zero-copy
// views below rely on it and fall back to encoding/binary otherwise.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// Float32Bytes returns the little-endian bytes of data; on little-endian
// hosts it is a view that shares memory with data.
func Float32Bytes(data []float32) []byte {
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), len(data)*4)
	}
	out := make([]byte, len(data)*4)
	for i, v := range data {
		binary.LittleEndian.PutUint32(out[i*4:], math.Float32bits(v))
	}
	return out
}

// Int64Bytes returns the little-endian bytes of data (a view where possible).
func Int64Bytes(data []int64) []byte {
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), len(data)*8)
	}
	out := make([]byte, len(data)*8)
	for i, v := range data {
		binary.LittleEndian.PutUint64(out[i*8:], uint64(v))
	}
	return out
}

// NewTensor builds an initializer from raw little-endian bytes, which it
// keeps without copying.
func NewTensor(name string, dtype DType, dims []int64, raw []byte) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Name:     proto.String(name),
		DataType: proto.Int32(int32(dtype)),
		Dims:     append([]int64(nil), dims...),
		RawData:  raw,
	}
}

// Float32Tensor builds a float32 initializer; it copies data.
func Float32Tensor(name string, dims []int64, data []float32) *onnxpb.TensorProto {
	return NewTensor(name, Float, dims, append([]byte(nil), Float32Bytes(data)...))
}

// Int64Tensor builds an int64 initializer; it copies data.
func Int64Tensor(name string, dims []int64, data []int64) *onnxpb.TensorProto {
	return NewTensor(name, Int64, dims, append([]byte(nil), Int64Bytes(data)...))
}

// IsExternal reports whether a tensor's bytes live in an external file.
func IsExternal(t *onnxpb.TensorProto) bool {
	return t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL
}

// inlineBytes returns the little-endian bytes of a tensor stored in the
// protobuf itself, from raw_data or from the typed repeated fields.
func inlineBytes(t *onnxpb.TensorProto) ([]byte, error) {
	dtype := DType(t.GetDataType())
	if t.RawData != nil {
		return t.RawData, nil
	}
	size := dtype.Size()
	// Size the buffer from the data present, never from the dims, which a
	// hostile file can make enormous; checkSize compares the two afterwards.
	count := len(t.FloatData) + len(t.DoubleData) + len(t.Int64Data) + len(t.Uint64Data) + len(t.Int32Data)
	out := make([]byte, 0, count*max(size, 1))
	switch dtype {
	case Float, Complex64:
		for _, v := range t.FloatData {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	case Double, Complex128:
		for _, v := range t.DoubleData {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		}
	case Int64:
		for _, v := range t.Int64Data {
			out = binary.LittleEndian.AppendUint64(out, uint64(v))
		}
	case Uint32:
		for _, v := range t.Uint64Data {
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		}
	case Uint64:
		for _, v := range t.Uint64Data {
			out = binary.LittleEndian.AppendUint64(out, v)
		}
	case Int32:
		for _, v := range t.Int32Data {
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		}
	case Int16, Uint16, Float16, BFloat16:
		for _, v := range t.Int32Data {
			out = binary.LittleEndian.AppendUint16(out, uint16(v))
		}
	case Int8, Uint8, Bool:
		for _, v := range t.Int32Data {
			out = append(out, byte(v))
		}
	default:
		if size == 1 { // the float8 types keep one value per int32
			for _, v := range t.Int32Data {
				out = append(out, byte(v))
			}
			break
		}
		return nil, fmt.Errorf("tensor %q: reading %v values from typed fields is not supported", t.GetName(), dtype)
	}
	return out, nil
}

// checkSize verifies that a tensor's byte count matches its dims and type.
func checkSize(t *onnxpb.TensorProto, got int64) error {
	want, err := ByteSize(DType(t.GetDataType()), t.Dims)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.GetName(), err)
	}
	if got != want {
		return fmt.Errorf("tensor %q: %d bytes of data, but %v %v needs %d", t.GetName(), got, DType(t.GetDataType()), t.Dims, want)
	}
	return nil
}

// decodeFloat32 converts little-endian bytes of a floating-point type to
// float32 values in dst (len(dst) elements).
func decodeFloat32(dtype DType, raw []byte, dst []float32) error {
	switch dtype {
	case Float:
		if littleEndian && len(raw) > 0 && uintptr(unsafe.Pointer(&raw[0]))%4 == 0 {
			copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/4))
			return nil
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[i*4:]))
		}
	case Float16:
		for i := range dst {
			dst[i] = half.F16ToF32(binary.LittleEndian.Uint16(raw[i*2:]))
		}
	case BFloat16:
		for i := range dst {
			dst[i] = half.BF16ToF32(binary.LittleEndian.Uint16(raw[i*2:]))
		}
	case Double:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[i*8:])))
		}
	default:
		return fmt.Errorf("element type %v is not floating point", dtype)
	}
	return nil
}
