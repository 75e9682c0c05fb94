package kernels_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// toBF16Graph saves a graph rounding x [n] with ai.migu.bf16.ToBF16 into
// y, bfloat16, or with widen into y widened to float32 by a Cast (the Go
// binding of ONNX Runtime cannot return an empty bfloat16 tensor).
func toBF16Graph(t *testing.T, n int64, dt onnx.DType, widen bool) (*onnx.Model, string) {
	t.Helper()
	m := onnx.New("tobf16", nil)
	g := m.Graph()
	g.AddInput("x", dt, dimsOf([]int64{n}))
	y := "y"
	if widen {
		y = "y16"
	}
	g.Node("ToBF16", []string{"x"}, []string{y}, y)
	g.P.Node[0].Domain = &[]string{onnx.DomainMiguBF16}[0]
	if widen {
		g.Node("Cast", []string{y}, []string{"y"}, "y", onnx.AttrInt("to", int64(onnx.Float)))
		g.AddOutput("y", onnx.Float, dimsOf([]int64{n}))
	} else {
		g.AddOutput("y", onnx.BFloat16, dimsOf([]int64{n}))
	}
	m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
	path := filepath.Join(t.TempDir(), "tobf16.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return m, path
}

// ToBF16 rounds as internal/half.F32ToBF16 does, bit for bit: ties to
// even, NaNs quiet (also one whose payload lies only in the low half, which
// cutting would turn into infinity), the largest floats up to infinity,
// subnormals and signed zeros; and a tensor of several conversion blocks
// on 1 and 2 threads, and an empty one; and as ONNX Runtime's Cast to
// bfloat16 does.
func TestToBF16(t *testing.T) {
	lib := withBF16(t)
	bits := []uint32{
		0x00000000, 0x80000000, 0x3f800000, 0xbf800000,
		0x3f808000, // 1 + 2^-8: a tie, stays at the even 1
		0x3f818000, // 1 + 3·2^-8: a tie, up to the even 1 + 2^-6
		0x3f80ffff, 0x3f807fff,
		0x7f7fffff, 0xff7fffff, // the largest floats round to ±infinity
		0x00000001, 0x007fffff, 0x80400000, // subnormals
		0x7f800000, 0xff800000, // infinities
		0x7fc00000, 0xffc00001, 0x7f800001, // NaNs; the last has its payload in the low half only
	}
	special := make([]float32, len(bits))
	for i, b := range bits {
		special[i] = math.Float32frombits(b)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	many := gaussian(rng, 3*65536+7)
	for _, c := range []struct {
		name    string
		x       []float32
		threads int
	}{
		{"special values", special, 1},
		{"several blocks, 1 thread", many, 1},
		{"several blocks, 2 threads", many, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, path := toBF16Graph(t, int64(len(c.x)), onnx.Float, false)
			got := runBF16Out(t, path, lib, c.threads, c.x)
			if len(got) != len(c.x) {
				t.Fatalf("%d values, want %d", len(got), len(c.x))
			}
			for i, v := range c.x {
				if want := half.F32ToBF16(v); got[i] != want {
					t.Fatalf("x[%d] = %#08x rounds to %#04x, want %#04x", i, math.Float32bits(v), got[i], want)
				}
			}
		})
	}
	// The standard-op formulation: ONNX Runtime's Cast to bfloat16 rounds
	// to nearest even too (NaNs become its own quiet NaN).
	t.Run("against Cast", func(t *testing.T) {
		m := onnx.New("cast", nil)
		g := m.Graph()
		n := int64(len(special) + len(many))
		g.AddInput("x", onnx.Float, dimsOf([]int64{n}))
		g.Node("Cast", []string{"x"}, []string{"y"}, "y", onnx.AttrInt("to", int64(onnx.BFloat16)))
		g.AddOutput("y", onnx.BFloat16, dimsOf([]int64{n}))
		path := filepath.Join(t.TempDir(), "cast.onnx")
		if err := m.Save(path, onnx.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		all := append(slices.Clone(special), many...)
		for i, c := range runBF16Out(t, path, "", 1, all) {
			want := half.F32ToBF16(all[i])
			if isNaN := want&0x7fff > 0x7f80; isNaN != (c&0x7fff > 0x7f80) || !isNaN && c != want {
				t.Fatalf("x[%d] = %#08x: Cast gives %#04x, ToBF16 %#04x", i, math.Float32bits(all[i]), c, want)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		_, path := toBF16Graph(t, 0, onnx.Float, true)
		if got := runGraph(t, path, lib, 2, feed{"x", []int64{0}, []float32{}}); len(got[0]) != 0 {
			t.Fatalf("%d values from an empty x", len(got[0]))
		}
	})
}

// runBF16Out runs the graph at path (loading lib unless "") on x [n] and
// returns its bfloat16 output y.
func runBF16Out(t *testing.T, path, lib string, threads int, x []float32) []uint16 {
	t.Helper()
	opts := ort.SessionOptions{Threads: threads}
	if lib != "" {
		opts.CustomOps = []string{lib}
	}
	s, err := ort.NewSession(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	xv, err := ort.NewTensor(x, int64(len(x)))
	if err != nil {
		t.Fatal(err)
	}
	defer xv.Close()
	outs, err := s.Run(map[string]ort.Value{"x": xv})
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Close()
	return slices.Clone(outs[0].(*ort.Tensor[uint16]).Data())
}

// A ToBF16 of anything but float32 is refused by shape inference and by
// ONNX Runtime, each naming the op.
func TestToBF16RefusesOtherTypes(t *testing.T) {
	lib := withBF16(t)
	m, path := toBF16Graph(t, 4, onnx.Int64, false)
	if _, err := shapes.Infer(m); err == nil || !strings.Contains(err.Error(), "ToBF16") {
		t.Fatalf("shape inference: %v; want an error naming ToBF16", err)
	}
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1, CustomOps: []string{lib}})
	if err == nil {
		s.Close()
		t.Fatal("ONNX Runtime accepted ToBF16 of int64")
	}
	if !strings.Contains(err.Error(), "ToBF16") {
		t.Fatalf("ONNX Runtime: %v; want an error naming ToBF16", err)
	}
}

// sharedProducts is a graph whose bf16 products read some values more than
// once: h (the Relu of x; a forward product on each of two weights and a
// weight gradient), w1 (its forward product and its input gradient, transB)
// and d (the input and weight gradients); and x3, a 3-D layer input that
// one forward product reads as it is and a weight gradient through two
// reshapes (Flatten of an Unsqueeze). w2 is read by one bf16 product and
// by a float32 one (MatMulF32), which must keep reading it as float32.
func sharedProducts() *onnx.Model {
	m := onnx.New("shared", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf([]int64{4, 16}))
	g.AddInput("w1", onnx.Float, dimsOf([]int64{16, 8}))
	g.AddInput("w2", onnx.Float, dimsOf([]int64{16, 8}))
	g.AddInput("d", onnx.Float, dimsOf([]int64{4, 8}))
	h := g.Op("Relu", []string{"x"}, "h")
	product := func(op, a, b string, transA, transB int64) string {
		y := g.Op(op, []string{a, b}, op, onnx.AttrInt("transA", transA), onnx.AttrInt("transB", transB))
		g.P.Node[len(g.P.Node)-1].Domain = &[]string{onnx.DomainMiguBF16}[0]
		g.AddOutput(y, onnx.Float, nil)
		return y
	}
	product("MatMulBF16", h, "w1", 0, 0)
	product("MatMulBF16", h, "w2", 0, 0)
	product("MatMulBF16", "d", "w1", 0, 1)
	product("MatMulBF16", h, "d", 1, 0)
	product("MatMulF32", h, "w2", 0, 0)
	g.AddInput("x3", onnx.Float, dimsOf([]int64{2, 2, 16}))
	product("MatMulBF16", "x3", "w1", 0, 0)
	u := g.Op("Unsqueeze", []string{"x3", g.ConstInt64("axis0", []int64{1}, 0)}, "x3.u")
	flat := g.Op("Flatten", []string{u}, "x3.flat", onnx.AttrInt("axis", 3))
	product("MatMulBF16", flat, "d", 1, 0)
	m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
	return m
}

// ShareBF16Operands gives every float32 value that two or more bf16
// products read, directly or through reshapes, one ToBF16, placed after
// its producer and before its first reader, repeats the reshapes on the
// copy (removing the float32 ones left unread), rewires those products
// (and no other node) to the copies, leaves values read once alone, and
// changes no output by a bit — weight
// products and attention's batched bf16 products, on 1 and 2 threads.
// Float32 BatchMatMuls are no bf16 products: nothing to share.
func TestShareBF16Operands(t *testing.T) {
	lib := withBF16(t)
	rng := rand.New(rand.NewPCG(9, 9))
	attention := func(bf16 bool) func() *onnx.Model {
		return func() *onnx.Model {
			m := attentionGraph()
			kernels.RewriteBatch(m, inferTypes(t, m), bf16)
			return m
		}
	}
	shape := []int64{2, 5, 3, 8}
	var attentionFeeds []feed
	for _, in := range []string{"q", "k", "v", "g"} {
		attentionFeeds = append(attentionFeeds, feed{in, shape, gaussian(rng, numel(shape))})
	}
	for _, c := range []struct {
		name   string
		build  func() *onnx.Model
		shared []string
		feeds  []feed
	}{
		{"weight products", sharedProducts, []string{"h", "w1", "d", "x3"}, []feed{
			{"x", []int64{4, 16}, gaussian(rng, 64)}, {"w1", []int64{16, 8}, gaussian(rng, 128)},
			{"w2", []int64{16, 8}, gaussian(rng, 128)}, {"d", []int64{4, 8}, gaussian(rng, 32)},
			{"x3", []int64{2, 2, 16}, gaussian(rng, 64)},
		}},
		{"attention in bf16", attention(true), []string{"q", "k", "v", "g", "probs", "dp"}, attentionFeeds},
		{"attention in float32", attention(false), nil, attentionFeeds},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			before := c.build()
			beforePath := filepath.Join(dir, "before.onnx")
			if err := before.Save(beforePath, onnx.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			m := c.build()
			if n := kernels.ShareBF16Operands(m, inferTypes(t, m)); n != len(c.shared) {
				t.Fatalf("shared %d values, want %d (%v)", n, len(c.shared), c.shared)
			}
			g := m.Graph()
			var rounded []string
			available := map[string]bool{}
			for _, in := range g.P.Input {
				available[in.GetName()] = true
			}
			for _, in := range g.P.Initializer {
				available[in.GetName()] = true
			}
			for _, n := range g.P.Node {
				for _, in := range n.Input {
					if !available[in] {
						t.Fatalf("node %s reads %s before it is computed", n.GetName(), in)
					}
				}
				available[n.Output[0]] = true
				if n.GetOpType() == "ToBF16" {
					rounded = append(rounded, n.Input[0])
					continue
				}
				reads := slices.ContainsFunc(n.Input, func(v string) bool { return strings.HasSuffix(v, "/bf16") })
				if n.GetOpType() == "Flatten" || n.GetOpType() == "Unsqueeze" {
					continue
				}
				if bf16 := n.GetOpType() == "MatMulBF16" || onnx.AttrIntOr(n, "bf16", 0) == 1; reads && !bf16 {
					t.Fatalf("%s (%s) reads a bf16 copy", n.GetName(), n.GetOpType())
				}
			}
			consumers := g.Consumers()
			for _, n := range g.P.Node {
				if (n.GetOpType() == "Flatten" || n.GetOpType() == "Unsqueeze") && len(consumers[n.Output[0]]) == 0 {
					t.Fatalf("%s is left with no reader", n.GetName())
				}
			}
			slices.Sort(rounded)
			want := slices.Sorted(slices.Values(c.shared))
			if !slices.Equal(rounded, want) {
				t.Fatalf("ToBF16 of %v, want %v", rounded, want)
			}
			if len(c.shared) == 0 {
				return
			}
			afterPath := filepath.Join(dir, "after.onnx")
			if err := m.Save(afterPath, onnx.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, threads := range []int{1, 2} {
				wantOut := runGraph(t, beforePath, lib, threads, c.feeds...)
				gotOut := runGraph(t, afterPath, lib, threads, c.feeds...)
				for o := range wantOut {
					for j := range wantOut[o] {
						if math.Float32bits(gotOut[o][j]) != math.Float32bits(wantOut[o][j]) {
							t.Fatalf("%d threads: output %s[%d] = %g, %g with every product rounding its operands", threads, g.P.Output[o].GetName(), j, gotOut[o][j], wantOut[o][j])
						}
					}
				}
			}
		})
	}
}
