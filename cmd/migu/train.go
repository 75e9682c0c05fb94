package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/train"
	"github.com/spf13/cobra"
)

func newTrainCmd(g *globalFlags) *cobra.Command {
	o := finetune.JobOptions{Train: train.Config{Optim: train.DefaultAdamW()}}
	var T float64
	var mode, targets string
	cmd := &cobra.Command{
		Use:   "train --model MODEL_DIR --data FILE --out RUN_DIR [--method full|lora] [--migu T]",
		Short: "Fine-tune a model folder on a data file: all weights or LoRA, with or without MIGU",
		Long: `train fine-tunes a model folder (from migu export) on a JSON lines or JSON array
file of instruction, classification, text or chat records ({"messages": [{"role",
"content"}, …]}). Chat records are rendered with the model's chat template
(tokenizer_config.json, or --chat-template FILE) and learnt on the assistant
turns only; --template chat formats instruction and classification records as
one user and one assistant turn the same way. One ONNX Runtime Run per
micro-batch computes loss, gradients and MIGU's magnitudes; Go runs AdamW and
the masks. Checkpoints (atomic, checksummed) go to RUN_DIR/checkpoints; Ctrl-C
checkpoints and stops; --resume continues. A finished run writes RUN_DIR/model
(full) or RUN_DIR/adapter (LoRA, PEFT format), metrics.jsonl and run.json.`,
		Example: `  migu train --model ./llama --data train.jsonl --out runs/a --migu 0.7 --epochs 1
  migu train --model ./t5 --data cls.json --out runs/b --method lora --lora-targets q,v --migu 0.7
  migu train --model ./llama --data train.jsonl --out runs/a --resume
  migu train --model ./smollm2 --data chats.jsonl --out runs/c --chat-template chatml.jinja`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("migu") {
				o.Train.UseMIGU, o.Train.T = true, T
			}
			m, err := migu.ParseMode(mode)
			if err != nil {
				return err
			}
			o.Train.Mode = m
			if err := train.CheckRecompute(o.Train.Recompute, nil); err != nil {
				return err
			}
			if o.LoRA.Targets, err = lora.ParseTargets(targets); err != nil {
				return err
			}
			if err := g.initORT(); err != nil {
				return err
			}
			o.Progress = cmd.ErrOrStderr()
			if f, ok := o.Progress.(*os.File); ok {
				if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
					o.Terminal = true
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := finetune.RunJob(ctx, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.Stopped {
				fmt.Fprintf(out, "stopped at step %d; checkpoint %s; continue with --resume\n", res.Steps, res.Checkpoint)
				return nil
			}
			fmt.Fprintf(out, "trained %d steps (%s): loss %.4f → %.4f; wrote %s\n", res.Steps, res.Method, res.FirstLoss, res.LastLoss, res.Output)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model folder (from migu export)")
	f.StringVar(&o.Data, "data", "", "training data: .jsonl or .json (instruction, classification, text or chat records)")
	f.StringVar(&o.Template, "template", "", "how records become text: chat (the model's chat template, loss on the assistant turns; the default for chat records), alpaca (the default otherwise) or plain")
	f.StringVar(&o.ChatTemplate, "chat-template", "", "Jinja chat template file to use instead of the model folder's (implies --template chat)")
	f.StringVar(&o.Out, "out", "", "run folder")
	f.StringVar(&o.Method, "method", "full", "full (all weights) or lora")
	f.Float64Var(&T, "migu", 0.7, "turn MIGU on with threshold T: the fraction of each layer's output features NOT updated")
	f.StringVar(&mode, "migu-mode", "grad", "grad (mask the gradient, as the authors' code) or update (masked columns do not move)")
	f.BoolVar(&o.Unmasked, "migu-unmasked", false, "compute MIGU statistics but do not mask (the first task of a sequence)")
	f.BoolVar(&o.Train.SkipPaddingTaps, "migu-skip-padding", false, "leave padding positions out of the magnitudes")
	f.IntVar(&o.LoRA.R, "lora-r", 8, "LoRA rank")
	f.Float64Var(&o.LoRA.Alpha, "lora-alpha", 32, "LoRA alpha (scaling alpha/r)")
	f.Float64Var(&o.LoRA.Dropout, "lora-dropout", 0, "LoRA dropout")
	f.StringVar(&targets, "lora-targets", "q,v", "roles LoRA adapts: q,k,v,o,ffn_in,ffn_gate,ffn_out,head, or all")
	f.IntVar(&o.Epochs, "epochs", 1, "passes over the data")
	f.Int64Var(&o.MaxSteps, "max-steps", 0, "stop after N optimizer steps (0: run the epochs)")
	f.Float64Var(&o.Train.Optim.LR, "lr", 1e-4, "peak learning rate")
	f.Float64Var(&o.Train.Optim.WeightDecay, "weight-decay", 0.01, "AdamW decoupled weight decay")
	f.StringVar(&o.Train.Schedule, "schedule", "constant", "constant, linear or cosine (with --warmup)")
	f.Int64Var(&o.Train.Warmup, "warmup", 0, "linear warm-up steps")
	f.Float64Var(&o.Train.ClipNorm, "clip", 1.0, "clip the global gradient norm (0: off)")
	f.IntVar(&o.Train.GradAccum, "grad-accum", 1, "micro-batches per optimizer step")
	f.IntVar(&o.BatchSize, "batch-size", 8, "examples per micro-batch")
	f.IntVar(&o.MaxLen, "max-len", 0, "truncate sequences to N tokens (default: the model's limit or 512)")
	f.IntVar(&o.Bucket, "bucket", 0, "group examples of similar length (e.g. 64) to cut padding")
	f.Uint64Var(&o.Seed, "seed", 0, "random seed (data order, LoRA init, MLM masking)")
	f.StringVar(&o.Train.Objective, "objective", "", "clm, seq2seq, mlm or cls (default: the model's)")
	f.IntVar(&o.Train.Threads, "threads", 0, "ONNX Runtime threads (0: one per core)")
	f.StringVar(&o.MemoryLimit, "memory-limit", "auto", "refuse to start when the planned memory is above this: auto (what the machine has available), off, or a size such as 20GB")
	f.StringVar(&o.Train.Recompute, "recompute", train.RecomputeNone, "none, or layers: keep only each transformer block's input for the backward pass and recompute the block there (less memory, more compute; same gradients)")
	f.Int64Var(&o.SaveEvery, "save-every", 0, "checkpoint every N steps (always at the end)")
	f.IntVar(&o.Keep, "keep", 3, "checkpoints to keep (0: all)")
	f.BoolVar(&o.Resume, "resume", false, "continue from the newest good checkpoint in --out")
	f.BoolVar(&o.SkipBadLines, "skip-bad-lines", false, "count and skip data records that are not JSON, not UTF-8, too long or lack a field")
	f.IntVar(&o.MaxLineBytes, "max-line-bytes", 0, maxLineBytesHelp)
	return cmd
}

// maxLineBytesHelp describes --max-line-bytes (train and continual).
var maxLineBytesHelp = fmt.Sprintf("refuse data lines (JSON-array elements) longer than N bytes, or skip them with --skip-bad-lines; range ≥ 0 (0: %d, 16 MiB)", data.DefaultMaxLineBytes)
