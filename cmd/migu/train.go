package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/mpi"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
	"github.com/spf13/cobra"
)

func newTrainCmd(g *globalFlags) *cobra.Command {
	o := finetune.DefaultJobOptions()
	// T is MIGU's threshold; MIGU is on only when --migu gives it, so the
	// flag shows no default.
	var T float64
	var job *jobFlags
	cmd := &cobra.Command{
		Use:   "train --model MODEL_DIR --data FILE --out RUN_DIR [--method full|lora|…] [--migu T]",
		Short: "Fine-tune a model folder on a data file: all weights or an adapter (LoRA, …), with or without MIGU",
		Long: `train fine-tunes a model folder (from migu export) on a JSON lines or JSON array
file of instruction, classification, text or chat records ({"messages": [{"role",
"content"}, …]}). Chat records are rendered with the model's chat template
(tokenizer_config.json, or --chat-template FILE) and learnt on the assistant
turns only; --template chat formats instruction and classification records as
one user and one assistant turn the same way. One ONNX Runtime Run per
micro-batch computes loss, gradients and MIGU's magnitudes; Go runs AdamW and
the masks. Checkpoints (atomic, checksummed) go to RUN_DIR/checkpoints; Ctrl-C
checkpoints and stops; --resume continues (on a finished run it says so and
changes nothing). A finished run writes RUN_DIR/model (full) or RUN_DIR/adapter
(adapters, PEFT format), metrics.jsonl and run.json. RUN_DIR is locked while a run
uses it; it may not be the model folder or a non-empty folder of something
else. Every number is checked against the range its flag's help gives before
anything is written.`,
		Example: `  migu train --model ./llama --data train.jsonl --out runs/a --migu 0.7 --epochs 1
  migu train --model ./t5 --data cls.json --out runs/b --method lora --lora-targets q,v --migu 0.7
  migu train --model ./llama --data train.jsonl --out runs/a --resume
  migu train --model ./smollm2 --data chats.jsonl --out runs/c --chat-template chatml.jinja`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("migu") {
				o.Train.UseMIGU, o.Train.T = true, T
			}
			if err := job.settle(); err != nil {
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
			comm, err := mpi.Join()
			if err != nil {
				return err
			}
			if comm != nil {
				o.Train.Group = comm
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := finetune.RunJob(ctx, o)
			if err != nil {
				return err
			}
			if comm != nil {
				if err := comm.Finalize(); err != nil || comm.Rank() > 0 {
					return err // rank 0 reports
				}
			}
			out := cmd.OutOrStdout()
			if res.Data.Skipped > 0 {
				fmt.Fprintf(out, "skipped %d bad records of %s (--skip-bad-lines)\n", res.Data.Skipped, o.Data)
			}
			if res.AlreadyFinished {
				fmt.Fprintf(out, "already finished at step %d (loss %.4f → %.4f); %s is unchanged\n", res.Steps, res.FirstLoss, res.LastLoss, o.Out)
				return nil
			}
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
	f.StringVar(&o.Out, "out", "", "run folder: new, empty, or one of an earlier run (with --resume)")
	f.StringVar(&o.Method, "method", o.Method, "full (all weights) or an adapter: "+strings.Join(adapters.Names(), ", "))
	f.Float64Var(&T, "migu", 0, "turn MIGU on with threshold T in [0, 1): the fraction of each layer's output features NOT updated (the paper's is 0.7); off when not given")
	f.BoolVar(&o.Unmasked, "migu-unmasked", false, "compute MIGU statistics but do not mask (the first task of a sequence)")
	addAdapterFlags(cmd, o.Adapter)
	job = addJobFlags(cmd, &o, false)
	f.Uint64Var(&o.Seed, "seed", o.Seed, "random seed (data order, adapter init, MLM masking)")
	f.StringVar(&o.Train.Objective, "objective", "", "clm, seq2seq, mlm or cls (default: the model's)")
	f.IntVar(&o.Keep, "keep", o.Keep, "checkpoints to keep, ≥ 0 (0: all)")
	f.BoolVar(&o.Resume, "resume", false, "continue from the newest good checkpoint in --out")
	f.BoolVar(&o.SkipBadLines, "skip-bad-lines", false, "count and skip data records that are not JSON, not UTF-8, too long or lack a field")
	return cmd
}

// jobFlags are the training-job flags train and continual share; settle
// finishes what the flags cannot set directly.
type jobFlags struct {
	o        *finetune.JobOptions
	mode     string // --migu-mode
	products string // --products
}

// addJobFlags adds the flags of one training job — MIGU's mode and
// padding, the chat template, length, checkpoints, optimizer, batching and
// resources — with o's values as defaults; perTask words their help for
// continual, where they apply to each task of the sequence.
func addJobFlags(cmd *cobra.Command, o *finetune.JobOptions, perTask bool) *jobFlags {
	j := &jobFlags{o: o}
	f := cmd.Flags()
	data, stop, saveEvery, schedule, start := "the data", "stop after N optimizer steps", "checkpoint every N steps, ≥ 0 (0: only at the end, as always)", "", "refuse to start"
	if perTask {
		data, stop, saveEvery = "each task's data", "stop each task after N optimizer steps", "checkpoint every N steps within a task, ≥ 0 (0: only at its end, as always)"
		schedule, start = ", per task", "refuse to start a task"
	}
	f.StringVar(&j.mode, "migu-mode", "grad", "grad (mask the gradient, as the authors' code) or update (masked columns do not move)")
	f.BoolVar(&o.Train.SkipPaddingTaps, "migu-skip-padding", false, "leave padding positions out of the magnitudes")
	f.StringVar(&o.ChatTemplate, "chat-template", "", "Jinja chat template file to use instead of the model folder's (implies --template chat)")
	f.IntVar(&o.Epochs, "epochs", o.Epochs, "passes over "+data+": ≥ 1, or 0 with --max-steps (as many passes as the steps take)")
	f.Int64Var(&o.MaxSteps, "max-steps", o.MaxSteps, stop+", ≥ 0 (0: run the epochs)")
	f.Int64Var(&o.SaveEvery, "save-every", o.SaveEvery, saveEvery)
	f.Float64Var(&o.Train.Optim.LR, "lr", o.Train.Optim.LR, "peak learning rate, finite and ≥ 0")
	f.Float64Var(&o.Train.Optim.WeightDecay, "weight-decay", o.Train.Optim.WeightDecay, "AdamW decoupled weight decay, finite and ≥ 0")
	f.StringVar(&o.Train.Schedule, "schedule", o.Train.Schedule, "constant, linear or cosine (with --warmup)"+schedule)
	f.Int64Var(&o.Train.Warmup, "warmup", o.Train.Warmup, "linear warm-up steps, ≥ 0")
	f.Float64Var(&o.Train.ClipNorm, "clip", o.Train.ClipNorm, "clip the global gradient norm at this, finite and ≥ 0 (0: off)")
	f.IntVar(&o.Train.GradAccum, "grad-accum", o.Train.GradAccum, "micro-batches per optimizer step, ≥ 1")
	f.IntVar(&o.BatchSize, "batch-size", o.BatchSize, "examples per micro-batch, ≥ 1")
	f.IntVar(&o.MaxLen, "max-len", o.MaxLen, "truncate sequences to N tokens, ≥ 0 (0: the model's limit or 512)")
	f.IntVar(&o.MaxLineBytes, "max-line-bytes", o.MaxLineBytes, maxLineBytesHelp)
	f.IntVar(&o.Bucket, "bucket", o.Bucket, "group examples of similar length to cut padding: the bucket width, ≥ 0 (e.g. 64; 0: off)")
	f.IntVar(&o.Train.Threads, "threads", o.Train.Threads, "ONNX Runtime threads: "+ort.ThreadsRange)
	f.StringVar(&o.MemoryLimit, "memory-limit", o.MemoryLimit, start+" when the planned memory is above this: auto (what the machine has available), off, or a size such as 20GB (1 byte or more)")
	f.StringVar(&o.Train.Recompute, "recompute", train.RecomputeNone, "none, or layers: keep only each transformer block's input for the backward pass and recompute the block there (less memory, more compute; same gradients)")
	f.StringVar(&o.Train.Precision, "precision", train.PrecisionFP32, "fp32, or bf16: weight and attention products in bfloat16 with float32 accumulation (oneDNN; weights and optimizer state stay float32); fast only on CPUs with AMX-BF16 or AVX512-BF16, and needs migu built with libdnnl-dev")
	f.StringVar(&j.products, "products", train.ProductsAuto, "where the float32 matrix products run: auto (oneDNN for the forward, weight-gradient and attention products on CPUs where that was measured faster — AVX-512 of Ice Lake's generation or later, such as Ice Lake, Zen 4 and Sapphire Rapids — when migu was built with libdnnl-dev; ORT's MLAS elsewhere), mlas, or onednn; the same results to float32 rounding")
	return j
}

// settle parses --migu-mode and --products into the job's options and
// checks --recompute and --precision.
func (j *jobFlags) settle() error {
	m, err := migu.ParseMode(j.mode)
	if err != nil {
		return err
	}
	j.o.Train.Mode = m
	if j.o.Train.OneDNN, err = train.ParseProducts(j.products); err != nil {
		return err
	}
	if err := train.CheckPrecision(j.o.Train.Precision); err != nil {
		return err
	}
	return train.CheckRecompute(j.o.Train.Recompute, nil)
}

// maxLineBytesHelp describes --max-line-bytes (train and continual).
var maxLineBytesHelp = fmt.Sprintf("refuse data lines (JSON-array elements) longer than N bytes, or skip them with --skip-bad-lines; range ≥ 0 (0: %d, 16 MiB)", data.DefaultMaxLineBytes)
