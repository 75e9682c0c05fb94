package onnx_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

var (
	torchOnce sync.Once
	torchDir  string
	torchErr  error
)

// torchModels exports the fixtures of testdata/export_torch.py once per test
// binary: a PyTorch-written model, the same with external data, and an
// input/output pair computed by onnxruntime.
func torchModels(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	torchOnce.Do(func() {
		torchDir, torchErr = os.MkdirTemp("", "migu-onnx-test-")
		if torchErr != nil {
			return
		}
		cmd := exec.Command(py, filepath.Join("testdata", "export_torch.py"), torchDir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			torchErr = err
			torchDir = stderr.String()
		}
	})
	if torchErr != nil {
		t.Fatalf("export_torch.py: %v\n%s", torchErr, torchDir)
	}
	return torchDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if torchDir != "" && torchErr == nil {
		os.RemoveAll(torchDir)
	}
	os.Exit(code)
}

// A model written by PyTorch comes back byte for byte after load and save.
func TestRoundTripTorchModelIsByteIdentical(t *testing.T) {
	dir := torchModels(t)
	src := filepath.Join(dir, "mlp.onnx")
	m, err := onnx.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(t.TempDir(), "copy.onnx")
	if err := m.Save(out, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("round trip changed the bytes: %d -> %d", len(want), len(got))
	}
	if _, err := os.Stat(out + ".data"); !os.IsNotExist(err) {
		t.Fatal("an inline model gained a data file")
	}
}

// Fields the schema does not know (a future ONNX version, a vendor
// extension) survive a round trip.
func TestUnknownFieldsSurvive(t *testing.T) {
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("n")})
	g.AddOutput(g.Op("Relu", []string{"x"}, "y"), onnx.Float, onnx.Shape{onnx.Sym("n")})
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	// Field 99, wire type 2 (bytes), 3 bytes of payload: unknown to our schema.
	data = append(data, 0x9a, 0x06, 0x03, 'x', 'y', 'z')
	loaded, err := onnx.LoadBytes(data, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(loaded.Proto)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Fatalf("unknown field lost: %x vs %x", again, data)
	}
}

// External data: load, save elsewhere, load again gives the same tensors,
// and onnxruntime computes bit-identical outputs from both copies.
func TestExternalDataRoundTrip(t *testing.T) {
	dir := torchModels(t)
	m, err := onnx.Load(filepath.Join(dir, "ext", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	external := 0
	for _, init := range m.Proto.Graph.Initializer {
		if onnx.IsExternal(init) {
			external++
		}
	}
	if external == 0 {
		t.Fatal("fixture has no external tensors")
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "model.onnx")
	if err := m.Save(out, onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out + ".data"); err != nil {
		t.Fatalf("no data file written: %v", err)
	}
	again, err := onnx.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for i, a := range m.Proto.Graph.Initializer {
		b := again.Proto.Graph.Initializer[i]
		ra, err1 := m.TensorBytes(a)
		rb, err2 := again.TensorBytes(b)
		if err1 != nil || err2 != nil || !bytes.Equal(ra, rb) || a.GetName() != b.GetName() {
			t.Fatalf("tensor %s differs after round trip (%v, %v)", a.GetName(), err1, err2)
		}
	}
	// The saved model inlined again equals the original inline export.
	inline := filepath.Join(outDir, "inline.onnx")
	if err := again.Save(inline, onnx.SaveOptions{External: onnx.ExternalNone}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "mlp.onnx"), out, inline} {
		got := ortRun(t, path, dir)
		want := ortRun(t, filepath.Join(dir, "mlp.onnx"), dir)
		if got != want {
			t.Fatalf("%s: onnxruntime output differs from the original's", path)
		}
	}
}

// ortRun runs a model in onnxruntime (Python) on the fixture input and
// returns the output's bytes in hex, for bit-exact comparison.
func ortRun(t *testing.T, model, fixtures string) string {
	t.Helper()
	script := `
import json, sys
import numpy as np, onnxruntime as ort
io = json.load(open(sys.argv[2]))
x = np.array(io["x"], dtype=np.float32).reshape(io["x_shape"])
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(s.run(None, {"x": x})[0].tobytes().hex())
`
	return strings.TrimSpace(string(testenv.RunPython(t, script, model, filepath.Join(fixtures, "io.json"))))
}

func TestInspectTorchModel(t *testing.T) {
	dir := torchModels(t)
	m, err := onnx.Load(filepath.Join(dir, "mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s := onnx.Inspect(m)
	if len(s.Inputs) != 1 || s.Inputs[0].Name != "x" || s.Inputs[0].Shape != "[batch, seq, 16]" || s.Inputs[0].DType != "float32" {
		t.Errorf("inputs: %+v", s.Inputs)
	}
	if len(s.Outputs) != 1 || s.Outputs[0].Shape != "[batch, 5]" {
		t.Errorf("outputs: %+v", s.Outputs)
	}
	type lin struct {
		op        string
		din, dout int64
	}
	var got []lin
	for _, l := range s.Linears {
		got = append(got, lin{l.Op, l.DIn, l.DOut})
	}
	want := []lin{{"MatMul", 16, 48}, {"MatMul", 48, 8}, {"Gemm", 8, 5}}
	if len(got) != len(want) {
		t.Fatalf("linears %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("linear %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if s.Parameters != 16*48+48+48+48+48*8+8*5+5 {
		t.Errorf("parameters %d", s.Parameters)
	}
	if len(s.NonStandardDomains()) != 0 {
		t.Errorf("domains %v", s.Domains)
	}
	var buf bytes.Buffer
	if err := s.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LayerNormalization", "[batch, seq, 16]", "linear layers (3)", "head.weight (stored [out, in])"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("inspect text lacks %q:\n%s", want, buf.String())
		}
	}
	if _, err := json.Marshal(s); err != nil {
		t.Fatal(err)
	}
}

// externalModel writes a one-initializer model whose tensor points at the
// given external location/offset/length, plus a 64-byte data file.
func externalModel(t *testing.T, dir string, kv map[string]string) string {
	t.Helper()
	m := onnx.New("g", nil)
	g := m.Graph()
	loc := onnxpb.TensorProto_EXTERNAL
	w := &onnxpb.TensorProto{Name: proto.String("w"), DataType: proto.Int32(int32(onnx.Float)), Dims: []int64{4, 4}, DataLocation: &loc}
	for _, k := range []string{"location", "offset", "length"} {
		if v, ok := kv[k]; ok {
			w.ExternalData = append(w.ExternalData, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(v)})
		}
	}
	g.AddInitializer(w)
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(1), onnx.D(4)})
	g.AddOutput(g.Op("MatMul", []string{"x", "w"}, "y"), onnx.Float, nil)
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadRejectsBadInput(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.bin")
	os.WriteFile(secret, make([]byte, 64), 0o644)
	cases := []struct {
		name string
		kv   map[string]string
		link string // create w.bin as a symlink to this path
		want string
	}{
		{"ok", map[string]string{"location": "w.bin", "offset": "0", "length": "64"}, "", ""},
		{"absolute", map[string]string{"location": secret, "length": "64"}, "", "is absolute"},
		{"climbs out", map[string]string{"location": "../secret.bin", "length": "64"}, "", "leaves the model's folder"},
		{"climbs out inside", map[string]string{"location": "sub/../../secret.bin"}, "", "leaves the model's folder"},
		{"past end", map[string]string{"location": "w.bin", "offset": "32", "length": "64"}, "", "runs past the end"},
		{"huge offset", map[string]string{"location": "w.bin", "offset": "9223372036854775807", "length": "64"}, "", "runs past the end"},
		{"negative offset", map[string]string{"location": "w.bin", "offset": "-8"}, "", "not a non-negative integer"},
		{"wrong length", map[string]string{"location": "w.bin", "length": "32"}, "", "needs 64"},
		{"no location", map[string]string{"offset": "0"}, "", "has no location"},
		{"missing file", map[string]string{"location": "nope.bin"}, "", "nope.bin"},
		{"symlink out", map[string]string{"location": "w.bin", "length": "64"}, secret, "outside the model's folder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := externalModel(t, dir, c.kv)
			if c.link != "" {
				os.Remove(filepath.Join(dir, "w.bin"))
				if err := os.Symlink(c.link, filepath.Join(dir, "w.bin")); err != nil {
					t.Skip(err)
				}
			}
			m, err := onnx.Load(path)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				m.Close()
				return
			}
			if err == nil {
				t.Fatalf("loaded; want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) || !badinput.Is(err) {
				t.Fatalf("error %q: want it to name %s, say %q, and be bad input", err, path, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	good := externalModel(t, dir, map[string]string{"location": "w.bin"})
	data, _ := os.ReadFile(good)
	cases := map[string][]byte{
		"empty":     {},
		"truncated": data[:len(data)/2],
		"random":    []byte("\x8f\x02this is not a protobuf at all \xff\xfe\x00\x01"),
		"text":      []byte("ir_version: 8\ngraph { }\n"),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".onnx")
			os.WriteFile(p, b, 0o644)
			_, err := onnx.Load(p)
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v; want a bad-input error naming %s", err, p)
			}
		})
	}
}

// FuzzLoadBytes feeds arbitrary bytes to the loader: errors are fine,
// panics are not.
func FuzzLoadBytes(f *testing.F) {
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("n"), onnx.D(2)})
	g.AddInitializer(onnx.Float32Tensor("w", []int64{2, 2}, []float32{1, 2, 3, 4}))
	g.AddOutput(g.Op("MatMul", []string{"x", "w"}, "y"), onnx.Float, nil)
	seed, _ := proto.Marshal(m.Proto)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{0x3a, 0x02, 0x0a, 0x00})
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "d.bin"), make([]byte, 16), 0o644)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := onnx.LoadBytes(data, dir)
		if err != nil {
			return
		}
		defer m.Close()
		s := onnx.Inspect(m)
		s.WriteText(&bytes.Buffer{})
		for _, init := range m.Proto.Graph.Initializer {
			m.TensorBytes(init)
			m.Float32s(init)
		}
		g := m.Graph()
		g.TopoSort()
		g.Prune()
	})
}

// Saving a model with external data over itself (same model and data file)
// reads the old data while writing the new and leaves a loadable pair.
func TestSaveInPlace(t *testing.T) {
	dir := torchModels(t)
	work := t.TempDir()
	for _, name := range []string{"model.onnx", "model.onnx.data"} {
		data, err := os.ReadFile(filepath.Join(dir, "ext", name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(work, name), data, 0o644)
	}
	path := filepath.Join(work, "model.onnx")
	m, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, init := range m.Proto.Graph.Initializer {
		raw, err := m.TensorBytes(init)
		if err != nil {
			t.Fatal(err)
		}
		want[init.GetName()] = append([]byte(nil), raw...)
	}
	if err := m.Save(path, onnx.SaveOptions{Threshold: 16}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	again, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, init := range again.Proto.Graph.Initializer {
		raw, err := again.TensorBytes(init)
		if err != nil || !bytes.Equal(raw, want[init.GetName()]) {
			t.Fatalf("tensor %s changed (%v)", init.GetName(), err)
		}
	}
	if entries, _ := os.ReadDir(work); len(entries) != 2 {
		t.Fatalf("left files behind: %v", entries)
	}
}
