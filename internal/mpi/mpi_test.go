package mpi

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// TestOutsideMpirun: without mpirun's environment Join does nothing.
func TestOutsideMpirun(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_SIZE", "")
	c, err := Join()
	if c != nil || err != nil {
		t.Fatalf("Join outside mpirun = %v, %v; want nil, nil", c, err)
	}
}

// TestSumUnderMpirun runs this test binary as three ranks: every rank adds
// values that differ by rank and must see the same sums, bit for bit.
func TestSumUnderMpirun(t *testing.T) {
	if Launched() {
		sumChild(t)
		return
	}
	mpirun := testenv.Mpirun(t)
	cmd := exec.Command(mpirun, append(testenv.MpirunArgs(3), os.Args[0], "-test.run=^TestSumUnderMpirun$", "-test.v")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mpirun: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "rank sums ok"); n != 3 {
		t.Fatalf("%d of 3 ranks reported their sums:\n%s", n, out)
	}
}

func sumChild(t *testing.T) {
	c, err := Join()
	if err != nil || c == nil {
		t.Fatalf("Join under mpirun: %v, %v", c, err)
	}
	defer c.Finalize()
	if c.Size() != 3 {
		t.Fatalf("size %d, want 3", c.Size())
	}
	r := float32(c.Rank())
	// 0.1 + 0.2 + 0.3 in float32 depends on the order; every rank must
	// still agree with rank 0's bits.
	f := []float32{0.1 * (r + 1), 1e8 * (r - 1), 3}
	if err := c.SumFloat32(f); err != nil {
		t.Fatal(err)
	}
	want := float32(0.1*1) + float32(0.1*2) + float32(0.1*3)
	if d := f[0] - want; d > 1e-6 || d < -1e-6 || f[1] != 0 || f[2] != 9 {
		t.Fatalf("rank %d: sums %v", c.Rank(), f)
	}
	d := []float64{float64(c.Rank())}
	if err := c.SumFloat64(d); err != nil || d[0] != 3 {
		t.Fatalf("rank %d: float64 sum %v, %v", c.Rank(), d, err)
	}
	all := []float32{f[0]}
	if err := c.SumFloat32(all); err != nil || all[0] != 3*f[0] {
		t.Fatalf("rank %d: ranks disagree on the bits of the sum (%v)", c.Rank(), all)
	}
	t.Logf("rank sums ok")
}
