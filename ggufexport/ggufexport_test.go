package ggufexport

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

const ggufRef = "exporters/testdata/gguf_ref.py"

// tinyModel exports the reference script's tiny Llama GGUF (F32; tied
// head or not) into a model folder.
func tinyModel(t *testing.T, tied bool) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.gguf")
	testenv.RunScript(t, ggufRef, "tiny", "F32", map[bool]string{true: "1", false: "0"}[tied], path)
	model := filepath.Join(dir, "model")
	if _, err := exporters.Export(path, model); err != nil {
		t.Fatal(err)
	}
	return model
}

// weights reads every float initializer of a model folder.
func weights(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := map[string][]float32{}
	for _, init := range m.Proto.Graph.Initializer {
		if !onnx.DType(init.GetDataType()).IsFloat() || len(init.Dims) == 0 {
			continue
		}
		v, err := m.Float32s(init)
		if err != nil {
			t.Fatal(err)
		}
		out[init.GetName()] = v
	}
	return out
}

// fixedIDs are the tokens the tiny models are run on.
var fixedIDs = []int64{1, 5, 9, 44, 200, 13, 17, 250, 262, 263, 7, 0}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func maxAbsDiff(a, b []float32) float64 {
	worst := 0.0
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst
}

// TestModelRoundTrip writes a model folder as GGUF in every type, exports
// the file again and compares: F32 gives the same weights bit for bit and
// the same logits; F16, BF16 and Q8_0 stay within their precision; gguf-py
// reads every file as our reader does.
func TestModelRoundTrip(t *testing.T) {
	model := tinyModel(t, false)
	base, baseLogits := weights(t, model), testfix.Logits(t, model, fixedIDs)
	scale := maxAbsDiff(baseLogits, make([]float32, len(baseLogits)))
	// rel bounds |Δw| / max|w| per tensor: the type's relative rounding
	// error (Q8_0: half a step of 1/127 of the block's largest value, with
	// the scale itself rounded to f16). Logits may drift by 4·rel·max|logit|.
	for _, c := range []struct {
		typ gguf.Type
		rel float64
	}{
		{gguf.F32, 0},
		{gguf.F16, 1.0 / 2048},
		{gguf.BF16, 1.0 / 256},
		{gguf.Q8_0, 1.0 / 127},
	} {
		t.Run(c.typ.String(), func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "m.gguf")
			res, err := Model(model, file, Options{Type: c.typ})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tensors != 21 || len(res.Widened) != 0 {
				t.Fatalf("wrote %d tensors (widened %v), want 21", res.Tensors, res.Widened)
			}
			again := filepath.Join(dir, "model")
			if _, err := exporters.Export(file, again); err != nil {
				t.Fatal(err)
			}
			got := weights(t, again)
			if len(got) != len(base) {
				t.Fatalf("%d initializers after the round trip, %d before", len(got), len(base))
			}
			for name, want := range base {
				scale := 0.0
				for _, v := range want {
					scale = max(scale, math.Abs(float64(v)))
				}
				if d := maxAbsDiff(got[name], want); d > c.rel*scale {
					t.Errorf("%s: max |Δ| %.3g > %.3g", name, d, c.rel*scale)
				}
			}
			d := maxAbsDiff(testfix.Logits(t, again, fixedIDs), baseLogits)
			t.Logf("%v: max |Δlogit| %.3g (max |logit| %.3g), %d bytes", c.typ, d, scale, res.Bytes)
			if d > 4*c.rel*scale {
				t.Errorf("max |Δlogit| %.3g > %.3g", d, 4*c.rel*scale)
			}
			for _, f := range []string{modeldir.TokenizerFile, modeldir.ConfigFile} {
				a, _ := os.ReadFile(filepath.Join(model, f))
				b, _ := os.ReadFile(filepath.Join(again, f))
				if string(a) != string(b) {
					t.Errorf("%s differs after the round trip:\n%s\n%s", f, a, b)
				}
			}
			// tokenizer_config.json may gain explicit defaults (add_eos_token
			// false); what it says must not change.
			var before, after map[string]any
			readJSON(t, filepath.Join(model, modeldir.TokenizerConfigFile), &before)
			readJSON(t, filepath.Join(again, modeldir.TokenizerConfigFile), &after)
			for k, v := range before {
				if !reflect.DeepEqual(after[k], v) {
					t.Errorf("tokenizer_config.json %s: %v after the round trip, %v before", k, after[k], v)
				}
			}
			compareWithGGUFPy(t, file)
		})
	}
}

// valueTypeNames are gguf-py's names of GGUF value types.
var valueTypeNames = map[gguf.ValueType]string{
	gguf.Uint8: "UINT8", gguf.Int8: "INT8", gguf.Uint16: "UINT16", gguf.Int16: "INT16", gguf.Uint32: "UINT32",
	gguf.Int32: "INT32", gguf.Float32: "FLOAT32", gguf.Bool: "BOOL", gguf.String: "STRING", gguf.Array: "ARRAY",
	gguf.Uint64: "UINT64", gguf.Int64: "INT64", gguf.Float64: "FLOAT64",
}

// compareWithGGUFPy reads a file with gguf-py and with our reader and
// compares keys, value types, values and dequantized tensors.
func compareWithGGUFPy(t *testing.T, path string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dump.json")
	testenv.RunScript(t, ggufRef, "dump", path, out)
	var dump struct {
		KV map[string]struct {
			Types []string
			Value any
		}
		Tensors map[string]struct {
			Type   string
			Dims   []uint64
			SHA256 string
		}
	}
	raw, err := os.ReadFile(out)
	if err != nil || json.Unmarshal(raw, &dump) != nil {
		t.Fatalf("gguf-py dump: %v", err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.KVs) != len(dump.KV) {
		t.Errorf("our reader sees %d keys, gguf-py %d", len(f.KVs), len(dump.KV))
	}
	for _, kv := range f.KVs {
		py, ok := dump.KV[kv.Key]
		if !ok {
			t.Errorf("gguf-py does not see key %s", kv.Key)
			continue
		}
		types := []string{valueTypeNames[kv.Type]}
		if kv.Type == gguf.Array {
			types = append(types, valueTypeNames[kv.ElemType])
		}
		if !reflect.DeepEqual(types, py.Types) {
			t.Errorf("key %s: types %v, gguf-py %v", kv.Key, types, py.Types)
		}
		ours, _ := json.Marshal(kv.Value)
		var norm any
		json.Unmarshal(ours, &norm)
		if kv.Type == gguf.Float32 {
			// Both sides as float32: JSON prints our float32 as its
			// shortest form, gguf-py's as the float64 it widens to.
			if f, ok := py.Value.(float64); ok {
				py.Value = float64(float32(f))
			}
			if f, ok := norm.(float64); ok {
				norm = float64(float32(f))
			}
		}
		if fmt.Sprint(norm) != fmt.Sprint(py.Value) {
			t.Errorf("key %s: value %.80s, gguf-py %.80s", kv.Key, fmt.Sprint(norm), fmt.Sprint(py.Value))
		}
	}
	if len(f.Tensors) != len(dump.Tensors) {
		t.Errorf("our reader sees %d tensors, gguf-py %d", len(f.Tensors), len(dump.Tensors))
	}
	for _, info := range f.Tensors {
		py, ok := dump.Tensors[info.Name]
		if !ok {
			t.Errorf("gguf-py does not see tensor %s", info.Name)
			continue
		}
		vals, err := f.Float32(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		sum := sha256.Sum256(buf)
		if info.Type.String() != py.Type || !reflect.DeepEqual(info.Dims, py.Dims) || hex.EncodeToString(sum[:]) != py.SHA256 {
			t.Errorf("tensor %s: %v %v, gguf-py %s %v (values equal: %v)", info.Name, info.Type, info.Dims, py.Type, py.Dims, hex.EncodeToString(sum[:]) == py.SHA256)
		}
	}
}

// randomAdapter saves a LoRA adapter for model with random A and B (B is
// zero after initialisation, which would hide a wrong B).
func randomAdapter(t *testing.T, model string, targets []string) string {
	t.Helper()
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lora.New(lora.Config{R: 4, Alpha: 8, Targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Load(filepath.Join(model, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	values := map[string][]float32{}
	for _, p := range inj.Params {
		v := make([]float32, len(p.Init))
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.1)
		}
		values[p.Name] = v
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir, man, values); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAdapterGGUF writes a LoRA adapter in llama.cpp's adapter layout,
// applies it by hand to the base model's GGUF tensors (W += α/r · B·A)
// and compares with the merged model export-gguf writes with --adapter.
func TestAdapterGGUF(t *testing.T) {
	model := tinyModel(t, false)
	adapter := randomAdapter(t, model, []string{"q", "k", "v", "o", "ffn_out"})
	dir := t.TempDir()
	loraFile, baseFile, mergedFile := filepath.Join(dir, "lora.gguf"), filepath.Join(dir, "base.gguf"), filepath.Join(dir, "merged.gguf")
	res, err := Adapter(model, adapter, loraFile, gguf.F32)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tensors != 2*5*2 {
		t.Fatalf("%d adapter tensors, want 20", res.Tensors)
	}
	if _, err := Model(model, baseFile, Options{Type: gguf.F32}); err != nil {
		t.Fatal(err)
	}
	if _, err := Model(model, mergedFile, Options{Type: gguf.F32, Adapter: adapter}); err != nil {
		t.Fatal(err)
	}
	compareWithGGUFPy(t, loraFile)
	lf, err := gguf.Open(loraFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	for key, want := range map[string]string{"general.type": "adapter", "adapter.type": "lora", "general.architecture": "llama"} {
		if got, _, _ := lf.String(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	alpha, ok, err := lf.Float("adapter.lora.alpha")
	if err != nil || !ok || alpha != 8 {
		t.Fatalf("adapter.lora.alpha = %v, %v, %v; want 8", alpha, ok, err)
	}
	bf, err := gguf.Open(baseFile)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	mf, err := gguf.Open(mergedFile)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	checked := 0
	for _, info := range lf.Tensors {
		w, ok := strings.CutSuffix(info.Name, ".lora_a")
		if !ok {
			continue
		}
		a, err := lf.Float32(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := lf.Float32(w + ".lora_b")
		if err != nil {
			t.Fatal(err)
		}
		base, err := bf.Float32(w)
		if err != nil {
			t.Fatal(err)
		}
		merged, err := mf.Float32(w)
		if err != nil {
			t.Fatal(err)
		}
		shape := info.Shape() // [r, d_in]
		r, dIn := shape[0], shape[1]
		dOut := int64(len(b)) / r
		worst := 0.0
		for o := range dOut {
			for i := range dIn {
				sum := 0.0
				for k := range r {
					sum += float64(b[o*r+k]) * float64(a[k*dIn+i])
				}
				want := float64(base[o*dIn+i]) + 2*sum // α/r = 8/4
				worst = max(worst, math.Abs(want-float64(merged[o*dIn+i])))
			}
		}
		if worst > 1e-5 {
			t.Errorf("%s: by-hand application differs from the merged model by %.3g", w, worst)
		}
		checked++
	}
	if checked != 10 {
		t.Fatalf("checked %d adapted weights, want 10", checked)
	}
}

func TestBadInput(t *testing.T) {
	model := tinyModel(t, true)
	dir := t.TempDir()
	headAdapter := randomAdapter(t, model, []string{"head"})
	for _, c := range []struct {
		name string
		run  func() error
		want string
	}{
		{"output is a folder", func() error { _, err := Model(model, dir, Options{Type: gguf.F16}); return err }, "is a folder"},
		{"not a model folder", func() error { _, err := Model(dir, filepath.Join(dir, "x.gguf"), Options{Type: gguf.F16}); return err }, "migu.json"},
		{"type migu does not write", func() error {
			_, err := Model(model, filepath.Join(dir, "x.gguf"), Options{Type: gguf.Q4_K})
			return err
		}, "not one migu writes"},
		{"tied head adapter", func() error {
			_, err := Adapter(model, headAdapter, filepath.Join(dir, "a.gguf"), gguf.F32)
			return err
		}, "cannot adapt a tied head"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v; want a bad-input error mentioning %q", err, c.want)
			}
		})
	}
	if _, err := ParseType("q4_k"); err == nil || !badinput.Is(err) {
		t.Errorf("ParseType(q4_k) = %v", err)
	}
	// A merged tied head gets a weight of its own: output.weight appears.
	file := filepath.Join(dir, "merged.gguf")
	if _, err := Model(model, file, Options{Type: gguf.F32, Adapter: headAdapter}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Tensor("output.weight"); !ok {
		t.Error("merging an adapter on the tied head wrote no output.weight")
	}
}
