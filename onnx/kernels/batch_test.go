package kernels_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
	"google.golang.org/protobuf/proto"
)

// batchCase is one BatchMatMul: 4-D operands of shapes a and b, read
// through permA and permB, the product written through permY.
type batchCase struct {
	name                string
	a, b                []int64
	permA, permB, permY []int64
}

// batchCases are attention's products as the t5 and llama training
// graphs hold them (token-major [batch, tokens, heads, dim] operands read
// head-major), edges where the heads do not divide into blocks, and
// broadcast batch axes.
var batchCases = []batchCase{
	{"scores q·kᵀ from token-major q, k", []int64{2, 9, 3, 8}, []int64{2, 9, 3, 8}, []int64{0, 2, 1, 3}, []int64{0, 2, 3, 1}, nil},
	{"context p·v into token-major", []int64{2, 3, 9, 9}, []int64{2, 9, 3, 8}, nil, []int64{0, 2, 1, 3}, []int64{0, 2, 1, 3}},
	{"cross-attention, 7 keys", []int64{3, 5, 5, 4}, []int64{3, 7, 5, 4}, []int64{0, 2, 1, 3}, []int64{0, 2, 3, 1}, nil},
	{"gradient of k: dsᵀ·q into [b, t, h, d]", []int64{2, 3, 9, 9}, []int64{2, 9, 3, 8}, []int64{0, 1, 3, 2}, []int64{0, 2, 1, 3}, []int64{0, 2, 1, 3}},
	{"gradient of p: dctx·vᵀ", []int64{2, 9, 3, 8}, []int64{2, 9, 3, 8}, []int64{0, 2, 1, 3}, []int64{0, 2, 3, 1}, nil},
	{"dense, 1 batch, 5 heads", []int64{1, 5, 6, 16}, []int64{1, 5, 16, 3}, nil, nil, nil},
	{"every axis moved", []int64{4, 6, 2, 3}, []int64{6, 3, 2, 5}, []int64{3, 2, 0, 1}, []int64{1, 2, 0, 3}, []int64{3, 1, 0, 2}},
	{"broadcast heads of b", []int64{2, 4, 5, 6}, []int64{2, 1, 6, 3}, nil, nil, nil},
	{"broadcast batch of a", []int64{1, 4, 5, 6}, []int64{3, 4, 6, 2}, nil, nil, nil},
	{"K 0", []int64{2, 3, 4, 0}, []int64{2, 3, 0, 5}, nil, nil, nil},
}

// outShape is the shape of c's product.
func (c batchCase) outShape() []int64 {
	pa, pb, py := identityIfNil(c.permA), identityIfNil(c.permB), identityIfNil(c.permY)
	prod := []int64{max(c.a[pa[0]], c.b[pb[0]]), max(c.a[pa[1]], c.b[pb[1]]), c.a[pa[2]], c.b[pb[3]]}
	out := make([]int64, 4)
	for i, p := range py {
		out[i] = prod[p]
	}
	return out
}

func identityIfNil(p []int64) []int64 {
	if p == nil {
		return []int64{0, 1, 2, 3}
	}
	return p
}

// saveBatch writes c as one BatchMatMul (fused) or as standard
// Transposes around a MatMul, and returns its path.
func (c batchCase) saveBatch(t testing.TB, fused, bf16 bool) string {
	t.Helper()
	m := onnx.New("batch", nil)
	g := m.Graph()
	g.AddInput("a", onnx.Float, dimsOf(c.a))
	g.AddInput("b", onnx.Float, dimsOf(c.b))
	pa, pb, py := identityIfNil(c.permA), identityIfNil(c.permB), identityIfNil(c.permY)
	if fused {
		attrs := []onnx.Attr{onnx.AttrInts("permA", pa...), onnx.AttrInts("permB", pb...), onnx.AttrInts("permY", py...)}
		if bf16 {
			attrs = append(attrs, onnx.AttrInt("bf16", 1))
		}
		g.Node("BatchMatMul", []string{"a", "b"}, []string{"y"}, "y", attrs...)
		g.P.Node[len(g.P.Node)-1].Domain = proto.String(onnx.DomainMiguBF16)
		m.SetOpset(onnx.DomainMiguBF16, kernels.Opset)
	} else {
		at := g.Op("Transpose", []string{"a"}, "at", onnx.AttrInts("perm", pa...))
		bt := g.Op("Transpose", []string{"b"}, "bt", onnx.AttrInts("perm", pb...))
		p := g.Op("MatMul", []string{at, bt}, "p")
		g.Node("Transpose", []string{p}, []string{"y"}, "y", onnx.AttrInts("perm", py...))
	}
	g.AddOutput("y", onnx.Float, nil)
	path := filepath.Join(t.TempDir(), "batch.onnx")
	if err := m.Save(path, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// BatchMatMul computes what Transposes around a MatMul compute: on
// Gaussian operands, within float32 accumulation's worst-case bound
// (2·k·u·Σ|ab|, the two products' errors) of ORT's standard graph, where
// Σ|ab| is the standard graph run on |a| and |b|; the same bits on 1 and
// 2 threads. With bf16 1, on both paths, it is that near the standard
// graph run on the bf16-rounded operands.
func TestBatchMatMul(t *testing.T) {
	lib := withBF16(t)
	for i, c := range batchCases {
		for _, bf16 := range []bool{false, true} {
			paths := []string{""}
			if bf16 {
				paths = bf16Paths
			}
			for _, bf16Path := range paths {
				name := c.name
				if bf16 {
					name += "/bf16 " + bf16Path
				}
				t.Run(name, func(t *testing.T) {
					if bf16Path != "" {
						t.Setenv("MIGU_BF16_PATH", bf16Path)
					}
					rng := rand.New(rand.NewPCG(uint64(i), 41))
					a, b := gaussian(rng, numel(c.a)), gaussian(rng, numel(c.b))
					k := c.a[identityIfNil(c.permA)[3]]
					fused := c.saveBatch(t, true, bf16)
					got := runGraph(t, fused, lib, 2, feed{"a", c.a, a}, feed{"b", c.b, b})[0]
					if one := runGraph(t, fused, lib, 1, feed{"a", c.a, a}, feed{"b", c.b, b})[0]; !slices.Equal(one, got) {
						t.Fatal("1 and 2 threads give different bits: the blocks depend on the threads")
					}
					if bf16 {
						a, b = roundedBF16(a), roundedBF16(b)
					}
					std := c.saveBatch(t, false, false)
					want := runGraph(t, std, "", 2, feed{"a", c.a, a}, feed{"b", c.b, b})[0]
					scale := runGraph(t, std, "", 2, feed{"a", c.a, absAll(a)}, feed{"b", c.b, absAll(b)})[0]
					if len(got) != len(want) {
						t.Fatalf("%d values, want %d", len(got), len(want))
					}
					for j := range got {
						bound := 2 * float64(k) * u * float64(scale[j])
						if e := math.Abs(float64(got[j] - want[j])); e > bound {
							t.Fatalf("y[%d] = %g, standard graph %g: apart by %.3g, above 2·k·u·Σ|ab| = %.3g", j, got[j], want[j], e, bound)
						}
					}
				})
			}
		}
	}
}

// BatchMatMul refuses operands it cannot multiply with one line naming
// the op, and bad perms when the session is made.
func TestBatchMatMulRefuses(t *testing.T) {
	lib := withBF16(t)
	cases := []struct {
		name string
		c    batchCase
		want string
	}{
		{"inner dimensions", batchCase{a: []int64{1, 2, 3, 4}, b: []int64{1, 2, 5, 6}}, "ai.migu.bf16.BatchMatMul: the inner dimensions of op(A) and op(B) differ"},
		{"batch dimensions", batchCase{a: []int64{1, 2, 3, 4}, b: []int64{1, 3, 4, 6}}, "ai.migu.bf16.BatchMatMul: the batch dimensions of op(A) and op(B) differ"},
		{"rank", batchCase{a: []int64{2, 3, 4}, b: []int64{1, 2, 4, 6}}, "ai.migu.bf16.BatchMatMul: A and B must be 4-D"},
		{"perm", batchCase{a: []int64{1, 2, 3, 4}, b: []int64{1, 2, 4, 6}, permA: []int64{0, 1, 1, 3}}, "ai.migu.bf16.BatchMatMul: permA must be a permutation of 0, 1, 2, 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.c.saveBatch(t, true, false)
			_, err := runGraphErr(t, path, lib, 1, feed{"a", c.c.a, make([]float32, numel(c.c.a))}, feed{"b", c.c.b, make([]float32, numel(c.c.b))})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func roundedBF16(v []float32) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = half.BF16ToF32(half.F32ToBF16(x))
	}
	return r
}

func absAll(v []float32) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = float32(math.Abs(float64(x)))
	}
	return r
}

// attentionGraph is one attention block in standard operators with its
// backward products as onnx/grad writes them: token-major q, k, v
// [batch, tokens, heads, dim] moved head-major by Transposes, the scores,
// a softmax, the context moved back, and the gradients of q, k and v
// from an upstream gradient g of the context, each through Transposes of
// Transposes.
func attentionGraph() *onnx.Model {
	m := onnx.New("attention", nil)
	g := m.Graph()
	shape := onnx.Shape{onnx.Sym("batch"), onnx.Sym("tokens"), onnx.D(3), onnx.D(8)}
	for _, in := range []string{"q", "k", "v", "g"} {
		g.AddInput(in, onnx.Float, shape)
	}
	heads := onnx.AttrInts("perm", 0, 2, 1, 3)
	swap := onnx.AttrInts("perm", 0, 1, 3, 2)
	qt := g.Op("Transpose", []string{"q"}, "q.t", heads)
	kt := g.Op("Transpose", []string{"k"}, "k.t", onnx.AttrInts("perm", 0, 2, 3, 1))
	vt := g.Op("Transpose", []string{"v"}, "v.t", heads)
	s := g.Op("MatMul", []string{qt, kt}, "scores")
	p := g.Op("Softmax", []string{s}, "probs", onnx.AttrInt("axis", -1))
	ctx := g.Op("MatMul", []string{p, vt}, "ctx")
	g.Node("Transpose", []string{ctx}, []string{"out"}, "out", heads)
	// Backward: dctx = g head-major; dv = pᵀ·dctx; dp = dctx·vᵀ;
	// dq = dp·k (k = (kᵀ)ᵀ); dk = (qᵀ·dp)ᵀ.
	gt := g.Op("Transpose", []string{"g"}, "g.t", heads)
	pT := g.Op("Transpose", []string{p}, "p.T", swap)
	dvt := g.Op("MatMul", []string{pT, gt}, "dv.t")
	g.Node("Transpose", []string{dvt}, []string{"dv"}, "dv", heads)
	vT := g.Op("Transpose", []string{vt}, "v.t.T", swap)
	dp := g.Op("MatMul", []string{gt, vT}, "dp")
	kT := g.Op("Transpose", []string{kt}, "k.t.T", swap)
	dqt := g.Op("MatMul", []string{dp, kT}, "dq.t")
	g.Node("Transpose", []string{dqt}, []string{"dq"}, "dq", heads)
	qT := g.Op("Transpose", []string{qt}, "q.t.T", swap)
	dkt := g.Op("MatMul", []string{qT, dp}, "dk.t")
	g.Node("Transpose", []string{dkt}, []string{"dk"}, "dk", onnx.AttrInts("perm", 0, 3, 1, 2))
	for _, o := range []string{"out", "dv", "dq", "dk", "probs"} {
		g.AddOutput(o, onnx.Float, nil)
	}
	return m
}

// RewriteBatch folds every Transpose of the attention block into its six
// products (the softmax still reads its scores), keeps the outputs' names
// and values (float32 sums' bound), and leaves products of other ranks
// alone.
func TestRewriteBatch(t *testing.T) {
	lib := withBF16(t)
	m := attentionGraph()
	dir := t.TempDir()
	std := filepath.Join(dir, "std.onnx")
	if err := m.Save(std, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	types := inferTypes(t, m)
	if n := kernels.RewriteBatch(m, types, false); n != 6 {
		t.Fatalf("rewrote %d products, want 6", n)
	}
	ops := map[string]int{}
	for _, n := range m.Graph().P.Node {
		ops[n.GetOpType()]++
	}
	if ops["Transpose"] != 0 || ops["MatMul"] != 0 || ops["BatchMatMul"] != 6 {
		t.Fatalf("nodes by op after the rewrite: %v; want 6 BatchMatMul and no Transpose or MatMul", ops)
	}
	fused := filepath.Join(dir, "fused.onnx")
	if err := m.Save(fused, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	shape := []int64{2, 5, 3, 8}
	var feeds []feed
	for _, in := range []string{"q", "k", "v", "g"} {
		feeds = append(feeds, feed{in, shape, gaussian(rng, numel(shape))})
	}
	want := runGraph(t, std, "", 2, feeds...)
	got := runGraph(t, fused, lib, 2, feeds...)
	for o, name := range []string{"out", "dv", "dq", "dk", "probs"} {
		if len(got[o]) != len(want[o]) {
			t.Fatalf("%s: %d values, want %d", name, len(got[o]), len(want[o]))
		}
		for j := range got[o] {
			if d := math.Abs(float64(got[o][j] - want[o][j])); d > 1e-5*(1+math.Abs(float64(want[o][j]))) {
				t.Fatalf("%s[%d] = %g, standard graph %g", name, j, got[o][j], want[o][j])
			}
		}
	}

	// 3-D products, a MatMul reading a rank-4 Transpose that another
	// node reads too (the Transpose stays for it), and one reading a
	// Transpose that moves the contiguous axis to the batch (it stays:
	// oneDNN would multiply that with its reference code).
	m = onnx.New("others", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, dimsOf([]int64{2, 3, 4}))
	g.AddInput("w", onnx.Float, dimsOf([]int64{2, 4, 5}))
	g.AddInput("a", onnx.Float, dimsOf([]int64{1, 2, 3, 4}))
	g.AddInput("c", onnx.Float, dimsOf([]int64{3, 4, 1, 2}))
	g.AddOutput(g.Op("MatMul", []string{"x", "w"}, "three"), onnx.Float, nil)
	at := g.Op("Transpose", []string{"a"}, "a.t", onnx.AttrInts("perm", 0, 1, 3, 2))
	g.AddOutput(g.Op("MatMul", []string{at, "a"}, "gram"), onnx.Float, nil)
	g.AddOutput(g.Op("Relu", []string{at}, "relu"), onnx.Float, nil)
	ct := g.Op("Transpose", []string{"c"}, "c.t", onnx.AttrInts("perm", 2, 3, 0, 1))
	g.AddOutput(g.Op("MatMul", []string{ct, at}, "batched"), onnx.Float, nil)
	if n := kernels.RewriteBatch(m, inferTypes(t, m), true); n != 2 {
		t.Fatalf("rewrote %d products, want 2 (the 4-D ones)", n)
	}
	var kept []string
	for _, n := range g.P.Node {
		kept = append(kept, n.GetOpType())
		want := []int64{0, 1, 3, 2}
		if n.GetName() == "batched/MatMul" {
			want = []int64{0, 1, 2, 3}
		}
		if n.GetOpType() == "BatchMatMul" && (onnx.AttrIntOr(n, "bf16", 0) != 1 || !slices.Equal(attrInts(n, "permA"), want)) {
			t.Errorf("%s's attributes: %v; want bf16 1 and permA %v", n.GetName(), n.Attribute, want)
		}
	}
	if !slices.Equal(kept, []string{"MatMul", "Transpose", "BatchMatMul", "Relu", "Transpose", "BatchMatMul"}) {
		t.Fatalf("nodes %v, want the 3-D MatMul, the Transpose the Relu reads, BatchMatMul, Relu, the batch-moving Transpose, BatchMatMul", kept)
	}
}

// scaledAttention is attentionGraph's block with its queries scaled
// after the head Transpose, as exporters.Builder.Attend scales them, and
// the scaling's gradient as onnx/grad writes it: the scores and the key
// gradient read the scaled queries, the query gradient is scaled back.
func scaledAttention(scale float32) *onnx.Model {
	m := onnx.New("scaled", nil)
	g := m.Graph()
	shape := onnx.Shape{onnx.Sym("batch"), onnx.Sym("tokens"), onnx.D(3), onnx.D(8)}
	for _, in := range []string{"q", "k", "dp"} {
		if in == "dp" {
			shape = onnx.Shape{onnx.Sym("batch"), onnx.D(3), onnx.Sym("tokens"), onnx.Sym("tokens")}
		}
		g.AddInput(in, onnx.Float, shape)
	}
	heads := onnx.AttrInts("perm", 0, 2, 1, 3)
	swap := onnx.AttrInts("perm", 0, 1, 3, 2)
	c := g.Const("scale", nil, scale)
	qs := g.Op("Mul", []string{g.Op("Transpose", []string{"q"}, "q.t", heads), c}, "qscaled")
	kt := g.Op("Transpose", []string{"k"}, "k.t", onnx.AttrInts("perm", 0, 2, 3, 1))
	g.Node("MatMul", []string{qs, kt}, []string{"scores"}, "scores")
	dqs := g.Op("MatMul", []string{"dp", g.Op("Transpose", []string{kt}, "k.t.T", swap)}, "dqs")
	g.Node("Transpose", []string{g.Op("Mul", []string{dqs, c}, "dq.t")}, []string{"dq"}, "dq", heads)
	dkt := g.Op("MatMul", []string{g.Op("Transpose", []string{qs}, "qs.T", swap), "dp"}, "dk.t")
	g.Node("Transpose", []string{dkt}, []string{"dk"}, "dk", onnx.AttrInts("perm", 0, 3, 1, 2))
	for _, o := range []string{"scores", "dq", "dk"} {
		g.AddOutput(o, onnx.Float, nil)
	}
	return m
}

// RewriteBatch folds a power-of-two scaling of the queries (1/sqrt(64))
// into alpha of the three products it touches — the scores and the key
// gradient reading the scaled queries, the query gradient scaled after
// its product — and with it the Transposes on either side, within the
// float32 sums' bound of the standard graph; a scale that is no power of
// two keeps its Muls, and the Transposes those read.
func TestRewriteBatchFoldsScale(t *testing.T) {
	lib := withBF16(t)
	rng := rand.New(rand.NewPCG(8, 8))
	feeds := []feed{{"q", []int64{2, 5, 3, 8}, gaussian(rng, 240)}, {"k", []int64{2, 5, 3, 8}, gaussian(rng, 240)},
		{"dp", []int64{2, 3, 5, 5}, gaussian(rng, 150)}}
	for _, c := range []struct {
		scale          float32
		muls, alphas   int
		wantTransposes bool
	}{{0.125, 0, 3, false}, {0.3, 2, 0, true}} {
		m := scaledAttention(c.scale)
		dir := t.TempDir()
		std := filepath.Join(dir, "std.onnx")
		if err := m.Save(std, onnx.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if n := kernels.RewriteBatch(m, inferTypes(t, m), false); n != 3 {
			t.Fatalf("scale %g: rewrote %d products, want 3", c.scale, n)
		}
		ops, alphas := map[string]int{}, 0
		for _, n := range m.Graph().P.Node {
			ops[n.GetOpType()]++
			if a := onnx.AttrFloatOr(n, "alpha", 1); a != 1 {
				if a != c.scale {
					t.Fatalf("scale %g: %s has alpha %g", c.scale, n.GetName(), a)
				}
				alphas++
			}
		}
		if ops["Mul"] != c.muls || alphas != c.alphas || (ops["Transpose"] > 0) != c.wantTransposes {
			t.Fatalf("scale %g: nodes %v, %d with alpha; want %d Muls, %d alphas, Transposes %v", c.scale, ops, alphas, c.muls, c.alphas, c.wantTransposes)
		}
		fused := filepath.Join(dir, "fused.onnx")
		if err := m.Save(fused, onnx.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		want, got := runGraph(t, std, "", 2, feeds...), runGraph(t, fused, lib, 2, feeds...)
		for o, name := range []string{"scores", "dq", "dk"} {
			for j := range got[o] {
				if d := math.Abs(float64(got[o][j] - want[o][j])); d > 1e-5*(1+math.Abs(float64(want[o][j]))) {
					t.Fatalf("scale %g: %s[%d] = %g, standard graph %g", c.scale, name, j, got[o][j], want[o][j])
				}
			}
		}
	}
}

func attrInts(n *onnxpb.NodeProto, name string) []int64 {
	if a := onnx.GetAttr(n, name); a != nil {
		return a.Ints
	}
	return nil
}

// BenchmarkBatchMatMul runs attention's products at the small t5
// preset's shapes (4 sequences of 128 tokens, 8 heads of 64) on 2
// threads: mlas, the standard Transposes around ORT's MatMul (which ORT's
// optimizer may fold into FusedMatMul where it can); onednn, BatchMatMul
// in float32; bf16, BatchMatMul with bf16 1 on the CPU's own path.
func BenchmarkBatchMatMul(b *testing.B) {
	lib := withBF16(b)
	const batch, tokens, heads, dim = 4, 128, 8, 64
	tok := []int64{batch, tokens, heads, dim}
	sq := []int64{batch, heads, tokens, tokens}
	cases := []batchCase{
		{"scores", tok, tok, []int64{0, 2, 1, 3}, []int64{0, 2, 3, 1}, nil},
		{"context", sq, tok, nil, []int64{0, 2, 1, 3}, []int64{0, 2, 1, 3}},
		{"key-gradient", tok, sq, []int64{0, 2, 3, 1}, nil, []int64{0, 3, 1, 2}},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range cases {
		for _, variant := range []string{"mlas", "onednn", "bf16"} {
			b.Run(c.name+"/"+variant, func(b *testing.B) {
				path := c.saveBatch(b, variant != "mlas", variant == "bf16")
				opts := ort.SessionOptions{Threads: 2}
				if variant != "mlas" {
					opts.CustomOps = []string{lib}
				}
				s, err := ort.NewSession(path, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				av, err := ort.NewTensor(gaussian(rng, numel(c.a)), c.a...)
				if err != nil {
					b.Fatal(err)
				}
				defer av.Close()
				bv, err := ort.NewTensor(gaussian(rng, numel(c.b)), c.b...)
				if err != nil {
					b.Fatal(err)
				}
				defer bv.Close()
				testenv.TimeRuns(b, bindProduct(b, s, av, bv, c.outShape()).Run)
				k := c.a[identityIfNil(c.permA)[3]]
				flops := 2 * float64(batch*heads) * float64(numel(c.a)/(batch*heads)) * float64(numel(c.b)/(batch*heads)) / float64(k)
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
