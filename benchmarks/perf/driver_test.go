package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
)

// The results name the CPU's flags and PyTorch's best configuration of
// each precision, compute migu's ratio against the fp32 one, and fill the
// bf16 table from whichever bf16 side ran: migu's bf16 numbers and its
// product path, or the reason it did not run (no invented number), and
// PyTorch's autocast numbers.
func TestMarkdownAnchor(t *testing.T) {
	ss := func(ms float64, rss float64, path string, warm []float64, loss ...float64) []*sample {
		return []*sample{{StepS: []float64{ms / 1000, ms / 1000}, Tokens: []int{512, 512}, Loss: loss, WarmupLoss: warm, PeakRSSMB: rss, Params: 1000, BF16Path: path}}
	}
	const path = "f32: float32 products of the bf16-rounded operands (no AMX-BF16 or AVX512-BF16 units)"
	bf := bench.TorchConfig{Name: "PyTorch 2.x bf16 autocast, defaults", Precision: "bf16", Version: "2.15.0", StepMS: 300}
	const noLib = "no bf16 library: install libdnnl-dev and run `make build` (scripts/bf16.sh builds bin/libmigu_bf16.so)"
	common := []string{
		"CPU: Test CPU; flags (/proc/cpuinfo): avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 no, amx_tile no; bf16 matrix-product hardware: none.",
		"PyTorch fp32: **PyTorch 2.x fp32, defaults (torch 2.15.0)**",
		"| 0.80x |", // migu 500 ms against the fp32 best's 400
	}
	const miguCurve = "| llama | full | off | migu fp32 | 8.2000 8.1000 8.0000 |"
	for _, c := range []struct {
		name       string
		torchBF16  bool
		lib, note  string
		miguBF16   bool
		want, lack []string
	}{
		{name: "both sides", torchBF16: true, lib: "/x/bin/libmigu_bf16.so", miguBF16: true, want: []string{
			"PyTorch bf16: **PyTorch 2.x bf16 autocast, defaults (torch 2.15.0)**",
			"MatMulBF16 (libmigu_bf16.so)",
			"its products took this path: **" + path + "**",
			// migu bf16 750 ms: 683 tokens/s, 0.40x PyTorch bf16's 300 ms, 1.50× its own fp32 500 ms.
			"| llama | full | off | 750 (±0%) | 683 | 0.40x | 1.50× | 800 | -0.0100 | 300 (±0%) | 1707 | 0.75× | 900 | +0.0200 |",
			"| llama | full | off | migu bf16 | 8.2000 8.1000 7.9900 |", miguCurve,
			"| llama | full | off | torch bf16 | 8.2100 8.1100 8.0200 |",
		}, lack: []string{"not available", "did not run"}},
		{name: "no bf16 library", torchBF16: true, note: noLib, want: []string{
			"migu bf16 did not run: " + noLib, miguCurve,
			"| llama | full | off | " + noLib + " | — | — | — | — | — | 300 (±0%) | 1707 | 0.75× | 900 | +0.0200 |",
		}, lack: []string{"| migu bf16 |", "its products took"}},
		{name: "no PyTorch 2.x", lib: "/x/bin/libmigu_bf16.so", miguBF16: true, want: []string{
			"### bf16 (PyTorch: none)", miguCurve,
			"| llama | full | off | 750 (±0%) | 683 | — | 1.50× | 800 | -0.0100 | — | — | — | — | — |",
		}, lack: []string{"| torch bf16 |"}},
		{name: "fp32 only", lack: []string{"### bf16", "bf16 autocast", "migu bf16"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &run{Model: "llama", Method: "full",
				Migu:  ss(500, 700, "", []float64{8.2}, 8.1, 8.0),
				Torch: ss(400, 1000, "", []float64{8.2}, 8.1, 8.0)}
			rep := &report{CPU: "Test CPU", CPUFlags: "avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 no, amx_tile no", BF16Path: "none",
				Torch:       bench.TorchConfig{Name: "PyTorch 2.x fp32, defaults", Precision: "fp32", Version: "2.15.0", StepMS: 400},
				MiguBF16Lib: c.lib, MiguBF16Note: c.note, Runs: []*run{r}}
			if c.torchBF16 {
				rep.TorchBF16, rep.TorchBF16GF = &bf, 90
				r.TorchBF16 = ss(300, 900, "", []float64{8.21}, 8.11, 8.02)
			}
			if c.miguBF16 {
				r.MiguBF16 = ss(750, 800, path, []float64{8.2}, 8.1, 7.99)
			}
			md := markdown(rep, "x.json")
			for _, want := range append(slices.Clone(common), c.want...) {
				if !strings.Contains(md, want) {
					t.Errorf("results lack %q:\n%s", want, md)
				}
			}
			for _, lack := range c.lack {
				if strings.Contains(md, lack) {
					t.Errorf("results hold %q:\n%s", lack, md)
				}
			}
		})
	}
}

// migu's bf16 configurations run only when bf16 is asked for, on the CPU,
// with a library found; otherwise the reason is what the table prints.
func TestMiguBF16(t *testing.T) {
	found := func() (string, error) { return "/r/bin/libmigu_bf16.so", nil }
	none := func() (string, error) { return "", nil }
	bad := func() (string, error) { return "", errors.New("bf16 library /x.so (from $MIGU_BF16) does not exist") }
	for _, c := range []struct {
		name, precs, provider string
		find                  func() (string, error)
		lib, note             string
	}{
		{"library built", "fp32,bf16", "cpu", found, "/r/bin/libmigu_bf16.so", ""},
		{"provider unset", "bf16,fp32", "", found, "/r/bin/libmigu_bf16.so", ""},
		{"fp32 only", "fp32", "cpu", found, "", ""},
		{"no library", "fp32,bf16", "cpu", none, "", "no bf16 library: install libdnnl-dev and run `make build` (scripts/bf16.sh builds bin/libmigu_bf16.so)"},
		{"MIGU_BF16 names no file", "fp32,bf16", "cpu", bad, "", "no usable bf16 library: bf16 library /x.so (from $MIGU_BF16) does not exist"},
		{"cuda", "fp32,bf16", "cuda", found, "", "bf16 products run on the CPU provider only, not cuda"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lib, note := miguBF16(bench.Split(c.precs), c.provider, c.find)
			if lib != c.lib || note != c.note {
				t.Errorf("miguBF16 = %q, %q; want %q, %q", lib, note, c.lib, c.note)
			}
		})
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

// The update table splits the full fine-tuning step: each side's update
// and its share, the bytes migu's AdamW pass streams per second, and the
// MFU without the update and its bound; LoRA rows and workers that did not
// report an update stay out of it.
func TestUpdateTable(t *testing.T) {
	step := func(stepMS, updateMS, gflops float64) []*sample {
		return []*sample{{StepS: []float64{stepMS / 1000, stepMS / 1000}, UpdateS: []float64{updateMS / 1000, updateMS / 1000},
			Tokens: []int{500, 500}, Params: 1e6, Trainable: 1e6, GFLOPS: gflops}}
	}
	// 6 · 1e6 parameters · 500 tokens = 3 GFLOP: 10 ms at 300 GFLOP/s.
	full := &run{Model: "llama", Method: "full", Migu: step(20, 3, 300), Torch: step(25, 10, 0)}
	lora := &run{Model: "llama", Method: "lora", MIGU: true, Migu: step(10, 2, 300), Torch: step(12, 3, 0)}
	quiet := &run{Model: "t5", Method: "full", Migu: step(30, 0, 300), Torch: step(40, 0, 0)}
	var b strings.Builder
	updateTable(&b, &report{}, []*run{full, lora, quiet})
	md := b.String()
	// 28 B × 1e6 in 3 ms: 9.3 GB/s; MFU 10/20, 10/17, 10/(10+3).
	if want := "| llama | off | 20 | 3.0 (15%) | 9.3 | 10.0 (40%) | 50% | 59% | 77% |"; !strings.Contains(md, want) {
		t.Errorf("update table lacks %q:\n%s", want, md)
	}
	if n := strings.Count(md, "\n| llama") + strings.Count(md, "\n| t5"); n != 1 {
		t.Errorf("update table has %d rows, want only the fp32 full one that reported an update:\n%s", n, md)
	}
	b.Reset()
	updateTable(&b, &report{}, []*run{quiet})
	if b.Len() != 0 {
		t.Errorf("update table without any update: %q, want nothing", b.String())
	}
}
