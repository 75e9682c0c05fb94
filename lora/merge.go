package lora

import (
	"fmt"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Merge folds the loaded values into m's weight initializers in MatMul
// orientation. A head tied to an embedding gets a weight of its own (the
// embedding keeps its values), and man records it untied.
func (a *Adapter) Merge(m *onnx.Model, man *modeldir.Manifest) error {
	if a.layers == nil {
		return fmt.Errorf("lora: merging needs trained values: save the adapter and merge the folder")
	}
	layers, err := a.Layers(man)
	if err != nil {
		return err
	}
	s := float32(a.cfg.Scaling())
	r := int64(a.cfg.R)
	for _, l := range layers {
		v := a.layers[l.Name]
		w, err := WeightOf(m, l)
		if err != nil {
			return err
		}
		AddProduct(w, v.a, v.b, l.DIn, r, l.DOut, s)
		if err := SetWeight(m, man, l, w); err != nil {
			return err
		}
	}
	return nil
}

// WeightOf returns a copy of layer l's weight in MatMul orientation
// [d_in, d_out], as float32 (a tied head's embedding transposed).
func WeightOf(m *onnx.Model, l modeldir.Linear) ([]float32, error) {
	t := m.Graph().Initializer(l.Weight)
	if t == nil {
		return nil, badinput.Errorf("layer %s: the model has no weight initializer %q", l.Name, l.Weight)
	}
	if !onnx.DType(t.GetDataType()).IsFloat() {
		return nil, fmt.Errorf("lora: layer %s: weight %q is %v, not a float tensor", l.Name, l.Weight, onnx.DType(t.GetDataType()))
	}
	// A tied head reads the transpose of the embedding [d_out, d_in].
	want := []int64{l.DIn, l.DOut}
	if l.Tied != "" {
		want = []int64{l.DOut, l.DIn}
	}
	if !slices.Equal(t.Dims, want) {
		return nil, fmt.Errorf("lora: weight %q of %s has shape %v, want %v", l.Weight, l.Name, t.Dims, want)
	}
	w, err := m.Float32s(t)
	if err != nil {
		return nil, err
	}
	if l.Tied != "" {
		return transpose(w, l.DOut, l.DIn), nil
	}
	return slices.Clone(w), nil
}

// SetWeight replaces layer l's weight with w [d_in, d_out] (float32); a
// tied head gets a weight of its own, and the embedding stays as it was.
func SetWeight(m *onnx.Model, man *modeldir.Manifest, l modeldir.Linear, w []float32) error {
	if l.Tied == "" {
		replaceData(m.Graph().Initializer(l.Weight), w)
		return nil
	}
	return untie(m.Graph(), man, l, w)
}

// AddProduct adds s·A·B to w ([d_in, d_out]), with A [d_in, r], B [r, d_out].
func AddProduct(w, a, b []float32, dIn, r, dOut int64, s float32) {
	row := make([]float32, dOut)
	for i := range dIn {
		clear(row)
		for k := range r {
			aik := a[i*r+k]
			if aik == 0 {
				continue
			}
			bk := b[k*dOut : (k+1)*dOut]
			for j, bkj := range bk {
				row[j] += aik * bkj
			}
		}
		wi := w[i*dOut : (i+1)*dOut]
		for j := range wi {
			wi[j] += s * row[j]
		}
	}
}

// replaceData stores values as t's new inline float32 contents; a weight
// the folder stored in half precision becomes float32 (its Cast to float32
// then does nothing), so the merge loses nothing to rounding.
func replaceData(t *onnxpb.TensorProto, values []float32) {
	t.DataType = proto.Int32(int32(onnx.Float))
	t.RawData = onnx.Float32Bytes(values)
	t.ExternalData, t.DataLocation = nil, nil
	t.FloatData = nil
}

// untie gives a tied head its own MatMul-orientation weight w: the head's
// MatMul reads the new initializer instead of the embedding's transpose,
// which is dropped when nothing else reads it.
func untie(g *onnx.Graph, man *modeldir.Manifest, l modeldir.Linear, w []float32) error {
	var node *onnxpb.NodeProto
	for _, n := range g.P.Node {
		if n.GetName() == l.Node {
			node = n
			break
		}
	}
	if node == nil || len(node.Input) != 2 {
		return fmt.Errorf("lora: untying %s: no MatMul node %q", l.Name, l.Node)
	}
	old := node.Input[1]
	name := g.Unique(l.Name + ".weight")
	g.AddInitializer(onnx.Float32Tensor(name, []int64{l.DIn, l.DOut}, w))
	node.Input[1] = name
	if old != l.Weight && len(g.Consumers()[old]) == 0 {
		if p := g.Producers()[old]; p != nil && p.GetOpType() == "Transpose" {
			g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return n == p })
		}
	}
	for i := range man.Linears {
		if man.Linears[i].Name == l.Name {
			man.Linears[i].Weight, man.Linears[i].Tied = name, ""
		}
	}
	return nil
}
