package adapters

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// MergeResult describes a merged model folder.
type MergeResult struct {
	Kind   string   // the adapter kind
	Layers []string // the linear layers whose weights changed
}

// Merge writes outDir, a new model folder: modelDir's model with the
// adapter of adapterDir folded into its weights, every other file copied.
// outDir appears complete or not at all.
func Merge(modelDir, adapterDir, outDir string) (*MergeResult, error) {
	man, err := modeldir.Check(modelDir)
	if err != nil {
		return nil, err
	}
	a, err := Load(adapterDir)
	if err != nil {
		return nil, err
	}
	return MergeWith(a, man, modelDir, outDir)
}

// MergeWith is Merge for an adapter already loaded; man is modelDir's
// manifest.
func MergeWith(a Adapter, man *modeldir.Manifest, modelDir, outDir string) (*MergeResult, error) {
	layers, err := a.Layers(man)
	if err != nil {
		return nil, err
	}
	if err := modeldir.CheckNotModel(modelDir, outDir, "merge writes a new folder"); err != nil {
		return nil, err
	}
	stage, err := modeldir.Stage(outDir)
	if err != nil {
		return nil, err
	}
	defer stage.Abort()
	m, err := onnx.Load(filepath.Join(modelDir, modeldir.ModelFile))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	// The model, its external data and the manifest are written anew; the
	// rest is copied.
	skip := map[string]bool{modeldir.ModelFile: true, modeldir.DataFile: true, modeldir.ManifestFile: true}
	for _, t := range m.Proto.GetGraph().GetInitializer() {
		for _, e := range t.ExternalData {
			if e.GetKey() == "location" {
				skip[filepath.Clean(filepath.FromSlash(e.GetValue()))] = true
			}
		}
	}
	if err := a.Merge(m, man); err != nil {
		return nil, err
	}
	if err := m.Save(filepath.Join(stage.Dir, modeldir.ModelFile), onnx.SaveOptions{External: onnx.ExternalAll, DataFile: modeldir.DataFile}); err != nil {
		return nil, err
	}
	if err := copyTree(modelDir, stage.Dir, skip); err != nil {
		return nil, err
	}
	if err := modeldir.WriteManifest(stage.Dir, man); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	res := &MergeResult{Kind: a.Name()}
	for _, l := range layers {
		res.Layers = append(res.Layers, l.Name)
	}
	return res, nil
}

// copyTree copies the regular files and folders under src into dst, except
// the top-level paths in skip.
func copyTree(src, dst string, skip map[string]bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil || rel == "." {
			return err
		}
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, target)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
