package bench

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

// Two processors of an AMX machine (only the first counts), an AVX-512
// BF16 one, one without bf16 instructions (this project's Ice Lake
// guest), and text without the fields.
func TestParseCPUInfo(t *testing.T) {
	const amx = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16

processor	: 1
model name	: Some Other CPU
flags		: fpu
`
	const zen4 = "model name\t: AMD EPYC 9654 96-Core Processor\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
	const icelake = "model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\nflags\t\t: fpu avx avx2 avx512f avx512dq avx512_vnni avx512_bitalg\n"
	cases := []struct {
		name, text, want, features, bf16 string
	}{
		{"amx", amx, "Intel(R) Xeon(R) Platinum 8480+", "avx2 yes, avx512f yes, avx512_bf16 yes, amx_bf16 yes, amx_tile yes", "AMX-BF16"},
		{"zen4", zen4, "AMD EPYC 9654 96-Core Processor", "avx2 yes, avx512f yes, avx512_bf16 yes, amx_bf16 no, amx_tile no", "AVX-512 BF16"},
		{"icelake", icelake, "Intel(R) Xeon(R) Processor @ 2.80GHz", "avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 no, amx_tile no", "none (no avx512_bf16 or amx_bf16: bf16 products are emulated)"},
		{"amx_bf16 without tiles", "flags: amx_bf16 avx512_bf16\n", "unknown CPU", "avx2 no, avx512f no, avx512_bf16 yes, amx_bf16 yes, amx_tile no", "AVX-512 BF16"},
		{"empty", "", "unknown CPU", "avx2 no, avx512f no, avx512_bf16 no, amx_bf16 no, amx_tile no", "none (no avx512_bf16 or amx_bf16: bf16 products are emulated)"},
	}
	for _, c := range cases {
		ci := ParseCPUInfo(c.text)
		if ci.Name != c.want || ci.Features() != c.features || ci.BF16Path() != c.bf16 {
			t.Errorf("%s: got %q / %q / %q, want %q / %q / %q", c.name, ci.Name, ci.Features(), ci.BF16Path(), c.want, c.features, c.bf16)
		}
	}
	if ParseCPUInfo(amx).Flags["fpu"] != true || len(ParseCPUInfo(amx).Flags) != 9 {
		t.Errorf("the second processor's flags leaked in: %v", ParseCPUInfo(amx).Flags)
	}
}

// The best configuration is chosen per precision, untimed ones (StepMS 0,
// e.g. left out for a reference BLAS) never win, ties go to the first.
func TestBestTorch(t *testing.T) {
	cands := []TorchConfig{
		{Name: "1.13 system BLAS", StepMS: 0, Note: "not trained"},
		{Name: "1.13 OpenBLAS", StepMS: 610},
		{Name: "2.x fp32", Precision: "fp32", StepMS: 540},
		{Name: "2.x fp32 pinned", Precision: "fp32", StepMS: 540},
		{Name: "2.x bf16", Precision: "bf16", StepMS: 700},
		{Name: "2.x bf16 pinned", Precision: "bf16", StepMS: 650},
	}
	cases := []struct {
		cands []TorchConfig
		prec  string
		want  int
	}{
		{cands, "fp32", 2},
		{cands, "bf16", 5},
		{cands, "fp16", -1},
		{cands[:2], "fp32", 1},
		{cands[:2], "bf16", -1},
		{cands[:1], "fp32", -1},
		{[]TorchConfig{{Precision: "bf16", StepMS: 5}, {StepMS: 9}, {Precision: "fp32", StepMS: 7}}, "fp32", 2},
	}
	for i, c := range cases {
		if got := BestTorch(c.cands, c.prec); got != c.want {
			t.Errorf("case %d: BestTorch(%s) = %d, want %d", i, c.prec, got, c.want)
		}
	}
	if got := Precisions(cands); !slices.Equal(got, []string{"fp32", "bf16"}) {
		t.Errorf("Precisions = %q", got)
	}
}

// PyTorch 2.x is offered only where its interpreter exists, in both
// precisions, and its configurations do not touch the BLAS path.
func TestTorch2Candidates(t *testing.T) {
	if c := Torch2Candidates(filepath.Join(t.TempDir(), "missing", "python"), 2); c != nil {
		t.Errorf("candidates without an interpreter: %v", c)
	}
	py := filepath.Join(t.TempDir(), "python")
	if err := os.WriteFile(py, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	c := Torch2Candidates(py, 2)
	if len(c) != 4 || !slices.Equal(Precisions(c), []string{"fp32", "bf16"}) {
		t.Fatalf("candidates: %+v", c)
	}
	for _, x := range c {
		if x.Python != py || x.Threads != 2 {
			t.Errorf("%s: python %q threads %d", x.Name, x.Python, x.Threads)
		}
		for _, e := range x.Env {
			if strings.HasPrefix(e, "LD_LIBRARY_PATH=") {
				t.Errorf("%s sets %s", x.Name, e)
			}
		}
	}
}
