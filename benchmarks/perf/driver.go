package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/train"
)

// run is one (model, method, MIGU) configuration's samples on both sides.
type run struct {
	Model  string    `json:"model"`
	Method string    `json:"method"`
	MIGU   bool      `json:"migu"`
	Migu   []*sample `json:"migu_samples"`
	Torch  []*sample `json:"torch_samples"`
	// TorchBF16 are PyTorch's best bf16 autocast configuration's samples.
	TorchBF16 []*sample `json:"torch_bf16_samples,omitempty"`
	// MiguBF16 are migu's samples with bf16 weight products
	// (--precision bf16).
	MiguBF16 []*sample `json:"migu_bf16_samples,omitempty"`
}

// report is results.json.
type report struct {
	Date      string            `json:"date"`
	Machine   string            `json:"machine"`
	CPU       string            `json:"cpu"`
	CPUFlags  string            `json:"cpu_flags"`
	BF16Path  string            `json:"bf16_hardware"`
	Command   string            `json:"command"`
	Threads   int               `json:"threads"`
	Batch     int               `json:"batch"`
	Seq       int               `json:"seq"`
	Provider  string            `json:"provider"`
	ORTGFLOPS float64           `json:"ort_matmul_gflops"`
	TorchGF   float64           `json:"torch_matmul_gflops"`
	Torch     bench.TorchConfig `json:"torch_config"`
	// TorchBF16 is PyTorch's best bf16 autocast configuration; nil when
	// none ran (no PyTorch 2.x, or bf16 not among BENCH_PRECISIONS).
	TorchBF16   *bench.TorchConfig `json:"torch_bf16_config,omitempty"`
	TorchBF16GF float64            `json:"torch_bf16_matmul_gflops,omitempty"`
	// MiguBF16Lib is the bf16 library migu's bf16 runs loaded; "" when
	// they did not run, and MiguBF16Note then says why ("" too when bf16
	// is not among BENCH_PRECISIONS).
	MiguBF16Lib  string              `json:"migu_bf16_library,omitempty"`
	MiguBF16Note string              `json:"migu_bf16_note,omitempty"`
	ORTSpin      string              `json:"ort_spin"`
	VecAdamW     bool                `json:"vectorized_adamw"`
	SpinMS       [2]float64          `json:"ort_spin_step_ms"` // spinning off, on
	Search       []bench.TorchConfig `json:"torch_search"`
	Runs         []*run              `json:"runs"`
	Minutes      float64             `json:"minutes"`
	Partial      bool                `json:"partial,omitempty"`
}

func drive(o *options) error {
	start := time.Now()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work := o.work
	if work == "" {
		if work, err = os.MkdirTemp("", "migu-perf-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	script, err := filepath.Abs(filepath.Join("benchmarks", "perf", "torch_bench.py"))
	if err != nil {
		return err
	}
	ci := bench.ReadCPUInfo()
	rep := &report{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Machine: bench.Machine(), CPU: ci.Name, CPUFlags: ci.Features(),
		BF16Path: ci.BF16Path(), Threads: o.threads, Batch: o.batch,
		Seq: o.seq, Provider: o.provider, Command: "make bench " + benchVars(), ORTSpin: o.ortSpin, VecAdamW: train.VectorizedAdamW()}
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, a...)...)
	}

	models := bench.Split(o.models)
	dirs := map[string][3]string{} // hf, model, batches.json
	for _, arch := range models {
		hf, model := filepath.Join(work, arch, "hf"), filepath.Join(work, arch, "model")
		if _, err := os.Stat(filepath.Join(model, "migu.json")); err != nil {
			if err := prepareModel(arch, hf, model, o.python, logf); err != nil {
				return err
			}
		}
		man, err := readVocab(model)
		if err != nil {
			return err
		}
		bj := filepath.Join(work, arch, "batches.json")
		if err := writeBatches(bj, batches(family(arch), man, 4, o.batch, o.seq, 0)); err != nil {
			return err
		}
		dirs[arch] = [3]string{hf, model, bj}
	}
	device := []string{}
	if o.provider == "cuda" {
		device = []string{"--device", "cuda"}
	}
	// pythonOf is a PyTorch configuration's interpreter: its own, or
	// BENCH_PYTHON's (Debian's torch 1.13 through .venv).
	pythonOf := func(c bench.TorchConfig) string {
		if c.Python != "" {
			return c.Python
		}
		return o.python
	}
	torchRun := func(c bench.TorchConfig, arch, method string, withMIGU bool, warmup, steps int) (*sample, error) {
		d := dirs[arch]
		args := append([]string{script, "--hf", d[0], "--arch", family(arch), "--method", method, "--migu", b2s(withMIGU), "--batches", d[2],
			"--steps", fmt.Sprint(steps), "--warmup", fmt.Sprint(warmup), "--threads", fmt.Sprint(c.Threads), "--precision", c.Prec()}, device...)
		return runJSON(c.Env, pythonOf(c), args...)
	}
	precs := bench.Split(o.precisions)
	rep.MiguBF16Lib, rep.MiguBF16Note = miguBF16(precs, o.provider, kernels.FindBF16)
	if rep.MiguBF16Note != "" {
		logf("migu bf16 does not run: %s", rep.MiguBF16Note)
	}
	// miguRun runs migu's worker; precision bf16 loads the library found
	// above ($MIGU_BF16 names it to the worker).
	miguRun := func(arch, method string, withMIGU bool, precision string) (*sample, error) {
		d := dirs[arch]
		var env []string
		if precision == train.PrecisionBF16 {
			env = []string{kernels.BF16EnvVar + "=" + rep.MiguBF16Lib}
		}
		return runJSON(env, self, "-worker", "migu", "-migu-precision", precision, "-ort-spin", rep.ORTSpin, "-model", d[1], "-hf", d[0], "-arch", family(arch), "-method", method,
			fmt.Sprintf("-with-migu=%v", withMIGU), "-steps", fmt.Sprint(o.steps), "-warmup", fmt.Sprint(o.warmup),
			"-threads", fmt.Sprint(o.threads), "-batch", fmt.Sprint(o.batch), "-seq", fmt.Sprint(o.seq), "-provider", o.provider)
	}
	torchMatMul := func(c *bench.TorchConfig) (float64, error) {
		s, err := runJSON(c.Env, pythonOf(*c), append([]string{script, "--matmul", "--threads", fmt.Sprint(c.Threads), "--precision", c.Prec()}, device...)...)
		if err != nil {
			return 0, err
		}
		c.Version = s.Torch
		return s.GFLOPS, nil
	}
	ortMatMul := func() (float64, error) {
		s, err := runJSON(nil, self, "-worker", "matmul", "-threads", fmt.Sprint(o.threads), "-provider", o.provider)
		if err != nil {
			return 0, err
		}
		return s.GFLOPS, nil
	}

	// PyTorch's best configuration per precision: MatMul speed of each
	// candidate, then a short full fine-tuning run of the first model for
	// the fast ones. fp32 runs Debian's 1.13 with each BLAS and PyPI's 2.x;
	// bf16 runs 2.x under autocast.
	cands := bench.TorchCandidates(o.threads)
	if torch2, err := filepath.Abs(o.torch2); err == nil {
		cands = append(cands, bench.Torch2Candidates(torch2, o.threads)...)
	}
	if o.provider == "cuda" {
		cands = []bench.TorchConfig{{Name: "cuda", Threads: o.threads}}
	}
	cands = slices.DeleteFunc(cands, func(c bench.TorchConfig) bool { return !slices.Contains(precs, c.Prec()) })
	if o.torchCfg != "" {
		cands = slices.DeleteFunc(cands, func(c bench.TorchConfig) bool {
			return !slices.ContainsFunc(strings.Split(o.torchCfg, "|"), func(sub string) bool { return strings.Contains(c.Name, sub) })
		})
	}
	if !slices.ContainsFunc(cands, func(c bench.TorchConfig) bool { return c.Prec() == "fp32" }) {
		return fmt.Errorf("no fp32 PyTorch configuration matches %q (BENCH_TORCH_CONFIG) and %q (BENCH_PRECISIONS)", o.torchCfg, o.precisions)
	}
	bestGF := map[string]float64{}
	for i := range cands {
		gf, err := torchMatMul(&cands[i])
		if err != nil {
			return err
		}
		cands[i].GFLOPS = gf
		bestGF[cands[i].Prec()] = math.Max(bestGF[cands[i].Prec()], gf)
		logf("torch config %q (torch %s): MatMul %.1f GFLOP/s", cands[i].Name, cands[i].Version, gf)
	}
	// Two passes in opposite orders; a configuration keeps its better
	// median, so that a burst of load on a shared machine does not decide.
	// A candidate is compared only with those of its own precision; the
	// only one of its precision is not timed.
	samePrec := func(prec string, among []int) []int {
		var out []int
		for _, i := range among {
			if cands[i].Prec() == prec {
				out = append(out, i)
			}
		}
		return out
	}
	all := make([]int, len(cands))
	for i := range all {
		all[i] = i
	}
	var order []int
	for i := range cands {
		if len(samePrec(cands[i].Prec(), all)) > 1 && cands[i].GFLOPS < bestGF[cands[i].Prec()]/4 {
			cands[i].Note = "not trained: MatMul under a quarter of the best of its precision"
			continue
		}
		order = append(order, i)
	}
	for pass := range 2 {
		for k := range order {
			i := order[k]
			if pass == 1 {
				i = order[len(order)-1-k]
				if best := bench.BestTorch(cands, cands[i].Prec()); best >= 0 && cands[i].StepMS > 2*cands[best].StepMS {
					continue // clearly slower: not worth a second look
				}
			}
			if len(samePrec(cands[i].Prec(), order)) == 1 {
				continue // nothing to choose between
			}
			s, err := torchRun(cands[i], models[0], "full", false, 1, 3)
			if err != nil {
				return err
			}
			ms := bench.Median(s.StepS) * 1000
			if cands[i].StepMS == 0 || ms < cands[i].StepMS {
				cands[i].StepMS = ms
			}
			logf("torch config %q: %s full step %.0f ms", cands[i].Name, models[0], ms)
		}
	}
	rep.Search = cands
	pick := func(prec string) int {
		if one := samePrec(prec, order); len(one) == 1 {
			return one[0]
		}
		return bench.BestTorch(cands, prec)
	}
	best := pick("fp32")
	if best < 0 {
		return fmt.Errorf("no fp32 PyTorch configuration could be timed")
	}
	rep.Torch = cands[best]
	logf("PyTorch fp32 runs with %q", rep.Torch.Label())
	if b := pick("bf16"); b >= 0 {
		c := cands[b]
		rep.TorchBF16 = &c
		logf("PyTorch bf16 runs with %q", c.Label())
	}

	// migu's side gets the same chance: ORT's intra-op threads spinning
	// (its default) or sleeping between kernels, timed the same way.
	if o.provider == "cpu" && o.ortSpinSearch {
		for pass := range 2 {
			for k := range 2 {
				spin := []string{"0", "1"}[k^pass]
				rep.ORTSpin = spin
				s, err := runJSON(nil, self, "-worker", "migu", "-ort-spin", spin, "-model", dirs[models[0]][1], "-arch", family(models[0]),
					"-method", "full", "-steps", "3", "-warmup", "1", "-threads", fmt.Sprint(o.threads), "-batch", fmt.Sprint(o.batch), "-seq", fmt.Sprint(o.seq))
				if err != nil {
					return err
				}
				ms := bench.Median(s.StepS) * 1000
				i := k ^ pass
				if rep.SpinMS[i] == 0 || ms < rep.SpinMS[i] {
					rep.SpinMS[i] = ms
				}
				logf("migu ORT spinning %s: %s full step %.0f ms", spin, models[0], ms)
			}
		}
		rep.ORTSpin = "1"
		if rep.SpinMS[0] < rep.SpinMS[1] {
			rep.ORTSpin = "0"
		}
		logf("migu runs with ORT spinning %s", rep.ORTSpin)
	}

	ceiling := func() error {
		og, err := ortMatMul()
		if err != nil {
			return err
		}
		tg, err := torchMatMul(&rep.Torch)
		if err != nil {
			return err
		}
		rep.ORTGFLOPS, rep.TorchGF = math.Max(rep.ORTGFLOPS, og), math.Max(rep.TorchGF, tg)
		logf("MatMul ceiling: ORT %.1f, torch %.1f GFLOP/s", og, tg)
		if rep.TorchBF16 != nil {
			bg, err := torchMatMul(rep.TorchBF16)
			if err != nil {
				return err
			}
			rep.TorchBF16GF = math.Max(rep.TorchBF16GF, bg)
			logf("MatMul ceiling: torch bf16 autocast %.1f GFLOP/s", bg)
		}
		return nil
	}
	if err := ceiling(); err != nil {
		return err
	}
	write := func(done bool) error {
		rep.Minutes = time.Since(start).Minutes()
		rep.Partial = !done
		raw, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		jsonPath := strings.TrimSuffix(o.out, ".md") + ".json"
		if err := atomicfile.WriteFile(jsonPath, append(raw, '\n')); err != nil {
			return err
		}
		md := markdown(rep, filepath.Base(jsonPath))
		if done {
			fmt.Print(md)
		}
		return atomicfile.WriteFile(o.out, []byte(md))
	}
	// Per model, every configuration (method × MIGU) on both sides runs
	// once per round, the order reversed in every other round: the
	// comparisons the targets rest on (migu against PyTorch, MIGU on
	// against off, LoRA against full) then see the same drift in the
	// machine's load, as A B B A does for two.
	type job struct {
		r    *run
		side string // migu, migu-bf16, torch (best fp32), bf16 (PyTorch's best bf16)
	}
	for _, arch := range models {
		var jobs []job
		for _, method := range bench.Split(o.methods) {
			for _, mg := range bench.Split(o.migus) {
				r := &run{Model: arch, Method: method, MIGU: mg == "on"}
				rep.Runs = append(rep.Runs, r)
				jobs = append(jobs, job{r, "migu"}, job{r, "torch"})
				if rep.MiguBF16Lib != "" {
					jobs = append(jobs, job{r, "migu-bf16"})
				}
				if rep.TorchBF16 != nil {
					jobs = append(jobs, job{r, "bf16"})
				}
			}
		}
		for round := range o.rounds {
			for k := range jobs {
				j := jobs[k]
				if round%2 == 1 {
					j = jobs[len(jobs)-1-k]
				}
				r := j.r
				var s *sample
				var err error
				switch j.side {
				case "torch":
					s, err = torchRun(rep.Torch, arch, r.Method, r.MIGU, o.warmup, o.steps)
					r.Torch = append(r.Torch, s)
				case "bf16":
					s, err = torchRun(*rep.TorchBF16, arch, r.Method, r.MIGU, o.warmup, o.steps)
					r.TorchBF16 = append(r.TorchBF16, s)
				case "migu-bf16":
					s, err = miguRun(arch, r.Method, r.MIGU, train.PrecisionBF16)
					r.MiguBF16 = append(r.MiguBF16, s)
				default:
					s, err = miguRun(arch, r.Method, r.MIGU, train.PrecisionFP32)
					r.Migu = append(r.Migu, s)
				}
				if err != nil {
					return err
				}
				logf("%s %s migu=%v: %-9s median %.0f ms", arch, r.Method, r.MIGU, j.side, bench.Median(s.StepS)*1000)
			}
			// Written after every round: an interrupted run leaves what
			// it measured.
			if err := write(false); err != nil {
				return err
			}
		}
	}
	if err := ceiling(); err != nil {
		return err
	}
	return write(true)
}

// Runs0 names the model the configuration searches ran on.
func (r *report) Runs0() string {
	if len(r.Runs) == 0 {
		return "the first model"
	}
	return r.Runs[0].Model
}

// stats summarises one side of a run.
type stats struct {
	medianMS, iqrPct, tokS, rssMB float64
	updateMS                      float64 // median of the steps' update (sample.UpdateS), 0 when not reported
	gflops                        float64 // median in-process MatMul ceiling
	params, trainable             int64
	steps                         int
}

func summarize(ss []*sample) stats {
	var st stats
	var times, updates, ceil []float64
	tokens := 0
	for _, s := range ss {
		if s.GFLOPS > 0 {
			ceil = append(ceil, s.GFLOPS)
		}
		times = append(times, s.StepS...)
		updates = append(updates, s.UpdateS...)
		for _, t := range s.Tokens {
			tokens += t
		}
		st.rssMB = math.Max(st.rssMB, s.PeakRSSMB)
		st.params, st.trainable = s.Params, s.Trainable
	}
	if len(times) == 0 {
		return st
	}
	st.steps = len(times)
	if len(ceil) > 0 {
		st.gflops = bench.Median(ceil)
	}
	st.medianMS = bench.Median(times) * 1000
	if len(updates) > 0 {
		st.updateMS = bench.Median(updates) * 1000
	}
	st.iqrPct = (bench.Quantile(times, 0.75) - bench.Quantile(times, 0.25)) / bench.Median(times) * 100
	st.tokS = float64(tokens) / float64(len(times)) / bench.Median(times)
	return st
}

// modelsLine says where the benchmark's models come from: `migu init`
// presets, the real checkpoints of realModels, or both.
func modelsLine(runs []*run) string {
	var presets, real []string
	seen := map[string]bool{}
	for _, r := range runs {
		if seen[r.Model] {
			continue
		}
		seen[r.Model] = true
		if _, ok := realModels[r.Model]; ok {
			real = append(real, r.Model)
		} else {
			presets = append(presets, r.Model)
		}
	}
	var parts []string
	if len(presets) > 0 {
		parts = append(parts, "small presets (`migu init --preset small`) of "+strings.Join(presets, ", "))
	}
	if len(real) > 0 {
		parts = append(parts, "pretrained "+strings.Join(real, ", ")+" (SmolLM2-135M-Instruct dequantized from its GGUF)")
	}
	s := strings.Join(parts, "; ")
	if s == "" {
		return "No models"
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func markdown(rep *report, jsonName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# migu vs PyTorch: training speed, side by side\n\n")
	fmt.Fprintf(&b, "Written by `%s` on %s (%.1f min). Machine: %s.\n\n", rep.Command, rep.Date, rep.Minutes, rep.Machine)
	if rep.Partial {
		fmt.Fprintf(&b, "**Partial:** the run was still going (or was stopped) when this was written; the rows below are the configurations it finished.\n\n")
	}
	fmt.Fprintf(&b, "%s, batch %d × %d tokens (t5: %d encoder and %d decoder tokens), %d threads on both sides, provider %s, AdamW (lr 1e-4, wd 0.01) on both sides, MIGU T = 0.7 in grad mode, LoRA q,v r 8 α 32. ",
		modelsLine(rep.Runs), rep.Batch, rep.Seq, rep.Seq, rep.Seq, rep.Threads, rep.Provider)
	fmt.Fprintf(&b, "Every measurement is a separate process; per model, all configurations of both sides run once per round, in reversed order every other round, so that the machine's changing load falls alike on every comparison. Times are per optimizer step after warm-up, over all processes of a configuration and side.\n\n")
	fmt.Fprintf(&b, "MatMul ceiling measured in this run (the faster of a 2048³ and a 2000³ float32 MatMul, best of start and end; ORT's MLAS runs 2048³ up to a fifth slower than 2000³ because its rows are a multiple of 4 KB): ORT %.1f GFLOP/s, PyTorch %.1f GFLOP/s. MFU = 6 · parameters · tokens/s ÷ the ceiling that each worker process measures right after its training steps (median over a side's processes, shown as \"MFU%% of GFLOP/s\"), so that changes in the machine's load between configurations do not distort it; full fine-tuning only (a LoRA step skips frozen weight gradients, about 4 · parameters · tokens).\n\n",
		rep.ORTGFLOPS, rep.TorchGF)
	if rep.CPU != "" {
		fmt.Fprintf(&b, "CPU: %s; flags (/proc/cpuinfo): %s; bf16 matrix-product hardware: %s.\n\n", rep.CPU, rep.CPUFlags, rep.BF16Path)
	}
	fmt.Fprintf(&b, "migu's float32 matrix products (`--products auto`): %s.\n\n", oneDNNLine(rep.Runs, kernels.AutoOneDNN()))
	fmt.Fprintf(&b, "PyTorch fp32: **%s**, the fastest fp32 configuration of the search below; migu/torch is against it.", rep.Torch.Label())
	if rep.TorchBF16 != nil {
		fmt.Fprintf(&b, " PyTorch bf16: **%s**, the fastest bf16 autocast configuration (MatMul under autocast %.1f GFLOP/s).", rep.TorchBF16.Label(), rep.TorchBF16GF)
	}
	if rep.SpinMS[0] == 0 && rep.ORTSpin != "" {
		fmt.Fprintf(&b, " migu configuration: ORT intra-op spinning **%s** (fixed by BENCH_ORT_SPIN).", map[string]string{"0": "off", "1": "on"}[rep.ORTSpin])
	}
	if rep.SpinMS[0] > 0 {
		fmt.Fprintf(&b, " migu configuration: ORT intra-op spinning **%s** (searched the same way: %s full step %.0f ms without spinning, %.0f ms with).",
			map[string]string{"0": "off", "1": "on"}[rep.ORTSpin], rep.Runs0(), rep.SpinMS[0], rep.SpinMS[1])
	}
	if rep.VecAdamW {
		fmt.Fprintf(&b, " migu's AdamW runs vector loops (16 lanes with AVX-512, 8 with AVX2; built with GOEXPERIMENT=simd).")
	} else {
		fmt.Fprintf(&b, " migu's AdamW runs scalar loops (built without GOEXPERIMENT=simd).")
	}
	fmt.Fprintf(&b, "\n\n")
	fmt.Fprintf(&b, "| model | method | MIGU | migu step ms (IQR) | torch step ms (IQR) | migu tokens/s | torch tokens/s | migu/torch | MFU migu | MFU torch | peak RSS migu MB | peak RSS torch MB |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	rows := slices.Clone(rep.Runs)
	slices.SortStableFunc(rows, func(a, b *run) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.Method, b.Method), cmp.Compare(b2s(a.MIGU), b2s(b.MIGU)))
	})
	for _, r := range rows {
		m, t := summarize(r.Migu), summarize(r.Torch)
		mfu := func(s stats, ceil float64) string {
			if s.gflops > 0 {
				ceil = s.gflops // measured in the same processes
			}
			if r.Method != "full" || ceil == 0 {
				return "—"
			}
			return fmt.Sprintf("%.0f%% of %.0f", 6*float64(s.params)*s.tokS/(ceil*1e9)*100, ceil)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f (±%.0f%%) | %.0f (±%.0f%%) | %.0f | %.0f | %.2fx | %s | %s | %.0f | %.0f |\n",
			r.Model, r.Method, onOff(r.MIGU), m.medianMS, m.iqrPct/2, t.medianMS, t.iqrPct/2, m.tokS, t.tokS, m.tokS/t.tokS,
			mfu(m, rep.ORTGFLOPS), mfu(t, rep.TorchGF), m.rssMB, t.rssMB)
	}
	fmt.Fprintf(&b, "\nDerived ratios of median step times (MIGU cost: with ÷ without − 1):\n\n| model | MIGU cost full | MIGU cost LoRA | LoRA/full step | torch MIGU cost full | torch LoRA/full |\n|---|---|---|---|---|---|\n")
	find := func(model, method string, mg bool) *run {
		for _, r := range rep.Runs {
			if r.Model == model && r.Method == method && r.MIGU == mg {
				return r
			}
		}
		return nil
	}
	ratio := func(a, b *run, torch bool, pct bool) string {
		if a == nil || b == nil {
			return "—"
		}
		x, y := a.Migu, b.Migu
		if torch {
			x, y = a.Torch, b.Torch
		}
		v := summarize(x).medianMS / summarize(y).medianMS
		if pct {
			return fmt.Sprintf("%+.1f%%", (v-1)*100)
		}
		return fmt.Sprintf("%.2f×", v)
	}
	seen := map[string]bool{}
	for _, r := range rep.Runs {
		if seen[r.Model] {
			continue
		}
		seen[r.Model] = true
		fo, fm, lo, lm := find(r.Model, "full", false), find(r.Model, "full", true), find(r.Model, "lora", false), find(r.Model, "lora", true)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Model, ratio(fm, fo, false, true), ratio(lm, lo, false, true),
			ratio(lo, fo, false, false), ratio(fm, fo, true, true), ratio(lo, fo, true, false))
	}
	updateTable(&b, rep, rows)
	if rep.TorchBF16 != nil || rep.MiguBF16Lib != "" || rep.MiguBF16Note != "" {
		bf16Table(&b, rep, rows)
	}
	fmt.Fprintf(&b, "\nPyTorch configurations tried (MatMul ceiling, then twice, in opposite orders, 3 steps of full fine-tuning of the first model after 1 warm-up step; the better median counts; the fastest of each precision is kept, and the only one of its precision is not timed):\n\n| configuration | torch | precision | MatMul GFLOP/s | full step ms | note |\n|---|---|---|---|---|---|\n")
	for _, c := range rep.Search {
		step := "—"
		if c.StepMS > 0 {
			step = fmt.Sprintf("%.0f", c.StepMS)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.1f | %s | %s |\n", c.Name, c.Version, c.Prec(), c.GFLOPS, step, c.Note)
	}
	fmt.Fprintf(&b, "\nRaw samples: %s beside this file. How the run works and how to profile: README.md.\n", jsonName)
	return b.String()
}

// adamBytes is what migu's AdamW pass moves per trainable parameter: it
// reads the value, gradient and both moments and writes the value and
// moments back, float32 each.
const adamBytes = 28

// updateTable writes where the float32 full fine-tuning steps' time goes:
// the update after the backward pass (the optimizer, MIGU's masks) on
// each side, the speed migu's AdamW pass streams memory at, and what the
// update leaves of the MFU: migu's MFU over the step without it, and its
// bound — the MFU of a step whose every other part ran at the MatMul
// ceiling (model FLOPs ÷ ceiling + the update as measured).
func updateTable(b *strings.Builder, rep *report, rows []*run) {
	var lines []string
	for _, r := range rows {
		m, t := summarize(r.Migu), summarize(r.Torch)
		if r.Method != "full" || m.updateMS == 0 || m.gflops == 0 {
			continue
		}
		torch := "—"
		if t.updateMS > 0 {
			torch = fmt.Sprintf("%.1f (%.0f%%)", t.updateMS, t.updateMS/t.medianMS*100)
		}
		// The step's model FLOPs, in ms at the ceiling.
		atCeil := 6 * float64(m.params) * m.tokS * m.medianMS / (m.gflops * 1e9)
		lines = append(lines, fmt.Sprintf("| %s | %s | %.0f | %.1f (%.0f%%) | %.1f | %s | %.0f%% | %.0f%% | %.0f%% |\n",
			r.Model, onOff(r.MIGU), m.medianMS, m.updateMS, m.updateMS/m.medianMS*100,
			adamBytes*float64(m.trainable)/(m.updateMS*1e6), torch,
			atCeil/m.medianMS*100, atCeil/(m.medianMS-m.updateMS)*100, atCeil/(atCeil+m.updateMS)*100))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "\nWhere the fp32 full fine-tuning step goes: the update after the backward pass (migu: train.StepResult.UpdateSeconds — MIGU's masks and the AdamW pass; PyTorch: MIGU's masks, opt.step() and zero_grad()), medians over the timed steps. migu's AdamW pass reads and writes %d bytes a trainable parameter; GB/s is those bytes over the update's time. MFU as above; without the update: over the step less the update; bound: if all but the update ran at the MatMul ceiling.\n\n", adamBytes)
	fmt.Fprintf(b, "| model | MIGU | migu step ms | migu update ms (share) | migu update GB/s | torch update ms (share) | MFU migu | MFU without the update | MFU bound |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, l := range lines {
		b.WriteString(l)
	}
}

// miguBF16 decides whether migu's bf16 configurations run: with bf16
// among the precisions, on the CPU provider, where find (kernels.FindBF16)
// finds the bf16 library. It returns the library, or the reason that the
// results print in migu's bf16 cells; both "" when bf16 was not asked for.
func miguBF16(precs []string, provider string, find func() (string, error)) (lib, note string) {
	if !slices.Contains(precs, train.PrecisionBF16) {
		return "", ""
	}
	if provider != "" && provider != "cpu" {
		return "", "bf16 products run on the CPU provider only, not " + provider
	}
	lib, err := find()
	if err != nil {
		return "", "no usable bf16 library: " + err.Error()
	}
	if lib == "" {
		return "", "no bf16 library: install libdnnl-dev and run `make build` (scripts/bf16.sh builds bin/" + kernels.BF16LibName + ")"
	}
	return lib, ""
}

// oneDNNLine says where migu's fp32 workers ran their float32 products:
// how many per step in oneDNN (the most over the workers), of the roles
// --products auto picks on this CPU, attention's among them, or all in
// MLAS; and attention's in the fused kernel where the workers fused it.
func oneDNNLine(runs []*run, roles kernels.F32Roles) string {
	most, attention, fused := 0, 0, 0
	for _, r := range runs {
		for _, s := range r.Migu {
			most = max(most, s.OneDNNProducts)
			attention = max(attention, s.AttentionProducts)
			fused = max(fused, s.FusedAttention)
		}
	}
	line := productsLine(most, attention, roles)
	if fused > 0 {
		line += fmt.Sprintf("; attention's in the fused kernel ai.migu.Attention (up to %d per step, kernels.FuseAttention)", fused)
	}
	return line
}

// productsLine is oneDNNLine's account of the products in oneDNN and MLAS.
func productsLine(most, attention int, roles kernels.F32Roles) string {
	var kinds []string
	for _, k := range []struct {
		on   bool
		name string
	}{{roles.Forward, "forward"}, {roles.InputGrads, "input-gradient"}, {roles.WeightGrads, "weight-gradient"}} {
		if k.on {
			kinds = append(kinds, k.name)
		}
	}
	products := "the weight products"
	switch len(kinds) {
	case 1:
		products = "the " + kinds[0] + " products"
	case 2, 3:
		products = "the " + strings.Join(kinds[:len(kinds)-1], ", ") + " and " + kinds[len(kinds)-1] + " products"
	}
	switch {
	case most == 0 && attention == 0:
		return "all in ORT's MLAS"
	case attention == 0:
		return fmt.Sprintf("%s in oneDNN (ai.migu.bf16.MatMulF32, up to %d per step), the rest in ORT's MLAS", products, most)
	}
	return fmt.Sprintf("%s (ai.migu.bf16.MatMulF32, up to %d per step) and attention's (ai.migu.bf16.BatchMatMul, up to %d) in oneDNN, the rest in ORT's MLAS", products, most, attention)
}

// bf16Paths lists the distinct MatMulBF16 paths migu's bf16 workers
// reported, in the order first seen.
func bf16Paths(runs []*run) []string {
	var paths []string
	for _, r := range runs {
		for _, s := range r.MiguBF16 {
			if s.BF16Path != "" && !slices.Contains(paths, s.BF16Path) {
				paths = append(paths, s.BF16Path)
			}
		}
	}
	return paths
}

// bf16Table writes the bf16 runs of both sides beside their fp32 ones:
// migu with bf16 weight products (--precision bf16), PyTorch under bf16
// autocast, each side's step against its own fp32 step, migu's against
// PyTorch's bf16, and the loss curves of all four. A side that did not run
// shows "—", and migu's first cell the reason when it could not.
func bf16Table(b *strings.Builder, rep *report, rows []*run) {
	torchName := "none"
	if rep.TorchBF16 != nil {
		torchName = rep.TorchBF16.Label()
	}
	fmt.Fprintf(b, "\n### bf16 (PyTorch: %s)\n\n", torchName)
	fmt.Fprintf(b, "PyTorch runs the forward pass under `torch.autocast(\"cpu\", dtype=torch.bfloat16)` with float32 weights, gradients and AdamW state. ")
	switch {
	case rep.MiguBF16Lib != "":
		paths := "not reported"
		if p := bf16Paths(rep.Runs); len(p) > 0 {
			paths = strings.Join(p, "; ")
		}
		fmt.Fprintf(b, "migu runs with `--precision bf16`: every weight product, forward and backward, is ai.migu.bf16.MatMulBF16 (%s) and every attention product ai.migu.bf16.BatchMatMul in bf16, with float32 accumulation, weights, gradients and AdamW state; its products took this path: **%s**. ", filepath.Base(rep.MiguBF16Lib), paths)
	case rep.MiguBF16Note != "":
		fmt.Fprintf(b, "migu bf16 did not run: %s. ", rep.MiguBF16Note)
	}
	fmt.Fprintf(b, "The processes ran in the same rounds as the fp32 table's. bf16 hardware here: %s. migu/torch bf16 is migu's bf16 tokens/s over PyTorch's bf16 tokens/s; a side's bf16 ÷ fp32 step is its bf16 median step over its own fp32 one.\n\n", rep.BF16Path)
	fmt.Fprintf(b, "| model | method | MIGU | migu bf16 step ms (IQR) | migu bf16 tokens/s | migu/torch bf16 | migu bf16 ÷ fp32 step | peak RSS migu bf16 MB | final loss bf16 − fp32 (migu) | torch bf16 step ms (IQR) | torch bf16 tokens/s | torch bf16 ÷ fp32 step | peak RSS torch bf16 MB | final loss bf16 − fp32 (torch) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		mb, mf := summarize(r.MiguBF16), summarize(r.Migu)
		tb, tf := summarize(r.TorchBF16), summarize(r.Torch)
		if mb.steps == 0 && tb.steps == 0 && rep.MiguBF16Note == "" {
			continue
		}
		migu := []string{"—", "—", "—", "—", "—", "—"}
		if rep.MiguBF16Note != "" {
			migu[0] = rep.MiguBF16Note
		}
		if mb.steps > 0 {
			migu = []string{fmt.Sprintf("%.0f (±%.0f%%)", mb.medianMS, mb.iqrPct/2), fmt.Sprintf("%.0f", mb.tokS), "—",
				stepRatio(mb, mf), fmt.Sprintf("%.0f", mb.rssMB), lossDrift(r.MiguBF16, r.Migu)}
			if tb.steps > 0 {
				migu[2] = fmt.Sprintf("%.2fx", mb.tokS/tb.tokS)
			}
		}
		torch := []string{"—", "—", "—", "—", "—"}
		if tb.steps > 0 {
			torch = []string{fmt.Sprintf("%.0f (±%.0f%%)", tb.medianMS, tb.iqrPct/2), fmt.Sprintf("%.0f", tb.tokS),
				stepRatio(tb, tf), fmt.Sprintf("%.0f", tb.rssMB), lossDrift(r.TorchBF16, r.Torch)}
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", r.Model, r.Method, onOff(r.MIGU), strings.Join(migu, " | "), strings.Join(torch, " | "))
	}
	fmt.Fprintf(b, "\nLoss curves over every step the first process of each side ran (warm-up steps first; the batches cycle through 4):\n\n| model | method | MIGU | side | loss per step |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		for _, side := range []struct {
			name string
			ss   []*sample
		}{{"migu fp32", r.Migu}, {"migu bf16", r.MiguBF16}, {"torch fp32", r.Torch}, {"torch bf16", r.TorchBF16}} {
			if c := lossCurve(side.ss); len(c) > 0 {
				fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", r.Model, r.Method, onOff(r.MIGU), side.name, formatLosses(c))
			}
		}
	}
}

// stepRatio is a side's bf16 median step over its fp32 one, "—" without
// fp32 steps.
func stepRatio(bf16, fp32 stats) string {
	if fp32.steps == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", bf16.medianMS/fp32.medianMS)
}

// lossDrift is the last loss of the first bf16 process minus that of the
// first fp32 process, which ran the same batches; "—" when their curves
// differ in length.
func lossDrift(bf16, fp32 []*sample) string {
	lb, lf := lossCurve(bf16), lossCurve(fp32)
	if len(lb) == 0 || len(lb) != len(lf) {
		return "—"
	}
	return fmt.Sprintf("%+.4f", lb[len(lb)-1]-lf[len(lf)-1])
}

// lossCurve is the first sample's losses over all its steps, warm-up
// first.
func lossCurve(ss []*sample) []float64 {
	if len(ss) == 0 {
		return nil
	}
	return append(slices.Clone(ss[0].WarmupLoss), ss[0].Loss...)
}

func formatLosses(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.4f", x)
	}
	return strings.Join(parts, " ")
}

// realModels are the benchmark models that are real pretrained checkpoints
// rather than `migu init` presets, with their architecture.
var realModels = map[string]string{"smollm2": "llama"}

// family is the architecture of a benchmark model.
func family(model string) string {
	if f, ok := realModels[model]; ok {
		return f
	}
	return model
}

// prepareModel writes a benchmark model's Hugging Face folder (PyTorch's
// side) and migu model folder: the small preset of an architecture, or
// SmolLM2-135M-Instruct, exported by migu from its GGUF and converted for
// transformers by the GGUF tests' reference script (gguf-py dequantizes).
func prepareModel(name, hf, model, python string, logf func(string, ...any)) error {
	if name != "smollm2" {
		logf("init + export %s small", name)
		if _, err := exporters.Init(hf, exporters.InitOptions{Arch: name, Preset: "small"}); err != nil {
			return err
		}
		_, err := exporters.Export(hf, model)
		return err
	}
	out, err := exec.Command(filepath.Join("scripts", "smollm2.sh")).Output()
	if err != nil {
		return fmt.Errorf("scripts/smollm2.sh: %w", err)
	}
	gguf := strings.TrimSpace(string(out))
	logf("export %s", gguf)
	if _, err := exporters.Export(gguf, model); err != nil {
		return err
	}
	cmd := exec.Command(python, filepath.Join("exporters", "testdata", "gguf_ref.py"), "hf", gguf, hf)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func readVocab(model string) (int64, error) {
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		return 0, err
	}
	return man.VocabSize, nil
}

func benchVars() string {
	var parts []string
	for _, k := range []string{"BENCH_MODELS", "BENCH_METHODS", "BENCH_MIGU", "BENCH_STEPS", "BENCH_WARMUP", "BENCH_ROUNDS", "BENCH_BATCH", "BENCH_SEQ", "BENCH_THREADS", "BENCH_PRECISIONS", "BENCH_TORCH_CONFIG", "PROVIDER"} {
		if v := os.Getenv(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
