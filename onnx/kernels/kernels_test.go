package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

const eps = 1e-5

// withKernels starts ONNX Runtime and returns the kernel library, built
// when missing.
func withKernels(t testing.TB) string {
	t.Helper()
	lib := testenv.Kernels(t)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	return lib
}

// withBF16 starts ONNX Runtime and returns the bf16 library (MatMulBF16,
// MatMulF32), built when missing.
func withBF16(t testing.TB) string {
	t.Helper()
	lib := testenv.BF16(t)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	return lib
}

// fuser is a graph rewrite of package kernels.
type fuser func(*onnx.Model, kernels.Types) (int, error)

// graphFile is a saved test graph and the count of its nodes by op type
// ("domain.Op" for custom ops).
type graphFile struct {
	path  string
	nodes map[string]int
}

// wrt is an input of a test graph to differentiate, with its shape.
type wrt struct {
	name  string
	shape []int64
}

// withGradient rewrites m with fuse (unless nil; it must fuse exactly
// want subgraphs), adds d loss / d p as the output "d"+p.name after m's
// outputs for every p of params, drops the loss output (shape [1]) unless
// keepLoss, and saves the graph.
func withGradient(t testing.TB, m *onnx.Model, loss string, keepLoss bool, params []wrt, fuse fuser, want int) graphFile {
	t.Helper()
	g := m.Graph()
	if fuse != nil {
		info, err := shapes.Infer(m)
		if err != nil {
			t.Fatal(err)
		}
		n, err := fuse(m, info)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("fused %d subgraphs, want %d", n, want)
		}
	}
	info, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.name
	}
	res, err := grad.Differentiate(m, info, loss, names)
	if err != nil {
		t.Fatal(err)
	}
	if !keepLoss {
		g.RemoveOutput(loss)
	}
	for _, p := range params {
		g.Node("Identity", []string{res.Grads[p.name]}, []string{"d" + p.name}, "d"+p.name)
		g.AddOutput("d"+p.name, onnx.Float, dimsOf(p.shape))
	}
	return saveGraph(t, m)
}

// saveFusedPlain declares m's outputs "fused" and "plain" (a fused op
// and the standard ops it replaces), both of shape, imports domain and
// saves m (saveGraph); it returns the path.
func saveFusedPlain(t testing.TB, m *onnx.Model, domain string, shape []int64) string {
	t.Helper()
	for _, o := range []string{"fused", "plain"} {
		m.Graph().AddOutput(o, onnx.Float, dimsOf(shape))
	}
	m.SetOpset(domain, kernels.Opset)
	return saveGraph(t, m).path
}

// inferAndFuse infers m's types and applies a rewrite that needs them,
// returning its count.
func inferAndFuse(t testing.TB, m *onnx.Model, fuse func(*onnx.Model, kernels.Types) int) int {
	t.Helper()
	info, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	return fuse(m, info)
}

// sameOutputs runs a rewritten graph and the original on 2 threads with
// the kernel library lib and fails at the first output bit that differs.
func sameOutputs(t testing.TB, lib string, rewritten, original *onnx.Model, feeds ...feed) {
	t.Helper()
	got := runGraph(t, saveGraph(t, rewritten).path, lib, 2, feeds...)
	want := runGraph(t, saveGraph(t, original).path, lib, 2, feeds...)
	for i := range want {
		if j := firstDiff(got[i], want[i]); j >= 0 {
			t.Fatalf("output %d differs at %d after the rewrite", i, j)
		}
	}
}

// saveGraph sorts m's nodes, saves it in a temporary folder and counts its
// nodes by op type.
func saveGraph(t testing.TB, m *onnx.Model) graphFile {
	t.Helper()
	g := m.Graph()
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	out := graphFile{path: filepath.Join(t.TempDir(), "g.onnx"), nodes: map[string]int{}}
	for _, n := range g.P.Node {
		op := n.GetOpType()
		if n.GetDomain() != "" {
			op = n.GetDomain() + "." + op
		}
		out.nodes[op]++
	}
	if err := m.Save(out.path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// buildRMS is a float32 graph computing y = RMSNorm(x, w) in standard
// operators, exactly as exporters.Builder.RMSNorm writes it, a loss
// Σ y ⊙ r (r fixed, so every element gets its own upstream gradient), and
// the gradients of x and w. With fused, the norm is rewritten to the
// ai.migu kernels first. Outputs: y, dx, dw.
func buildRMS(t testing.TB, shape []int64, r []float32, fused bool) graphFile {
	t.Helper()
	d := shape[len(shape)-1]
	m := onnx.New("rms", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf(shape))
	g.AddInput("w", onnx.Float, onnx.Shape{onnx.D(d)})
	sq := g.Op("Mul", []string{"x", "x"}, "norm.sq")
	ms := g.Op("ReduceMean", []string{sq, g.ConstInt64("axes", []int64{1}, -1)}, "norm.ms", onnx.AttrInt("keepdims", 1))
	rs := g.Op("Sqrt", []string{g.Op("Add", []string{ms, g.Const("eps", nil, eps)}, "norm.var")}, "norm.rms")
	inv := g.Op("Reciprocal", []string{rs}, "norm.inv")
	y := g.Op("Mul", []string{g.Op("Mul", []string{"x", inv}, "norm.normed"), "w"}, "y")
	loss := weightedLoss(g, y, shape, r)
	g.AddOutput(y, onnx.Float, dimsOf(shape))
	return withGradient(t, m, loss, false, []wrt{{"x", shape}, {"w", []int64{d}}}, fusedBy(fused, kernels.FuseRMSNorm), 1)
}

// weightedLoss adds the loss Σ y ⊙ r over y of the given shape (r fixed,
// so every element gets its own upstream gradient) as an output of shape
// [1] and returns its name.
func weightedLoss(g *onnx.Graph, y string, shape []int64, r []float32) string {
	loss := g.Op("ReduceSum", []string{g.Op("Mul", []string{y, g.Const("r", shape, r...)}, "weighted")}, "loss", onnx.AttrInt("keepdims", 1))
	loss = g.Op("Reshape", []string{loss, g.ConstInt64("one", []int64{1}, 1)}, "loss1")
	g.AddOutput(loss, onnx.Float, onnx.Shape{onnx.D(1)})
	return loss
}

// fusedBy is f for the fused variant of a test graph and nil, no rewrite,
// for the standard-operator one.
func fusedBy(fused bool, f fuser) fuser {
	if fused {
		return f
	}
	return nil
}

func dimsOf(shape []int64) onnx.Shape {
	s := make(onnx.Shape, len(shape))
	for i, d := range shape {
		s[i] = onnx.D(d)
	}
	return s
}

// run runs a graph of buildRMS and returns y, dx, dw.
func run(t testing.TB, path string, lib string, threads int, shape []int64, x, w []float32) [][]float32 {
	t.Helper()
	return runGraph(t, path, lib, threads, feed{"x", shape, x}, feed{"w", shape[len(shape)-1:], w})
}

// feed is one input of a test graph: its name, shape and values (float32,
// or int64 for labels).
type feed struct {
	name  string
	shape []int64
	value any
}

// runGraph runs the graph at path on threads, with the kernel library lib
// ("" for none), and returns every output as float32.
func runGraph(t testing.TB, path, lib string, threads int, feeds ...feed) [][]float32 {
	t.Helper()
	res, err := runGraphErr(t, path, lib, threads, feeds...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// runGraphErr is runGraph that returns the session's or the run's error.
func runGraphErr(t testing.TB, path, lib string, threads int, feeds ...feed) ([][]float32, error) {
	t.Helper()
	opts := ort.SessionOptions{Threads: threads}
	if lib != "" {
		opts.CustomOps = []string{lib}
	}
	s, err := ort.NewSession(path, opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	in := map[string]ort.Value{}
	for _, f := range feeds {
		var v ort.Value
		switch x := f.value.(type) {
		case []float32:
			v, err = ort.NewTensor(x, f.shape...)
		case []int64:
			v, err = ort.NewTensor(x, f.shape...)
		default:
			t.Fatalf("input %s: values of type %T", f.name, f.value)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		in[f.name] = v
	}
	outs, err := s.Run(in)
	if err != nil {
		return nil, err
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = append([]float32(nil), o.(*ort.Tensor[float32]).Data()...)
		o.Close()
	}
	return res, nil
}

// inferTypes is shapes.Infer of m, which must succeed.
func inferTypes(t testing.TB, m *onnx.Model) kernels.Types {
	t.Helper()
	info, err := shapes.Infer(m)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func random(rng *rand.Rand, n int, lo, hi float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(lo + (hi-lo)*rng.Float64())
	}
	return v
}

func numel(shape []int64) int {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return n
}

var shapeCases = [][]int64{
	{2, 3, 8},     // one 8-lane block per row
	{1, 5, 13},    // a remainder after the lanes
	{3, 7, 64},    // several row blocks of 16 (21 rows)
	{2, 40, 576},  // SmolLM2's hidden size, 80 rows: several row and column blocks
	{37, 3},       // rank 2, d below the lane count
	{4, 1, 1, 33}, // rank 4
}

// The fused kernels against the standard-op formulation (ORT's own
// kernels and migu's gradient rules), forward and backward, on random
// inputs: equal to float32 rounding.
func TestRMSNormMatchesStandardOps(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range shapeCases {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(numel(shape)), 3))
			n, d := numel(shape), int(shape[len(shape)-1])
			x := random(rng, n, -2, 2)
			w := random(rng, d, 0.5, 1.5)
			r := random(rng, n, -1, 1)
			std := buildRMS(t, shape, r, false)
			fused := buildRMS(t, shape, r, true)
			if fused.nodes["ai.migu.RMSNorm"] != 1 || fused.nodes["ai.migu.RMSNormGrad"] != 1 || fused.nodes["Sqrt"] != 0 {
				t.Fatalf("fused graph's nodes: %v", fused.nodes)
			}
			if std.nodes["ai.migu.RMSNorm"] != 0 {
				t.Fatalf("standard graph holds fused nodes: %v", std.nodes)
			}
			want := run(t, std.path, "", 1, shape, x, w)
			for _, threads := range []int{1, 2} {
				got := run(t, fused.path, lib, threads, shape, x, w)
				for i, name := range []string{"y", "dx", "dw"} {
					if err := closeTo(got[i], want[i], 1e-5); err != nil {
						t.Errorf("%d threads: %s: %v", threads, name, err)
					}
				}
			}
		})
	}
}

// closeTo compares elementwise with a tolerance relative to the larger of
// 1 and the tensor's largest magnitude: sums of many float32 terms round
// differently in two summation orders by about that much.
func closeTo(got, want []float32, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	scale := 1.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	worst, at := 0.0, 0
	for i := range got {
		if e := math.Abs(float64(got[i]) - float64(want[i])); e > worst || math.IsNaN(e) {
			worst, at = e, i
		}
	}
	if !(worst <= tol*scale) {
		return fmt.Errorf("[%d] = %g, want %g (error %.3g > %.3g)", at, got[at], want[at], worst, tol*scale)
	}
	return nil
}

// refLoss is Σ r ⊙ RMSNorm(x, w) in float64, the reference the finite
// differences are taken on.
func refLoss(x, w, r []float64, d int) float64 {
	var loss float64
	for row := 0; row*d < len(x); row++ {
		xs := x[row*d : (row+1)*d]
		var ss float64
		for _, v := range xs {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for j, v := range xs {
			loss += r[row*d+j] * v * inv * w[j]
		}
	}
	return loss
}

// The fused backward kernel against central finite differences of a
// float64 reference: the kernel's float32 dX and dW must agree to float32
// precision, and its Y with the reference's forward.
func TestRMSNormGradFiniteDifferences(t *testing.T) {
	lib := withKernels(t)
	for _, shape := range [][]int64{{2, 3, 7}, {1, 2, 19}, {18, 4}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(numel(shape)), 11))
			n, d := numel(shape), int(shape[len(shape)-1])
			x32 := random(rng, n, -2, 2)
			w32 := random(rng, d, 0.5, 1.5)
			r32 := random(rng, n, -1, 1)
			fused := buildRMS(t, shape, r32, true)
			got := run(t, fused.path, lib, 2, shape, x32, w32)
			x, w, r := widen(x32), widen(w32), widen(r32)
			// Forward: y = ∂loss/∂r, which is what refLoss weights.
			for i := range x {
				row, j := i/d, i%d
				var ss float64
				for _, v := range x[row*d : (row+1)*d] {
					ss += v * v
				}
				y := x[i] / math.Sqrt(ss/float64(d)+eps) * w[j]
				if e := math.Abs(float64(got[0][i]) - y); e > 1e-6*math.Max(1, math.Abs(y)) {
					t.Fatalf("y[%d] = %g, float64 reference %g", i, got[0][i], y)
				}
			}
			loss := func() float64 { return refLoss(x, w, r, d) }
			checkFiniteDifferences(t, "x", x, got[1], loss, 2e-5)
			checkFiniteDifferences(t, "w", w, got[2], loss, 2e-5)
		})
	}
}

// checkFiniteDifferences compares a kernel's gradient g of the loss with
// respect to v against central differences (step 1e-6) of loss, a float64
// reference that reads v: every element within tol of max(1, |fd|).
func checkFiniteDifferences(t *testing.T, name string, v []float64, g []float32, loss func() float64, tol float64) {
	t.Helper()
	const h = 1e-6
	for i := range v {
		orig := v[i]
		v[i] = orig + h
		up := loss()
		v[i] = orig - h
		down := loss()
		v[i] = orig
		fd := (up - down) / (2 * h)
		if e := math.Abs(float64(g[i]) - fd); !(e <= tol*math.Max(1, math.Abs(fd))) {
			t.Fatalf("d loss/d %s[%d]: fused kernel %.9g, finite differences %.9g (error %.2g)", name, i, g[i], fd, e)
		}
	}
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestResolve(t *testing.T) {
	for _, c := range []struct {
		setting, want string
		err           bool
	}{
		{setting: "off"},
		{setting: "OFF"},
		{setting: "0"},
		{setting: filepath.Join(t.TempDir(), "missing.so"), err: true},
	} {
		got, err := kernels.Resolve(c.setting)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q, error %v", c.setting, got, err, c.want, c.err)
		}
	}
}
