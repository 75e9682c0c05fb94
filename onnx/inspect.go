package onnx

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/migu-ml/migu/onnx/onnxpb"
)

// Linear is a linear layer found in a graph: y = x·W (+ b), W a 2-D float
// initializer, read through MatMul or Gemm.
type Linear struct {
	Node   string `json:"node"`   // name of the MatMul or Gemm node
	Op     string `json:"op"`     // MatMul or Gemm
	Weight string `json:"weight"` // initializer holding W
	// WeightTransposed is true when the initializer is stored [d_out, d_in]
	// (PyTorch's orientation, e.g. Gemm with transB=1).
	WeightTransposed bool   `json:"weight_transposed,omitempty"`
	Output           string `json:"output"` // the value y
	DIn              int64  `json:"d_in"`
	DOut             int64  `json:"d_out"`
}

// FindLinears lists the linear layers of a graph in node order: MatMul or
// Gemm nodes whose second operand is a 2-D floating-point initializer,
// directly or through up to two Transpose, Cast or Identity nodes.
func FindLinears(g *onnxpb.GraphProto) []Linear {
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range g.Initializer {
		inits[t.GetName()] = t
	}
	producer := NewGraph(g).Producers()
	var out []Linear
	for _, n := range g.Node {
		op := n.GetOpType()
		if (op != "MatMul" && op != "Gemm") || n.GetDomain() != "" || len(n.Input) < 2 || len(n.Output) < 1 {
			continue
		}
		// Follow a Transpose, Cast or Identity node, and a second one
		// (a tied head transposes the float32 cast of a half-precision
		// embedding).
		name, transposed := n.Input[1], false
		for range 2 {
			p := producer[name]
			if p == nil || len(p.Input) != 1 {
				break
			}
			switch p.GetOpType() {
			case "Transpose":
				name, transposed = p.Input[0], !transposed
			case "Cast", "Identity":
				name = p.Input[0]
			}
		}
		w := inits[name]
		if w == nil || len(w.Dims) != 2 || !DType(w.GetDataType()).IsFloat() {
			continue
		}
		if op == "Gemm" && AttrIntOr(n, "transB", 0) == 1 {
			transposed = !transposed
		}
		l := Linear{Node: n.GetName(), Op: op, Weight: name, WeightTransposed: transposed, Output: n.Output[0], DIn: w.Dims[0], DOut: w.Dims[1]}
		if transposed {
			l.DIn, l.DOut = l.DOut, l.DIn
		}
		out = append(out, l)
	}
	return out
}

// ValueSummary is a graph input or output as inspect shows it.
type ValueSummary struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape string `json:"shape"`
}

// OpCount is one row of the op-type histogram.
type OpCount struct {
	Domain string `json:"domain"`
	OpType string `json:"op_type"`
	Count  int    `json:"count"`
}

// Summary is what `migu inspect` reports about a model.
type Summary struct {
	Path             string            `json:"path,omitempty"`
	IRVersion        int64             `json:"ir_version"`
	Producer         string            `json:"producer"`
	Opsets           map[string]int64  `json:"opsets"`
	Inputs           []ValueSummary    `json:"inputs"`
	Outputs          []ValueSummary    `json:"outputs"`
	Nodes            int               `json:"nodes"`
	Ops              []OpCount         `json:"ops"`
	Domains          []string          `json:"domains"` // op domains in use; "" is the standard one
	Initializers     int               `json:"initializers"`
	InitializerBytes int64             `json:"initializer_bytes"`
	ExternalBytes    int64             `json:"external_bytes"`
	Parameters       int64             `json:"parameters"` // elements of float initializers
	Linears          []Linear          `json:"linears"`
	Metadata         map[string]string `json:"metadata,omitempty"`
}

// Inspect summarises a model: its interface, op histogram (subgraphs
// included), initializer sizes and linear layers.
func Inspect(m *Model) *Summary {
	mp := m.Proto
	g := mp.Graph
	s := &Summary{
		Path:      m.Path,
		IRVersion: mp.GetIrVersion(),
		Producer:  strings.TrimSpace(mp.GetProducerName() + " " + mp.GetProducerVersion()),
		Opsets:    map[string]int64{},
		Linears:   FindLinears(g),
	}
	for _, o := range mp.OpsetImport {
		s.Opsets[o.GetDomain()] = o.GetVersion()
	}
	values := func(list []*onnxpb.ValueInfoProto) []ValueSummary {
		out := []ValueSummary{}
		for _, vi := range list {
			dtype, shape, ok := TensorType(vi)
			v := ValueSummary{Name: vi.GetName(), DType: dtype.String(), Shape: shape.String()}
			if !ok {
				v.DType, v.Shape = "non-tensor", ""
			}
			out = append(out, v)
		}
		return out
	}
	inits := map[string]bool{}
	for _, t := range g.Initializer {
		inits[t.GetName()] = true
	}
	var realInputs []*onnxpb.ValueInfoProto
	for _, vi := range g.Input { // IR < 4 lists initializers as inputs too
		if !inits[vi.GetName()] {
			realInputs = append(realInputs, vi)
		}
	}
	s.Inputs, s.Outputs = values(realInputs), values(g.Output)

	counts := map[[2]string]int{}
	domains := map[string]bool{}
	var walk func(nodes []*onnxpb.NodeProto)
	walk = func(nodes []*onnxpb.NodeProto) {
		for _, n := range nodes {
			s.Nodes++
			d := CanonicalDomain(n.GetDomain())
			counts[[2]string{d, n.GetOpType()}]++
			domains[d] = true
			for _, a := range n.Attribute {
				if a.G != nil {
					walk(a.G.Node)
				}
				for _, sg := range a.Graphs {
					walk(sg.Node)
				}
			}
		}
	}
	walk(g.Node)
	for k, c := range counts {
		s.Ops = append(s.Ops, OpCount{Domain: k[0], OpType: k[1], Count: c})
	}
	sort.Slice(s.Ops, func(i, j int) bool {
		a, b := s.Ops[i], s.Ops[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		return a.OpType < b.OpType
	})
	for d := range domains {
		s.Domains = append(s.Domains, d)
	}
	sort.Strings(s.Domains)

	for _, t := range g.Initializer {
		s.Initializers++
		dtype := DType(t.GetDataType())
		n, err := NumElements(t.Dims)
		if err != nil {
			continue
		}
		size, _ := ByteSize(dtype, t.Dims)
		s.InitializerBytes += size
		if IsExternal(t) {
			s.ExternalBytes += size
		}
		if dtype.IsFloat() {
			s.Parameters += n
		}
	}
	if len(mp.MetadataProps) > 0 {
		s.Metadata = map[string]string{}
		for _, kv := range mp.MetadataProps {
			s.Metadata[kv.GetKey()] = kv.GetValue()
		}
	}
	return s
}

// NonStandardDomains lists the op domains in use other than the default
// ONNX domain (com.microsoft, custom ones); stock runtimes may lack them.
func (s *Summary) NonStandardDomains() []string {
	var out []string
	for _, d := range s.Domains {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// WriteText prints the summary as aligned tables.
func (s *Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	if s.Path != "" {
		p("model\t%s\n", s.Path)
	}
	var opsets []string
	for d, v := range s.Opsets {
		if d == "" {
			d = "ai.onnx"
		}
		opsets = append(opsets, fmt.Sprintf("%s %d", d, v))
	}
	sort.Strings(opsets)
	p("ir version\t%d\nproducer\t%s\nopsets\t%s\n", s.IRVersion, s.Producer, strings.Join(opsets, ", "))
	p("initializers\t%d (%s, %s external)\nparameters\t%d\n", s.Initializers, humanBytes(s.InitializerBytes), humanBytes(s.ExternalBytes), s.Parameters)
	if nonstd := s.NonStandardDomains(); len(nonstd) > 0 {
		p("non-standard domains\t%s\n", strings.Join(nonstd, ", "))
	} else {
		p("non-standard domains\tnone\n")
	}
	p("\ninputs\tdtype\tshape\n")
	for _, v := range s.Inputs {
		p("  %s\t%s\t%s\n", v.Name, v.DType, v.Shape)
	}
	p("\noutputs\tdtype\tshape\n")
	for _, v := range s.Outputs {
		p("  %s\t%s\t%s\n", v.Name, v.DType, v.Shape)
	}
	p("\nops (%d nodes)\tdomain\tcount\n", s.Nodes)
	for _, o := range s.Ops {
		d := o.Domain
		if d == "" {
			d = "ai.onnx"
		}
		p("  %s\t%s\t%d\n", o.OpType, d, o.Count)
	}
	p("\nlinear layers (%d)\tweight\td_in\td_out\n", len(s.Linears))
	for _, l := range s.Linears {
		weight := l.Weight
		if l.WeightTransposed {
			weight += " (stored [out, in])"
		}
		p("  %s\t%s\t%d\t%d\n", l.Node, weight, l.DIn, l.DOut)
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
