package eval

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Scoring reads, of the logits, one log-probability and one argmax per
// continuation token. The graphs eval runs therefore compute both
// themselves and return [batch, n, 1] values rather than [batch, n,
// vocab] logits (SmolLM2's vocabulary is 49152: a batch of 8 × 200
// positions is 315 MB of logits):
//
//   - the forward graph and the key/value-cache decoder read the hidden
//     states of the positions asked for (scoreIndex) before the output
//     head, so the head's MatMul, the costliest of a short model, runs on
//     those positions only, and their "logits" output is theirs:
//     [score_rows, score_len, vocab];
//   - both the forward graph and the key/value-cache decoder end with
//     LogSoftmax → GatherElements at scoreTarget (which kernels.Fuse turns
//     into one ai.migu.PickLogSoftmax when the kernel library is loaded)
//     and ArgMax, the lm-evaluation-harness greedy check (the first
//     maximum, as torch.argmax).
//
// A run that wants logits (generation without the cache, masked-LM
// pseudo-log-likelihood) binds "logits" alone and feeds any valid target.
const (
	// scoreIndex is the int64 input [score_rows, score_len]: the
	// positions to read, as row·seq + position into the flattened
	// [batch·seq] positions of the batch (the cached decoder's seq is its
	// logits_len: the last positions of each row). The forward graph
	// reads [batch, score_len] of them; the cached decoder's continuation
	// run [1, positions].
	scoreIndex = "score_index"
	// scoreTarget is the int64 input [score_rows, score_len, 1]: the
	// token whose log-probability each position scores.
	scoreTarget = "score_target"
	// scoreLogProb is the float output [score_rows, score_len, 1]:
	// log-softmax(logits)[target], in float32.
	scoreLogProb = "score_logprob"
	// scoreArgmax is the int64 output [score_rows, score_len, 1]: the first index of
	// each position's largest logit.
	scoreArgmax = "score_argmax"
)

// addScoring rewrites a graph with a "logits" output [batch, n, vocab]
// for scoring: with gather (the forward graph), the logits are computed
// for the scoreIndex positions only (see headInput); always, the
// scoreTarget input and the scoreLogProb and scoreArgmax outputs are
// added.
func addScoring(m *onnx.Model, gather bool) error {
	g := m.Graph()
	out := g.Output("logits")
	if out == nil {
		return fmt.Errorf("the graph has no output \"logits\"")
	}
	dims := out.GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 3 {
		return fmt.Errorf("the graph's logits have %d axes, not [batch, positions, vocab]", len(dims))
	}
	batch, n, vocab := dimOf(dims[0]), dimOf(dims[1]), dimOf(dims[2])
	if gather {
		// The positions asked for need not be the batch's rows: the cached
		// decoder's continuation run reads the real positions of all its
		// rows as one row ([1, positions]), none of the padding.
		batch, n = onnx.Sym("score_rows"), onnx.Sym("score_len")
		g.AddInput(scoreIndex, onnx.Int64, onnx.Shape{batch, n})
		if mm, in := headInput(g); mm != nil {
			mm.Input[in] = g.Op("Gather", []string{g.Op("Flatten", []string{mm.Input[in]}, "score.hidden", onnx.AttrInt("axis", 2)), scoreIndex}, "score.positions", onnx.AttrInt("axis", 0))
		} else {
			// No recognised head: the logits of every position are
			// computed and those asked for read from them.
			all := g.Unique("logits.all")
			g.Rename("logits", all)
			g.RemoveOutput(all)
			g.Node("Gather", []string{g.Op("Flatten", []string{all}, "score.logits", onnx.AttrInt("axis", 2)), scoreIndex}, []string{"logits"}, "score.positions", onnx.AttrInt("axis", 0))
		}
		g.RemoveOutput("logits")
		g.AddOutput("logits", onnx.Float, onnx.Shape{batch, n, vocab})
	}
	g.AddInput(scoreTarget, onnx.Int64, onnx.Shape{batch, n, onnx.D(1)})
	logp := g.Op("LogSoftmax", []string{"logits"}, "score.logp", onnx.AttrInt("axis", -1))
	g.Node("GatherElements", []string{logp, scoreTarget}, []string{scoreLogProb}, "score.pick", onnx.AttrInt("axis", -1))
	g.Node("ArgMax", []string{"logits"}, []string{scoreArgmax}, "score.argmax", onnx.AttrInt("axis", -1), onnx.AttrInt("keepdims", 1))
	g.AddOutput(scoreLogProb, onnx.Float, onnx.Shape{batch, n, onnx.D(1)})
	g.AddOutput(scoreArgmax, onnx.Int64, onnx.Shape{batch, n, onnx.D(1)})
	return g.TopoSort()
}

// dimOf reads a graph dimension back as an onnx.Dim.
func dimOf(d *onnxpb.TensorShapeProto_Dimension) onnx.Dim {
	if p := d.GetDimParam(); p != "" {
		return onnx.Sym(p)
	}
	if v, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
		return onnx.D(v.DimValue)
	}
	return onnx.Dim{}
}

// headInput finds the output head of a graph: the MatMul of the hidden
// states [batch, seq, hidden] by a weight [hidden, vocab] (an initializer
// or the transpose of one, as a head tied to the embedding is) from which
// "logits" follows through position-wise steps only (Identity, a bias
// Add or a scale Mul by an initializer of at most one axis). It returns
// the node and which of its inputs is the hidden states, or nil when the
// logits are computed otherwise; gathering positions there leaves every
// other node as it was.
func headInput(g *onnx.Graph) (*onnxpb.NodeProto, int) {
	producers := g.Producers()
	small := func(name string) bool {
		t := g.Initializer(name)
		return t != nil && len(t.Dims) <= 1
	}
	weight := func(name string) bool {
		if t := g.Initializer(name); t != nil {
			return len(t.Dims) == 2
		}
		p := producers[name]
		if p == nil || p.GetOpType() != "Transpose" || p.GetDomain() != "" || len(p.Input) != 1 {
			return false
		}
		t := g.Initializer(p.Input[0])
		return t != nil && len(t.Dims) == 2
	}
	v := "logits"
	for range 8 {
		n := producers[v]
		if n == nil || n.GetDomain() != "" {
			return nil, 0
		}
		switch {
		case n.GetOpType() == "Identity":
			v = n.Input[0]
		case (n.GetOpType() == "Add" || n.GetOpType() == "Mul") && len(n.Input) == 2 && small(n.Input[1]):
			v = n.Input[0]
		case (n.GetOpType() == "Add" || n.GetOpType() == "Mul") && len(n.Input) == 2 && small(n.Input[0]):
			v = n.Input[1]
		case n.GetOpType() == "MatMul" && len(n.Input) == 2 && weight(n.Input[1]):
			return n, 0
		default:
			return nil, 0
		}
	}
	return nil, 0
}
