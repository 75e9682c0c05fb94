package train

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// fuzzGraph is a tiny causal LM head: logits = x·w + b over a vocabulary
// of 3, the graph a fuzzed manifest describes.
func fuzzGraph() *onnx.Model {
	m := onnx.New("g", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq"), onnx.D(2)})
	g.AddInput("attention_mask", onnx.Int64, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq")})
	g.AddInitializer(onnx.Float32Tensor("w.weight", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}))
	g.AddInitializer(onnx.Float32Tensor("b.bias", []int64{3}, []float32{1, 2, 3}))
	xw := g.Op("MatMul", []string{"x", "w.weight"}, "xw")
	y := g.Op("Add", []string{xw, "b.bias"}, "logits")
	g.AddOutput(y, onnx.Float, nil)
	return m
}

// FuzzBuildFromManifest: whatever migu.json says, a manifest that passes
// the model-folder checks (Validate and modeldir.CheckGraph) gives a
// training graph or an error from Build, never a panic; one that the
// checks refuse never reaches Build in any command.
func FuzzBuildFromManifest(f *testing.F) {
	good := `{"format": 1, "architecture": "test", "objective": "clm", "inputs": ["x", "attention_mask"], "outputs": ["logits"],
		"vocab_size": 3, "hidden_size": 2, "num_layers": 0,
		"linears": [{"name": "head", "role": "head", "block": -1, "weight": "w.weight", "bias": "b.bias", "node": "xw/MatMul", "input": "x", "output": "logits", "d_in": 2, "d_out": 3}]}`
	f.Add([]byte(good), false)
	f.Add([]byte(good), true)
	f.Add([]byte(`{"format": 1, "architecture": "t", "objective": "clm", "inputs": ["x"], "outputs": ["logits"], "vocab_size": 3,
		"linears": [{"name": "h", "role": "head", "weight": "nope", "node": "xw/MatMul", "output": "logits", "d_in": 2, "d_out": 3}]}`), true)
	f.Add([]byte(`{"format": 1, "architecture": "t", "objective": "cls", "inputs": ["x"], "outputs": ["logits"], "num_labels": 3,
		"linears": [{"name": "h", "role": "head", "weight": "b.bias", "node": "xw/MatMul", "output": "xw", "d_in": 1, "d_out": 3}]}`), false)
	f.Fuzz(func(t *testing.T, raw []byte, taps bool) {
		var man modeldir.Manifest
		if json.Unmarshal(raw, &man) != nil || man.Validate() != nil {
			return
		}
		m := fuzzGraph()
		if modeldir.CheckGraph(&man, m.Graph()) != nil {
			return
		}
		Build(m, &man, GraphOptions{Taps: taps})
	})
}

// Build itself refuses a manifest built in memory that names a weight
// the graph lacks, with an error instead of the nil dereference that
// made `migu prepare` panic; the fuzzer's good seed builds.
func TestBuildRefusesMissingWeight(t *testing.T) {
	man := func(weight string) *modeldir.Manifest {
		return &modeldir.Manifest{Format: 1, Architecture: "test", Objective: "clm", Inputs: []string{"x", "attention_mask"}, Outputs: []string{"logits"}, VocabSize: 3,
			Linears: []modeldir.Linear{{Name: "head", Role: modeldir.RoleHead, Block: -1, Weight: weight, Bias: "b.bias", Node: "xw/MatMul", Input: "x", Output: "logits", DIn: 2, DOut: 3}}}
	}
	if _, err := Build(fuzzGraph(), man("w.weight"), GraphOptions{Taps: true}); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for _, opt := range []GraphOptions{{}, {Taps: true}, {Trainable: TrainLinear, Taps: true}} {
		_, err := Build(fuzzGraph(), man("w.nope"), opt)
		if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), `"w.nope"`) {
			t.Fatalf("options %+v: error %v, want bad input naming w.nope", opt, err)
		}
	}
}
