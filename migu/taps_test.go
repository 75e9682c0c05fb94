package migu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
	"google.golang.org/protobuf/proto"
)

// The taps ORT computes equal Σ|v| per feature computed here by hand, with
// padding counted or left out, for a [batch, seq, dim] value (the MatMul
// form) and a [batch, dim] value (the ReduceL1 form), at opsets 17 and 18;
// and the same with the fused kernel ai.migu.AbsColSum (onnx/kernels)
// computing both.
func TestTapsMatchHandSums(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	const batch, seq, dim = 3, 5, 4
	rng := rand.New(rand.NewPCG(4, 5))
	y := make([]float32, batch*seq*dim)
	for i := range y {
		y[i] = rng.Float32()*2 - 1
	}
	z := y[:batch*dim]
	mask := []int64{1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1} // row 1 right-padded, row 2 left-padded
	for _, c := range []struct {
		name        string
		opset       int64
		skipPadding bool
		fused       bool
	}{{"opset17", 17, false, false}, {"opset18", 18, false, false}, {"opset17-skip-padding", 17, true, false}, {"opset18-skip-padding", 18, true, false},
		{"fused", 18, false, true}, {"fused-skip-padding", 18, true, true}} {
		t.Run(c.name, func(t *testing.T) {
			so := ort.SessionOptions{Threads: 1}
			m := onnx.New("taps", map[string]int64{"": c.opset})
			if c.fused {
				so.CustomOps = []string{testenv.Kernels(t)}
				m.SetOpset(onnx.DomainMigu, 1)
			}
			g := m.Graph()
			g.AddInput("y", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq"), onnx.D(dim)})
			g.AddInput("z", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.D(dim)})
			g.AddInput("attention_mask", onnx.Int64, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq")})
			info, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			points := []Point{{Name: "y", Value: "y", Dim: dim, Mask: "attention_mask"}, {Name: "z", Value: "z", Dim: dim, Mask: "attention_mask"}}
			taps, err := AddTapsWith(g, c.opset, info, points, TapOptions{SkipPadding: c.skipPadding, Fused: c.fused})
			if err != nil {
				t.Fatal(err)
			}
			ops := map[string]int{}
			for _, n := range g.P.Node {
				ops[n.GetOpType()]++
			}
			switch {
			case c.fused && (ops["AbsColSum"] != 2 || ops["Abs"] != 0):
				t.Errorf("want the fused tap for y and z, got ops %v", ops)
			case !c.fused && (ops["MatMul"] != 1 || ops["ReduceL1"] != 1):
				t.Errorf("want the MatMul form for y and ReduceL1 for z, got ops %v", ops)
			}
			for _, tp := range taps {
				g.AddOutput(tp.Output, onnx.Float, onnx.Shape{onnx.D(tp.Dim)})
			}
			if _, err := shapes.Infer(m); err != nil {
				t.Fatalf("shape inference of the tapped graph: %v", err)
			}
			raw, err := proto.Marshal(m.Proto)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ort.NewSessionFromBytes(raw, so)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			yv, _ := ort.NewTensor(y, batch, seq, dim)
			zv, _ := ort.NewTensor(z, batch, dim)
			mv, _ := ort.NewTensor(mask, batch, seq)
			defer yv.Close()
			defer zv.Close()
			defer mv.Close()
			outs, err := s.Run(map[string]ort.Value{"y": yv, "z": zv, "attention_mask": mv})
			if err != nil {
				t.Fatal(err)
			}
			wantY, wantZ := make([]float64, dim), make([]float64, dim)
			for i := range batch * seq {
				if c.skipPadding && mask[i] == 0 {
					continue
				}
				for j := range dim {
					wantY[j] += math.Abs(float64(y[i*dim+j]))
				}
			}
			for i := range batch {
				for j := range dim {
					wantZ[j] += math.Abs(float64(z[i*dim+j]))
				}
			}
			for k, want := range [][]float64{wantY, wantZ} {
				got := outs[k].(*ort.Tensor[float32]).Data()
				for j := range dim {
					if math.Abs(float64(got[j])-want[j]) > 1e-5*math.Max(1, want[j]) {
						t.Errorf("%s[%d] = %v, want %v", taps[k].Name, j, got[j], want[j])
					}
				}
				outs[k].Close()
			}
		})
	}
}
