package eval

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/sandbox"
)

// HumanEvalStops are the stop strings of the HumanEval paper: a completion
// ends where a new top-level statement begins.
var HumanEvalStops = []string{"\nclass", "\ndef", "\n#", "\nif", "\nprint"}

// HumanEvalProblem is one row of HumanEval.jsonl(.gz).
type HumanEvalProblem struct {
	TaskID            string `json:"task_id"`
	Prompt            string `json:"prompt"`
	CanonicalSolution string `json:"canonical_solution"`
	Test              string `json:"test"`
	EntryPoint        string `json:"entry_point"`
}

// Program is the Python program that checks a completion: the prompt, the
// completion, the problem's tests and the call of check on the entry point.
func (p HumanEvalProblem) Program(completion string) string {
	return p.Prompt + completion + "\n" + p.Test + "\n" + "check(" + p.EntryPoint + ")\n"
}

// ReadHumanEval reads the HumanEval problems of a JSON-lines file, gzipped
// or not (recognised by its content). A row that is not a JSON object with
// the five string fields is a bad-input error naming file:line.
func ReadHumanEval(path string) ([]HumanEvalProblem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, badinput.Errorf("%s: %v", path, err)
		}
		defer gz.Close()
		r = gz
	}
	return parseHumanEval(r, path)
}

// parseHumanEval parses HumanEval rows; name is the file for messages.
func parseHumanEval(r io.Reader, name string) ([]HumanEvalProblem, error) {
	var out []HumanEvalProblem
	seen := map[string]int{}
	err := jsonRows(r, name, func(line int, row map[string]json.RawMessage) error {
		var p HumanEvalProblem
		for _, f := range []struct {
			key      string
			dst      *string
			nonEmpty bool
		}{{"task_id", &p.TaskID, true}, {"prompt", &p.Prompt, true}, {"canonical_solution", &p.CanonicalSolution, false},
			{"test", &p.Test, true}, {"entry_point", &p.EntryPoint, true}} {
			if err := stringField(row, f.key, f.dst, name, line); err != nil {
				return err
			}
			if f.nonEmpty && *f.dst == "" {
				return badinput.Errorf("%s:%d: field %s is empty", name, line, f.key)
			}
		}
		if first, dup := seen[p.TaskID]; dup {
			return badinput.Errorf("%s:%d: task_id %q repeats line %d", name, line, p.TaskID, first)
		}
		seen[p.TaskID] = line
		out = append(out, p)
		return nil
	})
	if err == nil && len(out) == 0 {
		err = badinput.Errorf("%s: no problems", name)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// jsonRows calls fn with each non-blank line of r parsed as a JSON object
// and its 1-based line number; name is the file for messages.
func jsonRows(r io.Reader, name string, fn func(line int, row map[string]json.RawMessage) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var row map[string]json.RawMessage
		if err := json.Unmarshal(raw, &row); err != nil {
			return badinput.Errorf("%s:%d: not a JSON object: %v", name, line, err)
		}
		if err := fn(line, row); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return badinput.Errorf("%s:%d: %v", name, line+1, err)
	}
	return nil
}

// stringField reads row[key], which must be a JSON string, into dst.
func stringField(row map[string]json.RawMessage, key string, dst *string, name string, line int) error {
	v, ok := row[key]
	if !ok {
		return badinput.Errorf("%s:%d: field %s is missing", name, line, key)
	}
	if err := json.Unmarshal(v, dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return badinput.Errorf("%s:%d: field %s is not a string", name, line, key)
	}
	return nil
}

// HumanEvalOptions configure HumanEvalScores.
type HumanEvalOptions struct {
	// Samples is the number of completions per problem (0: 1).
	Samples int
	// Temperature and TopP sample the completions; temperature 0 is greedy
	// (and then Samples must be 1).
	Temperature, TopP float64
	// MaxNewTokens bounds a completion (0: 512, or half the model's
	// context when that is shorter).
	MaxNewTokens int
	// Timeout and MemoryMB limit each program (0: 10 s and 1024 MiB).
	Timeout  time.Duration
	MemoryMB int
	// Limit takes the first Limit problems (0: all).
	Limit int
	// Workers is the number of programs run at once (0: the CPU count).
	Workers int
	// Sandbox picks the isolation family: auto, bubblewrap or fallback
	// (empty: $MIGU_SANDBOX, else auto).
	Sandbox string
	// K lists the k of pass@k (0 entries: 1 and every power of ten up to
	// Samples); each must be between 1 and Samples.
	K []int
	// Seed seeds the sampling.
	Seed uint64
	// Log, when set, receives a line about the sandbox and the timings.
	Log io.Writer
}

// HumanEvalResult is what a HumanEval evaluation reports: pass@k and the
// sandbox's isolation level that ran the programs.
type HumanEvalResult struct {
	Scores    []Score
	Isolation string
}

// HumanEvalScores generates Samples completions for each HumanEval problem
// of path, runs every program in the sandbox (its own process, time and
// memory limits, no network, a throwaway folder) and reports pass@k with
// the unbiased estimator, averaged over the problems.
func HumanEvalScores(ctx context.Context, m *Model, path string, o HumanEvalOptions) (HumanEvalResult, error) {
	o, err := o.validate()
	if err != nil {
		return HumanEvalResult{}, err
	}
	problems, err := ReadHumanEval(path)
	if err != nil {
		return HumanEvalResult{}, err
	}
	if o.Limit > 0 && o.Limit < len(problems) {
		problems = problems[:o.Limit]
	}
	maxNew := o.MaxNewTokens
	if maxNew == 0 {
		maxNew = min(512, m.MaxLength()/2)
	}
	prompts := make([]string, 0, len(problems)*o.Samples)
	for _, p := range problems {
		for range o.Samples {
			prompts = append(prompts, p.Prompt)
		}
	}
	start := time.Now()
	gens, err := m.Generate(ctx, prompts, GenOptions{MaxNewTokens: maxNew, Temperature: o.Temperature, TopP: o.TopP, Stop: HumanEvalStops, Seed: o.Seed})
	if err != nil {
		return HumanEvalResult{}, err
	}
	completions := make([][]string, len(problems))
	for i := range problems {
		for s := range o.Samples {
			completions[i] = append(completions[i], gens[i*o.Samples+s].Text)
		}
	}
	genTime := time.Since(start)
	start = time.Now()
	run, err := RunHumanEval(ctx, problems, completions, o)
	if err != nil {
		return HumanEvalResult{}, err
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "humaneval: %d problems × %d samples: generation %s, execution %s\n",
			len(problems), o.Samples, genTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	return HumanEvalResult{Scores: PassAtKScores(run.Passed, o.K), Isolation: run.Isolation}, nil
}

// HumanEvalCompletionScores scores ready-made completions, from any
// source, in human-eval's samples format (see ReadCompletions), against
// the problems of problemsPath: every completion runs in the sandbox, and
// pass@k is reported for k = 1 and each power of ten that every problem
// has at least k samples for, as human-eval's evaluate_functional_correctness
// does. With o.Limit only the first Limit problems are scored (completions
// of later ones are ignored); every scored problem needs a completion.
func HumanEvalCompletionScores(ctx context.Context, problemsPath, completionsPath string, o HumanEvalOptions) (HumanEvalResult, error) {
	if o.Limit < 0 || o.Workers < 0 || o.MemoryMB < 0 || o.Timeout < 0 {
		return HumanEvalResult{}, badinput.Errorf("limit, workers, memory and timeout must not be negative")
	}
	problems, err := ReadHumanEval(problemsPath)
	if err != nil {
		return HumanEvalResult{}, err
	}
	completions, err := ReadCompletions(completionsPath, problems)
	if err != nil {
		return HumanEvalResult{}, err
	}
	if o.Limit > 0 && o.Limit < len(problems) {
		problems, completions = problems[:o.Limit], completions[:o.Limit]
	}
	fewest := 0
	for i, c := range completions {
		if len(c) == 0 {
			return HumanEvalResult{}, badinput.Errorf("%s: no completion for %s", completionsPath, problems[i].TaskID)
		}
		if i == 0 || len(c) < fewest {
			fewest = len(c)
		}
	}
	ks := []int{1}
	for k := 10; k <= fewest; k *= 10 {
		ks = append(ks, k)
	}
	start := time.Now()
	run, err := RunHumanEval(ctx, problems, completions, o)
	if err != nil {
		return HumanEvalResult{}, err
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "humaneval: %d problems, %d to %d samples each: execution %s\n",
			len(problems), fewest, maxLen(completions), time.Since(start).Round(time.Millisecond))
	}
	return HumanEvalResult{Scores: PassAtKScores(run.Passed, ks), Isolation: run.Isolation}, nil
}

func maxLen(c [][]string) int {
	n := 0
	for _, s := range c {
		n = max(n, len(s))
	}
	return n
}

// ReadCompletions reads completions in human-eval's samples format: JSON
// lines with a string task_id naming one of problems and a string
// completion (other fields are ignored); a task may have several samples.
// It returns the completions of problems[i] at index i, in file order. A
// line that is not such an object, or that names an unknown task, is a
// bad-input error naming file:line.
func ReadCompletions(path string, problems []HumanEvalProblem) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	defer f.Close()
	return parseCompletions(f, path, problems)
}

// parseCompletions parses samples rows; name is the file for messages.
func parseCompletions(r io.Reader, name string, problems []HumanEvalProblem) ([][]string, error) {
	index := make(map[string]int, len(problems))
	for i, p := range problems {
		index[p.TaskID] = i
	}
	out := make([][]string, len(problems))
	rows := 0
	err := jsonRows(r, name, func(line int, row map[string]json.RawMessage) error {
		var id, completion string
		if err := stringField(row, "task_id", &id, name, line); err != nil {
			return err
		}
		if err := stringField(row, "completion", &completion, name, line); err != nil {
			return err
		}
		i, ok := index[id]
		if !ok {
			return badinput.Errorf("%s:%d: task_id %q is not a problem of the %v file", name, line, id, badinput.Setting("data"))
		}
		out[i] = append(out[i], completion)
		rows++
		return nil
	})
	if err == nil && rows == 0 {
		err = badinput.Errorf("%s: no completions", name)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// validate checks the options and fills defaults.
func (o HumanEvalOptions) validate() (HumanEvalOptions, error) {
	if o.Samples == 0 {
		o.Samples = 1
	}
	switch {
	case o.Samples < 0:
		return o, badinput.Errorf("%v %d: it must be positive", badinput.Setting("samples"), o.Samples)
	case o.Samples > 1 && o.Temperature == 0:
		return o, badinput.Errorf("%v %d with temperature 0 would repeat one greedy completion; give %v (0.2 or 0.8 as in the Codex paper)", badinput.Setting("samples"), o.Samples, badinput.Setting("temperature"))
	case o.Limit < 0 || o.Workers < 0 || o.MemoryMB < 0 || o.Timeout < 0 || o.MaxNewTokens < 0:
		return o, badinput.Errorf("limit, workers, memory, timeout and max new tokens must not be negative")
	}
	if len(o.K) == 0 {
		o.K = []int{1}
		for k := 10; k <= o.Samples; k *= 10 {
			o.K = append(o.K, k)
		}
	}
	for _, k := range o.K {
		if k < 1 || k > o.Samples {
			return o, badinput.Errorf("pass@%d needs 1 ≤ k ≤ samples (%d)", k, o.Samples)
		}
	}
	return o, nil
}

// HumanEvalRun is the outcome of RunHumanEval: Passed[i][j] tells whether
// the j-th completion of problem i passed, Isolation names the sandbox
// level that ran them.
type HumanEvalRun struct {
	Passed    [][]bool
	Isolation string
}

// RunHumanEval runs completions[i][j] (the j-th completion of problem i)
// in the sandbox, o.Workers at a time, and reports which passed. A program
// that fails, times out, runs out of memory or is stopped by the sandbox
// counts as failed; the error is only for a sandbox that cannot run at all
// or a cancelled ctx.
func RunHumanEval(ctx context.Context, problems []HumanEvalProblem, completions [][]string, o HumanEvalOptions) (HumanEvalRun, error) {
	if len(completions) != len(problems) {
		return HumanEvalRun{}, fmt.Errorf("%d problems but completions for %d", len(problems), len(completions))
	}
	sb, err := sandbox.New(sandbox.Options{Level: o.Sandbox})
	if err != nil {
		return HumanEvalRun{}, err
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "humaneval: sandbox %s, %s\n", sb.Python(), sb.Isolation())
	}
	limits := sandbox.Limits{Timeout: o.Timeout, MemoryMB: o.MemoryMB}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	type job struct{ i, j int }
	jobs := make(chan job)
	passed := make([][]bool, len(problems))
	for i := range problems {
		passed[i] = make([]bool, len(completions[i]))
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for jb := range jobs {
				res, err := sb.Run(ctx, problems[jb.i].Program(completions[jb.i][jb.j]), limits)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s sample %d: %w", problems[jb.i].TaskID, jb.j, err)
					}
					mu.Unlock()
					continue
				}
				passed[jb.i][jb.j] = res.Status == sandbox.Passed
			}
		}()
	}
feed:
	for i := range problems {
		for j := range completions[i] {
			select {
			case jobs <- job{i, j}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return HumanEvalRun{}, err
	}
	return HumanEvalRun{Passed: passed, Isolation: sb.Isolation()}, firstErr
}

// PassAtK is the unbiased estimator of pass@k from n samples of which c
// passed: 1 − C(n−c, k) / C(n, k), computed as 1 − ∏_{i=n−c+1}^{n} (1 − k/i)
// so that no binomial coefficient overflows.
func PassAtK(n, c, k int) float64 {
	if n-c < k {
		return 1
	}
	prod := 1.0
	for i := n - c + 1; i <= n; i++ {
		prod *= 1 - float64(k)/float64(i)
	}
	return 1 - prod
}

// PassAtKScores turns per-problem pass/fail lists into one score per k:
// the mean over problems of PassAtK, with lm-eval's standard error of the
// mean.
func PassAtKScores(passed [][]bool, ks []int) []Score {
	var out []Score
	for _, k := range ks {
		per := make([]float64, len(passed))
		for i, samples := range passed {
			c := 0
			for _, ok := range samples {
				if ok {
					c++
				}
			}
			per[i] = PassAtK(len(samples), c, k)
		}
		out = append(out, Score{Task: "humaneval", Metric: "pass@" + strconv.Itoa(k), Value: Mean(per), Stderr: MeanStderr(per), N: len(per)})
	}
	return out
}
