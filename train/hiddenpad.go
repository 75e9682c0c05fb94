package train

import (
	"fmt"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// HiddenPad widens feed-forward hidden layers in the training graph.
// ORT's CPU GEMM (MLAS) slows down by 7–20 % when a matrix row is a
// multiple of 4 KB, which is what feed-forward widths such as 1024, 2048,
// 3072 or 14336 floats give; a hidden layer Extra columns wider avoids it.
// The up and gate weights (and biases) get Extra zero columns and the
// down weight Extra zero rows, each through a Pad node, so the parameters,
// their gradients (Pad's gradient slices the padding off) and the model's
// outputs are unchanged. The padded weights are copies that live through
// the step, so memory grows by up to MaxBytes. It is off unless asked for
// (the zero value): measured on small presets in November, t5 (1024) full
// steps 1–11 % faster for 76 MB and roberta (2048) 0–6 %, but on a quiet
// Ice Lake with the fused kernels (7 Dec) 3 % and 6.5 % slower, the Pad
// and Slice nodes costing more than the products gain; see
// benchmarks/perf/README.md.
type HiddenPad struct {
	// Multiple is the width, in floats, whose multiples are widened.
	Multiple int64
	// Extra is the number of columns added; 0 or negative turns padding off.
	Extra int64
	// MaxBytes caps the padded weight copies; blocks beyond it stay as
	// they are (a large model would pay gigabytes for a few per cent).
	MaxBytes int64
}

// PadFourKB widens hidden layers whose rows are a multiple of 4 KB by 16
// columns (64 bytes), for at most 256 MiB of copies.
var PadFourKB = HiddenPad{Multiple: 1024, Extra: 16, MaxBytes: 256 << 20}

// hiddenOps are the ops a widened hidden layer may pass through between
// the up projections and the down projection: elementwise ones whose
// other operands are scalars. The padding columns may hold any finite
// value (GELU's erf term is 1 at 0), since they meet the down weight's
// zero rows; these ops keep them finite.
var hiddenOps = map[string]bool{
	"Mul": true, "Add": true, "Sub": true, "Div": true, "Neg": true, "Identity": true,
	"Tanh": true, "Erf": true, "Sigmoid": true, "Relu": true, "Abs": true,
}

// padHidden applies hp to every feed-forward block of g that it can prove
// safe: the down projection's input must come from the block's up (and
// gate) projections through hiddenOps alone, and nothing outside that
// chain may read it. Blocks that do not qualify (an adapter on the hidden
// layer, an unknown op) are left as they are. It returns the number of
// blocks widened.
func padHidden(g *onnx.Graph, man *modeldir.Manifest, hp HiddenPad) (int, error) {
	if hp.Extra <= 0 || hp.Multiple <= 0 {
		return 0, nil
	}
	widened := map[string]bool{}
	blocks, copies := 0, int64(0)
	producers, consumers := g.Producers(), g.Consumers()
	byNode := map[string]*modeldir.Linear{}
	for i := range man.Linears {
		byNode[man.Linears[i].Node] = &man.Linears[i]
	}
	for i := range man.Linears {
		down := &man.Linears[i]
		if down.Role != modeldir.RoleFFNOut || down.DIn%hp.Multiple != 0 {
			continue
		}
		chain, ups, ok := hiddenChain(g, producers, byNode, down)
		if !ok || !closed(chain, consumers, down.Node) {
			continue
		}
		size := (down.DIn + hp.Extra) * down.DOut
		for _, up := range ups {
			size += up.DIn * (up.DOut + hp.Extra)
		}
		if hp.MaxBytes > 0 && copies+4*size > hp.MaxBytes {
			continue
		}
		copies += 4 * size
		for _, up := range ups {
			if err := padOperand(g, up.Node, up.Weight, []int64{0, 0, 0, hp.Extra}); err != nil {
				return 0, err
			}
			if up.Bias != "" {
				if err := padBias(g, chain, up.Bias, hp.Extra); err != nil {
					return 0, err
				}
			}
		}
		if err := padOperand(g, down.Node, down.Weight, []int64{0, 0, hp.Extra, 0}); err != nil {
			return 0, err
		}
		for v := range chain {
			widened[v] = true
		}
		blocks++
	}
	if blocks == 0 {
		return 0, nil
	}
	// Recorded shapes of the widened values are now wrong; inference
	// recomputes them.
	kept := g.P.ValueInfo[:0]
	for _, vi := range g.P.ValueInfo {
		if !widened[vi.GetName()] {
			kept = append(kept, vi)
		}
	}
	g.P.ValueInfo = kept
	return blocks, g.TopoSort()
}

// hiddenChain walks back from the down projection's input and returns the
// values between it and the up projections (the MatMul outputs included),
// with those projections; ok is false when anything else feeds the chain.
func hiddenChain(g *onnx.Graph, producers map[string]*onnxpb.NodeProto, byNode map[string]*modeldir.Linear, down *modeldir.Linear) (map[string]bool, []*modeldir.Linear, bool) {
	chain := map[string]bool{}
	var ups []*modeldir.Linear
	stack := []string{down.Input}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if chain[v] {
			continue
		}
		chain[v] = true
		n := producers[v]
		if n == nil || g.Output(v) != nil {
			return nil, nil, false
		}
		if up := byNode[n.GetName()]; up != nil {
			if !isUpOf(up, down) {
				return nil, nil, false
			}
			ups = append(ups, up)
			continue
		}
		if !hiddenOps[n.GetOpType()] || len(n.Output) != 1 {
			return nil, nil, false
		}
		for j, in := range n.Input {
			switch {
			case n.GetOpType() == "Div" && j == 1:
				// Only a scalar divisor keeps the padding finite.
				if !isScalar(g, producers, in) {
					return nil, nil, false
				}
			case n.GetOpType() == "Div":
				stack = append(stack, in)
			case isScalar(g, producers, in) || isBiasOf(in, byNode, down):
				// A scalar, or the bias of an up projection (padded too).
			default:
				stack = append(stack, in)
			}
		}
	}
	return chain, ups, len(ups) > 0
}

// isUpOf tells whether l is an up (or gate) projection into down's input.
func isUpOf(l, down *modeldir.Linear) bool {
	return (l.Role == modeldir.RoleFFNIn || l.Role == modeldir.RoleFFNGate) && l.DOut == down.DIn && l.Block == down.Block && l.Stack == down.Stack
}

// isBiasOf tells whether v is the bias of one of down's up projections.
func isBiasOf(v string, byNode map[string]*modeldir.Linear, down *modeldir.Linear) bool {
	for _, l := range byNode {
		if l.Bias == v && isUpOf(l, down) {
			return true
		}
	}
	return false
}

// isScalar tells whether v holds at most one element: a constant, an
// initializer or a graph input.
func isScalar(g *onnx.Graph, producers map[string]*onnxpb.NodeProto, v string) bool {
	if t := g.Initializer(v); t != nil {
		return elements(t.Dims) <= 1
	}
	if n := producers[v]; n != nil && n.GetOpType() == "Constant" {
		if a := onnx.GetAttr(n, "value"); a != nil && a.T != nil {
			return elements(a.T.Dims) <= 1
		}
		return false
	}
	if in := g.Input(v); in != nil {
		_, shape, ok := onnx.TensorType(in)
		if !ok {
			return false
		}
		for _, d := range shape {
			if !d.Known || d.Param != "" || d.Value != 1 {
				return false
			}
		}
		return true
	}
	return false
}

func elements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

// closed tells whether every consumer of the chain's values is in the
// chain itself or is the down projection's MatMul.
func closed(chain map[string]bool, consumers map[string][]*onnxpb.NodeProto, downNode string) bool {
	for v := range chain {
		for _, c := range consumers[v] {
			if c.GetName() == downNode {
				continue
			}
			for _, o := range c.Output {
				if !chain[o] {
					return false
				}
			}
		}
	}
	return true
}

// padOperand replaces the weight input of the named MatMul node by a
// zero-padded copy.
func padOperand(g *onnx.Graph, node, weight string, pads []int64) error {
	for _, n := range g.P.Node {
		if n.GetName() != node {
			continue
		}
		if len(n.Input) != 2 || !usesWeight(g, n.Input[1], weight) {
			return fmt.Errorf("hidden padding: %s does not multiply by %s", node, weight)
		}
		operand := n.Input[1]
		n.Input[1] = g.Op("Pad", []string{operand, g.ConstInt64(weight+".pad", []int64{int64(len(pads))}, pads...)}, weight+".padded")
		return nil
	}
	return fmt.Errorf("hidden padding: no node %s", node)
}

// usesWeight reports whether a MatMul operand is the weight initializer or,
// for a weight stored in half precision, its cast to float32.
func usesWeight(g *onnx.Graph, operand, weight string) bool {
	if operand == weight {
		return true
	}
	p := g.Producers()[operand]
	return p != nil && p.GetOpType() == "Cast" && len(p.Input) == 1 && p.Input[0] == weight
}

// padBias replaces the bias operand of the chain's Add by a zero-padded
// copy.
func padBias(g *onnx.Graph, chain map[string]bool, bias string, extra int64) error {
	padded := ""
	for _, n := range g.P.Node {
		if len(n.Output) != 1 || !chain[n.Output[0]] {
			continue
		}
		for j, in := range n.Input {
			if in != bias {
				continue
			}
			if padded == "" {
				padded = g.Op("Pad", []string{bias, g.ConstInt64(bias+".pad", []int64{2}, 0, extra)}, bias+".padded")
			}
			n.Input[j] = padded
		}
	}
	if padded == "" {
		return fmt.Errorf("hidden padding: the bias %s is not added in the hidden layer", bias)
	}
	return nil
}
