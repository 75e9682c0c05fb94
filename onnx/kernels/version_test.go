package kernels

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// A kernel library that reports another op-set version than the Go code
// expects, or none, is refused with one bad-input line naming the library,
// both versions and how to rebuild it; one reporting the expected version
// is accepted. The libraries are built here from one-line C files with the
// system compiler, for both the fused-kernel and the bf16 library.
func TestLibraryVersionCheck(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc)")
	}
	dir := t.TempDir()
	build := func(name, src string) string {
		c, so := filepath.Join(dir, name+".c"), filepath.Join(dir, name+".so")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
			t.Fatalf("cc: %v\n%s", err, out)
		}
		return so
	}
	version := func(symbol, v string) string {
		return "const char *" + symbol + "(void) { return \"" + v + "\"; }\n"
	}
	kernelsFind := func(p string) (string, error) { return Resolve(p) }
	bf16Find := func(p string) (string, error) {
		t.Setenv(BF16EnvVar, p)
		return FindBF16()
	}
	for _, c := range []struct {
		name string
		find func(string) (string, error)
		src  string
		want string // "" accepted, else the whole error line
	}{
		{"kernels current", kernelsFind, version("MiguKernelsVersion", LibVersion), ""},
		{"kernels stale", kernelsFind, version("MiguKernelsVersion", "1"),
			"fused-kernel library LIB is op-set version 1, this migu needs version " + LibVersion + ": rebuild it with `make build` (scripts/kernels.sh)"},
		{"kernels newer", kernelsFind, version("MiguKernelsVersion", "99"),
			"fused-kernel library LIB is op-set version 99, this migu needs version " + LibVersion + ": rebuild it with `make build` (scripts/kernels.sh)"},
		{"kernels without a version", kernelsFind, "int migu_nothing;\n",
			"fused-kernel library LIB reports no op-set version (it exports no MiguKernelsVersion), this migu needs version " + LibVersion + ": rebuild it with `make build` (scripts/kernels.sh)"},
		{"bf16 library as the kernels", kernelsFind, version("MiguBF16Version", BF16LibVersion),
			"fused-kernel library LIB reports no op-set version (it exports no MiguKernelsVersion), this migu needs version " + LibVersion + ": rebuild it with `make build` (scripts/kernels.sh)"},
		{"bf16 current", bf16Find, version("MiguBF16Version", BF16LibVersion), ""},
		{"bf16 stale", bf16Find, version("MiguBF16Version", "1"),
			"bf16 library LIB is op-set version 1, this migu needs version " + BF16LibVersion + ": rebuild it with `make build` (scripts/bf16.sh, needs libdnnl-dev)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lib := build(strings.ReplaceAll(c.name, " ", "_"), c.src)
			got, err := c.find(lib)
			if c.want == "" {
				if err != nil || got != lib {
					t.Fatalf("got %q, %v; want %q accepted", got, err, lib)
				}
				return
			}
			want := strings.ReplaceAll(c.want, "LIB", lib)
			if err == nil || err.Error() != want || !badinput.Is(err) || got != "" {
				t.Fatalf("got %q, %v (bad input: %v)\nwant the bad-input error %q", got, err, badinput.Is(err), want)
			}
		})
	}
	// A file that is no library at all is bad input too.
	junk := filepath.Join(dir, "junk.so")
	if err := os.WriteFile(junk, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(junk); err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), junk) {
		t.Fatalf("a file that is no library: %v", err)
	}
}

// The libraries scripts/kernels.sh and scripts/bf16.sh build from this
// tree report the versions the Go code expects.
func TestBuiltLibrariesVersion(t *testing.T) {
	lib := testenv.Kernels(t)
	if _, err := Resolve(lib); err != nil {
		t.Fatal(err)
	}
	bf16 := testenv.BF16(t)
	t.Setenv(BF16EnvVar, bf16)
	if _, err := FindBF16(); err != nil {
		t.Fatal(err)
	}
}
