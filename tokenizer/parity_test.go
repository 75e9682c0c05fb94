package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// parityCorpus holds the texts every tokenizer must encode exactly as
// Python's `tokenizers` does.
var parityCorpus = []string{
	"",
	" ",
	"  ",
	"Hello world",
	"Hello world!",
	" Hello world",
	"  Hello   world  ",
	"Hello\nworld",
	"Hello\n\nworld\n",
	"\n",
	"\n\n\n",
	"line one\r\nline two\r\n",
	"\ttabbed\tline\t",
	"trailing spaces   ",
	"   leading spaces",
	"a  b   c    d     e",
	"it's I'm we're they've he'll she'd don't WON'T 'quoted' ''",
	"The year 2024 had 366 days; 3.14159 ≈ π, 1,000,000 and 007.",
	"12345678901234567890",
	"def add(a, b):\n    return a + b\n",
	"for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
	"if err != nil { return fmt.Errorf(\"open %s: %w\", path, err) }",
	"<html><body class=\"x\">&amp; &lt;</body></html>",
	"今天天气很好，我们去公园散步。",
	"東京タワーは333メートルです。",
	"한국어 문장입니다.",
	"Emoji: 🙂🚀👍🏽🇫🇷❤️👩‍💻✨",
	"😂😂😂 lol",
	"Café naïve résumé façade coöperate",
	"Cafe\u0301 nai\u0308ve (combining marks)",
	"Zażółć gęślą jaźń. Ελληνικά. Привет!",
	"ﬁnancial ﬂow Ⅻ ① ㍿ ｈｅｌｌｏ ＡＢＣ １２３",
	"non\u00a0breaking\u3000ideographic\u2003em space",
	"zero\u200bwidth\u200cjoiner\u200dtest\ufeff",
	"control\x00chars\x01and\x7fdel",
	"ʻOkina and ˈstress and ʼapostrophe",
	"Ω Å K µ ſ ß ẞ İ ı",
	"x² + y³ = z⁴, ½ + ¼ = ¾",
	"<s>",
	"</s>",
	"<s> Hello </s>",
	"Hello<s>world</s>again",
	"<unk> <pad> <mask> [MASK] [CLS] [SEP]",
	"The answer is <mask>.",
	"The answer is   <mask>   ok",
	"A [MASK] b [MASK]c",
	"migu is migu, notmigu, migu!",
	"say hello world and Hello World",
	"bold <b>  text</b>",
	"<extra_id_0> filled <extra_id_1> in",
	"<0x0A> looks like a byte token",
	"▁already▁has▁meta",
	"a-b--c---d",
	"MixedCASE and lowercase AND UPPERCASE",
	"https://example.com/path?q=1&r=two#frag",
	"email: someone@example.org, phone: +1 (555) 010-9999",
	"\u0600\u0628 Arabic prepend; مرحبا بالعالم",
	"हिन्दी पाठ और संख्या १२३",
	"ไทย ภาษา",
	"😀\u0301 emoji with mark",
	"A\uff21\u0301 fullwidth with mark",
	strings.Repeat("long ", 40) + "end",
	strings.Repeat("x", 300),
}

var parityPairs = [][2]string{
	{"Hello world", "How are you?"},
	{"A question about 2024?", "An answer with numbers 42 and code x = y + 1."},
	{"", "only second"},
	{"only first", ""},
	{strings.Repeat("many words ", 10), "short"},
}

// testCorpus is parityCorpus, generated prose, random strings built to hit
// edge cases, and lines of the evaluation data sets when they are present.
func testCorpus() []string {
	c := append([]string(nil), parityCorpus...)
	c = append(c, SampleCorpus(150, 7)...)
	c = append(c, randomStrings(300, 11)...)
	c = append(c, exoticStrings(800, 5)...)
	return append(c, sharedLines(150)...)
}

// randomStrings mixes the characters that tokenizers tend to get wrong.
func randomStrings(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 3))
	parts := []string{" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "a", "Z", "é", "e\u0301", "\u0301", "ß", "İ",
		"ﬁ", "ｈ", "１", "①", "½", "中", "文", "ア", "한", "🙂", "👍🏽", "\u200d", "\u200b", "\ufeff", "\x00", "\x7f",
		"'s", "'", "\"", "<", ">", "/", "<s>", "</s>", "<mask>", "<unk>", "[MASK]", "<b>", "▁", "_", "-", "--", ".", ",",
		"0", "42", "2024", "the", " the", "hello world", "migu", "def", "\\", "{", "}", "#", "Ġ", "<0x0A>", "\u0600",
		"हि", "ไ", "\U0001F1EB\U0001F1F7", "\ud7a3", "\u1100\u1161"}
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for k := rng.IntN(12); k >= 0; k-- {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		out[i] = b.String()
	}
	return out
}

// exoticStrings draws runs of code points from many scripts and blocks:
// combining marks, controls, compatibility forms, math letters, emoji,
// tags, private use.
func exoticStrings(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 5))
	blocks := [][2]rune{{0x20, 0x7e}, {0, 0x20}, {0x80, 0x24f}, {0x300, 0x36f}, {0x370, 0x52f}, {0x590, 0x6ff},
		{0x900, 0x97f}, {0xe00, 0xe7f}, {0x1100, 0x11ff}, {0x2000, 0x206f}, {0x2070, 0x2bff}, {0x3000, 0x30ff},
		{0x3130, 0x318f}, {0x3200, 0x33ff}, {0x4e00, 0x4e80}, {0xac00, 0xac40}, {0xfb00, 0xfb4f}, {0xfe00, 0xfe0f},
		{0xfe30, 0xffef}, {0x1d400, 0x1d7ff}, {0x1f000, 0x1faff}, {0xe0000, 0xe007f}, {0xe000, 0xe010}}
	out := make([]string, n)
	for i := range out {
		var b []rune
		for k := rng.IntN(10); k >= 0; k-- {
			r := blocks[rng.IntN(len(blocks))]
			for j := rng.IntN(3); j >= 0; j-- {
				b = append(b, r[0]+rune(rng.IntN(int(r[1]-r[0]+1))))
			}
		}
		out[i] = string(b)
	}
	return out
}

// sharedLines reads some lines of the evaluation data beside the
// repository, when it is there.
func sharedLines(n int) []string {
	dir := filepath.Join(filepath.Dir(testenv.Root()), "shared", "data", "eval")
	var out []string
	for _, f := range []struct{ file, field string }{
		{"hellaswag_validation.jsonl", "ctx"}, {"arc_challenge_test.jsonl", "question"}, {"winogrande_xl_validation.jsonl", "sentence"},
	} {
		data, err := os.ReadFile(filepath.Join(dir, f.file))
		if err != nil {
			continue
		}
		for _, line := range strings.SplitN(string(data), "\n", n/3+1)[:n/3] {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				if s, ok := m[f.field].(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	if gz, err := os.Open(filepath.Join(dir, "HumanEval.jsonl.gz")); err == nil {
		defer gz.Close()
		if r, err := gzip.NewReader(gz); err == nil {
			sc := bufio.NewScanner(r)
			sc.Buffer(nil, 1<<20)
			for k := 0; k < 20 && sc.Scan(); k++ {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					if s, ok := m["prompt"].(string); ok {
						out = append(out, s)
					}
				}
			}
		}
	}
	return out
}

// goTrained are the tokenizers we train for the parity tests.
var goTrained = map[string]TrainOptions{
	"go_bytelevel": {Kind: ByteLevelBPE, VocabSize: 700},
	"go_spbpe":     {Kind: SentencePieceBPE, VocabSize: 700},
	"go_unigram":   {Kind: Unigram, VocabSize: 500, ExtraIDs: 3},
}

type refEncoding struct {
	IDs        []int    `json:"ids"`
	Tokens     []string `json:"tokens"`
	TypeIDs    []int    `json:"type_ids"`
	Special    []int    `json:"special"`
	Offsets    [][2]int `json:"offsets"`
	Plain      []int    `json:"plain"`
	Decode     string   `json:"decode"`
	DecodeSkip string   `json:"decode_skip"`
}

type refBatch struct {
	IDs     []int `json:"ids"`
	Mask    []int `json:"mask"`
	TypeIDs []int `json:"type_ids"`
	Special []int `json:"special"`
}

type refResult struct {
	File      string        `json:"file"`
	VocabSize int           `json:"vocab_size"`
	Encodings []refEncoding `json:"encodings"`
	Pairs     []refBatch    `json:"pairs"`
	Batch     []refBatch    `json:"batch"`
	PairBatch []refBatch    `json:"pair_batch"`
}

type reference struct {
	corpus   []string
	Files    map[string]string    `json:"files"`
	Results  map[string]refResult `json:"results"`
	Decoders []string             `json:"decoders"`
}

// decoderCases are decoders applied to token lists on both sides.
var decoderCases = []struct {
	spec   string
	tokens []string
}{
	{`{"type":"ByteFallback"}`, []string{"<0x41>", "<0xE4>", "<0xBD>", "<0xA0>", "b", "<0xE4>", "<0xBD>", "c", "<0x0a>", "<0x+A>", "<0xZZ>"}},
	{`{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}`, []string{"▁▁a▁b", "▁c", "d▁"}},
	{`{"type":"Metaspace","replacement":"▁","prepend_scheme":"never","split":true}`, []string{"▁a", "▁c"}},
	{`{"type":"Strip","content":" ","start":2,"stop":1}`, []string{"   ab   ", "x  ", " y"}},
	{`{"type":"WordPiece","prefix":"##","cleanup":true}`, []string{"hello", "##world", ",", "do", "not", "it", "'", "s", "."}},
	{`{"type":"BPEDecoder","suffix":"</w>"}`, []string{"hel", "lo</w>", "wor", "ld</w>"}},
	{`{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}`, []string{"Hello", "Ġworld", "Ġ<s>", "Ã", "ä½", "ł", "€"}},
	{`{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`, []string{"▁Hello", "▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>", "▁world"}},
}

var (
	refOnce  sync.Once
	refData  *reference
	refDir   string
	refError string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if refDir != "" {
		os.RemoveAll(refDir)
	}
	if ggufFix != nil {
		os.RemoveAll(ggufFix.dir)
	}
	os.Exit(code)
}

// llamaModelPath is the shared Llama 2 model, or "" when it is absent.
func llamaModelPath() string {
	p := filepath.Join(filepath.Dir(testenv.Root()), "shared", "data", "tokenizers", "llama2", "tokenizer.model")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// loadReference trains our tokenizers, runs testdata/reference.py once per
// test binary and returns what Python produced.
func loadReference(t testing.TB) *reference {
	t.Helper()
	testenv.Python(t)
	refOnce.Do(func() {
		refError = "the reference fixture failed in an earlier test"
		dir, err := os.MkdirTemp("", "migu-tokenizer-ref-")
		if err != nil {
			t.Fatal(err)
		}
		refDir = dir
		train := SampleCorpus(600, 1)
		goFiles := map[string]string{}
		for name, opt := range goTrained {
			tk, err := Train(train, opt)
			if err != nil {
				t.Fatalf("training %s: %v", name, err)
			}
			path := filepath.Join(dir, name+".json")
			if err := tk.Save(path); err != nil {
				t.Fatal(err)
			}
			goFiles[name] = path
		}
		var decs [][2]any
		for _, c := range decoderCases {
			decs = append(decs, [2]any{json.RawMessage(c.spec), c.tokens})
		}
		corpus := testCorpus()
		input, err := json.Marshal(map[string]any{"train": train, "corpus": corpus, "pairs": parityPairs, "go": goFiles, "decoders": decs})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "input.json"), input, 0o644); err != nil {
			t.Fatal(err)
		}
		script, err := os.ReadFile(filepath.Join("testdata", "reference.py"))
		if err != nil {
			t.Fatal(err)
		}
		out := testenv.RunPython(t, string(script), dir, llamaModelPath())
		var r reference
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("reading the reference output: %v", err)
		}
		r.corpus = corpus
		refData, refError = &r, ""
	})
	if refData == nil {
		t.Fatal(refError)
	}
	return refData
}

// needsLlama skips the Llama comparisons when the shared model is absent.
func needsLlama(t *testing.T, name string) {
	if strings.HasPrefix(name, "llama") {
		testenv.SharedData(t, "tokenizers/llama2/tokenizer.model")
	}
}

func TestParity(t *testing.T) {
	ref := loadReference(t)
	names := []string{"hf_bytelevel", "hf_gpt2split", "hf_unigram", "hf_misc", "hf_misc2", "hf_regex", "hf_wordlevel", "llama", "llama_metaspace",
		"t5", "t5_noextra", "go_bytelevel", "go_spbpe", "go_unigram"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			needsLlama(t, name)
			res, ok := ref.Results[name]
			if !ok {
				t.Fatalf("no reference results for %s", name)
			}
			tk, err := Load(res.File)
			if err != nil {
				t.Fatal(err)
			}
			compareResults(t, tk, ref.corpus, res)
		})
	}
}

// TestSentencePieceDirect reads .model files without Python's conversion
// and expects the converted tokenizers' ids.
func TestSentencePieceDirect(t *testing.T) {
	ref := loadReference(t)
	cases := []struct{ name, model, like string }{
		{"llama", llamaModelPath(), "llama"},
		{"t5", ref.Files["t5sp_model"], "t5_noextra"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needsLlama(t, c.like)
			tk, err := Load(c.model)
			if err != nil {
				t.Fatal(err)
			}
			compareResults(t, tk, ref.corpus, ref.Results[c.like])
		})
	}
}

func TestDecoderParity(t *testing.T) {
	ref := loadReference(t)
	for i, c := range decoderCases {
		d, err := parseDecoder("decoder", json.RawMessage(c.spec))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(d.decode(slices.Clone(c.tokens)), "")
		if got != ref.Decoders[i] {
			t.Errorf("%s on %q: got %q, Python %q", c.spec, c.tokens, got, ref.Decoders[i])
		}
	}
}

func compareResults(t *testing.T, tk *Tokenizer, corpus []string, res refResult) {
	t.Helper()
	if len(res.Encodings) != len(corpus) {
		t.Fatalf("reference has %d encodings for %d texts", len(res.Encodings), len(corpus))
	}
	if tk.VocabSize() < res.VocabSize {
		t.Errorf("VocabSize() = %d, Python counts %d tokens", tk.VocabSize(), res.VocabSize)
	}
	bad := 0
	report := func(text, what string, got, want any) {
		bad++
		if bad <= 6 {
			t.Errorf("%q: %s\n  go:     %v\n  python: %v", text, what, got, want)
		}
	}
	for i, text := range corpus {
		want := res.Encodings[i]
		e, err := tk.Encode(text, true)
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if !slices.Equal(e.IDs, want.IDs) {
			report(text, "ids", fmt.Sprint(e.IDs, e.Tokens), fmt.Sprint(want.IDs, want.Tokens))
			continue
		}
		if !slices.Equal(e.Tokens, want.Tokens) {
			report(text, "tokens", e.Tokens, want.Tokens)
		}
		if !slices.Equal(e.TypeIDs, want.TypeIDs) || !slices.Equal(e.SpecialTokensMask, want.Special) {
			report(text, "type ids / special mask", [2][]int{e.TypeIDs, e.SpecialTokensMask}, [2][]int{want.TypeIDs, want.Special})
		}
		var offs [][2]int
		for _, o := range e.Offsets {
			offs = append(offs, [2]int{o.Start, o.End})
		}
		if !slices.Equal(offs, want.Offsets) {
			report(text, "offsets", fmt.Sprint(offs, e.Tokens), want.Offsets)
		}
		plain, err := tk.EncodeIDs(text, false)
		if err != nil || !slices.Equal(plain, want.Plain) {
			report(text, "ids without special tokens", plain, want.Plain)
		}
		for _, skip := range []bool{false, true} {
			got, err := tk.Decode(e.IDs, skip)
			w := want.Decode
			if skip {
				w = want.DecodeSkip
			}
			if err != nil || got != w {
				report(text, fmt.Sprintf("decode(skip=%v)", skip), fmt.Sprintf("%q %v", got, err), fmt.Sprintf("%q", w))
			}
		}
	}
	for i, p := range parityPairs {
		e, err := tk.EncodePair(p[0], p[1], true)
		if err != nil {
			t.Errorf("pair %q: %v", p, err)
			continue
		}
		want := res.Pairs[i]
		if !slices.Equal(e.IDs, want.IDs) || !slices.Equal(e.TypeIDs, want.TypeIDs) || !slices.Equal(e.SpecialTokensMask, want.Special) {
			report(fmt.Sprint(p), "pair", [3][]int{e.IDs, e.TypeIDs, e.SpecialTokensMask}, [3][]int{want.IDs, want.TypeIDs, want.Special})
		}
	}
	// The reference batches use left truncation to 12 and left padding to a multiple of 4.
	saved := *tk
	defer func() { *tk = saved }()
	if err := tk.SetTruncation(&Truncation{MaxLength: 12, Side: Left}); err != nil {
		t.Fatal(err)
	}
	tk.SetPadding(&Padding{Side: Left, PadID: 0, PadTypeID: 3, PadToken: "[P]", MultipleOf: 4})
	batch, err := tk.EncodeBatch(corpus[:8], true)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range batch {
		want := res.Batch[i]
		if !slices.Equal(e.IDs, want.IDs) || !slices.Equal(e.AttentionMask, want.Mask) || !slices.Equal(e.TypeIDs, want.TypeIDs) || !slices.Equal(e.SpecialTokensMask, want.Special) {
			report(corpus[i], "batch with truncation and padding", [4][]int{e.IDs, e.AttentionMask, e.TypeIDs, e.SpecialTokensMask}, [4][]int{want.IDs, want.Mask, want.TypeIDs, want.Special})
		}
	}
	var pairBatch []*Encoding
	for _, p := range parityPairs {
		e, err := tk.EncodePair(p[0], p[1], true)
		if err != nil {
			t.Fatal(err)
		}
		pairBatch = append(pairBatch, e)
	}
	Pad(pairBatch, *tk.Padding())
	for i, e := range pairBatch {
		want := res.PairBatch[i]
		if !slices.Equal(e.IDs, want.IDs) || !slices.Equal(e.AttentionMask, want.Mask) || !slices.Equal(e.TypeIDs, want.TypeIDs) {
			report(fmt.Sprint(parityPairs[i]), "pair batch with truncation and padding", [3][]int{e.IDs, e.AttentionMask, e.TypeIDs}, [3][]int{want.IDs, want.Mask, want.TypeIDs})
		}
	}
	if bad > 0 {
		t.Errorf("%d mismatches with Python", bad)
	}
}
