// Package dora is DoRA, weight-decomposed low-rank adaptation (Liu et al.,
// 2024), as a plug-in of package adapters with PEFT's conventions
// (LoraConfig(use_dora=True)): for each selected linear layer y = x·W it
// trains LoRA's A [d_in, r] and B [r, d_out] and a magnitude m [d_out], and
// computes
//
//	W' = W_c · diag(m / ‖W_c‖),   W_c = W + s·A·B,
//
// the norm taken per output feature over the input dimension and treated
// as a constant by the backward pass, as PEFT detaches it. m starts at ‖W‖,
// so a fresh adapter (B zero) leaves the model unchanged. Folders are
// PEFT's: peft_type "LORA" with use_dora true, and a
// "<module>.lora_magnitude_vector" tensor per layer beside lora_A and
// lora_B.
//
// For MIGU, A and B are masked as in LoRA (by x·A and by the layer's
// output), and m, one value per output feature, by the layer's output too.
package dora

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/safetensors"
)

// Kind is the adapter kind's name.
const Kind = "dora"

// magnitudeSuffix ends the magnitude vector's tensor name in PEFT's files.
const magnitudeSuffix = "lora_magnitude_vector"

func init() {
	adapters.Register(adapters.Kind{Name: Kind, PEFTType: lora.PEFTType, Options: lora.Options(),
		Claims: func(raw []byte) bool { return lora.ClaimsConfig(raw, true) },
		New: func(o adapters.Options) (adapters.Adapter, error) {
			cfg, err := lora.ConfigFrom(o)
			if err != nil {
				return nil, err
			}
			return New(cfg)
		},
		Load: func(dir string) (adapters.Adapter, error) { return Load(dir) }})
}

var _ adapters.Adapter = (*Adapter)(nil)

// Adapter is a DoRA adapter: LoRA's configuration and matrices, and for a
// loaded adapter the magnitude vector of each layer.
type Adapter struct {
	lora *lora.Adapter
	// magnitudes maps linear names to loaded magnitude vectors; nil for a
	// fresh adapter, whose magnitudes start at ‖W‖.
	magnitudes map[string][]float32
}

// New returns a fresh DoRA adapter.
func New(cfg lora.Config) (*Adapter, error) {
	l, err := lora.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Adapter{lora: l}, nil
}

// Load reads a DoRA adapter folder written by Save or by PEFT's
// save_pretrained with use_dora true.
func Load(dir string) (*Adapter, error) {
	l, extra, err := lora.Read(dir, true, magnitudeSuffix)
	if err != nil {
		return nil, err
	}
	return &Adapter{lora: l, magnitudes: extra[magnitudeSuffix]}, nil
}

// Name is "dora".
func (a *Adapter) Name() string { return Kind }

// Config returns the adapter's LoRA configuration.
func (a *Adapter) Config() lora.Config { return a.lora.Config() }

// ParamMagnitude names a layer's magnitude vector.
func ParamMagnitude(linear string) string { return linear + "." + magnitudeSuffix }

// Layers lists the adapted layers of man, as LoRA's Layers does; a loaded
// adapter must hold a magnitude of d_out values for each.
func (a *Adapter) Layers(man *modeldir.Manifest) ([]modeldir.Linear, error) {
	layers, err := a.lora.Layers(man)
	if err != nil || a.magnitudes == nil {
		return layers, err
	}
	adapted := map[string]bool{}
	for _, l := range layers {
		adapted[l.Name] = true
		m, ok := a.magnitudes[l.Name]
		if !ok {
			return nil, badinput.Errorf("DoRA adapter: layer %s has lora_A and lora_B but no %s", l.Name, magnitudeSuffix)
		}
		if int64(len(m)) != l.DOut {
			return nil, badinput.Errorf("DoRA adapter: %s of layer %s has %d values, the layer %d outputs", magnitudeSuffix, l.Name, len(m), l.DOut)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.magnitudes)) {
		if !adapted[name] {
			return nil, badinput.Errorf("DoRA adapter: %s of %s has no lora_A and lora_B beside it", magnitudeSuffix, name)
		}
	}
	return layers, nil
}

// Inject adds DoRA to every adapted layer of m, in PEFT's form:
//
//	h  = x·A, d = (h·s)·B                  (x through Dropout when training with dropout)
//	n  = ‖W + s·A·B‖ per output feature     (a constant for the backward pass)
//	f  = m / n
//	y' = y + ((f − 1)·(x·W) + f·d)
//
// where x·W is the layer's MatMul before any bias (recomputed on the
// dropped-out x when training with dropout, as PEFT does). The layer's old
// output is renamed "<y>.base" and y' takes its name. Parameters are
// "<linear>.lora_A.weight", "<linear>.lora_B.weight" and
// "<linear>.lora_magnitude_vector"; points "<linear>.lora_A" (h) and
// "<linear>" (y').
func (a *Adapter) Inject(m *onnx.Model, man *modeldir.Manifest, opt adapters.InjectOptions) (*adapters.Injection, error) {
	layers, err := a.Layers(man)
	if err != nil {
		return nil, err
	}
	cfg := a.lora.Config()
	g := m.Graph()
	producers := g.Producers()
	nodes := map[string]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		nodes[n.GetName()] = n
	}
	masks := map[string]string{}
	for _, p := range migu.LinearPoints(man) {
		masks[p.Name] = p.Mask
	}
	r := int64(cfg.R)
	scale := g.Const("dora.scaling", nil, float32(cfg.Scaling()))
	one := g.Const("dora.one", nil, 1)
	axis0 := g.ConstInt64("dora.axis0", []int64{1}, 0)
	var ratio, training string
	if opt.Training && cfg.Dropout > 0 {
		ratio = g.Const("dora.dropout_ratio", nil, float32(cfg.Dropout))
		training = g.Unique("dora.training_mode")
		g.AddInitializer(onnx.NewTensor(training, onnx.Bool, nil, []byte{1}))
	}
	inj := &adapters.Injection{}
	for _, l := range layers {
		nameA, nameB, nameM := lora.ParamA(l.Name), lora.ParamB(l.Name), ParamMagnitude(l.Name)
		if g.Initializer(nameA) != nil || g.Initializer(nameM) != nil {
			return nil, badinput.Errorf("layer %s already has an adapter (%s exists)", l.Name, nameA)
		}
		p := producers[l.Output]
		mm := nodes[l.Node]
		if p == nil || mm == nil || len(mm.Input) != 2 || len(mm.Output) != 1 {
			return nil, fmt.Errorf("dora: layer %s: no MatMul node %q computing %q", l.Name, l.Node, l.Output)
		}
		weight, xw := mm.Input[1], mm.Output[0]
		va, vb := a.lora.Values(l, opt.Seed)
		vm, err := a.magnitude(m, l)
		if err != nil {
			return nil, err
		}
		g.AddInitializer(onnx.Float32Tensor(nameA, []int64{l.DIn, r}, va))
		g.AddInitializer(onnx.Float32Tensor(nameB, []int64{r, l.DOut}, vb))
		g.AddInitializer(onnx.Float32Tensor(nameM, []int64{l.DOut}, vm))

		base := g.Unique(l.Output + ".base")
		for i, o := range p.Output {
			if o == l.Output {
				p.Output[i] = base
			}
		}
		if xw == l.Output {
			xw = base // no bias: the MatMul is the renamed output itself
		}
		x := l.Input
		if ratio != "" {
			x = g.Op("Dropout", []string{x, ratio, training}, l.Name+".lora_dropout", onnx.AttrInt("seed", lora.DropoutSeed(opt.Seed, l.Name)))
			xw = g.Op("MatMul", []string{x, weight}, l.Name+".dora_xw")
		}
		h := g.Op("MatMul", []string{x, nameA}, lora.PointA(l.Name))
		hs := g.Op("Mul", []string{h, scale}, l.Name+".lora_scaled")
		d := g.Op("MatMul", []string{hs, nameB}, l.Name+".lora_B")

		ab := g.Op("MatMul", []string{nameA, nameB}, l.Name+".dora_ab")
		wc := g.Op("Add", []string{weight, g.Op("Mul", []string{ab, scale}, l.Name+".dora_ab_scaled")}, l.Name+".dora_weight")
		sq := g.Op("ReduceSum", []string{g.Op("Mul", []string{wc, wc}, l.Name+".dora_sq"), axis0}, l.Name+".dora_sumsq", onnx.AttrInt("keepdims", 0))
		norm := grad.StopGradient(g, g.Op("Sqrt", []string{sq}, l.Name+".dora_norm_value"), l.Name+".dora_norm")
		f := g.Op("Div", []string{nameM, norm}, l.Name+".dora_scale")
		t1 := g.Op("Mul", []string{xw, g.Op("Sub", []string{f, one}, l.Name+".dora_scale_m1")}, l.Name+".dora_base_delta")
		t2 := g.Op("Mul", []string{d, f}, l.Name+".dora_lora")
		delta := g.Op("Add", []string{t1, t2}, l.Name+".dora_delta")
		g.Node("Add", []string{base, delta}, []string{l.Output}, l.Name+".dora")

		inj.Params = append(inj.Params,
			adapters.Param{Name: nameA, Shape: []int64{l.DIn, r}, Init: va},
			adapters.Param{Name: nameB, Shape: []int64{r, l.DOut}, Init: vb},
			adapters.Param{Name: nameM, Shape: []int64{l.DOut}, Init: vm})
		inj.Points = append(inj.Points,
			migu.Point{Name: lora.PointA(l.Name), Value: h, Dim: r, Mask: masks[l.Name]},
			migu.Point{Name: l.Name, Value: l.Output, Dim: l.DOut, Mask: masks[l.Name]})
		inj.Masks = append(inj.Masks,
			migu.Rule{Param: nameA, Shape: []int64{l.DIn, r}, Axis: 1, Tap: lora.PointA(l.Name)},
			migu.Rule{Param: nameB, Shape: []int64{r, l.DOut}, Axis: 1, Tap: l.Name},
			migu.Rule{Param: nameM, Shape: []int64{l.DOut}, Axis: 0, Tap: l.Name})
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return inj, nil
}

// magnitude is a layer's m: loaded, or ‖W‖ per output feature (W + s·A·B
// with B zero, as PEFT initialises it), summed in float64.
func (a *Adapter) magnitude(m *onnx.Model, l modeldir.Linear) ([]float32, error) {
	if a.magnitudes != nil {
		return slices.Clone(a.magnitudes[l.Name]), nil
	}
	w, err := lora.WeightOf(m, l)
	if err != nil {
		return nil, err
	}
	return columnNorms(w, l.DIn, l.DOut), nil
}

// columnNorms is ‖w[:, j]‖ for w [rows, cols], summed in float64.
func columnNorms(w []float32, rows, cols int64) []float32 {
	sum := make([]float64, cols)
	for i := range rows {
		for j, v := range w[i*cols : (i+1)*cols] {
			sum[j] += float64(v) * float64(v)
		}
	}
	out := make([]float32, cols)
	for j, s := range sum {
		out[j] = float32(math.Sqrt(s))
	}
	return out
}

// Save writes the adapter in PEFT's layout: LoRA's files with use_dora
// true and each layer's magnitude vector. values holds the trained tensors
// by parameter name; nil saves a loaded adapter as it is.
func (a *Adapter) Save(dir string, man *modeldir.Manifest, values map[string][]float32) error {
	layers, err := a.Layers(man)
	if err != nil {
		return err
	}
	var extra []safetensors.Tensor
	for _, l := range layers {
		v := values[ParamMagnitude(l.Name)]
		if values == nil {
			v = a.magnitudes[l.Name]
		}
		if int64(len(v)) != l.DOut {
			return fmt.Errorf("dora: saving %s: %d values for %s, want %d", dir, len(v), ParamMagnitude(l.Name), l.DOut)
		}
		extra = append(extra, safetensors.Tensor{Name: lora.Key(l.Name, magnitudeSuffix), DType: safetensors.F32, Shape: []int64{l.DOut}, Values: v})
	}
	return a.lora.Write(dir, man, values, true, extra)
}

// Merge folds the adapter into m's weights: W' = W_c · diag(m / ‖W_c‖)
// with W_c = W + s·A·B, as PEFT's merge_and_unload does.
func (a *Adapter) Merge(m *onnx.Model, man *modeldir.Manifest) error {
	if a.magnitudes == nil {
		return fmt.Errorf("dora: merging needs trained values: save the adapter and merge the folder")
	}
	layers, err := a.Layers(man)
	if err != nil {
		return err
	}
	cfg := a.lora.Config()
	for _, l := range layers {
		w, err := lora.WeightOf(m, l)
		if err != nil {
			return err
		}
		va, vb := a.lora.Values(l, 0)
		lora.AddProduct(w, va, vb, l.DIn, int64(cfg.R), l.DOut, float32(cfg.Scaling()))
		norms := columnNorms(w, l.DIn, l.DOut)
		mag := a.magnitudes[l.Name]
		for i := range l.DIn {
			row := w[i*l.DOut : (i+1)*l.DOut]
			for j := range row {
				row[j] *= mag[j] / norms[j]
			}
		}
		if err := lora.SetWeight(m, man, l, w); err != nil {
			return err
		}
	}
	return nil
}
