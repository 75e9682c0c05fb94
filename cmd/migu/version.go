package main

import (
	"fmt"
	"runtime"

	"github.com/migu-ml/migu/onnx/ort"
	"github.com/spf13/cobra"
)

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print migu's version and the ONNX Runtime library it loads",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "migu %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if err := g.initORT(); err != nil {
				return err
			}
			fmt.Fprintf(out, "onnxruntime %s (%s)\n", ort.Version(), ort.LibraryPath())
			return nil
		},
	}
}
