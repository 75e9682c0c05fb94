package exporters

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/ort"
)

// externalSpan names the bytes an external tensor refers to.
func externalSpan(t *onnxpb.TensorProto) string {
	var s string
	for _, kv := range t.ExternalData {
		s += fmt.Sprintf("%s=%s;", kv.GetKey(), kv.GetValue())
	}
	return s
}

// TestCachedGraphsReferToFolderWeights builds the cached graphs of model
// folders in float32, bf16 and fp16 and checks that they hold no weights:
// every initializer that the folder's model.onnx keeps as external data
// is, in the cached graphs, a reference to the same bytes (location,
// offset, length) with the folder's element type and shape, the graphs'
// Dir is the folder, and what is left inline is a few small constants.
// For Llama it then runs the cached decoder's first step (empty cache,
// logits of every position), loaded as eval loads it, against the
// folder's forward graph on the same tokens.
func TestCachedGraphsReferToFolderWeights(t *testing.T) {
	cases := []struct {
		name, arch string
		dtype      DType
		matrices   onnx.DType // the weight matrices' type in the folder
	}{
		{"llama_f32", "llama", DTypeKeep, onnx.Float},
		{"llama_bf16", "llama", DTypeBF16, onnx.BFloat16},
		{"llama_f16", "llama", DTypeF16, onnx.Float16},
		{"t5_f32", "t5", DTypeKeep, onnx.Float},
		{"t5_bf16", "t5", DTypeBF16, onnx.BFloat16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			hf, dir := filepath.Join(root, "hf"), filepath.Join(root, "model")
			if _, err := Init(hf, InitOptions{Arch: tc.arch, Preset: "tiny", VocabSize: 600}); err != nil {
				t.Fatal(err)
			}
			if _, err := ExportWith(hf, dir, ExportOptions{DType: tc.dtype}); err != nil {
				t.Fatal(err)
			}
			folder, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer folder.Close()
			stored := map[string]*onnxpb.TensorProto{}
			for _, init := range folder.Proto.Graph.Initializer {
				if onnx.IsExternal(init) {
					stored[init.GetName()] = init
				}
			}
			graphs, err := kvcache.Build(dir, tc.arch)
			if err != nil {
				t.Fatal(err)
			}
			refs, matrices := 0, 0
			for _, m := range []*onnx.Model{graphs.Encoder, graphs.Decoder} {
				if m == nil {
					continue
				}
				defer m.Close()
				if m.Dir != dir {
					t.Errorf("%s: Dir %q, want the folder %q", m.Proto.Graph.GetName(), m.Dir, dir)
				}
				inline := 0
				for _, init := range m.Proto.Graph.Initializer {
					want, ok := stored[init.GetName()]
					if !onnx.IsExternal(init) {
						raw, err := m.TensorBytes(init)
						if err != nil {
							t.Fatal(err)
						}
						inline += len(raw)
						if ok {
							t.Errorf("%s: %s holds its %d bytes inline, want a reference to the folder's %s", m.Proto.Graph.GetName(), init.GetName(), len(raw), externalSpan(want))
						}
						continue
					}
					refs++
					switch {
					case !ok:
						t.Errorf("%s: external %s is no external tensor of the folder", m.Proto.Graph.GetName(), init.GetName())
					case externalSpan(init) != externalSpan(want) || init.GetDataType() != want.GetDataType() || !slices.Equal(init.Dims, want.Dims):
						t.Errorf("%s: %s refers to %s %v %v, the folder stores %s %v %v", m.Proto.Graph.GetName(), init.GetName(),
							externalSpan(init), onnx.DType(init.GetDataType()), init.Dims, externalSpan(want), onnx.DType(want.GetDataType()), want.Dims)
					}
					if len(init.Dims) == 2 && onnx.DType(init.GetDataType()) == tc.matrices {
						matrices++
					}
				}
				if inline > 16<<10 {
					t.Errorf("%s: %d bytes of initializers inline, want only small constants", m.Proto.Graph.GetName(), inline)
				}
			}
			if refs == 0 || matrices == 0 {
				t.Fatalf("%d references, %d of them %v matrices: want the weights referred to", refs, matrices, tc.matrices)
			}
			if tc.arch == "llama" {
				checkCachedFirstStep(t, dir, graphs)
			}
		})
	}
}

// checkCachedFirstStep runs the cached decoder with an empty cache over a
// short prompt, asking for the logits of every position, and compares
// them with the folder's forward graph within 1e-5.
func checkCachedFirstStep(t *testing.T, dir string, graphs *kvcache.Graphs) {
	t.Helper()
	ids := []int64{5, 17, 40, 300, 12, 99, 3}
	mask := []int64{1, 1, 1, 1, 1, 1, 1}
	seq := int64(len(ids))
	want, wantShape := runModel(t, dir, map[string][][]int64{"input_ids": {ids}, "attention_mask": {mask}})
	raw, err := proto.Marshal(graphs.Decoder.Proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: 1, ExternalDataDir: graphs.Decoder.Dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	in := map[string]ort.Value{}
	feed := func(name string, v ort.Value, err error) {
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		in[name] = v
	}
	idT, err := ort.NewTensor(ids, 1, seq)
	feed("input_ids", idT, err)
	maskT, err := ort.NewTensor(mask, 1, seq)
	feed("attention_mask", maskT, err)
	n, err := ort.NewTensor([]int64{seq}, 1)
	feed(kvcache.LogitsLen, n, err)
	cache := graphs.Cache
	for i := range cache.Layers {
		for _, name := range []string{cache.PastKey[i], cache.PastValue[i]} {
			z, err := ort.Zeros[float32](1, int64(cache.KVHeads), 0, int64(cache.HeadDim))
			feed(name, z, err)
		}
	}
	outs, err := sess.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, o := range outs {
			o.Close()
		}
	}()
	for k, info := range sess.Outputs() {
		if info.Name != "logits" {
			continue
		}
		l := outs[k].(*ort.Tensor[float32])
		if !slices.Equal(l.Shape(), wantShape) {
			t.Fatalf("cached logits %v, forward graph %v", l.Shape(), wantShape)
		}
		worst := 0.0
		for i, v := range l.Data() {
			worst = max(worst, math.Abs(float64(v-want[i]))/(1+math.Abs(float64(want[i]))))
		}
		if worst > 1e-5 {
			t.Errorf("cached decoder's logits differ from the forward graph's by %.3g (relative), want ≤ 1e-5", worst)
		}
		return
	}
	t.Fatal("the cached decoder has no logits output")
}
