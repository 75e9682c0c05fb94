package ort

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// TensorInfo describes a graph input or output as the model declares it.
type TensorInfo struct {
	Name  string
	DType onnx.DType
	// Shape is nil when the model declares no shape (any rank), and empty
	// but not nil for a declared scalar.
	Shape onnx.Shape
}

func (i TensorInfo) String() string {
	return fmt.Sprintf("%s %s %s", i.Name, i.DType, i.Shape)
}

// graphIO reads the declared inputs and outputs of a serialized ModelProto.
// It decodes only the graph's input and output entries and the names of its
// initializers, so a model with large embedded weights is not copied. Like
// ORT, it leaves out inputs that an initializer backs: they are optional
// overrides, not inputs a caller must feed.
func graphIO(model []byte) (inputs, outputs []TensorInfo, err error) {
	var graphs [][]byte
	err = eachField(model, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num == 7 && typ == protowire.BytesType {
			graphs = append(graphs, val)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	if len(graphs) == 0 {
		return nil, nil, errors.New("not an ONNX model: it has no graph")
	}
	var ins, outs []*onnxpb.ValueInfoProto
	inits := map[string]bool{}
	for _, g := range graphs {
		err := eachField(g, func(num protowire.Number, typ protowire.Type, val []byte) error {
			if typ != protowire.BytesType {
				return nil
			}
			switch num {
			case 5: // initializer: TensorProto, name = 8
				name, err := stringField(val, 8)
				inits[name] = true
				return err
			case 15: // sparse_initializer: SparseTensorProto, values = 1
				values, err := bytesField(val, 1)
				if err != nil {
					return err
				}
				name, err := stringField(values, 8)
				inits[name] = true
				return err
			case 11, 12:
				vi := &onnxpb.ValueInfoProto{}
				if err := proto.Unmarshal(val, vi); err != nil {
					return err
				}
				if num == 11 {
					ins = append(ins, vi)
				} else {
					outs = append(outs, vi)
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("not an ONNX model: reading its graph: %w", err)
		}
	}
	for _, vi := range ins {
		if inits[vi.GetName()] {
			continue
		}
		info, err := tensorInfo(vi)
		if err != nil {
			return nil, nil, fmt.Errorf("input %q: %w", vi.GetName(), err)
		}
		inputs = append(inputs, info)
	}
	for _, vi := range outs {
		info, err := tensorInfo(vi)
		if err != nil {
			return nil, nil, fmt.Errorf("output %q: %w", vi.GetName(), err)
		}
		outputs = append(outputs, info)
	}
	return inputs, outputs, nil
}

func tensorInfo(vi *onnxpb.ValueInfoProto) (TensorInfo, error) {
	dtype, shape, ok := onnx.TensorType(vi)
	if ok {
		return TensorInfo{Name: vi.GetName(), DType: dtype, Shape: shape}, nil
	}
	tp := vi.GetType()
	kind := "value without a type"
	switch {
	case tp.GetSequenceType() != nil:
		kind = "sequence"
	case tp.GetMapType() != nil:
		kind = "map"
	case tp.GetOptionalType() != nil:
		kind = "optional"
	case tp.GetSparseTensorType() != nil:
		kind = "sparse tensor"
	}
	return TensorInfo{}, fmt.Errorf("is a %s; only dense tensors are supported", kind)
}

// eachField calls fn for every top-level field of a protobuf message; val
// is the payload of length-delimited fields and nil otherwise.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var val []byte
		if typ == protowire.BytesType {
			val, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, val); err != nil {
			return err
		}
	}
	return nil
}

// bytesField returns the last occurrence of a length-delimited field.
func bytesField(msg []byte, want protowire.Number) ([]byte, error) {
	var out []byte
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num == want && typ == protowire.BytesType {
			out = val
		}
		return nil
	})
	return out, err
}

func stringField(msg []byte, want protowire.Number) (string, error) {
	b, err := bytesField(msg, want)
	return string(b), err
}
