package main

import (
	"fmt"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newMergeCmd() *cobra.Command {
	var model, adapter, out string
	cmd := &cobra.Command{
		Use:   "merge --model MODEL_DIR --adapter DIR --out MODEL_DIR",
		Short: "Fold a trained adapter (PEFT format) into a new model folder",
		Long: `merge reads a model folder and an adapter folder (adapter_config.json and
adapter_model.safetensors, as migu train or PEFT's save_pretrained writes them)
and writes a new model folder whose weights include the adapter:
W' = W + (alpha/r)·A·B for every adapted layer. The new folder runs without the
adapter and gives the same outputs as the model with it.`,
		Example: `  migu merge --model ./llama --adapter runs/task1/adapter --out ./llama-task1`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || adapter == "" || out == "" {
				return badinput.Errorf("merge needs --model MODEL_DIR, --adapter DIR and --out MODEL_DIR")
			}
			res, err := adapters.Merge(model, adapter, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "merged the %s adapter into %d linear layers; wrote %s\n", res.Kind, len(res.Layers), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "model folder made by `migu export`")
	cmd.Flags().StringVar(&adapter, "adapter", "", "adapter folder (adapter_config.json, adapter_model.safetensors)")
	cmd.Flags().StringVar(&out, "out", "", "model folder to create (must not exist or be empty)")
	return cmd
}
