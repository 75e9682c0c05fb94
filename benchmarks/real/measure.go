package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/migu-ml/migu/eval"
	// The exporters register the key/value-cache graphs generation runs.
	_ "github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/onnx/ort"
)

// measureInProcess adds the per-item code measurements to mr: the
// log-likelihood and token count of every held-out function (rolling
// windows, as `migu eval --task perplexity` scores a corpus, one document
// at a time so that documents can be resampled) and, for the first
// humaneval problems, whether the greedy completion passes its tests in
// the sandbox (`migu eval --task humaneval` reports only the mean). It
// uses the eval package directly because the CLI reports neither per
// item.
func measureInProcess(mr *ModelResult, model, adapter, heldout string, humaneval int, humanevalPath string, maxNew, threads int) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	start := time.Now()
	m, err := eval.Open(model, eval.Options{Adapter: adapter, Threads: threads})
	if err != nil {
		return err
	}
	mr.Seconds["open"] = time.Since(start).Seconds()
	defer m.Close()
	ctx := context.Background()
	rows, err := readRows(heldout)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "real-ppl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	start, cpu := time.Now(), cpuSeconds()
	for i, row := range rows {
		p := filepath.Join(tmp, fmt.Sprintf("doc-%d.txt", i))
		if err := atomicfile.WriteFile(p, []byte(str(row["text"]))); err != nil {
			return err
		}
		res, err := eval.Perplexity(ctx, m, p, eval.PerplexityOptions{})
		if err != nil {
			return fmt.Errorf("%s row %d: %v", heldout, i+1, err)
		}
		mr.CodeLogLik = append(mr.CodeLogLik, res.LogLik)
		mr.CodeTokens = append(mr.CodeTokens, res.Tokens)
	}
	mr.Seconds["code_ppl"], mr.Seconds["code_ppl_cpu"] = time.Since(start).Seconds(), cpuSeconds()-cpu
	fmt.Fprintf(os.Stderr, "code perplexity: %d held-out documents, %.1f s\n", len(rows), mr.Seconds["code_ppl"])
	if humaneval == 0 {
		return nil
	}
	problems, err := eval.ReadHumanEval(humanevalPath)
	if err != nil {
		return err
	}
	problems = problems[:min(humaneval, len(problems))]
	prompts := make([]string, len(problems))
	for i, p := range problems {
		prompts[i] = p.Prompt
	}
	start, cpu = time.Now(), cpuSeconds()
	gens, err := m.Generate(ctx, prompts, eval.GenOptions{MaxNewTokens: maxNew, Stop: eval.HumanEvalStops})
	if err != nil {
		return err
	}
	mr.Seconds["humaneval_generate"], mr.Seconds["humaneval_generate_cpu"] = time.Since(start).Seconds(), cpuSeconds()-cpu
	completions := make([][]string, len(problems))
	for i, g := range gens {
		completions[i] = []string{g.Text}
	}
	start = time.Now()
	run, err := eval.RunHumanEval(ctx, problems, completions, eval.HumanEvalOptions{})
	if err != nil {
		return err
	}
	mr.Seconds["humaneval_run"] = time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "humaneval: %d problems, generation %.1f s, tests %.1f s (sandbox: %s)\n", len(problems), mr.Seconds["humaneval_generate"], mr.Seconds["humaneval_run"], run.Isolation)
	for _, p := range run.Passed {
		mr.HumanEval = append(mr.HumanEval, b2f(p[0]))
	}
	return nil
}

// cpuSeconds is this process's user + system time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
