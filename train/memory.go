package train

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"github.com/migu-ml/migu/onnx/shapes"
)

// MemoryPlan is a training run's memory, planned from the training graph
// before anything large is allocated, so that a run that cannot fit is
// refused with advice instead of being killed halfway.
type MemoryPlan struct {
	// Frozen is the bytes of the weights that are not trained, by stored
	// element type (float32, float16, bfloat16), with the bf16 twins of
	// float32 ones (Artifact.FrozenBF16) under bfloat16.
	Frozen map[string]int64 `json:"frozen_bytes"`
	// Trainable counts the trained parameters; State is their bytes in Go
	// memory: float32 values, gradients and AdamW's two moments (16 per
	// parameter), plus a gradient buffer when accumulating and a bf16 twin
	// (2 per parameter) of each weight the bf16 products read from one.
	Trainable int64 `json:"trainable"`
	State     int64 `json:"state_bytes"`
	// Activations is the peak of the graph's intermediate values over one
	// step, simulated in node order with each value freed after its last
	// use (what ONNX Runtime's allocator does); Unsized counts the values
	// whose size the shapes could not tell, left out.
	Activations int64 `json:"activation_bytes"`
	Unsized     int   `json:"unsized_values,omitempty"`
	// Overhead is the runtime, libraries and graph: a measured constant.
	Overhead int64 `json:"overhead_bytes"`
	Total    int64 `json:"total_bytes"`
}

// runtimeOverhead is what a training process holds besides weights, state
// and activations (ONNX Runtime and Go runtimes, the graph, the data),
// measured on small models as peak RSS minus the planned parts.
const runtimeOverhead = 400 << 20

// FrozenBytes sums the frozen weights over their element types.
func (p *MemoryPlan) FrozenBytes() int64 {
	var n int64
	for _, b := range p.Frozen {
		n += b
	}
	return n
}

// String is the one-line summary train prints before the first step.
func (p *MemoryPlan) String() string {
	var parts []string
	for _, dt := range []string{"float32", "bfloat16", "float16"} {
		if b := p.Frozen[dt]; b > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", gb(b), dt))
		}
	}
	frozen := "none"
	if len(parts) > 0 {
		frozen = strings.Join(parts, " + ")
	}
	return fmt.Sprintf("planned memory %s: frozen weights %s, %d trained parameters with AdamW state %s, activations %s, runtime %s",
		gb(p.Total), frozen, p.Trainable, gb(p.State), gb(p.Activations), gb(p.Overhead))
}

// Check refuses a plan above limit bytes (0: no limit) with one line that
// names the settings that would shrink it.
func (p *MemoryPlan) Check(limit int64, recompute bool) error {
	if limit <= 0 || p.Total <= limit {
		return nil
	}
	// Each piece of advice is bad input of its own, so the settings it
	// names reach badinput.Rename.
	var advice []any
	if !recompute && p.Activations > p.Total/4 {
		advice = append(advice, badinput.Errorf("%v layers", badinput.Setting("recompute")))
	}
	if p.Activations > p.Total/4 {
		advice = append(advice, badinput.Errorf("a smaller %v or %v", badinput.Setting("batch_size"), badinput.Setting("max_len")))
	}
	if p.Frozen["float32"] > p.Total/4 {
		advice = append(advice, badinput.Errorf("a model exported with %v bf16", badinput.Setting("dtype")))
	}
	if p.State > p.Total/4 {
		advice = append(advice, badinput.Errorf("%v lora", badinput.Setting("method")))
	}
	if len(advice) == 0 {
		advice = append(advice, "a machine with more memory")
	}
	format := "%s, more than the %s available (%v); try " + strings.Repeat("%v, or ", len(advice)-1) + "%v"
	return badinput.Errorf(format, append([]any{p, gb(limit), badinput.Setting("memory_limit")}, advice...)...)
}

// gb prints a size in GB, or in MB below one GB.
func gb(b int64) string {
	if b < 1e9 {
		return fmt.Sprintf("%.0f MB", float64(b)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(b)/1e9)
}

// planMemory plans a run of the training graph m (as Build left it, frozen
// weights still initializers) for batches of batch × seq tokens: every
// symbolic size of a data input takes batch as its first dimension and
// seq for the others.
func planMemory(m *onnx.Model, art *Artifact, trainable int64, gradAccum int, batch, seq int64) (*MemoryPlan, error) {
	g := m.Graph()
	p := &MemoryPlan{Frozen: map[string]int64{}, Trainable: trainable, Overhead: runtimeOverhead}
	p.State = 16 * trainable
	if gradAccum > 1 {
		p.State += 4 * trainable
	}
	for _, prm := range art.Params {
		if prm.BF16 != "" { // the weight's bf16 twin (GraphOptions.ShareBF16)
			n, err := onnx.NumElements(prm.Shape)
			if err != nil {
				return nil, err
			}
			p.State += 2 * n
		}
	}
	for _, t := range g.P.Initializer {
		if onnx.IsExternal(t) {
			n, err := onnx.NumElements(t.Dims)
			if err != nil {
				return nil, err
			}
			dt := onnx.DType(t.GetDataType())
			p.Frozen[dt.String()] += n * int64(dt.Size())
		}
	}
	for w := range art.FrozenBF16 { // bf16 twins of frozen weights
		if t := g.Initializer(w); t != nil {
			n, err := onnx.NumElements(t.Dims)
			if err != nil {
				return nil, err
			}
			p.Frozen[onnx.BFloat16.String()] += 2 * n
		}
	}
	info, err := shapes.Infer(m)
	if err != nil {
		return nil, err
	}
	sizes := map[string]int64{}
	for _, in := range art.Inputs {
		vi := g.Input(in.Name)
		if vi == nil {
			continue
		}
		_, shape, _ := onnx.TensorType(vi)
		dims := make([]int64, len(shape))
		for i := range dims {
			dims[i] = seq
			if i == 0 {
				dims[i] = batch
			}
		}
		if err := info.Bind(in.Name, dims, sizes); err != nil {
			return nil, err
		}
	}
	// The head on labelled rows (rows.go) plans for a batch labelled
	// throughout, its largest case, and its copy for MIGU's taps on the
	// unlabelled rows for a batch without labels.
	for _, idx := range []string{labelledRows, unlabelledRows} {
		if _, _, ok := info.Type(idx); ok {
			if err := info.Bind(idx, []int64{batch * seq}, sizes); err != nil {
				return nil, err
			}
		}
	}
	p.Activations, p.Unsized = activationPeak(g, info, sizes)
	p.Total = p.FrozenBytes() + p.State + p.Activations + p.Overhead
	return p, nil
}

// activationPeak simulates one run of the graph in node order, as ONNX
// Runtime's allocator runs it: each node's outputs take new buffers, except
// that reshaping ops alias their input's buffer and elementwise ops write
// over a same-sized input that nothing reads later; a buffer is freed when
// no value in it is read again. Graph inputs, initializers and outputs
// (bound to memory the plan counts elsewhere) are not intermediates.
func activationPeak(g *onnx.Graph, info *shapes.Info, sizes map[string]int64) (int64, int) {
	outside := map[string]bool{}
	for _, vi := range g.P.Input {
		outside[vi.GetName()] = true
	}
	for _, vi := range g.P.Output {
		outside[vi.GetName()] = true
	}
	for _, t := range g.P.Initializer {
		outside[t.GetName()] = true
	}
	nodes := executionOrder(g)
	last := map[string]int{}
	for i, n := range nodes {
		for _, in := range n.Input {
			last[in] = i
		}
	}
	unsized := 0
	bufs := map[string]*buffer{} // live intermediate value → its buffer
	var live, peak int64
	for i, n := range nodes {
		dying := freedAfter(n, i, last, outside)
		for k, o := range n.Output {
			if o == "" || outside[o] {
				continue
			}
			size, ok := valueBytes(info, o, sizes)
			if !ok {
				unsized++
			}
			if b := shared(n, k, size, bufs, dying); b != nil {
				b.values++
				bufs[o] = b
				continue
			}
			bufs[o] = &buffer{size: size, values: 1}
			live += size
		}
		peak = max(peak, live)
		for _, v := range dying {
			if b := bufs[v]; b != nil {
				if b.values--; b.values == 0 {
					live -= b.size
				}
				delete(bufs, v)
			}
		}
	}
	return peak, unsized
}

// executionOrder is the order ONNX Runtime's sequential executor runs the
// nodes in by default (GraphViewer's topological order): a depth-first walk
// back from the nodes whose outputs no node reads, the last of them first,
// entering a node's producers highest index first and placing each node
// after all of its producers. A value needed late but computable early (a
// recomputed weight copy) is thus computed just before its reader, which
// node order alone would not show.
func executionOrder(g *onnx.Graph) []*onnxpb.NodeProto {
	nodes := g.P.Node
	producer := map[string]int{}
	for i, n := range nodes {
		for _, o := range n.Output {
			if o != "" {
				producer[o] = i
			}
		}
	}
	read := make([]bool, len(nodes))
	for _, n := range nodes {
		for _, in := range n.Input {
			if p, ok := producer[in]; ok {
				read[p] = true
			}
		}
	}
	type entry struct {
		node  int
		leave bool
	}
	var stack []entry
	for i := range nodes {
		if !read[i] {
			stack = append(stack, entry{i, false})
		}
	}
	visited := make([]bool, len(nodes))
	order := make([]*onnxpb.NodeProto, 0, len(nodes))
	for len(stack) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if e.leave {
			order = append(order, nodes[e.node])
			continue
		}
		if visited[e.node] {
			continue
		}
		visited[e.node] = true
		stack = append(stack, entry{e.node, true})
		var inputs []int
		for _, in := range nodes[e.node].Input {
			if p, ok := producer[in]; ok && !slices.Contains(inputs, p) {
				inputs = append(inputs, p)
			}
		}
		slices.Sort(inputs)
		for _, p := range inputs {
			stack = append(stack, entry{p, false})
		}
	}
	return order
}

// buffer is a simulated allocation and the number of live values in it.
type buffer struct {
	size   int64
	values int
}

// aliasing ops return a view of their first input's buffer; inPlace ops
// may write their output over an input that is read for the last time.
var (
	aliasing = map[string]bool{"Reshape": true, "Squeeze": true, "Unsqueeze": true, "Flatten": true, "Identity": true}
	inPlace  = map[string]bool{"Add": true, "Sub": true, "Mul": true, "Div": true, "Relu": true, "Sigmoid": true, "Tanh": true,
		"Neg": true, "Sqrt": true, "Reciprocal": true, "Exp": true, "Erf": true}
)

// shared returns the buffer that output k of n takes over instead of a new
// one, or nil.
func shared(n *onnxpb.NodeProto, k int, size int64, bufs map[string]*buffer, dying []string) *buffer {
	if k != 0 || len(n.Input) == 0 {
		return nil
	}
	if aliasing[n.GetOpType()] {
		return bufs[n.Input[0]]
	}
	if !inPlace[n.GetOpType()] {
		return nil
	}
	for _, v := range dying {
		if b := bufs[v]; b != nil && b.size == size && b.values == 1 && slices.Contains(n.Input, v) {
			return b
		}
	}
	return nil
}

// freedAfter lists the intermediate values whose last reader is node i
// (outputs nobody reads included), each once.
func freedAfter(n *onnxpb.NodeProto, i int, last map[string]int, outside map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range n.Input {
		if v != "" && !outside[v] && !seen[v] && last[v] == i {
			seen[v] = true
			out = append(out, v)
		}
	}
	for _, v := range n.Output {
		if _, read := last[v]; v != "" && !outside[v] && !read {
			out = append(out, v)
		}
	}
	return out
}

// valueBytes is a value's size at the given atom sizes.
func valueBytes(info *shapes.Info, v string, sizes map[string]int64) (int64, bool) {
	dt, shape, ok := info.Type(v)
	if !ok || shape == nil {
		return 0, false
	}
	n := int64(dt.Size())
	for _, d := range shape {
		s, ok := info.Eval(d, sizes)
		if !ok {
			return 0, false
		}
		n *= s
	}
	return n, true
}

// AvailableMemory is the memory the kernel says new work can use
// (MemAvailable of /proc/meminfo), in bytes; 0 where it cannot tell.
func AvailableMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
