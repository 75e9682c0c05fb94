//go:build unix

package rundir

import (
	"errors"
	"os"
	"syscall"
)

// lockFile opens (creating) the lock file at path and locks it
// exclusively with flock, without waiting: errBusy when another process
// holds it. The kernel drops the lock when the process dies, so a killed
// run never leaves its folder locked.
func lockFile(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, errBusy
			}
			return nil, err
		}
		// A holder removes the file as it releases (Release): if it did so
		// between our open and our lock, ours is a lock on a removed file
		// that guards nothing, so lock the file now at path instead.
		a, errA := f.Stat()
		b, errB := os.Stat(path)
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return f, nil
		}
		f.Close()
	}
}
