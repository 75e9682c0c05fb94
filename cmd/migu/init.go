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
		Use:   "init --arch llama|t5|roberta --preset tiny|small|1b|7b --out DIR [--seed N] [--dtype f32|f16|bf16]",
		Short: "Write a random-initialised Hugging Face checkpoint with a freshly trained tokenizer",
		Long: `init writes config.json, model.safetensors and tokenizer.json for a new model of
the chosen architecture: the tokenizer is trained on text migu generates, the
weights are random (reproducible from --seed). transformers loads the folder,
and migu export turns it into a model folder. tiny has about 1M parameters
(tests), small 20-60M (benchmarks); llama also has 1b and 7b, the exact shapes
of TinyLlama-1.1B and Llama-2-7B (vocabulary 32000; the embedding table keeps
that size when the generated corpus gives a smaller tokenizer). Weights stream
to disk tensor by tensor, filled on every core: 7b takes minutes and little
memory. --dtype picks the file's precision (default f32, and bf16 for 1b and
7b); config.json's torch_dtype says which.`,
		Example: `  migu init --arch llama --preset tiny --out ./llama-hf
  migu init --arch t5 --preset small --seed 7 --out ./t5-hf && migu export --from ./t5-hf --out ./t5
  migu init --arch llama --preset 7b --dtype bf16 --out ./llama-7b-hf`,
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
			vocab := fmt.Sprint(res.VocabSize)
			if res.TokenizerSize != res.VocabSize {
				vocab += fmt.Sprintf(" (tokenizer %d)", res.TokenizerSize)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s %s: %d parameters (%s), vocabulary %s, in %s\n",
				res.Preset, res.Arch, res.Parameters, res.DType, vocab, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&opt.Arch, "arch", "", "architecture: "+strings.Join(exporters.Names(), ", "))
	cmd.Flags().StringVar(&opt.Preset, "preset", "tiny", "size: tiny (~1M parameters), small (20-60M), or for llama 1b (TinyLlama-1.1B's shape) and 7b (Llama-2-7B's)")
	cmd.Flags().StringVar(&opt.DType, "dtype", "", "weights' dtype: f32, f16 or bf16 (default: f32; bf16 for 1b and 7b)")
	cmd.Flags().Uint64Var(&opt.Seed, "seed", 0, "random seed for the tokenizer corpus and the weights")
	cmd.Flags().IntVar(&opt.VocabSize, "vocab-size", 0, "tokenizer size (default: tiny 4096, small 8000, 1b and 7b 32000)")
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
