package shapes

import (
	"strings"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// tgraph builds small test graphs.
type tgraph struct {
	m *onnx.Model
	g *onnx.Graph
}

func newTGraph(opset int64) *tgraph {
	m := onnx.New("t", map[string]int64{"": opset})
	return &tgraph{m: m, g: m.Graph()}
}

// input declares a graph input; dims are int (fixed), string (a dim param)
// or nil (unknown); noRank declares no shape at all.
func (t *tgraph) input(name string, dt onnx.DType, dims ...any) {
	shape := onnx.Shape{}
	for _, d := range dims {
		switch v := d.(type) {
		case int:
			shape = append(shape, onnx.D(int64(v)))
		case string:
			shape = append(shape, onnx.Sym(v))
		default:
			shape = append(shape, onnx.Dim{})
		}
	}
	t.g.AddInput(name, dt, shape)
}

func (t *tgraph) noRank(name string, dt onnx.DType) { t.g.AddInput(name, dt, nil) }

// ints adds a 1-D int64 initializer, scalar a 0-D one.
func (t *tgraph) ints(name string, v ...int64) {
	t.g.AddInitializer(onnx.Int64Tensor(name, []int64{int64(len(v))}, v))
}

func (t *tgraph) scalar(name string, v int64) {
	t.g.AddInitializer(onnx.Int64Tensor(name, nil, []int64{v}))
}

// op adds a node named after its first output; inputs and outputs are
// space-separated, "_" standing for an absent optional input.
func (t *tgraph) op(op, ins, outs string, attrs ...onnx.Attr) {
	in := strings.Fields(ins)
	for i, s := range in {
		if s == "_" {
			in[i] = ""
		}
	}
	out := strings.Fields(outs)
	t.g.AddNode(&onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String("n_" + out[0]), Input: in, Output: out, Attribute: attrs})
}

// shapeCase is one inference scenario. want maps a value to "dtype
// [dims]" and vals to "[contents]"; "?" matches a fresh unk_ symbol. err,
// when set, is a substring the error must contain (with the failing node's
// name).
type shapeCase struct {
	name  string
	opset int64
	build func(t *tgraph)
	want  map[string]string
	vals  map[string]string
	same  [][2]string
	err   string
}

func runShapeCases(t *testing.T, cases []shapeCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opset := c.opset
			if opset == 0 {
				opset = 18
			}
			tg := newTGraph(opset)
			c.build(tg)
			info, err := Infer(tg.m)
			if c.err != "" {
				if err == nil {
					t.Fatalf("no error, want one containing %q", c.err)
				}
				if !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "n_") || strings.Contains(err.Error(), "internal error") {
					t.Fatalf("error %q, want one naming the node and containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range c.want {
				dt, shape, ok := info.Type(name)
				if !ok {
					t.Errorf("%s: not inferred", name)
					continue
				}
				if got := dt.String() + " " + shape.String(); !dimsMatch(got, want) {
					t.Errorf("%s: %s, want %s", name, got, want)
				}
			}
			for name, want := range c.vals {
				v, ok := info.Values(name)
				if !ok {
					t.Errorf("%s: no contents, want %s", name, want)
					continue
				}
				if got := onnx.Shape(v).String(); !dimsMatch(got, want) {
					t.Errorf("%s: contents %s, want %s", name, got, want)
				}
			}
			for _, p := range c.same {
				if !info.SameShape(p[0], p[1]) {
					t.Errorf("%s and %s are not inferred to have the same shape", p[0], p[1])
				}
			}
		})
	}
}

// dimsMatch compares printed shapes, "?" in want matching any fresh atom.
func dimsMatch(got, want string) bool {
	g := strings.FieldsFunc(got, isShapeSep)
	w := strings.FieldsFunc(want, isShapeSep)
	if len(g) != len(w) || strings.Count(got, "[") != strings.Count(want, "[") {
		return false
	}
	for i := range g {
		if g[i] != w[i] && !(w[i] == "?" && strings.HasPrefix(g[i], "unk_") && plainAtom(g[i])) {
			return false
		}
	}
	return true
}

func isShapeSep(r rune) bool { return r == ' ' || r == ',' || r == '[' || r == ']' }

func TestShapeBroadcast(t *testing.T) {
	bin := func(a, b []any) func(t *tgraph) {
		return func(t *tgraph) {
			t.input("a", onnx.Float, a...)
			t.input("b", onnx.Float, b...)
			t.op("Add", "a b", "y")
		}
	}
	runShapeCases(t, []shapeCase{
		{name: "bias", build: bin([]any{"batch", "seq", 64}, []any{64}), want: map[string]string{"y": "float32 [batch, seq, 64]"}},
		{name: "one against symbol", build: bin([]any{"batch", 1, "seq"}, []any{"batch", "seq", 1}), want: map[string]string{"y": "float32 [batch, seq, seq]"}},
		{name: "scalar", build: bin([]any{}, []any{"n", 3}), want: map[string]string{"y": "float32 [n, 3]"}},
		{name: "constant against symbol", build: bin([]any{4}, []any{"n"}), want: map[string]string{"y": "float32 [4]"}},
		{name: "symbol against constant", build: bin([]any{"n", 2}, []any{5, 1}), want: map[string]string{"y": "float32 [5, 2]"}},
		{name: "zero against symbol", build: bin([]any{0}, []any{"n"}), want: map[string]string{"y": "float32 [0]"}},
		{name: "same symbol", build: bin([]any{"n"}, []any{"n"}), want: map[string]string{"y": "float32 [n]"}, same: [][2]string{{"a", "y"}, {"b", "y"}}},
		{name: "different symbols", build: bin([]any{"n"}, []any{"m"}), want: map[string]string{"y": "float32 [?]"}},
		{name: "unknown input dims are distinct", build: bin([]any{nil}, []any{nil}), want: map[string]string{"y": "float32 [?]"}},
		{name: "rank extension", build: bin([]any{"b", 1, 1, "s"}, []any{"s", 1}), want: map[string]string{"y": "float32 [b, 1, s, s]"}},
		{name: "constants differ", build: bin([]any{3}, []any{4}), err: "do not broadcast"},
		{name: "dtypes differ", build: func(t *tgraph) {
			t.input("a", onnx.Float, 2)
			t.input("b", onnx.Int64, 2)
			t.op("Mul", "a b", "y")
		}, err: "different element types"},
		{name: "comparisons and logic", build: func(t *tgraph) {
			t.input("a", onnx.Int64, "b", "s")
			t.input("c", onnx.Int64, 1, "s")
			t.op("Less", "a c", "lt")
			t.op("Not", "lt", "nlt")
			t.op("Or", "lt nlt", "or")
			t.op("Where", "or a c", "w")
			t.op("Max", "a c a", "mx")
			t.op("Pow", "a c", "p")
		}, want: map[string]string{"lt": "bool [b, s]", "nlt": "bool [b, s]", "or": "bool [b, s]", "w": "int64 [b, s]", "mx": "int64 [b, s]", "p": "int64 [b, s]"}},
		{name: "Where needs a bool condition", build: func(t *tgraph) {
			t.input("a", onnx.Float, 2)
			t.op("Where", "a a a", "w")
		}, err: "not bool"},
	})
}

func TestShapeMatMulFamily(t *testing.T) {
	mm := func(a, b []any) func(t *tgraph) {
		return func(t *tgraph) {
			t.input("a", onnx.Float, a...)
			t.input("b", onnx.Float, b...)
			t.op("MatMul", "a b", "y")
		}
	}
	runShapeCases(t, []shapeCase{
		{name: "linear", build: mm([]any{"batch", "seq", 64}, []any{64, 32}), want: map[string]string{"y": "float32 [batch, seq, 32]"}},
		{name: "attention scores", build: mm([]any{"b", 4, "s", 16}, []any{"b", 4, 16, "s"}), want: map[string]string{"y": "float32 [b, 4, s, s]"}},
		{name: "batch broadcast", build: mm([]any{"b", 2, 2, "s", 16}, []any{"b", 2, 1, 16, "t"}), want: map[string]string{"y": "float32 [b, 2, 2, s, t]"}},
		{name: "vector times matrix", build: mm([]any{8}, []any{"b", 8, 3}), want: map[string]string{"y": "float32 [b, 3]"}},
		{name: "matrix times vector", build: mm([]any{"b", 5, 8}, []any{8}), want: map[string]string{"y": "float32 [b, 5]"}},
		{name: "dot", build: mm([]any{8}, []any{8}), want: map[string]string{"y": "float32 []"}},
		{name: "inner dims differ", build: mm([]any{2, 3}, []any{4, 5}), err: "inner dims"},
		{name: "scalar", build: mm([]any{}, []any{4, 5}), err: "scalar"},
		{name: "gemm", build: func(t *tgraph) {
			t.input("a", onnx.Float, 16, "n")
			t.input("b", onnx.Float, 8, 16)
			t.input("c", onnx.Float, 8)
			t.op("Gemm", "a b c", "y", onnx.AttrInt("transA", 1), onnx.AttrInt("transB", 1))
		}, want: map[string]string{"y": "float32 [n, 8]"}},
		{name: "gemm rank", build: func(t *tgraph) {
			t.input("a", onnx.Float, 1, 16, 4)
			t.input("b", onnx.Float, 4, 16)
			t.op("Gemm", "a b", "y")
		}, err: "2-D"},
		{name: "einsum", build: func(t *tgraph) {
			t.input("q", onnx.Float, "b", 4, "s", 16)
			t.input("k", onnx.Float, "b", 4, "t", 16)
			t.input("m", onnx.Float, 3, 5)
			t.input("x", onnx.Float, "b", "s", 7, 3)
			t.op("Einsum", "q k", "scores", onnx.AttrString("equation", "bhqd,bhkd->bhqk"))
			t.op("Einsum", "m", "mt", onnx.AttrString("equation", "ij->ji"))
			t.op("Einsum", "m m", "implicit", onnx.AttrString("equation", "ij,kj"))
			t.op("Einsum", "x m", "ell", onnx.AttrString("equation", "...i,ij->...j"))
			t.op("Einsum", "m", "trace", onnx.AttrString("equation", "ij->"))
		}, want: map[string]string{"scores": "float32 [b, 4, s, t]", "mt": "float32 [5, 3]", "implicit": "float32 [3, 3]", "ell": "float32 [b, s, 7, 5]", "trace": "float32 []"}},
		{name: "einsum rank", build: func(t *tgraph) {
			t.input("m", onnx.Float, 3, 5)
			t.op("Einsum", "m", "y", onnx.AttrString("equation", "ijk->k"))
		}, err: "rank"},
		{name: "einsum letter sizes", build: func(t *tgraph) {
			t.input("m", onnx.Float, 3, 5)
			t.op("Einsum", "m m", "y", onnx.AttrString("equation", "ij,ij->i"))
			t.op("Einsum", "m m", "z", onnx.AttrString("equation", "ij,ji->i"))
		}, err: "letter"},
	})
}

func TestShapeReshape(t *testing.T) {
	reshape := func(spec ...int64) func(t *tgraph) {
		return func(t *tgraph) {
			t.input("x", onnx.Float, "batch", "seq", 64)
			t.ints("shape", spec...)
			t.op("Reshape", "x shape", "y")
		}
	}
	runShapeCases(t, []shapeCase{
		{name: "heads", build: reshape(0, 0, 4, 16), want: map[string]string{"y": "float32 [batch, seq, 4, 16]"}},
		{name: "flatten", build: reshape(-1, 64), want: map[string]string{"y": "float32 [batch*seq, 64]"}},
		{name: "all", build: reshape(-1), want: map[string]string{"y": "float32 [64*batch*seq]"}},
		{name: "middle", build: reshape(0, -1, 16), want: map[string]string{"y": "float32 [batch, 4*seq, 16]"}},
		{name: "flattening twice gives equal dims", build: func(t *tgraph) {
			t.input("a", onnx.Float, "batch", "seq", 64)
			t.input("b", onnx.Float, "seq", "batch", 8, 8)
			t.ints("flat", -1, 64)
			t.ints("back", 0, 16, 4)
			t.op("Reshape", "a flat", "fa")
			t.op("Reshape", "b flat", "fb")
			t.op("Reshape", "fa back", "ba")
			t.op("Add", "fa fb", "sum")
		}, want: map[string]string{"fa": "float32 [batch*seq, 64]", "ba": "float32 [batch*seq, 16, 4]", "sum": "float32 [batch*seq, 64]"},
			same: [][2]string{{"fa", "fb"}, {"fa", "sum"}}},
		{name: "unresolvable -1", build: func(t *tgraph) {
			t.input("x", onnx.Float, "n", 6)
			t.ints("shape", 4, -1)
			t.op("Reshape", "x shape", "y")
		}, want: map[string]string{"y": "float32 [4, ?]"}},
		{name: "allowzero", build: func(t *tgraph) {
			t.input("x", onnx.Float, 0, 3)
			t.ints("shape", 3, 0)
			t.op("Reshape", "x shape", "y", onnx.AttrInt("allowzero", 1))
		}, want: map[string]string{"y": "float32 [3, 0]"}},
		{name: "constant", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3, 4)
			t.ints("shape", 4, -1)
			t.op("Reshape", "x shape", "y")
		}, want: map[string]string{"y": "float32 [4, 6]"}},
		{name: "from attribute (opset 1)", opset: 1, build: func(t *tgraph) {
			t.input("x", onnx.Float, "n", 6)
			t.op("Reshape", "x", "y", onnx.AttrInts("shape", 0, 2, 3))
		}, want: map[string]string{"y": "float32 [n, 2, 3]"}},
		{name: "unknown shape of known length", build: func(t *tgraph) {
			t.input("x", onnx.Float, "n", 6)
			t.input("s", onnx.Int64, 3)
			t.op("Reshape", "x s", "y")
		}, want: map[string]string{"y": "float32 [?, ?, ?]"}},
		{name: "two -1", build: reshape(-1, -1), err: "more than one -1"},
		{name: "negative", build: reshape(-2, 64), err: "negative"},
		{name: "element count", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.ints("shape", 4, 2)
			t.op("Reshape", "x shape", "y")
		}, err: "cannot reshape"},
		{name: "indivisible", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.ints("shape", 4, -1)
			t.op("Reshape", "x shape", "y")
		}, err: "cannot reshape"},
		{name: "copying a missing dim", build: reshape(0, 0, 0, 0), err: "copies dim 3"},
		{name: "flatten op", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 4, 16)
			t.op("Flatten", "x", "f2", onnx.AttrInt("axis", 2))
			t.op("Flatten", "x", "f0", onnx.AttrInt("axis", 0))
			t.op("Flatten", "x", "fm", onnx.AttrInt("axis", -1))
		}, want: map[string]string{"f2": "float32 [b*s, 64]", "f0": "float32 [1, 64*b*s]", "fm": "float32 [4*b*s, 16]"}},
		{name: "flatten axis", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.op("Flatten", "x", "f", onnx.AttrInt("axis", 3))
		}, err: "out of range"},
	})
}

func TestShapeAxisOps(t *testing.T) {
	runShapeCases(t, []shapeCase{
		{name: "transpose", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 4, 16)
			t.op("Transpose", "x", "p", onnx.AttrInts("perm", 0, 2, 3, 1))
			t.op("Transpose", "x", "r")
		}, want: map[string]string{"p": "float32 [b, 4, 16, s]", "r": "float32 [16, 4, s, b]"}},
		{name: "perm length", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3, 4)
			t.op("Transpose", "x", "y", onnx.AttrInts("perm", 1, 0))
		}, err: "perm"},
		{name: "perm repeats", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.op("Transpose", "x", "y", onnx.AttrInts("perm", 1, 1))
		}, err: "not a permutation"},
		{name: "unsqueeze input axes", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s")
			t.ints("axes", 1, -1)
			t.op("Unsqueeze", "x axes", "y")
		}, want: map[string]string{"y": "float32 [b, 1, s, 1]"}},
		{name: "unsqueeze attribute axes (opset 11)", opset: 11, build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s")
			t.op("Unsqueeze", "x", "y", onnx.AttrInts("axes", 0, 3))
			t.op("Squeeze", "y", "z", onnx.AttrInts("axes", 0))
			t.op("Squeeze", "y", "all")
			t.op("ReduceSum", "x", "sum", onnx.AttrInts("axes", 1), onnx.AttrInt("keepdims", 0))
			t.op("Softmax", "x", "sm")
		}, want: map[string]string{"y": "float32 [1, b, s, 1]", "z": "float32 [b, s, 1]", "all": "float32 unknown rank", "sum": "float32 [b]", "sm": "float32 [b, s]"}},
		{name: "squeeze", build: func(t *tgraph) {
			t.input("x", onnx.Float, 1, "b", 1, 4)
			t.ints("axes", 0, -2)
			t.op("Squeeze", "x axes", "y")
		}, want: map[string]string{"y": "float32 [b, 4]"}},
		{name: "squeeze without axes keeps sizes of at least 2", build: func(t *tgraph) {
			t.input("x", onnx.Float, 1, 3, 1)
			t.op("Squeeze", "x", "y")
		}, want: map[string]string{"y": "float32 [3]"}},
		{name: "squeeze a dim that is not 1", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.ints("axes", 1)
			t.op("Squeeze", "x axes", "y")
		}, err: "cannot squeeze"},
		{name: "unsqueeze out of range", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.ints("axes", 3)
			t.op("Unsqueeze", "x axes", "y")
		}, err: "out of range"},
		{name: "unsqueeze repeated axis", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.ints("axes", 0, -3)
			t.op("Unsqueeze", "x axes", "y")
		}, err: "twice"},
		{name: "concat", build: func(t *tgraph) {
			t.input("a", onnx.Float, "b", "s", 8)
			t.input("c", onnx.Float, "b", "s", 8)
			t.input("d", onnx.Float, "b", 1, 8)
			t.input("e", onnx.Float, "b", "t", 8)
			t.op("Concat", "a c", "twice", onnx.AttrInt("axis", 1))
			t.op("Concat", "a d", "plus1", onnx.AttrInt("axis", -2))
			t.op("Concat", "a e d", "st", onnx.AttrInt("axis", 1))
			t.op("Concat", "a c", "wide", onnx.AttrInt("axis", 2))
		}, want: map[string]string{"twice": "float32 [b, 2*s, 8]", "plus1": "float32 [b, s+1, 8]", "st": "float32 [b, s+t+1, 8]", "wide": "float32 [b, s, 16]"}},
		{name: "concat other dims", build: func(t *tgraph) {
			t.input("a", onnx.Float, 2, 3)
			t.input("b", onnx.Float, 4, 3)
			t.op("Concat", "a b", "y", onnx.AttrInt("axis", 1))
		}, err: "differ"},
		{name: "concat ranks", build: func(t *tgraph) {
			t.input("a", onnx.Float, 2, 3)
			t.input("b", onnx.Float, 3)
			t.op("Concat", "a b", "y", onnx.AttrInt("axis", 0))
		}, err: "ranks"},
		{name: "concat without axis", build: func(t *tgraph) {
			t.input("a", onnx.Float, 2)
			t.op("Concat", "a a", "y")
		}, err: "axis"},
		{name: "split", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 64)
			t.input("h", onnx.Float, "b", "s", "d")
			t.ints("sizes", 16, 48)
			t.op("Split", "x sizes", "x0 x1", onnx.AttrInt("axis", -1))
			t.op("Split", "x", "h0 h1", onnx.AttrInt("axis", 2))
			t.op("Concat", "x x", "xx", onnx.AttrInt("axis", 1))
			t.op("Split", "xx", "s0 s1", onnx.AttrInt("axis", 1))
			t.op("Split", "h", "d0 d1", onnx.AttrInt("axis", 2))
		}, want: map[string]string{"x0": "float32 [b, s, 16]", "x1": "float32 [b, s, 48]", "h0": "float32 [b, s, 32]",
			"s0": "float32 [b, s, 64]", "s1": "float32 [b, s, 64]", "d0": "float32 [b, s, ?]"}},
		{name: "split attribute (opset 11)", opset: 11, build: func(t *tgraph) {
			t.input("x", onnx.Float, 10, "n")
			t.op("Split", "x", "a b c", onnx.AttrInts("split", 2, 3, 5))
		}, want: map[string]string{"a": "float32 [2, n]", "b": "float32 [3, n]", "c": "float32 [5, n]"}},
		{name: "split num_outputs uneven", build: func(t *tgraph) {
			t.input("x", onnx.Float, 10)
			t.op("Split", "x", "a b c", onnx.AttrInt("num_outputs", 3))
		}, want: map[string]string{"a": "float32 [4]", "b": "float32 [4]", "c": "float32 [2]"}},
		{name: "split sizes do not add up", build: func(t *tgraph) {
			t.input("x", onnx.Float, 10)
			t.ints("sizes", 3, 3)
			t.op("Split", "x sizes", "a b")
		}, err: "add up"},
		{name: "split uneven without num_outputs", build: func(t *tgraph) {
			t.input("x", onnx.Float, 10)
			t.op("Split", "x", "a b c")
		}, err: "equal parts"},
		{name: "split count", build: func(t *tgraph) {
			t.input("x", onnx.Float, 10)
			t.ints("sizes", 5, 5)
			t.op("Split", "x sizes", "a b c")
		}, err: "split sizes for 3 outputs"},
		{name: "gather", build: func(t *tgraph) {
			t.input("table", onnx.Float, 100, 64)
			t.input("ids", onnx.Int64, "b", "s")
			t.input("x", onnx.Float, "b", "s", 8)
			t.scalar("one", 1)
			t.ints("idx", 0, 2)
			t.op("Gather", "table ids", "emb")
			t.op("Gather", "x one", "col", onnx.AttrInt("axis", 1))
			t.op("Gather", "x idx", "pick", onnx.AttrInt("axis", -1))
		}, want: map[string]string{"emb": "float32 [b, s, 64]", "col": "float32 [b, 8]", "pick": "float32 [b, s, 2]"}},
		{name: "gather index out of range", build: func(t *tgraph) {
			t.input("x", onnx.Float, 3, 4)
			t.scalar("i", 5)
			t.op("Gather", "x i", "y", onnx.AttrInt("axis", 1))
		}, err: "out of range"},
		{name: "gather axis out of range", build: func(t *tgraph) {
			t.input("x", onnx.Float, 3, 4)
			t.input("i", onnx.Int64, 2)
			t.op("Gather", "x i", "y", onnx.AttrInt("axis", 2))
		}, err: "axis 2 is out of range"},
		{name: "gather elements and nd", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 8)
			t.input("i", onnx.Int64, "b", "s", 1)
			t.input("nd", onnx.Int64, "b", 2)
			t.op("GatherElements", "x i", "ge", onnx.AttrInt("axis", -1))
			t.op("GatherND", "x nd", "gn")
		}, want: map[string]string{"ge": "float32 [b, s, 1]", "gn": "float32 [b, 8]"}},
		{name: "softmax axis", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.op("Softmax", "x", "y", onnx.AttrInt("axis", 2))
		}, err: "out of range"},
		{name: "trilu rank", build: func(t *tgraph) {
			t.input("x", onnx.Float, 3)
			t.op("Trilu", "x", "y")
		}, err: "rank 2"},
	})
}

func TestShapeSlice(t *testing.T) {
	slice := func(dims []any, starts, ends, axes, steps []int64) func(t *tgraph) {
		return func(t *tgraph) {
			t.input("x", onnx.Float, dims...)
			t.ints("starts", starts...)
			t.ints("ends", ends...)
			in := "x starts ends"
			switch {
			case axes != nil:
				t.ints("axes", axes...)
				in += " axes"
			case steps != nil:
				in += " _"
			}
			if steps != nil {
				t.ints("steps", steps...)
				in += " steps"
			}
			t.op("Slice", in, "y")
		}
	}
	const big = 1<<63 - 1
	runShapeCases(t, []shapeCase{
		{name: "constant", build: slice([]any{10, 20}, []int64{2, -5}, []int64{7, big}, nil, nil), want: map[string]string{"y": "float32 [5, 5]"}},
		{name: "step", build: slice([]any{10}, []int64{1}, []int64{10}, nil, []int64{3}), want: map[string]string{"y": "float32 [3]"}},
		{name: "reverse", build: slice([]any{"n", 10}, []int64{-1, 8}, []int64{-big - 1, 1}, []int64{0, 1}, []int64{-1, -2}), want: map[string]string{"y": "float32 [n, 4]"}},
		{name: "clamped", build: slice([]any{4}, []int64{-100}, []int64{100}, nil, nil), want: map[string]string{"y": "float32 [4]"}},
		{name: "empty", build: slice([]any{4}, []int64{3}, []int64{1}, nil, nil), want: map[string]string{"y": "float32 [0]"}},
		{name: "symbolic tail", build: slice([]any{"b", "s", 8}, []int64{1}, []int64{big}, []int64{1}, nil), want: map[string]string{"y": "float32 [b, s-1, 8]"}},
		{name: "symbolic last", build: slice([]any{"b", "s"}, []int64{-1}, []int64{big}, []int64{-1}, nil), want: map[string]string{"y": "float32 [b, 1]"}},
		{name: "symbolic head", build: slice([]any{"s", 8}, []int64{0, 0}, []int64{1, 4}, nil, nil), want: map[string]string{"y": "float32 [1, 4]"}},
		{name: "symbolic undecidable", build: slice([]any{"s"}, []int64{2}, []int64{big}, nil, nil), want: map[string]string{"y": "float32 [?]"}},
		{name: "symbolic even step", build: slice([]any{"b", 8}, []int64{0}, []int64{big}, []int64{1}, []int64{2}), want: map[string]string{"y": "float32 [b, 4]"}},
		{name: "propagated ends", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 8)
			t.input("table", onnx.Float, 512, 8)
			t.op("Shape", "x", "shape")
			t.ints("zero", 0)
			t.ints("one", 1)
			t.ints("two", 2)
			t.op("Slice", "shape one two", "seq")
			t.op("Neg", "seq", "negseq")
			t.ints("big", 1<<63-1)
			t.op("Slice", "x negseq big one", "lastseq")
			t.op("Slice", "table zero seq zero", "prefix")
			t.op("Add", "prefix x", "sum")
		}, want: map[string]string{"lastseq": "float32 [b, s, 8]", "prefix": "float32 [?, 8]", "sum": "float32 [b, s, 8]"}, vals: map[string]string{"seq": "[s]", "negseq": "[-s]"}},
		{name: "unknown bounds", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 8)
			t.input("st", onnx.Int64, 1)
			t.input("en", onnx.Int64, 1)
			t.ints("axes", 1)
			t.op("Slice", "x st en axes", "y")
		}, want: map[string]string{"y": "float32 [b, ?, 8]"}},
		{name: "attributes (opset 9)", opset: 9, build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", 10)
			t.op("Slice", "x", "y", onnx.AttrInts("starts", 2), onnx.AttrInts("ends", 5), onnx.AttrInts("axes", 1))
		}, want: map[string]string{"y": "float32 [b, 3]"}},
		{name: "step 0", build: slice([]any{4}, []int64{0}, []int64{4}, nil, []int64{0}), err: "step is 0"},
		{name: "axis out of range", build: slice([]any{4}, []int64{0}, []int64{4}, []int64{1}, nil), err: "out of range"},
		{name: "lengths differ", build: slice([]any{4, 4}, []int64{0, 0}, []int64{4}, []int64{0, 1}, nil), err: "different lengths"},
	})
}

func TestShapeDataPropagation(t *testing.T) {
	runShapeCases(t, []shapeCase{
		{name: "Shape Gather Unsqueeze Concat Reshape", build: func(t *tgraph) {
			t.input("x", onnx.Float, "batch", "seq", 64)
			t.op("Shape", "x", "shape")
			t.scalar("zero", 0)
			t.scalar("one", 1)
			t.ints("axes", 0)
			t.ints("heads", 4, 16)
			t.op("Gather", "shape zero", "b", onnx.AttrInt("axis", 0))
			t.op("Gather", "shape one", "s", onnx.AttrInt("axis", 0))
			t.op("Unsqueeze", "b axes", "b1")
			t.op("Unsqueeze", "s axes", "s1")
			t.op("Concat", "b1 s1 heads", "target", onnx.AttrInt("axis", 0))
			t.op("Reshape", "x target", "y")
		}, want: map[string]string{"y": "float32 [batch, seq, 4, 16]", "shape": "int64 [3]", "b": "int64 []"},
			vals: map[string]string{"shape": "[batch, seq, 64]", "b": "[batch]", "target": "[batch, seq, 4, 16]"}},
		{name: "Shape start and end, Size, arithmetic", build: func(t *tgraph) {
			t.input("x", onnx.Float, "batch", "seq", 64)
			t.op("Shape", "x", "tail", onnx.AttrInt("start", -2))
			t.op("Shape", "x", "head", onnx.AttrInt("end", 1))
			t.op("Size", "x", "size")
			t.scalar("two", 2)
			t.op("Mul", "head two", "double")
			t.op("Div", "tail two", "half")
			t.op("Sub", "tail two", "less")
			t.op("Add", "head tail", "plus")
			t.op("ReduceProd", "tail", "prod", onnx.AttrInt("keepdims", 0))
			t.op("Cast", "tail", "cast", onnx.AttrInt("to", int64(onnx.Int32)))
			t.op("Equal", "tail two", "eq")
		}, vals: map[string]string{"tail": "[seq, 64]", "head": "[batch]", "size": "[64*batch*seq]", "double": "[2*batch]",
			"half": "[?, 32]", "less": "[seq-2, 62]", "plus": "[batch+seq, batch+64]", "prod": "[64*seq]", "cast": "[seq, 64]", "eq": "[?, 0]"},
			want: map[string]string{"cast": "int32 [2]", "eq": "bool [2]", "prod": "int64 []"}},
		{name: "ConstantOfShape Equal Where Expand (torch expand)", build: func(t *tgraph) {
			t.input("m", onnx.Int64, "batch", "seq")
			t.op("Shape", "m", "shape")
			t.ints("two", 2)
			t.op("ConstantOfShape", "two", "ones", onnx.AttrTensor("value", onnx.Int64Tensor("v", []int64{1}, []int64{1})))
			t.ints("minus", -1, -1)
			t.op("Equal", "shape minus", "isneg")
			t.op("Where", "isneg ones shape", "target")
			t.input("row", onnx.Float, 1, "seq")
			t.op("Expand", "row target", "y")
			t.op("ConstantOfShape", "shape", "zeros")
		}, want: map[string]string{"y": "float32 [batch, seq]", "zeros": "float32 [batch, seq]", "ones": "int64 [2]"},
			vals: map[string]string{"isneg": "[0, 0]", "ones": "[1, 1]", "target": "[batch, seq]"}},
		{name: "Range", build: func(t *tgraph) {
			t.input("x", onnx.Float, "batch", "seq")
			t.op("Shape", "x", "shape")
			t.scalar("one", 1)
			t.scalar("zero", 0)
			t.scalar("two", 2)
			t.scalar("five", 5)
			t.op("Gather", "shape one", "seq", onnx.AttrInt("axis", 0))
			t.op("Range", "zero seq one", "pos")
			t.op("Range", "one seq one", "tail")
			t.op("Range", "zero seq two", "evens")
			t.op("Range", "zero five two", "consts")
			t.op("Range", "five zero one", "none")
		}, want: map[string]string{"pos": "int64 [seq]", "tail": "int64 [seq-1]", "evens": "int64 [?]", "consts": "int64 [3]", "none": "int64 [0]"},
			vals: map[string]string{"consts": "[0, 2, 4]"}},
		{name: "Range values", build: func(t *tgraph) {
			t.scalar("a", 7)
			t.scalar("b", 1)
			t.scalar("d", -3)
			t.op("Range", "a b d", "down")
		}, want: map[string]string{"down": "int64 [2]"}, vals: map[string]string{"down": "[7, 4]"}},
		{name: "Tile, ConstantOfShape, Expand, Squeeze on values", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s")
			t.op("Shape", "x", "shape")
			t.ints("reps", 1, 3)
			t.op("Tile", "x reps", "tiled")
			t.op("Tile", "x shape", "sq")
			t.ints("ax", 0)
			t.ints("one", 1)
			t.op("Slice", "shape one one", "rest")
			t.op("Slice", "shape ax one", "first")
			t.op("Squeeze", "first ax", "firstScalar")
			t.ints("three", 3)
			t.op("Expand", "firstScalar three", "twice")
		}, want: map[string]string{"tiled": "float32 [b, 3*s]", "sq": "float32 [b*b, s*s]", "twice": "int64 [3]"},
			vals: map[string]string{"first": "[b]", "firstScalar": "[b]", "twice": "[b, b, b]"}},
		{name: "Constant values", build: func(t *tgraph) {
			t.op("Constant", "", "ci", onnx.AttrInt("value_int", 3))
			t.op("Constant", "", "cis", onnx.AttrInts("value_ints", 1, 2))
			t.op("Constant", "", "cf", onnx.AttrFloat("value_float", 1))
			t.op("Constant", "", "cfs", onnx.AttrFloats("value_floats", 1, 2, 3))
			t.op("Constant", "", "ct", onnx.AttrTensor("value", onnx.Int64Tensor("t", []int64{2}, []int64{4, 5})))
			t.op("Constant", "", "cs", onnx.AttrString("value_string", "x"))
		}, want: map[string]string{"ci": "int64 []", "cis": "int64 [2]", "cf": "float32 []", "cfs": "float32 [3]", "ct": "int64 [2]", "cs": "string []"},
			vals: map[string]string{"ci": "[3]", "cis": "[1, 2]", "ct": "[4, 5]"}},
		{name: "Constant without value", build: func(t *tgraph) {
			t.op("Constant", "", "c")
		}, err: "exactly one value"},
	})
}

func TestShapeReductionsAndMisc(t *testing.T) {
	runShapeCases(t, []shapeCase{
		{name: "reductions", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 64)
			t.ints("last", -1)
			t.ints("none")
			t.op("ReduceMean", "x last", "mean")
			t.op("ReduceSum", "x last", "sum", onnx.AttrInt("keepdims", 0))
			t.op("ReduceMax", "x", "all")
			t.op("ReduceMax", "x", "allkeep", onnx.AttrInt("keepdims", 1))
			t.op("ReduceSum", "x none", "noop", onnx.AttrInt("noop_with_empty_axes", 1))
			t.op("ArgMax", "x", "am", onnx.AttrInt("axis", -1), onnx.AttrInt("keepdims", 0))
		}, want: map[string]string{"mean": "float32 [b, s, 1]", "sum": "float32 [b, s]", "all": "float32 [1, 1, 1]", "noop": "float32 [b, s, 64]", "am": "int64 [b, s]"}},
		{name: "reduce axes attribute and ReduceSum axes input (opset 13)", opset: 13, build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 64)
			t.ints("ax", 1)
			t.op("ReduceMean", "x", "mean", onnx.AttrInts("axes", 0, 2), onnx.AttrInt("keepdims", 0))
			t.op("ReduceSum", "x ax", "sum")
		}, want: map[string]string{"mean": "float32 [s]", "sum": "float32 [b, 1, 64]"}},
		{name: "reduce unknown axes", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", 1, 64)
			t.input("ax", onnx.Int64, 2)
			t.op("ReduceMean", "x ax", "keep")
			t.op("ReduceMean", "x ax", "drop", onnx.AttrInt("keepdims", 0))
		}, want: map[string]string{"keep": "float32 [?, 1, ?]", "drop": "float32 [?]"}},
		{name: "reduce axis twice", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2, 3)
			t.ints("ax", 1, -1)
			t.op("ReduceSum", "x ax", "y")
		}, err: "twice"},
		{name: "layer norm", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s", 64)
			t.input("w", onnx.Float, 64)
			t.op("LayerNormalization", "x w w", "y mean inv", onnx.AttrInt("axis", -1))
		}, want: map[string]string{"y": "float32 [b, s, 64]", "mean": "float32 [b, s, 1]", "inv": "float32 [b, s, 1]"}},
		{name: "unary and friends", build: func(t *tgraph) {
			t.input("x", onnx.Float, "b", "s")
			t.input("i", onnx.Int64, "b", "s")
			t.scalar("k", 3)
			t.scalar("ax", 1)
			t.op("Dropout", "x", "d mask")
			t.op("IsNaN", "x", "nan")
			t.op("Clip", "x _ _", "clip")
			t.op("CumSum", "i ax", "cs")
			t.op("Trilu", "x", "tri")
			t.op("Gelu", "x", "gelu")
			t.op("TopK", "x k", "tv ti", onnx.AttrInt("axis", -1))
			t.op("NonZero", "i", "nz")
			t.op("CastLike", "i x", "cl")
			t.op("Identity", "x", "id")
		}, want: map[string]string{"d": "float32 [b, s]", "mask": "bool [b, s]", "nan": "bool [b, s]", "clip": "float32 [b, s]", "cs": "int64 [b, s]",
			"tri": "float32 [b, s]", "gelu": "float32 [b, s]", "tv": "float32 [b, 3]", "ti": "int64 [b, 3]", "nz": "int64 [2, ?]", "cl": "float32 [b, s]"},
			same: [][2]string{{"x", "id"}, {"x", "d"}}},
		{name: "one hot, scatter, pad, losses", build: func(t *tgraph) {
			t.input("ids", onnx.Int64, "b", "s")
			t.scalar("depth", 10)
			t.input("vals", onnx.Float, 2)
			t.input("x", onnx.Float, "b", "s", 8)
			t.input("idx", onnx.Int64, "n", 1)
			t.input("upd", onnx.Float, "n", "s", 8)
			t.ints("pads", 0, 1, 0, 0, 2, 0)
			t.input("scores", onnx.Float, "b", 10, "s")
			t.op("OneHot", "ids depth vals", "oh", onnx.AttrInt("axis", 1))
			t.op("ScatterND", "x idx upd", "sc")
			t.op("Pad", "x pads", "pad")
			t.op("SoftmaxCrossEntropyLoss", "scores ids", "loss logp")
			t.op("NegativeLogLikelihoodLoss", "scores ids", "nll", onnx.AttrString("reduction", "none"))
		}, want: map[string]string{"oh": "float32 [b, 10, s]", "sc": "float32 [b, s, 8]", "pad": "float32 [b, s+3, 8]",
			"loss": "float32 []", "logp": "float32 [b, 10, s]", "nll": "float32 [b, s]"}},
		{name: "cast", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Cast", "x", "y")
		}, err: "'to'"},
	})
}

func TestShapeErrors(t *testing.T) {
	runShapeCases(t, []shapeCase{
		{name: "undefined input", build: func(t *tgraph) {
			t.op("Relu", "nowhere", "y")
		}, err: `"nowhere"`},
		{name: "missing input", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Add", "x", "y")
		}, err: "needs 2 inputs"},
		{name: "missing required input", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Gather", "x", "y")
		}, err: "needs input 1"},
		{name: "too many outputs", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Relu", "x", "y z")
		}, err: "not an output"},
		{name: "output defined twice", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Relu", "x", "y")
			t.op("Relu", "x", "y")
		}, err: "defined twice"},
		{name: "unknown rank into a rank rule", build: func(t *tgraph) {
			t.noRank("x", onnx.Float)
			t.op("Relu", "x", "r")
			t.op("Transpose", "r", "y")
		}, err: "unknown rank"},
		{name: "bad einsum", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Einsum", "x", "y", onnx.AttrString("equation", "i1->i"))
		}, err: "not letters"},
		{name: "bad cast type", build: func(t *tgraph) {
			t.input("x", onnx.Float, 2)
			t.op("Cast", "x", "y", onnx.AttrInt("to", 99))
		}, err: "unknown element type"},
		{name: "range delta 0", build: func(t *tgraph) {
			t.scalar("a", 0)
			t.op("Range", "a a a", "y")
		}, err: "delta is 0"},
		{name: "negative shape", build: func(t *tgraph) {
			t.ints("s", 2, -3)
			t.op("ConstantOfShape", "s", "y")
		}, err: "negative"},
	})
}

// Every op without a rule is listed in one error, with a node each.
func TestShapeUnknownOps(t *testing.T) {
	tg := newTGraph(18)
	tg.input("x", onnx.Float, 2)
	tg.op("Frobnicate", "x", "a")
	tg.op("Frobnicate", "a", "b")
	tg.op("If", "x", "c", onnx.AttrGraph("then_branch", &onnxpb.GraphProto{}))
	tg.g.AddNode(&onnxpb.NodeProto{OpType: proto.String("FusedMatMul"), Domain: proto.String("com.microsoft"), Name: proto.String("fm"), Input: []string{"x", "x"}, Output: []string{"d"}})
	_, err := Infer(tg.m)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"3 op type(s)", `Frobnicate (node "n_a"`, `If (node "n_c" (If), subgraphs are not supported)`, `com.microsoft.FusedMatMul (node "fm"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Lenient mode gives them, and what follows from them, unknown ranks.
	tg.op("Relu", "b", "r")
	tg.op("Transpose", "r", "tr")
	tg.op("Relu", "x", "fine")
	info, err := InferWith(tg.m, Options{Lenient: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, shape, _ := info.Type("r"); shape != nil {
		t.Errorf("r: %v, want unknown rank", shape)
	}
	if _, shape, _ := info.Type("fine"); shape.String() != "[2]" {
		t.Errorf("fine: %v", shape)
	}
	if len(info.Unresolved) != 5 {
		t.Errorf("unresolved %v, want the 4 unknown ops and the Transpose", info.Unresolved)
	}
}

// Adversarial attribute values give errors naming the node, never panics.
func TestShapeMalformedNeverPanics(t *testing.T) {
	attrs := []onnx.Attr{
		onnx.AttrInt("axis", 1<<40), onnx.AttrInt("axis", -1<<40), onnx.AttrInts("perm", 5, -1), onnx.AttrInts("axes", 1<<62),
		onnx.AttrInts("split", -1, 3), onnx.AttrInt("to", -4), onnx.AttrString("equation", "...,...->..."), onnx.AttrInts("starts", 1<<62),
		onnx.AttrInts("ends", -1<<62), onnx.AttrInt("batch_dims", 7), onnx.AttrInt("k", -3), onnx.AttrInt("num_outputs", 0),
		onnx.AttrInt("start", -1<<62), onnx.AttrInt("end", 1<<62), onnx.AttrInts("shape", -7, 0), onnx.AttrTensor("value", &onnxpb.TensorProto{DataType: proto.Int32(7), Dims: []int64{3}}),
	}
	ops := make([]string, 0, len(shapeRules))
	for op := range shapeRules {
		ops = append(ops, op)
	}
	for _, op := range ops {
		for _, a := range attrs {
			for _, opset := range []int64{9, 13, 18} {
				tg := newTGraph(opset)
				tg.input("x", onnx.Float, "b", 3, 1)
				tg.input("i", onnx.Int64, 2, 1)
				tg.ints("v", 1<<62, -1, 0)
				tg.scalar("s", -1<<62)
				tg.op(op, "x v s i", "y z", a)
				if _, err := Infer(tg.m); err != nil && strings.Contains(err.Error(), "internal error") {
					t.Errorf("%s opset %d with %s: %v", op, opset, a.GetName(), err)
				}
			}
		}
	}
}

func TestShapeExprCanonical(t *testing.T) {
	a, b := atomExpr("batch"), atomExpr("seq")
	ab, _ := mulExpr(a, b)
	ba, _ := mulExpr(b, a)
	if ab.key != "batch*seq" || ab.key != ba.key {
		t.Errorf("products %q and %q", ab.key, ba.key)
	}
	sum, _ := addExpr(ab, constExpr(-1))
	twice, _ := addExpr(sum, sum)
	if twice.key != "2*batch*seq-2" {
		t.Errorf("sum %q", twice.key)
	}
	q, ok := divExpr(twice, constExpr(2))
	if !ok || q.key != sum.key {
		t.Errorf("division gave %v %v", q, ok)
	}
	if _, ok := divExpr(sum, a); ok {
		t.Error("batch*seq-1 divided by batch")
	}
	zero, _ := subExpr(ab, ba)
	if !zero.isConst(0) || zero.key != "0" {
		t.Errorf("difference %q", zero.key)
	}
	odd, _ := mulExpr(atomExpr("a*b"), atomExpr("c"))
	if odd.key != `"a*b"*c` {
		t.Errorf("quoted atom %q", odd.key)
	}
	if _, ok := mulExpr(constExpr(1<<62), constExpr(4)); ok {
		t.Error("overflow not detected")
	}
	deep := atomExpr("x")
	var ok2 bool
	for range maxExprDegree {
		if deep, ok2 = mulExpr(deep, atomExpr("x")); !ok2 {
			break
		}
	}
	if ok2 {
		t.Error("degree limit not enforced")
	}
}

// Bind learns symbol sizes from concrete shapes, Eval computes dims from
// them.
func TestShapeBindEval(t *testing.T) {
	tg := newTGraph(18)
	tg.input("x", onnx.Float, "batch", "seq", 64)
	tg.input("u", onnx.Float, nil)
	tg.ints("flat", -1, 16)
	tg.op("Reshape", "x flat", "y")
	tg.op("Relu", "u", "v")
	info, err := Infer(tg.m)
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	if err := info.Bind("x", []int64{2, 5, 64}, sizes); err != nil {
		t.Fatal(err)
	}
	if err := info.Bind("u", []int64{9}, sizes); err != nil {
		t.Fatal(err)
	}
	_, y, _ := info.Type("y")
	if n, ok := info.Eval(y[0], sizes); !ok || n != 40 {
		t.Errorf("y[0] = %v = %d, %v", y[0], n, ok)
	}
	_, v, _ := info.Type("v")
	if n, ok := info.Eval(v[0], sizes); !ok || n != 9 {
		t.Errorf("v[0] = %v = %d, %v", v[0], n, ok)
	}
	if err := info.Bind("y", []int64{41, 16}, sizes); err == nil {
		t.Error("a wrong size binds")
	}
	if err := info.Bind("y", []int64{40}, sizes); err == nil {
		t.Error("a wrong rank binds")
	}
}

// A graph input's dim param of atoms joined by "+" is their sum, so that
// the key/value-cache graphs' total length ("past+seq") equals the past
// and new lengths concatenated; any other param is one atom (printed
// quoted, as a name that is not an identifier).
func TestShapeSumParams(t *testing.T) {
	runShapeCases(t, []shapeCase{
		{name: "concat of the parts", build: func(t *tgraph) {
			t.input("mask", onnx.Int64, "batch", "past+seq")
			t.input("past", onnx.Float, "batch", "past")
			t.input("new", onnx.Float, "batch", "seq")
			t.op("Concat", "past new", "all", onnx.AttrInt("axis", 1))
			t.op("Cast", "mask", "maskf", onnx.AttrInt("to", int64(onnx.Float)))
			t.op("Add", "all maskf", "y")
		}, want: map[string]string{"all": "float32 [batch, past+seq]", "y": "float32 [batch, past+seq]"}, same: [][2]string{{"all", "maskf"}}},
		{name: "order and repeats", build: func(t *tgraph) {
			t.input("a", onnx.Float, "seq+past")
			t.input("b", onnx.Float, "past+seq")
			t.input("c", onnx.Float, "n+n")
			t.op("Add", "a b", "y")
		}, want: map[string]string{"y": "float32 [past+seq]", "c": "float32 [2*n]"}, same: [][2]string{{"a", "b"}}},
		{name: "not a sum of names", build: func(t *tgraph) {
			t.input("a", onnx.Float, "seq+1")
			t.input("b", onnx.Float, "a+")
			t.input("c", onnx.Float, "x-y")
		}, want: map[string]string{"a": `float32 ["seq+1"]`, "b": `float32 ["a+"]`, "c": `float32 ["x-y"]`}},
	})
}
