package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testfix/trainfix"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/train"
)

func TestParseTargets(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		bad  bool
	}{
		{"q,v", []string{"q", "v"}, false},
		{" q , v,q ", []string{"q", "v"}, false},
		{"all", []string{"all"}, false},
		{"ffn_in,ffn_gate,ffn_out,head", []string{"ffn_in", "ffn_gate", "ffn_out", "head"}, false},
		{"q,query", nil, true},
		{"", nil, true},
	}
	for _, c := range cases {
		got, err := ParseTargets(c.in)
		if c.bad {
			if !badinput.Is(err) {
				t.Errorf("ParseTargets(%q) = %v, %v; want bad input", c.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseTargets(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// defaulted fills a test's zero rank and alpha with the defaults.
func defaulted(c Config) Config {
	if c.R == 0 {
		c.R = DefaultR
	}
	if c.Alpha == 0 {
		c.Alpha = DefaultAlpha
	}
	return c
}

func TestConfig(t *testing.T) {
	a, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Config(); c.R != 8 || c.Alpha != 32 || c.Dropout != 0 || !slices.Equal(c.Targets, []string{"q", "v"}) || c.Scaling() != 4 {
		t.Errorf("defaults: %+v, scaling %v", c, c.Scaling())
	}
	if c, err := New(Config{R: 4, Alpha: 8}); err != nil || !slices.Equal(c.Config().Targets, DefaultTargets) {
		t.Errorf("no targets: %v, %v; want the default targets", c, err)
	}
	if s := (Config{R: 16, Alpha: 32, RSLoRA: true}).Scaling(); s != 8 {
		t.Errorf("rslora scaling α/√r = %v, want 8", s)
	}
	// A zero rank or alpha is refused, not replaced by the default.
	cases := []struct {
		c    Config
		want string
	}{
		{Config{R: 0, Alpha: 32}, "lora-r 0 is outside its range: 1 …"},
		{Config{R: -1, Alpha: 32}, "lora-r -1 is outside"},
		{Config{R: 8, Alpha: 0}, "lora-alpha 0 is outside its range: a finite number > 0"},
		{Config{R: 8, Alpha: -2}, "lora-alpha -2 is outside"},
		{Config{R: 8, Alpha: math.Inf(1)}, "lora-alpha +Inf is outside"},
		{Config{R: 8, Alpha: 32, Dropout: 1}, "lora-dropout 1 is outside its range: [0, 1)"},
		{Config{R: 8, Alpha: 32, Dropout: math.NaN()}, "lora-dropout NaN is outside"},
		{Config{R: 8, Alpha: 32, Targets: []string{"wq"}}, `unknown target "wq"`},
	}
	for _, c := range cases {
		if _, err := New(c.c); !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want bad input with %q", c.c, err, c.want)
		}
	}
}

// The rank is bounded by the narrowest adapted layer's width, checked
// from the manifest alone (CheckFor) and again when injecting.
func TestRankBoundedByWidth(t *testing.T) {
	_, dir, man := model(t, "llama")
	narrow := int64(math.MaxInt64)
	for _, l := range man.Linears {
		if l.Role == "q" || l.Role == "v" {
			narrow = min(narrow, l.DIn, l.DOut)
		}
	}
	for _, r := range []int64{1, narrow, narrow + 1, 100000} {
		c := Config{Targets: []string{"q", "v"}, R: int(r), Alpha: 8}
		err := c.CheckFor(man)
		if r <= narrow {
			if err != nil {
				t.Errorf("r %d (width %d): %v", r, narrow, err)
			}
			continue
		}
		want := fmt.Sprintf("lora-r %d is outside its range: 1 … %d, the width of the narrowest adapted layer", r, narrow)
		if !badinput.Is(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("r %d: %v, want %q", r, err, want)
		}
		a, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Inject(m, man, adapters.InjectOptions{Training: true})
		m.Close()
		if !badinput.Is(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("Inject with r %d: %v, want %q", r, err, want)
		}
	}
}

// Roles the model lacks are bad input naming them and listing its roles.
func TestMissingRoles(t *testing.T) {
	_, _, man := model(t, "roberta")
	a, err := New(defaulted(Config{Targets: []string{"q", "ffn_gate"}}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Layers(man)
	if !badinput.Is(err) || !strings.Contains(err.Error(), "ffn_gate") || !strings.Contains(err.Error(), "its roles: q, k, v, o, ffn_in, ffn_out, head") {
		t.Errorf("error %v", err)
	}
}

// target_modules names the adapted layers the way PEFT matches them, with
// short names where they select exactly the adapted set.
func TestTargetModules(t *testing.T) {
	cases := []struct {
		arch    string
		targets []string
		want    []string
		layers  int
	}{
		{"llama", []string{"q", "v"}, []string{"q_proj", "v_proj"}, 8},
		{"llama", []string{"all"}, []string{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}, 28},
		{"t5", []string{"q", "v"}, []string{"q", "v"}, 12},
		{"t5", []string{"head"}, []string{"lm_head"}, 1},
		{"roberta", []string{"q", "v"}, []string{"query", "value"}, 4},
		{"roberta", []string{"all"}, []string{"intermediate.dense", "key", "output.dense", "query", "value"}, 12},
		{"roberta", []string{"head"}, []string{"decoder", "lm_head.dense"}, 2},
		{"roberta", []string{"o"}, []string{"attention.output.dense"}, 2},
	}
	for _, c := range cases {
		_, _, man := model(t, c.arch)
		a, err := New(defaulted(Config{Targets: c.targets}))
		if err != nil {
			t.Fatal(err)
		}
		layers, err := a.Layers(man)
		if err != nil {
			t.Fatal(err)
		}
		if got := targetModules(layers, man); !slices.Equal(got, c.want) || len(layers) != c.layers {
			t.Errorf("%s %v: %d layers, target_modules %q; want %d, %q", c.arch, c.targets, len(layers), got, c.layers, c.want)
		}
	}
}

// A is drawn from U(−b, b) with PEFT's Kaiming bound b = 1/√d_in, spread
// as a uniform distribution should be, reproducibly per (seed, layer).
func TestInitA(t *testing.T) {
	for _, dIn := range []int64{64, 128, 512} {
		b := KaimingBound(dIn)
		if math.Abs(b-1/math.Sqrt(float64(dIn))) > 1e-15 {
			t.Errorf("bound for d_in %d: %v, want 1/√d_in = %v", dIn, b, 1/math.Sqrt(float64(dIn)))
		}
		const r = 16
		a := InitA(dIn, r, 7, "layer")
		var sum, sq, lo, hi float64
		for _, v := range a {
			x := float64(v)
			if math.Abs(x) > float64(float32(b)) {
				t.Fatalf("d_in %d: value %v outside ±%v", dIn, x, b)
			}
			sum, sq, lo, hi = sum+x, sq+x*x, math.Min(lo, x), math.Max(hi, x)
		}
		n := float64(len(a))
		mean, variance := sum/n, sq/n
		if math.Abs(mean) > 4*b/math.Sqrt(3*n) || math.Abs(variance/(b*b/3)-1) > 0.1 || hi < 0.97*b || lo > -0.97*b {
			t.Errorf("d_in %d: mean %.3g, variance %.3g (uniform: %.3g), range [%.3g, %.3g] of ±%.3g", dIn, mean, variance, b*b/3, lo, hi, b)
		}
		if !slices.Equal(a, InitA(dIn, r, 7, "layer")) || slices.Equal(a, InitA(dIn, r, 7, "other")) || slices.Equal(a, InitA(dIn, r, 8, "layer")) {
			t.Errorf("d_in %d: InitA is not a function of (seed, layer) alone", dIn)
		}
	}
}

// With B = 0 (the initial state) the injected model's logits equal the
// base model's bit for bit, for every architecture.
func TestZeroBIsIdentity(t *testing.T) {
	for _, arch := range []string{"llama", "t5", "roberta"} {
		t.Run(arch, func(t *testing.T) {
			c := archCases[arch]
			_, dir, man := model(t, arch)
			base := run(t, filepath.Join(dir, modeldir.ModelFile), c.forwardFeeds(), nil)["logits"]
			a, err := New(defaulted(Config{Targets: []string{AllLinear}}))
			if err != nil {
				t.Fatal(err)
			}
			path, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 1})
			got := run(t, path, c.forwardFeeds(), nil)["logits"]
			if !slices.Equal(got, base) || len(got) == 0 {
				t.Errorf("logits differ from the base model's: max |Δ| %g", maxAbsDiff(got, base))
			}
			for _, p := range inj.Params {
				if strings.HasSuffix(p.Name, ".lora_B.weight") && slices.ContainsFunc(p.Init, func(v float32) bool { return v != 0 }) {
					t.Errorf("%s is not all zeros", p.Name)
				}
			}
		})
	}
}

// Inject declares A [d_in, r] and B [r, d_out] per layer, the x·A and y
// points and the mask rules tying them together; the manifest stays valid
// and its outputs name the adapted values.
func TestInjection(t *testing.T) {
	_, dir, man := model(t, "roberta")
	a, err := New(defaulted(Config{Targets: []string{"q", "v"}, R: 4}))
	if err != nil {
		t.Fatal(err)
	}
	m := loadModel(t, dir)
	before, _ := json.Marshal(man)
	inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(man); !bytes.Equal(before, after) {
		t.Error("Inject changed the manifest")
	}
	l := man.Linears[0] // roberta.encoder.layer.0.attention.self.query
	wantParams := []adapters.Param{
		{Name: l.Name + ".lora_A.weight", Shape: []int64{l.DIn, 4}},
		{Name: l.Name + ".lora_B.weight", Shape: []int64{4, l.DOut}},
	}
	for i, w := range wantParams {
		p := inj.Params[i]
		if p.Name != w.Name || !slices.Equal(p.Shape, w.Shape) || int64(len(p.Init)) != w.Shape[0]*w.Shape[1] {
			t.Errorf("param %d: %s %v (%d values), want %s %v", i, p.Name, p.Shape, len(p.Init), w.Name, w.Shape)
		}
		if m.Graph().Initializer(p.Name) == nil {
			t.Errorf("param %s is not an initializer", p.Name)
		}
	}
	if len(inj.Params) != 8 || len(inj.Points) != 8 || len(inj.Masks) != 8 {
		t.Fatalf("%d params, %d points, %d masks for 4 layers", len(inj.Params), len(inj.Points), len(inj.Masks))
	}
	if p := inj.Points[0]; p.Name != l.Name+".lora_A" || p.Dim != 4 || p.Mask != "attention_mask" {
		t.Errorf("x·A point %+v", p)
	}
	if p := inj.Points[1]; p.Name != l.Name || p.Value != l.Output || p.Dim != l.DOut {
		t.Errorf("y point %+v, want the layer output %s", p, l.Output)
	}
	wantMasks := []migu.Rule{{Param: l.Name + ".lora_A.weight", Shape: []int64{l.DIn, 4}, Axis: 1, Tap: l.Name + ".lora_A"},
		{Param: l.Name + ".lora_B.weight", Shape: []int64{4, l.DOut}, Axis: 1, Tap: l.Name}}
	if !reflect.DeepEqual(inj.Masks[:2], wantMasks) {
		t.Errorf("masks %+v, want %+v", inj.Masks[:2], wantMasks)
	}
	if _, err := a.Inject(m, man, adapters.InjectOptions{}); !badinput.Is(err) || !strings.Contains(err.Error(), "already has a LoRA adapter") {
		t.Errorf("second Inject: %v", err)
	}
}

// Dropout exists only in training graphs: one Dropout in training mode per
// adapted layer, whose gradient rule train.Build applies; evaluation
// graphs and dropout 0 have none.
func TestDropoutOnlyWhenTraining(t *testing.T) {
	_, dir, man := model(t, "llama")
	count := func(m *onnx.Model) int {
		n := 0
		for _, node := range m.Graph().P.Node {
			if node.GetOpType() == "Dropout" {
				n++
			}
		}
		return n
	}
	cases := []struct {
		dropout  float64
		training bool
		want     int
	}{{0.1, true, 8}, {0.1, false, 0}, {0, true, 0}}
	for _, c := range cases {
		a, err := New(defaulted(Config{Dropout: c.dropout}))
		if err != nil {
			t.Fatal(err)
		}
		m := loadModel(t, dir)
		inj, err := a.Inject(m, man, adapters.InjectOptions{Training: c.training})
		if err != nil {
			t.Fatal(err)
		}
		if n := count(m); n != c.want {
			t.Errorf("dropout %v, training %v: %d Dropout nodes, want %d", c.dropout, c.training, n, c.want)
		}
		if c.want == 0 {
			continue
		}
		art, err := train.Build(m, man, train.GraphOptions{Names: inj.ParamNames(), Taps: true, TapPoints: inj.Points})
		if err != nil {
			t.Fatal(err)
		}
		if len(art.Params) != 16 || len(art.Taps) != 16 {
			t.Errorf("train graph with dropout: %d params, %d taps", len(art.Params), len(art.Taps))
		}
		// ORT runs it, and the dropped features change the gradients.
		path := filepath.Join(t.TempDir(), "train.onnx")
		if err := m.Save(path, onnx.SaveOptions{External: onnx.ExternalNone}); err != nil {
			t.Fatal(err)
		}
		undropped, err := New(defaulted(Config{}))
		if err != nil {
			t.Fatal(err)
		}
		refPath, _, refArt := trainfix.Graph(t, dir, man, undropped, false)
		values := randomValues(inj, 3)
		floats := map[string]adapters.Param{}
		for _, p := range inj.Params {
			floats[p.Name] = adapters.Param{Name: p.Name, Shape: p.Shape, Init: values[p.Name]}
		}
		got := run(t, path, archCases["llama"].feeds, floats)
		want := run(t, refPath, archCases["llama"].feeds, floats)
		for i, p := range art.Params {
			g, w := got[p.Grad], want[refArt.Params[i].Grad]
			if d := maxAbsDiff(g, w); math.IsInf(d, 1) || d == 0 {
				t.Errorf("gradient of %s with dropout %v: max |Δ| %g from the one without", p.Name, c.dropout, d)
			}
		}
	}
}

// randomValues gives the parameters of inj values as after some training:
// A as initialised (Kaiming-uniform), B drawn from U(−0.1, 0.1) instead of
// zero, so the adapter changes the model.
func randomValues(inj *adapters.Injection, seed uint64) map[string][]float32 {
	rng := rand.New(rand.NewPCG(seed, 0))
	values := map[string][]float32{}
	for _, p := range inj.Params {
		v := slices.Clone(p.Init)
		if strings.HasSuffix(p.Name, ".lora_B.weight") {
			for i := range v {
				v[i] = float32(rng.Float64()*0.2 - 0.1)
			}
		}
		values[p.Name] = v
	}
	return values
}

// Saving writes PEFT's names and PyTorch shapes; loading gives back the
// same values, and saving the loaded adapter the same bytes.
func TestSaveLoad(t *testing.T) {
	_, dir, man := model(t, "t5")
	a, err := New(Config{Targets: []string{"q", "v"}, R: 4, Alpha: 16, Dropout: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 5})
	values := randomValues(inj, 5)
	out := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(out, man, values); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	raw, _ := os.ReadFile(filepath.Join(out, adapters.ConfigFile))
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"peft_type": "LORA", "r": 4.0, "lora_alpha": 16.0, "lora_dropout": 0.05, "bias": "none",
		"task_type": "SEQ_2_SEQ_LM", "fan_in_fan_out": false, "use_rslora": false, "inference_mode": true, "target_modules": []any{"q", "v"}} {
		if !reflect.DeepEqual(cfg[k], want) {
			t.Errorf("adapter_config.json %s = %v, want %v", k, cfg[k], want)
		}
	}
	f, err := safetensors.Open(filepath.Join(out, adapters.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	l := man.Linears[0]
	info, err := f.Info("base_model.model." + l.Name + ".lora_B.weight")
	if err != nil || !slices.Equal(info.Shape, []int64{l.DOut, 4}) || len(f.Names()) != 24 {
		t.Errorf("lora_B of %s: %+v, %v; %d tensors", l.Name, info, err, len(f.Names()))
	}
	f.Close()

	b, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if c := b.Config(); c.R != 4 || c.Alpha != 16 || c.Dropout != 0.05 {
		t.Errorf("loaded config %+v", c)
	}
	_, inj2 := injected(t, dir, man, b, adapters.InjectOptions{})
	for _, p := range inj2.Params {
		if !slices.Equal(p.Init, values[p.Name]) {
			t.Errorf("%s: loaded values differ from the saved ones", p.Name)
		}
	}
	again := filepath.Join(t.TempDir(), "again")
	if err := b.Save(again, man, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{adapters.ConfigFile, adapters.WeightsFile} {
		x, _ := os.ReadFile(filepath.Join(out, name))
		y, _ := os.ReadFile(filepath.Join(again, name))
		if !bytes.Equal(x, y) {
			t.Errorf("re-saving the loaded adapter changed %s", name)
		}
	}
	// Saving over an adapter folder replaces it; over anything else, refuses.
	if err := b.Save(out, man, nil); err != nil {
		t.Errorf("replacing an adapter folder: %v", err)
	}
	if err := b.Save(dir, man, nil); !badinput.Is(err) || !strings.Contains(err.Error(), "not an adapter folder") {
		t.Errorf("saving into a model folder: %v", err)
	}
}

// Adapter folders that migu cannot use fail with one line naming the file,
// field or tensor.
func TestLoadErrors(t *testing.T) {
	_, dir, man := model(t, "llama")
	_, _, t5 := model(t, "t5")
	a, err := New(defaulted(Config{R: 4}))
	if err != nil {
		t.Fatal(err)
	}
	_, inj := injected(t, dir, man, a, adapters.InjectOptions{})
	good := filepath.Join(t.TempDir(), "good")
	if err := a.Save(good, man, randomValues(inj, 1)); err != nil {
		t.Fatal(err)
	}
	q0 := "base_model.model.model.layers.0.self_attn.q_proj"
	// edit copies the good adapter, changing its config and tensors.
	edit := func(t *testing.T, cfg func(map[string]any), tensors func(map[string]safetensors.Tensor)) string {
		out := t.TempDir()
		raw, _ := os.ReadFile(filepath.Join(good, adapters.ConfigFile))
		var c map[string]any
		json.Unmarshal(raw, &c)
		cfg(c)
		raw, _ = json.Marshal(c)
		os.WriteFile(filepath.Join(out, adapters.ConfigFile), raw, 0o644)
		f, err := safetensors.Open(filepath.Join(good, adapters.WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ts := map[string]safetensors.Tensor{}
		for _, n := range f.Names() {
			info, _ := f.Info(n)
			v, _ := f.Float32(n)
			ts[n] = safetensors.Tensor{Name: n, DType: safetensors.F32, Shape: info.Shape, Values: v}
		}
		tensors(ts)
		var list []safetensors.Tensor
		for _, v := range ts {
			list = append(list, v)
		}
		if err := safetensors.Write(filepath.Join(out, adapters.WeightsFile), list, nil); err != nil {
			t.Fatal(err)
		}
		return out
	}
	keep := func(map[string]any) {}
	same := func(map[string]safetensors.Tensor) {}
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		want string
	}{
		{"no config", func(t *testing.T) string { return t.TempDir() }, "no adapter_config.json"},
		{"not LoRA", func(t *testing.T) string { return edit(t, func(c map[string]any) { c["peft_type"] = "IA3" }, same) }, `peft_type "IA3" is not an adapter kind`},
		{"DoRA", func(t *testing.T) string { return edit(t, func(c map[string]any) { c["use_dora"] = true }, same) }, "use_dora"},
		{"rank mismatch", func(t *testing.T) string { return edit(t, func(c map[string]any) { c["r"] = 8 }, same) }, "rank mismatch"},
		{"missing lora_B", func(t *testing.T) string {
			return edit(t, keep, func(ts map[string]safetensors.Tensor) { delete(ts, q0+".lora_B.weight") })
		}, q0 + `.lora_A.weight" has no partner`},
		{"missing lora_A", func(t *testing.T) string {
			return edit(t, keep, func(ts map[string]safetensors.Tensor) { delete(ts, q0+".lora_A.weight") })
		}, q0 + `.lora_B.weight" has no partner`},
		{"unknown tensor", func(t *testing.T) string {
			return edit(t, keep, func(ts map[string]safetensors.Tensor) {
				ts["base_model.model.lm_head.modules_to_save.weight"] = safetensors.Tensor{Name: "base_model.model.lm_head.modules_to_save.weight", DType: safetensors.F32, Shape: []int64{1}, Values: []float32{0}}
			})
		}, "lm_head.modules_to_save.weight"},
		{"no weights file", func(t *testing.T) string {
			d := edit(t, keep, same)
			os.Remove(filepath.Join(d, adapters.WeightsFile))
			return d
		}, "adapter_model.safetensors"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapters.Load(c.dir(t))
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want bad input containing %q", err, c.want)
			}
		})
	}
	// An adapter that loads but belongs to another model.
	b, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Layers(t5); !badinput.Is(err) || !strings.Contains(err.Error(), q0+".lora_A.weight") || !strings.Contains(err.Error(), "has no linear layer model.layers.0.self_attn.q_proj;") {
		t.Errorf("llama adapter on t5: %v", err)
	}
	wide := edit(t, keep, func(ts map[string]safetensors.Tensor) {
		ts[q0+".lora_A.weight"] = safetensors.Tensor{Name: q0 + ".lora_A.weight", DType: safetensors.F32, Shape: []int64{4, 32}, Values: make([]float32, 128)}
	})
	if b, err = Load(wide); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Layers(man); !badinput.Is(err) || !strings.Contains(err.Error(), q0+".lora_A.weight") || !strings.Contains(err.Error(), "32→64 in the adapter but 64→64") {
		t.Errorf("shape mismatch: %v", err)
	}
}
