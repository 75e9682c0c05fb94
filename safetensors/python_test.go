package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/internal/testenv"
)

// pyTensor is a tensor as the Python side reports it: float values as the
// bits of their float32 widening, integers as themselves.
type pyTensor struct {
	DType string   `json:"dtype"`
	Shape []int64  `json:"shape"`
	Bits  []uint32 `json:"bits"`
	Ints  []int64  `json:"ints"`
}

type pyFile struct {
	Metadata map[string]string   `json:"metadata"`
	Tensors  map[string]pyTensor `json:"tensors"`
}

// pyDump prints a file as Python's safetensors loads it.
const pyDump = `
import json, sys, torch
from safetensors import safe_open
out = {"tensors": {}}
with safe_open(sys.argv[1], framework="pt") as f:
    out["metadata"] = f.metadata()
    for k in f.keys():
        t = f.get_tensor(k)
        d = {"dtype": str(t.dtype), "shape": list(t.shape)}
        if t.dtype.is_floating_point:
            d["bits"] = [b & 0xffffffff for b in t.float().reshape(-1).view(torch.int32).tolist()]
        else:
            d["ints"] = t.reshape(-1).tolist()
        out["tensors"][k] = d
json.dump(out, sys.stdout)
`

func dumpWithPython(t *testing.T, path string) pyFile {
	t.Helper()
	var got pyFile
	if err := json.Unmarshal(testenv.RunPython(t, pyDump, path), &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// sameFloatBits compares bit patterns, treating any two NaNs as equal (the
// widening of a 16-bit NaN may set payload bits differently).
func sameFloatBits(got []float32, want []uint32) bool {
	if len(got) != len(want) {
		return false
	}
	for i, g := range got {
		w := math.Float32frombits(want[i])
		if math.Float32bits(g) != want[i] && !(g != g && w != w) {
			return false
		}
	}
	return true
}

// Python writes F32, F16, BF16, F64, I64 tensors and metadata, then reports
// what it wrote; we must read the same values, bit for bit.
func TestReadPythonFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "py.safetensors")
	out := testenv.RunPython(t, `
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
base = torch.randn(4, 5, generator=g) * 100
special = torch.tensor([0.0, -0.0, 1.0, float("inf"), float("-inf"), float("nan"), 1e-40, 65504.0, 7e4, 1e-8])
save_file({
    "model.layers.0.q.weight": base,
    "half": base.half(),
    "bf16": base.bfloat16(),
    "f64": base.double(),
    "special.f32": special,
    "special.f16": special.half(),
    "special.bf16": special.bfloat16(),
    "position_ids": torch.arange(-3, 7, dtype=torch.int64).reshape(1, 10),
    "scalar": torch.tensor(3.5),
    "empty": torch.zeros(0, 3),
}, sys.argv[1], metadata={"format": "pt", "ünïcode": "\"q\"\n"})
`+pyDump, path)
	var want pyFile
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m := f.Metadata(); len(m) != len(want.Metadata) || m["format"] != "pt" || m["ünïcode"] != want.Metadata["ünïcode"] {
		t.Errorf("Metadata = %q, want %q", m, want.Metadata)
	}
	if got := f.Names(); len(got) != len(want.Tensors) {
		t.Errorf("Names = %q, want %d tensors", got, len(want.Tensors))
	}
	for name, w := range want.Tensors {
		info, err := f.Info(name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(info.Shape, w.Shape) {
			t.Errorf("%s: shape %v, want %v", name, info.Shape, w.Shape)
		}
		if w.Bits == nil && w.Ints != nil {
			raw, _ := f.Bytes(name)
			for i, v := range w.Ints {
				if got := int64(binary.LittleEndian.Uint64(raw[8*i:])); got != v {
					t.Errorf("%s[%d] = %d, want %d", name, i, got, v)
				}
			}
			continue
		}
		got, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		if !sameFloatBits(got, w.Bits) {
			t.Errorf("%s (%s): Float32 = %v, Python has bits %x", name, info.DType, got, w.Bits)
		}
	}
}

// Python must load what we write: the same values, dtypes and metadata.
func TestPythonReadsOurFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "go.safetensors")
	vals := make([]float32, 30)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i))) * float32(i*i)
	}
	vals = append(vals, specials...)
	ids := make([]byte, 8*4)
	for i, v := range []int64{-7, 0, 1, math.MinInt64} {
		binary.LittleEndian.PutUint64(ids[8*i:], uint64(v))
	}
	meta := map[string]string{"format": "pt", "step": "12", "note": "é\t\"x\"\u2028"}
	n := int64(len(vals))
	err := Write(path, []Tensor{
		{Name: "w.f32", DType: F32, Shape: []int64{1, n}, Values: vals},
		{Name: "w.f16", DType: F16, Shape: []int64{n}, Values: vals},
		{Name: "w.bf16", DType: BF16, Shape: []int64{n, 1}, Values: vals},
		{Name: "w.f64", DType: F64, Shape: []int64{n}, Values: vals},
		{Name: "ids", DType: I64, Shape: []int64{2, 2}, Data: ids},
		{Name: "scalar", DType: F32, Shape: []int64{}, Values: []float32{-1}},
		{Name: "empty", DType: BF16, Shape: []int64{3, 0}, Values: []float32{}},
	}, meta)
	if err != nil {
		t.Fatal(err)
	}
	got := dumpWithPython(t, path)
	if len(got.Metadata) != len(meta) {
		t.Errorf("Python metadata %q, want %q", got.Metadata, meta)
	}
	for k, v := range meta {
		if got.Metadata[k] != v {
			t.Errorf("Python metadata[%q] = %q, want %q", k, got.Metadata[k], v)
		}
	}
	rounded := func(f func(float32) float32) []float32 {
		out := make([]float32, len(vals))
		for i, v := range vals {
			out[i] = f(v)
		}
		return out
	}
	want := map[string]struct {
		dtype string
		shape []int64
		vals  []float32
	}{
		"w.f32":  {"torch.float32", []int64{1, n}, vals},
		"w.f16":  {"torch.float16", []int64{n}, rounded(func(v float32) float32 { return half.F16ToF32(half.F32ToF16(v)) })},
		"w.bf16": {"torch.bfloat16", []int64{n, 1}, rounded(func(v float32) float32 { return half.BF16ToF32(half.F32ToBF16(v)) })},
		"w.f64":  {"torch.float64", []int64{n}, vals},
		"scalar": {"torch.float32", []int64{}, []float32{-1}},
		"empty":  {"torch.bfloat16", []int64{3, 0}, []float32{}},
	}
	for name, w := range want {
		p, ok := got.Tensors[name]
		if !ok {
			t.Errorf("Python lacks %q", name)
			continue
		}
		if p.DType != w.dtype || !slices.Equal(p.Shape, w.shape) || !sameFloatBits(w.vals, p.Bits) {
			t.Errorf("%s: Python has %s %v bits %x, want %s %v %v", name, p.DType, p.Shape, p.Bits, w.dtype, w.shape, w.vals)
		}
	}
	if p := got.Tensors["ids"]; !slices.Equal(p.Ints, []int64{-7, 0, 1, math.MinInt64}) || !slices.Equal(p.Shape, []int64{2, 2}) {
		t.Errorf("ids: Python has %+v", p)
	}
}

// For the same tensors and metadata, our file must equal the reference
// writer's byte for byte: ordering, offsets, JSON escaping and padding.
func TestByteIdenticalToPython(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.safetensors")
	testenv.RunPython(t, `
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(1)
ts = {
    "model.embed_tokens.weight": torch.randn(7, 3, generator=g),
    "model.layers.0.self_attn.q_proj.weight": torch.randn(3, 3, generator=g),
    "lm_head.weight": torch.randn(7, 3, generator=g),
    "b": torch.randn(5, generator=g).half(),
    "a": torch.randn(3, generator=g).bfloat16(),
    "ids": torch.arange(5),
    "flags": torch.tensor([True, False, True]),
    "weird \"name\"\n\u00e9\u2028/<>": torch.ones(1),
    "empty": torch.zeros(0),
}
save_file(ts, sys.argv[1], metadata={"format": "pt"})
`, ref)
	src, err := Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ts []Tensor
	for _, name := range src.Names() {
		info, _ := src.Info(name)
		tensor := Tensor{Name: name, DType: info.DType, Shape: info.Shape}
		if info.DType.converts() {
			tensor.Values, err = src.Float32(name)
		} else {
			tensor.Data, err = src.Bytes(name)
		}
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tensor)
	}
	ours := filepath.Join(dir, "ours.safetensors")
	if err := Write(ours, ts, src.Metadata()); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(ref)
	b, _ := os.ReadFile(ours)
	if !bytes.Equal(a, b) {
		n := min(len(a), len(b), 600)
		t.Errorf("our file differs from the reference writer's\nref:  %q\nours: %q", a[:n], b[:n])
	}
}
