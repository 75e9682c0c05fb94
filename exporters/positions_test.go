package exporters

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// The decoder's positions, run in ONNX Runtime on one mask row at a time:
// a right-padded row is numbered 0 … S−1 throughout (transformers' arange,
// padding included), a left-padded row's text starts at 0 and its padding
// keeps its index, and a gap is numbered by its index too.
func TestPositions(t *testing.T) {
	b := newBuilder("positions", nil)
	mask := b.Input("attention_mask", onnx.Int64, onnx.Sym("batch"), onnx.Sym("seq"))
	b.Output(positions(b, mask), "positions", onnx.Float, onnx.Sym("batch"), onnx.Sym("seq"))
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(b.Model.Proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	tests := []struct {
		name      string
		mask      []int64
		positions []float32
	}{
		{"unpadded", []int64{1, 1, 1, 1}, []float32{0, 1, 2, 3}},
		{"right-padded", []int64{1, 1, 1, 0, 0, 0}, []float32{0, 1, 2, 3, 4, 5}},
		{"left-padded", []int64{0, 0, 0, 1, 1, 1}, []float32{0, 1, 2, 0, 1, 2}},
		{"both sides", []int64{0, 1, 1, 0, 0}, []float32{0, 0, 1, 3, 4}},
		{"gap", []int64{1, 0, 1, 1}, []float32{0, 1, 1, 2}},
		{"all padding", []int64{0, 0, 0}, []float32{0, 1, 2}},
	}
	for _, tc := range tests {
		in, err := ort.NewTensor(tc.mask, 1, int64(len(tc.mask)))
		if err != nil {
			t.Fatal(err)
		}
		outs, err := sess.Run(map[string]ort.Value{"attention_mask": in})
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Clone(outs[0].(*ort.Tensor[float32]).Data())
		outs[0].Close()
		if !slices.Equal(got, tc.positions) {
			t.Errorf("%s: mask %v gives positions %v, want %v", tc.name, tc.mask, got, tc.positions)
		}
	}
}
