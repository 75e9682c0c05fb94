package testfix

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/safetensors"
)

// The helpers below compare migu's graphs with Python references (PyTorch,
// transformers, PEFT): run a graph, read what a reference script wrote,
// measure differences.

// Floats is a float32 input of Run.
type Floats struct {
	Shape  []int64
	Values []float32
}

// Run runs an ONNX file once on int64 feeds plus float inputs, returning
// every output by name.
func Run(t testing.TB, path string, feeds map[string][][]int64, floats map[string]Floats) map[string][]float32 {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	in := map[string]ort.Value{}
	defer func() {
		for _, v := range in {
			v.Close()
		}
	}()
	for name, rows := range feeds {
		var flat []int64
		for _, r := range rows {
			flat = append(flat, r...)
		}
		v, err := ort.NewTensor(flat, int64(len(rows)), int64(len(rows[0])))
		if err != nil {
			t.Fatal(err)
		}
		in[name] = v
	}
	for name, p := range floats {
		v, err := ort.NewTensor(p.Values, p.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		in[name] = v
	}
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string][]float32{}
	for i, info := range s.Outputs() {
		res[info.Name] = append([]float32(nil), outs[i].(*ort.Tensor[float32]).Data()...)
		outs[i].Close()
	}
	return res
}

// MaxAbsDiff is max|a − b|, +Inf when the lengths differ or a NaN appears.
func MaxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		x := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(x) {
			return math.Inf(1)
		}
		d = math.Max(d, x)
	}
	return d
}

// CloseTo checks max|got − want| ≤ tol · max(max|want|, 1e-3) and returns
// the relative difference.
func CloseTo(t *testing.T, what string, got, want []float32, tol float64) float64 {
	t.Helper()
	var scale float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	rel := MaxAbsDiff(got, want) / math.Max(scale, 1e-3)
	if !(rel <= tol) {
		t.Errorf("%s: max |Δ| relative to scale %.3g is %.3g > %.g", what, scale, rel, tol)
	}
	return rel
}

// PyRef is what a Python reference script wrote: a JSON index of float32
// arrays in one binary file, plus free-form JSON values.
type PyRef struct {
	Arrays map[string][2]int64 `json:"arrays"`
	Values map[string]any      `json:"values"`
	data   []byte
}

// ReadPyRef reads the reference a script wrote into dir.
func ReadPyRef(t testing.TB, dir string) *PyRef {
	t.Helper()
	ref := &PyRef{}
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(idx, ref); err != nil {
		t.Fatal(err)
	}
	if ref.data, err = os.ReadFile(filepath.Join(dir, "arrays.bin")); err != nil {
		t.Fatal(err)
	}
	return ref
}

// Get returns the array name.
func (r *PyRef) Get(t testing.TB, name string) []float32 {
	t.Helper()
	e, ok := r.Arrays[name]
	if !ok {
		t.Fatalf("the Python reference has no array %q", name)
	}
	out := make([]float32, e[1])
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.data[e[0]+4*int64(i):]))
	}
	return out
}

// PyPrelude defines put(name, tensor) and finish(values) for reference
// scripts writing a pyRef into the folder argv[1].
const PyPrelude = `
import json, math, sys
import numpy as np, torch, transformers
OUT = sys.argv[1]
_index = {"arrays": {}, "values": {}}
_bin = open(OUT + "/arrays.bin", "wb")
_off = 0
def put(name, t):
    global _off
    a = np.ascontiguousarray(t.detach().float().numpy(), dtype="<f4")
    _bin.write(a.tobytes())
    _index["arrays"][name] = [_off, a.size]
    _off += a.nbytes
def finish(values):
    _bin.close()
    _index["values"] = values
    json.dump(_index, open(OUT + "/index.json", "w"))
def load(ckpt, cls, feeds_path):
    model = getattr(transformers, cls).from_pretrained(ckpt).eval()
    feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in json.load(open(feeds_path)).items()}
    if cls == "LlamaForCausalLM":
        # migu numbers a real token by the real tokens before it, padding by
        # its index.
        feeds["position_ids"] = torch.where(feeds["attention_mask"] == 1, feeds["attention_mask"].cumsum(-1) - 1, torch.arange(feeds["attention_mask"].shape[-1]))
    return model, feeds
`

// WriteFeeds stores feeds as JSON for a Python script.
func WriteFeeds(t testing.TB, feeds map[string][][]int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "feeds.json")
	raw, _ := json.Marshal(feeds)
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// SameTensors checks that two safetensors files hold the same tensor names,
// dtypes, shapes and bytes.
func SameTensors(t testing.TB, a, b string) {
	t.Helper()
	fa, err := safetensors.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := safetensors.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	if !slices.Equal(fa.Names(), fb.Names()) {
		t.Fatalf("tensor names differ:\n%v\n%v", fa.Names(), fb.Names())
	}
	for _, n := range fa.Names() {
		ia, _ := fa.Info(n)
		ib, _ := fb.Info(n)
		xa, _ := fa.Bytes(n)
		xb, _ := fb.Bytes(n)
		if ia.DType != ib.DType || !slices.Equal(ia.Shape, ib.Shape) || string(xa) != string(xb) {
			t.Errorf("tensor %s: %s %v vs %s %v, bytes equal %v", n, ia.DType, ia.Shape, ib.DType, ib.Shape, string(xa) == string(xb))
		}
	}
}
