package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// externalRef is a tensor's parsed external_data entry.
type externalRef struct {
	location       string
	offset, length int64
	hasLength      bool
}

// parseExternal reads the location/offset/length keys of a tensor. It
// rejects locations that are absolute or climb out of the model's folder: a
// model file from someone else must not make us read /etc/passwd.
func parseExternal(t *onnxpb.TensorProto) (externalRef, error) {
	var ref externalRef
	name := t.GetName()
	for _, kv := range t.ExternalData {
		var err error
		switch kv.GetKey() {
		case "location":
			ref.location = kv.GetValue()
		case "offset":
			ref.offset, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "length":
			ref.length, err = strconv.ParseInt(kv.GetValue(), 10, 64)
			ref.hasLength = true
		}
		if err != nil || ref.offset < 0 || ref.length < 0 {
			return ref, fmt.Errorf("tensor %q: external data %s %q is not a non-negative integer", name, kv.GetKey(), kv.GetValue())
		}
	}
	loc := ref.location
	switch {
	case loc == "":
		return ref, fmt.Errorf("tensor %q: external data has no location", name)
	case filepath.IsAbs(loc) || strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, `\`) || (len(loc) > 1 && loc[1] == ':'):
		return ref, fmt.Errorf("tensor %q: external data location %q is absolute; it must be relative to the model's folder", name, loc)
	case strings.ContainsRune(loc, 0):
		return ref, fmt.Errorf("tensor %q: external data location contains a NUL byte", name)
	}
	for _, part := range strings.FieldsFunc(loc, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return ref, fmt.Errorf("tensor %q: external data location %q leaves the model's folder", name, loc)
		}
	}
	ref.location = filepath.Clean(filepath.FromSlash(loc))
	return ref, nil
}

// externalFiles maps each external data file once, shared by its tensors.
type externalFiles struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (e *externalFiles) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for loc, b := range e.files {
		if len(b) > 0 {
			errs = append(errs, syscall.Munmap(b))
		}
		delete(e.files, loc)
	}
	return errors.Join(errs...)
}

// externalBytes returns the bytes of an external tensor, mapping its file on
// first use and checking that the range lies inside it.
func (m *Model) externalBytes(t *onnxpb.TensorProto) ([]byte, error) {
	ref, err := parseExternal(t)
	if err != nil {
		return nil, err
	}
	if m.Dir == "" {
		return nil, fmt.Errorf("tensor %q: external data %q but the model has no folder", t.GetName(), ref.location)
	}
	if m.ext == nil {
		m.ext = &externalFiles{files: map[string][]byte{}}
	}
	data, err := m.ext.open(m.Dir, ref.location)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.GetName(), err)
	}
	size := int64(len(data))
	length := ref.length
	if !ref.hasLength {
		length = size - ref.offset
	}
	if ref.offset > size || length > size-ref.offset {
		return nil, fmt.Errorf("tensor %q: external data range [%d, %d) runs past the end of %s (%d bytes)",
			t.GetName(), ref.offset, ref.offset+length, ref.location, size)
	}
	raw := data[ref.offset : ref.offset+length]
	if err := checkSize(t, int64(len(raw))); err != nil {
		return nil, err
	}
	return raw, nil
}

func (e *externalFiles) open(dir, loc string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.files[loc]; ok {
		return b, nil
	}
	path := filepath.Join(dir, loc)
	// A symlink inside the folder may still point outside it.
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	realPath, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("external data file %s: %w", path, errors.Unwrap(err))
	}
	if rel, err := filepath.Rel(realDir, realPath); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("external data file %s resolves outside the model's folder", path)
	}
	f, err := os.Open(realPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("external data file %s is not a regular file", path)
	}
	var b []byte
	if st.Size() > 0 {
		b, err = syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("mapping %s: %w", path, err)
		}
	}
	e.files[loc] = b
	return b, nil
}

// ExternalMode says where Save puts initializer bytes.
type ExternalMode int

const (
	// ExternalAuto keeps a model that had external data external and an
	// inline model inline, switching to external data past the 2 GiB limit.
	ExternalAuto ExternalMode = iota
	// ExternalAll moves every initializer of at least Threshold bytes into the
	// data file beside the model.
	ExternalAll
	// ExternalNone stores every tensor inline in the model file.
	ExternalNone
	// ExternalKeep writes the graph and leaves every tensor where it is:
	// external tensors keep their references (their data file, written
	// beside the model by a DataWriter, must already be in place).
	ExternalKeep
)

// SaveOptions control Save.
type SaveOptions struct {
	External ExternalMode
	// DataFile is the external data file name, relative to the model's
	// folder; default: the model file's name plus ".data".
	DataFile string
	// Threshold is the smallest tensor, in bytes, that goes external
	// (default 1024, as the onnx Python package does).
	Threshold int64
}

// inlineLimit leaves headroom under the protobuf limit for the graph itself.
const inlineLimit = maxProtoBytes - 64<<20

// Save writes the model to path, atomically: each file is written under a
// temporary name and renamed into place, so a crash leaves either the old
// file or the new one. When both the model and its data file are replaced,
// callers that need the pair switched together write into a fresh folder
// and rename the folder. A model saved as loaded keeps its exact bytes.
func (m *Model) Save(path string, opt SaveOptions) error {
	if opt.Threshold <= 0 {
		opt.Threshold = 1024
	}
	if opt.DataFile == "" {
		opt.DataFile = filepath.Base(path) + ".data"
	}
	mode := opt.External
	if mode == ExternalKeep {
		return m.writeProto(path)
	}
	if mode == ExternalAuto {
		mode = ExternalNone
		var inline int64
		eachInitializer(m.Proto, func(t *onnxpb.TensorProto) {
			if IsExternal(t) {
				mode = ExternalAll
			} else {
				inline += int64(len(t.RawData)) + 4*int64(len(t.FloatData)) + 8*int64(len(t.Int64Data)+len(t.DoubleData))
			}
		})
		if inline > inlineLimit {
			mode = ExternalAll
		}
		if mode == ExternalNone {
			return m.writeProto(path)
		}
	}
	return m.saveRelocated(path, mode, opt)
}

func (m *Model) writeProto(path string) error {
	data, err := marshalModel(m.Proto)
	if err != nil {
		return err
	}
	if len(data) > maxProtoBytes {
		return fmt.Errorf("%s: the model is %d bytes inline, past the 2 GiB protobuf limit; save it with external data", path, len(data))
	}
	return atomicfile.WriteFile(path, data)
}

// saveRelocated rewrites where initializer bytes live (all inline, or large
// ones in one new data file), saves, and puts the tensors back as they were
// so the in-memory model is unchanged.
func (m *Model) saveRelocated(path string, mode ExternalMode, opt SaveOptions) error {
	var undo []tensorStorage
	defer func() {
		for _, st := range undo {
			st.restore()
		}
	}()
	var data *DataWriter
	if mode == ExternalAll {
		var err error
		data, err = CreateData(filepath.Dir(path), opt.DataFile)
		if err != nil {
			return err
		}
		defer data.Abort()
	}
	var ferr error
	eachInitializer(m.Proto, func(t *onnxpb.TensorProto) {
		if ferr != nil || DType(t.GetDataType()) == String {
			return
		}
		raw, err := m.TensorBytes(t)
		if err != nil {
			ferr = err
			return
		}
		external := mode == ExternalAll && int64(len(raw)) >= opt.Threshold
		if !external && !IsExternal(t) && t.RawData != nil {
			return // already inline in the form we would write
		}
		undo = append(undo, storageOf(t))
		t.FloatData, t.Int32Data, t.Int64Data, t.DoubleData, t.Uint64Data = nil, nil, nil, nil, nil
		if !external {
			t.RawData, t.ExternalData, t.DataLocation = raw, nil, nil
			return
		}
		ferr = data.Append(t, raw)
	})
	if ferr != nil {
		return ferr
	}
	if data != nil {
		if err := data.Commit(); err != nil {
			return err
		}
	}
	return m.writeProto(path)
}

// tensorStorage remembers where a tensor kept its bytes, so Save can
// relocate them for writing and put them back afterwards.
type tensorStorage struct {
	t        *onnxpb.TensorProto
	raw      []byte
	external []*onnxpb.StringStringEntryProto
	location *onnxpb.TensorProto_DataLocation
	floats   []float32
	int32s   []int32
	int64s   []int64
	doubles  []float64
	uint64s  []uint64
}

func storageOf(t *onnxpb.TensorProto) tensorStorage {
	return tensorStorage{t, t.RawData, t.ExternalData, t.DataLocation, t.FloatData, t.Int32Data, t.Int64Data, t.DoubleData, t.Uint64Data}
}

func (s tensorStorage) restore() {
	t := s.t
	t.RawData, t.ExternalData, t.DataLocation = s.raw, s.external, s.location
	t.FloatData, t.Int32Data, t.Int64Data, t.DoubleData, t.Uint64Data = s.floats, s.int32s, s.int64s, s.doubles, s.uint64s
}

func entry(k, v string) *onnxpb.StringStringEntryProto {
	return &onnxpb.StringStringEntryProto{Key: &k, Value: &v}
}

// eachInitializer visits the initializers of the main graph and subgraphs,
// the tensors Save may relocate.
func eachInitializer(mp *onnxpb.ModelProto, visit func(*onnxpb.TensorProto)) {
	var graph func(g *onnxpb.GraphProto)
	graph = func(g *onnxpb.GraphProto) {
		for _, t := range g.Initializer {
			visit(t)
		}
		for _, n := range g.Node {
			for _, a := range n.Attribute {
				if a.G != nil {
					graph(a.G)
				}
				for _, sg := range a.Graphs {
					graph(sg)
				}
			}
		}
	}
	if mp.Graph != nil {
		graph(mp.Graph)
	}
}

// DataWriter streams tensor bytes into an external data file, one tensor
// at a time, so that a model far larger than memory can be written; the
// file appears under its name only on Commit.
type DataWriter struct {
	f        *atomicfile.File
	location string
	offset   int64
}

// CreateData starts the data file location (relative, as external data
// references store it) in the folder dir.
func CreateData(dir, location string) (*DataWriter, error) {
	f, err := atomicfile.Create(filepath.Join(dir, location))
	if err != nil {
		return nil, err
	}
	return &DataWriter{f: f, location: location}, nil
}

// Append writes raw as t's bytes and points t at them. Large tensors start
// on a page boundary so that ONNX Runtime and migu's trainer can map them
// directly.
func (w *DataWriter) Append(t *onnxpb.TensorProto, raw []byte) error {
	align := int64(64)
	if len(raw) >= 64<<10 {
		align = 4096
	}
	if pad := (align - w.offset%align) % align; pad > 0 {
		if _, err := w.f.Write(make([]byte, pad)); err != nil {
			return err
		}
		w.offset += pad
	}
	if _, err := w.f.Write(raw); err != nil {
		return err
	}
	loc := onnxpb.TensorProto_EXTERNAL
	t.RawData, t.DataLocation = nil, &loc
	t.FloatData, t.Int32Data, t.Int64Data, t.DoubleData, t.Uint64Data = nil, nil, nil, nil, nil
	t.ExternalData = []*onnxpb.StringStringEntryProto{
		entry("location", filepath.ToSlash(w.location)),
		entry("offset", strconv.FormatInt(w.offset, 10)),
		entry("length", strconv.Itoa(len(raw))),
	}
	w.offset += int64(len(raw))
	return nil
}

// Commit makes the data file visible under its name.
func (w *DataWriter) Commit() error { return w.f.Commit() }

// Abort removes the unfinished file; after Commit it does nothing.
func (w *DataWriter) Abort() { w.f.Abort() }
