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

// Tap is the magnitude output added for one linear layer.
type Tap struct {
	Linear string // migu.json linear name
	Output string // graph output of shape [d_out]
	DOut   int64
}

// TapPrefix begins the name of every magnitude output.
const TapPrefix = "magnitude/"

// AddTaps adds to g, for every linear layer of the manifest, an output
// holding n_j = Σ_tokens |y_j|, the per-output-feature L1 norm of the
// layer's output over the batch: the statistic MIGU's mask is the
// T-quantile of. With skipPadding, padding positions (attention_mask 0;
// decoder_attention_mask for T5's decoder and head) are left out; by
// default they count, as in the authors' code. One ReduceL1 per layer, no
// copy of |y|.
func AddTaps(g *onnx.Graph, opset int64, ranks Ranks, man *modeldir.Manifest, skipPadding bool) ([]Tap, error) {
	taps := make([]Tap, 0, len(man.Linears))
	masks := map[string]string{}
	for _, l := range man.Linears {
		y := l.Output
		_, shape, ok := ranks.Type(y)
		if !ok || shape == nil {
			return nil, fmt.Errorf("migu: the rank of linear %s's output %q is unknown", l.Name, y)
		}
		if skipPadding && len(shape) == 3 {
			mask := "attention_mask"
			if l.Stack == "decoder" || (man.Architecture == "t5" && l.Role == modeldir.RoleHead) {
				mask = "decoder_attention_mask"
			}
			if g.Input(mask) == nil {
				return nil, fmt.Errorf("migu: cannot leave padding out of linear %s: the graph has no input %s", l.Name, mask)
			}
			if masks[mask] == "" {
				f := g.Op("Cast", []string{mask}, TapPrefix+mask+".f", onnx.AttrInt("to", int64(onnx.Float)))
				masks[mask] = g.Op("Unsqueeze", []string{f, g.ConstInt64(TapPrefix+"axis", []int64{1}, -1)}, TapPrefix+mask+".col")
			}
			y = g.Op("Mul", []string{y, masks[mask]}, TapPrefix+l.Name+".masked")
		}
		axes := make([]int64, 0, len(shape)-1)
		for i := range len(shape) - 1 {
			axes = append(axes, int64(i))
		}
		out := TapPrefix + l.Name
		name := g.Reduce(opset, "ReduceL1", y, axes, false, out)
		if name != out {
			g.Rename(name, out)
		}
		taps = append(taps, Tap{Linear: l.Name, Output: out, DOut: l.DOut})
	}
	return taps, nil
}
