package adapters

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// doubler is a test adapter whose merge doubles the weight of every linear.
type doubler struct{ dir string }

var _ Adapter = (*doubler)(nil)

func (d *doubler) Name() string { return "doubler" }
func (d *doubler) Layers(man *modeldir.Manifest) ([]modeldir.Linear, error) {
	return man.Linears, nil
}
func (d *doubler) Inject(*onnx.Model, *modeldir.Manifest, InjectOptions) (*Injection, error) {
	return &Injection{}, nil
}
func (d *doubler) Save(string, *modeldir.Manifest, map[string][]float32) error { return nil }
func (d *doubler) Merge(m *onnx.Model, man *modeldir.Manifest) error {
	for _, l := range man.Linears {
		t := m.Graph().Initializer(l.Weight)
		w, err := m.Float32s(t)
		if err != nil {
			return err
		}
		for i := range w {
			w[i] *= 2
		}
		*t = *onnx.Float32Tensor(l.Weight, t.Dims, w)
	}
	return nil
}

// halver shares the doubler's peft_type and claims the configs that say
// "halve": true, as DoRA shares LoRA's.
type halver struct {
	doubler
	settings Options
}

func claimsHalve(want bool) func([]byte) bool {
	return func(raw []byte) bool {
		return strings.Contains(string(raw), `"HALVER"`) && strings.Contains(string(raw), `"halve": true`) == want
	}
}

func init() {
	Register(Kind{Name: "doubler", PEFTType: "DOUBLER", Load: func(dir string) (Adapter, error) { return &doubler{dir}, nil }})
	Register(Kind{Name: "halver", PEFTType: "HALVER", Claims: claimsHalve(true),
		Options: []Option{{Name: "scale-r", Type: "int", Default: "8", Help: "rank"}, {Name: "halver-eps", Type: "float", Default: "0.5", Help: "eps"}},
		New:     func(o Options) (Adapter, error) { return &halver{settings: o}, nil },
		Load:    func(dir string) (Adapter, error) { return &halver{doubler: doubler{dir}}, nil }})
	Register(Kind{Name: "scaler", PEFTType: "HALVER", Claims: claimsHalve(false),
		Options: []Option{{Name: "scale-r", Type: "int", Default: "8", Help: "rank"}},
		Load:    func(dir string) (Adapter, error) { return &doubler{dir}, nil }})
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRegistry(t *testing.T) {
	if k, err := Lookup("doubler"); err != nil || k.PEFTType != "DOUBLER" {
		t.Errorf("Lookup: %+v, %v", k, err)
	}
	if _, err := Lookup("prefix"); !badinput.Is(err) || !strings.Contains(err.Error(), "known: doubler") {
		t.Errorf("Lookup of an unknown kind: %v", err)
	}
	if !slices.Contains(Names(), "doubler") {
		t.Errorf("Names() = %v", Names())
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("registering a PEFT type twice did not panic")
			}
		}()
		Register(Kind{Name: "other", PEFTType: "DOUBLER"})
	}()
}

// New fills a kind's settings with their defaults and leaves out those
// of other kinds; kinds that share a setting declare it once for the CLI.
func TestNewAndOptions(t *testing.T) {
	a, err := New("halver", Options{"halver-eps": "0.25", "lora-r": "4"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.(*halver).settings; !reflect.DeepEqual(got, Options{"scale-r": "8", "halver-eps": "0.25"}) {
		t.Errorf("settings %v", got)
	}
	if _, err := New("scaler", nil); !badinput.Is(err) || !strings.Contains(err.Error(), "only be loaded") {
		t.Errorf("New of a kind without New: %v", err)
	}
	if _, err := New("prefix", nil); !badinput.Is(err) || !strings.Contains(err.Error(), `unknown adapter kind "prefix"`) {
		t.Errorf("New of an unknown kind: %v", err)
	}
	var names []string
	for _, o := range AllOptions() {
		names = append(names, o.Name)
	}
	if !slices.Equal(names, []string{"scale-r", "halver-eps"}) {
		t.Errorf("AllOptions: %v", names)
	}
	if d := Defaults(); !reflect.DeepEqual(d, Options{"scale-r": "8", "halver-eps": "0.5"}) {
		t.Errorf("Defaults: %v", d)
	}
}

func TestLoad(t *testing.T) {
	dir := writeConfig(t, `{"peft_type": "DOUBLER", "r": 8}`)
	a, err := Load(dir)
	if err != nil || a.(*doubler).dir != dir {
		t.Fatalf("Load: %v, %v", a, err)
	}
	for _, c := range []struct{ config, kind string }{
		{`{"peft_type": "HALVER", "halve": true}`, "halver"},
		{`{"peft_type": "HALVER", "halve": false}`, "doubler"},
	} {
		a, err := Load(writeConfig(t, c.config))
		if _, isHalver := a.(*halver); err != nil || isHalver != (c.kind == "halver") {
			t.Errorf("%s: %T, %v; want the %s kind", c.config, a, err, c.kind)
		}
	}
	cases := []struct{ name, dir, want string }{
		{"no config", t.TempDir(), "no adapter_config.json"},
		{"not JSON", writeConfig(t, `{"peft_type": `), "adapter_config.json: unexpected end"},
		{"unknown type", writeConfig(t, `{"peft_type": "PROMPT_TUNING"}`), `peft_type "PROMPT_TUNING" is not an adapter kind migu reads (known: DOUBLER, HALVER`},
	}
	for _, c := range cases {
		if _, err := Load(c.dir); !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want bad input containing %q", c.name, err, c.want)
		}
	}
}

// WriteDir publishes a complete folder, replaces an adapter folder, and
// refuses folders holding anything else; a failed write changes nothing.
func TestWriteDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "adapter")
	write := func(content string) func(string) error {
		return func(tmp string) error {
			return os.WriteFile(filepath.Join(tmp, ConfigFile), []byte(content), 0o644)
		}
	}
	read := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
		return string(b)
	}
	if err := WriteDir(dir, write("one")); err != nil || read() != "one" {
		t.Fatalf("first write: %v, %q", err, read())
	}
	if err := WriteDir(dir, write("two")); err != nil || read() != "two" {
		t.Fatalf("replacing: %v, %q", err, read())
	}
	if err := WriteDir(dir, func(string) error { return os.ErrPermission }); err == nil || read() != "two" {
		t.Errorf("failed write: %v, content %q", err, read())
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("%d entries beside the adapter folder, want 1", len(entries))
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), nil, 0o644)
	if err := WriteDir(dir, write("three")); !badinput.Is(err) || !strings.Contains(err.Error(), "holds model.onnx") || read() != "two" {
		t.Errorf("foreign folder: %v, content %q", err, read())
	}
}

// Merge writes a new model folder: merged weights in model.onnx.data, the
// manifest, and every other file and folder copied.
func TestMerge(t *testing.T) {
	src := t.TempDir()
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.D(1), onnx.D(16)})
	w := make([]float32, 16*32)
	for i := range w {
		w[i] = float32(i)
	}
	g.AddInitializer(onnx.Float32Tensor("w.weight", []int64{16, 32}, w))
	y := g.Op("MatMul", []string{"x", "w.weight"}, "y")
	g.AddOutput(y, onnx.Float, nil)
	if err := m.Save(filepath.Join(src, modeldir.ModelFile), onnx.SaveOptions{External: onnx.ExternalAll, DataFile: modeldir.DataFile}); err != nil {
		t.Fatal(err)
	}
	man := &modeldir.Manifest{Format: modeldir.FormatVersion, Architecture: "test", Objective: "cls", Inputs: []string{"x"}, Outputs: []string{y}, NumLabels: 32,
		Linears: []modeldir.Linear{{Name: "w", Role: modeldir.RoleHead, Weight: "w.weight", Node: "y/MatMul", Input: "x", Output: y, DIn: 16, DOut: 32}}}
	if err := modeldir.WriteManifest(src, man); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, modeldir.ConfigFile), []byte(`{"model_type": "test"}`), 0o644)
	os.MkdirAll(filepath.Join(src, "notes"), 0o755)
	os.WriteFile(filepath.Join(src, "notes", "readme.txt"), []byte("hello"), 0o644)

	out := filepath.Join(t.TempDir(), "merged")
	res, err := Merge(src, writeConfig(t, `{"peft_type": "DOUBLER"}`), out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != "doubler" || !slices.Equal(res.Layers, []string{"w"}) {
		t.Errorf("result %+v", res)
	}
	merged, err := onnx.Load(filepath.Join(out, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer merged.Close()
	got, err := merged.Float32s(merged.Graph().Initializer("w.weight"))
	if err != nil || got[5] != 10 || !onnx.IsExternal(merged.Graph().Initializer("w.weight")) {
		t.Errorf("merged weight: %v, w[5] = %v, external %v", err, got[5], onnx.IsExternal(merged.Graph().Initializer("w.weight")))
	}
	for _, f := range []string{modeldir.ConfigFile, modeldir.ManifestFile, modeldir.DataFile, "notes/readme.txt"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("merged folder: %v", err)
		}
	}
	orig, _ := onnx.Load(filepath.Join(src, modeldir.ModelFile))
	defer orig.Close()
	if w, _ := orig.Float32s(orig.Graph().Initializer("w.weight")); w[5] != 5 {
		t.Errorf("the source model changed: w[5] = %v", w[5])
	}
}
