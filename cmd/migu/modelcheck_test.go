package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// brokenCopy copies the model folder model and applies edit to the copy.
func brokenCopy(t *testing.T, model string, edit func(t *testing.T, dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(dir, os.DirFS(model)); err != nil {
		t.Fatal(err)
	}
	edit(t, dir)
	return dir
}

// editJSON rewrites one JSON file of a model folder as a generic object.
func editJSON(name string, edit func(map[string]any)) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		path := filepath.Join(dir, name)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		edit(v)
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// duplicateInitializer appends a second initializer named like the first
// to the folder's model.onnx.
func duplicateInitializer(t *testing.T, dir string) {
	path := filepath.Join(dir, modeldir.ModelFile)
	m, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g := m.Proto.Graph
	g.Initializer = append(g.Initializer, g.Initializer[0])
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalKeep}); err != nil {
		t.Fatal(err)
	}
	m.Close()
}

// Every command that reads a model folder refuses a broken one the same
// way — exit 2, one line naming the file and the field or name, no panic
// and no output left behind: a migu.json linear whose weight the graph
// lacks (prepare used to panic, train to accept it), vocab_size 0 and a
// duplicate initializer (an ONNX Runtime dump and exit 1 before), a
// config.json with a negative size (copied along by train, merge and
// eval before).
func TestBrokenModelFolders(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 16)
	prompts := filepath.Join(t.TempDir(), "prompts.jsonl")
	os.WriteFile(prompts, []byte(`{"text": "hello"}`+"\n"), 0o644)
	folders := []struct {
		name string
		edit func(*testing.T, string)
		want []string // in the error line
	}{
		{"missing weight", editJSON(modeldir.ManifestFile, func(v map[string]any) {
			v["linears"].([]any)[0].(map[string]any)["weight"] = "model.layers.0.self_attn.q_proj.nope"
		}), []string{modeldir.ManifestFile, `weight "model.layers.0.self_attn.q_proj.nope" is not an initializer of the graph`}},
		{"vocab 0", editJSON(modeldir.ManifestFile, func(v map[string]any) { v["vocab_size"] = 0 }),
			[]string{modeldir.ManifestFile, "field vocab_size is 0"}},
		{"duplicate initializer", duplicateInitializer, []string{modeldir.ModelFile + ": initializer ", "is defined twice"}},
		{"negative config size", editJSON(modeldir.ConfigFile, func(v map[string]any) { v["num_hidden_layers"] = -2 }),
			[]string{modeldir.ConfigFile, "field num_hidden_layers is -2"}},
	}
	for _, f := range folders {
		broken := brokenCopy(t, model, f.edit)
		work := t.TempDir()
		out := func(name string) string { return filepath.Join(work, name) }
		commands := []struct {
			name    string
			args    []string
			created string // a path the command must not leave behind
		}{
			{"prepare", []string{"prepare", "--model", broken, "--out", out("prep")}, out("prep")},
			{"train", []string{"train", "--model", broken, "--data", data, "--out", out("run"), "--threads", "1", "--max-steps", "1"}, out("run")},
			{"merge", []string{"merge", "--model", broken, "--adapter", work, "--out", out("merged")}, out("merged")},
			{"eval", []string{"eval", "--model", broken, "--task", "perplexity", "--data", prompts}, ""},
			{"generate", []string{"generate", "--model", broken, "--prompt", "hi", "--max-new-tokens", "2"}, ""},
			{"export-gguf", []string{"export-gguf", "--model", broken, "--out", out("m.gguf")}, out("m.gguf")},
		}
		for _, c := range commands {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				code, _, stderr := runCLI(t, c.args...)
				line := strings.TrimSpace(stderr)
				if code != 2 || strings.Contains(line, "\n") || strings.Contains(line, "panic") {
					t.Fatalf("exit %d, stderr %q; want exit 2 and one line", code, stderr)
				}
				for _, w := range f.want {
					if !strings.Contains(line, w) {
						t.Fatalf("error %q lacks %q", line, w)
					}
				}
				if c.created != "" {
					if _, err := os.Stat(c.created); !os.IsNotExist(err) {
						t.Fatalf("%s left %s behind", c.name, c.created)
					}
				}
			})
		}
	}
}
