// Package onnx reads, edits and writes ONNX models with migu's own protobuf
// types (package onnxpb): inline and external-data initializers, a
// graph-editing API, dtype and shape helpers, and the summary `migu inspect`
// prints. Loading then saving a model changes none of its bytes.
package onnx

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/pages"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Defaults for models that migu builds.
const (
	// IRVersion is the IR version written by New: IR 10 (ONNX 1.16), which
	// every ONNX Runtime from 1.17 on loads.
	IRVersion = 10
	// DefaultOpset is the default-domain opset of graphs built by migu.
	DefaultOpset = 18
	// maxProtoBytes is the protobuf size limit; bigger models need external data.
	maxProtoBytes = 1<<31 - 1
)

// Model is an ONNX model plus the folder its external data is relative to.
type Model struct {
	Proto *onnxpb.ModelProto
	// Dir is the folder holding the model file; external data locations are
	// relative to it. Empty for a model built in memory.
	Dir string
	// Path is the file the model was loaded from, if any (for messages).
	Path string

	ext   *externalFiles
	graph *Graph
}

// New returns an empty model with a named graph and the given opsets
// (domain "" is the default domain); with no opsets it imports DefaultOpset.
func New(graphName string, opsets map[string]int64) *Model {
	if len(opsets) == 0 {
		opsets = map[string]int64{"": DefaultOpset}
	}
	m := &Model{Proto: &onnxpb.ModelProto{
		IrVersion:    proto.Int64(IRVersion),
		ProducerName: proto.String("migu"),
		Graph:        &onnxpb.GraphProto{Name: proto.String(graphName)},
	}}
	domains := make([]string, 0, len(opsets))
	for d := range opsets {
		domains = append(domains, d)
	}
	sort.Strings(domains)
	for _, d := range domains {
		m.SetOpset(d, opsets[d])
	}
	return m
}

// Load reads a model file. External data is located and bounds-checked now
// (a location that is absolute or leaves the model's folder is refused) and
// mapped into memory when first read.
func Load(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	if st.IsDir() {
		return nil, badinput.Errorf("%s is a folder, not an .onnx file", path)
	}
	if st.Size() > maxProtoBytes {
		return nil, badinput.Errorf("%s: %d bytes is past the 2 GiB protobuf limit; ONNX files this large must keep weights in external data", path, st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := LoadBytes(data, filepath.Dir(path))
	if err != nil {
		return nil, badinput.Errorf("%s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// LoadBytes parses a serialized model whose external data, if any, is
// relative to dir. A graph that defines a name twice is refused
// (checkDefinitions).
func LoadBytes(data []byte, dir string) (*Model, error) {
	mp := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, badinput.Errorf("not an ONNX model: %v", err)
	}
	if mp.Graph == nil {
		return nil, badinput.Errorf("not an ONNX model: no graph")
	}
	if mp.GetIrVersion() <= 0 {
		return nil, badinput.Errorf("not an ONNX model: ir_version is %d", mp.GetIrVersion())
	}
	if err := checkDefinitions(mp.Graph); err != nil {
		return nil, badinput.Wrap(err)
	}
	m := &Model{Proto: mp, Dir: dir}
	if err := m.checkTensors(); err != nil {
		m.Close()
		return nil, badinput.Wrap(err)
	}
	return m, nil
}

// Graph returns the editing view of the main graph. Every call returns the
// same view, so code that edits the model in turns shares one record of the
// names in use.
func (m *Model) Graph() *Graph {
	if m.graph == nil || m.graph.P != m.Proto.Graph {
		m.graph = NewGraph(m.Proto.Graph)
	}
	return m.graph
}

// Remap returns a view of the same model with mappings of its own, so that
// tensor bytes read through it stay valid after m is closed (the trainer
// binds frozen weights straight from the model folder's data file).
func (m *Model) Remap() *Model {
	return &Model{Proto: m.Proto, Dir: m.Dir, Path: m.Path}
}

// Close releases the mapped external-data files. Tensor bytes obtained from
// them must not be used afterwards.
func (m *Model) Close() error {
	if m.ext == nil {
		return nil
	}
	err := m.ext.close()
	m.ext = nil
	return err
}

// Opset returns the version imported for a domain ("" or "ai.onnx" is the
// default domain), or 0 when the domain is not imported.
func (m *Model) Opset(domain string) int64 {
	domain = CanonicalDomain(domain)
	for _, o := range m.Proto.OpsetImport {
		if CanonicalDomain(o.GetDomain()) == domain {
			return o.GetVersion()
		}
	}
	return 0
}

// SetOpset imports a domain at a version, replacing any earlier import.
func (m *Model) SetOpset(domain string, version int64) {
	for _, o := range m.Proto.OpsetImport {
		if CanonicalDomain(o.GetDomain()) == CanonicalDomain(domain) {
			o.Version = proto.Int64(version)
			return
		}
	}
	m.Proto.OpsetImport = append(m.Proto.OpsetImport, &onnxpb.OperatorSetIdProto{
		Domain: proto.String(domain), Version: proto.Int64(version),
	})
}

// DomainMigu is the operator domain of migu's fused kernels (package
// onnx/kernels): graphs use it only when the kernel library is loaded.
const DomainMigu = "ai.migu"

// DomainMiguBF16 is the operator domain of migu's bf16 products
// (MatMulBF16, package onnx/kernels), a library of its own: ONNX Runtime
// refuses two libraries that register the same domain.
const DomainMiguBF16 = "ai.migu.bf16"

// CanonicalDomain is an operator domain with the default domain's alias
// "ai.onnx" written as "", so that the two compare equal.
func CanonicalDomain(d string) string {
	if d == "ai.onnx" {
		return ""
	}
	return d
}

// TensorBytes returns a tensor's little-endian bytes from wherever they are
// stored. External bytes are a read-only view of the mapped file.
func (m *Model) TensorBytes(t *onnxpb.TensorProto) ([]byte, error) {
	var raw []byte
	var err error
	if IsExternal(t) {
		raw, err = m.externalBytes(t)
	} else {
		raw, err = inlineBytes(t)
	}
	if err != nil {
		return nil, err
	}
	if err := checkSize(t, int64(len(raw))); err != nil {
		return nil, err
	}
	return raw, nil
}

// Float32s decodes a floating-point tensor (float32, float16, bfloat16,
// float64) into a new float32 slice.
func (m *Model) Float32s(t *onnxpb.TensorProto) ([]float32, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	dtype := DType(t.GetDataType())
	if !dtype.IsFloat() {
		return nil, fmt.Errorf("tensor %q is %v, not floating point", t.GetName(), dtype)
	}
	out := make([]float32, len(raw)/dtype.Size())
	return out, decodeFloat32(dtype, raw, out)
}

// Release gives the mapped pages of an external tensor back to the kernel
// once its bytes have been copied out (see internal/pages), so that
// reading a model tensor by tensor does not keep all of it resident.
func (m *Model) Release(t *onnxpb.TensorProto) {
	if !IsExternal(t) {
		return
	}
	if raw, err := m.externalBytes(t); err == nil {
		pages.Release(raw)
	}
}

// Int64s decodes an integer tensor (int64, int32) into int64 values.
func (m *Model) Int64s(t *onnxpb.TensorProto) ([]int64, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	switch DType(t.GetDataType()) {
	case Int64:
		out := make([]int64, len(raw)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, nil
	case Int32:
		out := make([]int64, len(raw)/4)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q is %v, not an integer type", t.GetName(), DType(t.GetDataType()))
}

// checkTensors validates every external reference in the model, so a
// malicious or broken file fails at load rather than halfway through work.
func (m *Model) checkTensors() error {
	var err error
	eachTensor(m.Proto, func(t *onnxpb.TensorProto) bool {
		if IsExternal(t) {
			_, err = m.externalBytes(t)
		}
		return err == nil
	})
	return err
}

// eachTensor visits every TensorProto a model holds: initializers, Constant
// and other tensor attributes, sparse tensors, in subgraphs and functions.
// It stops when visit returns false.
func eachTensor(mp *onnxpb.ModelProto, visit func(*onnxpb.TensorProto) bool) {
	var graph func(g *onnxpb.GraphProto) bool
	var nodes func(ns []*onnxpb.NodeProto) bool
	sparse := func(s *onnxpb.SparseTensorProto) bool {
		return (s.Values == nil || visit(s.Values)) && (s.Indices == nil || visit(s.Indices))
	}
	nodes = func(ns []*onnxpb.NodeProto) bool {
		for _, n := range ns {
			for _, a := range n.Attribute {
				if a.T != nil && !visit(a.T) {
					return false
				}
				for _, t := range a.Tensors {
					if !visit(t) {
						return false
					}
				}
				if a.SparseTensor != nil && !sparse(a.SparseTensor) {
					return false
				}
				for _, s := range a.SparseTensors {
					if !sparse(s) {
						return false
					}
				}
				if a.G != nil && !graph(a.G) {
					return false
				}
				for _, sg := range a.Graphs {
					if !graph(sg) {
						return false
					}
				}
			}
		}
		return true
	}
	graph = func(g *onnxpb.GraphProto) bool {
		for _, t := range g.Initializer {
			if !visit(t) {
				return false
			}
		}
		for _, s := range g.SparseInitializer {
			if !sparse(s) {
				return false
			}
		}
		return nodes(g.Node)
	}
	if mp.Graph != nil && !graph(mp.Graph) {
		return
	}
	for _, f := range mp.Functions {
		if !nodes(f.Node) {
			return
		}
	}
	for _, ti := range mp.TrainingInfo {
		if ti.Initialization != nil && !graph(ti.Initialization) {
			return
		}
		if ti.Algorithm != nil && !graph(ti.Algorithm) {
			return
		}
	}
}

// ModelFileName is the forward graph's file name inside a model folder.
const ModelFileName = "model.onnx"

// ResolvePath turns a model folder into the path of its model.onnx; a file
// path is returned as it is.
func ResolvePath(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", badinput.Wrap(err)
	}
	if !st.IsDir() {
		return path, nil
	}
	p := filepath.Join(path, ModelFileName)
	if _, err := os.Stat(p); err != nil {
		return "", badinput.Errorf("%s: no %s in this folder; give an .onnx file or a model folder made by `migu export`", path, ModelFileName)
	}
	return p, nil
}
