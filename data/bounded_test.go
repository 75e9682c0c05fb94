package data

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/tokenizer"
)

// boundedTokenizers are one tokenizer of each family migu trains (Llama
// 2's SentencePiece BPE, RoBERTa's byte-level BPE, T5's Unigram), and
// the real Llama 2 tokenizer when the shared data holds it.
var boundedTokenizers = sync.OnceValue(func() map[string]*tokenizer.Tokenizer {
	out := map[string]*tokenizer.Tokenizer{}
	corpus := tokenizer.SampleCorpus(2000, 5)
	for _, k := range []tokenizer.Kind{tokenizer.SentencePieceBPE, tokenizer.ByteLevelBPE, tokenizer.Unigram} {
		tok, err := tokenizer.Train(corpus, tokenizer.TrainOptions{Kind: k, VocabSize: 1200})
		if err != nil {
			panic(err)
		}
		out[string(k)] = tok
	}
	if tok, err := tokenizer.Load(filepath.Join(filepath.Dir(testenv.Root()), "shared", "data", "tokenizers", "llama2", "tokenizer.model")); err == nil {
		out["llama2"] = tok
	}
	return out
})

// boundedCase is one record shape and objective whose long field bounded
// shortens.
type boundedCase struct {
	name string
	obj  Objective
	rec  func(long string) Record
	chat bool // render with chatmlTest
}

var boundedCases = []boundedCase{
	{"text clm", CLM, func(s string) Record { return Record{Kind: Text, Text: s} }, false},
	{"text mlm", MLM, func(s string) Record { return Record{Kind: Text, Text: s} }, false},
	{"sentence cls", CLS, func(s string) Record { return Record{Kind: Classification, Sentence: s, Label: "b"} }, false},
	{"answer clm", CLM, func(s string) Record { return Record{Kind: Instruction, Instruction: "say it", Output: s} }, false},
	{"answer seq2seq", Seq2Seq, func(s string) Record { return Record{Kind: Instruction, Instruction: "say it", Output: s} }, false},
	{"input clm", CLM, func(s string) Record { return Record{Kind: Instruction, Instruction: "sum up", Input: s, Output: "ok"} }, false},
	{"instruction seq2seq", Seq2Seq, func(s string) Record { return Record{Kind: Instruction, Instruction: s, Output: "ok"} }, false},
	{"instruction before an input clm", CLM, func(s string) Record { return Record{Kind: Instruction, Instruction: s, Input: "short", Output: "ok"} }, false},
	{"instruction and input seq2seq", Seq2Seq, func(s string) Record { return Record{Kind: Instruction, Instruction: s, Input: s, Output: "ok"} }, false},
	{"instruction mlm", MLM, func(s string) Record { return Record{Kind: Instruction, Instruction: s, Input: "short", Output: "ok"} }, false},
	{"verbatim prompt clm", CLM, func(s string) Record { return Record{Kind: Instruction, Prompt: s, Output: " done"} }, false},
	{"verbatim prompt seq2seq", Seq2Seq, func(s string) Record { return Record{Kind: Instruction, Prompt: s, Output: "done"} }, false},
	{"classification clm", CLM, func(s string) Record { return Record{Kind: Classification, Sentence: s, Label: "b"} }, false},
	{"chat user turn", CLM, func(s string) Record {
		return Record{Kind: Chat, Messages: []chat.Message{{Role: "user", Content: s}, {Role: "assistant", Content: "ok"}}, Learn: []bool{false, true}}
	}, true},
	{"chat assistant turn", CLM, func(s string) Record {
		return Record{Kind: Chat, Messages: []chat.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: s}}, Learn: []bool{false, true}}
	}, true},
	{"prompt under a chat template", CLM, func(s string) Record { return Record{Kind: Instruction, Prompt: s, Output: "done"} }, true},
	{"sentence under a chat template", CLM, func(s string) Record { return Record{Kind: Classification, Sentence: s, Label: "b"} }, true},
	{"input under a chat template", CLM, func(s string) Record { return Record{Kind: Instruction, Instruction: "sum up", Input: s, Output: "ok"} }, true},
}

// checkBounded encodes rec with and without bounding and fails unless the
// examples are equal; it reports whether bounding shortened the record.
func checkBounded(t *testing.T, tok *tokenizer.Tokenizer, c boundedCase, maxLen int, long string) (shortened bool) {
	t.Helper()
	rec := c.rec(long)
	cfg := Config{Objective: c.obj, MaxLen: maxLen, Specials: Specials{BOS: 1, EOS: 2, PAD: 0, MASK: 3, DecoderStart: 0}, VocabSize: 1000, Template: AlpacaTemplate}
	if c.chat {
		tpl, err := chat.Parse("chatml-test", chatmlTest)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Chat = tpl
	}
	cl := CLPrompt{Task: "TC", Dataset: "x", Instruction: "Pick one.\n", Options: []string{"a", "b"}}
	full, err := NewEncoder(tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	full.unbounded = true
	bounded, _ := NewEncoder(tok, cfg)
	want, werr := full.EncodeRecord(&rec, cl)
	got, gerr := bounded.EncodeRecord(&rec, cl)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("errors differ: full %v, bounded %v", werr, gerr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("max-len %d: bounded encoding differs from full tokenization\n got %+v\nwant %+v", maxLen, got, want)
	}
	short, err := bounded.bounded(&rec)
	return err == nil && !reflect.DeepEqual(*short, rec)
}

// longTexts are texts far longer than any example: prose, lines, one word
// without white space, digits, CJK and runs of spaces.
func longTexts() map[string]string {
	lines := tokenizer.SampleCorpus(300, 9)
	return map[string]string{
		"prose":       strings.Join(lines, " "),
		"lines":       strings.Join(lines, "\n"),
		"paragraphs":  strings.Join(lines, ".\n\n"),
		"one word":    strings.Repeat("abcdéfghij", 800),
		"digits":      strings.Repeat("1234567890", 800),
		"cjk":         strings.Repeat("数据集的每一行都是", 300),
		"space runs":  strings.Repeat("a    b\t\t c\n\n\n", 500),
		"punctuation": strings.Repeat("x.\n\n(y), ", 800),
	}
}

// With a long field, an example made from the shortened record equals the
// one made from the whole record, for every tokenizer family, record
// shape and a range of lengths.
func TestBoundedEncoding(t *testing.T) {
	texts := longTexts()
	for tname, tok := range boundedTokenizers() {
		for _, c := range boundedCases {
			for xname, text := range texts {
				for _, maxLen := range []int{8, 33, 200} {
					t.Run(fmt.Sprintf("%s/%s/%s/%d", tname, c.name, xname, maxLen), func(t *testing.T) {
						// A text without white space is one word, shorter
						// than maxWord: it is kept whole.
						if shortened, words := checkBounded(t, tok, c, maxLen, text), strings.ContainsAny(text, " \n"); shortened != words {
							t.Fatalf("shortened %v, want %v", shortened, words)
						}
					})
				}
			}
		}
	}
}

// The work per record follows MaxLen, not the record's length: a record
// of 20 MB is tokenized in a piece of a few KB, and one of 20 MB without
// white space (a hostile one) in a piece of at most maxWord bytes more.
func TestBoundedWork(t *testing.T) {
	tok := boundedTokenizers()[string(tokenizer.SentencePieceBPE)]
	prose := strings.Repeat(strings.Join(tokenizer.SampleCorpus(200, 3), " "), 2000)
	word := strings.Repeat("0.x", 7<<20)
	enc, err := NewEncoder(tok, Config{Objective: CLM, MaxLen: 32, Specials: Specials{BOS: 1, EOS: 2, PAD: 0, MASK: -1, DecoderStart: -1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		text string
		most int
	}{
		{"prose", prose, 4 * bytesPerToken * enc.boundLimit()},
		{"one word", word, maxWord + 4*bytesPerToken*enc.boundLimit()},
	} {
		if len(c.text) < 20<<20 {
			t.Fatalf("%s: text of %d bytes", c.name, len(c.text))
		}
		for _, r := range []Record{{Kind: Text, Text: c.text}, {Kind: Instruction, Prompt: c.text, Output: "x"}} {
			short, err := enc.bounded(&r)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(short.Text) + len(short.Prompt); n > c.most {
				t.Fatalf("%s: kept %d bytes of %d", c.name, n, len(c.text))
			}
			ex, err := enc.EncodeRecord(&r, CLPrompt{})
			if err != nil || len(ex.InputIDs) != 32 || !ex.Truncated {
				t.Fatalf("%s: example %+v, %v", c.name, ex, err)
			}
		}
	}
}

// FuzzBoundedEncoding compares bounded and full tokenization on texts made
// long by repeating the fuzzer's input, for every tokenizer family and
// record shape.
func FuzzBoundedEncoding(f *testing.F) {
	for _, s := range []string{"hello world ", "a", " ", "x.\n\n", "数据 ", "<s></s> ", "1,234.5 ", "\t\t", "é\u0301 ", "aaa bbb\n"} {
		f.Add(s, "", uint8(10), uint8(0), uint8(0))
	}
	f.Add("The cat ", "sat on the mat. ", uint8(40), uint8(3), uint8(1))
	toks := boundedTokenizers()
	names := make([]string, 0, len(toks))
	for n := range toks {
		names = append(names, n)
	}
	slices.Sort(names)
	f.Fuzz(func(t *testing.T, a, b string, maxLen, shape, which uint8) {
		unit := a + b
		if unit == "" || len(unit) > 200 || !utf8.ValidString(unit) {
			return // Read refuses records that are not UTF-8
		}
		ml := 4 + int(maxLen)%120
		// Long enough that bounded shortens it at least once.
		text := strings.Repeat(unit, 1+(24*bytesPerToken*(ml+boundMargin))/len(unit))
		if b != "" {
			text = a + text // an odd start, so the repeats do not all align
		}
		if !utf8.ValidString(text) {
			return // a valid unit after an invalid start: still not a record Read accepts
		}
		c := boundedCases[int(shape)%len(boundedCases)]
		checkBounded(t, toks[names[int(which)%len(names)]], c, ml, text)
	})
}
