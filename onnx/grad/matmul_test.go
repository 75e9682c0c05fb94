package grad

import (
	"encoding/binary"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/shapes"
)

// The gradient of a batched MatMul operand is reduced over the batch axes
// it broadcast, and only those: with symbolic shapes, operands whose batch
// axes equal the result's (attention's probs·v) get no reduction at all,
// and a key shared by a group of query heads ([B, h, 1, d, S] against
// [B, h, g, S, d]) one static ReduceSum over the group axis. Comparing the
// whole operand shape with the result's made both a run-time reduction
// (Shape, Equal, NonZero, ReduceSum) that copied the gradient; the values
// are checked by the MatMul cases of TestGradientRules.
func TestMatMulGradReducesOnlyBroadcastBatchAxes(t *testing.T) {
	b, h, s := onnx.Sym("batch"), onnx.D(2), onnx.Sym("seq")
	cases := []struct {
		name       string
		a, bShape  onnx.Shape
		reductions map[string][]int64 // operand → the axes its gradient sums
	}{
		{"same batch axes", onnx.Shape{b, h, s, s}, onnx.Shape{b, h, s, onnx.D(4)}, map[string][]int64{}},
		{"grouped key", onnx.Shape{b, h, onnx.D(3), s, onnx.D(4)}, onnx.Shape{b, h, onnx.D(1), onnx.D(4), s}, map[string][]int64{"x1": {2}}},
		{"missing batch axes", onnx.Shape{b, h, s, onnx.D(4)}, onnx.Shape{onnx.D(4), onnx.D(5)}, map[string][]int64{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := onnx.New("matmul", nil)
			g := m.Graph()
			g.AddInput("x0", onnx.Float, c.a)
			g.AddInput("x1", onnx.Float, c.bShape)
			y := g.Op("MatMul", []string{"x0", "x1"}, "y")
			loss := g.Op("ReduceSum", []string{y}, "loss", onnx.AttrInt("keepdims", 0))
			g.AddOutput(loss, onnx.Float, onnx.Shape{})
			sh, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Differentiate(m, sh, loss, []string{"x0", "x1"}); err != nil {
				t.Fatal(err)
			}
			got := map[string][]int64{}
			for _, n := range g.P.Node {
				switch n.GetOpType() {
				case "NonZero", "Equal":
					t.Errorf("%s: a run-time broadcast check (%s) in the gradient", n.GetName(), n.GetOpType())
				case "ReduceSum":
					if n.GetName() == "loss/ReduceSum" || n.Output[0] == loss {
						continue
					}
					axes, ok := constInts(g, n.Input[1])
					if !ok {
						t.Errorf("%s: axes not a constant", n.GetName())
					}
					for _, x := range []string{"x0", "x1"} {
						if n.GetName() == "bw/"+x+".unbroadcast/ReduceSum" || n.Output[0] == "bw/"+x+".unbroadcast" {
							got[x] = axes
						}
					}
				}
			}
			if len(got) != len(c.reductions) {
				t.Fatalf("reductions %v, want %v", got, c.reductions)
			}
			for x, want := range c.reductions {
				if len(got[x]) != len(want) || (len(want) > 0 && got[x][0] != want[0]) {
					t.Errorf("%s's gradient sums axes %v, want %v", x, got[x], want)
				}
			}
		})
	}
}

// constInts reads an int64 initializer of g (raw data, as ConstInt64
// writes it).
func constInts(g *onnx.Graph, name string) ([]int64, bool) {
	init := g.Initializer(name)
	if init == nil {
		return nil, false
	}
	raw := init.GetRawData()
	v := make([]int64, len(raw)/8)
	for i := range v {
		v[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return v, true
}
