package main

import (
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/spf13/cobra"
)

// version is migu's own version; release builds set it with
// -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// globalFlags are the flags every command accepts.
type globalFlags struct {
	ortLib string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "migu",
		Short: "Continual fine-tuning of ONNX language models with magnitude-based gradient updating",
		Long: `migu fine-tunes Llama-style, T5 and RoBERTa models exported to ONNX on one task
after another, updating only the weights behind each layer's largest outputs
(MIGU), so the model learns new tasks without forgetting old ones. ONNX Runtime
does the tensor work; everything else is Go.`,
		Example: `  migu inspect runs/demo/model/model.onnx
  migu inspect --json MODEL_DIR
  migu version --ort-lib /opt/onnxruntime/lib/libonnxruntime.so.1`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.ortLib, "ort-lib", "", "ONNX Runtime shared library (default: $"+ort.EnvVar+", then "+ort.SetupDir+" made by make setup)")
	// Flag and argument mistakes are bad input: exit status 2.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return badinput.Wrap(err) })
	root.AddCommand(
		newVersionCmd(g),
		newInspectCmd(),
		newInitCmd(),
		newExportCmd(),
		newExportGGUFCmd(),
		newPrepareCmd(),
		newTrainCmd(g),
		newContinualCmd(g),
		newDemoCmd(g),
		newMergeCmd(),
		newDataCmd(),
		newGenerateCmd(g),
		newEvalCmd(g),
	)
	return root
}

// initORT loads ONNX Runtime for commands that run models.
func (g *globalFlags) initORT() error {
	return ort.Init(ort.InitOptions{LibraryPath: g.ortLib})
}

// exactArgs is cobra.ExactArgs with the error marked as bad input.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return badinput.Wrap(cobra.ExactArgs(n)(cmd, args))
	}
}
