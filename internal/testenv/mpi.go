package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Mpirun returns Open MPI's mpirun (installed by `make setup`), or skips.
func Mpirun(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("mpirun")
	if err != nil {
		missing(t, "mpirun not found: `make setup` installs Open MPI (openmpi-bin, libopenmpi-dev)")
	}
	return path
}

// MpirunArgs are mpirun's flags for n ranks on this machine: more ranks
// than cores allowed, no pinning (each rank runs its own ORT threads), the
// shared-memory transport without the kernel's cross-process copy (which
// containers often forbid), and root allowed where tests run as root.
func MpirunArgs(n int) []string {
	args := []string{"-np", strconv.Itoa(n), "--oversubscribe", "--bind-to", "none",
		"--mca", "btl_vader_single_copy_mechanism", "none"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-run-as-root")
	}
	return args
}
