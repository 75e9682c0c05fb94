package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// scatterCase is a table looked up by Gather once or more, and perhaps also
// used directly (a tied embedding), for FuseScatterAdd's tests.
type scatterCase struct {
	name    string
	table   []int64   // the table's shape
	axis    int64     // Gather's axis
	lookups [][]int64 // the index shape of each lookup
	direct  bool      // the loss also has Σ q ⊙ 3·table
	exact   bool      // fused gives the standard graph's bits
	sums    int       // Sums FuseScatterAdd folds
}

var scatterCases = []scatterCase{
	{name: "embedding", table: []int64{37, 300}, lookups: [][]int64{{4, 33}}, exact: true},
	{name: "tied", table: []int64{37, 300}, lookups: [][]int64{{4, 33}}, direct: true, exact: true, sums: 1},
	{name: "two lookups", table: []int64{37, 20}, lookups: [][]int64{{3, 5}, {7}}, exact: true, sums: 1},
	{name: "tied, two lookups", table: []int64{37, 300}, lookups: [][]int64{{4, 33}, {2, 9}}, direct: true, sums: 1},
	{name: "position bias, axis 1", table: []int64{3, 10}, axis: 1, lookups: [][]int64{{5, 5}}, exact: true},
	{name: "axis 1 of rank 3", table: []int64{2, 7, 5}, axis: 1, lookups: [][]int64{{4}}, exact: true},
	{name: "axis -1", table: []int64{4, 9}, axis: -1, lookups: [][]int64{{2, 3}}, exact: true},
	{name: "scalar index", table: []int64{1, 24}, lookups: [][]int64{{}}, exact: true},
	{name: "rank-1 table", table: []int64{11}, lookups: [][]int64{{6}}, exact: true},
	{name: "small llama", table: []int64{3241, 512}, lookups: [][]int64{{4, 128}}, exact: true},
}

// gatherShape is the shape of Gather(table, ids of shape idx; axis).
func (c scatterCase) gatherShape(idx []int64) []int64 {
	a := c.axisIndex()
	return slices.Concat(c.table[:a], idx, c.table[a+1:])
}

func (c scatterCase) axisIndex() int {
	if c.axis < 0 {
		return int(c.axis) + len(c.table)
	}
	return int(c.axis)
}

// build writes the graph: loss = Σ_k Σ r_k ⊙ Gather(table, ids_k) (+ Σ q ⊙
// 3·table), differentiated by package grad, output "dtable"; with fused,
// the gradient rewritten by FuseScatterAdd.
func (c scatterCase) build(t testing.TB, fused bool) graphFile {
	t.Helper()
	m := onnx.New("scatter", nil)
	g := m.Graph()
	g.AddInput("table", onnx.Float, dimsOf(c.table))
	var terms []string
	weighted := func(y, r string, shape []int64) {
		g.AddInput(r, onnx.Float, dimsOf(shape))
		terms = append(terms, g.Op("ReduceSum", []string{g.Op("Mul", []string{y, r}, r+".mul")}, r+".sum", onnx.AttrInt("keepdims", 0)))
	}
	for k, idx := range c.lookups {
		ids := fmt.Sprintf("ids%d", k)
		if len(idx) == 0 {
			// A scalar index (roberta's token type) is a constant: ORT's
			// Go binding feeds no rank-0 tensors.
			ids = g.ConstInt64(ids, nil, scalarIndex)
		} else {
			g.AddInput(ids, onnx.Int64, dimsOf(idx))
		}
		y := g.Op("Gather", []string{"table", ids}, fmt.Sprintf("y%d", k), onnx.AttrInt("axis", c.axis))
		weighted(y, fmt.Sprintf("r%d", k), c.gatherShape(idx))
	}
	if c.direct {
		weighted(g.Op("Mul", []string{"table", g.Const("three", nil, 3)}, "scaled"), "q", c.table)
	}
	loss := terms[0]
	for _, term := range terms[1:] {
		loss = g.Op("Add", []string{loss, term}, "loss.add")
	}
	loss = g.Op("Reshape", []string{loss, g.ConstInt64("one", []int64{1}, 1)}, "loss")
	g.AddOutput(loss, onnx.Float, onnx.Shape{onnx.D(1)})
	info, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	res, err := grad.Differentiate(m, info, loss, []string{"table"})
	if err != nil {
		t.Fatal(err)
	}
	g.RemoveOutput(loss)
	g.Node("Identity", []string{res.Grads["table"]}, []string{"dtable"}, "dtable")
	g.AddOutput("dtable", onnx.Float, dimsOf(c.table))
	if fused {
		info, err := shapes.Infer(m)
		if err != nil {
			t.Fatal(err)
		}
		scatters, sums := kernels.FuseScatterAdd(m, info)
		if scatters != len(c.lookups) || sums != c.sums {
			t.Fatalf("FuseScatterAdd rewrote %d scatters and %d sums, want %d and %d", scatters, sums, len(c.lookups), c.sums)
		}
	}
	return saveGraph(t, m)
}

// scalarIndex is the value of a scalar index.
const scalarIndex = -1

// scatterFeeds are random inputs: indices with repeats and negative ones
// (counting from the end), upstream gradients in [-1, 1).
type scatterFeeds struct {
	table []float32
	ids   [][]int64
	r     [][]float32
	q     []float32
}

func (c scatterCase) feeds(seed uint64) scatterFeeds {
	rng := rand.New(rand.NewPCG(seed, 7))
	v := c.table[c.axisIndex()]
	f := scatterFeeds{table: random(rng, numel(c.table), -1, 1), q: random(rng, numel(c.table), -1, 1)}
	for _, idx := range c.lookups {
		ids := make([]int64, numel(idx))
		for i := range ids {
			ids[i] = rng.Int64N(2*v) - v
		}
		if len(idx) == 0 {
			ids[0] = scalarIndex
		}
		f.ids = append(f.ids, ids)
		f.r = append(f.r, random(rng, numel(c.gatherShape(idx)), -1, 1))
	}
	return f
}

func (c scatterCase) run(t testing.TB, path, lib string, threads int, f scatterFeeds) []float32 {
	t.Helper()
	in := []feed{{"table", c.table, f.table}}
	for k, idx := range c.lookups {
		if len(idx) > 0 {
			in = append(in, feed{fmt.Sprintf("ids%d", k), idx, f.ids[k]})
		}
		in = append(in, feed{fmt.Sprintf("r%d", k), c.gatherShape(idx), f.r[k]})
	}
	if c.direct {
		in = append(in, feed{"q", c.table, f.q})
	}
	return runGraph(t, path, lib, threads, in...)[0]
}

// reference is d loss / d table in float64: each lookup's upstream rows
// added at their indices, plus 3q.
func (c scatterCase) reference(f scatterFeeds) []float64 {
	a := c.axisIndex()
	outer, inner, v := 1, 1, int(c.table[a])
	for _, d := range c.table[:a] {
		outer *= int(d)
	}
	for _, d := range c.table[a+1:] {
		inner *= int(d)
	}
	want := make([]float64, numel(c.table))
	if c.direct {
		for i, q := range f.q {
			want[i] = 3 * float64(q)
		}
	}
	for k, ids := range f.ids {
		n := len(ids)
		for o := range outer {
			for i, id := range ids {
				row := (int(id) + v) % v
				for j := range inner {
					want[(o*v+row)*inner+j] += float64(f.r[k][(o*n+i)*inner+j])
				}
			}
		}
	}
	return want
}

// The gradient of Gather through ai.migu.ScatterAddRows, with the Sum of
// a tied table's gradients folded in, against the standard-op graph (ORT's
// ScatterElements and Sum, one thread) and a float64 reference, for tables
// of rank 1 to 3, gathered along axis 0, 1 and -1 (t5's position bias:
// the transposes go too), scalar and matrix indices with repeats and
// negative ones, and the small llama's embedding: the fused graph gives
// the same bits on 1, 2 and 3 threads, and the standard graph's bits
// except where a Sum of three is chained (then equal to float32
// rounding). The rewritten graph holds no ScatterElements, and no Sum
// where one was folded.
func TestScatterAddRowsMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for i, c := range scatterCases {
		t.Run(c.name, func(t *testing.T) {
			std, fused := c.build(t, false), c.build(t, true)
			if std.nodes["ScatterElements"] != len(c.lookups) || std.nodes["ai.migu.ScatterAddRows"] != 0 {
				t.Fatalf("standard graph's nodes: %v", std.nodes)
			}
			if fused.nodes["ScatterElements"] != 0 || fused.nodes["ai.migu.ScatterAddRows"] != len(c.lookups) ||
				c.sums > 0 && fused.nodes["Sum"] != 0 || fused.nodes["ConstantOfShape"] != std.nodes["ConstantOfShape"]-len(c.lookups) ||
				c.axis != 0 && fused.nodes["Transpose"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			f := c.feeds(uint64(i + 1))
			want := c.run(t, std.path, "", 1, f)
			ref := c.reference(f)
			if err := closeTo64(want, ref, 1e-6); err != nil {
				t.Fatalf("standard graph against the float64 reference: %v", err)
			}
			one := c.run(t, fused.path, lib, 1, f)
			if err := closeTo64(one, ref, 1e-6); err != nil {
				t.Errorf("fused graph against the float64 reference: %v", err)
			}
			if c.exact {
				if at := firstDiff(one, want); at >= 0 {
					t.Errorf("fused [%d] = %.9g, standard %.9g", at, one[at], want[at])
				}
			}
			for _, threads := range []int{2, 3} {
				got := c.run(t, fused.path, lib, threads, f)
				if at := firstDiff(got, one); at >= 0 {
					t.Errorf("%d threads: [%d] = %.9g, on 1 thread %.9g", threads, at, got[at], one[at])
				}
			}
		})
	}
}

// firstDiff is the first index where a and b differ in their bits, or -1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// closeTo64 compares float32 results with a float64 reference, relative to
// the larger of 1 and the reference's largest magnitude.
func closeTo64(got []float32, want []float64, tol float64) error {
	w := make([]float32, len(want))
	scale := 1.0
	for i, v := range want {
		w[i] = float32(v)
		scale = math.Max(scale, math.Abs(v))
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if e := math.Abs(float64(got[i]) - want[i]); !(e <= tol*scale) {
			return fmt.Errorf("[%d] = %g, want %g (error %.3g > %.3g)", i, got[i], want[i], e, tol*scale)
		}
	}
	return nil
}

// An index outside the table fails the run with one line naming the op.
// (The Gather rule wraps negative indices once, and the kernel, as
// ScatterElements, once more: -11 reaches it as -6.)
func TestScatterAddRowsIndexOutOfRange(t *testing.T) {
	lib := withKernels(t)
	c := scatterCase{table: []int64{5, 3}, lookups: [][]int64{{2}}}
	path := c.build(t, true).path
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1, CustomOps: []string{lib}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, bad := range []int64{5, -11} {
		f := c.feeds(1)
		f.ids[0][1] = bad
		in := map[string]ort.Value{}
		for name, v := range map[string]any{"table": f.table, "ids0": f.ids[0], "r0": f.r[0]} {
			var val ort.Value
			switch x := v.(type) {
			case []float32:
				val, err = ort.NewTensor(x, int64(len(x)/3), 3)
			case []int64:
				val, err = ort.NewTensor(x, 2)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer val.Close()
			in[name] = val
		}
		_, err := s.Run(in)
		if err == nil || !strings.Contains(err.Error(), "ai.migu.ScatterAddRows: an index is out of the table's range") {
			t.Errorf("index %d: error %v", bad, err)
		}
	}
}

// BenchmarkScatterAdd runs the gradient of embedding lookups in standard
// operators (ScatterElements onto zeros, and Sum for a tied table) and
// through ScatterAddRows, at the shapes of the small presets `make bench`
// trains (batch 4 × 128): llama's [3241, 512] embedding; t5's shared
// [3408, 512] one, looked up by the encoder and the decoder and tied to
// the output projection (Σ q ⊙ 3·table stands in for its gradient); and a
// [8 heads, 32 buckets] position bias gathered along axis 1 by 128 × 128
// bucket ids. Outputs are bound in advance; CPU time per run is reported
// as in BenchmarkRMSNorm.
func BenchmarkScatterAdd(b *testing.B) {
	lib := withKernels(b)
	for _, c := range []scatterCase{
		{name: "llama embedding", table: []int64{3241, 512}, lookups: [][]int64{{4, 128}}},
		{name: "t5 tied", table: []int64{3408, 512}, lookups: [][]int64{{4, 128}, {4, 128}}, direct: true, sums: 1},
		{name: "t5 position bias", table: []int64{8, 32}, axis: 1, lookups: [][]int64{{128, 128}}},
	} {
		f := c.feeds(1)
		for _, threads := range []int{1, 2} {
			for _, fused := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/threads=%d/%s", c.name, threads, variant(fused)), func(b *testing.B) {
					in := map[string]ort.Value{"table": benchTensor(b, f.table, c.table...)}
					for k, idx := range c.lookups {
						in[fmt.Sprintf("ids%d", k)] = benchTensor(b, f.ids[k], idx...)
						in[fmt.Sprintf("r%d", k)] = benchTensor(b, f.r[k], c.gatherShape(idx)...)
					}
					if c.direct {
						in["q"] = benchTensor(b, f.q, c.table...)
					}
					out := map[string]ort.Value{"dtable": benchTensor(b, make([]float32, numel(c.table)), c.table...)}
					benchGraph(b, c.build(b, fused).path, lib, fused, threads, in, out)
				})
			}
		}
	}
}
