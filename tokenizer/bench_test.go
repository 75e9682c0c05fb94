package tokenizer

import (
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// BenchmarkEncode measures Encode on varied text (prose, code, numbers, CJK,
// emoji) for each family: our trained tokenizers, the real Llama 2 model,
// and a T5-style tokenizer with a real precompiled charsmap (built by the
// Python reference, so that case needs it).
func BenchmarkEncode(b *testing.B) {
	lines := SampleCorpus(2000, 21)
	bytes := 0
	for _, l := range lines {
		bytes += len(l)
	}
	cases := []struct {
		name string
		load func(b *testing.B) *Tokenizer
	}{
		{"bytelevel-bpe", func(b *testing.B) *Tokenizer { return trainedTokenizers(b)[ByteLevelBPE] }},
		{"sentencepiece-bpe", func(b *testing.B) *Tokenizer { return trainedTokenizers(b)[SentencePieceBPE] }},
		{"unigram", func(b *testing.B) *Tokenizer { return trainedTokenizers(b)[Unigram] }},
		{"llama2", func(b *testing.B) *Tokenizer {
			tk, err := Load(testenv.SharedData(b, "tokenizers/llama2/tokenizer.model"))
			if err != nil {
				b.Fatal(err)
			}
			return tk
		}},
		{"t5-precompiled", func(b *testing.B) *Tokenizer {
			tk, err := Load(loadReference(b).Results["t5"].File)
			if err != nil {
				b.Fatal(err)
			}
			return tk
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			tk := c.load(b)
			b.SetBytes(int64(bytes))
			b.ResetTimer()
			tokens := 0
			for range b.N {
				for _, l := range lines {
					e, err := tk.Encode(l, true)
					if err != nil {
						b.Fatal(err)
					}
					tokens += e.Len()
				}
			}
			b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkSplitPatterns measures the regex matcher on the split patterns
// of Llama 3 and Qwen2 (which need look-ahead), with the hand-written
// GPT-2 splitter and the matcher running GPT-2's pattern for scale.
func BenchmarkSplitPatterns(b *testing.B) {
	text := strings.Join(append(SampleCorpus(500, 22), variedLines(200, 23)...), "\n")
	cases := []struct {
		name string
		find func(string) []span
	}{
		{"gpt2-by-hand", gpt2Matches},
		{"gpt2-regex", mustOnig(b, gpt2Pattern).findAll},
		{"llama3-regex", mustOnig(b, llama3Split).findAll},
		{"qwen2-regex", mustOnig(b, qwen2Split).findAll},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for range b.N {
				c.find(text)
			}
		})
	}
}
