package modeldir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/internal/pages"
	"github.com/migu-ml/migu/onnx"
)

// WriteTrained writes a model folder at out that is the model folder base
// with trained values replacing its initializers (full fine-tuning): the
// same graph, config, tokenizer (with its chat template) and manifest, so
// evaluation, generation and further training read it like any exported
// model. It streams: each tensor goes to the new data file straight from
// the trained values or the base's mapped file, so the only memory it
// needs is what the caller already holds.
func WriteTrained(base, out string, params map[string][]float32) error {
	m, err := onnx.Load(filepath.Join(base, ModelFile))
	if err != nil {
		return err
	}
	defer m.Close()
	g := m.Graph()
	for name, vals := range params {
		t := g.Initializer(name)
		if t == nil {
			return fmt.Errorf("trained tensor %s is not an initializer of %s", name, base)
		}
		if !onnx.DType(t.GetDataType()).IsFloat() {
			return fmt.Errorf("trained tensor %s is %v in %s, not a float tensor", name, onnx.DType(t.GetDataType()), base)
		}
		n, err := onnx.NumElements(t.Dims)
		if err != nil || n != int64(len(vals)) {
			return fmt.Errorf("trained tensor %s has %d values for shape %v", name, len(vals), t.Dims)
		}
	}
	stage, err := Stage(out)
	if err != nil {
		return err
	}
	defer stage.Abort()
	data, err := onnx.CreateData(stage.Dir, DataFile)
	if err != nil {
		return err
	}
	defer data.Abort()
	for _, t := range g.P.Initializer {
		if vals, ok := params[t.GetName()]; ok {
			// Trained values are written as they were trained, in float32,
			// whatever precision the base stored (its Cast to float32 then
			// does nothing).
			float := int32(onnx.Float)
			t.DataType = &float
			err = data.Append(t, onnx.Float32Bytes(vals))
		} else if onnx.IsExternal(t) {
			var raw []byte
			if raw, err = m.TensorBytes(t); err == nil {
				err = data.Append(t, raw)
				pages.Release(raw)
			}
		}
		if err != nil {
			return err
		}
	}
	if err := data.Commit(); err != nil {
		return err
	}
	if err := m.Save(filepath.Join(stage.Dir, ModelFile), onnx.SaveOptions{External: onnx.ExternalKeep}); err != nil {
		return err
	}
	for _, name := range []string{ConfigFile, TokenizerFile, ManifestFile, TokenizerConfigFile} {
		raw, err := os.ReadFile(filepath.Join(base, name))
		if name == TokenizerConfigFile && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(stage.Dir, name), raw, 0o644); err != nil {
			return err
		}
	}
	return stage.Commit()
}
