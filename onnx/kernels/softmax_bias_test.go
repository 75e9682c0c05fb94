package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// saveSoftmaxBias writes a graph with ai.migu.Softmax twice: "fused" takes
// x and the bias as its two inputs, "plain" the sum an Add makes.
func saveSoftmaxBias(t *testing.T, xs, bs []int64) string {
	t.Helper()
	m := onnx.New("softmax-bias", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(xs))
	g.AddInput("bias", onnx.Float, dimsOf(bs))
	sum := g.Op("Add", []string{"x", "bias"}, "sum")
	g.Node("Softmax", []string{"x", "bias"}, []string{"fused"}, "fused")
	g.Node("Softmax", []string{sum}, []string{"plain"}, "plain")
	for _, n := range g.P.Node[1:] {
		n.Domain = &[]string{onnx.DomainMigu}[0]
	}
	return saveFusedPlain(t, m, onnx.DomainMigu, xs)
}

// Softmax with a Bias gives the bits of Softmax after an Add of the bias,
// for the biases attention adds — a padding mask [B, 1, 1, S], a causal
// one [1, 1, S, S], t5's position bias [1, H, S, S] and the full shape —
// with masked (−1e9) entries, rows longer and shorter than the 16 lanes
// and with a remainder, on 1 and 2 threads.
func TestSoftmaxBias(t *testing.T) {
	lib := withKernels(t)
	for _, c := range []struct{ x, bias []int64 }{
		{[]int64{2, 3, 5, 37}, []int64{2, 1, 1, 37}},
		{[]int64{2, 3, 37, 37}, []int64{1, 1, 37, 37}},
		{[]int64{2, 4, 16, 16}, []int64{1, 4, 16, 16}},
		{[]int64{1, 9, 128, 128}, []int64{1, 9, 128, 128}},
		{[]int64{3, 7}, []int64{1, 7}},
	} {
		t.Run(fmt.Sprint(c.x, c.bias), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(numel(c.x)), 3))
			x := random(rng, numel(c.x), -6, 6)
			bias := random(rng, numel(c.bias), -2, 2)
			for i := range bias {
				if i%5 == 4 {
					bias[i] = -1e9
				}
			}
			path := saveSoftmaxBias(t, c.x, c.bias)
			for _, threads := range []int{1, 2} {
				out := runGraph(t, path, lib, threads, feed{"x", c.x, x}, feed{"bias", c.bias, bias})
				if j := firstDiff(out[0], out[1]); j >= 0 {
					t.Fatalf("%d threads: y differs at %d with the bias in the softmax and after an Add", threads, j)
				}
			}
		})
	}
}

// A Bias that does not broadcast to X as Softmax's does is refused with
// a message naming the op and the rule.
func TestSoftmaxBiasRefusesBadBias(t *testing.T) {
	lib := withKernels(t)
	x := []int64{2, 3, 4, 8}
	for _, c := range []struct {
		bias []int64
		want string
	}{
		{[]int64{2, 1, 8}, "Bias must have X's rank"},
		{[]int64{2, 1, 1, 4}, "Bias's last axis must be X's"},
		{[]int64{2, 2, 1, 8}, "every axis of Bias must be X's or 1"},
	} {
		t.Run(fmt.Sprint(c.bias), func(t *testing.T) {
			m := onnx.New("bad", nil)
			g := m.Graph()
			g.AddInput("x", onnx.Float, dimsOf(x))
			g.AddInput("bias", onnx.Float, dimsOf(c.bias))
			g.Node("Softmax", []string{"x", "bias"}, []string{"y"}, "y")
			g.P.Node[0].Domain = &[]string{onnx.DomainMigu}[0]
			g.AddOutput("y", onnx.Float, dimsOf(x))
			m.SetOpset(onnx.DomainMigu, kernels.Opset)
			path := saveGraph(t, m).path
			rng := rand.New(rand.NewPCG(1, 2))
			_, err := runGraphErr(t, path, lib, 1, feed{"x", x, random(rng, numel(x), -1, 1)},
				feed{"bias", c.bias, random(rng, numel(c.bias), -1, 1)})
			if err == nil || !strings.Contains(err.Error(), "ai.migu.Softmax: "+c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// FuseSoftmaxBias folds an Add of a broadcast bias into the fused
// softmax that reads it, the scores either Add operand, and leaves alone:
// an Add whose sum is also a graph output or read by another node, a
// bias of another rank or that broadcasts on the last axis, and ORT's
// Softmax. The rewritten graph gives the original's outputs bit for bit.
func TestFuseSoftmaxBias(t *testing.T) {
	lib := withKernels(t)
	x := []int64{2, 3, 5, 9}
	inputs := map[string][]int64{"x": x, "mask": {2, 1, 1, 9}, "flat": {9}, "col": {2, 3, 5, 1}}
	build := func() *onnx.Model {
		m := onnx.New("fold", nil)
		g := m.Graph()
		for _, name := range []string{"x", "mask", "flat", "col"} {
			g.AddInput(name, onnx.Float, dimsOf(inputs[name]))
		}
		softmax := func(name, in string, migu bool) string {
			y := g.Op("Softmax", []string{in}, name, onnx.AttrInt("axis", -1))
			if migu {
				g.P.Node[len(g.P.Node)-1].Domain = &[]string{onnx.DomainMigu}[0]
			}
			g.AddOutput(y, onnx.Float, dimsOf(x))
			return y
		}
		softmax("folded", g.Op("Add", []string{"x", "mask"}, "s1"), true)
		softmax("swapped", g.Op("Add", []string{"mask", "x"}, "s2"), true)
		s3 := g.Op("Add", []string{"x", "mask"}, "s3")
		softmax("output", s3, true)
		g.AddOutput(s3, onnx.Float, dimsOf(x))
		s4 := g.Op("Add", []string{"x", "mask"}, "s4")
		softmax("reread", s4, true)
		g.AddOutput(g.Op("Neg", []string{s4}, "neg"), onnx.Float, dimsOf(x))
		softmax("rank", g.Op("Add", []string{"x", "flat"}, "s5"), true)
		softmax("column", g.Op("Add", []string{"x", "col"}, "s6"), true)
		softmax("standard", g.Op("Add", []string{"x", "mask"}, "s7"), false)
		m.SetOpset(onnx.DomainMigu, kernels.Opset)
		return m
	}
	m := build()
	if got := inferAndFuse(t, m, kernels.FuseSoftmaxBias); got != 2 {
		t.Fatalf("folded %d Adds, want 2 (folded, swapped)", got)
	}
	adds := 0
	for _, n := range m.Graph().P.Node {
		if n.GetOpType() == "Add" {
			adds++
		}
	}
	if adds != 5 {
		t.Fatalf("%d Adds left, want 5", adds)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var feeds []feed
	for name, shape := range inputs {
		feeds = append(feeds, feed{name, shape, random(rng, numel(shape), -3, 3)})
	}
	sameOutputs(t, lib, m, build(), feeds...)
}
