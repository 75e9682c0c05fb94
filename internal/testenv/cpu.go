package testenv

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the process's user + system CPU time: on a shared machine it
// varies less than wall time, so benchmarks report it beside ns/op.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReportCPU reports the CPU time since start (a CPUTime reading) per
// benchmark iteration, as cpu-ms/op.
func ReportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(CPUTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// TimeRuns benchmarks run, typically an ONNX Runtime binding's Run: three
// untimed warm-up runs (a session's first runs are slow), then the timed
// runs of b.Loop, reporting CPU time per run (ReportCPU) beside wall time.
// An error from run ends the benchmark.
func TimeRuns(b *testing.B, run func() error) {
	b.Helper()
	for range 3 {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := CPUTime()
	for b.Loop() {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	ReportCPU(b, cpu)
}
