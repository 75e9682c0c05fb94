package ort

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/onnx"
)

func closeAll(vals ...Value) {
	for _, v := range vals {
		v.Close()
	}
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func assertClose(t *testing.T, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > tol {
			t.Fatalf("value %d: got %v, want %v\ngot  %v\nwant %v", i, got[i], want[i], got, want)
		}
	}
}

func TestSessionInfo(t *testing.T) {
	tests := []struct {
		name      string
		model     func(testing.TB) []byte
		opts      SessionOptions
		inputs    []string
		outputs   []string
		inShapes  []string
		outShapes []string
	}{
		{"linear", linearModel, SessionOptions{}, []string{"X float32 [batch, 4]"}, []string{"Y float32 [batch, 3]", "XW float32 [batch, 3]"},
			[]string{"[batch, 4]"}, []string{"[batch, 3]", "[batch, 3]"}},
		{"linear, one output", linearModel, SessionOptions{Outputs: []string{"XW"}}, []string{"X float32 [batch, 4]"}, []string{"XW float32 [batch, 3]"},
			[]string{"[batch, 4]"}, []string{"[batch, 3]"}},
		{"gather", gatherModel, SessionOptions{}, []string{"input_ids int64 [batch, seq]"}, []string{"hidden float32 [batch, seq, 2]"},
			[]string{"[batch, seq]"}, []string{"[batch, seq, 2]"}},
		{"float16 identity", func(t testing.TB) []byte { return identityModel(t, onnx.Float16, 2, "n") }, SessionOptions{},
			[]string{"in float16 [2, n]"}, []string{"out float16 [2, n]"}, []string{"[2, n]"}, []string{"[2, n]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := tt.model(t)
			s := openSession(t, model, tt.opts)
			var ins, outs []string
			for _, in := range s.Inputs() {
				ins = append(ins, in.String())
			}
			for _, out := range s.Outputs() {
				outs = append(outs, out.String())
			}
			if !slices.Equal(ins, tt.inputs) || !slices.Equal(outs, tt.outputs) {
				t.Errorf("inputs %q outputs %q\nwant %q %q", ins, outs, tt.inputs, tt.outputs)
			}
			// What we read from the protobuf must agree with what ORT
			// reports (which knows no symbols: -1).
			oins, oouts, err := ortgo.GetInputOutputInfoWithONNXData(model)
			if err != nil {
				t.Fatal(err)
			}
			if len(oins) != len(s.Inputs()) {
				t.Fatalf("ORT reports %d inputs, we %d", len(oins), len(s.Inputs()))
			}
			for i, oi := range oins {
				in := s.Inputs()[i]
				if oi.Name != in.Name || onnx.DType(oi.DataType) != in.DType || len(oi.Dimensions) != len(in.Shape) {
					t.Errorf("input %d: ORT says %v, we say %v", i, &oi, in)
				}
				for k, d := range in.Shape {
					want := int64(-1)
					if fixed(d) {
						want = d.Value
					}
					if oi.Dimensions[k] != want {
						t.Errorf("input %q dim %d: ORT says %d, we say %v", in.Name, k, oi.Dimensions[k], d)
					}
				}
			}
			if tt.opts.Outputs == nil && len(oouts) != len(s.Outputs()) {
				t.Errorf("ORT reports %d outputs, we %d", len(oouts), len(s.Outputs()))
			}
			info, ok := s.Input(tt.inputs[0][:strings.Index(tt.inputs[0], " ")])
			if !ok || info.Shape.String() != tt.inShapes[0] {
				t.Errorf("Input(): %v %v", info, ok)
			}
		})
	}
}

// TestLinear runs Y = X·W + B through a Binding with preallocated outputs
// and through Session.Run, for several batch sizes of the symbolic batch.
func TestLinear(t *testing.T) {
	s := openSession(t, linearModel(t), SessionOptions{})
	for _, batch := range []int{1, 3, 8} {
		x := make([]float32, batch*4)
		for i := range x {
			x[i] = float32(i%5) - 1.5 + float32(batch)*0.1
		}
		want := linearRef(x, batch)

		xt := must[*Tensor[float32]](t)(NewTensor(x, int64(batch), 4))
		yt := must[*Tensor[float32]](t)(Zeros[float32](int64(batch), 3))
		b := must[*Binding](t)(s.NewBinding())
		if err := b.BindInput("X", xt); err != nil {
			t.Fatal(err)
		}
		if err := b.BindOutput("Y", yt); err != nil {
			t.Fatal(err)
		}
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		assertClose(t, yt.Data(), want, 1e-5)

		// Refilling the input's memory is all a next step needs.
		for i := range x {
			x[i] *= -2
		}
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		assertClose(t, yt.Data(), linearRef(x, batch), 1e-5)

		outs, err := s.Run(map[string]Value{"X": xt})
		if err != nil {
			t.Fatal(err)
		}
		y := outs[0].(*Tensor[float32])
		if !slices.Equal(y.Shape(), []int64{int64(batch), 3}) {
			t.Errorf("dynamic output shape %v", y.Shape())
		}
		assertClose(t, y.Data(), yt.Data(), 0)
		closeAll(outs...)
		b.Close()
		closeAll(xt, yt)
	}
}

func TestGather(t *testing.T) {
	s := openSession(t, gatherModel(t), SessionOptions{})
	tests := []struct {
		ids   []int64
		shape []int64
	}{
		{[]int64{0}, []int64{1, 1}},
		{[]int64{5, 4, 3, 2, 1, 0}, []int64{2, 3}},
		{[]int64{1, 1, 2, 3, 5, 0, 4, 2}, []int64{1, 8}},
	}
	for _, tt := range tests {
		ids := must[*Tensor[int64]](t)(NewTensor(tt.ids, tt.shape...))
		outs, err := s.Run(map[string]Value{"input_ids": ids})
		if err != nil {
			t.Fatal(err)
		}
		h := outs[0].(*Tensor[float32])
		var want []float32
		for _, id := range tt.ids {
			want = append(want, gatherEmb[2*id:2*id+2]...)
		}
		if !slices.Equal(h.Shape(), append(slices.Clone(tt.shape), 2)) {
			t.Errorf("ids %v: shape %v", tt.ids, h.Shape())
		}
		assertClose(t, h.Data(), want, 0)
		closeAll(ids, h)
	}
}

// identityCase runs data through an Identity model of its dtype with a
// preallocated output and checks it comes back unchanged.
func identityCase[T Element](t *testing.T, dt onnx.DType, data []T, mk func([]T, ...int64) (*Tensor[T], error)) {
	t.Helper()
	s := openSession(t, identityModel(t, dt, "n"), SessionOptions{})
	in := must[*Tensor[T]](t)(mk(data, int64(len(data))))
	out := must[*Tensor[T]](t)(mk(make([]T, len(data)), int64(len(data))))
	defer closeAll(in, out)
	if in.DType() != dt {
		t.Fatalf("tensor dtype %s, want %s", in.DType(), dt)
	}
	b := must[*Binding](t)(s.NewBinding())
	defer b.Close()
	if err := b.BindInput("in", in); err != nil {
		t.Fatal(err)
	}
	if err := b.BindOutput("out", out); err != nil {
		t.Fatal(err)
	}
	if err := b.Run(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Data(), data) {
		t.Errorf("%s: got %v, want %v", dt, out.Data(), data)
	}
	outs, err := s.Run(map[string]Value{"in": in})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(outs...)
	got, ok := outs[0].(*Tensor[T])
	if !ok || got.DType() != dt || !slices.Equal(got.Data(), data) {
		t.Errorf("%s via Session.Run: got %#v", dt, outs[0])
	}
}

func TestDTypes(t *testing.T) {
	f16 := []uint16{half.F32ToF16(1), half.F32ToF16(-2.5), half.F32ToF16(65504)}
	bf16 := []uint16{half.F32ToBF16(1), half.F32ToBF16(-3e38)}
	tests := []struct {
		dt  onnx.DType
		run func(t *testing.T)
	}{
		{onnx.Float, func(t *testing.T) { identityCase(t, onnx.Float, []float32{1, -2, 3.5}, NewTensor[float32]) }},
		{onnx.Double, func(t *testing.T) { identityCase(t, onnx.Double, []float64{1e300, -2, math.Pi}, NewTensor[float64]) }},
		{onnx.Int64, func(t *testing.T) { identityCase(t, onnx.Int64, []int64{math.MaxInt64, -1, 0}, NewTensor[int64]) }},
		{onnx.Int32, func(t *testing.T) { identityCase(t, onnx.Int32, []int32{math.MinInt32, 7}, NewTensor[int32]) }},
		{onnx.Uint8, func(t *testing.T) { identityCase(t, onnx.Uint8, []uint8{0, 255, 7}, NewTensor[uint8]) }},
		{onnx.Bool, func(t *testing.T) { identityCase(t, onnx.Bool, []bool{true, false, true}, NewTensor[bool]) }},
		{onnx.Float16, func(t *testing.T) { identityCase(t, onnx.Float16, f16, NewFloat16Tensor) }},
		{onnx.BFloat16, func(t *testing.T) { identityCase(t, onnx.BFloat16, bf16, NewBFloat16Tensor) }},
	}
	for _, tt := range tests {
		t.Run(tt.dt.String(), tt.run)
	}
}

// TestErrors checks that what a caller binds is refused before ORT runs,
// with a message naming the input, the model's declaration and the value.
func TestErrors(t *testing.T) {
	initORT(t)
	f32 := func(shape ...int64) Value {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := must[*Tensor[float32]](t)(NewTensor(make([]float32, n), shape...))
		t.Cleanup(func() { v.Close() })
		return v
	}
	i64 := func(shape ...int64) Value {
		v := must[*Tensor[int64]](t)(Zeros[int64](shape...))
		t.Cleanup(func() { v.Close() })
		return v
	}
	closed := f32(2, 4)
	closed.Close()
	type bind struct {
		name   string
		output bool
		v      Value
	}
	tests := []struct {
		name  string
		model func(testing.TB) []byte
		binds []bind
		want  string
	}{
		{"unknown input", linearModel, []bind{{"x", false, f32(2, 4)}},
			`unknown input "x"; the model's inputs are X float32 [batch, 4]`},
		{"unknown output", linearModel, []bind{{"y", true, f32(2, 3)}},
			`unknown output "y"; the session's outputs are Y float32 [batch, 3], XW float32 [batch, 3]`},
		{"wrong dtype", gatherModel, []bind{{"input_ids", false, f32(2, 5)}},
			`input "input_ids": dtype float32, model wants int64`},
		{"wrong output dtype", linearModel, []bind{{"Y", true, i64(2, 3)}},
			`output "Y": dtype int64, model wants float32`},
		{"wrong rank", gatherModel, []bind{{"input_ids", false, i64(2, 5, 1)}},
			`input "input_ids": shape [2, 5, 1] has rank 3, model declares [batch, seq] (rank 2)`},
		{"fixed dimension", linearModel, []bind{{"X", false, f32(2, 5)}},
			`input "X": shape [2, 5] does not fit [batch, 4]: dim 1 is 5, model wants 4`},
		{"closed tensor", linearModel, []bind{{"X", false, closed}},
			`input "X": the tensor is nil or closed`},
		{"missing input", addModel, []bind{{"A", false, f32(2, 4)}, {"C", true, f32(2, 4)}},
			`input "B" (float32 [batch, 4]) is not bound`},
		{"no output", linearModel, []bind{{"X", false, f32(2, 4)}},
			`no output is bound; the session's outputs are Y float32 [batch, 3], XW float32 [batch, 3]`},
		{"symbol across inputs", addModel, []bind{{"A", false, f32(2, 4)}, {"B", false, f32(3, 4)}, {"C", true, f32(2, 4)}},
			`input "B": dim 0 (batch) is 3, but input "A" has batch = 2`},
		{"symbol input to output", linearModel, []bind{{"X", false, f32(2, 4)}, {"Y", true, f32(3, 3)}},
			`output "Y": dim 0 (batch) is 3, but input "X" has batch = 2`},
		{"scalar declared", func(t testing.TB) []byte { return identityModel(t, onnx.Float) }, []bind{{"in", false, f32(1)}},
			`input "in": the model declares a scalar: rank-0 (scalar) tensors are not supported by onnxruntime_go: reshape to [1]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openSession(t, tt.model(t), SessionOptions{})
			b := must[*Binding](t)(s.NewBinding())
			defer b.Close()
			var err error
			inputs := map[string]Value{}
			for _, bd := range tt.binds {
				if bd.output {
					err = b.BindOutput(bd.name, bd.v)
				} else {
					inputs[bd.name] = bd.v
					err = b.BindInput(bd.name, bd.v)
				}
				if err != nil {
					break
				}
			}
			if err == nil {
				err = b.Run()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Binding: got %v\nwant %s", err, tt.want)
			}
			// Session.Run checks inputs the same way (outputs are its own).
			if tt.binds[0].output || strings.HasPrefix(tt.want, "output") || tt.name == "no output" {
				return
			}
			outs, err := s.Run(inputs)
			closeAll(outs...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Session.Run: got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestScalarTensor(t *testing.T) {
	initORT(t)
	_, err := NewTensor([]float32{1})
	if !errors.Is(err, ErrScalar) || !strings.Contains(err.Error(), "reshape to [1]") {
		t.Errorf("rank-0 tensor: %v", err)
	}
	for _, c := range []struct {
		data  []float32
		shape []int64
		want  string
	}{
		{[]float32{1, 2}, []int64{3}, "tensor data has 2 elements, shape [3] needs 3"},
		{nil, []int64{2, -1}, "dimension 1 is negative"},
	} {
		if _, err := NewTensor(c.data, c.shape...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewTensor(%v, %v): %v, want %q", c.data, c.shape, err, c.want)
		}
	}
}

func TestProviders(t *testing.T) {
	initORT(t)
	tests := []struct {
		provider string
		want     []string
	}{
		{"cuda", []string{"the ONNX Runtime library at " + LibraryPath() + " has no CUDA execution provider", "onnxruntime-linux-x64-gpu", EnvVar}},
		{"tpu", []string{`unknown execution provider "tpu" (want cpu or cuda)`}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			s, err := NewSessionFromBytes(linearModel(t), SessionOptions{Provider: tt.provider})
			if err == nil {
				s.Close()
				t.Skipf("the library at %s runs provider %s", LibraryPath(), tt.provider)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

// TestOptions runs the linear model under every optimisation level and a
// few thread settings; all must agree with Go.
func TestOptions(t *testing.T) {
	x := []float32{1, 2, 3, 4, -1, 0.5, 0.25, 2}
	want := linearRef(x, 2)
	tests := []SessionOptions{
		{OptLevel: OptDisabled},
		{OptLevel: OptBasic},
		{OptLevel: OptExtended},
		{OptLevel: OptAll, Threads: 2, InterOpThreads: 2},
		{Provider: "CPU", Config: map[string]string{"session.intra_op.allow_spinning": "0"}},
		{OptLevel: OptAll, NoMemPattern: true},
	}
	for _, opts := range tests {
		t.Run(opts.OptLevel.String(), func(t *testing.T) {
			s := openSession(t, linearModel(t), opts)
			if s.Provider() != ProviderCPU {
				t.Errorf("provider %q", s.Provider())
			}
			xt := must[*Tensor[float32]](t)(NewTensor(x, 2, 4))
			outs, err := s.Run(map[string]Value{"X": xt})
			if err != nil {
				t.Fatal(err)
			}
			assertClose(t, outs[0].(*Tensor[float32]).Data(), want, 1e-5)
			closeAll(append(outs, xt)...)
		})
	}
	for _, name := range []string{"disabled", "basic", "extended", "all"} {
		if l, err := ParseOptLevel(name); err != nil || l.String() != name {
			t.Errorf("ParseOptLevel(%q) = %v, %v", name, l, err)
		}
	}
	if _, err := ParseOptLevel("max"); err == nil {
		t.Error("ParseOptLevel(max) succeeded")
	}
}

func TestModelFilesAndProfile(t *testing.T) {
	initORT(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "linear.onnx")
	if err := os.WriteFile(path, linearModel(t), 0o644); err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(dir, "profile")
	s, err := NewSession(path, SessionOptions{Threads: 1, ProfilePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != path {
		t.Errorf("Name() = %q", s.Name())
	}
	xt := must[*Tensor[float32]](t)(NewTensor([]float32{1, 2, 3, 4}, 1, 4))
	outs, err := s.Run(map[string]Value{"X": xt})
	if err != nil {
		t.Fatal(err)
	}
	closeAll(append(outs, xt)...)
	s.Close()
	if m, _ := filepath.Glob(prefix + "*.json"); len(m) != 1 {
		t.Errorf("profile files %v, want one %s*.json", m, prefix)
	}

	garbage := filepath.Join(dir, "garbage.onnx")
	os.WriteFile(garbage, []byte("\xff\xff\xff not protobuf"), 0o644)
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.onnx"), "no such file"},
		{garbage, garbage + ": not an ONNX model"},
	} {
		if _, err := NewSession(c.path, SessionOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewSession(%s): %v, want %q", c.path, err, c.want)
		}
	}
	if _, err := NewSessionFromBytes(linearModel(t), SessionOptions{Outputs: []string{"Z"}}); err == nil ||
		!strings.Contains(err.Error(), `unknown output "Z"; the graph's outputs are Y float32 [batch, 3], XW float32 [batch, 3]`) {
		t.Errorf("unknown output in options: %v", err)
	}
}

// TestView binds a view with a shorter batch over a buffer sized for the
// longest, the way a training loop handles ragged last batches.
func TestView(t *testing.T) {
	s := openSession(t, linearModel(t), SessionOptions{})
	buf := must[*Tensor[float32]](t)(Zeros[float32](4, 4))
	out := must[*Tensor[float32]](t)(Zeros[float32](4, 3))
	defer closeAll(buf, out)
	for i := range buf.Data() {
		buf.Data()[i] = float32(i) / 8
	}
	b := must[*Binding](t)(s.NewBinding())
	defer b.Close()
	for _, batch := range []int64{4, 2} {
		x := must[*Tensor[float32]](t)(buf.View(batch, 4))
		y := must[*Tensor[float32]](t)(out.View(batch, 3))
		if err := b.BindInput("X", x); err != nil {
			t.Fatal(err)
		}
		if err := b.BindOutput("Y", y); err != nil {
			t.Fatal(err)
		}
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		assertClose(t, y.Data(), linearRef(buf.Data()[:batch*4], int(batch)), 1e-5)
	}
	if _, err := buf.View(5, 4); err == nil {
		t.Error("a view larger than its buffer was allowed")
	}
}

// TestRunAllocs measures Go allocations per Binding.Run: a training step
// must not feed the garbage collector.
func TestRunAllocs(t *testing.T) {
	s := openSession(t, linearModel(t), SessionOptions{})
	x := must[*Tensor[float32]](t)(NewTensor([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4))
	y := must[*Tensor[float32]](t)(Zeros[float32](2, 3))
	xw := must[*Tensor[float32]](t)(Zeros[float32](2, 3))
	defer closeAll(x, y, xw)
	b := must[*Binding](t)(s.NewBinding())
	defer b.Close()
	for name, v := range map[string]Value{"Y": y, "XW": xw} {
		if err := b.BindOutput(name, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.BindInput("X", x); err != nil {
		t.Fatal(err)
	}
	var runErr error
	allocs := testing.AllocsPerRun(50, func() {
		if err := b.Run(); err != nil {
			runErr = err
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	t.Logf("Binding.Run: %v Go allocations per run", allocs)
	if allocs != 0 {
		t.Errorf("Binding.Run allocates %v times per run, want 0", allocs)
	}
	assertClose(t, y.Data(), linearRef(x.Data(), 2), 1e-5)
}
