package ort

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/onnx"
)

// ErrScalar is returned for a rank-0 shape: onnxruntime_go refuses tensors
// without dimensions, so graphs exchange scalars (a loss, a step count) as
// shape [1].
var ErrScalar = errors.New("rank-0 (scalar) tensors are not supported by onnxruntime_go: reshape to [1] and give the graph input or output shape [1]")

// Value is a tensor that can be bound to a session input or output. Every
// Value is a *Tensor[T]; the unexported methods keep it that way.
type Value interface {
	// DType is the ONNX element type.
	DType() onnx.DType
	// Shape returns a copy of the dimensions.
	Shape() []int64
	// Close releases the ORT value; the Go data stays valid.
	Close() error

	ortValue() ortgo.Value
	dims() []int64
}

// Tensor is an ORT tensor over a Go slice: ORT reads and writes the slice's
// memory directly, so filling Data() before a run and reading it after
// copies nothing. The memory is always CPU memory (onnxruntime_go binds no
// device buffers). A Tensor must be closed when no longer needed, and must
// not be closed while a Binding still uses it.
type Tensor[T Element] struct {
	data  []T
	shape []int64
	dtype onnx.DType
	v     ortgo.Value
}

// NewTensor wraps data, without copying, as a tensor of the given shape;
// len(data) must equal the product of the dimensions. The element type is
// T's natural one (uint16 data is uint16; see NewFloat16Tensor).
func NewTensor[T Element](data []T, shape ...int64) (*Tensor[T], error) {
	return newTensor(data, shape, dtypeOf[T]())
}

// Zeros allocates a zero-filled tensor of the given shape, e.g. an output
// buffer to bind once and reuse every step.
func Zeros[T Element](shape ...int64) (*Tensor[T], error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	return newTensor(make([]T, n), shape, dtypeOf[T]())
}

// NewFloat16Tensor wraps IEEE 754 half-precision bit patterns (see
// internal/half) as a float16 tensor, without copying.
func NewFloat16Tensor(bits []uint16, shape ...int64) (*Tensor[uint16], error) {
	return newTensor(bits, shape, onnx.Float16)
}

// NewBFloat16Tensor wraps bfloat16 bit patterns as a bfloat16 tensor,
// without copying.
func NewBFloat16Tensor(bits []uint16, shape ...int64) (*Tensor[uint16], error) {
	return newTensor(bits, shape, onnx.BFloat16)
}

func newTensor[T Element](data []T, shape []int64, dt onnx.DType) (*Tensor[T], error) {
	if err := ensureInit(); err != nil {
		return nil, err
	}
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != n {
		return nil, fmt.Errorf("tensor data has %d elements, shape %s needs %d", len(data), fmtShape(shape), n)
	}
	shape = slices.Clone(shape)
	var v ortgo.Value
	if dt == dtypeOf[T]() {
		v, err = ortgo.NewTensor(ortgo.Shape(shape), data)
	} else {
		if n == 0 {
			return nil, fmt.Errorf("%s tensor of shape %s: onnxruntime_go cannot create an empty %s tensor", dt, fmtShape(shape), dt)
		}
		raw := unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), int(n)*dt.Size())
		v, err = ortgo.NewCustomDataTensor(ortgo.Shape(shape), raw, ortgo.TensorElementDataType(dt))
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s tensor of shape %s: %w", dt, fmtShape(shape), err)
	}
	return &Tensor[T]{data: data, shape: shape, dtype: dt, v: v}, nil
}

// numElements validates a shape and returns its element count.
func numElements(shape []int64) (int64, error) {
	if len(shape) == 0 {
		return 0, ErrScalar
	}
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %s: dimension %d is negative", fmtShape(shape), i)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %s has too many elements", fmtShape(shape))
		}
		n *= d
	}
	return n, nil
}

// Data is the tensor's backing slice: write inputs into it before a run,
// read outputs from it after.
func (t *Tensor[T]) Data() []T { return t.data }

// DType is the ONNX element type.
func (t *Tensor[T]) DType() onnx.DType { return t.dtype }

// Shape returns a copy of the dimensions.
func (t *Tensor[T]) Shape() []int64 { return slices.Clone(t.shape) }

// View returns a second tensor over the first elements of the same memory
// with another shape, e.g. a shorter batch in a buffer sized for the
// longest one. Both tensors must be closed.
func (t *Tensor[T]) View(shape ...int64) (*Tensor[T], error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n > int64(len(t.data)) {
		return nil, fmt.Errorf("view of shape %s needs %d elements, the tensor has %d", fmtShape(shape), n, len(t.data))
	}
	return newTensor(t.data[:n:n], shape, t.dtype)
}

// Close releases the ORT value. The Go slice stays valid; closing twice is
// harmless.
func (t *Tensor[T]) Close() error {
	if t.v == nil {
		return nil
	}
	err := t.v.Destroy()
	t.v = nil
	return err
}

func (t *Tensor[T]) ortValue() ortgo.Value {
	if t == nil || t.v == nil {
		return nil
	}
	return t.v
}

func (t *Tensor[T]) dims() []int64 { return t.shape }

// adopt wraps a tensor that onnxruntime_go allocated for an output.
func adopt[T Element](t *ortgo.Tensor[T]) *Tensor[T] {
	return &Tensor[T]{data: t.GetData(), shape: t.GetShape(), dtype: dtypeOf[T](), v: t}
}

// fromORT turns an output value allocated by onnxruntime_go into a Value.
func fromORT(v ortgo.Value) (Value, error) {
	switch t := v.(type) {
	case *ortgo.Tensor[float32]:
		return adopt(t), nil
	case *ortgo.Tensor[float64]:
		return adopt(t), nil
	case *ortgo.Tensor[int8]:
		return adopt(t), nil
	case *ortgo.Tensor[uint8]:
		return adopt(t), nil
	case *ortgo.Tensor[int16]:
		return adopt(t), nil
	case *ortgo.Tensor[uint16]:
		return adopt(t), nil
	case *ortgo.Tensor[int32]:
		return adopt(t), nil
	case *ortgo.Tensor[uint32]:
		return adopt(t), nil
	case *ortgo.Tensor[int64]:
		return adopt(t), nil
	case *ortgo.Tensor[uint64]:
		return adopt(t), nil
	case *ortgo.Tensor[bool]:
		return adopt(t), nil
	case *ortgo.CustomDataTensor:
		dt := onnx.DType(t.DataType())
		raw := t.GetData()
		if (dt != onnx.Float16 && dt != onnx.BFloat16) || len(raw) < 2 {
			t.Destroy()
			return nil, fmt.Errorf("%s outputs are not supported", dt)
		}
		bits := unsafe.Slice((*uint16)(unsafe.Pointer(&raw[0])), len(raw)/2)
		return &Tensor[uint16]{data: bits, shape: t.GetShape(), dtype: dt, v: t}, nil
	}
	v.Destroy()
	return nil, fmt.Errorf("%s outputs are not supported (only numeric tensors)", v.GetONNXType())
}
