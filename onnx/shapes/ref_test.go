package shapes_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// shapeModel is a forward graph made from a tiny random checkpoint by the Go
// exporter or by python/export (torch.onnx.export).
type shapeModel struct {
	name, path string
}

var shapeArchs = []string{"llama", "t5", "roberta"}

// goShapeModels initialises a tiny checkpoint per architecture and exports
// it with the Go exporter; it returns the models and the checkpoints.
func goShapeModels(t *testing.T, dir string) (models []shapeModel, hf map[string]string) {
	t.Helper()
	hf = map[string]string{}
	for _, arch := range shapeArchs {
		hf[arch] = filepath.Join(dir, "hf_"+arch)
		if _, err := exporters.Init(hf[arch], exporters.InitOptions{Arch: arch, Preset: "tiny", Seed: 7, VocabSize: 512}); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "go_"+arch)
		if _, err := exporters.Export(hf[arch], out); err != nil {
			t.Fatal(err)
		}
		models = append(models, shapeModel{"go_" + arch, filepath.Join(out, modeldir.ModelFile)})
	}
	return models, hf
}

// torchShapeModels exports the same checkpoints with python/export, all
// three at once.
func torchShapeModels(t *testing.T, dir string, hf map[string]string) []shapeModel {
	t.Helper()
	py := testenv.Python(t)
	script := filepath.Join(testenv.Root(), "python", "export", "export.py")
	models := make([]shapeModel, len(shapeArchs))
	errs := make([]error, len(shapeArchs))
	var wg sync.WaitGroup
	for i, arch := range shapeArchs {
		out := filepath.Join(dir, "torch_"+arch)
		models[i] = shapeModel{"torch_" + arch, filepath.Join(out, modeldir.ModelFile)}
		wg.Go(func() {
			if b, err := exec.Command(py, script, hf[arch], out).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("export.py %s: %v\n%s", arch, err, b)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return models
}

// Our inference agrees with ONNX's own (data_prop=True) on the dtype and
// rank of every value of the exporters' graphs and on every dim ONNX knows
// as a number, and agrees with ONNX Runtime on every dim of every value at
// two input sizes.
func TestShapeInferenceOnExportedModels(t *testing.T) {
	dir := t.TempDir()
	models, hf := goShapeModels(t, dir)
	t.Run("torch-export", func(t *testing.T) {
		models = append(models, torchShapeModels(t, dir, hf)...)
	})
	infos := map[string]*shapes.Info{}
	for _, sm := range models {
		m, err := onnx.Load(sm.path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := shapes.Infer(m)
		m.Close()
		if err != nil {
			t.Fatalf("%s: %v", sm.name, err)
		}
		infos[sm.name] = info
	}
	t.Run("onnx", func(t *testing.T) {
		compareWithONNX(t, models, infos)
	})
	t.Run("ort", func(t *testing.T) {
		lib := testenv.ORTLib(t)
		if err := ort.Init(ort.InitOptions{LibraryPath: lib}); err != nil {
			t.Fatal(err)
		}
		for _, sm := range models {
			t.Run(sm.name, func(t *testing.T) { compareWithORT(t, sm, infos[sm.name]) })
		}
	})
}

// onnxInferScript prints, for each model path, every typed value after
// onnx.shape_inference.infer_shapes(data_prop=True): name -> [elem_type,
// dims or null], a dim being an int, a dim_param or null.
const onnxInferScript = `
import json, sys, onnx
from onnx import shape_inference
out = {}
for path in sys.argv[1:]:
    m = shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    vals = {}
    for vi in list(m.graph.value_info) + list(m.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None) for d in tt.shape.dim]
        vals[vi.name] = [tt.elem_type, shape]
    out[path] = vals
print(json.dumps(out))
`

func compareWithONNX(t *testing.T, models []shapeModel, infos map[string]*shapes.Info) {
	testenv.Python(t)
	paths := make([]string, len(models))
	for i, sm := range models {
		paths[i] = sm.path
	}
	var ref map[string]map[string][2]any
	if err := json.Unmarshal(testenv.RunPython(t, onnxInferScript, paths...), &ref); err != nil {
		t.Fatal(err)
	}
	for _, sm := range models {
		t.Run(sm.name, func(t *testing.T) {
			info := infos[sm.name]
			inputSyms := graphInputSymbols(t, sm.path)
			var values, ranks, dims, syms, ours, fresh int
			for name, typ := range ref[sm.path] {
				dtype, shape, ok := info.Type(name)
				if !ok {
					t.Errorf("%s: ONNX types it, we do not know it", name)
					continue
				}
				values++
				if want := onnx.DType(typ[0].(float64)); dtype != want {
					t.Errorf("%s: dtype %v, ONNX says %v", name, dtype, want)
				}
				refDims, ok := typ[1].([]any)
				if !ok {
					continue
				}
				ranks++
				if len(refDims) != len(shape) {
					t.Errorf("%s: shape %v, ONNX says rank %d %v", name, shape, len(refDims), refDims)
					continue
				}
				for i, rd := range refDims {
					d := shape[i]
					fixed := fixedDim(d)
					switch rv := rd.(type) {
					case float64:
						dims++
						if !fixed || d.Value != int64(rv) {
							t.Errorf("%s: dim %d is %v, ONNX knows it is %d (shape %v)", name, i, d, int64(rv), shape)
						}
					case string:
						switch {
						case inputSyms[rv] && d != onnx.Sym(rv):
							t.Errorf("%s: dim %d is %v, ONNX says input symbol %s (shape %v)", name, i, d, rv, shape)
						case inputSyms[rv]:
							syms++
						case !strings.HasPrefix(d.Param, "unk_"):
							ours++
						}
					default:
						if !strings.HasPrefix(d.Param, "unk_") {
							ours++
						}
					}
					if strings.HasPrefix(d.Param, "unk_") {
						fresh++
					}
				}
			}
			t.Logf("%d values: dtype and rank equal on %d and %d; equal dims: %d numbers and %d input symbols (all that ONNX knows); %d more dims known to us (a number or an expression), %d fresh unk_ dims", values, values, ranks, dims, syms, ours, fresh)
		})
	}
}

// graphInputSymbols lists the dim params of a model's inputs.
func graphInputSymbols(t *testing.T, path string) map[string]bool {
	m, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	syms := map[string]bool{}
	for _, vi := range m.Proto.Graph.Input {
		_, shape, _ := onnx.TensorType(vi)
		for _, d := range shape {
			if d.Param != "" {
				syms[d.Param] = true
			}
		}
	}
	return syms
}

// fixedDim reports whether a dim is a known number.
func fixedDim(d onnx.Dim) bool { return d.Known && d.Param == "" }

// compareWithORT runs the model with every intermediate value as an output
// at two input sizes, and checks each inferred shape (symbols bound to
// their sizes in that run), each propagated content, and that values
// inferred to have the same shape ran with the same shape.
func compareWithORT(t *testing.T, sm shapeModel, info *shapes.Info) {
	m, err := onnx.Load(sm.path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g := m.Graph()
	var names []string
	for _, vi := range g.P.Output {
		names = append(names, vi.GetName())
	}
	// Every node output becomes a graph output. onnxruntime_go cannot
	// return rank-0 tensors, so a value inferred to be a scalar is tapped
	// through an Unsqueeze, whose extra leading axis checkRun strips.
	taps := map[string]string{}
	nodes := slices.Clone(g.P.Node)
	axis0 := g.ConstInt64("tap_axis0", []int64{1}, 0)
	for _, n := range nodes {
		for _, o := range n.Output {
			if o == "" || slices.Contains(names, o) {
				continue
			}
			names = append(names, o)
			dtype, shape, _ := info.Type(o)
			tap := o
			if shape != nil && len(shape) == 0 {
				tap = g.Op("Unsqueeze", []string{o, axis0}, o+"_tap")
				taps[tap] = o
			}
			g.AddOutput(tap, dtype, nil)
		}
	}
	outNames := make([]string, len(names))
	for i, name := range names {
		outNames[i] = name
		for tap, o := range taps {
			if o == name {
				outNames[i] = tap
			}
		}
	}
	tapped := filepath.Join(t.TempDir(), "tapped.onnx")
	if err := m.Save(tapped, onnx.SaveOptions{External: onnx.ExternalNone}); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(tapped, ort.SessionOptions{Threads: 1, Outputs: outNames})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for run, size := range [][3]int64{{2, 5, 3}, {3, 7, 4}} {
		var feeds []ort.Value
		inputs := map[string]ort.Value{}
		sizes := map[string]int64{}
		for _, vi := range g.P.Input {
			_, shape, _ := onnx.TensorType(vi)
			dims := make([]int64, len(shape))
			for i, d := range shape {
				switch {
				case fixedDim(d):
					dims[i] = d.Value
				case d.Param == "batch":
					dims[i] = size[0]
				case strings.HasPrefix(d.Param, "tgt") || strings.HasPrefix(d.Param, "dec"):
					dims[i] = size[2]
				default:
					dims[i] = size[1]
				}
			}
			v, err := ort.NewTensor(feedData(vi.GetName(), dims), dims...)
			if err != nil {
				t.Fatal(err)
			}
			feeds = append(feeds, v)
			inputs[vi.GetName()] = v
			if err := info.Bind(vi.GetName(), dims, sizes); err != nil {
				t.Fatal(err)
			}
		}
		outs, err := s.Run(inputs)
		for _, v := range feeds {
			v.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		shapes := make([][]int64, len(outs))
		for i, o := range outs {
			shapes[i] = o.Shape()
			if _, tapped := taps[outNames[i]]; tapped {
				shapes[i] = shapes[i][1:]
			}
		}
		checkRun(t, info, names, outs, shapes, sizes, run)
		for _, o := range outs {
			o.Close()
		}
	}
}

// feedData fills a graph input: token ids below 100 (every tiny vocabulary
// is larger), masks of ones with the second sequence padded at the end.
func feedData(name string, dims []int64) []int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	data := make([]int64, n)
	for i := range data {
		if strings.Contains(name, "mask") {
			data[i] = 1
			if len(dims) == 2 && int64(i)/dims[1] == 1 && int64(i)%dims[1] >= dims[1]-2 {
				data[i] = 0
			}
			continue
		}
		data[i] = int64(i*7+3)%90 + 5
	}
	return data
}

func checkRun(t *testing.T, info *shapes.Info, names []string, outs []ort.Value, shapes [][]int64, sizes map[string]int64, run int) {
	t.Helper()
	for i, name := range names {
		if err := info.Bind(name, shapes[i], sizes); err != nil {
			t.Errorf("run %d: %v", run, err)
		}
	}
	var dims, contents, unbound int
	byShape := map[string]int{}
	for i, name := range names {
		dtype, shape, _ := info.Type(name)
		got := shapes[i]
		if outs[i].DType() != dtype {
			t.Errorf("run %d: %s: dtype %v, inferred %v", run, name, outs[i].DType(), dtype)
		}
		if len(got) != len(shape) {
			t.Errorf("run %d: %s: shape %v, inferred %v", run, name, got, shape)
			continue
		}
		for k, d := range shape {
			v, ok := info.Eval(d, sizes)
			switch {
			case !ok:
				unbound++
			case v != got[k]:
				t.Errorf("run %d: %s: shape %v, inferred %v: %v = %d", run, name, got, shape, d, v)
			default:
				dims++
			}
		}
		key := shape.String()
		if j, seen := byShape[key]; seen && !slices.Equal(shapes[j], got) {
			t.Errorf("run %d: %s and %s are inferred to share shape %s but ran as %v and %v", run, names[j], name, key, shapes[j], got)
		} else if !seen {
			byShape[key] = i
		}
		if vals, ok := info.Values(name); ok {
			data := intData(outs[i])
			if data == nil || len(data) != len(vals) {
				t.Errorf("run %d: %s: inferred contents %v, ran as %v", run, name, vals, data)
				continue
			}
			for k, d := range vals {
				if v, ok := info.Eval(d, sizes); ok && v != data[k] {
					t.Errorf("run %d: %s: inferred contents %v, ran as %v", run, name, vals, data)
				} else if ok {
					contents++
				}
			}
		}
	}
	if unbound > 0 {
		t.Errorf("run %d: %d dims use a symbol no value's shape binds", run, unbound)
	}
	t.Logf("run %d: %d values, %d dims and %d propagated elements equal to ONNX Runtime's; %d distinct inferred shapes", run, len(names), dims, contents, len(byShape))
}

// intData returns the elements of an integer or bool tensor as int64.
func intData(v ort.Value) []int64 {
	switch x := v.(type) {
	case *ort.Tensor[int64]:
		return x.Data()
	case *ort.Tensor[int32]:
		out := make([]int64, len(x.Data()))
		for i, e := range x.Data() {
			out[i] = int64(e)
		}
		return out
	case *ort.Tensor[bool]:
		out := make([]int64, len(x.Data()))
		for i, e := range x.Data() {
			if e {
				out[i] = 1
			}
		}
		return out
	}
	return nil
}

// BenchmarkInfer infers the forward graph of the small Llama preset.
func BenchmarkInfer(b *testing.B) {
	_, out, _ := testfix.PresetModel(b, "llama", exporters.InitOptions{Preset: "small", Seed: 1})
	m, err := onnx.Load(filepath.Join(out, modeldir.ModelFile))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for b.Loop() {
		if _, err := shapes.Infer(m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(m.Proto.Graph.Node)), "nodes")
}
