package tokenizer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// TestLlamaKnownIDs checks the real Llama 2 model read straight from
// tokenizer.model against ids printed by transformers; newlines must be
// byte tokens (<0x0A> = 13), never <unk>.
func TestLlamaKnownIDs(t *testing.T) {
	tk, err := Load(testenv.SharedData(t, "tokenizers/llama2/tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		text string
		ids  []int
	}{
		{"Hello world", []int{1, 15043, 3186}},
		{"\n", []int{1, 29871, 13}},
		{"Hello\nworld", []int{1, 15043, 13, 11526}},
		{" leading", []int{1, 29871, 8236}},
		{"中文", []int{1, 29871, 30275, 30333}},
		{"🙂", []int{1, 29871, 243, 162, 156, 133}},
		{"<s>x</s>", []int{1, 1, 921, 2}},
		{"", []int{1}},
	}
	for _, c := range cases {
		got, err := tk.EncodeIDs(c.text, true)
		if err != nil || !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q) = %v, %v; want %v", c.text, got, err, c.ids)
		}
	}
	want := SpecialIDs{BOS: 1, EOS: 2, PAD: -1, UNK: 0, MASK: -1}
	if got := tk.SpecialIDs(); got != want {
		t.Errorf("SpecialIDs() = %+v, want %+v", got, want)
	}
	if n := tk.VocabSize(); n != 32000 {
		t.Errorf("VocabSize() = %d, want 32000", n)
	}
}

var (
	trainedOnce sync.Once
	trained     map[Kind]*Tokenizer
	trainedErr  error
)

// trainedTokenizers are small tokenizers of each kind, for tests that must
// not need Python.
func trainedTokenizers(t testing.TB) map[Kind]*Tokenizer {
	t.Helper()
	trainedOnce.Do(func() {
		trained = map[Kind]*Tokenizer{}
		corpus := SampleCorpus(300, 5)
		for _, opt := range []TrainOptions{{Kind: ByteLevelBPE, VocabSize: 600}, {Kind: SentencePieceBPE, VocabSize: 600}, {Kind: Unigram, VocabSize: 400}} {
			tk, err := Train(corpus, opt)
			if err != nil {
				trainedErr = err
				return
			}
			trained[opt.Kind] = tk
		}
	})
	if trainedErr != nil {
		t.Fatal(trainedErr)
	}
	return trained
}

// containsAdded reports whether text holds an added token's content.
func containsAdded(tk *Tokenizer, text string) bool {
	for _, a := range tk.AddedTokens() {
		if strings.Contains(text, a.Content) {
			return true
		}
	}
	return false
}

func TestRoundTrip(t *testing.T) {
	tks := trainedTokenizers(t)
	texts := append(append([]string(nil), parityCorpus...), randomStrings(200, 2)...)
	cases := []struct {
		name string
		tk   *Tokenizer
	}{{"bytelevel", tks[ByteLevelBPE]}, {"sentencepiece-bpe", tks[SentencePieceBPE]}}
	if p := llamaModelPath(); p != "" {
		llama, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name string
			tk   *Tokenizer
		}{"llama", llama})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, text := range texts {
				// "▁" is how SentencePiece spells a space, so text holding
				// it cannot come back unchanged.
				if containsAdded(c.tk, text) || c.name != "bytelevel" && strings.Contains(text, "▁") {
					continue
				}
				e, err := c.tk.Encode(text, true)
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.tk.Decode(e.IDs, true)
				if err != nil {
					t.Fatal(err)
				}
				if got != text {
					t.Errorf("decode(encode(%q)) = %q", text, got)
				}
			}
		})
	}
}

func TestTrainDeterministic(t *testing.T) {
	corpus := SampleCorpus(200, 9)
	for _, kind := range []Kind{ByteLevelBPE, SentencePieceBPE, Unigram} {
		var docs [][]byte
		for range 2 {
			tk, err := Train(corpus, TrainOptions{Kind: kind, VocabSize: 450})
			if err != nil {
				t.Fatal(err)
			}
			b, err := tk.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, b)
		}
		if !bytes.Equal(docs[0], docs[1]) {
			t.Errorf("%s: two trainings on the same corpus differ", kind)
		}
	}
}

func TestTrainSizes(t *testing.T) {
	corpus := SampleCorpus(400, 4)
	cases := []struct {
		kind    Kind
		size    int
		wantErr bool
	}{
		{ByteLevelBPE, 261, false},
		{ByteLevelBPE, 256, true},
		{ByteLevelBPE, 2000, false},
		{SentencePieceBPE, 300, true},
		{SentencePieceBPE, 2000, false},
		{Unigram, 256, false},
		{Unigram, 2000, false},
		{Unigram, 20, true},
	}
	for _, c := range cases {
		tk, err := Train(corpus, TrainOptions{Kind: c.kind, VocabSize: c.size})
		if c.wantErr {
			if err == nil || !badinput.Is(err) {
				t.Errorf("%s size %d: got %v, want a bad-input error", c.kind, c.size, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s size %d: %v", c.kind, c.size, err)
			continue
		}
		if n := tk.VocabSize(); n > c.size {
			t.Errorf("%s: VocabSize() = %d, above the requested %d", c.kind, n, c.size)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	for kind, tk := range trainedTokenizers(t) {
		path := filepath.Join(t.TempDir(), "tokenizer.json")
		if err := tk.Save(path); err != nil {
			t.Fatal(err)
		}
		back, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		for _, text := range parityCorpus {
			a, _ := tk.EncodeIDs(text, true)
			b, _ := back.EncodeIDs(text, true)
			if !slices.Equal(a, b) {
				t.Fatalf("%s: %q encodes differently after Save and Load", kind, text)
			}
		}
		if back.SpecialIDs() != tk.SpecialIDs() {
			t.Errorf("%s: special ids %+v after loading, %+v before", kind, back.SpecialIDs(), tk.SpecialIDs())
		}
	}
}

func TestSpecialIDs(t *testing.T) {
	tks := trainedTokenizers(t)
	cases := []struct {
		kind Kind
		want SpecialIDs
	}{
		{ByteLevelBPE, SpecialIDs{BOS: 0, PAD: 1, EOS: 2, UNK: 3, MASK: tks[ByteLevelBPE].VocabSize() - 1}},
		{SentencePieceBPE, SpecialIDs{UNK: 0, BOS: 1, EOS: 2, PAD: -1, MASK: -1}},
		{Unigram, SpecialIDs{PAD: 0, EOS: 1, UNK: 2, BOS: -1, MASK: -1}},
	}
	for _, c := range cases {
		if got := tks[c.kind].SpecialIDs(); got != c.want {
			t.Errorf("%s: SpecialIDs() = %+v, want %+v", c.kind, got, c.want)
		}
	}
	// A tokenizer_config.json beside the file names the roles.
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenizer.json")
	if err := tks[SentencePieceBPE].Save(path); err != nil {
		t.Fatal(err)
	}
	cfg := `{"bos_token": {"content": "</s>"}, "pad_token": "<unk>", "eos_token": null}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tk.SpecialIDs(), (SpecialIDs{BOS: 2, EOS: -1, PAD: 0, UNK: 0, MASK: -1}); got != want {
		t.Errorf("with tokenizer_config.json: %+v, want %+v", got, want)
	}
}

func TestTruncationAndPadding(t *testing.T) {
	tk := trainedTokenizers(t)[ByteLevelBPE]
	full, err := tk.EncodeIDs("one two three four five six seven", false)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		tr   Truncation
		pad  Padding
		want func([]int) []int
	}{
		{"right", Truncation{MaxLength: 5}, Padding{PadID: 1}, func(ids []int) []int { return append([]int{0}, append(ids[:3:3], 2)...) }},
		{"left", Truncation{MaxLength: 5, Side: Left}, Padding{PadID: 1}, func(ids []int) []int { return append([]int{0}, append(ids[len(ids)-3:], 2)...) }},
		{"left padding", Truncation{MaxLength: 4}, Padding{PadID: 1, Side: Left, Length: 6}, func(ids []int) []int { return append([]int{1, 1, 0}, ids[0], ids[1], 2) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			saved := *tk
			defer func() { *tk = saved }()
			if err := tk.SetTruncation(&c.tr); err != nil {
				t.Fatal(err)
			}
			tk.SetPadding(&c.pad)
			got, err := tk.EncodeBatch([]string{"one two three four five six seven", "x"}, true)
			if err != nil {
				t.Fatal(err)
			}
			if want := c.want(full); !slices.Equal(got[0].IDs, want) {
				t.Errorf("ids %v, want %v", got[0].IDs, want)
			}
			if got[0].Len() != got[1].Len() {
				t.Errorf("batch not padded to one length: %d and %d", got[0].Len(), got[1].Len())
			}
		})
	}
	if err := tk.SetTruncation(&Truncation{MaxLength: 3, Strategy: "shortest"}); err == nil {
		t.Error("an unknown truncation strategy was accepted")
	}
}

func TestBadInput(t *testing.T) {
	good := func(edit func(map[string]any)) string {
		doc := map[string]any{
			"version": "1.0", "added_tokens": []any{},
			"model": map[string]any{"type": "BPE", "vocab": map[string]int{"a": 0, "b": 1, "ab": 2}, "merges": []string{"a b"}},
		}
		edit(doc)
		b, _ := json.Marshal(doc)
		return string(b)
	}
	cases := []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"not json", "{", []string{"not valid JSON"}},
		{"not an object", "[1]", []string{"not valid JSON"}},
		{"no model", `{"version":"1.0"}`, []string{"model: missing"}},
		{"vocab kind", good(func(d map[string]any) { d["model"].(map[string]any)["vocab"] = []int{1} }), []string{"model.vocab", "expected an object"}},
		{"merge token", good(func(d map[string]any) { d["model"].(map[string]any)["merges"] = []string{"a c"} }), []string{"model.merges[0]", `"c"`}},
		{"merge form", good(func(d map[string]any) { d["model"].(map[string]any)["merges"] = []any{"ab"} }), []string{"model.merges[0]", "space"}},
		{"model type", good(func(d map[string]any) { d["model"].(map[string]any)["type"] = "WordPiece" }), []string{"model.type", `"WordPiece"`, "supported: BPE, Unigram, WordLevel"}},
		{"normalizer type", good(func(d map[string]any) {
			d["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "Lowercase"}, map[string]any{"type": "NFKC"}}}
		}), []string{"normalizer.normalizers[1].type", `"NFKC"`, "Precompiled"}},
		{"pre-tokenizer type", good(func(d map[string]any) { d["pre_tokenizer"] = map[string]any{"type": "UnicodeScripts"} }), []string{"pre_tokenizer.type", `"UnicodeScripts"`, "Metaspace"}},
		{"decoder type", good(func(d map[string]any) { d["decoder"] = map[string]any{"type": "CTC"} }), []string{"decoder.type", `"CTC"`, "ByteFallback"}},
		{"processor type", good(func(d map[string]any) { d["post_processor"] = map[string]any{"type": "Magic"} }), []string{"post_processor.type", "TemplateProcessing"}},
		{"no type", good(func(d map[string]any) { d["decoder"] = map[string]any{"prefix": "##"} }), []string{"decoder.type: missing"}},
		{"charsmap base64", good(func(d map[string]any) {
			d["normalizer"] = map[string]any{"type": "Precompiled", "precompiled_charsmap": "!!"}
		}), []string{"normalizer.precompiled_charsmap", "base64"}},
		{"charsmap size", good(func(d map[string]any) {
			d["normalizer"] = map[string]any{"type": "Precompiled", "precompiled_charsmap": "/////w=="}
		}), []string{"normalizer.precompiled_charsmap", "trie size"}},
		{"back-reference regex", good(func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]string{"Regex": `(a)\1`}, "behavior": "Isolated", "invert": false}
		}), []string{"pre_tokenizer.pattern.Regex", `unsupported escape \1`}},
		{"unbounded look-behind", good(func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]string{"Regex": `(?<=a+)b`}, "behavior": "Isolated", "invert": false}
		}), []string{"pre_tokenizer.pattern.Regex", "look-behind"}},
		{"split behavior", good(func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]string{"String": " "}, "behavior": "Sideways"}
		}), []string{"pre_tokenizer.behavior", "Sideways"}},
		{"metaspace replacement", good(func(d map[string]any) { d["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "ab"} }), []string{"pre_tokenizer.replacement", "single character"}},
		{"added token", good(func(d map[string]any) { d["added_tokens"] = []any{map[string]any{"id": 3}} }), []string{"added_tokens[0].content: missing"}},
		{"template token", good(func(d map[string]any) {
			d["post_processor"] = map[string]any{"type": "TemplateProcessing", "single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}}, "special_tokens": map[string]any{}}
		}), []string{"post_processor.single[0]", `"<s>"`}},
		{"unigram unk", `{"model":{"type":"Unigram","unk_id":5,"vocab":[["a",-1.0]]}}`, []string{"model.unk_id", "outside"}},
		{"unigram item", `{"model":{"type":"Unigram","vocab":[["a"]]}}`, []string{"model.vocab[0]", "[piece, score]"}},
		{"truncation", good(func(d map[string]any) { d["truncation"] = map[string]any{"max_length": -1} }), []string{"truncation.max_length"}},
		{"padding side", good(func(d map[string]any) { d["padding"] = map[string]any{"direction": "Up"} }), []string{"padding.direction", `"Up"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromJSON([]byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !badinput.Is(err) {
				t.Errorf("error %v is not marked as bad input", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	// Load names the file.
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, []byte(`{"model":{"type":"WordPiece"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+": model.type") {
		t.Errorf("Load error %v does not start with the path and field", err)
	}
	var fe *FormatError
	if _, err := Load(path); !errors.As(err, &fe) || fe.Field != "model.type" {
		t.Errorf("Load error is not a *FormatError for model.type: %v", err)
	}

	// A SentencePiece file that is not one.
	if _, err := FromSentencePiece([]byte{0xff, 0xff, 0xff}); err == nil || !strings.Contains(err.Error(), "tokenizer.model") {
		t.Errorf("FromSentencePiece(garbage) = %v", err)
	}
}

func TestDecodeOutOfRange(t *testing.T) {
	tk := trainedTokenizers(t)[Unigram]
	for _, id := range []int{-1, tk.VocabSize(), 1 << 40} {
		_, err := tk.Decode([]int{5, id}, false)
		if err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
			t.Errorf("Decode(id %d) = %v, want an out-of-range error", id, err)
		}
	}
}

// buildCharsmap writes rules in SentencePiece's precompiled_charsmap
// layout: a Darts-clone double array over the keys, then the replacements.
func buildCharsmap(rules map[string]string) []byte {
	type node struct {
		next  map[byte]*node
		value int
		leaf  bool
	}
	root := &node{next: map[byte]*node{}}
	var blob []byte
	keys := make([]string, 0, len(rules))
	for k := range rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n := root
		for i := 0; i < len(k); i++ {
			c, ok := n.next[k[i]]
			if !ok {
				c = &node{next: map[byte]*node{}}
				n.next[k[i]] = c
			}
			n = c
		}
		n.leaf, n.value = true, len(blob)
		blob = append(append(blob, rules[k]...), 0)
	}
	units := make([]uint32, 1)
	used := map[uint32]bool{0: true}
	type item struct {
		n   *node
		pos uint32
	}
	queue := []item{{root, 0}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		labels := make([]int, 0, len(it.n.next))
		for c := range it.n.next {
			labels = append(labels, int(c))
		}
		sort.Ints(labels)
		slots := labels
		if it.n.leaf {
			slots = append([]int{0}, labels...)
		}
		base := uint32(1)
		for ; ; base++ {
			free := !used[base]
			for _, l := range slots {
				if used[base^uint32(l)] || base^uint32(l) == 0 {
					free = false
				}
			}
			if free && len(slots) > 0 {
				break
			}
			if len(slots) == 0 {
				break
			}
		}
		if len(slots) == 0 {
			continue
		}
		used[base] = true
		for int(base|0xFF) >= len(units) {
			units = append(units, 0)
		}
		units[it.pos] |= (it.pos ^ base) << 10
		if it.n.leaf {
			units[it.pos] |= 1 << 8
			units[base] = uint32(it.n.value) | 1<<31
			used[base] = true
		}
		for _, l := range labels {
			p := base ^ uint32(l)
			used[p] = true
			units[p] = uint32(l)
			queue = append(queue, item{it.n.next[byte(l)], p})
		}
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(4*len(units)))
	for _, u := range units {
		out = binary.LittleEndian.AppendUint32(out, u)
	}
	return append(out, blob...)
}

var testRules = map[string]string{
	"ﬁ": "fi", "Ａ": "A", "\u3000": " ", "e\u0301": "é", "\r": " ", "x\u0301": "", "②": "2",
}

func TestPrecompiled(t *testing.T) {
	p, err := parsePrecompiled(buildCharsmap(testRules))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"ﬁne", "fine"},
		{"ＡＡ", "AA"},
		{"a\u3000b", "a b"},
		{"cafe\u0301", "café"},
		// The shortest matching rule stands for the whole grapheme.
		{"Ａ\u0301", "A"},
		{"\r\n", " "},
		{"x\u0301y", "y"},
		{"②\u0301\u0301\u0301", "2\u0301\u0301\u0301"},
	}
	for _, c := range cases {
		n := newNormString(c.in, 0)
		p.normalize(n)
		if n.s != c.want {
			t.Errorf("normalize(%q) = %q, want %q", c.in, n.s, c.want)
		}
		if len(n.align) != len(n.s) {
			t.Errorf("normalize(%q): %d alignments for %d bytes", c.in, len(n.align), len(n.s))
		}
	}
}

func TestGraphemeLen(t *testing.T) {
	cases := []struct {
		in   string
		want int
	}{
		{"ab", 1},
		{"e\u0301x", 3},
		{"\r\nx", 2},
		{"\n\u0301", 1},
		{"👍🏽x", 8},
		{"👩\u200d💻x", 11},
		{"🇫🇷🇩🇪", 8},
		{"\u1100\u1161\u11a8x", 9},
		{"\u0600\u0628x", 4},
		{"", 0},
	}
	for _, c := range cases {
		if got := graphemeLen(c.in); got != c.want {
			t.Errorf("graphemeLen(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestRustLossy(t *testing.T) {
	cases := []struct{ in, want string }{
		{"abc", "abc"},
		{"a\xffb", "a\uFFFDb"},
		{"\xe2\x82", "\uFFFD"},
		{"\xe2\x82A", "\uFFFDA"},
		{"\xf0\x9f\x99", "\uFFFD"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},
	}
	for _, c := range cases {
		if got := rustLossy([]byte(c.in)); got != c.want {
			t.Errorf("rustLossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestUnicodeClasses(t *testing.T) {
	digit := "[" + reDigit() + "]"
	cases := []struct{ in, want string }{
		{`\d+`, digit + "+"},
		{`[\d\s]`, "[" + reDigit() + `\t\n\v\f\r \x{85}\p{Z}]`},
		{`\S+`, `[^\t\n\v\f\r \x{85}\p{Z}]+`},
		{`[]\w]`, "[]" + reWord(true) + "]"},
		{`[\s\W]`, `(?:[\t\n\v\f\r \x{85}\p{Z}]|[^` + reWord(true) + `])`},
		{`[^\W_]`, `[^_\W]`},
		{`[[:alpha:]x]`, `[[:alpha:]x]`},
		{`\\d`, `\\d`},
		{` {2,}`, ` {2,}`},
	}
	for _, c := range cases {
		if got := unicodeClasses(c.in); got != c.want {
			t.Errorf("unicodeClasses(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	re, err := compileRegex(`\w+`)
	if err != nil {
		t.Fatal(err)
	}
	inClass, err := compileRegex(`[\w]+`)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string][2]bool{"abc": {true, true}, "é": {true, true}, "½": {true, false}, "①": {false, false}, "٣": {true, true}, "\u200d": {false, false}} {
		if got := [2]bool{len(re.findAll(s)) > 0, len(inClass.findAll(s)) > 0}; got != want {
			t.Errorf("%q matches \\w+ and [\\w]+: %v, want %v (Oniguruma)", s, got, want)
		}
	}
}

// TestConcurrentEncode shares one tokenizer (and its caches) between
// goroutines.
func TestConcurrentEncode(t *testing.T) {
	for kind, tk := range trainedTokenizers(t) {
		texts := randomStrings(300, 8)
		want := make([][]int, len(texts))
		for i, s := range texts {
			want[i], _ = tk.EncodeIDs(s, true)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range texts {
					k := (i + 75*g) % len(texts)
					if got, err := tk.EncodeIDs(texts[k], true); err != nil || !slices.Equal(got, want[k]) {
						t.Errorf("%s: concurrent Encode(%q) = %v, want %v", kind, texts[k], got, want[k])
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

// TestSerdeFloat checks numbers that serde_json (and so Python's
// tokenizers) reads one unit in the last place away from the closest float.
func TestSerdeFloat(t *testing.T) {
	cases := []struct {
		in   string
		want float64
	}{
		{"-10.413266654746877", -10.413266654746876},
		{"-9.222574290196015", -9.222574290196016},
		{"-11.572632130396235", -11.572632130396237},
		{"-13.203592895716465", -13.203592895716463},
		{"-18.792371149189734", -18.792371149189737},
		{"-3.5", -3.5},
		{"0", 0},
		{"-7", -7},
		{"1e3", 1000},
		{"2.5E-2", 0.025},
	}
	for _, c := range cases {
		got, ok := parseSerdeFloat(c.in)
		if !ok || got != c.want {
			t.Errorf("parseSerdeFloat(%s) = %v, %v; want %v", c.in, got, ok, c.want)
		}
	}
	for _, bad := range []string{"", "-", "1.", ".5", "1e", "1e999", "0x10", "1 "} {
		if _, ok := parseSerdeFloat(bad); ok {
			t.Errorf("parseSerdeFloat(%q) accepted", bad)
		}
	}
}
