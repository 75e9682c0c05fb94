package rundir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

var markers = Options{Markers: []string{"run.json", "checkpoints"}}

// write makes files (and their folders) under dir.
func write(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Which folders Open accepts as a run folder, and the one line it gives
// for the others.
func TestOpenRefuses(t *testing.T) {
	root := t.TempDir()
	model := filepath.Join(root, "model")
	write(t, model, "model.onnx", "migu.json")
	os.Symlink(model, filepath.Join(root, "alias"))
	write(t, filepath.Join(root, "unrelated"), "notes.txt")
	write(t, filepath.Join(root, "earlier"), "run.json", "notes.txt")
	write(t, filepath.Join(root, "killed"), "checkpoints/.step-00000002.tmp-1/params.safetensors")
	os.MkdirAll(filepath.Join(root, "empty"), 0o755)
	cases := []struct {
		dir  string
		want string // "" accepts
	}{
		{"new/run", ""},
		{"empty", ""},
		{"earlier", ""},
		{"killed", ""},
		{"model", "is the model folder itself"},
		{".", "holds the model folder"},
		{"alias", "is the model folder itself"},
		{"unrelated", "is not empty and holds no run of this command (none of run.json, checkpoints)"},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			dir := filepath.Join(root, c.dir)
			l, err := Open(dir, Options{Model: model, Markers: markers.Markers})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				l.Release()
				return
			}
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want bad input with %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(dir, LockFile)); err == nil {
				t.Error("a refused folder got a lock file")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "new")); err != nil {
		t.Errorf("an accepted new folder was not created: %v", err)
	}
}

// A held folder is refused naming the holder's PID; released, it opens
// again, and the lock file is gone.
func TestLockIsExclusive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	first, err := Open(dir, markers)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, LockFile))
	if err != nil || strings.TrimSpace(string(raw)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this PID", raw, err)
	}
	_, err = Open(dir, markers)
	want := fmt.Sprintf("run folder %s is in use by PID %d", dir, os.Getpid())
	if !badinput.Is(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second Open: %v, want %q", err, want)
	}
	first.Release()
	first.Release()
	if _, err := os.Stat(filepath.Join(dir, LockFile)); !os.IsNotExist(err) {
		t.Fatalf("released: the lock file is still there (%v)", err)
	}
	second, err := Open(dir, markers)
	if err != nil {
		t.Fatalf("Open after Release: %v", err)
	}
	second.Release()
}

// Open removes the temporary files and folders of killed writers at any
// depth, and nothing else.
func TestOpenRemovesOrphans(t *testing.T) {
	dir := t.TempDir()
	orphans := []string{"checkpoints/.step-00000004.tmp-123/params.safetensors", ".run.json.tmp-9", ".model.tmp-77/model.onnx",
		"model/.model.onnx.data.tmp-5"}
	kept := []string{"checkpoints/step-00000002/params.safetensors", "run.json", "model/model.onnx", ".hidden", "notes.tmp-1"}
	write(t, dir, append(orphans, kept...)...)
	l, err := Open(dir, markers)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for _, o := range orphans {
		top := filepath.Join(dir, strings.SplitN(o, ".tmp-", 2)[0])
		matches, _ := filepath.Glob(top + ".tmp-*")
		if len(matches) > 0 {
			t.Errorf("orphan %s survived", matches[0])
		}
	}
	for _, k := range kept {
		if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
			t.Errorf("%s was removed: %v", k, err)
		}
	}
}
