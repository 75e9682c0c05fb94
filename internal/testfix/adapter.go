package testfix

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// LoadModel loads a model folder's forward graph, closed when the test
// ends.
func LoadModel(t testing.TB, dir string) *onnx.Model {
	t.Helper()
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Injected returns the model of dir with adapter a injected, saved inline
// into a temporary file, and the injection.
func Injected(t testing.TB, dir string, man *modeldir.Manifest, a adapters.Adapter, opt adapters.InjectOptions) (string, *adapters.Injection) {
	t.Helper()
	m := LoadModel(t, dir)
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

// ParamFloats are the initial values of params as Run's float inputs.
func ParamFloats(params []adapters.Param) map[string]Floats {
	out := make(map[string]Floats, len(params))
	for _, p := range params {
		out[p.Name] = Floats{Shape: p.Shape, Values: p.Init}
	}
	return out
}
