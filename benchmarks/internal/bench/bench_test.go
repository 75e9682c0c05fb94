package bench

import (
	"math"
	"os/exec"
	"slices"
	"testing"
)

func TestQuantile(t *testing.T) {
	cases := []struct {
		v    []float64
		q    float64
		want float64
	}{
		{[]float64{3, 1, 2}, 0.5, 2},
		{[]float64{4, 1, 2, 3}, 0.5, 2.5},
		{[]float64{1, 2, 3, 4, 5}, 0.25, 2},
		{[]float64{1, 2}, 0.75, 1.75},
		{[]float64{7}, 0.9, 7},
	}
	for _, c := range cases {
		if got := Quantile(c.v, c.q); got != c.want {
			t.Errorf("Quantile(%v, %v) = %v, want %v", c.v, c.q, got, c.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median of nothing is not NaN")
	}
}

func TestSplitAndEnv(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"1b,7b", []string{"1b", "7b"}},
		{" export , ,lora,", []string{"export", "lora"}},
		{"", nil},
	}
	for _, c := range cases {
		if got := Split(c.in); !slices.Equal(got, c.want) {
			t.Errorf("Split(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	t.Setenv("BENCH_TEST_N", "12")
	t.Setenv("BENCH_TEST_BAD", "x")
	if EnvInt("BENCH_TEST_N", 3) != 12 || EnvInt("BENCH_TEST_BAD", 3) != 3 || EnvOr("BENCH_TEST_UNSET", "d") != "d" {
		t.Error("EnvInt/EnvOr do not read the environment")
	}
}

// A child's peak RSS comes from the kernel's accounting: dd with a 64 MB
// buffer reports at least that.
func TestChildPeakRSSMB(t *testing.T) {
	cmd := exec.Command("dd", "if=/dev/zero", "bs=64M", "count=1", "of=/dev/null")
	if err := cmd.Run(); err != nil {
		t.Skip("no dd:", err)
	}
	if mb := ChildPeakRSSMB(cmd.ProcessState); mb < 60 {
		t.Errorf("peak RSS %.1f MB, want at least 64", mb)
	}
	if PeakRSSMB() <= 0 || MemAvailableMB() <= 0 {
		t.Error("no VmHWM or MemAvailable in /proc")
	}
}
