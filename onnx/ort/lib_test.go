package ort

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// Failed and repeated Init calls change process-global state in
// onnxruntime_go, so they run in a child: the test binary re-executed with
// childEnv set, which calls Init once per path in childLibs (separated by
// the list separator; an empty entry means no explicit path) and prints
// one line per call.
const (
	childEnv  = "MIGU_ORT_TEST_CHILD"
	childLibs = "MIGU_ORT_TEST_LIBS"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		for _, lib := range strings.Split(os.Getenv(childLibs), string(os.PathListSeparator)) {
			if err := Init(InitOptions{LibraryPath: lib}); err != nil {
				fmt.Printf("error (bad input %v): %v\n", badinput.Is(err), err)
				continue
			}
			fmt.Printf("ok %s %s\n", Version(), LibraryPath())
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs Init in a fresh process in dir, with $ONNXRUNTIME_LIB set
// to env (unset when empty), and returns its output lines.
func runChild(t *testing.T, dir, env string, libs ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, EnvVar+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"=1", childLibs+"="+strings.Join(libs, string(os.PathListSeparator)))
	if env != "" {
		cmd.Env = append(cmd.Env, EnvVar+"="+env)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "error ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != len(libs) {
		t.Fatalf("child printed %d results for %d Init calls:\n%s", len(lines), len(libs), out)
	}
	return lines
}

func touch(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not really a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFindLibrary(t *testing.T) {
	tmp := t.TempDir()
	setupRel := filepath.Join(SetupDir, libNames[0])
	// repo/ has the setup location; bin/ and a/b/ sit below it.
	repo := filepath.Join(tmp, "repo")
	setupLib := touch(t, filepath.Join(repo, setupRel))
	bin := filepath.Join(repo, "bin")
	deep := filepath.Join(repo, "a", "b")
	os.MkdirAll(bin, 0o755)
	os.MkdirAll(deep, 0o755)
	// other/ has its own setup location, found from its working directory.
	otherLib := touch(t, filepath.Join(tmp, "other", setupRel))
	otherWD := filepath.Join(tmp, "other", "pkg")
	os.MkdirAll(otherWD, 0o755)
	explicit := touch(t, filepath.Join(tmp, "explicit", "libonnxruntime.so.1"))
	fromEnv := touch(t, filepath.Join(tmp, "env", "libonnxruntime.so.1"))
	release := filepath.Join(tmp, "onnxruntime-linux-x64-1.30.0")
	releaseLib := touch(t, filepath.Join(release, "lib", libNames[0]))
	empty := filepath.Join(tmp, "empty")
	os.MkdirAll(empty, 0o755)

	tests := []struct {
		name    string
		s       search
		want    string
		wantErr []string
	}{
		{"explicit beats env and setup", search{explicit: explicit, env: fromEnv, exeDir: bin, workDir: deep}, explicit, nil},
		{"env beats setup", search{env: fromEnv, exeDir: bin, workDir: deep}, fromEnv, nil},
		{"setup above the executable", search{exeDir: bin, workDir: empty}, setupLib, nil},
		{"executable before working directory", search{exeDir: bin, workDir: otherWD}, setupLib, nil},
		{"setup above the working directory", search{exeDir: empty, workDir: deep}, setupLib, nil},
		{"working directory of another checkout", search{exeDir: empty, workDir: otherWD}, otherLib, nil},
		{"release directory", search{explicit: release}, releaseLib, nil},
		{"explicit path missing", search{explicit: filepath.Join(tmp, "nope.so"), env: fromEnv, exeDir: bin},
			"", []string{filepath.Join(tmp, "nope.so"), "(from ort_lib) does not exist", "make setup", EnvVar}},
		{"env path missing", search{env: filepath.Join(tmp, "gone.so"), exeDir: bin},
			"", []string{filepath.Join(tmp, "gone.so"), "(from $" + EnvVar + ")"}},
		{"directory without a library", search{explicit: empty},
			"", []string{filepath.Join(empty, libNames[0]), filepath.Join(empty, "lib", libNames[0])}},
		{"nothing anywhere", search{exeDir: empty, workDir: filepath.Join(tmp, "explicit")},
			"", []string{"ort_lib not given", "$" + EnvVar + " not set", setupRel, empty + " or any directory above it", filepath.Join(tmp, "explicit") + " or any directory above it", "make setup", "github.com/microsoft/onnxruntime/releases"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findLibrary(tt.s)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %q, want an error", got)
			}
			if !badinput.Is(err) {
				t.Errorf("error is not marked as bad input: %v", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

// fakeOldORT compiles a library that exports OrtGetApiBase like ORT 1.10
// would: it reports its version and has no API version 24.
func fakeOldORT(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build a fake old ORT")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "old.c")
	lib := filepath.Join(dir, "libonnxruntime.so.1")
	code := `
static const void *get_api(unsigned v) { return v <= 10 ? (const void *)1 : 0; }
static const char *version(void) { return "1.10.0"; }
static struct { const void *(*a)(unsigned); const char *(*b)(void); } base = { get_api, version };
const void *OrtGetApiBase(void) { return &base; }
`
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, src).CombinedOutput(); err != nil {
		t.Skipf("cannot build a fake old ORT: %v\n%s", err, out)
	}
	return lib
}

func TestInitErrors(t *testing.T) {
	lib := testenv.ORTLib(t)
	notLib := touch(t, filepath.Join(t.TempDir(), "libonnxruntime.so.1"))
	tests := []struct {
		name string
		lib  func(t *testing.T) string
		want []string
	}{
		{"not a shared library", func(*testing.T) string { return notLib },
			[]string{"bad input true", "cannot load ONNX Runtime library " + notLib, "make setup"}},
		{"shared library that is not ORT", func(t *testing.T) string {
			const libm = "/lib/x86_64-linux-gnu/libm.so.6"
			if _, err := os.Stat(libm); err != nil {
				t.Skip("no", libm)
			}
			return libm
		}, []string{"bad input true", "/lib/x86_64-linux-gnu/libm.so.6 is not an ONNX Runtime library"}},
		{"ORT too old", fakeOldORT,
			[]string{"bad input true", "(version 1.10.0) is too old", "C API version 24", "ONNX Runtime 1.24 or newer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := tt.lib(t)
			// The failed Init must leave the process able to load the
			// real library afterwards.
			got := runChild(t, t.TempDir(), "", bad, lib)
			for _, w := range tt.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("Init(%s) = %q\nwant it to mention %q", bad, got[0], w)
				}
			}
			if !strings.HasPrefix(got[1], "ok ") {
				t.Errorf("Init of the real library after a failure: %s", got[1])
			}
		})
	}
}

func TestInitDiscoveryAndReuse(t *testing.T) {
	lib := testenv.ORTLib(t)
	setupLib := filepath.Join(testenv.Root(), SetupDir, libNames[0])
	empty := t.TempDir()
	tests := []struct {
		name string
		dir  string
		env  string
		libs []string
		want []string
	}{
		{"setup location from a package directory", filepath.Join(testenv.Root(), "onnx", "ort"), "", []string{""},
			[]string{"ok "}},
		{"env var", empty, lib, []string{""}, []string{"ok " + "*" + abs(lib)}},
		{"nothing found", empty, "", []string{""},
			[]string{"error (bad input true): ONNX Runtime library not found"}},
		{"second Init with no path or the same path", empty, "", []string{lib, "", lib},
			[]string{"ok ", "ok ", "ok "}},
		{"second Init with another library", empty, "", []string{lib, "/lib/x86_64-linux-gnu/libm.so.6"},
			[]string{"ok ", "error (bad input true): ONNX Runtime is already loaded from " + abs(lib)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "setup location from a package directory" && !isFile(setupLib) {
				t.Skip("no library at the setup location", setupLib)
			}
			got := runChild(t, tt.dir, tt.env, tt.libs...)
			for i, w := range tt.want {
				prefix, suffix, wild := strings.Cut(w, "*")
				if !strings.HasPrefix(got[i], prefix) || (wild && !strings.HasSuffix(got[i], suffix)) {
					t.Errorf("Init #%d = %q, want %q", i+1, got[i], w)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	initORT(t)
	v := Version()
	if v == "" || !strings.HasPrefix(v, "1.") {
		t.Errorf("Version() = %q", v)
	}
	if p := LibraryPath(); !filepath.IsAbs(p) || !isFile(p) {
		t.Errorf("LibraryPath() = %q", p)
	}
}
