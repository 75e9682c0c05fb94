//go:build !unix

package rundir

import "os"

// lockFile creates the lock file at path. Without flock the folder is not
// protected against a second run on this platform.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}
