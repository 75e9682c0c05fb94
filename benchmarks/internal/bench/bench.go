// Package bench holds what the benchmark drivers (benchmarks/perf and
// benchmarks/scale) share: the machine's description, peak resident set
// sizes, the ways of running PyTorch's BLAS, environment knobs and order
// statistics.
package bench

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
)

// CPUName is the first "model name" of /proc/cpuinfo.
func CPUName() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}

// Machine describes the machine for a results file: CPU, logical CPUs,
// memory, OS and architecture, Go version.
func Machine() string {
	mem := ""
	if kb := meminfoKB("MemTotal"); kb > 0 {
		mem = fmt.Sprintf(", %.0f GiB RAM", kb/1024/1024)
	}
	gover := ""
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		gover = ", " + strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, %d logical CPUs%s, %s/%s%s", CPUName(), runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, gover)
}

// MemAvailableMB is /proc/meminfo's MemAvailable: what a new process can
// take without pushing others out (0 where unknown).
func MemAvailableMB() float64 { return meminfoKB("MemAvailable") / 1024 }

func meminfoKB(field string) float64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb
		}
	}
	return 0
}

// PeakRSSMB reads this process's high-water resident set size (VmHWM).
func PeakRSSMB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb / 1024
		}
	}
	return 0
}

// ChildPeakRSSMB is the peak resident set size of a finished child
// process, as the kernel counted it (getrusage's ru_maxrss, the child's
// VmHWM): it measures any program, not just ones that report their own.
func ChildPeakRSSMB(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) / 1024
	}
	return 0
}

// TorchConfig is one way of running PyTorch: environment and thread count.
type TorchConfig struct {
	Name    string   `json:"name"`
	Env     []string `json:"env"`
	Threads int      `json:"threads"`
	// Filled by a driver's search.
	GFLOPS float64 `json:"gflops"`
	StepMS float64 `json:"step_ms"`
	Note   string  `json:"note,omitempty"`
}

// TorchCandidates are the configurations worth trying: the system's BLAS
// with PyTorch's defaults, and OpenBLAS (OpenMP or pthreads build, which
// benchmarks/perf/openblas.sh unpacks into .deps, relative to the working
// directory) with the thread count pinned and OpenMP's wait policy active
// or passive. Debian's PyTorch links the reference BLAS otherwise.
func TorchCandidates(threads int) []TorchConfig {
	n := fmt.Sprint(threads)
	cands := []TorchConfig{{Name: "system BLAS, defaults"}}
	for _, kind := range []string{"openmp", "pthread"} {
		dir, _ := filepath.Abs(filepath.Join(".deps", "openblas-"+kind))
		if _, err := os.Stat(filepath.Join(dir, "libblas.so.3")); err != nil {
			continue
		}
		for _, policy := range []string{"PASSIVE", "ACTIVE"} {
			cands = append(cands, TorchConfig{Name: fmt.Sprintf("OpenBLAS %s, OMP_WAIT_POLICY=%s, %s threads", kind, policy, n),
				Env: []string{"LD_LIBRARY_PATH=" + dir, "OMP_NUM_THREADS=" + n, "OPENBLAS_NUM_THREADS=" + n, "MKL_NUM_THREADS=" + n,
					"OMP_WAIT_POLICY=" + policy}, Threads: threads})
		}
	}
	cands = append(cands, TorchConfig{Name: "system BLAS, OMP_WAIT_POLICY=PASSIVE, " + n + " threads",
		Env: []string{"OMP_NUM_THREADS=" + n, "OMP_WAIT_POLICY=PASSIVE"}, Threads: threads})
	return cands
}

// EnvOr is the environment variable's value, or def when it is unset or
// empty.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// EnvInt is the environment variable as an integer, or def.
func EnvInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(EnvOr(name, ""), &v); err == nil {
		return v
	}
	return def
}

// Split cuts a comma-separated list, dropping blanks.
func Split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// LastLines is the last n lines of s, for error messages quoting a
// worker's output.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Median of v (NaN when empty).
func Median(v []float64) float64 { return Quantile(v, 0.5) }

// Quantile interpolates linearly between order statistics.
func Quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}
