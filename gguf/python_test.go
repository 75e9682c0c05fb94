package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// pyPrelude holds what the scripts share: the canonical rendering of
// metadata (see canonKV) and gguf-py's dequantization, extended to Q8_K
// with ggml's formula (d·q), which gguf-py lacks.
const pyPrelude = `
import base64, hashlib, json, sys, warnings
import numpy as np
import gguf
from gguf import GGUFValueType as V, GGMLQuantizationType as Q
warnings.filterwarnings("ignore")
np.seterr(all="ignore")

def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).view(np.uint8).tobytes()).decode()

def canon_scalar(vt, v):
    if vt == V.FLOAT32:
        return "f32:%08x" % int(np.asarray(v, dtype=np.float32).view(np.uint32))
    if vt == V.FLOAT64:
        return "f64:%016x" % int(np.asarray(v, dtype=np.float64).view(np.uint64))
    if vt == V.BOOL:
        return "true" if bool(v) else "false"
    if vt == V.STRING:
        return v if isinstance(v, str) else bytes(v).decode("utf-8")
    return str(int(v))

# dequant takes data shaped in rows, as GGUFReader gives it: gguf-py works
# through groups of rows, so one block per row would be slow.
def dequant(data, qt):
    if qt == Q.Q8_K:
        blocks = np.ascontiguousarray(data).view(np.uint8).reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    return gguf.quants.dequantize(data, qt).reshape(-1).astype(np.float32, copy=False)

# walk renders the value that starts at parts[i] of a GGUFReader field.
def walk(parts, i, vt):
    if vt == V.STRING:
        return bytes(parts[i + 1]).decode("utf-8"), i + 2
    if vt == V.ARRAY:
        et, n = V(int(parts[i][0])), int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            c, i = walk(parts, i, et)
            items.append(c)
        return {"e": int(et), "v": items}, i
    return canon_scalar(vt, parts[i][0]), i + 1

def reader_kvs(r):
    out = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        vt = V(int(f.parts[2][0]))
        v, end = walk(f.parts, 3, vt)
        assert end == len(f.parts), name
        out.append({"k": name, "t": int(vt), "v": v})
    return out
`

// pyWrite writes, with gguf-py's GGUFWriter, metadata of every value type
// and tensors of every type this package reads, and reports what it wrote
// and what gguf-py dequantizes each tensor to.
const pyWrite = pyPrelude + `
path = sys.argv[1]
kvs = [
    ("t.u8", V.UINT8, 255, None), ("t.i8", V.INT8, -128, None),
    ("t.u16", V.UINT16, 65535, None), ("t.i16", V.INT16, -32768, None),
    ("t.u32", V.UINT32, 4294967295, None), ("t.i32", V.INT32, -2147483648, None),
    ("t.f32", V.FLOAT32, 3.14159, None), ("t.f32.nan", V.FLOAT32, float("nan"), None),
    ("t.f32.inf", V.FLOAT32, float("-inf"), None), ("t.f32.negzero", V.FLOAT32, -0.0, None),
    ("t.f32.sub", V.FLOAT32, 1e-45, None),
    ("t.bool.true", V.BOOL, True, None), ("t.bool.false", V.BOOL, False, None),
    ("t.str", V.STRING, "h\u00e9llo \u2713 \n\t\"q\"", None), ("t.str.empty", V.STRING, "", None),
    ("t.u64", V.UINT64, 2**64 - 1, None), ("t.i64", V.INT64, -2**63, None),
    ("t.f64", V.FLOAT64, 2.718281828459045, None), ("t.f64.nan", V.FLOAT64, float("nan"), None),
    ("a.u8", V.ARRAY, [0, 1, 255], V.UINT8), ("a.i8", V.ARRAY, [-128, 0, 127], V.INT8),
    ("a.u16", V.ARRAY, [0, 65535], V.UINT16), ("a.i16", V.ARRAY, [-32768, 7], V.INT16),
    ("a.u32", V.ARRAY, [1, 4294967295], V.UINT32), ("a.i32", V.ARRAY, [-1, 2147483647, 0], V.INT32),
    ("a.u64", V.ARRAY, [2**64 - 1, 3], V.UINT64), ("a.i64", V.ARRAY, [-2**63, 2**63 - 1], V.INT64),
    ("a.f32", V.ARRAY, [0.5, -1.25, float("inf"), float("nan"), -0.0, 1e-40], V.FLOAT32),
    ("a.f64", V.ARRAY, [1e300, -0.0, float("-inf"), 5e-324], V.FLOAT64),
    ("a.bool", V.ARRAY, [True, False, True], V.BOOL),
    ("a.str", V.ARRAY, ["a", "", "\u00fc", "<0x0A>", "\u0120the"], V.STRING),
    ("a.nested", V.ARRAY, [[1, 2], [3, 4, 5]], V.ARRAY),
    ("a.nested.mixed", V.ARRAY, [["x", "y"], [1.5], [True, False]], V.ARRAY),
    ("a.nested.deep", V.ARRAY, [[[1], [2, 3]], [["z"]]], V.ARRAY),
    ("\u00fcn\u00efcode.key", V.STRING, "v", None),
]
w = gguf.GGUFWriter(path, "test")
w.add_custom_alignment(64)
for k, vt, v, sub in kvs:
    w.add_key_value(k, v, vt, sub)

def canon(vt, v, sub=None):
    if vt != V.ARRAY:
        return canon_scalar(vt, v)
    et = sub if sub is not None else V.get_type(v[0])
    return {"e": int(et), "v": [canon(et, x) for x in v]}

want_kvs = [{"k": k, "t": int(g.type), "v": canon(g.type, g.value, g.sub_type)} for k, g in w.kv_data[0].items()]

rng = np.random.default_rng(42)
tensors = []
def add(name, qt, raw, shape):
    _, size = gguf.GGML_QUANT_SIZES[qt]
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(*shape[:-1], -1)
    w.add_tensor(name, raw, raw_dtype=qt)
    tensors.append({"name": name, "type": int(qt), "dims": list(reversed(shape)),
                    "raw": b64(raw), "want": b64(dequant(raw, qt))})

small = [(96,), (2, 64), (3, 2, 32), (2, 1, 2, 64)]
for qt in [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
    for i, shape in enumerate(small):
        data = (rng.standard_normal(shape) * 10.0 ** (i - 1)).astype(np.float32)
        add("%s.quantized.%d" % (qt.name, i), qt, gguf.quants.quantize(data, qt), shape)
    # Arbitrary bytes: scales may be NaN, infinite or subnormal.
    block, size = gguf.GGML_QUANT_SIZES[qt]
    add("%s.random" % qt.name, qt, rng.integers(0, 256, (3, 64 // block * size), dtype=np.uint8), (3, 64))

big = [(256,), (2, 512), (2, 1, 256), (1, 2, 1, 512)]
for qt, fields in [(Q.Q2_K, [80, 82]), (Q.Q3_K, [108]), (Q.Q4_K, [0, 2]), (Q.Q5_K, [0, 2]), (Q.Q6_K, [208]), (Q.Q8_K, [])]:
    _, size = gguf.GGML_QUANT_SIZES[qt]
    for i, shape in enumerate(big):
        n = int(np.prod(shape)) // 256
        blocks = rng.integers(0, 256, (n, size), dtype=np.uint8)
        for off in fields:
            blocks[:, off:off + 2] = (rng.standard_normal((n, 1)) * 0.01).astype(np.float16).view(np.uint8)
        if qt == Q.Q8_K:
            blocks[:, 0:4] = (rng.standard_normal((n, 1)) * 0.01).astype(np.float32).view(np.uint8)
        add("%s.%d" % (qt.name, i), qt, blocks, shape)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
json.dump({"kvs": want_kvs, "tensors": tensors}, sys.stdout)
`

// pyDump reads a file with gguf-py's GGUFReader and reports its metadata,
// tensor infos, raw data and dequantized values.
const pyDump = pyPrelude + `
r = gguf.GGUFReader(sys.argv[1])
tensors = []
for t in r.tensors:
    tensors.append({"name": t.name, "type": int(t.tensor_type), "dims": [int(d) for d in t.shape],
                    "offset": int(t.data_offset - r.data_offset), "raw": b64(t.data), "want": b64(dequant(t.data, t.tensor_type))})
json.dump({"alignment": int(r.alignment), "kvs": reader_kvs(r), "tensors": tensors}, sys.stdout)
`

type pyTensor struct {
	Name   string   `json:"name"`
	Type   Type     `json:"type"`
	Dims   []uint64 `json:"dims"`
	Offset uint64   `json:"offset"`
	Raw    []byte   `json:"raw"`
	Want   []byte   `json:"want"` // float32 little-endian
	SHA256 string   `json:"sha256"`
}

type pyFile struct {
	Alignment uint64     `json:"alignment"`
	KVs       []any      `json:"kvs"`
	Tensors   []pyTensor `json:"tensors"`
}

func runPy(t *testing.T, script string, args ...string) pyFile {
	t.Helper()
	var out pyFile
	if err := json.Unmarshal(testenv.RunPython(t, script, args...), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkTensors compares our reading of every tensor with gguf-py's: info,
// stored bytes, and dequantized values bit for bit.
func checkTensors(t *testing.T, f *File, want []pyTensor) {
	t.Helper()
	if len(f.Tensors) != len(want) {
		t.Fatalf("%d tensors, gguf-py has %d", len(f.Tensors), len(want))
	}
	for i, w := range want {
		got := f.Tensors[i]
		if got.Name != w.Name || got.Type != w.Type || !slices.Equal(got.Dims, w.Dims) {
			t.Errorf("tensor %d: %s %s %v, gguf-py has %s %s %v", i, got.Name, got.Type, got.Dims, w.Name, w.Type, w.Dims)
			continue
		}
		raw, err := f.Bytes(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if w.Raw != nil && !bytes.Equal(raw, w.Raw) {
			t.Errorf("%s: stored bytes differ from what gguf-py has", w.Name)
		}
		vals, err := f.Float32(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if w.SHA256 != "" {
			if h := sha256.Sum256(floatsToBytes(vals)); hex.EncodeToString(h[:]) != w.SHA256 {
				t.Errorf("%s (%s): dequantized values differ from gguf-py's (sha256)", w.Name, w.Type)
			}
			continue
		}
		if j, ok := sameBits(vals, floatsFromBytes(w.Want)); !ok {
			if j < 0 {
				t.Errorf("%s (%s): %d values, gguf-py has %d", w.Name, w.Type, len(vals), len(w.Want)/4)
			} else {
				t.Errorf("%s (%s): value %d is %g (%#08x), gguf-py has %g", w.Name, w.Type, j, vals[j], vals[j], floatsFromBytes(w.Want)[j])
			}
		}
		into := make([]float32, len(vals))
		if err := f.ReadInto(w.Name, into); err != nil {
			t.Fatal(err)
		}
		if _, ok := sameBits(into, vals); !ok {
			t.Errorf("%s: ReadInto differs from Float32", w.Name)
		}
	}
}

func TestReadPythonFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "py.gguf")
	want := runPy(t, pyWrite, path)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Version != 3 || f.Alignment != 64 || f.Architecture() != "test" {
		t.Errorf("version %d, alignment %d, architecture %q; want 3, 64, test", f.Version, f.Alignment, f.Architecture())
	}
	got := make([]any, len(f.KVs))
	for i, kv := range f.KVs {
		got[i] = canonKV(kv)
	}
	sameJSON(t, "metadata", got, want.KVs)
	checkTensors(t, f, want.Tensors)

	types := map[Type]bool{}
	for _, w := range want.Tensors {
		types[w.Type] = true
	}
	if len(types) != len(layouts) {
		t.Errorf("the file covers %d tensor types, the package reads %d", len(types), len(layouts))
	}
}

// ourFile writes a file with Writer: metadata of every value type, and
// tensors of every type with 1 to 4 dims (quantized by Quantize where it
// can, random blocks with finite scales otherwise).
func ourFile(t *testing.T, path string, align uint32) *Writer {
	t.Helper()
	w := NewWriter()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Add("general.architecture", "llama"))
	if align != 0 {
		must(w.AddKV(KV{Key: AlignmentKey, Type: Uint32, Value: int(align)}))
	}
	for _, kv := range []struct {
		key string
		v   any
	}{
		{"s.u8", uint8(200)}, {"s.i8", int8(-5)}, {"s.u16", uint16(65535)}, {"s.i16", int16(-32768)},
		{"s.u32", uint32(4294967295)}, {"s.i32", int32(-7)}, {"s.f32", float32(1e-5)}, {"s.bool", true},
		{"s.str", "tab\there \"é\" ✓"}, {"s.empty", ""}, {"s.u64", uint64(1<<64 - 1)}, {"s.i64", int64(-1 << 63)},
		{"s.f64", 0.1}, {"s.f32.nan", float32(nan32())}, {"s.f32.negzero", float32(negZero())},
		{"a.u8", []uint8{0, 255}}, {"a.i8", []int8{-128, 127}}, {"a.u16", []uint16{1, 2}}, {"a.i16", []int16{-1}},
		{"a.u32", []uint32{}}, {"a.i32", []int32{-2147483648, 2147483647}}, {"a.f32", []float32{0.25, float32(nan32()), -1e38}},
		{"a.bool", []bool{false, true}}, {"a.str", []string{"", "Ġa", "\x00b"}}, {"a.u64", []uint64{1 << 63}},
		{"a.i64", []int64{-1}}, {"a.f64", []float64{1e-310, -2}},
		{"a.nested", []any{[]int32{1, 2}, []string{"x"}, []any{[]float32{1.5}, []bool{}}}},
	} {
		must(w.Add(kv.key, kv.v))
	}
	must(w.AddKV(KV{Key: "tokenizer.ggml.token_type", Type: Array, ElemType: Int32, Value: []int32{1, 3, 6}}))

	rng := rand.New(rand.NewPCG(7, 7))
	shapes := [][]int64{{64}, {2, 64}, {3, 1, 32}, {2, 1, 2, 32}}
	bigShapes := [][]int64{{256}, {2, 512}, {2, 1, 256}, {1, 2, 1, 256}}
	for _, l := range layouts {
		ss := shapes
		if l.elems == 256 {
			ss = bigShapes
		}
		for i, s := range ss {
			n := int(prod(s))
			var data []byte
			if _, ok := quantKernels[l.t]; ok {
				vals := make([]float32, n)
				for j := range vals {
					vals[j] = float32(rng.NormFloat64())
				}
				var err error
				if data, err = Quantize(l.t, vals); err != nil {
					t.Fatal(err)
				}
			} else {
				data = randomBlocks(rng, l.t, n/l.elems)
			}
			must(w.AddTensor(l.t.String()+"."+string(rune('a'+i)), l.t, s, func() ([]byte, error) { return data, nil }))
		}
	}
	must(w.Write(path))
	return w
}

func prod(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// gguf-py must read what we write: the same metadata, tensor infos and
// data, and dequantize it to what we do.
func TestPythonReadsOurFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "go.gguf")
	w := ourFile(t, path, 0)
	py := runPy(t, pyDump, path)
	if py.Alignment != DefaultAlignment {
		t.Errorf("gguf-py reads alignment %d", py.Alignment)
	}
	want := make([]any, len(w.kvs))
	for i, kv := range w.kvs {
		want[i] = canonKV(kv)
	}
	sameJSON(t, "gguf-py's metadata", py.KVs, want)

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]any, len(f.KVs))
	for i, kv := range f.KVs {
		got[i] = canonKV(kv)
	}
	sameJSON(t, "our metadata", got, want)
	for i, ti := range w.Tensors() {
		if p := py.Tensors[i]; p.Offset != ti.Offset || f.Tensors[i].Offset != ti.Offset {
			t.Errorf("%s: offset %d, gguf-py reads %d, we read %d", ti.Name, ti.Offset, p.Offset, f.Tensors[i].Offset)
		}
	}
	checkTensors(t, f, py.Tensors)
}

// The real SmolLM2-135M-Instruct GGUF (Q4_1, Q8_0 and F32 tensors, a 49k
// token vocabulary): metadata as gguf-py reads it, and every tensor
// dequantized to the same values (compared by hash).
func TestSmolLM2(t *testing.T) {
	if testing.Short() {
		t.Skip("reads a 98 MB model")
	}
	path := testenv.SmolLM2(t)
	py := runPy(t, pyPrelude+`
r = gguf.GGUFReader(sys.argv[1])
tensors = [{"name": t.name, "type": int(t.tensor_type), "dims": [int(d) for d in t.shape],
            "offset": int(t.data_offset - r.data_offset),
            "sha256": hashlib.sha256(dequant(t.data, t.tensor_type).tobytes()).hexdigest()} for t in r.tensors]
json.dump({"alignment": int(r.alignment), "kvs": reader_kvs(r), "tensors": tensors}, sys.stdout)
`, path)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]any, len(f.KVs))
	for i, kv := range f.KVs {
		got[i] = canonKV(kv)
	}
	sameJSON(t, "metadata", got, py.KVs)
	checkTensors(t, f, py.Tensors)
}
