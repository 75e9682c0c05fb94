package modeldir

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
)

// openFixture writes a model folder computing y = x·w + b, its manifest
// (one linear layer) and a config.json, each editable before writing.
func openFixture(t *testing.T, editMan func(*Manifest), config string) string {
	t.Helper()
	dir := t.TempDir()
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("n"), onnx.D(2)})
	g.AddInitializer(onnx.Float32Tensor("w", []int64{2, 3}, make([]float32, 6)))
	g.AddInitializer(onnx.Float32Tensor("b", []int64{3}, make([]float32, 3)))
	xw := g.Op("MatMul", []string{"x", "w"}, "xw")
	y := g.Op("Add", []string{xw, "b"}, "logits")
	g.AddOutput(y, onnx.Float, nil)
	if err := m.Save(filepath.Join(dir, ModelFile), onnx.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	man := &Manifest{
		Format: FormatVersion, Architecture: "test", Objective: "clm",
		Inputs: []string{"x"}, Outputs: []string{y}, VocabSize: 3, HiddenSize: 2, NumLayers: 0,
		Linears: []Linear{{Name: "head", Role: RoleHead, Block: -1, Weight: "w", Bias: "b", Node: "xw/MatMul", Input: "x", Output: y, DIn: 2, DOut: 3}},
	}
	if p := g.Producers()[xw]; p.GetName() != "xw/MatMul" {
		t.Fatalf("fixture: the MatMul is named %q", p.GetName())
	}
	if editMan != nil {
		editMan(man)
	}
	raw, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Open refuses a folder whose manifest names what the graph lacks, whose
// manifest or config.json holds an impossible size, with one line naming
// the file and the field; a consistent folder opens.
func TestOpenChecksTheFolder(t *testing.T) {
	good := `{"model_type": "llama", "hidden_size": 2, "vocab_size": 3, "pad_token_id": -1, "rope_scaling": null, "head_dim": null}`
	cases := []struct {
		name   string
		edit   func(*Manifest)
		config string
		file   string // the file the error names
		want   string // "" for a folder that opens
	}{
		{"good", nil, good, "", ""},
		{"no config.json", nil, "", "", ""},
		{"missing weight", func(m *Manifest) { m.Linears[0].Weight = "nope.weight" }, good, ManifestFile, `linears[0] (head): weight "nope.weight" is not an initializer of the graph`},
		{"weight is not an initializer", func(m *Manifest) { m.Linears[0].Weight = "x" }, good, ManifestFile, `weight "x" is not an initializer`},
		{"weight size", func(m *Manifest) { m.Linears[0].DIn = 4 }, good, ManifestFile, `weight "w" holds 6 values, not d_in × d_out = 4 × 3`},
		{"missing bias", func(m *Manifest) { m.Linears[0].Bias = "nope.bias" }, good, ManifestFile, `bias "nope.bias" is not a value of the graph`},
		{"missing output", func(m *Manifest) { m.Linears[0].Output = "nope" }, good, ManifestFile, `output "nope" is not a value of the graph`},
		{"missing node", func(m *Manifest) { m.Linears[0].Node = "nope" }, good, ManifestFile, `node "nope" is not a node of the graph`},
		{"missing input", func(m *Manifest) { m.Inputs = []string{"input_ids"} }, good, ManifestFile, `field inputs: "input_ids" is not an input of the graph`},
		{"missing graph output", func(m *Manifest) { m.Outputs = []string{"logits_x"} }, good, ManifestFile, `field outputs: "logits_x" is not an output of the graph`},
		{"missing residual", func(m *Manifest) { m.Blocks = []BlockStack{{Residuals: []string{"x", "gone"}}} }, good, ManifestFile, `blocks[0]: residuals[1] "gone" is not a value of the graph`},
		{"vocab 0", func(m *Manifest) { m.VocabSize = 0 }, good, ManifestFile, "field vocab_size is 0"},
		{"negative config size", nil, `{"hidden_size": 2, "num_hidden_layers": -3}`, ConfigFile, "field num_hidden_layers is -3; sizes must be whole numbers ≥ 0"},
		{"negative T5 size", nil, `{"d_model": 2, "d_ff": -1}`, ConfigFile, "field d_ff is -1"},
		{"fractional size", nil, `{"vocab_size": 3.5}`, ConfigFile, "field vocab_size is 3.5"},
		{"config not an object", nil, `[1, 2]`, ConfigFile, "not a JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := openFixture(t, c.edit, c.config)
			f, err := Open(dir)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if f.Manifest == nil || f.Model == nil || f.Dir != dir {
					t.Fatalf("opened %+v", f)
				}
				f.Close()
				return
			}
			if err == nil {
				f.Close()
				t.Fatalf("opened; want an error with %q", c.want)
			}
			msg := err.Error()
			if !badinput.Is(err) || !strings.HasPrefix(msg, filepath.Join(dir, c.file)+": ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one bad-input line naming %s and saying %q", msg, c.file, c.want)
			}
			if _, err := Check(dir); err == nil || err.Error() != msg {
				t.Fatalf("Check: %v, want the same error as Open", err)
			}
		})
	}
}

// A graph that defines a name twice is refused before the manifest is
// compared with it, naming model.onnx and the name.
func TestOpenRefusesDuplicateInitializer(t *testing.T) {
	dir := openFixture(t, nil, "")
	path := filepath.Join(dir, ModelFile)
	m, err := onnx.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m.Proto.Graph.Initializer = append(m.Proto.Graph.Initializer, onnx.Float32Tensor("w", []int64{2, 3}, make([]float32, 6)))
	if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalKeep}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	_, err = Open(dir)
	if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), path+": ") || !strings.Contains(err.Error(), `initializer "w" is defined twice`) {
		t.Fatalf("error %v: want bad input naming %s and the initializer", err, path)
	}
}

// FuzzCheckConfig: any config.json is accepted or refused as one line of
// bad input naming the file, never a panic; an accepted one has no
// negative size field.
func FuzzCheckConfig(f *testing.F) {
	for _, s := range []string{`{"hidden_size": 2}`, `{"d_ff": -1}`, `{"vocab_size": 1e400}`, `{"n_head": "4"}`, `[]`, `null`, `{"a_size": 2.5}`, "{\"x_size\\n\": -1}", ``} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, ConfigFile)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		err := CheckConfig(dir)
		if err != nil {
			if !badinput.Is(err) || !strings.HasPrefix(err.Error(), path+": ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line of bad input naming %s", err, path)
			}
			return
		}
		var cfg map[string]any
		if json.Unmarshal(raw, &cfg) != nil {
			return // null: nothing to check
		}
		for k, v := range cfg {
			if x, ok := v.(float64); ok && sizeField(k) && x < 0 {
				t.Fatalf("accepted %s = %v", k, x)
			}
		}
	})
}
