package data

import (
	"reflect"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// want is one expected batch row, spelled in words of the test tokenizer
// ("-" is IgnoreIndex).
type want struct {
	ids, mask, labels string
	dec, dmask        string // seq2seq
	class             int64  // cls
}

var pickPrompt = &CLPrompt{Instruction: "pick\n", Options: []string{"good", "bad"}}

func TestObjectives(t *testing.T) {
	inst := Record{Kind: Instruction, Instruction: "do this", Output: "ok fine"}
	withInput := Record{Kind: Instruction, Instruction: "do", Input: "a b", Output: "ok"}
	verbatim := Record{Kind: Instruction, Prompt: "hello world", Output: "yes"}
	cls := Record{Kind: Classification, Sentence: "nice film", Label: "bad", Class: 1}
	text := Record{Kind: Text, Text: "hello world"}
	cases := []struct {
		name    string
		obj     Objective
		kind    Kind
		records []Record
		cl      *CLPrompt
		rows    []want
	}{
		{"clm instruction: loss on the answer and eos only", CLM, Instruction, []Record{inst}, nil, []want{{
			ids: "<s> do this ok fine </s>", mask: "1 1 1 1 1 1", labels: "- - - ok fine </s>"}}},
		{"clm instruction with input", CLM, Instruction, []Record{withInput}, nil, []want{{
			ids: "<s> do a b ok </s>", mask: "1 1 1 1 1 1", labels: "- - - - ok </s>"}}},
		{"clm prompt/completion", CLM, Instruction, []Record{verbatim}, nil, []want{{
			ids: "<s> hello world yes </s>", mask: "1 1 1 1 1", labels: "- - - yes </s>"}}},
		{"clm classification: CL prompt, label text as answer", CLM, Classification, []Record{cls}, pickPrompt, []want{{
			ids: "<s> pick Option: good, bad nice film Answer: bad </s>", mask: "1 1 1 1 1 1 1 1 1 1",
			labels: "- - - - - - - - bad </s>"}}},
		{"clm text: labels everywhere", CLM, Text, []Record{text}, nil, []want{{
			ids: "<s> hello world </s>", mask: "1 1 1 1", labels: "<s> hello world </s>"}}},
		{"clm padding on the right", CLM, Instruction, []Record{inst, verbatim}, nil, []want{
			{ids: "<s> do this ok fine </s>", mask: "1 1 1 1 1 1", labels: "- - - ok fine </s>"},
			{ids: "<s> hello world yes </s> <pad>", mask: "1 1 1 1 1 0", labels: "- - - yes </s> -"}}},
		{"seq2seq: decoder input is the target shifted right", Seq2Seq, Instruction, []Record{inst, verbatim}, nil, []want{
			{ids: "do this </s>", mask: "1 1 1", labels: "ok fine </s>", dec: "<pad> ok fine", dmask: "1 1 1"},
			{ids: "hello world </s>", mask: "1 1 1", labels: "yes </s> -", dec: "<pad> yes </s>", dmask: "1 1 0"}}},
		{"seq2seq classification", Seq2Seq, Classification, []Record{cls}, pickPrompt, []want{{
			ids: "pick Option: good, bad nice film Answer: </s>", mask: "1 1 1 1 1 1 1 1", labels: "bad </s>", dec: "<pad> bad", dmask: "1 1"}}},
		{"cls: the sentence, no prompt", CLS, Classification, []Record{cls, {Kind: Classification, Sentence: "good", Class: 0}}, nil, []want{
			{ids: "<s> nice film </s>", mask: "1 1 1 1", class: 1},
			{ids: "<s> good </s> <pad>", mask: "1 1 1 0", class: 0}}},
	}
	tok := wordTokenizer(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(c.obj, 64)
			cfg.CL = c.cl
			ds := &Dataset{Path: "mem.jsonl", Kind: c.kind, Records: c.records, Labels: []string{"good", "bad"}}
			_, batches := encodeAll(t, tok, cfg, ds, len(c.records))
			if len(batches) != 1 {
				t.Fatalf("%d batches, want 1", len(batches))
			}
			b := batches[0]
			if b.Objective != c.obj || b.Size != len(c.rows) {
				t.Fatalf("objective %s size %d", b.Objective, b.Size)
			}
			var ids, mask, labels, dec, dmask []int64
			for _, r := range c.rows {
				ids = append(ids, seq(t, tok, r.ids)...)
				mask = append(mask, nums(r.mask)...)
				switch c.obj {
				case CLS:
					labels = append(labels, r.class)
				default:
					labels = append(labels, seq(t, tok, r.labels)...)
				}
				dec = append(dec, seq(t, tok, r.dec)...)
				dmask = append(dmask, nums(r.dmask)...)
			}
			check := func(name string, got, want []int64) {
				t.Helper()
				if len(want) == 0 && len(got) == 0 {
					return
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s\n got %v\nwant %v", name, got, want)
				}
			}
			check("input_ids", b.InputIDs, ids)
			check("attention_mask", b.AttentionMask, mask)
			check("labels", b.Labels, labels)
			check("decoder_input_ids", b.DecoderInputIDs, dec)
			check("decoder_attention_mask", b.DecoderAttentionMask, dmask)
			if tokens := count(mask, 1); b.Tokens != tokens {
				t.Errorf("Tokens %d, want %d", b.Tokens, tokens)
			}
		})
	}
}

func nums(s string) []int64 {
	var out []int64
	for _, f := range strings.Fields(s) {
		out = append(out, int64(f[0]-'0'))
	}
	return out
}

func count(xs []int64, v int64) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

func TestTruncation(t *testing.T) {
	long := Record{Kind: Instruction, Prompt: "a b c d e f", Output: "x"}
	longAnswer := Record{Kind: Instruction, Prompt: "a b", Output: "p q r s t u v"}
	sentence := Record{Kind: Classification, Sentence: "a b c d e f", Label: "good"}
	input := Record{Kind: Instruction, Instruction: "do this", Input: "a b c d", Output: "ok"}
	text := Record{Kind: Text, Text: "a b c d e f"}
	cases := []struct {
		name         string
		obj          Objective
		maxLen, maxT int
		rec          Record
		ids, labels  string // labels: clm and seq2seq
		truncated    bool
	}{
		{"fits exactly", CLM, 9, 0, long, "<s> a b c d e f x </s>", "- - - - - - - x </s>", false},
		{"verbatim prompt loses its start, answer kept", CLM, 6, 0, long, "<s> d e f x </s>", "- - - - x </s>", true},
		{"long answer: the prompt keeps half the room, eos goes first", CLM, 6, 0, longAnswer, "<s> a b p q r", "- - - p q r", true},
		{"CL prompt: the sentence loses its end, the wording stays", CLM, 11, 0, sentence,
			"<s> pick Option: good, bad a b c Answer: good </s>", "- - - - - - - - - good </s>", true},
		{"CL prompt: when the sentence is gone the prompt loses its start", CLM, 7, 0, sentence,
			"<s> Option: good, bad Answer: good </s>", "- - - - - good </s>", true},
		{"template: the input loses its end", CLM, 7, 0, input, "<s> do this a b ok </s>", "- - - - - ok </s>", true},
		{"clm text loses its end and its eos", CLM, 4, 0, text, "<s> a b c", "<s> a b c", true},
		{"seq2seq: prompt cut, eos kept", Seq2Seq, 4, 0, long, "d e f </s>", "x </s>", true},
		{"seq2seq: target cut, no eos", Seq2Seq, 16, 3, longAnswer, "a b </s>", "p q r", true},
		{"mlm keeps bos and eos", MLM, 4, 0, text, "<s> a b </s>", "", true},
		{"cls keeps bos and eos", CLS, 4, 0, Record{Kind: Classification, Sentence: "a b c d e f"}, "<s> a b </s>", "", true},
	}
	tok := wordTokenizer(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(c.obj, c.maxLen)
			cfg.MaxTargetLen, cfg.CL = c.maxT, pickPrompt
			cfg.MLMProbability = 1e-9 // nothing masked: the inputs stay readable
			ds := &Dataset{Path: "mem.jsonl", Kind: c.rec.Kind, Records: []Record{c.rec}, Labels: []string{"good", "bad"}}
			ex, batches := encodeAll(t, tok, cfg, ds, 1)
			b := batches[0]
			if !reflect.DeepEqual(b.InputIDs, seq(t, tok, c.ids)) {
				t.Errorf("input_ids\n got %v\nwant %v", b.InputIDs, seq(t, tok, c.ids))
			}
			if c.labels != "" && !reflect.DeepEqual(b.Labels, seq(t, tok, c.labels)) {
				t.Errorf("labels\n got %v\nwant %v", b.Labels, seq(t, tok, c.labels))
			}
			if got := ex.Stats.Truncated; got != btoi(c.truncated) {
				t.Errorf("Stats.Truncated %d, want %v", got, c.truncated)
			}
			if b.SeqLen > c.maxLen {
				t.Errorf("sequence length %d past max %d", b.SeqLen, c.maxLen)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tok := wordTokenizer(t)
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown objective", func(c *Config) { c.Objective = "dpo" }, `objective "dpo" is not one of`},
		{"max length too short", func(c *Config) { c.MaxLen = 3 }, "max length 3 is too short"},
		{"past the model's positions", func(c *Config) { c.ModelMaxLen = 32 }, "exceeds the model's 32 positions"},
		{"mlm without a mask token", func(c *Config) { c.Objective, c.Specials.MASK = MLM, -1 }, "needs a mask token"},
		{"mlm probability", func(c *Config) { c.Objective, c.MLMProbability = MLM, 1.5 }, "outside [0, 1]"},
		{"seq2seq without a start token", func(c *Config) { c.Objective, c.Specials.DecoderStart = Seq2Seq, -1 }, "decoder start token"},
		{"bad template", func(c *Config) { c.Template = Template{NoInput: "x", WithInput: "y"} }, "no {instruction} placeholder"},
	}
	for _, c := range cases {
		cfg := testConfig(CLM, 64)
		c.edit(&cfg)
		_, err := NewEncoder(tok, cfg)
		if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestKindObjectiveMismatch(t *testing.T) {
	tok := wordTokenizer(t)
	cases := []struct {
		kind Kind
		obj  Objective
		want string
	}{
		{Text, Seq2Seq, "text records cannot train objective seq2seq"},
		{Text, CLS, "text records cannot train objective cls"},
		{Instruction, CLS, "instruction records cannot train objective cls"},
	}
	for _, c := range cases {
		enc, err := NewEncoder(tok, testConfig(c.obj, 64))
		if err != nil {
			t.Fatal(err)
		}
		_, err = enc.Encode(&Dataset{Path: "f.jsonl", Kind: c.kind, Records: []Record{{Kind: c.kind}}})
		if !badinput.Is(err) || !strings.Contains(err.Error(), "f.jsonl: "+c.want) {
			t.Errorf("%s/%s: %v", c.kind, c.obj, err)
		}
	}
	cfg := testConfig(CLS, 64)
	cfg.NumLabels = 2
	enc, _ := NewEncoder(tok, cfg)
	_, err := enc.Encode(&Dataset{Path: "f.jsonl", Kind: Classification, Labels: []string{"a", "b", "c"}, LabelSource: "data",
		Records: []Record{{Kind: Classification, Label: "c", Class: 2}}})
	if !badinput.Is(err) || !strings.Contains(err.Error(), "3 labels (data), but the model's classification head has 2") {
		t.Errorf("too many labels: %v", err)
	}
}

func TestMLMAndInstructionText(t *testing.T) {
	// MLM over instruction and classification records reads their text.
	tok := wordTokenizer(t)
	enc, err := NewEncoder(tok, testConfig(MLM, 64))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rec  Record
		want string
	}{
		{Record{Kind: Instruction, Instruction: "do", Output: "ok"}, "<s> do ok </s>"},
		{Record{Kind: Classification, Sentence: "nice film", Label: "good"}, "<s> nice film </s>"},
	} {
		ex, err := enc.EncodeRecord(&c.rec, CLPrompt{})
		if err != nil {
			t.Fatal(err)
		}
		if got := widen(ex.InputIDs); !reflect.DeepEqual(got, seq(t, tok, c.want)) {
			t.Errorf("%+v: %v, want %v", c.rec, got, seq(t, tok, c.want))
		}
	}
}

func widen(ids []int32) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

func TestStats(t *testing.T) {
	tok := wordTokenizer(t)
	ds := &Dataset{Path: "m", Kind: Instruction, Skipped: 2, Records: []Record{
		{Kind: Instruction, Prompt: "a b", Output: "x"},         // <s> a b x </s>: 2 target tokens
		{Kind: Instruction, Prompt: "a b c d e f", Output: "x"}, // truncated to <s> d e f x </s>
	}}
	ex, _ := encodeAll(t, tok, testConfig(CLM, 6), ds, 2)
	want := Stats{Examples: 2, Skipped: 2, Truncated: 1, Tokens: 11, TargetTokens: 4, Longest: 6}
	if ex.Stats != want {
		t.Errorf("stats %+v, want %+v", ex.Stats, want)
	}
	if s := ex.Stats.String(); !strings.HasPrefix(s, "2 examples (1 truncated, 2 bad records skipped), 11 tokens") {
		t.Errorf("String: %s", s)
	}
}

func TestConfigFor(t *testing.T) {
	man := &modeldir.Manifest{Objective: "mlm", VocabSize: 500, MaxLength: 256, NumLabels: 0,
		SpecialTokens: map[string]int64{"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 4}}
	c := ConfigFor(man)
	want := Specials{BOS: 0, EOS: 2, PAD: 1, MASK: 4, DecoderStart: -1, All: []int64{0, 2, 4, 1, 3}}
	if c.Objective != MLM || c.MaxLen != 256 || c.ModelMaxLen != 256 || c.VocabSize != 500 || !reflect.DeepEqual(c.Specials, want) {
		t.Errorf("config %+v", c)
	}
	llama := ConfigFor(&modeldir.Manifest{Objective: "clm", SpecialTokens: map[string]int64{"bos": 1, "eos": 2}})
	if llama.MaxLen != DefaultMaxLen || llama.Specials.padID() != 0 {
		t.Errorf("llama config %+v", llama)
	}
}

func TestTokenizerTruncationIgnored(t *testing.T) {
	tok := wordTokenizer(t)
	if err := tok.SetTruncation(&tokenizer.Truncation{MaxLength: 2}); err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncoder(tok, testConfig(CLM, 64))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := enc.EncodeRecord(&Record{Kind: Text, Text: "a b c d"}, CLPrompt{})
	if err != nil || len(ex.InputIDs) != 6 {
		t.Errorf("ids %v, err %v: tokenizer.json's truncation leaked in", ex.InputIDs, err)
	}
	if tok.Truncation() == nil {
		t.Error("the caller's tokenizer was changed")
	}
}
