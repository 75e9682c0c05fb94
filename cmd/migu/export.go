package main

import (
	"fmt"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newExportCmd() *cobra.Command {
	var from, out string
	cmd := &cobra.Command{
		Use:   "export --from HF_DIR --out MODEL_DIR",
		Short: "Convert a Hugging Face checkpoint (Llama, T5, RoBERTa) into a migu model folder",
		Long: `export reads config.json, the safetensors weights (single or sharded; F32, F16
or BF16) and tokenizer.json from a Hugging Face checkpoint folder and writes a
model folder: model.onnx with its weights in model.onnx.data, the config and
tokenizer, and migu.json listing every linear layer with its role.`,
		Example: `  migu export --from ./llama-hf --out ./llama
  migu init --arch t5 --preset tiny --out ./t5-hf && migu export --from ./t5-hf --out ./t5`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || out == "" {
				return badinput.Errorf("export needs --from HF_DIR and --out MODEL_DIR")
			}
			m, err := exporters.Export(from, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %s (%d layers, %d linear layers, vocab %d) to %s\n",
				m.Architecture, m.NumLayers, len(m.Linears), m.VocabSize, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)")
	cmd.Flags().StringVar(&out, "out", "", "model folder to create (must not exist or be empty)")
	return cmd
}
