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
	return ParseCPUInfo(string(raw)).Name
}

// CPUInfo is what /proc/cpuinfo says of the first processor: its model
// name and the feature flags the kernel reports.
type CPUInfo struct {
	Name  string
	Flags map[string]bool
}

// ParseCPUInfo reads the first processor's "model name" and "flags" lines
// of /proc/cpuinfo's text; a missing name reads "unknown CPU", missing
// flags an empty set.
func ParseCPUInfo(text string) CPUInfo {
	ci := CPUInfo{Name: "unknown CPU", Flags: map[string]bool{}}
	var seenName, seenFlags bool
	for _, line := range strings.Split(text, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "model name":
			if !seenName {
				ci.Name, seenName = strings.TrimSpace(val), true
			}
		case "flags":
			if !seenFlags {
				for _, f := range strings.Fields(val) {
					ci.Flags[f] = true
				}
				seenFlags = true
			}
		}
	}
	return ci
}

// ReadCPUInfo parses this machine's /proc/cpuinfo.
func ReadCPUInfo() CPUInfo {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return CPUInfo{Name: "unknown CPU", Flags: map[string]bool{}}
	}
	return ParseCPUInfo(string(raw))
}

// MatMulFlags are the feature flags that decide how fast float32 and
// bfloat16 matrix products can run on x86: 256- and 512-bit vectors,
// AVX-512's bf16 dot products, and AMX's bf16 tile products.
var MatMulFlags = []string{"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}

// Features lists MatMulFlags as "flag yes|no", in that order.
func (ci CPUInfo) Features() string {
	parts := make([]string, len(MatMulFlags))
	for i, f := range MatMulFlags {
		parts[i] = f + " " + map[bool]string{true: "yes", false: "no"}[ci.Flags[f]]
	}
	return strings.Join(parts, ", ")
}

// BF16Path says which bfloat16 matrix-product hardware the flags offer,
// the best first: AMX tiles, AVX-512 BF16 dot products, or none (oneDNN
// then converts bf16 to float32 in software, which is usually no faster
// than float32).
func (ci CPUInfo) BF16Path() string {
	switch {
	case ci.Flags["amx_bf16"] && ci.Flags["amx_tile"]:
		return "AMX-BF16"
	case ci.Flags["avx512_bf16"]:
		return "AVX-512 BF16"
	default:
		return "none (no avx512_bf16 or amx_bf16: bf16 products are emulated)"
	}
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

// TorchConfig is one way of running PyTorch: interpreter, environment,
// thread count and precision.
type TorchConfig struct {
	Name    string   `json:"name"`
	Env     []string `json:"env"`
	Threads int      `json:"threads"`
	// Python is the interpreter with this torch; empty means the driver's
	// default (Debian's torch 1.13 through .venv).
	Python string `json:"python,omitempty"`
	// Precision is fp32, or bf16 for torch.autocast("cpu",
	// dtype=torch.bfloat16) around the forward pass; empty means fp32.
	Precision string `json:"precision,omitempty"`
	// Filled by a driver's search.
	Version string  `json:"torch_version,omitempty"`
	GFLOPS  float64 `json:"gflops"`
	StepMS  float64 `json:"step_ms"`
	Note    string  `json:"note,omitempty"`
}

// Prec is the configuration's precision, fp32 when unset.
func (c TorchConfig) Prec() string {
	if c.Precision == "" {
		return "fp32"
	}
	return c.Precision
}

// Label is the name with the torch version the search found, for
// results files.
func (c TorchConfig) Label() string {
	if c.Version == "" {
		return c.Name
	}
	return c.Name + " (torch " + c.Version + ")"
}

// BestTorch is the index of the fastest configuration of the given
// precision: the lowest StepMS among those that were timed (StepMS > 0),
// the first on ties; -1 when none of that precision was timed.
func BestTorch(cands []TorchConfig, precision string) int {
	best := -1
	for i, c := range cands {
		if c.Prec() != precision || c.StepMS <= 0 {
			continue
		}
		if best < 0 || c.StepMS < cands[best].StepMS {
			best = i
		}
	}
	return best
}

// Precisions are the precisions of the candidates, in order of first
// appearance.
func Precisions(cands []TorchConfig) []string {
	var out []string
	for _, c := range cands {
		if !slices.Contains(out, c.Prec()) {
			out = append(out, c.Prec())
		}
	}
	return out
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

// Torch2Candidates are PyPI's PyTorch 2.x (the venv that
// benchmarks/perf/torch2.sh makes, python its interpreter) in float32 and
// under bf16 autocast, each with the wheel's defaults and with OpenMP's
// threads pinned and spinning (the wheel bundles MKL, oneDNN and GNU
// OpenMP, so there is no BLAS to choose); none when python does not exist.
func Torch2Candidates(python string, threads int) []TorchConfig {
	if _, err := os.Stat(python); err != nil {
		return nil
	}
	n := fmt.Sprint(threads)
	var cands []TorchConfig
	for _, prec := range []string{"fp32", "bf16"} {
		name := "PyTorch 2.x " + prec
		if prec == "bf16" {
			name = "PyTorch 2.x bf16 autocast"
		}
		cands = append(cands,
			TorchConfig{Name: name + ", defaults", Python: python, Precision: prec, Threads: threads},
			TorchConfig{Name: name + ", OMP_WAIT_POLICY=ACTIVE, " + n + " threads", Python: python, Precision: prec, Threads: threads,
				Env: []string{"OMP_NUM_THREADS=" + n, "MKL_NUM_THREADS=" + n, "OMP_WAIT_POLICY=ACTIVE"}})
	}
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
