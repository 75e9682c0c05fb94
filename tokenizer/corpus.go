package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// SampleCorpus returns n lines of made-up but varied text — prose, numbers,
// code, accented Latin, CJK and emoji — for training a tokenizer when no
// corpus is given (`migu init`). The same seed gives the same lines.
func SampleCorpus(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 0x6d696775))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	out := make([]string, 0, n)
	for len(out) < n {
		var line string
		switch k := rng.IntN(20); {
		case k < 11:
			line = sentence(rng, pick)
		case k < 13:
			line = fmt.Sprintf("%s %d %s %.2f %s.", pick(subjects), rng.IntN(10000), pick(units), rng.Float64()*1000, pick(tails))
		case k < 15:
			line = pick(codeLines)
		case k < 16:
			line = pick(accented) + " " + sentence(rng, pick)
		case k < 17:
			line = pick(cjk)
		case k < 18:
			line = sentence(rng, pick) + " " + pick(emoji)
		case k < 19:
			line = "Q: " + sentence(rng, pick) + "\nA: " + pick(answers)
		default:
			line = strings.ToUpper(pick(verbs)) + "! " + sentence(rng, pick) + "\t" + pick(tails)
		}
		out = append(out, line)
	}
	return out
}

func sentence(rng *rand.Rand, pick func([]string) string) string {
	s := pick(subjects) + " " + pick(verbs) + " " + pick(objects)
	if rng.IntN(2) == 0 {
		s += " " + pick(tails)
	}
	if rng.IntN(3) == 0 {
		s += ", " + pick(connectives) + " " + pick(subjects) + " " + pick(verbs) + " " + pick(objects)
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	return s + pick([]string{".", ".", ".", "!", "?", "..."})
}

var (
	subjects = []string{"the model", "a student", "our team", "the teacher", "this network", "the old library",
		"my neighbour", "the river", "a small robot", "the committee", "everyone", "the scientist", "she", "he",
		"they", "we", "the tokenizer", "the optimizer", "a farmer", "the city council", "the cat", "an engineer"}
	verbs = []string{"learns", "reads", "forgets", "remembers", "builds", "crosses", "writes", "computes",
		"updates", "measures", "explains", "ignores", "finds", "loses", "trains", "encodes", "decodes", "opens",
		"closes", "carries", "doesn't like", "won't accept", "can't find", "has seen", "is testing", "was running"}
	objects = []string{"the new data", "a long letter", "every gradient", "three apples", "the bridge",
		"its weights", "the answer", "a red balloon", "the whole sequence", "old habits", "the quiet forest",
		"an unexpected result", "the masked rows", "twelve tokens", "a better plan", "the evaluation set"}
	tails = []string{"before dinner", "after the storm", "in 2024", "on Monday", "with great care",
		"without a map", "at 3 p.m.", "for the first time", "again and again", "by the window", "in the end"}
	connectives = []string{"and", "but", "because", "while", "although", "so", "then", "whereas"}
	units       = []string{"kg", "km", "tokens", "steps", "%", "ms", "GB", "epochs"}
	answers     = []string{"yes", "no", "positive", "negative", "entailment", "contradiction", "neutral",
		"World", "Sports", "Business", "Sci/Tech", "maybe"}
	codeLines = []string{
		"def add(a, b):\n    return a + b",
		"for i in range(10):\n\tprint(i ** 2)",
		"if x != nil {\n\treturn fmt.Errorf(\"bad: %w\", err)\n}",
		"const total = items.reduce((s, x) => s + x.price, 0);",
		"SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
		"x = np.zeros((3, 4), dtype=np.float32)  # matrix",
		"fn main() { println!(\"{}\", 2 + 2); }",
		"#include <stdio.h>\nint main(void) { return 0; }",
		"    self.weight = nn.Parameter(torch.randn(d_in, d_out))",
		"let mut v: Vec<u32> = Vec::with_capacity(1024);",
	}
	accented = []string{"Café au lait, s'il vous plaît.", "Ça va très bien, merci.", "Über die Brücke gehen wir.",
		"El niño comió piña en la mañana.", "Åsa och Øystein åker till Malmö.", "Naïve façade, résumé, coöperate.",
		"Zażółć gęślą jaźń.", "Ελληνικά γράμματα και λέξεις.", "Привет, как дела?", "Dziękuję bardzo!"}
	cjk = []string{"今天天气很好，我们去公园散步。", "機械学習のモデルを訓練します。", "한국어 문장도 포함합니다.",
		"数据集包含一万个例子。", "东京とソウルと北京。", "你好，世界！"}
	emoji = []string{"🙂", "🚀🚀", "👍🏽", "🇫🇷", "❤️", "😂 lol", "👩‍💻", "✨"}
)
