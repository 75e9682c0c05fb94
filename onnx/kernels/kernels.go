// Package kernels is migu's fused-kernel library for ONNX Runtime: C
// kernels (csrc/migu_kernels.c, built by `make build` into
// bin/libmigu_kernels.so with scripts/kernels.sh) registered into a stock
// ORT session as custom operators of the domain ai.migu (onnx.DomainMigu),
// and the graph rewrites that use them (Fuse applies them all).
//
// What is fused, each forward and backward:
//   - RMSNorm (fuse.go): one pass per row, saving the row's inverse RMS
//     for the backward, which gives dX and dW in one pass (dW from
//     per-block partial sums added in a fixed order);
//   - LayerNorm (fuse_layernorm.go): ONNX's LayerNormalization, saving
//     each row's mean and inverse deviation; the backward gives dX, dW, dB;
//   - the activations (fuse_act.go): llama's SwiGLU gate and GELU in its
//     erf (roberta) and tanh (t5's gated-gelu) forms, one elementwise pass
//     each, the backward recomputing sigmoid, erf or tanh from the inputs;
//   - llama's rotary embedding (fuse_rotary.go);
//   - attention's softmax over the last axis (fuse_loss.go), whose backward
//     is one pass instead of four standard ops over the scores;
//   - the cross-entropy's pick of one log-probability per row
//     (fuse_loss.go): max, log-sum-exp and pick in one pass, the [N, V]
//     log-probabilities never stored, the backward recomputing the softmax
//     from the saved log-sum-exp;
//   - MIGU's magnitude tap (Σ|y| per output column, masked or not, without
//     materialising |y|), used with train.GraphOptions.FusedTaps, which
//     the trainer sets whenever it loads this library; a tap of an
//     activation's input goes into the activation kernel, which reads that
//     input anyway (FuseActivationTaps: SwiGLUTaps, GeluTaps);
//   - in the backward pass only (the trainer rewrites the differentiated
//     graph): the gradient of Gather, an embedding table's, as
//     ScatterAddRows, with a tied table's Sum folded in (FuseScatterAdd),
//     and the Sum adding a residual's gradient to a norm's dX, folded into
//     RMSNormGrad or LayerNormGrad (FuseResidualGrads).
//
// The standard-op formulations these replace stay in the exporters and in
// package migu; both give the same numbers to float32 rounding, and a
// fused graph is built only when the library is found and loaded.
//
// bfloat16 matrix products (MatMulBF16, --precision bf16) live in a library
// of their own that needs oneDNN (bf16.go, csrc/migu_bf16.c).
//
// Switching it off: MIGU_KERNELS=off (or train.Config.Kernels "off") keeps
// every graph in standard ONNX operators; MIGU_KERNELS=/path/lib.so picks
// a library explicitly.
package kernels

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx/ort"
)

// EnvVar switches the fused kernels: "off" (or "0") turns them off, a path
// names the library to load; unset, Find looks for the built library.
const EnvVar = "MIGU_KERNELS"

// LibName is the library's file name; `make build` puts it in bin/ beside
// the migu binary.
const LibName = "libmigu_kernels.so"

// Off is the value of EnvVar (and of train.Config.Kernels) that turns the
// fused kernels off.
const Off = "off"

// Find returns the kernel library to load, or "" when the kernels are
// switched off or no built library is found (graphs then use standard
// operators only). The order: $MIGU_KERNELS, then LibName beside the
// executable, then bin/LibName in the working directory or any directory
// above it (so `go test` finds what `make build` made).
func Find() (string, error) {
	return Resolve(os.Getenv(EnvVar))
}

// Resolve is Find with the setting given: "" searches, "off" or "0" turns
// the kernels off, anything else is the library's path, which must exist.
// A library found or named that reports another op-set version than
// LibVersion is refused (a bad-input error), not skipped.
func Resolve(setting string) (string, error) {
	switch strings.ToLower(setting) {
	case Off, "0", "false":
		return "", nil
	case "":
	default:
		st, err := os.Stat(setting)
		if err != nil || st.IsDir() {
			return "", badinput.Errorf("fused-kernel library %s (from $%s) does not exist; build it with `make build` (scripts/kernels.sh), or set %s=off", setting, EnvVar, EnvVar)
		}
		return checked(abs(setting), kernelsLib)
	}
	if lib := search(LibName); lib != "" {
		return checked(lib, kernelsLib)
	}
	return "", nil
}

// library is one of migu's kernel libraries as the loader checks it: what
// it is called in errors, the function reporting its op-set version, the
// version this Go code expects, and how to rebuild it.
type library struct {
	what, symbol, version, rebuild string
}

var (
	kernelsLib = library{"fused-kernel library", "MiguKernelsVersion", LibVersion, "`make build` (scripts/kernels.sh)"}
	bf16Lib    = library{"bf16 library", "MiguBF16Version", BF16LibVersion, "`make build` (scripts/bf16.sh, needs libdnnl-dev)"}
)

// checked returns path when the library there reports the op-set version
// l expects, else a bad-input error in one line naming the library, both
// versions and how to rebuild it.
func checked(path string, l library) (string, error) {
	got, found, err := ort.LibraryString(path, l.symbol)
	if err != nil {
		return "", err
	}
	if !found {
		return "", badinput.Errorf("%s %s reports no op-set version (it exports no %s), this migu needs version %s: rebuild it with %s", l.what, path, l.symbol, l.version, l.rebuild)
	}
	if got != l.version {
		return "", badinput.Errorf("%s %s is op-set version %s, this migu needs version %s: rebuild it with %s", l.what, path, got, l.version, l.rebuild)
	}
	return path, nil
}

// search looks for the library file lib beside the executable, then in
// bin/ of the working directory or any directory above it; "" when absent.
func search(lib string) string {
	var starts []string
	if exe, err := os.Executable(); err == nil {
		if p, err := filepath.EvalSymlinks(exe); err == nil {
			exe = p
		}
		if p := filepath.Join(filepath.Dir(exe), lib); isFile(p) {
			return abs(p)
		}
		starts = append(starts, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, start := range starts {
		for d := start; ; d = filepath.Dir(d) {
			if p := filepath.Join(d, "bin", lib); isFile(p) {
				return abs(p)
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
