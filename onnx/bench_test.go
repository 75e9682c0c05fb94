package onnx_test

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// bigModel builds a chain of n MatMuls with 256×256 float weights
// (n·256 KiB of initializers).
func bigModel(n int) *onnx.Model {
	m := onnx.New("big", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.D(256)})
	x := "x"
	w := make([]float32, 256*256)
	for i := range w {
		w[i] = float32(i%7) * 0.01
	}
	for i := 0; i < n; i++ {
		x = g.Op("MatMul", []string{x, g.Const("w", []int64{256, 256}, w...)}, "h")
	}
	g.AddOutput(x, onnx.Float, nil)
	return m
}

func BenchmarkSaveLoadExternal(b *testing.B) {
	m := bigModel(256) // 64 MiB of weights
	path := filepath.Join(b.TempDir(), "model.onnx")
	b.SetBytes(256 * 256 * 256 * 4)
	for b.Loop() {
		if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalAll}); err != nil {
			b.Fatal(err)
		}
		again, err := onnx.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range again.Proto.Graph.Initializer {
			if _, err := again.TensorBytes(t); err != nil {
				b.Fatal(err)
			}
		}
		again.Close()
	}
}

func BenchmarkTopoSortReversed(b *testing.B) {
	m := bigModel(5000)
	g := m.Graph()
	nodes := g.P.Node
	for b.Loop() {
		rev := make([]*onnxpb.NodeProto, len(nodes))
		for i, n := range nodes {
			rev[len(nodes)-1-i] = n
		}
		g.P.Node = rev
		if err := g.TopoSort(); err != nil {
			b.Fatal(err)
		}
	}
}
