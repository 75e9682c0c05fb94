// Package rundir guards the folder a run writes into (migu train,
// continual, prepare): it refuses a folder that is not the run's to write
// (the model folder itself, or a non-empty folder of something else),
// holds an exclusive lock on it for the whole run so that a second run on
// the same folder stops at once instead of interleaving its files with
// the first's, and removes the temporary files a killed run left behind.
package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// LockFile is the lock inside a run folder; while a run holds it, it
// contains the run's process id.
const LockFile = ".migu.lock"

// Options say what a run folder may be.
type Options struct {
	// Model is the model folder the run reads; the run folder may not be
	// it.
	Model string
	// Markers are names (files or folders) that runs of this kind write
	// into their folder. An existing non-empty folder holding none of
	// them belongs to something else and is refused.
	Markers []string
}

// Check refuses, without creating or changing anything, a run folder that
// is the model folder itself or an existing non-empty folder that is not
// a run folder of this kind.
func Check(dir string, o Options) error {
	if err := modeldir.CheckNotModel(o.Model, dir, "the run writes into a folder of its own"); err != nil {
		return err
	}
	if o.Model != "" {
		if rel, err := filepath.Rel(absPath(dir), absPath(o.Model)); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return badinput.Errorf("%v %s holds the model folder %s, which the run's output could replace; choose a folder of its own", badinput.Setting("out"), dir, o.Model)
		}
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return badinput.Wrap(err)
	}
	for _, e := range entries {
		if e.Name() == LockFile || isTemp(e.Name()) || slices.Contains(o.Markers, e.Name()) {
			return nil
		}
	}
	if len(entries) > 0 {
		return badinput.Errorf("%v %s is not empty and holds no run of this command (none of %s); remove it or choose another %[1]v",
			badinput.Setting("out"), dir, strings.Join(o.Markers, ", "))
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// Lock is a run folder held by this process.
type Lock struct {
	path string
	f    *os.File
}

// Open checks dir as Check does, creates it, takes its lock, and removes
// the temporary files and folders a killed run left in it. A folder
// another process holds is bad input naming that process. Release the
// lock when the run ends.
func Open(dir string, o Options) (*Lock, error) {
	if err := Check(dir, o); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockFile)
	f, err := lockFile(path)
	if errors.Is(err, errBusy) {
		return nil, badinput.Errorf("run folder %s is in use by %s; wait for it to finish or choose another %v", dir, holder(path), badinput.Setting("out"))
	}
	if err != nil {
		return nil, fmt.Errorf("locking run folder %s: %w", dir, err)
	}
	l := &Lock{path: path, f: f}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("locking run folder %s: %w", dir, err)
	}
	if err := RemoveTemp(dir); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// Release removes the lock file and unlocks the folder; safe on nil and
// more than once. The file goes while still locked, so that the next
// run's lock is always on the file at the lock's path (lockFile).
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
	l.f = nil
}

// errBusy says another process holds the lock.
var errBusy = errors.New("locked by another process")

// holder names the process in a lock file; the holder writes its id
// right after it takes the lock, so an empty file is read again briefly.
func holder(path string) string {
	for range 20 {
		raw, err := os.ReadFile(path)
		if err != nil {
			break
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 0 {
			return fmt.Sprintf("PID %d", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "another process"
}

// isTemp reports whether a name is a temporary file or folder of
// atomicfile, modeldir.Stage or a checkpoint in progress: ".NAME.tmp-…".
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// RemoveTemp removes the temporary files and folders under dir that
// writers abandoned when they were killed (a finished write renames its
// temporary into place). Only call it with the folder's lock held: then
// no other writer can be in the middle of one.
func RemoveTemp(dir string) error {
	var orphans []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && isTemp(d.Name()) {
			orphans = append(orphans, path)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range orphans {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}
