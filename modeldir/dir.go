package modeldir

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/internal/badinput"
)

// Staging is a model folder being written: files go into a temporary folder
// beside the destination, which Commit renames into place, so an export
// that fails or is killed leaves no partial output folder.
type Staging struct {
	Dir  string // the temporary folder to write into
	dest string
	done bool
}

// Stage prepares to write the folder dest. dest must not exist, or be an
// empty folder, so an export never mixes old and new files.
func Stage(dest string) (*Staging, error) {
	if entries, err := os.ReadDir(dest); err == nil && len(entries) > 0 {
		return nil, badinput.Errorf("%s already exists and is not empty; remove it or choose another %v", dest, badinput.Setting("out"))
	} else if err != nil && !os.IsNotExist(err) {
		return nil, badinput.Wrap(err)
	}
	parent := filepath.Dir(filepath.Clean(dest))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".tmp-")
	if err != nil {
		return nil, err
	}
	return &Staging{Dir: tmp, dest: dest}, nil
}

// CheckNotModel refuses an output folder that is the model folder itself
// (the same path, or another name for the same folder), which a command
// writing there would damage; why says what the command writes instead.
func CheckNotModel(model, out, why string) error {
	if model == "" || out == "" {
		return nil
	}
	same := absPath(model) == absPath(out)
	if a, err := os.Stat(model); err == nil {
		if b, err := os.Stat(out); err == nil && os.SameFile(a, b) {
			same = true
		}
	}
	if same {
		return badinput.Errorf("%v %s is the model folder itself; %s", badinput.Setting("out"), out, why)
	}
	return nil
}

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}

// Commit moves the finished folder to its destination.
func (s *Staging) Commit() error {
	if s.done {
		return fmt.Errorf("%s: already committed or aborted", s.dest)
	}
	s.done = true
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		os.RemoveAll(s.Dir)
		return err
	}
	// An empty destination folder may exist; rename cannot replace it.
	os.Remove(s.dest)
	if err := os.Rename(s.Dir, s.dest); err != nil {
		os.RemoveAll(s.Dir)
		return fmt.Errorf("moving the finished model into %s: %w", s.dest, err)
	}
	return nil
}

// Abort deletes the temporary folder unless Commit ran; safe to defer.
func (s *Staging) Abort() {
	if !s.done {
		s.done = true
		os.RemoveAll(s.Dir)
	}
}
