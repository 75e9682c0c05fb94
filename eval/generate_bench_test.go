package eval

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkGenerate measures greedy generation in tokens/s with and
// without the key/value cache, for the tiny and small Llama and T5
// presets: prompts of about 60 tokens, 64 new tokens, batch 1 and 4.
func BenchmarkGenerate(b *testing.B) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	prompt := strings.Repeat("the model writes one word after another and ", 6)
	for _, c := range []struct{ arch, preset string }{{"llama", "tiny"}, {"llama", "small"}, {"t5", "tiny"}, {"t5", "small"}} {
		preset := c.arch + "-" + c.preset
		root := b.TempDir()
		hf, dir := filepath.Join(root, "hf"), filepath.Join(root, "model")
		if _, err := exporters.Init(hf, exporters.InitOptions{Arch: c.arch, Preset: c.preset}); err != nil {
			b.Fatal(err)
		}
		if _, err := exporters.Export(hf, dir); err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 4} {
			m, err := Open(dir, Options{BatchSize: batch})
			if err != nil {
				b.Fatal(err)
			}
			prompts := make([]string, batch)
			for i := range prompts {
				prompts[i] = prompt[i:]
			}
			for _, mode := range []struct {
				name    string
				noCache bool
			}{{"cache", false}, {"nocache", true}} {
				b.Run(preset+"/batch"+string(rune('0'+batch))+"/"+mode.name, func(b *testing.B) {
					o := GenOptions{MaxNewTokens: 64, NoCache: mode.noCache}
					// Warm up: the first runs of an ORT session are slow.
					if _, err := m.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 4, NoCache: mode.noCache}); err != nil {
						b.Fatal(err)
					}
					tokens := 0
					var elapsed time.Duration
					for b.Loop() {
						start := time.Now()
						gens, err := m.Generate(context.Background(), prompts, o)
						if err != nil {
							b.Fatal(err)
						}
						elapsed += time.Since(start)
						for _, g := range gens {
							tokens += g.Tokens
						}
					}
					b.ReportMetric(float64(tokens)/elapsed.Seconds(), "tokens/s")
				})
			}
			m.Close()
		}
	}
}
