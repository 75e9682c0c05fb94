package main

import (
	"fmt"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newExportCmd() *cobra.Command {
	var from, out, dtype string
	cmd := &cobra.Command{
		Use:   "export --from HF_DIR|FILE.gguf|ollama:NAME[:TAG] --out MODEL_DIR [--dtype keep|f32|f16|bf16]",
		Short: "Convert a Hugging Face checkpoint or a GGUF model into a migu model folder",
		Long: `export reads a model and writes a model folder: model.onnx with its weights in
model.onnx.data, config.json, tokenizer.json, tokenizer_config.json (special
tokens and chat template, where the model has them) and migu.json listing every
linear layer with its role.

--from is one of:
  a Hugging Face checkpoint folder  config.json, safetensors weights (single or
                                    sharded; F32, F16, BF16) and tokenizer.json;
                                    Llama/Mistral, T5 and RoBERTa
  a GGUF file (llama.cpp, ollama)   architecture llama (Llama 2/3, Mistral,
                                    SmolLM, TinyLlama); tensors F32, F16, BF16,
                                    Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
                                    Q4_K, Q5_K, Q6_K, Q8_K (quantized types
                                    dequantized to float32); the tokenizer
                                    and chat template from its metadata
  ollama:NAME[:TAG]                 a model pulled by ollama, found through its
                                    manifests in $OLLAMA_MODELS or ~/.ollama/models

--dtype stores the weight matrices (embeddings, linear weights) in the
checkpoint's own precision (keep: F16 and BF16 stay, the rest is float32) or
in the one named; norm weights and biases are float32. The graph casts
half-precision weights to float32 where it uses them, and training keeps
float32 master copies of what it trains, so bf16 halves the memory of a
LoRA run's frozen weights. Export streams tensor by tensor: its memory is that
of the largest tensor.`,
		Example: `  migu export --from ./llama-hf --out ./llama
  migu export --from ./llama-7b-hf --out ./llama-7b --dtype bf16
  migu export --from SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2
  migu export --from ollama:smollm2:135m --out ./smollm2
  migu init --arch t5 --preset tiny --out ./t5-hf && migu export --from ./t5-hf --out ./t5`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || out == "" {
				return badinput.Errorf("export needs --from HF_DIR|FILE.gguf|ollama:NAME and --out MODEL_DIR")
			}
			m, err := exporters.ExportWith(from, out, exporters.ExportOptions{DType: exporters.DType(dtype)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %s (%d layers, %d linear layers, vocab %d) to %s\n",
				m.Architecture, m.NumLayers, len(m.Linears), m.VocabSize, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "Hugging Face checkpoint folder, GGUF file, or ollama:NAME[:TAG]")
	cmd.Flags().StringVar(&out, "out", "", "model folder to create (must not exist or be empty)")
	cmd.Flags().StringVar(&dtype, "dtype", "keep", "precision of the weight matrices: keep, f32, f16 or bf16")
	return cmd
}
