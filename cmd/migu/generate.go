package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newGenerateCmd(g *globalFlags) *cobra.Command {
	var (
		model, adapter string
		chatTemplate   string
		chatMode       bool
		prompts, stops []string
		o              eval.GenOptions
		threads, batch int
		asJSON         bool
	)
	cmd := &cobra.Command{
		Use:   "generate --model MODEL_DIR --prompt TEXT [--max-new-tokens N]",
		Short: "Continue a prompt with a model folder (greedy or sampled)",
		Long: `generate continues each --prompt with the model (a model folder, optionally with
a LoRA --adapter merged in memory) and prints the generated text. Decoding is
greedy unless --temperature is above 0, then sampled (with --top-p nucleus
sampling and a --seed). Generation ends at the end-of-sequence token, at
--max-new-tokens, or at the earliest --stop string (repeatable; \n, \t and
other Go escapes are understood). Llama-style models use a key/value cache;
--no-cache recomputes the whole sequence every step (slower, for comparison).
With --chat each prompt is a user message rendered with the model's chat
template (tokenizer_config.json, or --chat-template FILE) and its generation
prompt, and generation also ends at the template's end-of-turn token.`,
		Example: `  migu generate --model runs/demo/model --prompt "Once upon a time"
  migu generate --model ./llama --prompt "def add(a, b):" --stop '\ndef' --max-new-tokens 64
  migu generate --model ./llama --prompt "Hello" --temperature 0.8 --top-p 0.95 --seed 1 --json
  migu generate --model ./smollm2 --chat --prompt "What is the capital of France?"`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || len(prompts) == 0 {
				return badinput.Errorf("generate needs --model MODEL_DIR and at least one --prompt TEXT")
			}
			for _, s := range stops {
				u, err := unescape(s)
				if err != nil {
					return badinput.Errorf("--stop %q: %v", s, err)
				}
				o.Stop = append(o.Stop, u)
			}
			if err := g.initORT(); err != nil {
				return err
			}
			m, err := eval.Open(model, eval.Options{Adapter: adapter, Threads: threads, BatchSize: batch})
			if err != nil {
				return err
			}
			defer m.Close()
			if chatMode || chatTemplate != "" {
				if o.Chat, err = data.LoadChat(model, chatTemplate, m.Manifest(), m.Tokenizer(), "--chat"); err != nil {
					return err
				}
			}
			start := time.Now()
			gens, err := m.Generate(context.Background(), prompts, o)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			tokens := 0
			for _, gen := range gens {
				tokens += gen.Tokens
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "generated %d tokens in %.2fs (%.1f tokens/s)\n", tokens, elapsed.Seconds(), float64(tokens)/elapsed.Seconds())
			out := cmd.OutOrStdout()
			if asJSON {
				type row struct {
					Prompt string `json:"prompt"`
					Text   string `json:"text"`
					Tokens int    `json:"tokens"`
					Stop   string `json:"stop,omitempty"`
					Reason string `json:"reason"`
				}
				rows := make([]row, len(gens))
				for i, gen := range gens {
					rows[i] = row{prompts[i], gen.Text, gen.Tokens, gen.Stop, gen.Reason}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			for i, gen := range gens {
				if len(gens) > 1 {
					fmt.Fprintf(out, "--- prompt %d (%d tokens, %s)\n", i+1, gen.Tokens, gen.Reason)
				}
				fmt.Fprintln(out, gen.Text)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model folder made by `migu export` (or a fine-tuned or merged one)")
	f.StringVar(&adapter, "adapter", "", "LoRA adapter folder (PEFT layout) to merge in memory")
	f.StringArrayVar(&prompts, "prompt", nil, "text to continue (repeatable: prompts are generated as one batch)")
	f.BoolVar(&chatMode, "chat", false, "prompt as a user message in the model's chat template; stop at its end of turn")
	f.StringVar(&chatTemplate, "chat-template", "", "Jinja chat template file to use instead of the model folder's (implies --chat)")
	f.IntVar(&o.MaxNewTokens, "max-new-tokens", eval.DefaultMaxNewTokens, "most tokens to generate per prompt")
	f.Float64Var(&o.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	f.Float64Var(&o.TopP, "top-p", 0, "nucleus sampling: keep the most likely tokens up to this probability (0 or 1: off)")
	f.Uint64Var(&o.Seed, "seed", 0, "seed of the sampling")
	f.StringArrayVar(&stops, "stop", nil, `stop string (repeatable; Go escapes such as \n are understood)`)
	f.BoolVar(&o.NoCache, "no-cache", false, "recompute the whole sequence every step instead of using the key/value cache")
	f.IntVar(&threads, "threads", 0, "ONNX Runtime intra-op threads (0: its default)")
	f.IntVar(&batch, "batch-size", 0, "prompts per batch (0: 8)")
	f.BoolVar(&asJSON, "json", false, "print the generations as JSON")
	return cmd
}

// unescape reads Go escape sequences (\n, \t, \", \\, \x41, …) in a flag
// value, which shells do not turn into characters.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	return strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
}
