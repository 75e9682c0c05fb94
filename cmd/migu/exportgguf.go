package main

import (
	"fmt"
	"strings"

	"github.com/migu-ml/migu/ggufexport"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newExportGGUFCmd() *cobra.Command {
	var model, adapter, out, typ, name string
	var loraOnly bool
	cmd := &cobra.Command{
		Use:   "export-gguf --model MODEL_DIR [--adapter DIR] --out FILE.gguf [--type f32|f16|bf16|q8_0] [--lora-only]",
		Short: "Write a model folder (optionally with an adapter merged in) or a LoRA adapter as GGUF for llama.cpp and ollama",
		Long: `export-gguf writes a llama-family model folder as a GGUF file that llama.cpp and
ollama load: llama.cpp's tensor names, query and key rows in its interleaved
rotary order, the architecture's metadata, the tokenizer (tokenizer.ggml.*) and
the chat template. With --adapter the adapter is merged into the weights first.
--type stores the matrices as f32, f16, bf16 or q8_0 (vectors stay f32; a
matrix whose rows are not whole q8_0 blocks is stored f16).

With --lora-only it writes the LoRA adapter alone in llama.cpp's adapter layout
(general.type adapter, adapter.lora.alpha, W.lora_a / W.lora_b), for
llama-cli --lora or an ollama Modelfile's ADAPTER line.`,
		Example: `  migu export-gguf --model ./smollm2 --adapter runs/chat/adapter --out smollm2-chat.gguf --type q8_0
  migu export-gguf --model ./smollm2 --adapter runs/chat/adapter --lora-only --out chat-lora.gguf`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || out == "" {
				return badinput.Errorf("export-gguf needs --model MODEL_DIR and --out FILE.gguf")
			}
			t, err := ggufexport.ParseType(typ)
			if err != nil {
				return err
			}
			var res *ggufexport.Result
			if loraOnly {
				if adapter == "" {
					return badinput.Errorf("--lora-only needs --adapter DIR")
				}
				if name != "" {
					return badinput.Errorf("--name applies to models, not to --lora-only adapters")
				}
				res, err = ggufexport.Adapter(model, adapter, out, t)
			} else {
				res, err = ggufexport.Model(model, out, ggufexport.Options{Type: t, Adapter: adapter, Name: name})
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s: %d tensors, %.1f MB (%s)\n", res.Path, res.Tensors, float64(res.Bytes)/1e6, strings.ToLower(t.String()))
			for _, s := range res.Widened {
				fmt.Fprintf(w, "  kept wider: %s\n", s)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model folder (from migu export or migu train)")
	f.StringVar(&adapter, "adapter", "", "LoRA adapter folder to merge (or, with --lora-only, to write)")
	f.StringVar(&out, "out", "", "GGUF file to write (replaced atomically if it exists)")
	f.StringVar(&typ, "type", "f16", "storage type of the matrices: f32, f16, bf16 or q8_0")
	f.StringVar(&name, "name", "", "general.name (default: the model folder's name)")
	f.BoolVar(&loraOnly, "lora-only", false, "write the LoRA adapter alone, in llama.cpp's adapter layout")
	return cmd
}
