package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/migu-ml/migu/internal/badinput"
)

// miscJSON uses every component we support, so fuzzing reaches them all.
const miscJSON = `{
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "[UNK]", "special": true},
    {"id": 30, "content": "<mask>", "lstrip": true, "rstrip": true, "special": true},
    {"id": 31, "content": "cat", "single_word": true, "normalized": true},
    {"id": 32, "content": "<b>", "rstrip": true, "normalized": false}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true},
    {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Prepend", "prepend": "#"},
    {"type": "Replace", "pattern": {"String": "ß"}, "content": "ss"}]},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Punctuation", "behavior": "MergedWithPrevious"}, {"type": "Digits", "individual_digits": true},
    {"type": "Split", "pattern": {"String": "-"}, "behavior": "Contiguous", "invert": false},
    {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "MergedWithNext", "invert": true},
    {"type": "Whitespace"}, {"type": "BertPreTokenizer"}, {"type": "WhitespaceSplit"},
    {"type": "Metaspace", "replacement": "_", "prepend_scheme": "first", "split": true}]},
  "post_processor": {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "trim_offsets": true, "add_prefix_space": true},
    {"type": "TemplateProcessing", "single": "[CLS] $A [SEP]", "pair": "[CLS] $A [SEP] $B:1 [SEP]:1",
     "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [2, 3], "tokens": ["[SEP]", "x"]}}}]},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "WordPiece", "prefix": "##", "cleanup": true}, {"type": "BPEDecoder", "suffix": "</w>"},
    {"type": "Strip", "content": "_", "start": 1, "stop": 1}, {"type": "Metaspace", "replacement": "_", "prepend_scheme": "always"},
    {"type": "Fuse"}]},
  "model": {"type": "BPE", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>",
    "fuse_unk": true, "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "x": 3, "a": 4, "##b": 5, "##b</w>": 6, "#": 7,
      "c": 8, "##a": 9, "##t</w>": 10, "##at</w>": 11, "_": 12, "a</w>": 13, "ab": 14, "##t": 15, "##ab": 16},
    "merges": ["##a ##t</w>", "a ##b", "##a ##b"]}
}`

// precompiledUnigramJSON is a T5-style tokenizer whose normalizer holds a
// charsmap built by buildCharsmap.
func precompiledUnigramJSON(t testing.TB) []byte {
	tk := trainedTokenizers(t)[Unigram]
	data, err := tk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	doc["normalizer"] = seqNormalizer(
		typed{"type": "Precompiled", "precompiled_charsmap": base64.StdEncoding.EncodeToString(buildCharsmap(testRules))},
		typed{"type": "Strip", "strip_left": false, "strip_right": true}, replaceJSON(" {2,}", "▁", true))
	out, err := marshalJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tinySentencePiece writes a small SentencePiece model proto.
func tinySentencePiece(modelType int, charsmap []byte) []byte {
	var b []byte
	piece := func(p string, score float32, typ int) {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, p)
		m = protowire.AppendTag(m, 2, protowire.Fixed32Type)
		m = protowire.AppendFixed32(m, math.Float32bits(score))
		m = protowire.AppendTag(m, 3, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(typ))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	piece("<unk>", 0, spUnknown)
	piece("<s>", 0, spControl)
	piece("</s>", 0, spControl)
	for i, p := range []string{"▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "▁abc"} {
		piece(p, -float32(i), spNormal)
	}
	var ts []byte
	ts = protowire.AppendTag(ts, 3, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(modelType))
	ts = protowire.AppendTag(ts, 43, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(math.MaxUint64)) // pad_id -1
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	var ns []byte
	if len(charsmap) > 0 {
		ns = protowire.AppendTag(ns, 2, protowire.BytesType)
		ns = protowire.AppendBytes(ns, charsmap)
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendBytes(b, ns)
}

func TestTinySentencePiece(t *testing.T) {
	cases := []struct {
		name      string
		modelType int
		charsmap  []byte
		text      string
		want      []int
	}{
		{"bpe", 2, nil, "abc ab", []int{11, 9}},
		{"unigram", 1, buildCharsmap(testRules), "ＡＢ abc", []int{3, 0, 3, 4, 5, 6, 2}},
	}
	for _, c := range cases {
		tk, err := FromSentencePiece(tinySentencePiece(c.modelType, c.charsmap))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := tk.EncodeIDs(c.text, true)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: Encode(%q) = %v, %v; want %v", c.name, c.text, got, err, c.want)
		}
	}
}

func FuzzLoad(f *testing.F) {
	// Small seeds keep the fuzzer's minimisation quick.
	for _, doc := range []string{tinyByteLevelJSON, tinyLlamaJSON, miscJSON} {
		f.Add([]byte(doc))
	}
	f.Add(tinyUnigramJSON())
	f.Add(tinySentencePiece(1, buildCharsmap(testRules)))
	f.Add(tinySentencePiece(2, nil))
	f.Add([]byte(`{"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0],["a",-1.5],["▁",-2]]},"pre_tokenizer":{"type":"Metaspace"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tk *Tokenizer
		var err error
		if looksLikeJSON(data) {
			tk, err = FromJSON(data)
		} else {
			tk, err = FromSentencePiece(data)
		}
		if err != nil {
			if !badinput.Is(err) {
				t.Fatalf("error not marked as bad input: %v", err)
			}
			return
		}
		if p := tk.Padding(); p != nil && (p.Length > 1<<12 || p.MultipleOf > 1<<12) {
			return
		}
		for _, s := range []string{"", "Hello world", " a\n\tb  ", "中文🙂é", "<s>x</s>"} {
			e, err := tk.Encode(s, true)
			if err != nil {
				continue
			}
			checkEncoding(t, s, e)
			tk.Decode(e.IDs, false)
			tk.Decode(e.IDs, true)
			tk.EncodePair(s, "b", true)
		}
		again, err := tk.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		if _, err := FromJSON(again); err != nil {
			t.Fatalf("a loaded tokenizer does not load back: %v", err)
		}
	})
}

// tinyUnigramJSON is a T5-style tokenizer with a small charsmap.
func tinyUnigramJSON() []byte {
	charsmap := base64.StdEncoding.EncodeToString(buildCharsmap(map[string]string{"ﬁ": "fi", "Ａ": "A", "e\u0301": "é"}))
	return []byte(`{"version":"1.0","added_tokens":[{"id":0,"content":"<pad>","special":true},{"id":1,"content":"</s>","special":true},{"id":2,"content":"<unk>","special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Precompiled","precompiled_charsmap":"` + charsmap + `"},{"type":"Strip","strip_left":false,"strip_right":true},{"type":"Replace","pattern":{"Regex":" {2,}"},"content":"▁"}]},
"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
"post_processor":{"type":"TemplateProcessing","single":"$A </s>","pair":"$A </s> $B </s>","special_tokens":{"</s>":{"id":"</s>","ids":[1],"tokens":["</s>"]}}},
"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
"model":{"type":"Unigram","unk_id":2,"vocab":[["<pad>",0],["</s>",0],["<unk>",0],["▁",-1],["a",-2],["b",-2.5],["▁a",-3],["ab",-3.5],["é",-4],["fi",-4]]}}`)
}

// tinyByteLevelJSON is a RoBERTa-style tokenizer with a handful of tokens.
const tinyByteLevelJSON = `{"version":"1.0","added_tokens":[{"id":0,"content":"<s>","special":true},{"id":1,"content":"</s>","special":true},{"id":9,"content":"<mask>","lstrip":true,"special":true}],
"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
"post_processor":{"type":"RobertaProcessing","sep":["</s>",1],"cls":["<s>",0],"trim_offsets":true,"add_prefix_space":false},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","unk_token":null,"vocab":{"<s>":0,"</s>":1,"Ġ":2,"a":3,"b":4,"Ġa":5,"ab":6,"Ġab":7,"Ċ":8,"<mask>":9},"merges":["Ġ a","a b","Ġa b"]}}`

// tinyLlamaJSON is a Llama-style tokenizer with byte fallback.
const tinyLlamaJSON = `{"version":"1.0","added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,"vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x0A>":3,"<0xE4>":4,"<0xB8>":5,"<0xAD>":6,"▁":7,"a":8,"b":9,"▁a":10,"ab":11},"merges":[["▁","a"],["a","b"]]}}`

func checkEncoding(t *testing.T, text string, e *Encoding) {
	t.Helper()
	n := e.Len()
	if len(e.Tokens) != n || len(e.Offsets) != n || len(e.TypeIDs) != n || len(e.SpecialTokensMask) != n || len(e.AttentionMask) != n {
		t.Fatalf("%q: encoding fields differ in length", text)
	}
	limit := len(validUTF8(text))
	for _, o := range e.Offsets {
		if o.Start < 0 || o.Start > o.End || o.End > limit {
			t.Fatalf("%q: offset %v outside the text", text, o)
		}
	}
}

var fuzzTokenizersOnce sync.Once
var fuzzTokenizers map[string]*Tokenizer

func FuzzEncode(f *testing.F) {
	fuzzTokenizersOnce.Do(func() {
		fuzzTokenizers = map[string]*Tokenizer{}
		for kind, tk := range trainedTokenizers(f) {
			fuzzTokenizers[string(kind)] = tk
		}
		for name, doc := range map[string][]byte{"misc": []byte(miscJSON), "precompiled": precompiledUnigramJSON(f)} {
			tk, err := FromJSON(doc)
			if err != nil {
				f.Fatalf("%s: %v", name, err)
			}
			fuzzTokenizers[name] = tk
		}
	})
	for _, s := range parityCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for name, tk := range fuzzTokenizers {
			e, err := tk.Encode(text, true)
			if err != nil {
				t.Fatalf("%s: Encode(%q): %v", name, text, err)
			}
			checkEncoding(t, text, e)
			again, _ := tk.EncodeIDs(text, true)
			if !slices.Equal(e.IDs, again) {
				t.Fatalf("%s: %q encodes differently the second time", name, text)
			}
			got, err := tk.Decode(e.IDs, false)
			if err != nil {
				t.Fatalf("%s: Decode: %v", name, err)
			}
			if name == string(ByteLevelBPE) && utf8.ValidString(text) && !containsAdded(tk, text) {
				plain, _ := tk.EncodeIDs(text, false)
				if got, _ = tk.Decode(plain, false); got != text {
					t.Fatalf("byte-level round trip of %q gave %q", text, got)
				}
			}
			if _, err := tk.EncodePair(text, text, true); err != nil {
				t.Fatalf("%s: EncodePair: %v", name, err)
			}
		}
	})
}
