package ort

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
)

// OptLevel is ORT's graph optimisation level. The zero value is ORT's own
// default, all optimisations.
type OptLevel int

// Optimisation levels, from ORT's GraphOptimizationLevel.
const (
	OptAll OptLevel = iota
	OptDisabled
	OptBasic
	OptExtended
)

var optNames = []string{OptAll: "all", OptDisabled: "disabled", OptBasic: "basic", OptExtended: "extended"}

func (l OptLevel) String() string {
	if l >= 0 && int(l) < len(optNames) {
		return optNames[l]
	}
	return "OptLevel(" + strconv.Itoa(int(l)) + ")"
}

// ParseOptLevel reads "disabled", "basic", "extended" or "all" (a CLI flag).
func ParseOptLevel(s string) (OptLevel, error) {
	for l, name := range optNames {
		if s == name {
			return OptLevel(l), nil
		}
	}
	return 0, badinput.Errorf("unknown optimisation level %q (want disabled, basic, extended or all)", s)
}

func (l OptLevel) ort() (ortgo.GraphOptimizationLevel, error) {
	switch l {
	case OptAll:
		return ortgo.GraphOptimizationLevelEnableAll, nil
	case OptDisabled:
		return ortgo.GraphOptimizationLevelDisableAll, nil
	case OptBasic:
		return ortgo.GraphOptimizationLevelEnableBasic, nil
	case OptExtended:
		return ortgo.GraphOptimizationLevelEnableExtended, nil
	}
	return 0, fmt.Errorf("unknown optimisation level %d", int(l))
}

// Providers a session can run on.
const (
	ProviderCPU  = "cpu"
	ProviderCUDA = "cuda"
)

// SessionOptions configures NewSession. The zero value runs on the CPU with
// ORT's defaults.
type SessionOptions struct {
	// Threads is the number of intra-op threads; 0 lets ORT choose (one
	// per physical core).
	Threads int
	// InterOpThreads is the number of threads running independent nodes
	// concurrently; above 1 it switches ORT to parallel execution mode.
	InterOpThreads int
	// OptLevel is the graph optimisation level.
	OptLevel OptLevel
	// Provider is "cpu" (or "") or "cuda".
	Provider string
	// DeviceID is the CUDA device ordinal.
	DeviceID int
	// ProfilePrefix turns ORT's profiler on; it writes
	// <prefix>_<date>.json when the session closes.
	ProfilePrefix string
	// Outputs restricts the session to these outputs, in this order; nil
	// means all of the graph's outputs.
	Outputs []string
	// NoMemPattern turns off ORT's memory pattern, which places all of a
	// run's intermediate tensors in one block planned from the first run.
	// For training graphs the block is far larger than the arena's reuse
	// of freed tensors (small llama: 1016 MB peak RSS with it, 743 MB
	// without, at the same step time).
	NoMemPattern bool
	// ExternalDataDir is the folder the external data locations of a model
	// loaded from memory (NewSessionFromBytes) are relative to: the model
	// folder whose data files it shares, so that ORT reads the weights
	// from there and the serialized graph carries none.
	ExternalDataDir string
	// Config holds ORT session configuration entries, e.g.
	// "session.intra_op.allow_spinning": "0" on a shared machine.
	Config map[string]string
	// CustomOps lists shared libraries of custom operators (each exporting
	// ORT's RegisterCustomOps entry point, as migu's fused kernels,
	// package onnx/kernels, do) to register with the session.
	CustomOps []string
}

// Session is a model loaded into ONNX Runtime. Run it through a Binding
// (preallocated inputs and outputs, the training path) or through Run
// (outputs allocated per call, for evaluation). A Session may run from
// several goroutines at once, each with its own Binding.
type Session struct {
	name     string
	das      *ortgo.DynamicAdvancedSession
	inputs   []TensorInfo
	outputs  []TensorInfo
	inIdx    map[string]int
	outIdx   map[string]int
	syms     []symDim
	provider string
}

// NewSession loads the ONNX model file at path (external data is resolved
// next to it). It initialises ORT with the default library discovery if
// Init has not been called.
func NewSession(path string, opts SessionOptions) (*Session, error) {
	if err := ensureInit(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, badinput.Wrap(fmt.Errorf("reading model: %w", err))
	}
	return newSession(path, data, opts, func(in, out []string, so *ortgo.SessionOptions) (*ortgo.DynamicAdvancedSession, error) {
		return ortgo.NewDynamicAdvancedSession(path, in, out, so)
	})
}

// NewSessionFromBytes loads a serialized ONNX model held in memory.
func NewSessionFromBytes(model []byte, opts SessionOptions) (*Session, error) {
	if err := ensureInit(); err != nil {
		return nil, err
	}
	return newSession("in-memory model", model, opts, func(in, out []string, so *ortgo.SessionOptions) (*ortgo.DynamicAdvancedSession, error) {
		return ortgo.NewDynamicAdvancedSessionWithONNXData(model, in, out, so)
	})
}

type createFunc func(inputs, outputs []string, so *ortgo.SessionOptions) (*ortgo.DynamicAdvancedSession, error)

func newSession(name string, model []byte, opts SessionOptions, create createFunc) (*Session, error) {
	inputs, outputs, err := graphIO(model)
	if err != nil {
		return nil, badinput.Errorf("%s: %v", name, err)
	}
	if opts.Outputs != nil {
		outputs, err = selectOutputs(outputs, opts.Outputs)
		if err != nil {
			return nil, badinput.Errorf("%s: %v", name, err)
		}
	}
	if len(outputs) == 0 {
		return nil, badinput.Errorf("%s: the graph has no outputs", name)
	}
	so, provider, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	s := &Session{
		name:     name,
		inputs:   inputs,
		outputs:  outputs,
		inIdx:    make(map[string]int, len(inputs)),
		outIdx:   make(map[string]int, len(outputs)),
		provider: provider,
	}
	for i, in := range inputs {
		s.inIdx[in.Name] = i
	}
	for i, out := range outputs {
		s.outIdx[out.Name] = i
	}
	s.syms = symbolTable(inputs, outputs)
	s.das, err = create(names(inputs), names(outputs), so)
	if err != nil {
		return nil, fmt.Errorf("loading %s into ONNX Runtime %s: %w", name, Version(), unwrapORT(err))
	}
	return s, nil
}

func names(infos []TensorInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.Name
	}
	return out
}

func selectOutputs(all []TensorInfo, want []string) ([]TensorInfo, error) {
	out := make([]TensorInfo, 0, len(want))
	for _, name := range want {
		i := slices.IndexFunc(all, func(info TensorInfo) bool { return info.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown output %q; the graph's outputs are %s", name, describe(all))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// MaxThreads is the most threads a session may be given: far beyond any
// machine's cores, low enough that a typo cannot start a million threads.
const MaxThreads = 1024

// ThreadsRange is the allowed range of a thread count, for help texts.
var ThreadsRange = fmt.Sprintf("0 (one per core) … %d", MaxThreads)

// CheckThreads checks a thread count; the error names the setting s.
func CheckThreads(s badinput.Setting, n int) error {
	if n < 0 || n > MaxThreads {
		return badinput.Range(s, n, ThreadsRange)
	}
	return nil
}

// sessionOptions translates opts into ORT session options; the caller
// destroys them.
func sessionOptions(opts SessionOptions) (*ortgo.SessionOptions, string, error) {
	if err := CheckThreads("threads", opts.Threads); err != nil {
		return nil, "", err
	}
	if err := CheckThreads("inter_op_threads", opts.InterOpThreads); err != nil {
		return nil, "", err
	}
	level, err := opts.OptLevel.ort()
	if err != nil {
		return nil, "", badinput.Wrap(err)
	}
	provider := strings.ToLower(opts.Provider)
	if provider == "" {
		provider = ProviderCPU
	}
	if provider != ProviderCPU && provider != ProviderCUDA {
		return nil, "", badinput.Errorf("unknown execution provider %q (want cpu or cuda)", opts.Provider)
	}
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, "", fmt.Errorf("creating ORT session options: %w", err)
	}
	err = configure(so, opts, level, provider)
	if err != nil {
		so.Destroy()
		return nil, "", err
	}
	return so, provider, nil
}

// externalDataFolder is the ORT session setting that tells a model loaded
// from memory where its external data files are.
const externalDataFolder = "session.model_external_initializers_file_folder_path"

func configure(so *ortgo.SessionOptions, opts SessionOptions, level ortgo.GraphOptimizationLevel, provider string) error {
	if opts.Threads > 0 {
		if err := so.SetIntraOpNumThreads(opts.Threads); err != nil {
			return fmt.Errorf("setting %d intra-op threads: %w", opts.Threads, err)
		}
	}
	if opts.InterOpThreads > 0 {
		if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
			return fmt.Errorf("setting %d inter-op threads: %w", opts.InterOpThreads, err)
		}
		if opts.InterOpThreads > 1 {
			if err := so.SetExecutionMode(ortgo.ExecutionModeParallel); err != nil {
				return fmt.Errorf("setting parallel execution: %w", err)
			}
		}
	}
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		return fmt.Errorf("setting optimisation level %s: %w", opts.OptLevel, err)
	}
	if opts.NoMemPattern {
		if err := so.SetMemPattern(false); err != nil {
			return fmt.Errorf("turning the memory pattern off: %w", err)
		}
	}
	if opts.ProfilePrefix != "" {
		if err := so.EnableProfiling(opts.ProfilePrefix); err != nil {
			return fmt.Errorf("enabling profiling to %s: %w", opts.ProfilePrefix, err)
		}
	}
	config := opts.Config
	if opts.ExternalDataDir != "" {
		abs, err := filepath.Abs(opts.ExternalDataDir)
		if err != nil {
			return err
		}
		config = maps.Clone(config)
		if config == nil {
			config = map[string]string{}
		}
		config[externalDataFolder] = abs
	}
	keys := make([]string, 0, len(config))
	for k := range config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := so.AddSessionConfigEntry(k, config[k]); err != nil {
			return badinput.Errorf("session config %s=%s: %v", k, config[k], err)
		}
	}
	for _, lib := range opts.CustomOps {
		if err := registerCustomOps(so, lib); err != nil {
			return err
		}
	}
	if provider == ProviderCUDA {
		return appendCUDA(so, opts.DeviceID)
	}
	return nil
}

// appendCUDA adds the CUDA execution provider. onnxruntime_go exposes no
// list of the library's providers; ORT builds ship CUDA as a provider
// library beside libonnxruntime, so its absence is what a CPU-only build
// looks like, and any other failure is a broken CUDA setup.
func appendCUDA(so *ortgo.SessionOptions, device int) error {
	co, err := ortgo.NewCUDAProviderOptions()
	if err == nil {
		defer co.Destroy()
		err = co.Update(map[string]string{"device_id": strconv.Itoa(device)})
	}
	if err == nil {
		err = so.AppendExecutionProviderCUDA(co)
	}
	if err == nil {
		return nil
	}
	lib := LibraryPath()
	provider := filepath.Join(filepath.Dir(lib), cudaProviderLib)
	if !isFile(provider) {
		return badinput.Errorf("the ONNX Runtime library at %s has no CUDA execution provider (no %s beside it); use the cpu provider, or get a GPU build: download onnxruntime-linux-x64-gpu-<version>.tgz from https://github.com/microsoft/onnxruntime/releases and point %s (or %v) at its lib/ directory, where libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so sit beside the library", lib, cudaProviderLib, EnvVar, LibrarySetting)
	}
	return badinput.Errorf("enabling the CUDA execution provider (device %d) of %s failed: %v; check that the CUDA and cuDNN versions this ORT build wants are installed and on the library path, and that device %d exists", device, provider, unwrapORT(err), device)
}

const cudaProviderLib = "libonnxruntime_providers_cuda.so"

// unwrapORT strips onnxruntime_go's wrapping and ORT's source location and
// status code, leaving ORT's own sentence.
func unwrapORT(err error) error {
	for inner := errors.Unwrap(err); inner != nil; inner = errors.Unwrap(err) {
		err = inner
	}
	msg := err.Error()
	const marker = "[ONNXRuntimeError] : "
	i := strings.Index(msg, marker)
	if i < 0 {
		return err
	}
	rest := msg[i+len(marker):]
	// rest is "<code> : <CODE_NAME> : <message>".
	if parts := strings.SplitN(rest, " : ", 3); len(parts) == 3 {
		return errors.New(parts[2])
	}
	return errors.New(rest)
}

// Name is the model path, or "in-memory model".
func (s *Session) Name() string { return s.name }

// Provider is the execution provider the session was created for.
func (s *Session) Provider() string { return s.provider }

// Inputs describes the inputs a caller must feed, in the graph's order.
func (s *Session) Inputs() []TensorInfo { return slices.Clone(s.inputs) }

// Outputs describes the session's outputs, in the graph's order (or the
// order of SessionOptions.Outputs).
func (s *Session) Outputs() []TensorInfo { return slices.Clone(s.outputs) }

// Input returns the declared input of that name.
func (s *Session) Input(name string) (TensorInfo, bool) {
	i, ok := s.inIdx[name]
	if !ok {
		return TensorInfo{}, false
	}
	return s.inputs[i], true
}

// Output returns the declared output of that name.
func (s *Session) Output(name string) (TensorInfo, bool) {
	i, ok := s.outIdx[name]
	if !ok {
		return TensorInfo{}, false
	}
	return s.outputs[i], true
}

// Close releases the ORT session (and writes the profile, if enabled).
func (s *Session) Close() error {
	if s.das == nil {
		return nil
	}
	err := s.das.Destroy()
	s.das = nil
	return err
}

// Run feeds inputs by name and returns every output, allocated by ORT and
// copied into Go memory, in the order of Outputs. It is the convenient
// path for evaluation, where output shapes vary; a training step should
// use a Binding, which allocates nothing. The caller closes the outputs.
func (s *Session) Run(inputs map[string]Value) ([]Value, error) {
	if s.das == nil {
		return nil, errClosed
	}
	if len(s.inputs) == 0 {
		return nil, fmt.Errorf("%s has no inputs, which onnxruntime_go's Run cannot handle; run it through a Binding", s.name)
	}
	ins := make([]Value, len(s.inputs))
	var unknown []string
	for name, v := range inputs {
		i, ok := s.inIdx[name]
		if !ok {
			unknown = append(unknown, name)
			continue
		}
		ins[i] = v
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, s.unknownInput(unknown[0])
	}
	vals := make([]ortgo.Value, len(ins))
	for i, v := range ins {
		if v == nil {
			return nil, s.missingInput(i)
		}
		if err := checkValue("input", &s.inputs[i], v); err != nil {
			return nil, err
		}
		vals[i] = v.ortValue()
	}
	if err := s.checkSymbols(ins, nil); err != nil {
		return nil, err
	}
	result := make([]Value, len(s.outputs))
	outs := make([]ortgo.Value, len(s.outputs))
	fail := func(err error) ([]Value, error) {
		for i, o := range outs {
			switch {
			case result[i] != nil:
				result[i].Close()
			case o != nil && !reflect.ValueOf(o).IsNil():
				o.Destroy()
			}
		}
		return nil, err
	}
	for i, out := range s.outputs {
		if out.Shape != nil && len(out.Shape) == 0 {
			return fail(fmt.Errorf("output %q: %w", out.Name, ErrScalar))
		}
		if out.DType != onnx.Float16 && out.DType != onnx.BFloat16 {
			continue
		}
		// onnxruntime_go v1.27.0 copies ORT-allocated 16-bit float outputs
		// with one byte per element and fails, so those are preallocated
		// here from the declared shape.
		shape, err := s.outputShape(out, ins)
		if err != nil {
			return fail(err)
		}
		n, _ := numElements(shape)
		v, err := newTensor(make([]uint16, n), shape, out.DType)
		if err != nil {
			return fail(fmt.Errorf("output %q: %w", out.Name, err))
		}
		result[i], outs[i] = v, v.ortValue()
	}
	if err := s.das.Run(vals, outs); err != nil {
		return fail(fmt.Errorf("running %s: %w", s.name, unwrapORT(err)))
	}
	for i, o := range outs {
		if result[i] != nil {
			continue
		}
		v, err := fromORT(o)
		if err != nil {
			outs[i] = nil
			return fail(fmt.Errorf("output %q: %w", s.outputs[i].Name, err))
		}
		result[i] = v
	}
	return result, nil
}

// outputShape works out an output's shape from its declaration and the
// sizes the inputs give its symbolic dimensions.
func (s *Session) outputShape(out TensorInfo, ins []Value) ([]int64, error) {
	if out.Shape == nil {
		return nil, fmt.Errorf("output %q is %s with no declared shape; onnxruntime_go cannot return it from Session.Run: bind a preallocated tensor with a Binding", out.Name, out.DType)
	}
	shape := make([]int64, len(out.Shape))
	for k, d := range out.Shape {
		shape[k] = -1
		if fixed(d) {
			shape[k] = d.Value
		}
		for i := 0; shape[k] < 0 && d.Param != "" && i < len(s.inputs); i++ {
			for j, id := range s.inputs[i].Shape {
				if id.Param == d.Param {
					shape[k] = ins[i].dims()[j]
					break
				}
			}
		}
		if shape[k] < 0 {
			return nil, fmt.Errorf("output %q is %s %s and dim %d is not set by any input; onnxruntime_go cannot return it from Session.Run: bind a preallocated tensor with a Binding", out.Name, out.DType, out.Shape, k)
		}
	}
	return shape, nil
}

func (s *Session) unknownInput(name string) error {
	return fmt.Errorf("unknown input %q; the model's inputs are %s", name, describe(s.inputs))
}

func (s *Session) unknownOutput(name string) error {
	return fmt.Errorf("unknown output %q; the session's outputs are %s", name, describe(s.outputs))
}

func (s *Session) missingInput(i int) error {
	in := s.inputs[i]
	return fmt.Errorf("input %q (%s %s) is not bound", in.Name, in.DType, in.Shape)
}

// describe lists infos for an error message, shortened for big graphs.
func describe(infos []TensorInfo) string {
	const max = 8
	parts := make([]string, 0, max+1)
	for i, info := range infos {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(infos)-max))
			break
		}
		parts = append(parts, info.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
