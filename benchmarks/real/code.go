package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/internal/atomicfile"
)

// codeOptions are the flags of `real code`.
type codeOptions struct {
	common
	records, heldout, items, humaneval, maxNew int
	stdlib                                     string
}

func parseCode(args []string) (*codeOptions, error) {
	o := &codeOptions{}
	fs := flag.NewFlagSet("code", flag.ContinueOnError)
	methods, seeds := o.register(fs, "code", 512)
	fs.IntVar(&o.records, "records", bench.EnvInt("REAL_RECORDS", 1000), "code instruction records to train on")
	fs.IntVar(&o.heldout, "heldout", bench.EnvInt("REAL_HELDOUT", 100), "held-out code records (perplexity)")
	fs.IntVar(&o.items, "items", bench.EnvInt("REAL_ITEMS", 1000), "first N items of HellaSwag, ARC-Challenge and Winogrande each (0: all)")
	fs.IntVar(&o.humaneval, "humaneval", bench.EnvInt("REAL_HUMANEVAL", 164), "first N HumanEval problems (0: none)")
	fs.IntVar(&o.maxNew, "max-new-tokens", bench.EnvInt("REAL_MAX_NEW", 256), "HumanEval: longest completion")
	fs.StringVar(&o.stdlib, "stdlib", bench.EnvOr("REAL_STDLIB", ""), "Python source tree of the code records (default: python3's standard library)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.finish(*methods, *seeds); err != nil {
		return nil, err
	}
	if o.records < 1 || o.heldout < 1 || o.items < 0 || o.humaneval < 0 {
		return nil, fmt.Errorf("-records and -heldout must be positive, -items and -humaneval not negative")
	}
	return o, nil
}

// codeRun is the state of one `real code` invocation.
type codeRun struct {
	o   *codeOptions
	res *CodeResults
	// train and heldout are the data files; heldoutText the held-out
	// functions as text rows.
	train, heldoutText string
}

func runCode(o *codeOptions) error {
	for _, p := range []string{o.migu, o.model, filepath.Join(o.shared, "eval")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%v (build with make build, fetch the model with make smollm2; -shared names the data folder)", err)
		}
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	r := &codeRun{o: o, res: &CodeResults{Machine: bench.Machine(), Started: time.Now().UTC().Format(time.RFC3339), LoadStart: loadAvg()}}
	r.res.Config = CodeConfig{Model: o.model, Methods: o.methods, Seeds: o.seeds, Records: o.records, Heldout: o.heldout,
		Items: o.items, HumanEval: o.humaneval, MaxNewTokens: o.maxNew, LRFull: o.lrFull, LRLoRA: o.lrLoRA, T: o.T,
		Epochs: o.epochs, Batch: o.batch, MaxLen: o.maxLen, Threads: o.threads, LoRAR: o.loraR, LoRAAlpha: o.loraAlpha,
		LoRATargets: o.loraTargets, Resamples: o.resamples, Template: "chat", Recompute: o.recompute}
	if err := r.data(); err != nil {
		return err
	}
	before, err := r.measure("before", 0, o.model, "", nil)
	if err != nil {
		return err
	}
	r.res.Models = append(r.res.Models, *before)
	for _, seed := range o.seeds {
		for _, m := range o.methods {
			tl, model, adapter, err := r.trainOne(m, seed)
			if err != nil {
				return err
			}
			mr, err := r.measure(m, seed, model, adapter, tl)
			if err != nil {
				return err
			}
			r.res.Models = append(r.res.Models, *mr)
		}
	}
	r.res.Finished, r.res.LoadEnd = time.Now().UTC().Format(time.RFC3339), loadAvg()
	if err := r.loadCommands(); err != nil {
		return err
	}
	return writeCode(r.res, o.resultsBase("code"))
}

// data writes the training records (instruction format, rendered with the
// chat template at training time) and the held-out functions as text, a
// seeded split of the records `migu data code-instructions` picks.
func (r *codeRun) data() error {
	o := r.o
	r.train = filepath.Join(o.work, "code-train.jsonl")
	r.heldoutText = filepath.Join(o.work, "code-heldout.jsonl")
	stdlib := o.stdlib
	if stdlib == "" {
		out, err := exec.Command("python3", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").Output()
		if err != nil {
			return fmt.Errorf("finding the Python standard library (give -stdlib): %v", err)
		}
		stdlib = strings.TrimSpace(string(out))
	}
	r.res.Config.Stdlib = stdlib
	stamp := filepath.Join(o.work, "data.json")
	want := fmt.Sprintf(`{"records":%d,"heldout":%d,"stdlib":%q}`, o.records, o.heldout, stdlib)
	if raw, err := os.ReadFile(stamp); err == nil {
		if string(raw) != want {
			return fmt.Errorf("%s holds data made with %s, not %s; give another -work", o.work, raw, want)
		}
		if exists(r.train) && exists(r.heldoutText) {
			return nil
		}
	}
	n := fmt.Sprint(o.records + o.heldout)
	inst, comp := filepath.Join(o.work, "code-all.jsonl"), filepath.Join(o.work, "code-all-completion.jsonl")
	if err := r.migu("data", "code-instructions", "--from", stdlib, "--out", inst, "--limit", n); err != nil {
		return err
	}
	if err := r.migu("data", "code-instructions", "--from", stdlib, "--out", comp, "--limit", n, "--format", "completion"); err != nil {
		return err
	}
	recs, err := readRows(inst)
	if err != nil {
		return err
	}
	comps, err := readRows(comp)
	if err != nil {
		return err
	}
	text := map[string]string{}
	for _, c := range comps {
		text[str(c["source"])] = str(c["prompt"]) + str(c["completion"])
	}
	if len(recs) < o.records+o.heldout {
		return fmt.Errorf("%s: %d records, fewer than -records %d + -heldout %d", inst, len(recs), o.records, o.heldout)
	}
	rand.New(rand.NewPCG(0, 1)).Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	var train, held bytes.Buffer
	for _, rec := range recs[:o.records] {
		delete(rec, "source")
		if err := json.NewEncoder(&train).Encode(rec); err != nil {
			return err
		}
	}
	for _, rec := range recs[o.records:] {
		t, ok := text[str(rec["source"])]
		if !ok {
			return fmt.Errorf("%s: no completion-format record for %s", comp, str(rec["source"]))
		}
		if err := json.NewEncoder(&held).Encode(map[string]string{"text": t, "source": str(rec["source"])}); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(r.heldoutText, held.Bytes()); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(r.train, train.Bytes()); err != nil {
		return err
	}
	return atomicfile.WriteFile(stamp, []byte(want))
}

// trainOne trains one method and seed (or finds the finished run) and
// returns its training log and what to evaluate: a model folder, and an
// adapter for LoRA.
func (r *codeRun) trainOne(method string, seed uint64) (*TrainLog, string, string, error) {
	o := r.o
	dir := filepath.Join(o.work, fmt.Sprintf("seed-%d", seed), o.runName(method))
	if !exists(filepath.Join(dir, "run.json")) {
		if err := os.RemoveAll(dir); err != nil {
			return nil, "", "", err
		}
		args := []string{"train", "--model", o.model, "--data", r.train, "--out", dir, "--template", "chat",
			"--lr", fmt.Sprint(o.lr(method)), "--epochs", fmt.Sprint(o.epochs), "--batch-size", fmt.Sprint(o.batch),
			"--max-len", fmt.Sprint(o.maxLen), "--seed", fmt.Sprint(seed), "--threads", fmt.Sprint(o.threads), "--schedule", "constant", "--recompute", o.recompute}
		if isLoRA(method) {
			args = append(args, "--method", "lora", "--lora-r", fmt.Sprint(o.loraR), "--lora-alpha", fmt.Sprint(o.loraAlpha), "--lora-targets", o.loraTargets)
		} else {
			args = append(args, "--method", "full")
		}
		if strings.HasSuffix(method, "+migu") {
			args = append(args, "--migu", fmt.Sprint(o.T))
		}
		t, err := r.run(os.Stderr, args...)
		if err != nil {
			return nil, "", "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "wall_seconds"), []byte(fmt.Sprint(t.Wall, t.CPU, t.PeakRSSMB)), 0o644); err != nil {
			return nil, "", "", err
		}
	}
	tl, err := readTrainLog(dir)
	if err != nil {
		return nil, "", "", err
	}
	tl.LR = o.lr(method)
	if isLoRA(method) {
		return tl, o.model, filepath.Join(dir, "adapter"), nil
	}
	return tl, filepath.Join(dir, "model"), "", nil
}

// runName names a method's training run by everything that changes it,
// so that variants (another lr or T) sharing a work folder never reuse
// each other's runs.
func (o *codeOptions) runName(method string) string {
	name := fmt.Sprintf("%s-lr%g-e%d-b%d-len%d", fileSafe(method), o.lr(method), o.epochs, o.batch, o.maxLen)
	if strings.HasSuffix(method, "+migu") {
		name += fmt.Sprintf("-T%g", o.T)
	}
	if isLoRA(method) {
		name += fmt.Sprintf("-r%d-a%g-%s", o.loraR, o.loraAlpha, strings.ReplaceAll(o.loraTargets, ",", ""))
	}
	return name
}

// readTrainLog reads a run folder's metrics.jsonl: the loss of every step.
func readTrainLog(dir string) (*TrainLog, error) {
	rows, err := readRows(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	tl := &TrainLog{}
	for _, row := range rows {
		loss, _ := row["loss"].(float64)
		secs, _ := row["seconds"].(float64)
		tl.Loss = append(tl.Loss, loss)
		tl.StepSeconds += secs
	}
	tl.Steps = len(tl.Loss)
	if raw, err := os.ReadFile(filepath.Join(dir, "wall_seconds")); err == nil {
		fmt.Sscan(string(raw), &tl.WallSeconds, &tl.CPUSeconds, &tl.PeakRSSMB)
	}
	return tl, nil
}

// measure scores one model (cached in the work folder as JSON): the
// general suite with per-item outcomes through `migu eval --log-samples`,
// and held-out code perplexity and HumanEval per item in this process.
func (r *codeRun) measure(method string, seed uint64, model, adapter string, tl *TrainLog) (*ModelResult, error) {
	o := r.o
	name := fmt.Sprintf("before-items%d-heldout%d-humaneval%d-new%d", o.items, o.heldout, o.humaneval, o.maxNew)
	if method != "before" {
		name = fmt.Sprintf("seed-%d-%s-items%d-heldout%d-humaneval%d-new%d", seed, o.runName(method), o.items, o.heldout, o.humaneval, o.maxNew)
	}
	cache := filepath.Join(o.work, "measure", name+".json")
	if raw, err := os.ReadFile(cache); err == nil {
		var mr ModelResult
		if err := json.Unmarshal(raw, &mr); err == nil {
			mr.Train = tl
			return &mr, nil
		}
	}
	mr := &ModelResult{Method: method, Seed: seed, Train: tl, Seconds: map[string]float64{}}
	samples := filepath.Join(o.work, "measure", name+"-suite.jsonl")
	args := []string{"eval", "--model", model, "--tasks", strings.Join(suiteTasks, ","), "--data-dir", filepath.Join(o.shared, "eval"),
		"--log-samples", samples, "--threads", fmt.Sprint(o.threads), "--json"}
	if o.items > 0 {
		args = append(args, "--limit", fmt.Sprint(o.items))
	}
	if adapter != "" {
		args = append(args, "--adapter", adapter)
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	var scores bytes.Buffer
	if _, err := r.run(&scores, args...); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(o.work, "measure", name+"-suite.json"), scores.Bytes()); err != nil {
		return nil, err
	}
	mr.Seconds["suite"] = time.Since(start).Seconds()
	var err error
	if mr.Items, err = readSuiteSamples(samples); err != nil {
		return nil, err
	}
	if err := measureInProcess(mr, model, adapter, r.heldoutText, o.humaneval, filepath.Join(o.shared, "eval", "HumanEval.jsonl.gz"), o.maxNew, o.threads); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(mr)
	if err != nil {
		return nil, err
	}
	return mr, atomicfile.WriteFile(cache, raw)
}

// suiteTasks are the general benchmarks, in the order they are reported.
var suiteTasks = []string{"hellaswag", "arc_challenge", "winogrande"}

// readSuiteSamples turns --log-samples rows into each task's per-item
// suite metric (acc_norm for HellaSwag and ARC, acc for Winogrande) in
// file order.
func readSuiteSamples(path string) (map[string][]float64, error) {
	rows, err := readRows(path)
	if err != nil {
		return nil, err
	}
	out := map[string][]float64{}
	for _, row := range rows {
		task := str(row["task"])
		metric := suiteMetric[task]
		v, ok := row[metric].(float64)
		if !ok {
			return nil, fmt.Errorf("%s: a %s row without %s", path, task, metric)
		}
		out[task] = append(out[task], v)
	}
	return out, nil
}

// suiteMetric is the metric of each task that enters the suite average.
var suiteMetric = map[string]string{"hellaswag": "acc_norm", "arc_challenge": "acc_norm", "winogrande": "acc"}

// migu runs the migu binary; its output goes to this process's.
func (r *codeRun) migu(args ...string) error {
	_, err := r.run(os.Stderr, args...)
	return err
}

// commandsFile is the work folder's log of every command that finished,
// over all invocations, so that the report of a resumed run lists the
// commands behind every number.
const commandsFile = "commands.jsonl"

// run runs the migu binary, standard output to stdout, and appends the
// finished command and its costs to the work folder's log.
func (r *codeRun) run(stdout io.Writer, args ...string) (Timing, error) {
	var lines []string
	t, err := runTimed(r.o.migu, &lines, nil, stdout, args...)
	if err != nil {
		return t, err
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return t, err
	}
	f, err := os.OpenFile(filepath.Join(r.o.work, commandsFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return t, err
	}
	if _, err := f.Write(append(raw, '\n')); err != nil {
		f.Close()
		return t, err
	}
	return t, f.Close()
}

// loadCommands reads the work folder's command log into the results.
func (r *codeRun) loadCommands() error {
	rows, err := readRows(filepath.Join(r.o.work, commandsFile))
	if err != nil {
		return err
	}
	r.res.Commands, r.res.Timings = nil, nil
	for _, row := range rows {
		raw, _ := json.Marshal(row)
		var t Timing
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		r.res.Commands = append(r.res.Commands, t.Command)
		r.res.Timings = append(r.res.Timings, t)
	}
	return nil
}

// Timing is what one command cost: wall time, CPU time (user + system,
// which the machine's other load does not inflate as much) and peak RSS.
type Timing struct {
	Command   string  `json:"command"`
	Wall      float64 `json:"wall_s"`
	CPU       float64 `json:"cpu_s"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
}

// runMigu runs bin with args, its standard output to stdout and its
// standard error to this process's, appends the command line to log and
// its cost to timings (when not nil).
func runMigu(bin string, log *[]string, stdout io.Writer, args ...string) error {
	_, err := runTimed(bin, log, nil, stdout, args...)
	return err
}

func runTimed(bin string, log *[]string, timings *[]Timing, stdout io.Writer, args ...string) (Timing, error) {
	line := bin + " " + strings.Join(quoteAll(args), " ")
	*log = append(*log, line)
	fmt.Fprintln(os.Stderr, "+", line)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return Timing{}, fmt.Errorf("%s: %v", line, err)
	}
	ps := cmd.ProcessState
	t := Timing{Command: line, Wall: time.Since(start).Seconds(), CPU: (ps.UserTime() + ps.SystemTime()).Seconds(), PeakRSSMB: bench.ChildPeakRSSMB(ps)}
	if timings != nil {
		*timings = append(*timings, t)
	}
	return t, nil
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// readRows reads a JSON-lines file into generic rows.
func readRows(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var row map[string]any
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		out = append(out, row)
	}
	return out, sc.Err()
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, os.ErrNotExist)
}

// loadAvg is /proc/loadavg's three load averages ("" where unknown).
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], ", ")
}

func isLoRA(method string) bool { return strings.HasPrefix(method, "lora") }

// fileSafe turns a method name into part of a file name.
func fileSafe(s string) string { return strings.NewReplacer("+", "-", "/", "-", " ", "-").Replace(s) }
