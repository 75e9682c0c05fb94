// Package train turns a model folder into training artifacts and, in later
// stages, runs the training loop. graph.go builds train.onnx: the forward
// graph with its trainable tensors as inputs, the loss of the objective,
// the gradient of every trainable tensor (package onnx/grad), and one
// magnitude vector per linear layer for MIGU (package migu).
package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/shapes"
)

// File names of the training artifacts inside an output folder.
const (
	GraphFile    = "train.onnx"
	GraphData    = "train.onnx.data"
	ArtifactFile = "train.json"
)

// IgnoreIndex marks label positions that do not count in the loss, as in
// PyTorch's cross-entropy.
const IgnoreIndex = -100

// Trainable selects which tensors become trainable graph inputs.
type Trainable string

const (
	// TrainLinear trains every linear weight listed in migu.json (tied
	// embeddings included, through the head that shares them).
	TrainLinear Trainable = "linear"
	// TrainAll trains every float initializer that is a model parameter:
	// all checkpoint tensors (embeddings, norms, biases too), but not the
	// constants the exporter added (rotary frequencies, masks, scalars).
	TrainAll Trainable = "all"
)

// GraphOptions configure BuildGraph.
type GraphOptions struct {
	// Objective overrides the manifest's: clm, seq2seq, mlm or cls.
	Objective string
	// Trainable picks the trained tensors; Names, when set, lists them
	// explicitly instead.
	Trainable Trainable
	Names     []string
	// Taps adds MIGU's magnitude outputs (one per linear layer).
	Taps bool
	// TapsSkipPadding leaves padding positions out of the magnitudes; by
	// default they count, as in the authors' code.
	TapsSkipPadding bool
	// TapPoints replaces the default taps (every linear layer's output),
	// e.g. with an adapter's points.
	TapPoints []migu.Point
	// HiddenPad widens feed-forward hidden layers whose width ORT's GEMM
	// handles slowly (hiddenpad.go); the zero value leaves them as they are.
	HiddenPad HiddenPad
	// Recompute is RecomputeNone ("" too) or RecomputeLayers: keep only
	// each transformer block's input for the backward pass and recompute
	// the block there (recompute.go). Gradients stay equal to float32
	// rounding.
	Recompute string
	// Fused rewrites the graph to migu's fused kernels (package
	// onnx/kernels: RMSNorm, LayerNorm, SwiGLU, GELU, the rotary
	// embedding, the last-axis softmax and the cross-entropy's
	// log-softmax pick, forward and backward, the MIGU taps, the
	// gradients of embedding lookups, kernels.FuseScatterAdd, and the
	// residual gradients' Sums, kernels.FuseResidualGrads); the
	// session that runs it must load the kernel library. Results equal the
	// standard operators' to float32 rounding.
	Fused bool
	// FusedTaps, with Fused, also computes the MIGU taps with the fused
	// kernel ai.migu.AbsColSum: one pass over each linear's output instead
	// of Abs and a MatMul over a materialised |y|. The trainer sets it
	// whenever it loads the kernel library: on the small llama (Ice Lake,
	// 2 threads) a step's 57 taps took 23–25 ms of ORT kernel time in the
	// standard form and 8.4 ms fused, each tap run while its value is in
	// cache (benchmarks/perf/README.md, "MIGU cost"). Taps of an
	// activation's inputs (llama's gate and up projections, roberta's and
	// t5's first feed-forward linear) are computed by the fused activation
	// kernel itself (kernels.FuseActivationTaps).
	FusedTaps bool
	// Precision is PrecisionFP32 (or "") or PrecisionBF16: the weight
	// products of migu.json's linears, and the products of their
	// gradients, become ai.migu.MatMulBF16 (package onnx/kernels); the
	// session that runs the graph must load the bf16 library.
	Precision string
	// OneDNN moves the float32 products of the roles it picks to
	// ai.migu.bf16.MatMulF32, oneDNN's float32 matmul (kernels.RewriteF32);
	// the session that runs the graph must load the bf16 library.
	OneDNN kernels.F32Roles
	// AllRows runs the head (the nodes between the last block and the
	// logits) on every token; by default it runs on the labelled tokens
	// only (rows.go), with the same loss and gradients to float32
	// rounding. Tests and benchmarks compare the two.
	AllRows bool
	// BiasAdds keeps the linear layers' bias Adds apart from their
	// oneDNN products; by default the products add the bias themselves
	// (kernels.FuseProductBias), with the same bits. Benchmarks compare
	// the two.
	BiasAdds bool
	// FusedAttention, with Fused, computes attention with the fused
	// kernels (kernels.FuseAttention): the backward pass recomputes each
	// head's probabilities instead of keeping [batch, heads, tokens,
	// tokens] of them, and keys a causal or padding mask hides are
	// skipped. Not under PrecisionBF16, whose attention products are bf16
	// (kernels.RewriteBatch). The trainer sets it where the CPU has
	// AVX-512 (kernels.AttentionFast) unless Config.UnfusedAttention.
	FusedAttention bool
	// ShareBF16 rounds the operands of the bf16 products once instead of
	// in every product that reads them: a trained weight is read from its
	// Param.BF16 input, which the trainer rounds as the optimizer writes
	// the weight, a frozen float32 one from its Artifact.FrozenBF16 input,
	// rounded once (kernels.BF16Twins), and any other float32 value that
	// several bf16 products read is rounded by one ToBF16
	// (kernels.ShareBF16Operands). The same bits, fewer roundings. The
	// trainer sets it where the bf16 products run natively
	// (kernels.BF16Hardware.NativeNow).
	ShareBF16 bool
}

// IO names one graph input or output of the artifact.
type IO struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape string `json:"shape"`
}

// Param is a trainable tensor: a graph input whose initial value is the
// forward model's initializer of the same name.
type Param struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
	Grad  string  `json:"grad"` // the output holding its gradient
	// BF16 is the graph input that holds the tensor rounded to bfloat16
	// for the bf16 products (GraphOptions.ShareBF16); "" where there is
	// none.
	BF16 string `json:"bf16,omitempty"`
}

// Tap is a magnitude output: Σ|v| per feature of one tap point.
type Tap struct {
	Name   string `json:"name"`   // migu.json linear name (or an adapter's point)
	Output string `json:"output"` // graph output, shape [dim]
	Dim    int64  `json:"dim"`
}

// Artifact is train.json: what train.onnx takes and gives.
type Artifact struct {
	Format    int     `json:"format"`
	Objective string  `json:"objective"`
	Inputs    []IO    `json:"inputs"` // data inputs (ids, masks, labels)
	Params    []Param `json:"params"`
	Loss      string  `json:"loss"`
	Taps      []Tap   `json:"taps,omitempty"`
	Nodes     int     `json:"nodes"`
	GradNodes int     `json:"grad_nodes"`
	// PaddedHidden counts the feed-forward blocks whose hidden layer the
	// graph widens (HiddenPad).
	PaddedHidden int `json:"padded_hidden,omitempty"`
	// Recompute is the activation recomputation the graph was built with
	// (none or layers), RecomputedNodes the number of forward nodes the
	// backward pass recomputes.
	Recompute       string `json:"recompute"`
	RecomputedNodes int    `json:"recomputed_nodes,omitempty"`
	// Fused counts the subgraphs computed by migu's fused kernels, by
	// kernel (kernels.Fuse: RMSNorm, LayerNorm, SwiGLU, Gelu, Rotary,
	// Softmax, CrossEntropy; Attention, kernels.FuseAttention, under
	// GraphOptions.FusedAttention; ActivationTaps counts the taps computed by
	// the activation kernels; ScatterAdd the gradients of Gather and
	// ScatterSum the Sums folded into them, kernels.FuseScatterAdd;
	// ResidualGrad the residual gradients' Sums folded into the norms'
	// backward kernels, kernels.FuseResidualGrads; SoftmaxBias the
	// attention biases' Adds folded into the softmaxes,
	// kernels.FuseSoftmaxBias; AddN the Sums of three or more gradients,
	// kernels.FuseSums), FusedTaps whether the taps are
	// (GraphOptions.FusedTaps).
	Fused     map[string]int `json:"fused,omitempty"`
	FusedTaps bool           `json:"fused_taps,omitempty"`
	// Precision is the weight products' (fp32 or bf16); BF16Products
	// counts the forward products in bf16 (each brings its gradient's).
	Precision string `json:"precision"`
	// OneDNNProducts counts the float32 products GraphOptions.OneDNN
	// moved to oneDNN, AttentionProducts the attention products it moved
	// (kernels.F32Roles.Attention; bf16 under bf16 precision).
	OneDNNProducts    int `json:"onednn_products,omitempty"`
	AttentionProducts int `json:"attention_products,omitempty"`
	BF16Products      int `json:"bf16_products,omitempty"`
	// BiasedProducts counts the oneDNN products (float32 or bf16) that add
	// their linear layer's bias themselves (kernels.FuseProductBias).
	BiasedProducts int `json:"biased_products,omitempty"`
	// BF16Shared counts the values the graph rounds to bf16 once for
	// several products (GraphOptions.ShareBF16; weights, with their bf16
	// twins, are not among them).
	BF16Shared int `json:"bf16_shared,omitempty"`
	// FrozenBF16 names, by frozen float32 weight, the graph input of its
	// bf16 twin, which the runner fills with the weight rounded to
	// bfloat16 once (GraphOptions.ShareBF16; kernels.BF16Twins).
	FrozenBF16 map[string]string `json:"frozen_bf16,omitempty"`
}

// BuildGraph writes train.onnx (+ external data) and train.json for the
// model folder dir into out. out is created only once the graph is built,
// so a model folder that fails its checks leaves nothing behind, and
// removed again when writing into a folder it created fails.
func BuildGraph(dir, out string, opt GraphOptions) (*Artifact, error) {
	f, err := modeldir.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := f.Model
	art, err := Build(m, f.Manifest, opt)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(out)
	created := os.IsNotExist(statErr)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	err = m.Save(filepath.Join(out, GraphFile), onnx.SaveOptions{External: onnx.ExternalAll, DataFile: GraphData})
	if err == nil {
		err = writeArtifact(out, art)
	}
	if err != nil && created {
		os.RemoveAll(out)
	}
	if err != nil {
		return nil, err
	}
	return art, nil
}

// writeArtifact writes train.json into dir.
func writeArtifact(dir string, art *Artifact) error {
	data, err := json.MarshalIndent(art, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ArtifactFile), append(data, '\n'))
}

// Build rewrites the forward model m in place into the training graph. A
// manifest that names tensors the graph lacks is bad input, never a crash
// (modeldir.Open checks folders before; Build checks what it uses itself,
// for manifests built in memory).
func Build(m *onnx.Model, man *modeldir.Manifest, opt GraphOptions) (*Artifact, error) {
	objective := opt.Objective
	if objective == "" {
		objective = man.Objective
	}
	if err := CheckRecompute(opt.Recompute, man); err != nil {
		return nil, err
	}
	if err := CheckPrecision(opt.Precision); err != nil {
		return nil, err
	}
	g := m.Graph()
	names, err := trainableNames(g, man, opt)
	if err != nil {
		return nil, err
	}
	art := &Artifact{Format: 1, Objective: objective, Recompute: RecomputeNone, Precision: PrecisionFP32}
	if len(man.Outputs) == 0 || g.Output(man.Outputs[0]) == nil {
		return nil, badinput.Errorf("the graph has no output %q", strings.Join(man.Outputs, ", "))
	}
	logits := man.Outputs[0]

	// Trainable tensors become inputs.
	// Their values are float32 master copies, whatever precision the
	// model folder stores them in (a Cast to float32 after them is then
	// a no-op).
	for _, name := range names {
		t := g.RemoveInitializer(name)
		if t == nil {
			return nil, badinput.Errorf("trainable tensor %q is not an initializer of the graph", name)
		}
		g.AddInput(name, onnx.Float, dims(t.Dims))
		art.Params = append(art.Params, Param{Name: name, Shape: t.Dims})
	}
	dropMasterCasts(g, names)
	if art.PaddedHidden, err = padHidden(g, man, opt.HiddenPad); err != nil {
		return nil, err
	}
	rows := &headRows{on: !opt.AllRows, stop: map[string]bool{}, trainable: names}
	for _, b := range man.Blocks {
		for _, v := range b.Residuals {
			rows.stop[v] = true
		}
	}
	loss, err := addLoss(m, man, objective, logits, rows)
	if err != nil {
		return nil, err
	}
	var points []migu.Point
	if opt.Taps {
		if points = opt.TapPoints; points == nil {
			points = migu.LinearPoints(man)
		}
		// Taps weighted by the padding mask read the head's values on
		// every row, in the batch's layout.
		if rows.rest != "" && !opt.TapsSkipPadding {
			if points, rows.restCopies, err = headTapsOnRows(m, logits, rows, points); err != nil {
				return nil, err
			}
		}
	}
	// The forward outputs are not needed for training: the loss replaces
	// them. The head's nodes on every row stay only where a tap reads them.
	for _, o := range man.Outputs {
		g.RemoveOutput(o)
	}
	g.AddOutput(loss, onnx.Float, onnx.Shape{onnx.D(1)})
	art.Loss = loss
	tapped := make([]string, len(points))
	for i, p := range points {
		tapped[i] = p.Value
	}
	g.Prune(tapped...)
	if opt.Fused {
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		attention := 0
		if opt.FusedAttention && opt.Precision != PrecisionBF16 {
			if attention, err = kernels.FuseAttention(m, info); err != nil {
				return nil, err
			}
		}
		if art.Fused, err = kernels.Fuse(m, info); err != nil {
			return nil, err
		}
		if attention > 0 {
			art.Fused["Attention"] = attention
		}
		art.FusedTaps = opt.Taps && opt.FusedTaps
	}
	var taps []migu.Tap
	if opt.Taps {
		fwd, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		taps, err = migu.AddTapsWith(g, m.Opset(""), fwd, points, migu.TapOptions{SkipPadding: opt.TapsSkipPadding, Fused: art.FusedTaps})
		if err != nil {
			return nil, err
		}
	}
	art.Nodes = len(g.P.Node)

	if opt.Precision == PrecisionBF16 {
		// Before differentiation: MatMulBF16's gradient rule makes the
		// backward products of the weights bf16 too.
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		linears := map[string]bool{}
		for _, l := range man.Linears {
			linears[l.Node] = true
			if c, ok := rows.copies[l.Node]; ok {
				linears[c] = true
			}
			if c, ok := rows.restCopies[l.Node]; ok {
				linears[c] = true
			}
		}
		if art.BF16Products, err = kernels.RewriteBF16(m, info, linears); err != nil {
			return nil, err
		}
		art.Precision = PrecisionBF16
	}
	fwd, err := shapes.Infer(m)
	if err != nil {
		return nil, err
	}
	res, err := grad.Differentiate(m, fwd, loss, names)
	if err != nil {
		return nil, err
	}
	art.GradNodes = res.Nodes
	if opt.Recompute == RecomputeLayers {
		art.Recompute = RecomputeLayers
	}
	if art.RecomputedNodes, err = recompute(g, man, res, art.Recompute == RecomputeLayers); err != nil {
		return nil, err
	}
	if opt.Fused {
		// The Gather rule's scatters (embedding tables) and the Sums adding
		// a tied table's gradients, the Sums adding a residual's gradient
		// to a norm's, the attention biases added before the fused
		// softmaxes, and the Sums of three or more gradients: written by the
		// rules or kept for them, rewritten here.
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		scatters, sums := kernels.FuseScatterAdd(m, info)
		if scatters > 0 {
			art.Fused["ScatterAdd"] = scatters
		}
		if sums > 0 {
			art.Fused["ScatterSum"] = sums
		}
		if n := kernels.FuseResidualGrads(m); n > 0 {
			art.Fused["ResidualGrad"] = n
		}
		if n := kernels.FuseSoftmaxBias(m, info); n > 0 {
			art.Fused["SoftmaxBias"] = n
		}
		if n := kernels.FuseSums(m, info); n > 0 {
			art.Fused["AddN"] = n
		}
	}
	if art.FusedTaps {
		// After differentiation and recomputation: the gradient rules
		// and the recomputed blocks see the plain activations.
		if n := kernels.FuseActivationTaps(m); n > 0 {
			art.Fused["ActivationTaps"] = n
		}
	}
	if opt.OneDNN != (kernels.F32Roles{}) {
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		art.OneDNNProducts = kernels.RewriteF32(m, info, opt.OneDNN)
		if opt.OneDNN.Attention {
			art.AttentionProducts = kernels.RewriteBatch(m, info, art.Precision == PrecisionBF16)
		}
	}
	if (opt.OneDNN.Forward || art.Precision == PrecisionBF16) && !opt.BiasAdds {
		// The linear layers' biases, added by their forward products.
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		art.BiasedProducts = kernels.FuseProductBias(m, info)
	}
	if opt.ShareBF16 && art.Precision == PrecisionBF16 {
		info, err := shapes.Infer(m)
		if err != nil {
			return nil, err
		}
		weights := slices.Clone(names)
		for _, t := range g.P.Initializer {
			if onnx.IsExternal(t) && onnx.DType(t.GetDataType()) == onnx.Float {
				weights = append(weights, t.GetName())
			}
		}
		twins := kernels.BF16Twins(m, info, weights)
		for i := range art.Params {
			p := &art.Params[i]
			p.BF16 = twins[p.Name]
			delete(twins, p.Name)
		}
		if len(twins) > 0 {
			art.FrozenBF16 = twins
		}
		if info, err = shapes.Infer(m); err != nil {
			return nil, err
		}
		art.BF16Shared = kernels.ShareBF16Operands(m, info)
	}
	consumers := g.Consumers()
	for i := range art.Params {
		p := &art.Params[i]
		out := "grad/" + p.Name
		v := res.Grads[p.Name]
		// A gradient value used nowhere else takes the output name; one that
		// is also an operand elsewhere (or an input) is copied out.
		if len(consumers[v]) == 0 && g.Input(v) == nil && g.Initializer(v) == nil && g.Output(v) == nil {
			g.Rename(v, out)
		} else {
			g.Node("Identity", []string{v}, []string{out}, out)
		}
		g.AddOutput(out, onnx.Float, dims(p.Shape))
		p.Grad = out
	}
	tapOutputs := make([]string, len(taps))
	for i, t := range taps {
		g.AddOutput(t.Output, onnx.Float, onnx.Shape{onnx.D(t.Dim)})
		art.Taps = append(art.Taps, Tap{Name: t.Name, Output: t.Output, Dim: t.Dim})
		tapOutputs[i] = t.Output
	}
	if art.Recompute == RecomputeLayers {
		grads := make([]string, len(art.Params))
		for i, p := range art.Params {
			grads[i] = p.Grad
		}
		scheduleLeaves(g, tapOutputs, grads)
	} else {
		// Only the taps move: each then runs as soon as its value exists,
		// not after the backward pass. (Moving the gradient leaves as well
		// raised the peak memory without recomputation.)
		scheduleLeaves(g, tapOutputs, nil)
	}
	// Inputs other than the weights and their bf16 twins are data.
	weightInputs := map[string]bool{}
	for _, p := range art.Params {
		weightInputs[p.Name] = true
		if p.BF16 != "" {
			weightInputs[p.BF16] = true
		}
	}
	for _, twin := range art.FrozenBF16 {
		weightInputs[twin] = true
	}
	for _, vi := range g.P.Input {
		if weightInputs[vi.GetName()] {
			continue
		}
		dt, shape, _ := onnx.TensorType(vi)
		art.Inputs = append(art.Inputs, IO{Name: vi.GetName(), DType: dt.String(), Shape: shape.String()})
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return art, nil
}

// dropMasterCasts removes the Cast to float32 after a trainable tensor
// that the model folder stores in half precision: its float32 master copy
// needs none, and the copy would cost a pass over the weight every step.
func dropMasterCasts(g *onnx.Graph, names []string) {
	trainable := map[string]bool{}
	for _, n := range names {
		trainable[n] = true
	}
	renames := map[string]string{}
	g.RemoveNodes(func(n *onnxpb.NodeProto) bool {
		if n.GetOpType() != "Cast" || len(n.Input) != 1 || !trainable[n.Input[0]] || onnx.AttrIntOr(n, "to", 0) != int64(onnx.Float) {
			return false
		}
		renames[n.Output[0]] = n.Input[0]
		return true
	})
	for from, to := range renames {
		g.Rename(from, to)
	}
}

// trainableNames resolves GraphOptions to initializer names, sorted.
func trainableNames(g *onnx.Graph, man *modeldir.Manifest, opt GraphOptions) ([]string, error) {
	set := map[string]bool{}
	switch {
	case len(opt.Names) > 0:
		for _, n := range opt.Names {
			t := g.Initializer(n)
			if t == nil {
				return nil, badinput.Errorf("%v %q is not an initializer of the model", badinput.Setting("trainable"), n)
			}
			if !onnx.DType(t.GetDataType()).IsFloat() {
				return nil, badinput.Errorf("%v %q is %v, not a float tensor", badinput.Setting("trainable"), n, onnx.DType(t.GetDataType()))
			}
			set[n] = true
		}
	case opt.Trainable == TrainAll:
		for _, t := range g.P.Initializer {
			if onnx.DType(t.GetDataType()).IsFloat() && isParameter(t.GetName()) {
				set[t.GetName()] = true
			}
		}
	case opt.Trainable == TrainLinear || opt.Trainable == "":
		for _, l := range man.Linears {
			if g.Initializer(l.Weight) == nil {
				return nil, badinput.Errorf("migu.json: linear %s: weight %q is not an initializer of the graph", l.Name, l.Weight)
			}
			set[l.Weight] = true
		}
	default:
		return nil, badinput.Errorf("unknown trainable selection %q (linear, all, or a list of names)", opt.Trainable)
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, badinput.Errorf("nothing to train: the selection matches no tensor")
	}
	return names, nil
}

// isParameter tells checkpoint tensors (named after modules, ending in
// .weight or .bias, or bare names from other exporters) from the constants
// exporters add (const_*, ints_*, rope.inv_freq, bucket tables).
func isParameter(name string) bool {
	return strings.HasSuffix(name, ".weight") || strings.HasSuffix(name, ".bias")
}

func dims(d []int64) onnx.Shape {
	s := make(onnx.Shape, len(d))
	for i, v := range d {
		s[i] = onnx.D(v)
	}
	return s
}

// headRows says how addLoss computes the head: on the labelled rows only
// (rows.go) when on, with the walk stopping at the block boundaries stop;
// trainable names the parameters. addLoss fills copies (original node
// name → its copy on the rows) and rest, the index of the unlabelled
// rows; restCopies are the copies on those (headTapsOnRows).
type headRows struct {
	on         bool
	stop       map[string]bool
	trainable  []string
	copies     map[string]string
	rest       string
	restCopies map[string]string
}

// addLoss appends the mean cross-entropy over non-ignored label positions
// and returns its name (shape [1]). Labels are an int64 graph input:
// [batch, seq] aligned with the tokens for clm (shifted here: position t
// predicts label t+1) and mlm, [batch, tgt] for seq2seq, [batch] for cls.
// With rows.on the head runs on the labelled positions only.
func addLoss(m *onnx.Model, man *modeldir.Manifest, objective, logits string, rows *headRows) (string, error) {
	g := m.Graph()
	var labelShape onnx.Shape
	switch objective {
	case "clm", "mlm":
		labelShape = onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq")}
	case "seq2seq":
		labelShape = onnx.Shape{onnx.Sym("batch"), onnx.Sym("tgt_seq")}
	case "cls":
		labelShape = onnx.Shape{onnx.Sym("batch")}
	default:
		return "", badinput.Errorf("objective %q is not one of clm, seq2seq, mlm, cls", objective)
	}
	if man.Objective == "cls" && objective != "cls" || man.Objective != "cls" && objective == "cls" {
		return "", badinput.Errorf("objective %s does not fit a model whose head is for %s", objective, man.Objective)
	}
	if man.Objective == "seq2seq" && objective != "seq2seq" {
		return "", badinput.Errorf("a seq2seq model trains with objective seq2seq, not %s", objective)
	}
	g.AddInput("labels", onnx.Int64, labelShape)
	labels := "labels"
	i64 := func(hint string, v ...int64) string { return g.ConstInt64(hint, []int64{int64(len(v))}, v...) }
	if objective == "clm" {
		// Shift left: the label of position t is token t+1; the last
		// position has none.
		rest := g.Op("Slice", []string{labels, i64("loss/one", 1), i64("loss/end", 1<<62), i64("loss/axis1", 1)}, "loss/next")
		batch := g.Op("Slice", []string{g.Op("Shape", []string{labels}, "loss/lshape"), i64("loss/zero", 0), i64("loss/one_", 1)}, "loss/batch")
		pad := g.Op("ConstantOfShape", []string{g.Op("Concat", []string{batch, i64("loss/one__", 1)}, "loss/padshape", onnx.AttrInt("axis", 0))}, "loss/pad",
			onnx.AttrTensor("value", onnx.Int64Tensor("v", []int64{1}, []int64{IgnoreIndex})))
		labels = g.Op("Concat", []string{rest, pad}, "loss/shifted", onnx.AttrInt("axis", 1))
	}
	classes := man.VocabSize
	if objective == "cls" {
		classes = int64(man.NumLabels)
	}
	target := g.Op("Reshape", []string{labels, i64("loss/flat_labels", -1)}, "loss/target")
	ignore := g.ConstInt64("loss/ignore", nil, IgnoreIndex)
	valid := g.Op("Not", []string{g.Op("Equal", []string{target, ignore}, "loss/ignored")}, "loss/valid")
	var flat string
	if rows.on && objective != "cls" {
		// The head on labelled rows (rows.go); the loss below keeps its
		// form, its weights now all one.
		idx := g.Op("Reshape", []string{g.Op("NonZero", []string{valid}, "loss/labelled_nz"), i64("loss/flat_idx", -1)}, labelledRows)
		if idx != labelledRows {
			return "", fmt.Errorf("the graph already has a value named %s", labelledRows)
		}
		var err error
		if flat, rows.copies, err = gatherRows(m, logits, idx, rows.stop, rows.trainable); err != nil {
			return "", err
		}
		rows.rest = g.Op("Reshape", []string{g.Op("NonZero", []string{g.Op("Not", []string{valid}, "loss/unlabelled_mask")}, "loss/unlabelled_nz"), i64("loss/flat_rest", -1)}, unlabelledRows)
		if rows.rest != unlabelledRows {
			return "", fmt.Errorf("the graph already has a value named %s", unlabelledRows)
		}
		target = g.Op("Gather", []string{target, idx}, "loss/labelled_target", onnx.AttrInt("axis", 0))
		valid = g.Op("Not", []string{g.Op("Equal", []string{target, ignore}, "loss/labelled_ignored")}, "loss/labelled_valid")
	} else {
		flat = g.Op("Reshape", []string{logits, i64("loss/flat_shape", -1, classes)}, "loss/logits")
	}
	safe := g.Op("Where", []string{valid, target, g.ConstInt64("loss/zero_id", nil, 0)}, "loss/safe_target")
	logp := g.Op("LogSoftmax", []string{flat}, "loss/logp", onnx.AttrInt("axis", -1))
	picked := g.Op("GatherElements", []string{logp, g.Op("Unsqueeze", []string{safe, i64("loss/last", -1)}, "loss/index")}, "loss/picked", onnx.AttrInt("axis", 1))
	w := g.Op("Cast", []string{valid}, "loss/weight", onnx.AttrInt("to", int64(onnx.Float)))
	nll := g.Op("Neg", []string{g.Op("ReduceSum", []string{g.Op("Mul", []string{g.Op("Reshape", []string{picked, i64("loss/flat1", -1)}, "loss/picked_flat"), w}, "loss/masked")}, "loss/sum", onnx.AttrInt("keepdims", 1))}, "loss/nll")
	count := g.Op("Max", []string{g.Op("ReduceSum", []string{w}, "loss/count", onnx.AttrInt("keepdims", 1)), g.Const("loss/min_count", []int64{1}, 1)}, "loss/denominator")
	loss := g.Op("Div", []string{nll, count}, "loss")
	if loss != "loss" {
		return "", fmt.Errorf("the graph already has a value named loss")
	}
	return loss, nil
}
