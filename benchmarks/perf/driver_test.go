package main

import (
	"strings"
	"testing"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
)

// The results name the CPU's flags and PyTorch's best configuration of
// each precision, compute migu's ratio against the fp32 one, and show
// PyTorch's bf16 numbers with migu's bf16 cell marked as not available
// (no invented number).
func TestMarkdownAnchor(t *testing.T) {
	ss := func(ms float64, rss float64, warm []float64, loss ...float64) []*sample {
		return []*sample{{StepS: []float64{ms / 1000, ms / 1000}, Tokens: []int{512, 512}, Loss: loss, WarmupLoss: warm, PeakRSSMB: rss, Params: 1000}}
	}
	bf := bench.TorchConfig{Name: "PyTorch 2.x bf16 autocast, defaults", Precision: "bf16", Version: "2.15.0", StepMS: 300}
	rep := &report{CPU: "Test CPU", CPUFlags: "avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 no, amx_tile no", BF16Path: "none",
		Torch:     bench.TorchConfig{Name: "PyTorch 2.x fp32, defaults", Precision: "fp32", Version: "2.15.0", StepMS: 400},
		TorchBF16: &bf, TorchBF16GF: 90,
		Runs: []*run{{Model: "llama", Method: "full",
			Migu:      ss(500, 700, []float64{8.2}, 8.1, 8.0),
			Torch:     ss(400, 1000, []float64{8.2}, 8.1, 8.0),
			TorchBF16: ss(300, 900, []float64{8.21}, 8.11, 8.02)}}}
	md := markdown(rep, "x.json")
	for _, want := range []string{
		"CPU: Test CPU; flags (/proc/cpuinfo): avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 no, amx_tile no; bf16 matrix-product hardware: none.",
		"PyTorch fp32: **PyTorch 2.x fp32, defaults (torch 2.15.0)**",
		"PyTorch bf16: **PyTorch 2.x bf16 autocast, defaults (torch 2.15.0)**",
		"| 0.80x |", // migu 500 ms against the fp32 best's 400
		"| llama | full | off | not available yet | 300 (±0%) | 1707 | 0.75× | 900 | +0.0200 |",
		"| llama | full | off | torch bf16 | 8.2100 8.1100 8.0200 |",
		"| llama | full | off | migu fp32 | 8.2000 8.1000 8.0000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results lack %q:\n%s", want, md)
		}
	}
	rep.TorchBF16 = nil
	if md := markdown(rep, "x.json"); strings.Contains(md, "bf16 autocast") || strings.Contains(md, "not available yet") {
		t.Errorf("a bf16 section without a bf16 configuration:\n%s", md)
	}
}

// The eval results name the CPU and divide transformers' HFLM-way median
// pass by each side's: 10 s against 2 s is 5×.
func TestEvalMarkdownRatio(t *testing.T) {
	side := func(name string, s ...float64) *evalSide {
		return &evalSide{Name: name, Samples: []*evalSample{{PassS: s, PeakRSSMB: 500}}}
	}
	rep := &evalReport{CPU: "Test CPU", CPUFlags: "avx512f yes", Model: "smollm2", Threads: 2, Batch: 8, Items: 2, Requests: 8, Tokens: 1000,
		Torch: bench.TorchConfig{Name: "OpenBLAS openmp", Version: "1.13"},
		Sides: []*evalSide{side("migu (shared context, fused kernels)", 2, 3, 1), side("transformers (HFLM: whole requests, batch 8)", 10)}}
	md := evalMarkdown(rep, "x.json")
	for _, want := range []string{
		"CPU: Test CPU; flags (/proc/cpuinfo): avx512f yes. 2 threads on both sides.",
		"| migu (shared context, fused kernels) | 2.00 (±25%) | 500 | 5.00× | 500 |",
		"| transformers (HFLM: whole requests, batch 8) | 10.00 (±0%) | 100 | 1.00× | 500 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results lack %q:\n%s", want, md)
		}
	}
}
