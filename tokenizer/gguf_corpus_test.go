package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// ggufCorpusSize is how many lines the GGUF tests compare.
const ggufCorpusSize = 1000

// ggufCorpus is the text the GGUF tests encode on both sides: the parity
// corpus, lines built to hit what byte-level and SentencePiece tokenizers
// split differently (code, long numbers, ggContractions in every case,
// white-space runs, special tokens written in the text, ggScripts and
// ggEmoji), random strings and lines of the evaluation data.
func ggufCorpus() []string {
	c := append([]string(nil), parityCorpus...)
	c = append(c, variedLines(420, 41)...)
	c = append(c, SampleCorpus(80, 42)...)
	c = append(c, randomStrings(150, 43)...)
	c = append(c, exoticStrings(150, 44)...)
	c = append(c, sharedLines(90)...)
	if len(c) < ggufCorpusSize {
		c = append(c, variedLines(ggufCorpusSize-len(c), 45)...)
	}
	c = c[:ggufCorpusSize]
	for i, s := range c {
		c[i] = validUTF8(s)
	}
	return c
}

var (
	ggCodeLines = []string{
		"def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
		"for (int i = 0; i < 10; i++) {\n\tprintf(\"%d\\n\", i);\n}",
		"func main() {\n\tfmt.Println(\"héllo, 世界\")\n}\n",
		"const x = arr.map((v, i) => v * 2 + i);  // double\n",
		"SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
		"    x = {'a': 1, \"b\": [2, 3]}\r\n    y = x['a']  # it's fine",
		"#include <stdio.h>\n\nint main(void) { return 0; }",
		"<div class=\"row\">\n  <span>&nbsp;42</span>\n</div>",
		"if __name__ == \"__main__\":\n\tmain()\n\n\n",
		"$ ls -la ~/src | grep '.go$' && echo \"done\" >> log.txt",
	}
	ggSpecialLines = []string{
		"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
		"<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
		"<|endoftext|>", "text<|endoftext|>more", "<|im_start|><|im_end|>", " <|im_start|> spaced <|im_end|> ",
		"<s>[INST] Hi [/INST] Hello</s>", "<unk> and </s> and <s>", "<|begin_of_text|>Hello<|end_of_text|>",
		"<repo_name>migu<file_sep>main.go", "<|im_start", "im_end|>",
	}
	ggContractions = []string{"I'm", "you're", "We've", "they'll", "she'd", "DON'T", "IT'S", "He'S", "'s", "'T", "'Re",
		"O'Neil", "rock'n'roll", "it’s", "'ſ", "it'ſx", "'K", "''", "'", "y'all'd've", "'LL", "'Ve", "'M", "'D"}
	ggScripts = []string{"今天天气很好", "東京タワー", "한국어 문장", "Привет, мир", "Ελληνικά γράμματα", "مرحبا بالعالم", "हिन्दी पाठ",
		"ภาษาไทย", "Zażółć gęślą", "naïve café", "e\u0301", "ｆｕｌｌｗｉｄｔｈ １２３", "ﬁﬂ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "İstanbul ıi"}
	ggEmoji  = []string{"🙂", "🚀🚀", "👍🏽", "🇫🇷🇩🇪", "👩‍💻", "❤️", "✨", "😂😂😂", "🏳️‍🌈", "1️⃣"}
	ggSpaces = []string{" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "    \n\t  ", "\v\f"}
	ggWords  = []string{"the", "The", "model", "learns", "continually", "without", "forgetting", "tokens", "GGUF", "llama.cpp",
		"Hello", "world", "MIGU", "gradient", "magnitude", "x", "a", "I", "über", "straße"}
)

// variedLines mixes ggWords, numbers, code, ggContractions, ggScripts, ggEmoji,
// white space and special tokens.
func variedLines(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 0x67677566))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	number := func() string {
		switch rng.IntN(6) {
		case 0:
			var b strings.Builder
			for k := rng.IntN(40) + 1; k > 0; k-- {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
			return b.String()
		case 1:
			return fmt.Sprintf("%.*f", rng.IntN(6), rng.Float64()*1e5)
		case 2:
			return fmt.Sprintf("%d,%03d,%03d", rng.IntN(999)+1, rng.IntN(1000), rng.IntN(1000))
		case 3:
			return fmt.Sprintf("%04d-%02d-%02d", 1900+rng.IntN(200), rng.IntN(12)+1, rng.IntN(28)+1)
		case 4:
			return fmt.Sprintf("%de-%d", rng.IntN(100), rng.IntN(20))
		}
		return fmt.Sprint(rng.IntN(1000))
	}
	out := make([]string, 0, n)
	for len(out) < n {
		if rng.IntN(6) == 0 {
			out = append(out, pick(ggCodeLines))
			continue
		}
		var b strings.Builder
		for k := rng.IntN(12) + 1; k > 0; k-- {
			switch rng.IntN(12) {
			case 0, 1, 2:
				b.WriteString(pick(ggWords))
			case 3:
				b.WriteString(number())
			case 4:
				b.WriteString(pick(ggContractions))
			case 5:
				b.WriteString(pick(ggScripts))
			case 6:
				b.WriteString(pick(ggEmoji))
			case 7, 8:
				b.WriteString(pick(ggSpaces))
			case 9:
				b.WriteString(pick(ggSpecialLines))
			case 10:
				b.WriteString(pick([]string{".", ",", "!", "?", "...", "--", "(", ")", "\"", "#", "@", "$", "%", "&&", "->", "==", "_"}))
			default:
				b.WriteString(" ")
			}
		}
		out = append(out, b.String())
	}
	return out
}
