// Package lora is the LoRA adapter (Hu et al., 2021) as a plug-in of
// package adapters: for each selected linear layer y = x·W it adds
// y' = y + (α/r)·(x·A)·B with A [d_in, r] and B [r, d_out] in MatMul
// orientation, initialised as PEFT does (A Kaiming-uniform, B zero); it
// saves and loads PEFT's adapter folders, whose tensors are stored in
// PyTorch orientation ([r, d_in] and [d_out, r]); and it merges
// W' = W + (α/r)·A·B into a new model folder.
//
// For MIGU, A's mask comes from the magnitudes of x·A (r features) and B's
// from those of the layer's full output y' (d_out features).
//
// Training: New(cfg), Inject(model, manifest, {Seed, Training: true}), then
// train.Build with the injection's parameter names and points; Save writes
// the trained values. Evaluation: Load(dir), then Inject with Training
// false (the graph keeps the small LoRA MatMuls) or Merge (folded weights).
// Dropout exists only in training graphs: a Dropout node in training mode
// on the LoRA branch's input, as PEFT's lora_dropout; Inject with Training
// false emits none, so evaluation graphs are deterministic without a
// training-mode switch.
package lora

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// Kind is the adapter kind's name and PEFT's peft_type for it.
const (
	Kind     = "lora"
	PEFTType = "LORA"
)

func init() {
	adapters.Register(adapters.Kind{Name: Kind, PEFTType: PEFTType, Options: Options(),
		Claims: func(raw []byte) bool { return ClaimsConfig(raw, false) },
		New: func(o adapters.Options) (adapters.Adapter, error) {
			cfg, err := ConfigFrom(o)
			if err != nil {
				return nil, err
			}
			return New(cfg)
		},
		Load: func(dir string) (adapters.Adapter, error) { return Load(dir) }})
}

var _ adapters.Adapter = (*Adapter)(nil)

// Adapter is a LoRA adapter: a configuration, and for one read by Load the
// trained values and the exact layers they belong to.
type Adapter struct {
	cfg Config
	// layers, for a loaded adapter, maps linear names to their values; nil
	// for a fresh adapter, whose layers follow cfg.Targets.
	layers map[string]*layerValues
	// baseModel is the loaded base_model_name_or_path.
	baseModel string
}

// layerValues are one layer's loaded LoRA matrices in MatMul orientation.
type layerValues struct {
	a, b      []float32 // [d_in, r] and [r, d_out]
	dIn, dOut int64
	keyA      string // the lora_A tensor's name in the adapter file, for messages
}

// New returns a fresh LoRA adapter.
func New(cfg Config) (*Adapter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Adapter{cfg: cfg}, nil
}

// Name is "lora".
func (a *Adapter) Name() string { return Kind }

// Config returns the adapter's configuration.
func (a *Adapter) Config() Config { return a.cfg }

// ParamA and ParamB name a layer's LoRA matrices in the graph.
func ParamA(linear string) string { return linear + ".lora_A.weight" }
func ParamB(linear string) string { return linear + ".lora_B.weight" }

// PointA names the tap on x·A; the tap on the layer output is named like
// the linear, as migu.LinearPoints names it.
func PointA(linear string) string { return linear + ".lora_A" }

// Layers lists the adapted layers of man in manifest order. For a loaded
// adapter every layer it holds must exist in man with matching shapes.
func (a *Adapter) Layers(man *modeldir.Manifest) ([]modeldir.Linear, error) {
	if a.layers == nil {
		return a.cfg.layersFor(man)
	}
	byName := map[string]modeldir.Linear{}
	for _, l := range man.Linears {
		byName[l.Name] = l
	}
	for _, name := range slices.Sorted(maps.Keys(a.layers)) {
		v := a.layers[name]
		l, ok := byName[name]
		if !ok {
			return nil, badinput.Errorf("adapter tensor %s: the %s model has no linear layer %s; was the adapter trained on another model?", v.keyA, man.Architecture, name)
		}
		if l.DIn != v.dIn || l.DOut != v.dOut {
			return nil, badinput.Errorf("adapter tensors %s and its lora_B: layer %s is %d→%d in the adapter but %d→%d in the model; was the adapter trained on another model?",
				v.keyA, name, v.dIn, v.dOut, l.DIn, l.DOut)
		}
	}
	var out []modeldir.Linear
	for _, l := range man.Linears {
		if a.layers[l.Name] != nil {
			out = append(out, l)
		}
	}
	return out, nil
}

// Inject adds a LoRA branch to every adapted layer of m:
//
//	h  = x·A            [..., r]   (x through Dropout when training with dropout)
//	y' = y + (h·s)·B    s = α/r, applied on the small [..., r] tensor
//
// The layer's old output value is renamed to "<y>.base" and y' takes its
// name, so every consumer, graph output and manifest entry stays valid.
// Parameters are "<linear>.lora_A.weight" and "<linear>.lora_B.weight";
// points "<linear>.lora_A" (h) and "<linear>" (y').
func (a *Adapter) Inject(m *onnx.Model, man *modeldir.Manifest, opt adapters.InjectOptions) (*adapters.Injection, error) {
	layers, err := a.Layers(man)
	if err != nil {
		return nil, err
	}
	g := m.Graph()
	producers := g.Producers()
	masks := map[string]string{}
	for _, p := range migu.LinearPoints(man) {
		masks[p.Name] = p.Mask
	}
	r := int64(a.cfg.R)
	scale := g.Const("lora.scaling", nil, float32(a.cfg.Scaling()))
	var ratio, training string
	if opt.Training && a.cfg.Dropout > 0 {
		ratio = g.Const("lora.dropout_ratio", nil, float32(a.cfg.Dropout))
		training = g.Unique("lora.training_mode")
		g.AddInitializer(onnx.NewTensor(training, onnx.Bool, nil, []byte{1}))
	}
	inj := &adapters.Injection{}
	for _, l := range layers {
		nameA, nameB := ParamA(l.Name), ParamB(l.Name)
		if g.Initializer(nameA) != nil || g.Initializer(nameB) != nil {
			return nil, badinput.Errorf("layer %s already has a LoRA adapter (%s exists)", l.Name, nameA)
		}
		p := producers[l.Output]
		if p == nil {
			return nil, fmt.Errorf("lora: no node computes %s's output %q", l.Name, l.Output)
		}
		va, vb := a.Values(l, opt.Seed)
		g.AddInitializer(onnx.Float32Tensor(nameA, []int64{l.DIn, r}, va))
		g.AddInitializer(onnx.Float32Tensor(nameB, []int64{r, l.DOut}, vb))

		base := g.Unique(l.Output + ".base")
		for i, o := range p.Output {
			if o == l.Output {
				p.Output[i] = base
			}
		}
		x := l.Input
		if ratio != "" {
			x = g.Op("Dropout", []string{x, ratio, training}, l.Name+".lora_dropout", onnx.AttrInt("seed", DropoutSeed(opt.Seed, l.Name)))
		}
		h := g.Op("MatMul", []string{x, nameA}, PointA(l.Name))
		hs := g.Op("Mul", []string{h, scale}, l.Name+".lora_scaled")
		d := g.Op("MatMul", []string{hs, nameB}, l.Name+".lora_B")
		g.Node("Add", []string{base, d}, []string{l.Output}, l.Name+".lora")

		inj.Params = append(inj.Params,
			adapters.Param{Name: nameA, Shape: []int64{l.DIn, r}, Init: va},
			adapters.Param{Name: nameB, Shape: []int64{r, l.DOut}, Init: vb})
		inj.Points = append(inj.Points,
			migu.Point{Name: PointA(l.Name), Value: h, Dim: r, Mask: masks[l.Name]},
			migu.Point{Name: l.Name, Value: l.Output, Dim: l.DOut, Mask: masks[l.Name]})
		inj.Masks = append(inj.Masks,
			migu.Rule{Param: nameA, Shape: []int64{l.DIn, r}, Axis: 1, Tap: PointA(l.Name)},
			migu.Rule{Param: nameB, Shape: []int64{r, l.DOut}, Axis: 1, Tap: l.Name})
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return inj, nil
}

// Values returns copies of a layer's A [d_in, r] and B [r, d_out] in MatMul
// orientation: loaded ones, or PEFT's initialisation drawn from a stream of
// its own (seed, layer name), so a layer's values do not depend on which
// other layers are adapted.
func (a *Adapter) Values(l modeldir.Linear, seed uint64) (va, vb []float32) {
	r := int64(a.cfg.R)
	if a.layers != nil {
		v := a.layers[l.Name]
		return append([]float32(nil), v.a...), append([]float32(nil), v.b...)
	}
	return InitA(l.DIn, r, seed, l.Name), make([]float32, r*l.DOut)
}

// KaimingBound is the bound of PEFT's lora_A initialisation:
// torch.nn.init.kaiming_uniform_(weight, a=√5) on the [r, d_in] weight
// draws from U(−bound, bound) with gain = √(2/(1+a²)) and
// bound = √3·gain/√fan_in, fan_in = d_in (which makes bound = 1/√d_in).
func KaimingBound(dIn int64) float64 {
	a := math.Sqrt(5)
	gain := math.Sqrt(2.0 / (1 + a*a))
	std := gain / math.Sqrt(float64(dIn))
	return math.Sqrt(3.0) * std
}

// InitA draws A [d_in, r] (MatMul orientation) from U(−bound, bound) with
// KaimingBound(d_in), reproducibly from seed and the layer name. Values are
// drawn in PyTorch's [r, d_in] order.
func InitA(dIn, r int64, seed uint64, linear string) []float32 {
	rng := rand.New(rand.NewPCG(seed, nameHash(linear)))
	bound := KaimingBound(dIn)
	out := make([]float32, dIn*r)
	for k := range r {
		for i := range dIn {
			out[i*r+k] = float32(bound * (2*rng.Float64() - 1))
		}
	}
	return out
}

func nameHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// DropoutSeed gives each layer's Dropout its own reproducible seed.
func DropoutSeed(seed uint64, linear string) int64 {
	return int64((seed ^ nameHash(linear+".lora_dropout")) >> 1)
}
