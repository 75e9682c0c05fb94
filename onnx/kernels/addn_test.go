package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
)

// sumGraph is one Sum of n float32 inputs x0 … x(n-1) of shape, its
// output "y".
func sumGraph(n int, shape []int64) *onnx.Model {
	m := onnx.New("sum", nil)
	g := m.Graph()
	var in []string
	for i := range n {
		name := fmt.Sprintf("x%d", i)
		g.AddInput(name, onnx.Float, dimsOf(shape))
		in = append(in, name)
	}
	g.Node("Sum", in, []string{"y"}, "y")
	g.AddOutput("y", onnx.Float, dimsOf(shape))
	return m
}

// FuseSums replaces a Sum of three or more same-shaped inputs by AddN
// (a chain of them past eight inputs) that gives ORT's Sum bit for bit —
// values of mixed signs and magnitudes, so that the order of the
// additions shows — on 1 and 2 threads, over several blocks and a
// remainder; a two-input Sum stays.
func TestFuseSums(t *testing.T) {
	lib := withKernels(t)
	shape := []int64{3, 7, 1000}
	for _, c := range []struct{ inputs, addNs int }{{2, 0}, {3, 1}, {4, 1}, {8, 1}, {9, 2}, {16, 3}} {
		t.Run(fmt.Sprint(c.inputs), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.inputs), 11))
			var feeds []feed
			for i := range c.inputs {
				v := random(rng, numel(shape), -1, 1)
				for j := range v {
					v[j] *= float32(int(1) << rng.IntN(24))
				}
				feeds = append(feeds, feed{fmt.Sprintf("x%d", i), shape, v})
			}
			m := sumGraph(c.inputs, shape)
			fused := inferAndFuse(t, m, kernels.FuseSums)
			f := saveGraph(t, m)
			if fused != min(c.addNs, 1) || f.nodes["ai.migu.AddN"] != c.addNs {
				t.Fatalf("replaced %d Sums by %d AddNs, want %d AddNs", fused, f.nodes["ai.migu.AddN"], c.addNs)
			}
			want := runGraph(t, saveGraph(t, sumGraph(c.inputs, shape)).path, "", 2, feeds...)
			for _, threads := range []int{1, 2} {
				got := runGraph(t, f.path, lib, threads, feeds...)
				if j := firstDiff(got[0], want[0]); j >= 0 {
					t.Fatalf("%d threads: y differs at %d: %g, ORT's Sum %g", threads, j, got[0][j], want[0][j])
				}
			}
		})
	}
}

// A Sum whose inputs differ in shape, or of unknown shape, stays; AddN
// refuses inputs of different shapes with a message naming the op.
func TestFuseSumsKeepsBroadcasts(t *testing.T) {
	lib := withKernels(t)
	m := onnx.New("broadcast", nil)
	g := m.Graph()
	g.AddInput("a", onnx.Float, dimsOf([]int64{2, 3}))
	g.AddInput("b", onnx.Float, dimsOf([]int64{2, 3}))
	g.AddInput("c", onnx.Float, dimsOf([]int64{1, 3}))
	g.Node("Sum", []string{"a", "b", "c"}, []string{"y"}, "y")
	g.AddOutput("y", onnx.Float, nil)
	if n := inferAndFuse(t, m, kernels.FuseSums); n != 0 {
		t.Fatalf("replaced %d broadcasting Sums", n)
	}
	g.P.Node[0].OpType = &[]string{"AddN"}[0]
	g.P.Node[0].Domain = &[]string{onnx.DomainMigu}[0]
	m.SetOpset(onnx.DomainMigu, kernels.Opset)
	rng := rand.New(rand.NewPCG(1, 2))
	_, err := runGraphErr(t, saveGraph(t, m).path, lib, 1, feed{"a", []int64{2, 3}, random(rng, 6, -1, 1)},
		feed{"b", []int64{2, 3}, random(rng, 6, -1, 1)}, feed{"c", []int64{1, 3}, random(rng, 3, -1, 1)})
	if err == nil || !strings.Contains(err.Error(), "ai.migu.AddN: every input must have X0's shape") {
		t.Fatalf("error %v, want AddN's refusal", err)
	}
}
