// Package trainfix holds the test helpers that build training graphs. It
// stands apart from testfix because package train's own tests import
// testfix, and these helpers import train.
package trainfix

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/train"
)

// Graph injects adapter a, in training mode, into the forward graph of the
// model folder dir, builds the training graph over the adapter's tensors
// (with MIGU's taps at the injection's points when taps is set) and saves
// it with its weights inside. It returns the file, the injection and the
// graph's artifact.
func Graph(t testing.TB, dir string, man *modeldir.Manifest, a adapters.Adapter, taps bool) (string, *adapters.Injection, *train.Artifact) {
	t.Helper()
	m := testfix.LoadModel(t, dir)
	inj, err := a.Inject(m, man, adapters.InjectOptions{Training: true})
	if err != nil {
		t.Fatal(err)
	}
	opt := train.GraphOptions{Names: inj.ParamNames()}
	if taps {
		opt.Taps, opt.TapPoints = true, inj.Points
	}
	art, err := train.Build(m, man, opt)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "train.onnx")
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalNone}); err != nil {
		t.Fatal(err)
	}
	return path, inj, art
}
