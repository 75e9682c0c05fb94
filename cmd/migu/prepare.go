package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/rundir"
	"github.com/migu-ml/migu/train"
	"github.com/spf13/cobra"
)

func newPrepareCmd() *cobra.Command {
	var model, out, trainable string
	var opt train.GraphOptions
	var noTaps bool
	cmd := &cobra.Command{
		Use:   "prepare --model MODEL_DIR --out DIR [--trainable linear|all|NAME,…] [--objective clm|seq2seq|mlm|cls]",
		Short: "Write the training graph: loss, gradients and MIGU magnitude taps in standard ONNX ops",
		Long: `prepare differentiates a model folder's forward graph and writes train.onnx (with
train.onnx.data) and train.json into --out. Trainable tensors become graph
inputs; the graph outputs the loss, the gradient of every trainable tensor and,
for MIGU, Σ|y| per output feature of every linear layer. Only standard ONNX
operators are used, so any ONNX Runtime build runs it. --out may not be the
model folder, nor a non-empty folder without a training graph.`,
		Example: `  migu prepare --model ./llama --out ./llama-train
  migu prepare --model ./roberta --out ./rt --trainable all --objective mlm`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || out == "" {
				return badinput.Errorf("prepare needs --model MODEL_DIR and --out DIR")
			}
			switch trainable {
			case "linear", "all":
				opt.Trainable = train.Trainable(trainable)
			default:
				opt.Names = strings.Split(trainable, ",")
			}
			opt.Taps = !noTaps
			_, before := os.Stat(out)
			lock, err := rundir.Open(out, rundir.Options{Model: model, Markers: []string{train.GraphFile, train.GraphData, train.ArtifactFile}})
			if err != nil {
				return err
			}
			defer lock.Release()
			art, err := train.BuildGraph(model, out, opt)
			if err != nil {
				lock.Release()
				if os.IsNotExist(before) { // nothing half-written: the folder the lock made goes too
					os.RemoveAll(out)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/%s: objective %s, %d trainable tensors, %d magnitude taps, %d forward + %d gradient nodes\n",
				out, train.GraphFile, art.Objective, len(art.Params), len(art.Taps), art.Nodes, art.GradNodes)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "model folder (from migu export)")
	cmd.Flags().StringVar(&out, "out", "", "folder for train.onnx and train.json")
	cmd.Flags().StringVar(&trainable, "trainable", "linear", "linear (all linear weights), all (every parameter), or a comma-separated list of initializer names")
	cmd.Flags().StringVar(&opt.Objective, "objective", "", "clm, seq2seq, mlm or cls (default: the model's)")
	cmd.Flags().BoolVar(&noTaps, "no-taps", false, "leave out MIGU's magnitude outputs")
	cmd.Flags().BoolVar(&opt.TapsSkipPadding, "taps-skip-padding", false, "leave padding positions out of the magnitudes")
	return cmd
}
