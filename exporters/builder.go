package exporters

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Weights is where a Builder reads checkpoint tensors: a safetensors
// checkpoint, a GGUF file, or a model folder's own graph.
type Weights interface {
	Float32(name string) ([]float32, error)
}

// typedWeights are Weights that know the floating-point type each tensor is
// stored in (float32 for the quantized types of GGUF), so that --dtype keep
// can keep it.
type typedWeights interface {
	StoredType(name string) onnx.DType
}

// releasingWeights are Weights read through a memory mapping whose pages a
// streaming export gives back after each tensor.
type releasingWeights interface {
	Release(name string)
}

// referencingWeights are Weights that can hand a tensor over as a reference
// to bytes already in a file (a model folder's external data) rather than
// as values, so that a graph built from them holds no weights: Reference
// returns the tensor, in MatMul orientation [in, out] when transpose is set
// and shaped shape otherwise, as external data relative to the weights'
// folder, or nil when the bytes are not stored in that form (then the
// builder reads the values).
type referencingWeights interface {
	Reference(name string, transpose bool, shape []int64) (*onnxpb.TensorProto, error)
}

// MaskValue is the additive attention mask for excluded positions. Large
// enough that exp underflows to exactly 0 after softmax, small enough that
// sums of two masks stay finite (a causal and a padding mask together).
const MaskValue = -1e9

// Builder assembles a forward graph and its manifest. Its methods record
// the first error and turn later calls into no-ops, so architecture code
// reads as a straight list of layers and checks Err once at the end.
type Builder struct {
	Model    *onnx.Model
	G        *onnx.Graph
	Manifest *modeldir.Manifest

	weights Weights
	dtype   DType
	// data receives the weights as they are read (a streaming export);
	// nil keeps them inline in the graph.
	data   *onnx.DataWriter
	params map[string]string // checkpoint name (+ "^T") → float32 value
	consts map[string]string // constant cache key → initializer
	// castFrom maps the float32 value of a half-precision weight to the
	// initializer it is cast from.
	castFrom map[string]string
	err      error
}

func newBuilder(arch string, w Weights) *Builder {
	m := onnx.New(arch, nil)
	return &Builder{
		Model:    m,
		G:        m.Graph(),
		Manifest: &modeldir.Manifest{Format: modeldir.FormatVersion, Architecture: arch, SpecialTokens: map[string]int64{}},
		weights:  w,
		dtype:    DTypeF32,
		params:   map[string]string{},
		consts:   map[string]string{},
		castFrom: map[string]string{},
	}
}

// Err returns the first error any builder method met.
func (b *Builder) Err() error { return b.err }

// Fail records an error (the first one wins) for Build to return.
func (b *Builder) Fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Param adds a checkpoint tensor as an initializer of the same name and
// layout (once) and returns its name.
func (b *Builder) Param(name string, shape ...int64) string {
	return b.param(name, false, shape)
}

// ParamT adds the transpose of a 2-D checkpoint tensor: Hugging Face stores
// linear weights [out, in], MatMul wants [in, out]. The initializer keeps
// the checkpoint's name; migu.json says its orientation.
func (b *Builder) ParamT(name string, out, in int64) string {
	return b.param(name, true, []int64{out, in})
}

func (b *Builder) param(name string, transpose bool, shape []int64) string {
	key := name
	if transpose {
		key += "^T"
	}
	if v, ok := b.params[key]; ok || b.err != nil {
		return v
	}
	if r, ok := b.weights.(referencingWeights); ok {
		t, err := r.Reference(name, transpose, shape)
		if err != nil {
			b.Fail(err)
			return ""
		}
		if t != nil {
			return b.addParam(key, name, t)
		}
	}
	data, err := b.weights.Float32(name)
	if err != nil {
		b.Fail(err)
		return ""
	}
	n, err := onnx.NumElements(shape)
	if err != nil || n != int64(len(data)) {
		b.Fail(fmt.Errorf("tensor %s: %d values, want shape %v", name, len(data), shape))
		return ""
	}
	dt := b.storageType(name, shape)
	raw, shape := encodeParam(data, shape, transpose, dt)
	t := onnx.NewTensor(b.initName(name), dt, shape, nil)
	if b.data != nil && len(raw) >= externalThreshold {
		if err := b.data.Append(t, raw); err != nil {
			b.Fail(err)
			return ""
		}
	} else {
		t.RawData = slices.Clone(raw)
	}
	if r, ok := b.weights.(releasingWeights); ok {
		r.Release(name)
	}
	if b.data != nil && len(raw) >= 32<<20 {
		// Streaming: hand the tensor's buffers back before the next one,
		// so that peak memory stays that of the largest tensor.
		data, raw = nil, nil
		runtime.GC()
	}
	return b.addParam(key, name, t)
}

// initName is the initializer name of checkpoint tensor name: the name
// itself unless the graph already uses it.
func (b *Builder) initName(name string) string {
	if b.G.Initializer(name) != nil || b.G.Input(name) != nil {
		return b.G.Unique(name)
	}
	return name
}

// addParam adds the initializer t of checkpoint tensor name, a Cast to
// float32 after it when it is stored in another type, and returns the
// float32 value, remembered under key.
func (b *Builder) addParam(key, name string, t *onnxpb.TensorProto) string {
	if t.Name == nil {
		t.Name = proto.String(b.initName(name))
	}
	initName := t.GetName()
	b.G.AddInitializer(t)
	value := initName
	if dt := onnx.DType(t.GetDataType()); dt != onnx.Float {
		value = b.G.Op("Cast", []string{initName}, initName+".f32", onnx.AttrInt("to", int64(onnx.Float)))
		b.castFrom[value] = initName
	}
	b.params[key] = value
	return value
}

// externalThreshold is the smallest tensor a streaming export writes to the
// data file (as onnx.SaveOptions' default).
const externalThreshold = 1024

// storageType is the element type a weight is stored in under the
// builder's DType: matrices (embeddings, linear weights) keep or take the
// chosen precision, vectors (norm weights, biases: a fraction of a percent
// of the parameters) stay float32.
func (b *Builder) storageType(name string, shape []int64) onnx.DType {
	if len(shape) < 2 {
		return onnx.Float
	}
	switch b.dtype {
	case DTypeF16:
		return onnx.Float16
	case DTypeBF16:
		return onnx.BFloat16
	case DTypeKeep:
		if tw, ok := b.weights.(typedWeights); ok {
			return tw.StoredType(name)
		}
	}
	return onnx.Float
}

// encodeParam turns checkpoint values into initializer bytes of type dt,
// transposing a 2-D [out, in] tensor to MatMul's [in, out] on the way; a
// float32 tensor that needs no transpose is a view of data.
func encodeParam(data []float32, shape []int64, transpose bool, dt onnx.DType) ([]byte, []int64) {
	var rows, cols int64
	if transpose {
		rows, cols = shape[0], shape[1]
		shape = []int64{cols, rows}
	}
	switch dt {
	case onnx.Float16, onnx.BFloat16:
		bits := make([]uint16, len(data))
		conv := half.F32ToF16
		if dt == onnx.BFloat16 {
			conv = half.F32ToBF16
		}
		for i, v := range data {
			bits[i] = conv(v)
		}
		if transpose {
			bits = transposed(bits, rows, cols)
		}
		out := make([]byte, 2*len(bits))
		for i, v := range bits {
			binary.LittleEndian.PutUint16(out[2*i:], v)
		}
		return out, shape
	}
	if transpose {
		data = transposed(data, rows, cols)
	}
	return onnx.Float32Bytes(data), shape
}

// transposed returns the transpose of a row-major rows × cols matrix,
// copied in tiles so that both sides stay in cache.
func transposed[T any](src []T, rows, cols int64) []T {
	const tile = 64
	dst := make([]T, len(src))
	for r0 := int64(0); r0 < rows; r0 += tile {
		for c0 := int64(0); c0 < cols; c0 += tile {
			for r := r0; r < min(r0+tile, rows); r++ {
				for c := c0; c < min(c0+tile, cols); c++ {
					dst[c*rows+r] = src[r*cols+c]
				}
			}
		}
	}
	return dst
}

// initializerOf names the initializer behind a parameter value: the value
// itself, or the half-precision initializer it is cast from.
func (b *Builder) initializerOf(value string) string {
	if init, ok := b.castFrom[value]; ok {
		return init
	}
	return value
}

// Op appends a node and returns its output (see onnx.Graph.Op).
func (b *Builder) Op(opType string, inputs []string, hint string, attrs ...onnx.Attr) string {
	if b.err != nil {
		return ""
	}
	return b.G.Op(opType, inputs, hint, attrs...)
}

// Scalar returns a float32 constant of shape [] (shared by every use).
func (b *Builder) Scalar(v float32) string {
	key := "f:" + strconv.FormatUint(uint64(math.Float32bits(v)), 16)
	if name, ok := b.consts[key]; ok {
		return name
	}
	name := b.G.Const("const_"+formatFloat(v), nil, v)
	b.consts[key] = name
	return name
}

// Floats returns a float32 constant with the given shape.
func (b *Builder) Floats(hint string, dims []int64, v ...float32) string {
	return b.G.Const(hint, dims, v...)
}

// Ints returns a 1-D int64 constant (shapes, axes, indices), shared by every
// use of the same values.
func (b *Builder) Ints(v ...int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatInt(x, 10)
	}
	key := "i:" + strings.Join(parts, ",")
	if name, ok := b.consts[key]; ok {
		return name
	}
	name := b.G.ConstInt64("ints_"+strings.ReplaceAll(strings.Join(parts, "_"), "-", "m"), []int64{int64(len(v))}, v...)
	b.consts[key] = name
	return name
}

// IntScalar returns an int64 constant of shape [].
func (b *Builder) IntScalar(v int64) string {
	key := "is:" + strconv.FormatInt(v, 10)
	if name, ok := b.consts[key]; ok {
		return name
	}
	name := b.G.ConstInt64("int_"+strings.ReplaceAll(strconv.FormatInt(v, 10), "-", "m"), nil, v)
	b.consts[key] = name
	return name
}

func formatFloat(v float32) string {
	s := strconv.FormatFloat(float64(v), 'g', 6, 32)
	return strings.NewReplacer("-", "m", ".", "p", "+", "").Replace(s)
}

// LinearSpec names a Hugging Face linear layer for Builder.Linear.
type LinearSpec struct {
	Name    string // module path, e.g. model.layers.0.self_attn.q_proj
	Role    modeldir.Role
	Block   int
	Stack   string
	In, Out int64
	Bias    bool // reads Name+".bias"
	// Mask is the padding-mask input whose positions the output lies on,
	// recorded as modeldir.Linear.Mask; empty for attention_mask.
	Mask string
}

// Residuals records the residual-stream values at a stack's block
// boundaries (entering block 0, between blocks, leaving the last) in the
// manifest, for activation recomputation. stack is "" for single-stack
// models, else the name Linear.Stack uses.
func (b *Builder) Residuals(stack string, values []string) {
	if b.err != nil {
		return
	}
	b.Manifest.Blocks = append(b.Manifest.Blocks, modeldir.BlockStack{Stack: stack, Residuals: values})
}

// Linear emits y = x·Wᵀ (+ b) for the checkpoint's Name.weight (and
// Name.bias), and records the layer in the manifest.
func (b *Builder) Linear(x string, l LinearSpec) string {
	w := b.ParamT(l.Name+".weight", l.Out, l.In)
	if b.err != nil {
		return ""
	}
	y := b.G.Op("MatMul", []string{x, w}, l.Name)
	node := b.lastNode().GetName()
	var bias string
	if l.Bias {
		bias = b.Param(l.Name+".bias", l.Out)
		y = b.Op("Add", []string{y, bias}, l.Name+".out")
	}
	b.Manifest.Linears = append(b.Manifest.Linears, modeldir.Linear{
		Name: l.Name, Role: l.Role, Block: l.Block, Stack: l.Stack,
		Weight: b.initializerOf(w), Bias: bias, Node: node, Input: x, Output: y, DIn: l.In, DOut: l.Out, Mask: l.Mask,
	})
	return y
}

// TiedHead emits logits = x·Eᵀ for an output head that shares the embedding
// table E [vocab, hidden], and records it as a linear tied to E whose
// positions lie on the padding mask input mask (empty for attention_mask).
func (b *Builder) TiedHead(x, embedding, name, mask string, vocab, hidden int64) string {
	w := b.Op("Transpose", []string{embedding}, name+".weight_t", onnx.AttrInts("perm", 1, 0))
	y := b.Op("MatMul", []string{x, w}, name)
	if b.err != nil {
		return ""
	}
	node := b.lastNode().GetName()
	b.Manifest.Linears = append(b.Manifest.Linears, modeldir.Linear{
		Name: name, Role: modeldir.RoleHead, Block: -1, Weight: b.initializerOf(embedding), Node: node,
		Input: x, Output: y, DIn: hidden, DOut: vocab, Tied: b.initializerOf(embedding), Mask: mask,
	})
	return y
}

// Input declares an int64 [batch, seq]-style graph input.
func (b *Builder) Input(name string, dtype onnx.DType, dims ...onnx.Dim) string {
	b.G.AddInput(name, dtype, onnx.Shape(dims))
	b.Manifest.Inputs = append(b.Manifest.Inputs, name)
	return name
}

// Output declares a graph output named name computed as value.
func (b *Builder) Output(value, name string, dtype onnx.DType, dims ...onnx.Dim) {
	if b.err != nil {
		return
	}
	if value != name {
		value = b.Op("Identity", []string{value}, name)
		if value != name {
			b.G.Rename(value, name)
		}
	}
	b.G.AddOutput(name, dtype, onnx.Shape(dims))
	b.Manifest.Outputs = append(b.Manifest.Outputs, name)
}

// RMSNorm is T5's and Llama's layer norm: x / sqrt(mean(x²) + eps) · w,
// written with x·x rather than Pow so its gradient stays cheap.
func (b *Builder) RMSNorm(x, weight string, eps float32, hint string) string {
	sq := b.Op("Mul", []string{x, x}, hint+".sq")
	ms := b.Op("ReduceMean", []string{sq, b.Ints(-1)}, hint+".ms", onnx.AttrInt("keepdims", 1))
	rs := b.Op("Sqrt", []string{b.Op("Add", []string{ms, b.Scalar(eps)}, hint+".var")}, hint+".rms")
	inv := b.Op("Reciprocal", []string{rs}, hint+".inv")
	return b.Op("Mul", []string{b.Op("Mul", []string{x, inv}, hint+".normed"), weight}, hint)
}

// LayerNorm is the standard layer normalisation over the last axis.
func (b *Builder) LayerNorm(x, weight, bias string, eps float32, hint string) string {
	return b.Op("LayerNormalization", []string{x, weight, bias}, hint,
		onnx.AttrInt("axis", -1), onnx.AttrFloat("epsilon", eps))
}

// GELU is the exact (erf) GELU: x · ½(1 + erf(x/√2)).
func (b *Builder) GELU(x, hint string) string {
	e := b.Op("Erf", []string{b.Op("Mul", []string{x, b.Scalar(float32(1 / math.Sqrt2))}, hint+".scaled")}, hint+".erf")
	h := b.Op("Mul", []string{x, b.Op("Add", []string{e, b.Scalar(1)}, hint+".erf1")}, hint+".xerf")
	return b.Op("Mul", []string{h, b.Scalar(0.5)}, hint)
}

// GELUTanh is the tanh approximation (Hugging Face's gelu_new /
// gelu_pytorch_tanh): ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
func (b *Builder) GELUTanh(x, hint string) string {
	x2 := b.Op("Mul", []string{x, x}, hint+".x2")
	x3 := b.Op("Mul", []string{x2, x}, hint+".x3")
	inner := b.Op("Add", []string{x, b.Op("Mul", []string{x3, b.Scalar(0.044715)}, hint+".cubic")}, hint+".inner")
	t := b.Op("Tanh", []string{b.Op("Mul", []string{inner, b.Scalar(float32(math.Sqrt(2 / math.Pi)))}, hint+".arg")}, hint+".tanh")
	h := b.Op("Mul", []string{x, b.Op("Add", []string{t, b.Scalar(1)}, hint+".tanh1")}, hint+".xt")
	return b.Op("Mul", []string{h, b.Scalar(0.5)}, hint)
}

// SiLU is x·sigmoid(x).
func (b *Builder) SiLU(x, hint string) string {
	return b.Op("Mul", []string{x, b.Op("Sigmoid", []string{x}, hint+".sig")}, hint)
}

// Activation applies a Hugging Face activation by its config name.
func (b *Builder) Activation(name, x, hint string) string {
	switch name {
	case "relu":
		return b.Op("Relu", []string{x}, hint)
	case "gelu":
		return b.GELU(x, hint)
	case "gelu_new", "gelu_pytorch_tanh", "gelu_fast":
		return b.GELUTanh(x, hint)
	case "silu", "swish":
		return b.SiLU(x, hint)
	}
	b.Fail(fmt.Errorf("activation %q is not supported (relu, gelu, gelu_new, gelu_pytorch_tanh, silu)", name))
	return ""
}

// SplitHeads reshapes [B, S, n·d] to [B, n, S, d], or to [B, n, d, S] when
// keyT is set (keys, ready for q·kᵀ without another transpose).
func (b *Builder) SplitHeads(x string, n, d int64, keyT bool, hint string) string {
	r := b.Op("Reshape", []string{x, b.Ints(0, 0, n, d)}, hint+".heads")
	perm := []int64{0, 2, 1, 3}
	if keyT {
		perm = []int64{0, 2, 3, 1}
	}
	return b.Op("Transpose", []string{r}, hint+".t", onnx.AttrInts("perm", perm...))
}

// MergeHeads reshapes [B, n, S, d] back to [B, S, n·d].
func (b *Builder) MergeHeads(x string, n, d int64, hint string) string {
	t := b.Op("Transpose", []string{x}, hint+".t", onnx.AttrInts("perm", 0, 2, 1, 3))
	return b.Op("Reshape", []string{t, b.Ints(0, 0, n*d)}, hint)
}

// Attend computes softmax(q·kᵀ·scale + bias)·v. q is [B, n, Sq, d], kT is
// [B, nkv, d, Sk], v is [B, nkv, Sk, d], bias broadcasts to [B, n, Sq, Sk]
// (or is ""); scale 1 emits no multiply. With grouped-query attention (nkv
// < n) the n/nkv query heads sharing a key head are stacked along the query
// axis, [B, nkv, (n/nkv)·Sq, d], so every product is a plain batched
// MatMul over [B, nkv]: no broadcast axis, whose gradient would need a
// reduction and a slow transpose. The bias then needs one row per query,
// head axis 1: [B, 1, Sq, Sk] is tiled to [B, 1, (n/nkv)·Sq, Sk] (once per
// bias, shared by the blocks).
func (b *Builder) Attend(q, kT, v, bias string, n, nkv, d int64, scale float32, hint string) string {
	grouped := nkv != n
	if grouped {
		q = b.Op("Reshape", []string{q, b.Ints(0, nkv, -1, d)}, hint+".qgroups")
		if bias != "" {
			bias = b.groupedBias(bias, n/nkv)
		}
	}
	if scale != 1 {
		// Scaling q (Sq·d values) is cheaper than scaling the scores (Sq·Sk).
		q = b.Op("Mul", []string{q, b.Scalar(scale)}, hint+".qscaled")
	}
	scores := b.Op("MatMul", []string{q, kT}, hint+".scores")
	if bias != "" {
		scores = b.Op("Add", []string{scores, bias}, hint+".biased")
	}
	probs := b.Op("Softmax", []string{scores}, hint+".probs", onnx.AttrInt("axis", -1))
	ctx := b.Op("MatMul", []string{probs, v}, hint+".ctx")
	if grouped {
		ctx = b.Op("Reshape", []string{ctx, b.Ints(0, n, -1, d)}, hint+".ungroup")
	}
	return ctx
}

// groupedBias repeats a [B, 1, Sq, Sk] attention bias g times along the
// query axis for Attend's stacked query heads, once per bias.
func (b *Builder) groupedBias(bias string, g int64) string {
	key := "grouped:" + bias + ":" + strconv.FormatInt(g, 10)
	if t, ok := b.consts[key]; ok {
		return t
	}
	t := b.Op("Tile", []string{bias, b.Ints(1, 1, g, 1)}, bias+".grouped")
	b.consts[key] = t
	return t
}

// PaddingBias turns an int64 attention_mask [B, S] (1 = token, 0 = padding)
// into an additive bias [B, 1, 1, S]: 0 for tokens, MaskValue for padding.
func (b *Builder) PaddingBias(mask, hint string) string {
	f := b.Op("Cast", []string{mask}, hint+".f", onnx.AttrInt("to", int64(onnx.Float)))
	inv := b.Op("Sub", []string{b.Scalar(1), f}, hint+".inv")
	bias := b.Op("Mul", []string{inv, b.Scalar(MaskValue)}, hint+".bias")
	return b.Op("Unsqueeze", []string{bias, b.Ints(1, 2)}, hint)
}

// CausalBias builds an additive [S, S] mask from a sequence length (an int64
// scalar): 0 where key ≤ query, MaskValue above the diagonal.
func (b *Builder) CausalBias(seqLen, hint string) string {
	idx := b.Op("Range", []string{b.IntScalar(0), seqLen, b.IntScalar(1)}, hint+".idx")
	rows := b.Op("Unsqueeze", []string{idx, b.Ints(1)}, hint+".rows")
	cols := b.Op("Unsqueeze", []string{idx, b.Ints(0)}, hint+".cols")
	future := b.Op("Greater", []string{cols, rows}, hint+".future")
	f := b.Op("Cast", []string{future}, hint+".f", onnx.AttrInt("to", int64(onnx.Float)))
	return b.Op("Mul", []string{f, b.Scalar(MaskValue)}, hint)
}

// Dim returns dimension axis of x's runtime shape as an int64 scalar.
func (b *Builder) Dim(x string, axis int64, hint string) string {
	shape := b.Op("Shape", []string{x}, hint+".shape")
	return b.Op("Gather", []string{shape, b.IntScalar(axis)}, hint, onnx.AttrInt("axis", 0))
}

// Gather looks rows up in a table (embeddings). A half-precision table is
// gathered first and the rows cast after, not the whole table.
func (b *Builder) Gather(table, ids, hint string) string {
	if init, ok := b.castFrom[table]; ok {
		rows := b.Op("Gather", []string{init, ids}, hint+".rows", onnx.AttrInt("axis", 0))
		return b.Op("Cast", []string{rows}, hint, onnx.AttrInt("to", int64(onnx.Float)))
	}
	return b.Op("Gather", []string{table, ids}, hint, onnx.AttrInt("axis", 0))
}

// lastNode returns the node most recently added, for callers that need its
// name.
func (b *Builder) lastNode() *onnxpb.NodeProto {
	if len(b.G.P.Node) == 0 {
		return nil
	}
	return b.G.P.Node[len(b.G.P.Node)-1]
}
