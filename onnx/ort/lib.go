package ort

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/internal/badinput"
)

// EnvVar names the environment variable that points at the ONNX Runtime
// shared library when no explicit path is given.
const EnvVar = "ONNXRUNTIME_LIB"

// SetupDir is where `make setup` puts the library, relative to the
// repository root; Init looks for it above the executable and the working
// directory.
const SetupDir = ".deps/ort"

// apiVersion is the ORT C API version onnxruntime_go v1.27.0 asks for
// (ORT_API_VERSION in its onnxruntime_c_api.h); ORT x.y serves API versions
// up to y, so the library must be ORT 1.24 or newer.
const apiVersion = 24

// howToGet tells the user how to obtain a library; every discovery and load
// error ends with it.
var howToGet = badinput.Errorf("run `make setup` in the migu repository, or download an ONNX Runtime (>= 1.24) release archive from https://github.com/microsoft/onnxruntime/releases and set %s to its lib/%s (or pass %v)", EnvVar, libNames[0], LibrarySetting)

// LibrarySetting names InitOptions.LibraryPath in errors.
const LibrarySetting badinput.Setting = "ort_lib"

// InitOptions configures Init.
type InitOptions struct {
	// LibraryPath is an explicit library file, or a directory holding one
	// (the CLI's --ort-lib). Empty means: $ONNXRUNTIME_LIB, then the setup
	// location.
	LibraryPath string
}

var (
	initMu      sync.Mutex
	loadedPath  string
	loadedVer   string
	initialized bool
)

// Init finds the ONNX Runtime shared library, checks that it serves the C
// API version the binding needs and initialises the process-wide ORT
// environment. It may be called again: with no path or the same path it
// does nothing; asking for a different library once one is loaded is an
// error, since a process can hold only one.
//
// The library is looked for in order: opts.LibraryPath, then
// $ONNXRUNTIME_LIB, then .deps/ort/libonnxruntime.so.1 in the executable's
// directory or any directory above it, then in the working directory or any
// directory above it (so bin/migu, `go run` and `go test` all find the copy
// `make setup` made). A path that was asked for explicitly and does not
// exist is an error, not a reason to fall back to another library.
func Init(opts InitOptions) error {
	initMu.Lock()
	defer initMu.Unlock()
	if initialized {
		if opts.LibraryPath == "" {
			return nil
		}
		want, err := resolveLibrary(opts.LibraryPath, LibrarySetting)
		if err != nil {
			return err
		}
		if !samePath(want, loadedPath) {
			return badinput.Errorf("ONNX Runtime is already loaded from %s; cannot switch to %s in the same process", loadedPath, want)
		}
		return nil
	}
	exe, _ := os.Executable()
	if exe != "" {
		if p, err := filepath.EvalSymlinks(exe); err == nil {
			exe = p
		}
	}
	wd, _ := os.Getwd()
	path, err := findLibrary(search{
		explicit: opts.LibraryPath,
		env:      os.Getenv(EnvVar),
		exeDir:   dirOf(exe),
		workDir:  wd,
	})
	if err != nil {
		return err
	}
	version, err := probe(path)
	if err != nil {
		return err
	}
	ortgo.SetSharedLibraryPath(path)
	if err := ortgo.InitializeEnvironment(); err != nil {
		return fmt.Errorf("initialising ONNX Runtime %s from %s: %w", version, path, err)
	}
	if version == "" {
		version = ortgo.GetVersion()
	}
	loadedPath, loadedVer, initialized = path, version, true
	return nil
}

// ensureInit initialises ORT with the default discovery when Init was not
// called, so library users need not call it themselves.
func ensureInit() error {
	initMu.Lock()
	done := initialized
	initMu.Unlock()
	if done {
		return nil
	}
	return Init(InitOptions{})
}

// Version is the version string of the loaded ONNX Runtime (e.g. "1.30.0"),
// or "" before Init.
func Version() string {
	initMu.Lock()
	defer initMu.Unlock()
	return loadedVer
}

// LibraryPath is the absolute path of the loaded ONNX Runtime library, or ""
// before Init.
func LibraryPath() string {
	initMu.Lock()
	defer initMu.Unlock()
	return loadedPath
}

// search holds the inputs of library discovery, separated from the process
// so that tests can point it at temporary directories.
type search struct {
	explicit, env   string
	exeDir, workDir string
}

// libNames are the file names looked for inside a directory given as the
// library path; the first is also the name of the setup location's file.
var libNames = func() []string {
	if runtime.GOOS == "darwin" {
		return []string{"libonnxruntime.dylib"}
	}
	return []string{"libonnxruntime.so.1", "libonnxruntime.so"}
}()

// findLibrary returns the absolute path of the library to load, following
// the order documented on Init.
func findLibrary(s search) (string, error) {
	if s.explicit != "" {
		return resolveLibrary(s.explicit, LibrarySetting)
	}
	if s.env != "" {
		return resolveLibrary(s.env, "$"+EnvVar)
	}
	rel := filepath.Join(SetupDir, libNames[0])
	var roots []string
	for _, start := range []string{s.exeDir, s.workDir} {
		if start == "" || slices.Contains(roots, start) {
			continue
		}
		roots = append(roots, start)
		for d := start; ; {
			p := filepath.Join(d, rel)
			if isFile(p) {
				return abs(p), nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	where := make([]string, len(roots))
	for i, r := range roots {
		where[i] = r + " or any directory above it"
	}
	if len(where) == 0 {
		where = []string{"any directory (neither the executable's nor the working directory is known)"}
	}
	return "", badinput.Errorf("ONNX Runtime library not found: %v not given, $%s not set, and no %s in %s; %v", LibrarySetting, EnvVar, rel, strings.Join(where, ", nor in "), howToGet)
}

// resolveLibrary turns a path given by the user (a file, or a directory
// holding the library or a lib/ folder with it) into an absolute file path.
func resolveLibrary(p string, from any) (string, error) {
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", badinput.Errorf("ONNX Runtime library %s (from %s) does not exist; %s", p, from, howToGet)
	}
	if err != nil {
		return "", badinput.Errorf("ONNX Runtime library %s (from %s): %v", p, from, err)
	}
	if !st.IsDir() {
		return abs(p), nil
	}
	var tried []string
	for _, dir := range []string{p, filepath.Join(p, "lib")} {
		for _, name := range libNames {
			c := filepath.Join(dir, name)
			if isFile(c) {
				return abs(c), nil
			}
			tried = append(tried, c)
		}
	}
	return "", badinput.Errorf("ONNX Runtime library not found in directory %s (from %s): looked for %s; %s", p, from, strings.Join(tried, ", "), howToGet)
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

func dirOf(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Dir(p)
}

// samePath reports whether two paths name the same file, following links.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}
