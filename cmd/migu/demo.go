package main

import (
	"github.com/migu-ml/migu/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var opt demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the built-in default: a small model end to end, no files needed",
		Long: `demo makes a small model with a tokenizer trained on generated text, exports it
to ONNX, runs it in ONNX Runtime, and shows per layer which output features
MIGU would let an update change. Everything it writes goes to --out.`,
		Example: `  migu demo
  migu demo --arch t5 --out runs/demo-t5`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.initORT(); err != nil {
				return err
			}
			return demo.Run(cmd.OutOrStdout(), opt)
		},
	}
	cmd.Flags().StringVar(&opt.Out, "out", "runs/demo", "run folder (a previous demo there is replaced)")
	cmd.Flags().StringVar(&opt.Arch, "arch", "llama", "architecture: llama, t5, roberta")
	cmd.Flags().StringVar(&opt.Preset, "preset", "tiny", "model size: tiny or small")
	cmd.Flags().Uint64Var(&opt.Seed, "seed", 0, "random seed")
	cmd.Flags().Float64Var(&opt.T, "migu", 0.7, "MIGU threshold T: the fraction of output features not updated")
	cmd.Flags().IntVar(&opt.Threads, "threads", 0, "ONNX Runtime threads (0: one per core)")
	return cmd
}
