package main

import (
	"encoding/json"

	"github.com/migu-ml/migu/onnx"
	"github.com/spf13/cobra"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect MODEL_DIR|FILE.onnx",
		Short: "Show a model's inputs, outputs, operators, initializers and linear layers",
		Example: `  migu inspect model.onnx
  migu inspect --json runs/demo/model`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := onnx.ResolvePath(args[0])
			if err != nil {
				return err
			}
			m, err := onnx.Load(path)
			if err != nil {
				return err
			}
			defer m.Close()
			s := onnx.Inspect(m)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return s.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
