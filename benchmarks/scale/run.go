package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
	"github.com/migu-ml/migu/tokenizer"
)

// result is one process's measurement: an export, or a few training steps
// on one side.
type result struct {
	scenario
	Side    string    `json:"side"` // migu or torch
	Command string    `json:"command,omitempty"`
	WallS   float64   `json:"wall_s,omitempty"`
	StepS   []float64 `json:"step_s,omitempty"`
	Loss    []float64 `json:"loss,omitempty"`
	// PeakRSSMB is the process's peak resident set size in MiB, from the
	// kernel when it exited.
	PeakRSSMB float64 `json:"peak_rss_mb,omitempty"`
	// Note says why a run was skipped or failed; such a run has no numbers.
	Note string `json:"note,omitempty"`
	// Torch is what torch_scale.py reported about itself.
	Torch map[string]any `json:"torch,omitempty"`
}

// ok reports whether the run measured something.
func (r *result) ok() bool { return r.Note == "" }

// stepS is the seconds of a step after warm-up: the median of every step
// but the first (ORT's and PyTorch's first runs are slow), or the only one.
func (r *result) stepS() float64 {
	if len(r.StepS) > 1 {
		return bench.Median(r.StepS[1:])
	}
	return bench.Median(r.StepS)
}

// tokensPerS counts batch × seq tokens a step on both sides, padding-free
// batches as the benchmark makes them.
func (r *result) tokensPerS() float64 {
	return float64(r.Batch*r.Seq) / r.stepS()
}

// shapeInfo is what the report says of a shape's checkpoint.
type shapeInfo struct {
	Params int64 `json:"params"`
	// HFBytes is the size of model.safetensors from `migu init`.
	HFBytes int64 `json:"hf_bytes"`
	// FrozenBytes is model.onnx.data of the exported model folder: the
	// weights as training holds them frozen.
	FrozenBytes int64  `json:"frozen_bytes,omitempty"`
	DType       string `json:"hf_dtype"`
}

// report is RESULTS.json.
type report struct {
	Date        string                `json:"date"`
	Machine     string                `json:"machine"`
	CPU         string                `json:"cpu"`
	Command     string                `json:"command"`
	Threads     int                   `json:"threads"`
	TorchConfig bench.TorchConfig     `json:"torch_config"`
	ExportDType string                `json:"export_dtype"`
	Shapes      map[string]*shapeInfo `json:"shapes"`
	Results     []*result             `json:"results"`
	Minutes     float64               `json:"minutes"`
	Partial     bool                  `json:"partial,omitempty"`
}

// pickTorchConfig is the first benchmarks/perf candidate whose name holds
// want, or the system BLAS with a note when none does (openblas.sh not run).
func pickTorchConfig(want string, threads int) bench.TorchConfig {
	cands := bench.TorchCandidates(threads)
	for _, c := range cands {
		if strings.Contains(c.Name, want) {
			return c
		}
	}
	c := cands[0]
	c.Note = fmt.Sprintf("no configuration matches %q (run benchmarks/perf/openblas.sh)", want)
	return c
}

func drive(o *options) error {
	start := time.Now()
	scen := o.scenarios()
	if len(scen) == 0 {
		return errors.New("no scenario matches the shapes and cases asked for")
	}
	migu, err := filepath.Abs(o.migu)
	if err != nil {
		return err
	}
	if _, err := os.Stat(migu); err != nil && hasSide(o, "migu") {
		return fmt.Errorf("no migu binary at %s: build it first (make build)", migu)
	}
	script, err := filepath.Abs(filepath.Join("benchmarks", "scale", "torch_scale.py"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	rep := &report{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Machine: bench.Machine(), CPU: bench.CPUName(),
		Command: "make scale " + scaleVars(), Threads: o.threads, TorchConfig: pickTorchConfig(o.torchConfig, o.threads),
		ExportDType: o.exportDType, Shapes: map[string]*shapeInfo{}}
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, a...)...)
	}
	write := func(done bool) error {
		rep.Minutes, rep.Partial = time.Since(start).Minutes(), !done
		return writeReport(o.out, rep)
	}

	for _, s := range scen {
		info, err := prepareShape(o, s.Shape, rep.Shapes, logf)
		if err != nil {
			return err
		}
		hf, model := shapeDirs(o, s.Shape)
		if s.Case == "export" {
			if !hasSide(o, "migu") {
				continue
			}
			r := runExport(o, migu, s, hf, model)
			logf("%s export: %s", s.Shape, r.summary())
			rep.Results = append(rep.Results, r)
			info.FrozenBytes = fileSize(filepath.Join(model, modeldir.DataFile))
			if err := write(false); err != nil {
				return err
			}
			continue
		}
		data, err := prepareData(o.work, hf, s)
		if err != nil {
			return err
		}
		for _, side := range o.sides {
			var r *result
			switch {
			case !o.force && needMB(s, info) > bench.MemAvailableMB():
				r = &result{scenario: s, Side: side, Note: fmt.Sprintf("skipped: needs about %.1f GB, %.1f GB available (SCALE_FORCE=1 runs it)",
					needMB(s, info)*mib/1e9, bench.MemAvailableMB()*mib/1e9)}
			case side == "torch":
				r = runTorch(o, rep.TorchConfig, script, s, hf)
			default:
				if _, err := os.Stat(filepath.Join(model, modeldir.ManifestFile)); err != nil {
					logf("%s: exporting for training (not measured)", s.Shape)
					if e := runExport(o, migu, scenario{Shape: s.Shape, Case: "export"}, hf, model); !e.ok() {
						return fmt.Errorf("%s export: %s", s.Shape, e.Note)
					}
					info.FrozenBytes = fileSize(filepath.Join(model, modeldir.DataFile))
				}
				r = runMiguTrain(o, migu, s, model, data)
			}
			logf("%s %s %s: %s", s.Shape, s.Case, side, r.summary())
			rep.Results = append(rep.Results, r)
			if err := write(false); err != nil {
				return err
			}
		}
	}
	if err := write(true); err != nil {
		return err
	}
	md, err := os.ReadFile(o.out)
	if err == nil {
		os.Stdout.Write(md)
	}
	return err
}

const mib = 1 << 20

func hasSide(o *options, side string) bool { return slices.Contains(o.sides, side) }

// shapeDirs are a shape's Hugging Face folder and its exported model
// folder (named by the export dtype, so that runs with different dtypes
// do not reuse each other's).
func shapeDirs(o *options, shape string) (hf, model string) {
	dir := filepath.Join(o.work, shape)
	return filepath.Join(dir, "hf"), filepath.Join(dir, "model-"+o.exportDType)
}

// prepareShape makes the shape's checkpoint once (`migu init`'s code, in
// bfloat16) and describes it.
func prepareShape(o *options, shape string, known map[string]*shapeInfo, logf func(string, ...any)) (*shapeInfo, error) {
	if info, ok := known[shape]; ok {
		return info, nil
	}
	hf, model := shapeDirs(o, shape)
	if _, err := os.Stat(filepath.Join(hf, modeldir.ConfigFile)); err != nil {
		logf("%s: migu init --arch llama --preset %s --dtype bf16", shape, shape)
		if err := os.RemoveAll(hf); err != nil {
			return nil, err
		}
		if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: shape, DType: "bf16"}); err != nil {
			return nil, err
		}
	}
	f, err := safetensors.Open(filepath.Join(hf, safetensors.SingleFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info := &shapeInfo{HFBytes: fileSize(filepath.Join(hf, safetensors.SingleFile)), FrozenBytes: fileSize(filepath.Join(model, modeldir.DataFile))}
	for _, name := range f.Names() {
		t, err := f.Info(name)
		if err != nil {
			return nil, err
		}
		info.Params += t.NumElements()
		info.DType = string(t.DType)
	}
	known[shape] = info
	return info, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// needMB is a rough peak for a training run, to skip what cannot fit in
// the memory available now instead of pushing the machine into swap or
// the OOM killer: LoRA the bound (1.25 × frozen weights + 1.5 GB),
// full fine-tuning 16 bytes a parameter plus 1 GB.
func needMB(s scenario, info *shapeInfo) float64 {
	frozen := info.FrozenBytes
	if frozen == 0 {
		frozen = info.HFBytes
	}
	switch s.Case {
	case "lora":
		return (1.25*float64(frozen) + 1.5e9) / mib
	case "full":
		return (16*float64(info.Params) + 1e9) / mib
	}
	return 0
}

// dataRecords is how many text records a data file holds: more than any
// default scenario trains on.
const dataRecords = 64

// prepareData writes (once) a JSON lines file of text records that the
// shape's tokenizer turns into at least s.Seq tokens each, so that
// `migu train --max-len` truncates every one to exactly s.Seq: batches
// without padding, like PyTorch's random ones.
func prepareData(work, hf string, s scenario) (string, error) {
	path := filepath.Join(work, s.Shape, fmt.Sprintf("data-%d.jsonl", s.Seq))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tok, err := tokenizer.Load(filepath.Join(hf, modeldir.TokenizerFile))
	if err != nil {
		return "", err
	}
	lines := tokenizer.SampleCorpus(dataRecords*(s.Seq/4+8), 1)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for rec := 0; rec < dataRecords; rec++ {
		var text string
		for {
			if len(lines) == 0 {
				return "", fmt.Errorf("%s: the generated corpus ran out before %d records of %d tokens", path, dataRecords, s.Seq)
			}
			text, lines = strings.TrimSpace(text+" "+lines[0]), lines[1:]
			ids, err := tok.EncodeIDs(text, false)
			if err != nil {
				return "", err
			}
			if len(ids) >= s.Seq+1 {
				break
			}
		}
		if err := enc.Encode(map[string]string{"text": text}); err != nil {
			return "", err
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// exportArgs are `migu export`'s arguments.
func exportArgs(o *options, hf, out string) []string {
	args := []string{"export", "--from", hf, "--out", out}
	if o.exportDType != "default" {
		args = append(args, "--dtype", o.exportDType)
	}
	return args
}

// runExport exports a shape into a fresh folder, measured, and puts it in
// place of the model folder.
func runExport(o *options, migu string, s scenario, hf, model string) *result {
	tmp := model + ".new"
	os.RemoveAll(tmp)
	args := exportArgs(o, hf, tmp)
	r := &result{scenario: s, Side: "migu", Command: "migu " + strings.Join(args, " ")}
	if err := r.run(nil, migu, args...); err != nil {
		os.RemoveAll(tmp)
		return r
	}
	if err := os.RemoveAll(model); err != nil {
		r.Note = err.Error()
		return r
	}
	if err := os.Rename(tmp, model); err != nil {
		r.Note = err.Error()
	}
	return r
}

// trainArgs are `migu train`'s arguments for a scenario: MIGU off, LoRA on
// q and v with r 8 and α 32, one checkpoint kept; --recompute only when it
// asks for more than the default.
func trainArgs(o *options, s scenario, model, data, runDir string) []string {
	args := []string{"train", "--model", model, "--data", data, "--out", runDir, "--method", s.Case,
		"--batch-size", fmt.Sprint(s.Batch), "--max-len", fmt.Sprint(s.Seq), "--max-steps", fmt.Sprint(s.Steps),
		"--threads", fmt.Sprint(o.threads), "--seed", "0", "--keep", "1"}
	if s.Case == "lora" {
		args = append(args, "--lora-targets", "q,v", "--lora-r", "8", "--lora-alpha", "32")
	}
	if s.Recompute != "" && s.Recompute != "none" {
		args = append(args, "--recompute", s.Recompute)
	}
	return args
}

// runMiguTrain trains in a `migu train` process and reads its step times
// from metrics.jsonl; the run folder (a full fine-tune's is the size of
// the model three times over) is removed afterwards.
func runMiguTrain(o *options, migu string, s scenario, model, data string) *result {
	runDir := filepath.Join(o.work, s.Shape, "run-"+s.Case)
	os.RemoveAll(runDir)
	defer os.RemoveAll(runDir)
	args := trainArgs(o, s, model, data, runDir)
	r := &result{scenario: s, Side: "migu", Command: "migu " + strings.Join(args, " ")}
	if err := r.run(nil, migu, args...); err != nil {
		return r
	}
	raw, err := os.ReadFile(filepath.Join(runDir, "metrics.jsonl"))
	if err == nil {
		r.StepS, r.Loss, err = parseMetrics(raw)
	}
	if err == nil && len(r.StepS) != s.Steps {
		err = fmt.Errorf("%d steps in metrics.jsonl, want %d", len(r.StepS), s.Steps)
	}
	if err != nil {
		r.Note = "failed: " + err.Error()
	}
	return r
}

// parseMetrics reads the step seconds and losses of a metrics.jsonl.
func parseMetrics(raw []byte) (steps, losses []float64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m struct {
			Seconds *float64 `json:"seconds"`
			Loss    float64  `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, nil, fmt.Errorf("metrics.jsonl line %d: %v", n, err)
		}
		if m.Seconds == nil {
			return nil, nil, fmt.Errorf("metrics.jsonl line %d: no seconds", n)
		}
		steps, losses = append(steps, *m.Seconds), append(losses, m.Loss)
	}
	return steps, losses, sc.Err()
}

// torchArgs are torch_scale.py's arguments for a scenario.
func torchArgs(o *options, script string, s scenario, hf string) []string {
	recompute := s.Recompute
	if recompute == "" {
		recompute = "none"
	}
	return []string{script, "--hf", hf, "--method", s.Case, "--dtype", "bf16", "--batch", fmt.Sprint(s.Batch),
		"--seq", fmt.Sprint(s.Seq), "--steps", fmt.Sprint(s.Steps), "--threads", fmt.Sprint(o.threads), "--recompute", recompute}
}

// runTorch trains in a torch_scale.py process.
func runTorch(o *options, cfg bench.TorchConfig, script string, s scenario, hf string) *result {
	args := torchArgs(o, script, s, hf)
	r := &result{scenario: s, Side: "torch", Command: "python " + strings.Join(append([]string{"benchmarks/scale/torch_scale.py"}, args[1:]...), " ")}
	out, err := r.output(cfg.Env, o.python, args...)
	if err != nil {
		return r
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r.Torch); err != nil {
		r.Note = fmt.Sprintf("failed: reading torch_scale.py's result: %v", err)
		return r
	}
	for key, dst := range map[string]*[]float64{"step_s": &r.StepS, "loss": &r.Loss} {
		if vs, ok := r.Torch[key].([]any); ok {
			for _, v := range vs {
				if f, ok := v.(float64); ok {
					*dst = append(*dst, f)
				}
			}
		}
		delete(r.Torch, key)
	}
	delete(r.Torch, "tokens")
	return r
}

// run runs a process to its end, filling the wall time and peak RSS; a
// failure becomes the note, with the end of its error output.
func (r *result) run(env []string, name string, args ...string) error {
	_, err := r.output(env, name, args...)
	return err
}

func (r *result) output(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r.WallS = time.Since(start).Seconds()
	r.PeakRSSMB = bench.ChildPeakRSSMB(cmd.ProcessState)
	if err != nil {
		r.Note = fmt.Sprintf("failed (%v): %s", err, strings.ReplaceAll(bench.LastLines(stderr.String(), 3), "\n", " / "))
	}
	return stdout.String(), err
}

// summary is the one line the driver logs for a result.
func (r *result) summary() string {
	switch {
	case !r.ok():
		return r.Note
	case r.Case == "export":
		return fmt.Sprintf("%.0f s, peak RSS %.2f GB", r.WallS, r.PeakRSSMB*mib/1e9)
	}
	return fmt.Sprintf("%.2f s/step, %.0f tokens/s, peak RSS %.2f GB", r.stepS(), r.tokensPerS(), r.PeakRSSMB*mib/1e9)
}

// scaleVars are the SCALE_* variables set for this run, for the report's
// command line.
func scaleVars() string {
	var parts []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SCALE_") {
			parts = append(parts, kv)
		}
	}
	return strings.Join(parts, " ")
}
