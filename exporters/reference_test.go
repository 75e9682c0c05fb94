package exporters

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// hfScript builds a transformers model from a config with every parameter
// randomised (norm weights around 1, the rest around 0, so that no weight
// is left at an identity value that would hide a mistake), saves it as a
// Hugging Face checkpoint with a small tokenizer.json, and writes the
// logits of one forward pass on the given feeds.
const hfScript = `
import json, sys
import numpy as np, torch, transformers
from tokenizers import Tokenizer, models

spec = json.load(open(sys.argv[1]))
out = sys.argv[2]
torch.manual_seed(spec["seed"])
config = transformers.AutoConfig.for_model(**spec["config"])
model = getattr(transformers, spec["class"])(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name.lower() and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn_like(p))
        else:
            p.copy_(spec.get("std", 0.1) * torch.randn_like(p))
if spec.get("dtype"):
    # A half-precision checkpoint; the logits come from its values,
    # computed in float32.
    model = model.to(getattr(torch, spec["dtype"]))
model.save_pretrained(out, safe_serialization=True)
model = model.float()
vocab = {"[UNK]": 0}
for i in range(1, min(config.vocab_size, 64)):
    vocab["t%d" % i] = i
Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(out + "/tokenizer.json")
feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in {**spec["feeds"], **spec["hf_only"]}.items()}
with torch.no_grad():
    logits = model(**feeds).logits.float().numpy()
np.ascontiguousarray(logits, dtype="<f4").tofile(out + "/ref_logits.bin")
json.dump(list(logits.shape), open(out + "/ref_shape.json", "w"))
`

// tinyFolder writes a random tiny checkpoint of arch (vocabulary 600) and
// exports it, returning both folders.
func tinyFolder(t *testing.T, arch string) (hf, dir string) {
	t.Helper()
	root := t.TempDir()
	hf, dir = filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := Init(hf, InitOptions{Arch: arch, Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := Export(hf, dir); err != nil {
		t.Fatal(err)
	}
	return hf, dir
}

// hfReference runs hfScript for a transformers class and config and returns
// the checkpoint folder and its reference logits. hfOnly holds feeds that
// only the transformers model takes (position_ids, say); it may be nil.
func hfReference(t *testing.T, class string, config map[string]any, feeds, hfOnly map[string][][]int64) (string, []float32, []int64) {
	t.Helper()
	return hfReferenceDType(t, class, config, feeds, hfOnly, "")
}

// hfReferenceDType is hfReference with the checkpoint saved in a torch
// dtype ("bfloat16", "float16"; "" keeps float32).
func hfReferenceDType(t *testing.T, class string, config map[string]any, feeds, hfOnly map[string][][]int64, dtype string) (string, []float32, []int64) {
	t.Helper()
	dir := t.TempDir()
	if hfOnly == nil {
		hfOnly = map[string][][]int64{}
	}
	spec, err := json.Marshal(map[string]any{"class": class, "config": config, "feeds": feeds, "hf_only": hfOnly, "seed": 0, "dtype": dtype})
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "hf")
	testenv.RunPython(t, hfScript, specPath, ckpt)
	var shape []int64
	raw, err := os.ReadFile(filepath.Join(ckpt, "ref_shape.json"))
	if err != nil || json.Unmarshal(raw, &shape) != nil {
		t.Fatalf("reference shape: %v", err)
	}
	return ckpt, readFloats(t, filepath.Join(ckpt, "ref_logits.bin")), shape
}

func readFloats(t *testing.T, path string) []float32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// runModel runs a model folder's forward graph in ONNX Runtime on int64
// feeds and returns its first output.
func runModel(t *testing.T, dir string, feeds map[string][][]int64) ([]float32, []int64) {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(filepath.Join(dir, modeldir.ModelFile), ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := map[string]ort.Value{}
	for name, rows := range feeds {
		flat := make([]int64, 0, len(rows)*len(rows[0]))
		for _, r := range rows {
			flat = append(flat, r...)
		}
		v, err := ort.NewTensor(flat, int64(len(rows)), int64(len(rows[0])))
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		in[name] = v
	}
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, o := range outs {
			o.Close()
		}
	}()
	logits, ok := outs[0].(*ort.Tensor[float32])
	if !ok {
		t.Fatalf("first output is %v, not float32", outs[0].DType())
	}
	return append([]float32(nil), logits.Data()...), logits.Shape()
}

// compareLogits checks max |got − want| ≤ tol over the positions whose mask
// row entry is 1 (padding positions carry no meaning); logits are
// [batch, seq, n] and mask is [batch][seq].
func compareLogits(t *testing.T, got, want []float32, gotShape, wantShape []int64, mask [][]int64, tol float64) {
	t.Helper()
	if len(gotShape) != len(wantShape) {
		t.Fatalf("logits shape %v, reference %v", gotShape, wantShape)
	}
	for i := range gotShape {
		if gotShape[i] != wantShape[i] {
			t.Fatalf("logits shape %v, reference %v", gotShape, wantShape)
		}
	}
	n := int(wantShape[len(wantShape)-1])
	worst, checked := 0.0, 0
	for b, row := range mask {
		for s, m := range row {
			if m == 0 {
				continue
			}
			off := (b*len(row) + s) * n
			for k := 0; k < n; k++ {
				d := math.Abs(float64(got[off+k] - want[off+k]))
				if math.IsNaN(d) {
					t.Fatalf("NaN at batch %d position %d", b, s)
				}
				worst = max(worst, d)
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no positions compared")
	}
	t.Logf("max |Δlogit| = %.3g over %d values", worst, checked)
	if worst > tol {
		t.Fatalf("max |Δlogit| = %.3g > %.g", worst, tol)
	}
}

// checkGraph loads an exported model and checks what every architecture
// promises: onnx.FindLinears finds exactly the MatMuls migu.json lists (same
// weight, dims, and output where there is no bias), only the standard ONNX
// domain is used, and every input is int64 with symbolic 2-D dims. It
// returns the inspect summary for architecture-specific checks.
func checkGraph(t *testing.T, dir string, man *modeldir.Manifest) *onnx.Summary {
	t.Helper()
	model, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	s := onnx.Inspect(model)
	found := map[string]onnx.Linear{}
	for _, l := range s.Linears {
		found[l.Node] = l
	}
	if len(found) != len(man.Linears) {
		t.Errorf("onnx.FindLinears finds %d linears, migu.json lists %d", len(found), len(man.Linears))
	}
	for _, l := range man.Linears {
		f, ok := found[l.Node]
		if !ok || f.Weight != l.Weight || f.DIn != l.DIn || f.DOut != l.DOut || (l.Bias == "" && f.Output != l.Output) {
			t.Errorf("%s: migu.json node %s weight %s %d→%d, graph has %+v", l.Name, l.Node, l.Weight, l.DIn, l.DOut, f)
		}
	}
	if d := s.NonStandardDomains(); len(d) != 0 {
		t.Errorf("non-standard op domains %v", d)
	}
	for _, in := range model.Proto.Graph.Input {
		dtype, shape, _ := onnx.TensorType(in)
		if dtype != onnx.Int64 || len(shape) != 2 || shape[0].Param == "" || shape[1].Param == "" {
			t.Errorf("input %s is %v %v, want int64 with symbolic [batch, seq] dims", in.GetName(), dtype, shape)
		}
	}
	return s
}
