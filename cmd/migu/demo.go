package main

import (
	"github.com/migu-ml/migu/demo"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var opt demo.Options
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the built-in default: continual learning with and without MIGU, no files needed",
		Long: `demo generates three small classification tasks, makes a tiny Llama-style model
with a tokenizer trained on generated text, exports it to ONNX, pre-trains it
briefly, and trains the tasks one after another with full fine-tuning and LoRA,
each with and without MIGU. After every task it tests every task, and at the end
prints per method the average accuracy (AA), backward transfer (BWT) and
forgetting, with the report and plots it wrote (migu continual's). A few
minutes on two CPU cores; everything goes to --out.

--model DIR runs the same sequence on a model folder of yours instead (from
migu export; a causal or seq2seq language model), skipping init, export and
pre-training: with its chat template when it has one, 1 epoch per task and
learning rate 1e-4 unless --epochs and --lr say otherwise.`,
		Example: `  migu demo
  migu demo --methods full,full+migu --out runs/demo-full
  migu demo --model .deps/models/smollm2 --out runs/demo-smollm2 --train-examples 64 --test-examples 50`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.T < 0 || opt.T >= 1 {
				return badinput.Errorf("--migu %g: T must be in [0, 1)", opt.T)
			}
			if opt.LR < 0 || opt.Epochs < 0 || opt.TrainSize < 0 || opt.TestSize < 0 {
				return badinput.Errorf("--lr, --epochs, --train-examples and --test-examples must not be negative")
			}
			if err := g.initORT(); err != nil {
				return err
			}
			if verbose {
				opt.Progress = cmd.ErrOrStderr()
			}
			_, err := demo.Run(cmd.OutOrStdout(), opt)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Out, "out", "runs/demo", "run folder (a previous demo there is replaced)")
	f.StringVar(&opt.Model, "model", "", "run the sequence on this model folder (from migu export) instead of a tiny generated one")
	f.Float64Var(&opt.LR, "lr", 0, "learning rate of the tasks (0: 3e-3 for the demo's own model, 1e-4 with --model)")
	f.IntVar(&opt.Epochs, "epochs", 0, "passes over each task's examples (0: 5 for the demo's own model, 1 with --model)")
	f.IntVar(&opt.TrainSize, "train-examples", 0, "training examples per task (0: 240)")
	f.IntVar(&opt.TestSize, "test-examples", 0, "test examples per task (0: 100)")
	f.StringVar(&opt.Arch, "arch", "llama", "architecture: llama or t5")
	f.StringVar(&opt.Preset, "preset", "tiny", "model size: tiny or small (small takes far longer)")
	f.Uint64Var(&opt.Seed, "seed", 0, "random seed")
	f.Float64Var(&opt.T, "migu", 0.7, "MIGU threshold T: the fraction of output features not updated")
	f.StringVar(&opt.Methods, "methods", "", "methods to compare (default full,full+migu,lora,lora+migu)")
	f.IntVar(&opt.Threads, "threads", 0, "ONNX Runtime threads (0: one per core)")
	f.BoolVar(&verbose, "verbose", false, "print every training step and stage on stderr")
	return cmd
}
