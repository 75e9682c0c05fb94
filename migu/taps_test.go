package migu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// The taps ORT computes equal Σ|v| per feature computed here by hand in
// float64, with padding counted or left out, for a [batch, seq, dim] value
// (the MatMul form) and a [batch, dim] value (the ReduceL1 form), at opsets
// 17 and 18; and the same with the fused kernel ai.migu.AbsColSum
// (onnx/kernels) computing both. Two sizes: a tiny one, and one with 385
// rows and 333 features, which the fused kernel splits into row blocks
// (the last one short) and column blocks (the last one short); it must
// give the same bits on 1 and 2 threads.
func TestTapsMatchHandSums(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	for _, size := range []struct{ batch, seq, dim int64 }{{3, 5, 4}, {5, 77, 333}} {
		batch, seq, dim := size.batch, size.seq, size.dim
		rng := rand.New(rand.NewPCG(4, 5))
		y := make([]float32, batch*seq*dim)
		for i := range y {
			y[i] = rng.Float32()*2 - 1
		}
		z := y[:batch*dim]
		// Odd rows right-padded, even rows (but the first) left-padded.
		mask := make([]int64, batch*seq)
		for b := range batch {
			pad := b * seq / (batch + 1)
			for s := range seq {
				if b%2 == 1 && s < seq-pad || b%2 == 0 && s >= pad {
					mask[b*seq+s] = 1
				}
			}
		}
		for _, c := range []struct {
			name        string
			opset       int64
			skipPadding bool
			fused       bool
		}{{"opset17", 17, false, false}, {"opset18", 18, false, false}, {"opset17-skip-padding", 17, true, false}, {"opset18-skip-padding", 18, true, false},
			{"fused", 18, false, true}, {"fused-skip-padding", 18, true, true}} {
			t.Run(fmt.Sprintf("%dx%dx%d/%s", batch, seq, dim, c.name), func(t *testing.T) {
				var first [][]float32
				for _, threads := range []int{1, 2} {
					got := runTaps(t, c.opset, c.skipPadding, c.fused, threads, batch, seq, dim, y, z, mask)
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
						for j := range dim {
							if math.Abs(float64(got[k][j])-want[j]) > 1e-5*math.Max(1, want[j]) {
								t.Errorf("threads %d: tap %d [%d] = %v, want %v", threads, k, j, got[k][j], want[j])
							}
							if c.fused && first != nil && got[k][j] != first[k][j] {
								t.Errorf("tap %d [%d] = %v on 2 threads, %v on 1", k, j, got[k][j], first[k][j])
							}
						}
					}
					first = got
				}
			})
		}
	}
}

// runTaps adds the taps of y [batch, seq, dim] and z [batch, dim] to a
// graph of those inputs and returns what ORT computes for them.
func runTaps(t *testing.T, opset int64, skipPadding, fused bool, threads int, batch, seq, dim int64, y, z []float32, mask []int64) [][]float32 {
	t.Helper()
	so := ort.SessionOptions{Threads: threads}
	m := onnx.New("taps", map[string]int64{"": opset})
	if fused {
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
	taps, err := AddTapsWith(g, opset, info, points, TapOptions{SkipPadding: skipPadding, Fused: fused})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range g.P.Node {
		ops[n.GetOpType()]++
	}
	switch {
	case fused && (ops["AbsColSum"] != 2 || ops["Abs"] != 0):
		t.Errorf("want the fused tap for y and z, got ops %v", ops)
	case !fused && (ops["MatMul"] != 1 || ops["ReduceL1"] != 1):
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
	res := make([][]float32, len(outs))
	for k, o := range outs {
		res[k] = slices.Clone(o.(*ort.Tensor[float32]).Data())
		o.Close()
	}
	return res
}

// BenchmarkTaps times the magnitude taps of one small-llama step as `make
// bench` trains it (batch 4 × 128 tokens, 2 ORT threads): per tap width
// (256: k, v; 512: q, o, down; 1376: gate, up; 3241: the LM head) and all
// 57 taps of a step in one graph, in the standard form (Abs, then a row of
// ones times |y|) and with the fused kernel ai.migu.AbsColSum. Besides wall
// time it reports CPU time per run (cpu-ms/op).
func BenchmarkTaps(b *testing.B) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	lib := testenv.Kernels(b)
	const batch, seq = 4, 128
	step := map[int64]int{256: 16, 512: 24, 1376: 16, 3241: 1}
	cases := []struct {
		name   string
		widths map[int64]int
	}{{"d=256", map[int64]int{256: 1}}, {"d=512", map[int64]int{512: 1}}, {"d=1376", map[int64]int{1376: 1}},
		{"d=3241", map[int64]int{3241: 1}}, {"llama-step", step}}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		for _, fused := range []bool{false, true} {
			name := c.name + "/standard"
			if fused {
				name = c.name + "/fused"
			}
			b.Run(name, func(b *testing.B) {
				m := onnx.New("taps", map[string]int64{"": 18})
				so := ort.SessionOptions{Threads: 2}
				if fused {
					so.CustomOps = []string{lib}
					m.SetOpset(onnx.DomainMigu, 1)
				}
				g := m.Graph()
				g.AddInput("attention_mask", onnx.Int64, onnx.Shape{onnx.D(batch), onnx.D(seq)})
				var points []Point
				ys := map[string][]float32{}
				for _, d := range []int64{256, 512, 1376, 3241} {
					for k := range c.widths[d] {
						name := fmt.Sprintf("y%d_%d", d, k)
						g.AddInput(name, onnx.Float, onnx.Shape{onnx.D(batch), onnx.D(seq), onnx.D(d)})
						points = append(points, Point{Name: name, Value: name, Dim: d, Mask: "attention_mask"})
						y := make([]float32, batch*seq*d)
						for i := range y {
							y[i] = rng.Float32()*2 - 1
						}
						ys[name] = y
					}
				}
				info, err := shapes.Infer(m)
				if err != nil {
					b.Fatal(err)
				}
				taps, err := AddTapsWith(g, 18, info, points, TapOptions{Fused: fused})
				if err != nil {
					b.Fatal(err)
				}
				for _, tp := range taps {
					g.AddOutput(tp.Output, onnx.Float, onnx.Shape{onnx.D(tp.Dim)})
				}
				raw, err := proto.Marshal(m.Proto)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ort.NewSessionFromBytes(raw, so)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				bind, err := s.NewBinding()
				if err != nil {
					b.Fatal(err)
				}
				defer bind.Close()
				mask := make([]int64, batch*seq)
				for i := range mask {
					mask[i] = 1
				}
				values := []ort.Value{}
				defer func() {
					for _, v := range values {
						v.Close()
					}
				}()
				bindTensor := func(input bool, name string, v ort.Value, err error) {
					if err != nil {
						b.Fatal(err)
					}
					values = append(values, v)
					if input {
						err = bind.BindInput(name, v)
					} else {
						err = bind.BindOutput(name, v)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				mv, err := ort.NewTensor(mask, batch, seq)
				bindTensor(true, "attention_mask", mv, err)
				for name, y := range ys {
					yv, err := ort.NewTensor(y, batch, seq, int64(len(y)/(batch*seq)))
					bindTensor(true, name, yv, err)
				}
				for _, tp := range taps {
					ov, err := ort.NewTensor(make([]float32, tp.Dim), tp.Dim)
					bindTensor(false, tp.Output, ov, err)
				}
				testenv.TimeRuns(b, bind.Run)
			})
		}
	}
}
