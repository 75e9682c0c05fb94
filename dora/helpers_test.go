package dora

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

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

// injected returns the model of dir with adapter a injected, saved inline
// into a temporary file, and the injection.
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

// transpose turns [rows, cols] into [cols, rows].
func transpose(v []float32, rows, cols int64) []float32 {
	out := make([]float32, len(v))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = v[i*cols+j]
		}
	}
	return out
}

func anyStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
