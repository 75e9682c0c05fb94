package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/mpi"
	"github.com/spf13/cobra"
)

func newContinualCmd(g *globalFlags) *cobra.Command {
	o := continual.DefaultOptions()
	T := o.Job.Train.T
	var (
		spec, dataDir, methods, seeds, method string
		trainSamples, testSamples, valSamples int
		asJSON                                bool
		job                                   *jobFlags
	)
	cmd := &cobra.Command{
		Use:   "continual --model MODEL_DIR --sequence SEQ.yaml|order1…order6 --out RUN_DIR [--methods …]",
		Short: "Train a sequence of tasks one after another and measure what each method learned and forgot",
		Long: `continual trains a model on the tasks of a sequence in order, and after each
task evaluates every task of the sequence: the accuracy matrix R[i][j]
(accuracy on task j after training task i, with the starting model as row 0).
From it come average accuracy (AA), backward transfer (BWT), forgetting and
forward transfer (FWT), for every method and seed, in RUN_DIR/report.md,
RUN_DIR/results.json and PNG plots (accuracy heatmap, each task's accuracy over
the sequence, MIGU's mask overlap between tasks per layer).

A sequence is a YAML file (name, data_dir, train_samples, test_samples, tasks
with name/train/test/labels; a task given by name only is a CL-benchmark task)
or a built-in order of the CL benchmark: order1–3 (standard) and order4–6 (long,
1000 training rows per task). Tasks whose data is absent are skipped and the
report says so. The first task of a sequence trains without MIGU's mask; full
fine-tuning starts each task from the previous task's model, LoRA continues one
adapter. Ctrl-C checkpoints; --resume continues at the task and step where the
run stopped, never training a finished task again. RUN_DIR is locked while a run
uses it. Every number is checked against the range its flag's help gives before
anything is written.`,
		Example: `  migu continual --model ./llama --sequence order1 --out runs/cl --methods full,full+migu --test-samples 200
  migu continual --model ./t5 --sequence seq.yaml --out runs/cl --methods ` + continual.AllMethods + ` --seeds 1,2,3
  migu continual --model ./llama --sequence seq.yaml --out runs/cl --resume`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if !f.Changed("methods") {
				methods = method
				if f.Changed("migu") {
					methods += "+migu"
				}
			}
			var err error
			if o.Methods, err = continual.ParseMethods(methods); err != nil {
				return err
			}
			if o.Seeds, err = parseSeeds(seeds); err != nil {
				return err
			}
			o.Job.Train.T = T
			if err := job.settle(); err != nil {
				return err
			}
			if spec == "" {
				return badinput.Errorf("continual needs --sequence SEQ.yaml or a built-in order (order1 … order6)")
			}
			if dataDir == "" {
				dataDir = continual.DefaultDataDir()
			}
			seq, err := continual.Resolve(spec, dataDir)
			if err != nil {
				return err
			}
			if f.Changed("train-samples") {
				seq.TrainSamples = trainSamples
			}
			if f.Changed("test-samples") {
				seq.TestSamples = testSamples
			}
			if f.Changed("val-samples") {
				seq.ValSamples = valSamples
			}
			seq.MaxLineBytes = o.Job.MaxLineBytes
			if err := g.initORT(); err != nil {
				return err
			}
			o.Progress = cmd.ErrOrStderr()
			if f, ok := o.Progress.(*os.File); ok {
				if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
					o.Job.Progress, o.Job.Terminal = o.Progress, true
				}
			}
			comm, err := mpi.Join()
			if err != nil {
				return err
			}
			if comm != nil {
				o.Job.Train.Group = comm
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := continual.Run(ctx, seq, o)
			if err != nil {
				return err
			}
			if comm != nil {
				if err := comm.Finalize(); err != nil || comm.Rank() > 0 {
					return err // rank 0 reports
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			if rep.Stopped {
				fmt.Fprintf(out, "stopped; continue with: migu continual … --out %s --resume\n", o.Out)
				return nil
			}
			for _, s := range rep.Skipped {
				fmt.Fprintf(out, "skipped task %s: %s\n", s.Task, s.Reason)
			}
			for _, w := range rep.Warnings {
				fmt.Fprintf(out, "warning: %s\n", w)
			}
			fmt.Fprintf(out, "%s: %s\n\n%s", rep.Sequence, strings.Join(rep.Tasks, " → "), rep.ComparisonTable())
			fmt.Fprintf(out, "report: %s\nresults: %s\nplots: %d in %s\n", rep.ReportPath, rep.ResultsPath, len(rep.Plots), rep.Out+"/"+continual.PlotsDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "starting model folder (from migu export)")
	f.StringVar(&spec, "sequence", "", "sequence file (YAML) or a built-in order: order1 … order6")
	f.StringVar(&o.Out, "out", "", "run folder: new, empty, or an earlier continual run's (with --resume)")
	f.StringVar(&dataDir, "data-dir", "", "the CL benchmark's folder for built-in orders (default: $"+continual.DataDirEnv+", else shared/data/cl_benchmark beside the working directory or a parent)")
	f.StringVar(&methods, "methods", "", "methods to compare, e.g. "+continual.AllMethods+" (default: --method, with +migu when --migu is given)")
	f.StringVar(&method, "method", "full", "full or an adapter ("+strings.Join(adapters.Names(), ", ")+"), when --methods is not given")
	f.StringVar(&seeds, "seeds", "", "comma-separated seeds, one run of every method per seed (default: --seed)")
	f.StringVar(&o.Score, "score", o.Score, "rank (the label with the highest log-likelihood), generate (exact match of the greedy answer) or both")
	f.IntVar(&trainSamples, "train-samples", 0, "training rows drawn per task, ≥ 0 (0: every row; the long orders default to 1000)")
	f.IntVar(&testSamples, "test-samples", 0, "test rows drawn per task, ≥ 0 (0: every row)")
	f.IntVar(&valSamples, "val-samples", 0, "rows of each task's training file held out as a validation split, scored like the test rows (validation-rank); ≥ 0, 0: none")
	f.BoolVar(&o.Resume, "resume", false, "continue the interrupted run in --out")
	f.BoolVar(&o.KeepModels, "keep-models", false, "keep every task's model folder and checkpoints (default: only what the next task needs)")
	f.IntVar(&o.EvalBatch, "eval-batch-size", o.EvalBatch, "sequences per evaluation forward run, ≥ 0 (0: 8)")
	f.BoolVar(&asJSON, "json", false, "print results.json instead of the table")
	// Training flags, as migu train has them.
	f.Float64Var(&T, "migu", T, "MIGU's threshold T in [0, 1) for the +migu methods: the fraction of each layer's output features NOT updated")
	addAdapterFlags(cmd, o.Job.Adapter)
	f.StringVar(&o.Job.Template, "template", "", "chat renders each row as a user turn (the CL prompt) and an assistant turn (the label) with the model's chat template, in training and evaluation; alpaca (the default) and plain leave the CL prompt as it is")
	job = addJobFlags(cmd, &o.Job, true)
	f.Uint64Var(&o.Job.Seed, "seed", o.Job.Seed, "random seed when --seeds is not given")
	return cmd
}

// parseSeeds reads a comma-separated list of seeds ("" gives none).
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, badinput.Errorf("--seeds: %q is not a non-negative integer", p)
		}
		out = append(out, v)
	}
	return out, nil
}
