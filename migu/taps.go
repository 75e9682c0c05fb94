package migu

import (
	"fmt"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// Ranks tells AddTaps the rank of forward values (onnx.InferShapes gives it).
type Ranks interface {
	Type(value string) (onnx.DType, onnx.Shape, bool)
}

// Point is a value whose per-feature magnitudes MIGU needs: a linear
// layer's output y, or a LoRA layer's x·A.
type Point struct {
	Name  string // the tap's name: a migu.json linear name, or e.g. "<linear>.lora_A"
	Value string // the graph value, [..., Dim]
	Dim   int64
	// Mask is the padding mask input for this value's positions
	// (attention_mask or decoder_attention_mask), used with skipPadding.
	Mask string
}

// Tap is the magnitude output added for one point.
type Tap struct {
	Name   string // the point's name
	Output string // graph output of shape [Dim]
	Dim    int64
}

// TapPrefix begins the name of every magnitude output.
const TapPrefix = "magnitude/"

// LinearPoints lists the output of every linear layer of the manifest,
// with the padding mask that covers its positions (T5's decoder and head
// use decoder_attention_mask).
func LinearPoints(man *modeldir.Manifest) []Point {
	points := make([]Point, 0, len(man.Linears))
	for _, l := range man.Linears {
		mask := "attention_mask"
		if l.Stack == "decoder" || (man.Architecture == "t5" && l.Role == modeldir.RoleHead) {
			mask = "decoder_attention_mask"
		}
		points = append(points, Point{Name: l.Name, Value: l.Output, Dim: l.DOut, Mask: mask})
	}
	return points
}

// AddTaps adds to g, for every point, an output holding
// n_j = Σ_tokens |v_j|: the per-feature L1 norm of the value over the
// batch, the statistic MIGU's mask is the T-quantile of. With skipPadding,
// padding positions are left out; by default they count, as in the
// authors' code. One ReduceL1 per point, no copy of |v|.
func AddTaps(g *onnx.Graph, opset int64, ranks Ranks, points []Point, skipPadding bool) ([]Tap, error) {
	taps := make([]Tap, 0, len(points))
	masks := map[string]string{}
	for _, p := range points {
		v := p.Value
		_, shape, ok := ranks.Type(v)
		if !ok || shape == nil {
			return nil, fmt.Errorf("migu: the rank of %s's value %q is unknown", p.Name, v)
		}
		if skipPadding && len(shape) == 3 {
			if g.Input(p.Mask) == nil {
				return nil, fmt.Errorf("migu: cannot leave padding out of %s: the graph has no input %q", p.Name, p.Mask)
			}
			if masks[p.Mask] == "" {
				f := g.Op("Cast", []string{p.Mask}, TapPrefix+p.Mask+".f", onnx.AttrInt("to", int64(onnx.Float)))
				masks[p.Mask] = g.Op("Unsqueeze", []string{f, g.ConstInt64(TapPrefix+"axis", []int64{1}, -1)}, TapPrefix+p.Mask+".col")
			}
			v = g.Op("Mul", []string{v, masks[p.Mask]}, TapPrefix+p.Name+".masked")
		}
		axes := make([]int64, 0, len(shape)-1)
		for i := range len(shape) - 1 {
			axes = append(axes, int64(i))
		}
		out := TapPrefix + p.Name
		name := g.Reduce(opset, "ReduceL1", v, axes, false, out)
		if name != out {
			g.Rename(name, out)
		}
		taps = append(taps, Tap{Name: p.Name, Output: out, Dim: p.Dim})
	}
	return taps, nil
}
