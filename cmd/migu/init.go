package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newInitCmd() *cobra.Command {
	var opt exporters.InitOptions
	var out, corpus string
	cmd := &cobra.Command{
		Use:   "init --arch llama|t5|roberta --preset tiny|small --out DIR [--seed N]",
		Short: "Write a random-initialised Hugging Face checkpoint with a freshly trained tokenizer",
		Long: `init writes config.json, model.safetensors and tokenizer.json for a new model of
the chosen architecture: the tokenizer is trained on text migu generates, the
weights are random (reproducible from --seed). transformers loads the folder,
and migu export turns it into a model folder. tiny has about 1M parameters
(tests), small 20-60M (benchmarks).`,
		Example: `  migu init --arch llama --preset tiny --out ./llama-hf
  migu init --arch t5 --preset small --seed 7 --out ./t5-hf && migu export --from ./t5-hf --out ./t5`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if out == "" || opt.Arch == "" {
				return badinput.Errorf("init needs --arch (%s) and --out DIR", strings.Join(exporters.Names(), ", "))
			}
			if corpus != "" {
				if opt.Corpus, err = readCorpus(corpus); err != nil {
					return err
				}
			}
			res, err := exporters.Init(out, opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s %s: %d parameters, vocabulary %d, in %s\n",
				res.Preset, res.Arch, res.Parameters, res.VocabSize, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&opt.Arch, "arch", "", "architecture: "+strings.Join(exporters.Names(), ", "))
	cmd.Flags().StringVar(&opt.Preset, "preset", "tiny", "size: tiny (~1M parameters) or small (20-60M)")
	cmd.Flags().Uint64Var(&opt.Seed, "seed", 0, "random seed for the tokenizer corpus and the weights")
	cmd.Flags().IntVar(&opt.VocabSize, "vocab-size", 0, "tokenizer size (default: tiny 4096, small 8000)")
	cmd.Flags().StringVar(&out, "out", "", "folder to create (must not exist or be empty)")
	cmd.Flags().StringVar(&corpus, "corpus", "", "train the tokenizer on this text file (one text per line) instead of generated text")
	return cmd
}

// readCorpus reads a tokenizer corpus: one text per line, blank lines
// skipped.
func readCorpus(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, badinput.Errorf("%s: the corpus is empty", path)
	}
	return lines, nil
}
