package dora

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/train"
)

var _ adapters.Adapter = (*Adapter)(nil)

// The registry makes DoRA from LoRA's settings and tells DoRA folders from
// LoRA ones by use_dora, though both say peft_type "LORA".
func TestRegistry(t *testing.T) {
	a, err := adapters.New(Kind, adapters.Options{lora.OptionR: "2", lora.OptionTargets: "q,k"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := a.(*Adapter).Config(); cfg.R != 2 || cfg.Alpha != lora.DefaultAlpha || strings.Join(cfg.Targets, ",") != "q,k" {
		t.Errorf("config %+v", cfg)
	}
	if _, err := adapters.New(Kind, adapters.Options{lora.OptionR: "0"}); !badinput.Is(err) || !strings.Contains(err.Error(), "lora-r 0 is outside") {
		t.Errorf("rank 0: %v", err)
	}
	k, _ := adapters.Lookup(Kind)
	for _, o := range adapters.AllOptions() { // LoRA and DoRA declare the same flags
		if !strings.HasPrefix(o.Name, "lora-") {
			t.Errorf("option %s", o.Name)
		}
	}
	if len(k.Options) != len(lora.Options()) {
		t.Errorf("DoRA declares %d options, LoRA %d", len(k.Options), len(lora.Options()))
	}

	_, dir := testfix.TinyModel(t, "llama")
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, kind := range []string{lora.Kind, Kind} {
		a, err := adapters.New(kind, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 1})
		values := map[string][]float32{}
		for _, p := range inj.Params {
			values[p.Name] = p.Init
		}
		saved[kind] = filepath.Join(t.TempDir(), kind)
		if err := a.Save(saved[kind], man, values); err != nil {
			t.Fatal(err)
		}
		loaded, err := adapters.Load(saved[kind])
		if err != nil || loaded.Name() != kind {
			t.Errorf("%s folder loads as %v, %v", kind, loaded, err)
		}
	}
	if _, err := Load(saved[lora.Kind]); !badinput.Is(err) || !strings.Contains(err.Error(), "use_dora is false") {
		t.Errorf("dora.Load of a LoRA folder: %v", err)
	}
	if _, err := lora.Load(saved[Kind]); !badinput.Is(err) || !strings.Contains(err.Error(), "DoRA is the dora kind") {
		t.Errorf("lora.Load of a DoRA folder: %v", err)
	}
}

// A DoRA folder whose magnitudes do not fit its layers is bad input naming
// the tensor; injecting twice is refused.
func TestBadFolders(t *testing.T) {
	_, dir := testfix.TinyModel(t, "llama")
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(lora.Config{Targets: []string{"q"}, R: 2, Alpha: 4})
	if err != nil {
		t.Fatal(err)
	}
	_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 1})
	values := map[string][]float32{}
	for _, p := range inj.Params {
		values[p.Name] = p.Init
	}
	good := filepath.Join(t.TempDir(), "good")
	if err := a.Save(good, man, values); err != nil {
		t.Fatal(err)
	}
	rewrite := func(edit func(map[string]safetensors.Tensor)) string {
		f, err := safetensors.Open(filepath.Join(good, adapters.WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tensors := map[string]safetensors.Tensor{}
		for _, n := range f.Names() {
			info, _ := f.Info(n)
			v, _ := f.Float32(n)
			tensors[n] = safetensors.Tensor{Name: n, DType: safetensors.F32, Shape: info.Shape, Values: v}
		}
		edit(tensors)
		out := filepath.Join(t.TempDir(), "bad")
		os.MkdirAll(out, 0o755)
		raw, _ := os.ReadFile(filepath.Join(good, adapters.ConfigFile))
		os.WriteFile(filepath.Join(out, adapters.ConfigFile), raw, 0o644)
		var list []safetensors.Tensor
		for _, tt := range tensors {
			list = append(list, tt)
		}
		if err := safetensors.Write(filepath.Join(out, adapters.WeightsFile), list, nil); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := man.Linears[0].Name
	for _, l := range man.Linears {
		if l.Role == modeldir.RoleQ {
			first = l.Name
			break
		}
	}
	key := lora.Key(first, magnitudeSuffix)
	cases := []struct {
		name string
		dir  string
		want string
	}{
		{"no magnitude", rewrite(func(m map[string]safetensors.Tensor) { delete(m, key) }), "has lora_A and lora_B but no lora_magnitude_vector"},
		{"short magnitude", rewrite(func(m map[string]safetensors.Tensor) {
			m[key] = safetensors.Tensor{Name: key, DType: safetensors.F32, Shape: []int64{3}, Values: []float32{1, 2, 3}}
		}), "has 3 values"},
		{"magnitude alone", rewrite(func(m map[string]safetensors.Tensor) {
			k := lora.Key("model.layers.0.mlp.down_proj", magnitudeSuffix)
			m[k] = safetensors.Tensor{Name: k, DType: safetensors.F32, Shape: []int64{2}, Values: []float32{1, 2}}
		}), "has no lora_A and lora_B beside it"},
		{"2-D magnitude", rewrite(func(m map[string]safetensors.Tensor) {
			m[key] = safetensors.Tensor{Name: key, DType: safetensors.F32, Shape: []int64{1, 3}, Values: []float32{1, 2, 3}}
		}), "want one dimension"},
	}
	for _, c := range cases {
		a, err := Load(c.dir)
		if err == nil {
			_, err = a.Layers(man)
		}
		if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want bad input containing %q", c.name, err, c.want)
		}
	}
	m := loadModel(t, dir)
	if _, err := a.Inject(m, man, adapters.InjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Inject(m, man, adapters.InjectOptions{}); !badinput.Is(err) || !strings.Contains(err.Error(), "already has an adapter") {
		t.Errorf("second Inject: %v", err)
	}
	var cfg map[string]any
	raw, _ := os.ReadFile(filepath.Join(good, adapters.ConfigFile))
	json.Unmarshal(raw, &cfg)
	if cfg["use_dora"] != true || cfg["peft_type"] != "LORA" {
		t.Errorf("adapter_config.json: use_dora %v, peft_type %v", cfg["use_dora"], cfg["peft_type"])
	}
}

// With dropout the training graph drops the input of both DoRA terms, as
// PEFT does, and trains; evaluation graphs have no Dropout.
func TestDropout(t *testing.T) {
	_, dir := testfix.TinyModel(t, "llama")
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	_, p, _ := plan(t, dir, lora.Config{Targets: []string{"q", "v"}, R: 4, Alpha: 8, Dropout: 0.2}, 1)
	drops := 0
	for _, n := range p.Model.Graph().P.Node {
		if n.GetOpType() == "Dropout" {
			drops++
		}
	}
	if drops == 0 {
		t.Fatal("a training graph with dropout 0.2 has no Dropout")
	}
	tr, err := train.NewTrainer(p, t.TempDir(), train.Config{GradAccum: 1, Optim: train.DefaultAdamW(), Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.TrainStep([]*data.Batch{testfix.RandomBatches(1, 2, 10, 600, 4)[0]}, false); err != nil {
		t.Fatal(err)
	}
	a, err := New(lora.Config{Targets: []string{"q", "v"}, R: 4, Alpha: 8, Dropout: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	m := loadModel(t, dir)
	man, _ := modeldir.ReadManifest(dir)
	if _, err := a.Inject(m, man, adapters.InjectOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range m.Graph().P.Node {
		if n.GetOpType() == "Dropout" {
			t.Fatal("an evaluation graph has a Dropout")
		}
	}
}
