package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
)

// peftConfig is adapter_config.json with the fields PEFT 0.13's LoraConfig
// writes, so PEFT reads ours and we read PEFT's.
type peftConfig struct {
	AlphaPattern        map[string]any `json:"alpha_pattern"`
	AutoMapping         any            `json:"auto_mapping"`
	BaseModelNameOrPath *string        `json:"base_model_name_or_path"`
	Bias                string         `json:"bias"`
	FanInFanOut         bool           `json:"fan_in_fan_out"`
	InferenceMode       bool           `json:"inference_mode"`
	InitLoraWeights     any            `json:"init_lora_weights"`
	LayerReplication    any            `json:"layer_replication"`
	LayersPattern       any            `json:"layers_pattern"`
	LayersToTransform   any            `json:"layers_to_transform"`
	LoftqConfig         map[string]any `json:"loftq_config"`
	LoraAlpha           float64        `json:"lora_alpha"`
	LoraDropout         float64        `json:"lora_dropout"`
	MegatronConfig      any            `json:"megatron_config"`
	MegatronCore        string         `json:"megatron_core"`
	ModulesToSave       []string       `json:"modules_to_save"`
	PEFTType            string         `json:"peft_type"`
	R                   int            `json:"r"`
	RankPattern         map[string]any `json:"rank_pattern"`
	Revision            any            `json:"revision"`
	TargetModules       any            `json:"target_modules"` // a list of names, or a regular expression
	TaskType            *string        `json:"task_type"`
	UseDora             bool           `json:"use_dora"`
	UseRSLoRA           bool           `json:"use_rslora"`
}

// keyPrefix begins every tensor name PEFT's save_pretrained writes: the
// PeftModel's base_model (the tuner) wraps the transformers model.
const keyPrefix = "base_model.model."

// Tensor names in the adapter file for a linear layer.
func keyA(linear string) string { return Key(linear, "lora_A.weight") }
func keyB(linear string) string { return Key(linear, "lora_B.weight") }

// Key is the name PEFT's files give a layer's tensor with this suffix,
// e.g. Key("model.layers.0.self_attn.q_proj", "lora_A.weight").
func Key(linear, suffix string) string { return keyPrefix + linear + "." + suffix }

// taskTypes maps migu objectives to PEFT's task_type; PEFT has none for
// masked language modelling, which loads as a plain PeftModel.
var taskTypes = map[string]string{"clm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "cls": "SEQ_CLS"}

// Save writes dir in PEFT's format: adapter_config.json and
// adapter_model.safetensors with PEFT's tensor names and PyTorch shapes
// (lora_A [r, d_in], lora_B [d_out, r]). values holds every parameter of
// Inject by name; nil saves the loaded values.
func (a *Adapter) Save(dir string, man *modeldir.Manifest, values map[string][]float32) error {
	return a.Write(dir, man, values, false, nil)
}

// Write is Save for the kinds of PEFT's LoRA family: useDora sets
// use_dora in adapter_config.json, and extra tensors (named with Key) are
// written beside lora_A and lora_B.
func (a *Adapter) Write(dir string, man *modeldir.Manifest, values map[string][]float32, useDora bool, extra []safetensors.Tensor) error {
	layers, err := a.Layers(man)
	if err != nil {
		return err
	}
	r := int64(a.cfg.R)
	var tensors []safetensors.Tensor
	for _, l := range layers {
		va, vb := values[ParamA(l.Name)], values[ParamB(l.Name)]
		if values == nil {
			if v := a.layers[l.Name]; v != nil {
				va, vb = v.a, v.b
			}
		}
		if int64(len(va)) != l.DIn*r || int64(len(vb)) != r*l.DOut {
			return fmt.Errorf("lora: saving %s: %d and %d values for %s and %s, want %d and %d",
				dir, len(va), len(vb), ParamA(l.Name), ParamB(l.Name), l.DIn*r, r*l.DOut)
		}
		tensors = append(tensors,
			safetensors.Tensor{Name: keyA(l.Name), DType: safetensors.F32, Shape: []int64{r, l.DIn}, Values: transpose(va, l.DIn, r)},
			safetensors.Tensor{Name: keyB(l.Name), DType: safetensors.F32, Shape: []int64{l.DOut, r}, Values: transpose(vb, r, l.DOut)})
	}
	cfg := peftConfig{
		AlphaPattern:    map[string]any{},
		Bias:            "none",
		InferenceMode:   true,
		InitLoraWeights: true,
		LoftqConfig:     map[string]any{},
		LoraAlpha:       a.cfg.Alpha,
		LoraDropout:     a.cfg.Dropout,
		MegatronCore:    "megatron.core",
		PEFTType:        PEFTType,
		R:               a.cfg.R,
		RankPattern:     map[string]any{},
		TargetModules:   targetModules(layers, man),
		UseDora:         useDora,
		UseRSLoRA:       a.cfg.RSLoRA,
	}
	tensors = append(tensors, extra...)
	base := a.baseModel
	if base == "" {
		base = man.Source.From
	}
	if base != "" {
		cfg.BaseModelNameOrPath = &base
	}
	if t, ok := taskTypes[man.Objective]; ok {
		cfg.TaskType = &t
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return adapters.WriteDir(dir, func(tmp string) error {
		if err := os.WriteFile(filepath.Join(tmp, adapters.ConfigFile), append(raw, '\n'), 0o644); err != nil {
			return err
		}
		return safetensors.Write(filepath.Join(tmp, adapters.WeightsFile), tensors, map[string]string{"format": "pt"})
	})
}

// targetModules names the adapted layers as PEFT matches them (a module
// matches a name equal to its path or ending in "." + name): for each layer
// the shortest trailing part of its path, without block numbers, that
// matches no linear of the model left unadapted (q_proj, v_proj for Llama;
// q, v for T5; query, value for RoBERTa), or the full path when none does.
func targetModules(layers []modeldir.Linear, man *modeldir.Manifest) []string {
	adapted := map[string]bool{}
	for _, l := range layers {
		adapted[l.Name] = true
	}
	matches := func(name, target string) bool { return name == target || strings.HasSuffix(name, "."+target) }
	var out []string
	for _, l := range layers {
		parts := strings.Split(l.Name, ".")
		chosen := l.Name
		for n := 1; n < len(parts); n++ {
			suffix := parts[len(parts)-n:]
			if isNumber(suffix[0]) {
				break
			}
			target := strings.Join(suffix, ".")
			if !slices.ContainsFunc(man.Linears, func(o modeldir.Linear) bool { return !adapted[o.Name] && matches(o.Name, target) }) {
				chosen = target
				break
			}
		}
		if !slices.Contains(out, chosen) {
			out = append(out, chosen)
		}
	}
	sort.Strings(out)
	return out
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ClaimsConfig reports whether an adapter_config.json (raw) is PEFT's
// LoRA with use_dora as given: PEFT writes DoRA adapters as peft_type
// "LORA" with use_dora true, so the peft_type alone does not tell them apart.
func ClaimsConfig(raw []byte, useDora bool) bool {
	var head struct {
		PEFTType string `json:"peft_type"`
		UseDora  bool   `json:"use_dora"`
	}
	return json.Unmarshal(raw, &head) == nil && head.PEFTType == PEFTType && head.UseDora == useDora
}

// Load reads a LoRA adapter folder written by Save or by PEFT's
// save_pretrained. The tensors, not target_modules, say which layers are
// adapted; Layers, Inject and Merge check them against a model. Options
// migu does not implement (DoRA, trained biases, per-module ranks,
// fan_in_fan_out, extra saved modules) are bad input naming the field.
func Load(dir string) (*Adapter, error) {
	a, _, err := Read(dir, false)
	return a, err
}

// Read is Load for the kinds of PEFT's LoRA family: use_dora must be
// useDora, and each layer may have, beside lora_A and lora_B, 1-D tensors
// named Key(linear, suffix) for the suffixes in extra, returned by suffix
// and linear name.
func Read(dir string, useDora bool, extra ...string) (*Adapter, map[string]map[string][]float32, error) {
	raw, err := adapters.ReadConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	cfgPath := filepath.Join(dir, adapters.ConfigFile)
	var pc peftConfig
	if err := json.Unmarshal(raw, &pc); err != nil {
		return nil, nil, badinput.Errorf("%s: %v", cfgPath, err)
	}
	switch {
	case pc.PEFTType != PEFTType:
		return nil, nil, badinput.Errorf("%s: peft_type is %q, not %q", cfgPath, pc.PEFTType, PEFTType)
	case pc.R <= 0:
		return nil, nil, badinput.Errorf("%s: r = %d, the rank must be positive", cfgPath, pc.R)
	case !(pc.LoraAlpha > 0) || math.IsInf(pc.LoraAlpha, 0):
		return nil, nil, badinput.Errorf("%s: lora_alpha = %v, must be positive", cfgPath, pc.LoraAlpha)
	case pc.UseDora && !useDora:
		return nil, nil, badinput.Errorf("%s: use_dora is true; the lora kind reads plain LoRA adapters only (DoRA is the dora kind)", cfgPath)
	case !pc.UseDora && useDora:
		return nil, nil, badinput.Errorf("%s: use_dora is false: a plain LoRA adapter, not DoRA", cfgPath)
	case pc.Bias != "" && pc.Bias != "none":
		return nil, nil, badinput.Errorf("%s: bias is %q; migu reads LoRA adapters with bias \"none\" only", cfgPath, pc.Bias)
	case pc.FanInFanOut:
		return nil, nil, badinput.Errorf("%s: fan_in_fan_out is true (GPT-2 Conv1D layers); migu's layers are linear", cfgPath)
	case len(pc.RankPattern) > 0 || len(pc.AlphaPattern) > 0:
		return nil, nil, badinput.Errorf("%s: rank_pattern / alpha_pattern give per-module ranks; migu reads one r and lora_alpha for all layers", cfgPath)
	case !(pc.LoraDropout >= 0 && pc.LoraDropout < 1):
		return nil, nil, badinput.Errorf("%s: lora_dropout = %v, must be in [0, 1)", cfgPath, pc.LoraDropout)
	}
	a := &Adapter{
		cfg:    Config{R: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, RSLoRA: pc.UseRSLoRA},
		layers: map[string]*layerValues{},
	}
	if pc.BaseModelNameOrPath != nil {
		a.baseModel = *pc.BaseModelNameOrPath
	}
	path := filepath.Join(dir, adapters.WeightsFile)
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	names := f.Names()
	extras := map[string]map[string][]float32{}
	for _, suffix := range extra {
		extras[suffix] = map[string][]float32{}
	}
keys:
	for _, key := range names {
		rest, prefixed := strings.CutPrefix(key, keyPrefix)
		for _, suffix := range extra {
			if linear, ok := strings.CutSuffix(rest, "."+suffix); prefixed && ok {
				info, err := f.Info(key)
				if err != nil {
					return nil, nil, err
				}
				if len(info.Shape) != 1 {
					return nil, nil, badinput.Errorf("%s: tensor %q has shape %v, want one dimension", path, key, info.Shape)
				}
				if extras[suffix][linear], err = f.Float32(key); err != nil {
					return nil, nil, err
				}
				continue keys
			}
		}
		linear, isA := strings.CutSuffix(rest, ".lora_A.weight")
		other, isB := strings.CutSuffix(rest, ".lora_B.weight")
		switch {
		case prefixed && isB:
			if !slices.Contains(names, keyA(other)) {
				return nil, nil, badinput.Errorf("%s: tensor %q has no partner %q", path, key, keyA(other))
			}
			continue
		case !prefixed || !isA:
			return nil, nil, badinput.Errorf("%s: tensor %q is not a LoRA matrix of a linear layer (%s<module>.lora_A.weight / .lora_B.weight); migu reads those only", path, key, keyPrefix)
		case !slices.Contains(names, keyB(linear)):
			return nil, nil, badinput.Errorf("%s: tensor %q has no partner %q", path, key, keyB(linear))
		}
		ia, err := f.Info(key)
		if err != nil {
			return nil, nil, err
		}
		ib, err := f.Info(keyB(linear))
		if err != nil {
			return nil, nil, err
		}
		if len(ia.Shape) != 2 || ia.Shape[0] != int64(pc.R) {
			return nil, nil, badinput.Errorf("%s: tensor %q has shape %v, want [r=%d, d_in] (rank mismatch with adapter_config.json)", path, key, ia.Shape, pc.R)
		}
		if len(ib.Shape) != 2 || ib.Shape[1] != int64(pc.R) {
			return nil, nil, badinput.Errorf("%s: tensor %q has shape %v, want [d_out, r=%d] (rank mismatch with adapter_config.json)", path, keyB(linear), ib.Shape, pc.R)
		}
		va, err := f.Float32(key)
		if err != nil {
			return nil, nil, err
		}
		vb, err := f.Float32(keyB(linear))
		if err != nil {
			return nil, nil, err
		}
		dIn, dOut, r := ia.Shape[1], ib.Shape[0], int64(pc.R)
		a.layers[linear] = &layerValues{a: transpose(va, r, dIn), b: transpose(vb, dOut, r), dIn: dIn, dOut: dOut, keyA: key}
	}
	if len(a.layers) == 0 {
		return nil, nil, badinput.Errorf("%s: no LoRA tensors", path)
	}
	return a, extras, nil
}

// transpose returns the [cols, rows] transpose of a row-major [rows, cols]
// matrix.
func transpose(v []float32, rows, cols int64) []float32 {
	out := make([]float32, len(v))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = v[i*cols+j]
		}
	}
	return out
}

// Matrices returns a loaded adapter's matrices of one linear layer in
// PyTorch orientation, as PEFT and llama.cpp's adapter files store them:
// A [r, d_in] and B [d_out, r].
func (a *Adapter) Matrices(linear string) (matA, matB []float32, ok bool) {
	v := a.layers[linear]
	if v == nil {
		return nil, nil, false
	}
	r := int64(a.cfg.R)
	return transpose(v.a, v.dIn, r), transpose(v.b, r, v.dOut), true
}
