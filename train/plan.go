package train

import (
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// Plan says what a run trains: the forward model (with an adapter already
// injected, for LoRA), which of its float initializers are trainable, where
// MIGU taps magnitudes, and which tensor each tap masks.
type Plan struct {
	Model     *onnx.Model
	Manifest  *modeldir.Manifest
	Trainable []string
	Points    []migu.Point
	Rules     []migu.Rule
}

// FullPlan trains every parameter of the model (embeddings, norms and biases
// included) and masks, for MIGU, each linear weight's output columns by its
// layer's magnitudes. A head tied to the embedding masks the embedding's
// rows (its output features), as masking the shared parameter through the
// head does in PyTorch.
func FullPlan(m *onnx.Model, man *modeldir.Manifest) (*Plan, error) {
	names, err := trainableNames(m.Graph(), man, GraphOptions{Trainable: TrainAll})
	if err != nil {
		return nil, err
	}
	p := &Plan{Model: m, Manifest: man, Trainable: names, Points: migu.LinearPoints(man)}
	g := m.Graph()
	for _, l := range man.Linears {
		t := g.Initializer(l.Weight)
		if t == nil {
			continue
		}
		axis := 1
		if l.Tied != "" {
			axis = 0
		}
		p.Rules = append(p.Rules, migu.Rule{Param: l.Weight, Shape: t.Dims, Axis: axis, Tap: l.Name})
	}
	return p, nil
}
