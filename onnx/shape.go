package onnx

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Dim is one dimension of a declared shape: a fixed size, a symbol such as
// "batch", or unknown (neither).
type Dim struct {
	Value int64  // the size when Param is empty and Known is true
	Param string // symbolic name, e.g. "batch"
	Known bool   // false for a dimension with neither value nor name
}

// D returns a fixed dimension.
func D(n int64) Dim { return Dim{Value: n, Known: true} }

// Sym returns a symbolic dimension.
func Sym(name string) Dim { return Dim{Param: name, Known: true} }

// String prints a fixed size, the symbol's name, or "?".
func (d Dim) String() string {
	switch {
	case d.Param != "":
		return d.Param
	case d.Known:
		return strconv.FormatInt(d.Value, 10)
	}
	return "?"
}

// Shape is a declared tensor shape; nil means the rank is unknown.
type Shape []Dim

// String prints the shape as "[batch, seq, 64]", or "unknown rank".
func (s Shape) String() string {
	if s == nil {
		return "unknown rank"
	}
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Fixed returns the dims when every dimension is a known number.
func (s Shape) Fixed() ([]int64, bool) {
	out := make([]int64, len(s))
	for i, d := range s {
		if !d.Known || d.Param != "" {
			return nil, false
		}
		out[i] = d.Value
	}
	return out, s != nil
}

// Matches reports whether concrete dims fit the declared shape: same rank and
// equal fixed dimensions (symbols match anything).
func (s Shape) Matches(dims []int64) bool {
	if s == nil {
		return true
	}
	if len(s) != len(dims) {
		return false
	}
	for i, d := range s {
		if d.Known && d.Param == "" && d.Value != dims[i] {
			return false
		}
	}
	return true
}

// NumElements multiplies dims, refusing negative dims and overflow, both of
// which come from malformed files.
func NumElements(dims []int64) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in %v", d, dims)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("dimensions %v overflow", dims)
		}
		n *= d
	}
	return n, nil
}

// TensorType returns the element type and shape declared by a value info;
// ok is false for values that are not tensors (sequences, maps, …).
func TensorType(vi *onnxpb.ValueInfoProto) (dtype DType, shape Shape, ok bool) {
	tt := vi.GetType().GetTensorType()
	if tt == nil {
		return Undefined, nil, false
	}
	dtype = DType(tt.GetElemType())
	if tt.Shape == nil {
		return dtype, nil, true
	}
	shape = make(Shape, len(tt.Shape.Dim))
	for i, d := range tt.Shape.Dim {
		switch v := d.Value.(type) {
		case *onnxpb.TensorShapeProto_Dimension_DimValue:
			shape[i] = D(v.DimValue)
		case *onnxpb.TensorShapeProto_Dimension_DimParam:
			shape[i] = Sym(v.DimParam)
		}
	}
	return dtype, shape, true
}

// ValueInfo builds a tensor value info; a nil shape leaves the rank unknown.
func ValueInfo(name string, dtype DType, shape Shape) *onnxpb.ValueInfoProto {
	tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(dtype))}
	if shape != nil {
		tt.Shape = &onnxpb.TensorShapeProto{Dim: make([]*onnxpb.TensorShapeProto_Dimension, len(shape))}
		for i, d := range shape {
			dim := &onnxpb.TensorShapeProto_Dimension{}
			switch {
			case d.Param != "":
				dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d.Param}
			case d.Known:
				dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d.Value}
			}
			tt.Shape.Dim[i] = dim
		}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}},
	}
}
