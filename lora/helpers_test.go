package lora

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// fixtureRoot holds the tiny models every test shares, built once.
var fixtureRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "migu-lora-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// archCase is one architecture of the tests: its transformers class and a
// batch (with padding) in the feeds its graph takes, labels included.
type archCase struct {
	arch, class string
	feeds       map[string][][]int64
}

var (
	ids  = [][]int64{{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, 1, 1}}
	mask = [][]int64{{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}
)

var archCases = map[string]archCase{
	"llama": {"llama", "LlamaForCausalLM", map[string][][]int64{"input_ids": ids, "attention_mask": mask,
		"labels": {{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, -100, -100}}}},
	"t5": {"t5", "T5ForConditionalGeneration", map[string][][]int64{"input_ids": ids, "attention_mask": mask,
		"decoder_input_ids": {{0, 7, 9, 2}, {0, 5, 1, 0}}, "decoder_attention_mask": {{1, 1, 1, 1}, {1, 1, 1, 0}},
		"labels": {{7, 9, 2, 1}, {5, 1, 2, -100}}}},
	"roberta": {"roberta", "RobertaForMaskedLM", map[string][][]int64{"input_ids": ids, "attention_mask": mask,
		"labels": {{-100, 9, -100, 3, -100, -100}, {4, -100, -100, 6, -100, -100}}}},
}

// forwardFeeds drops the labels, which the forward graphs do not take.
func (c archCase) forwardFeeds() map[string][][]int64 {
	f := map[string][][]int64{}
	for k, v := range c.feeds {
		if k != "labels" {
			f[k] = v
		}
	}
	return f
}

type fixture struct {
	hf, model string
	err       error
	once      sync.Once
}

var fixtures sync.Map // arch → *fixture

// model returns the Hugging Face checkpoint and the exported model folder of
// a tiny model of arch, made once for the whole test binary.
func model(t testing.TB, arch string) (hf, dir string, man *modeldir.Manifest) {
	t.Helper()
	v, _ := fixtures.LoadOrStore(arch, &fixture{})
	f := v.(*fixture)
	f.once.Do(func() {
		f.hf = filepath.Join(fixtureRoot, arch+"-hf")
		f.model = filepath.Join(fixtureRoot, arch)
		if _, f.err = exporters.Init(f.hf, exporters.InitOptions{Arch: arch, Preset: "tiny", VocabSize: 600}); f.err != nil {
			return
		}
		_, f.err = exporters.Export(f.hf, f.model)
	})
	if f.err != nil {
		t.Fatal(f.err)
	}
	man, err := modeldir.ReadManifest(f.model)
	if err != nil {
		t.Fatal(err)
	}
	return f.hf, f.model, man
}

// loadModel loads a model folder's forward graph.
func loadModel(t testing.TB, dir string) *onnx.Model {
	t.Helper()
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// injected returns the model of dir with adapter a injected (inference
// mode), saved inline into a temporary file, and the injection.
func injected(t testing.TB, dir string, man *modeldir.Manifest, a adapters.Adapter, opt adapters.InjectOptions) (string, *adapters.Injection) {
	t.Helper()
	m := loadModel(t, dir)
	inj, err := a.Inject(m, man, opt)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalNone}); err != nil {
		t.Fatal(err)
	}
	return path, inj
}

// run runs an ONNX file once on int64 feeds plus float inputs, returning
// every output by name.
func run(t testing.TB, path string, feeds map[string][][]int64, floats map[string]adapters.Param) map[string][]float32 {
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
		v, err := ort.NewTensor(p.Init, p.Shape...)
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

// maxAbsDiff is max|a − b|, +Inf when the lengths differ or a NaN appears.
func maxAbsDiff(a, b []float32) float64 {
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

// closeTo checks max|got − want| ≤ tol · max(max|want|, 1e-3) and returns
// the relative difference.
func closeTo(t *testing.T, what string, got, want []float32, tol float64) float64 {
	t.Helper()
	var scale float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	rel := maxAbsDiff(got, want) / math.Max(scale, 1e-3)
	if !(rel <= tol) {
		t.Errorf("%s: max |Δ| relative to scale %.3g is %.3g > %.g", what, scale, rel, tol)
	}
	return rel
}

// pyRef is what a Python reference script wrote: a JSON index of float32
// arrays in one binary file, plus free-form JSON values.
type pyRef struct {
	Arrays map[string][2]int64 `json:"arrays"`
	Values map[string]any      `json:"values"`
	data   []byte
}

func readPyRef(t testing.TB, dir string) *pyRef {
	t.Helper()
	ref := &pyRef{}
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

func (r *pyRef) get(t testing.TB, name string) []float32 {
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

// pyPrelude defines put(name, tensor) and finish(values) for reference
// scripts writing a pyRef into the folder argv[1].
const pyPrelude = `
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

// writeFeeds stores feeds as JSON for a Python script.
func writeFeeds(t testing.TB, feeds map[string][][]int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "feeds.json")
	raw, _ := json.Marshal(feeds)
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
