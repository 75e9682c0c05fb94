package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// BENCH_EVAL=1: evaluation throughput. Both sides score the same
// multiple-choice log-likelihood requests — items of one context (100 to
// 200 tokens) and four continuations, as HellaSwag or ARC — at batch 8:
// migu through eval.Model.LogLikelihood (each context once through the
// key/value cache, the fused kernels), PyTorch through transformers the
// way lm-evaluation-harness's HFLM does (torch_eval.py). Throughput is
// request tokens (context + continuation − 1 per request, what HFLM runs)
// per second of a pass over all items; every side runs in its own
// processes, in reversed order every other round.

// evalItem is one multiple-choice item: a context and its continuations.
type evalItem struct {
	Context string   `json:"context"`
	Conts   []string `json:"continuations"`
}

// evalSample is what an eval worker prints: one process's timed passes.
type evalSample struct {
	PassS     []float64 `json:"pass_s"`
	Tokens    int       `json:"tokens"`
	LL        []float64 `json:"ll"` // per request, item by item
	Torch     string    `json:"torch,omitempty"`
	Threads   int       `json:"threads"`
	PeakRSSMB float64   `json:"peak_rss_mb"`
}

// evalSide is one way of scoring, migu's or PyTorch's.
type evalSide struct {
	Name    string        `json:"name"`
	Samples []*evalSample `json:"samples"`
	run     func(passes int) (*evalSample, error)
}

// evalReport is RESULTS-eval.json.
type evalReport struct {
	Date     string  `json:"date"`
	Machine  string  `json:"machine"`
	CPU      string  `json:"cpu"`
	CPUFlags string  `json:"cpu_flags"`
	Model    string  `json:"model"`
	Threads  int     `json:"threads"`
	Batch    int     `json:"batch"`
	Items    int     `json:"items"`
	Requests int     `json:"requests"`
	Tokens   int     `json:"tokens_per_pass"`
	CtxMean  float64 `json:"context_tokens_mean"`
	ContMean float64 `json:"continuation_tokens_mean"`
	// Products says where migu's products run (eval.Options.Products).
	Products string              `json:"products"`
	Torch    bench.TorchConfig   `json:"torch_config"`
	Search   []bench.TorchConfig `json:"torch_search"`
	// WorstLL is the largest difference between a log-likelihood of
	// migu's and of transformers' (HFLM way), over all requests.
	WorstLL float64     `json:"worst_ll_difference"`
	Sides   []*evalSide `json:"sides"`
	Minutes float64     `json:"minutes"`
}

// evalWords make the benchmark's text: deterministic, ordinary English
// words, so the tokenizer splits them as it splits real prompts.
var evalWords = strings.Fields(`the a man woman child dog cat house river city road car
	small large old new quickly slowly then after before while because and but or
	walks runs sits stands looks opens closes takes gives finds holds carries
	water bread paper window door table chair garden street morning evening light
	red green blue quiet loud warm cold bright dark happy tired careful sudden`)

// makeEvalItems writes n items whose contexts have 100 to 200 tokens and
// whose four continuations have 3 to 20 words, tokenized as m does, and
// returns them with their token ids.
func makeEvalItems(m *eval.Model, n int) ([]evalItem, [][2]any, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := func(k int) string {
		w := make([]string, k)
		for i := range w {
			w[i] = evalWords[rng.IntN(len(evalWords))]
		}
		return strings.Join(w, " ")
	}
	var items []evalItem
	var ids [][2]any
	for range n {
		target := 100 + rng.IntN(101)
		ctx := "Question:"
		for {
			c, _, err := m.EncodePair(ctx, " x")
			if err != nil {
				return nil, nil, err
			}
			if len(c) >= target {
				break
			}
			ctx += " " + words(1+rng.IntN(12)) + "."
		}
		ctx += "\nAnswer:"
		it := evalItem{Context: ctx}
		var ctxIDs []int
		var conts [][]int
		for range 4 {
			cont := " " + words(3+rng.IntN(18)) + "."
			c, k, err := m.EncodePair(ctx, cont)
			if err != nil {
				return nil, nil, err
			}
			it.Conts = append(it.Conts, cont)
			ctxIDs = c
			conts = append(conts, k)
		}
		items = append(items, it)
		ids = append(ids, [2]any{ctxIDs, conts})
	}
	return items, ids, nil
}

// evalRequests flattens items into requests, item by item.
func evalRequests(items []evalItem) []eval.Request {
	var reqs []eval.Request
	for _, it := range items {
		for _, c := range it.Conts {
			reqs = append(reqs, eval.Request{Context: it.Context, Continuation: c})
		}
	}
	return reqs
}

// workEval is the migu eval worker: it scores the items of o.items
// (evalItem JSON; workerItems) once untimed (the first item) and o.steps
// times timed.
func workEval(o *options) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	m, err := eval.Open(o.model, eval.Options{Threads: o.threads, BatchSize: o.batch, Kernels: o.kernels, Products: o.evalProducts, WholeRequests: o.whole, Profile: o.ortProfile})
	if err != nil {
		return err
	}
	defer m.Close()
	items, err := workerItems(o, m)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := m.LogLikelihood(ctx, evalRequests(items[:1])); err != nil {
		return err
	}
	reqs := evalRequests(items)
	s := &evalSample{Threads: o.threads}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	for range o.steps {
		start := time.Now()
		res, err := m.LogLikelihood(ctx, reqs)
		if err != nil {
			return err
		}
		s.PassS = append(s.PassS, time.Since(start).Seconds())
		s.LL = s.LL[:0]
		for _, r := range res {
			s.LL = append(s.LL, r.LogProb)
		}
	}
	s.PeakRSSMB = bench.PeakRSSMB()
	return json.NewEncoder(os.Stdout).Encode(s)
}

// workerItems are the items an eval worker scores: those of -items, else
// -eval-items made here (makeEvalItems), which are written to -items when
// it names a file that does not exist yet (so that another build of the
// worker scores the same).
func workerItems(o *options, m *eval.Model) ([]evalItem, error) {
	if _, err := os.Stat(o.items); o.items == "" || os.IsNotExist(err) {
		items, _, err := makeEvalItems(m, o.evalItems)
		if err != nil || o.items == "" {
			return items, err
		}
		raw, err := json.Marshal(items)
		if err != nil {
			return nil, err
		}
		return items, atomicfile.WriteFile(o.items, raw)
	}
	var items []evalItem
	raw, err := os.ReadFile(o.items)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("%s: %w", o.items, err)
	}
	return items, nil
}

// runEvalJSON runs an eval worker and decodes the sample it prints.
func runEvalJSON(env []string, name string, args ...string) (*evalSample, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, bench.LastLines(errb.String(), 15))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	s := &evalSample{}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), s); err != nil {
		return nil, fmt.Errorf("%s: reading its result: %v (%q)", name, err, bench.LastLines(string(out), 3))
	}
	return s, nil
}

// evalModelDirs returns the benchmark model's migu folder and Hugging Face
// folder: SmolLM2-135M-Instruct (the export `make smollm2` made, else one
// made here) or the small llama preset.
func evalModelDirs(name, work, python string, logf func(string, ...any)) (model, hf string, err error) {
	hf, model = filepath.Join(work, name, "hf"), filepath.Join(work, name, "model")
	if name == "smollm2" {
		if d := filepath.Join(".deps", "models", "smollm2"); fileExists(filepath.Join(d, "migu.json")) {
			model = d
		}
	}
	if fileExists(filepath.Join(model, "migu.json")) && fileExists(filepath.Join(hf, "config.json")) {
		return model, hf, nil
	}
	if name == "smollm2" && !strings.HasPrefix(model, work) {
		out, err := exec.Command(filepath.Join("scripts", "smollm2.sh")).Output()
		if err != nil {
			return "", "", fmt.Errorf("scripts/smollm2.sh: %w", err)
		}
		logf("convert the GGUF for transformers")
		cmd := exec.Command(python, filepath.Join("exporters", "testdata", "gguf_ref.py"), "hf", strings.TrimSpace(string(out)), hf)
		cmd.Stderr = os.Stderr
		return model, hf, cmd.Run()
	}
	return model, hf, prepareModel(name, hf, model, python, logf)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func driveEval(o *options) error {
	start := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, a...)...)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work := o.work
	if work == "" {
		if work, err = os.MkdirTemp("", "migu-evalperf-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	script, err := filepath.Abs(filepath.Join("benchmarks", "perf", "torch_eval.py"))
	if err != nil {
		return err
	}
	name := o.evalModel
	if name == "" {
		name = "llama"
		if fileExists(filepath.Join(".deps", "models", "smollm2", "migu.json")) {
			name = "smollm2"
		}
	}
	model, hf, err := evalModelDirs(name, work, o.python, logf)
	if err != nil {
		return err
	}

	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	tm, err := eval.Open(model, eval.Options{Threads: 1, Kernels: kernels.Off})
	if err != nil {
		return err
	}
	items, ids, err := makeEvalItems(tm, o.evalItems)
	tm.Close()
	if err != nil {
		return err
	}
	ci := bench.ReadCPUInfo()
	rep := &evalReport{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Machine: bench.Machine(), CPU: ci.Name, CPUFlags: ci.Features(),
		Model: name, Threads: o.threads, Batch: o.evalBatch, Items: len(items)}
	var ctxTok, contTok int
	for _, it := range ids {
		c, ks := it[0].([]int), it[1].([][]int)
		for _, k := range ks {
			rep.Requests++
			rep.Tokens += len(c) + len(k) - 1
			ctxTok += len(c)
			contTok += len(k)
		}
	}
	rep.CtxMean, rep.ContMean = float64(ctxTok)/float64(rep.Requests), float64(contTok)/float64(rep.Requests)
	logf("%s: %d items, %d requests, %d request tokens per pass (context %.0f, continuation %.1f tokens on average)",
		name, rep.Items, rep.Requests, rep.Tokens, rep.CtxMean, rep.ContMean)
	write := func(path string, v any) (string, error) {
		raw, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		p := filepath.Join(work, path)
		return p, os.WriteFile(p, raw, 0o644)
	}
	textPath, err := write("eval-items.json", items)
	if err != nil {
		return err
	}
	idsPath, err := write("eval-ids.json", ids)
	if err != nil {
		return err
	}
	// The search scores the first two items.
	searchPath, err := write("eval-ids-search.json", ids[:min(2, len(ids))])
	if err != nil {
		return err
	}

	pythonOf := func(c bench.TorchConfig) string {
		if c.Python != "" {
			return c.Python
		}
		return o.python
	}
	torchRun := func(c bench.TorchConfig, mode, items string, passes int) (*evalSample, error) {
		return runEvalJSON(c.Env, pythonOf(c), script, "--hf", hf, "--items", items, "--mode", mode, "--batch", fmt.Sprint(o.evalBatch),
			"--threads", fmt.Sprint(c.Threads), "--passes", fmt.Sprint(passes))
	}

	// PyTorch's best fp32 configuration for this work, found as the
	// training benchmark finds it: the MatMul ceiling of each candidate,
	// then a short scoring run of the fast ones, twice in opposite orders.
	cands := bench.TorchCandidates(o.threads)
	if torch2, err := filepath.Abs(o.torch2); err == nil {
		cands = append(cands, bench.Torch2Candidates(torch2, o.threads)...)
	}
	cands = slices.DeleteFunc(cands, func(c bench.TorchConfig) bool {
		return c.Prec() != "fp32" || o.torchCfg != "" && !slices.ContainsFunc(strings.Split(o.torchCfg, "|"), func(sub string) bool { return strings.Contains(c.Name, sub) })
	})
	if len(cands) == 0 {
		return fmt.Errorf("no fp32 PyTorch configuration matches %q (BENCH_TORCH_CONFIG)", o.torchCfg)
	}
	matmulScript := filepath.Join(filepath.Dir(script), "torch_bench.py")
	bestGF := 0.0
	for i := range cands {
		s, err := runJSON(cands[i].Env, pythonOf(cands[i]), matmulScript, "--matmul", "--threads", fmt.Sprint(cands[i].Threads), "--precision", "fp32")
		if err != nil {
			return err
		}
		cands[i].GFLOPS, cands[i].Version = s.GFLOPS, s.Torch
		bestGF = math.Max(bestGF, s.GFLOPS)
		logf("torch config %q (torch %s): MatMul %.1f GFLOP/s", cands[i].Name, cands[i].Version, s.GFLOPS)
	}
	var order []int
	for i := range cands {
		if len(cands) > 1 && cands[i].GFLOPS < bestGF/4 {
			cands[i].Note = "not timed: MatMul under a quarter of the best"
			continue
		}
		order = append(order, i)
	}
	for pass := range 2 {
		if len(order) < 2 {
			break
		}
		for k := range order {
			i := order[k]
			if pass == 1 {
				i = order[len(order)-1-k]
				if b := bench.BestTorch(cands, "fp32"); b >= 0 && cands[i].StepMS > 2*cands[b].StepMS {
					continue // clearly slower: not worth a second look
				}
			}
			s, err := torchRun(cands[i], "hflm", searchPath, 1)
			if err != nil {
				return err
			}
			ms := s.PassS[0] * 1000
			if cands[i].StepMS == 0 || ms < cands[i].StepMS {
				cands[i].StepMS = ms
			}
			logf("torch config %q: 2 items HFLM-style %.0f ms", cands[i].Name, ms)
		}
	}
	best := order[0]
	if b := bench.BestTorch(cands, "fp32"); b >= 0 {
		best = b
	}
	rep.Torch, rep.Search = cands[best], cands
	logf("PyTorch runs with %q", rep.Torch.Label())

	miguRun := func(kern string, whole bool, products string) func(int) (*evalSample, error) {
		return func(passes int) (*evalSample, error) {
			return runEvalJSON(nil, self, "-worker", "eval", "-model", model, "-items", textPath, "-threads", fmt.Sprint(o.threads),
				"-batch", fmt.Sprint(o.evalBatch), "-kernels", kern, "-whole="+fmt.Sprint(whole), "-steps", fmt.Sprint(passes), "-eval-products", products)
		}
	}
	torchSide := func(mode string) func(int) (*evalSample, error) {
		return func(passes int) (*evalSample, error) { return torchRun(rep.Torch, mode, idsPath, passes) }
	}
	lib, err := kernels.Find()
	if err != nil {
		return err
	}
	// migu's products run where eval.Options.Products' auto puts them (ORT's
	// MLAS); where the bf16 library is built, a whole-request side with the
	// weight products in oneDNN's float32 matmul shows what that gives.
	rep.Products = "every product in ORT's MLAS (eval.Options.Products auto)"
	bf16, err := kernels.FindBF16()
	oneDNN := err == nil && bf16 != ""
	rep.Sides = []*evalSide{
		{Name: "migu (shared context, fused kernels)", run: miguRun(lib, false, "")},
		{Name: "migu (shared context, standard ops)", run: miguRun(kernels.Off, false, "")},
		{Name: "migu (whole requests, fused kernels)", run: miguRun(lib, true, "")},
		{Name: "transformers (HFLM: whole requests, batch 8)", run: torchSide("hflm")},
		{Name: "transformers (shared context)", run: torchSide("shared")},
	}
	if lib == "" {
		rep.Sides = slices.Delete(rep.Sides, 0, 1)
		rep.Sides[1].Name = "migu (whole requests, standard ops)"
	}
	if oneDNN && lib != "" {
		rep.Sides = slices.Insert(rep.Sides, 3, &evalSide{Name: "migu (whole requests, fused kernels, oneDNN products)", run: miguRun(lib, true, "onednn")})
	}
	for round := range o.rounds {
		for k := range rep.Sides {
			side := rep.Sides[k]
			if round%2 == 1 {
				side = rep.Sides[len(rep.Sides)-1-k]
			}
			s, err := side.run(o.evalPasses)
			if err != nil {
				return err
			}
			side.Samples = append(side.Samples, s)
			logf("round %d %s: passes %v s", round+1, side.Name, s.PassS)
		}
	}
	ref := rep.Sides[len(rep.Sides)-2].Samples[0].LL // transformers, HFLM
	for _, side := range rep.Sides {
		for _, s := range side.Samples {
			if len(s.LL) != len(ref) {
				return fmt.Errorf("%s scored %d requests, transformers %d", side.Name, len(s.LL), len(ref))
			}
			for i := range ref {
				rep.WorstLL = math.Max(rep.WorstLL, math.Abs(s.LL[i]-ref[i]))
			}
		}
	}
	logf("largest log-likelihood difference from transformers (HFLM): %.2g", rep.WorstLL)
	if rep.WorstLL > 1e-2 {
		return fmt.Errorf("the sides disagree: log-likelihoods differ by up to %.3g; they do not score the same thing", rep.WorstLL)
	}
	rep.Minutes = time.Since(start).Minutes()
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	out := o.out
	if os.Getenv("BENCH_OUT") == "" {
		out = filepath.Join("benchmarks", "perf", "RESULTS-eval.md")
	}
	jsonPath := strings.TrimSuffix(out, ".md") + ".json"
	if err := atomicfile.WriteFile(jsonPath, append(raw, '\n')); err != nil {
		return err
	}
	md := evalMarkdown(rep, filepath.Base(jsonPath))
	fmt.Print(md)
	return atomicfile.WriteFile(out, []byte(md))
}

// evalMarkdown is RESULTS-eval.md: one row per side, tokens/s from the
// median pass over all its processes, and the ratio to transformers
// scoring HFLM's way.
func evalMarkdown(rep *evalReport, jsonName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# migu vs transformers: evaluation throughput\n\n")
	fmt.Fprintf(&b, "Written by `make bench BENCH_EVAL=1` on %s (%.1f min). Machine: %s.\n\n", rep.Date, rep.Minutes, rep.Machine)
	fmt.Fprintf(&b, "CPU: %s; flags (/proc/cpuinfo): %s. %d threads on both sides.\n\n", rep.CPU, rep.CPUFlags, rep.Threads)
	fmt.Fprintf(&b, "Log-likelihood scoring of multiple-choice requests (rank classification, as HellaSwag or ARC): %s, %d items of one context and 4 continuations, %d requests, batch %d; contexts %.0f tokens and continuations %.1f tokens on average. "+
		"Throughput counts the tokens HFLM runs, context + continuation − 1 per request (%d per pass), over the median time of a pass over all items; every side runs %d processes, in reversed order every other round.\n\n",
		rep.Model, rep.Items, rep.Requests, rep.Batch, rep.CtxMean, rep.ContMean, rep.Tokens, len(rep.Sides[0].Samples))
	how := "best of the search in " + jsonName
	if len(rep.Search) == 1 {
		how = "the only one BENCH_TORCH_CONFIG named: no search"
	}
	fmt.Fprintf(&b, "migu's products: %s.\n\n", rep.Products)
	fmt.Fprintf(&b, "PyTorch configuration: **%s** (%s). All sides give the same log-likelihoods: largest difference from transformers (HFLM way) %.2g.\n\n", rep.Torch.Label(), how, rep.WorstLL)
	fmt.Fprintf(&b, "| side | pass s (IQR) | tokens/s | vs transformers HFLM | peak RSS MB |\n|---|---|---|---|---|\n")
	var base float64
	for _, side := range rep.Sides {
		if strings.HasPrefix(side.Name, "transformers (HFLM") {
			base = evalMedian(side)
		}
	}
	for _, side := range rep.Sides {
		var times []float64
		rss := 0.0
		for _, s := range side.Samples {
			times = append(times, s.PassS...)
			rss = math.Max(rss, s.PeakRSSMB)
		}
		med := bench.Median(times)
		iqr := (bench.Quantile(times, 0.75) - bench.Quantile(times, 0.25)) / med * 100
		fmt.Fprintf(&b, "| %s | %.2f (±%.0f%%) | %.0f | %.2f× | %.0f |\n", side.Name, med, iqr/2, float64(rep.Tokens)/med, base/med, rss)
	}
	return b.String()
}

func evalMedian(side *evalSide) float64 {
	var times []float64
	for _, s := range side.Samples {
		times = append(times, s.PassS...)
	}
	return bench.Median(times)
}
