package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// ggufJSON is a GGUF vocabulary as testdata/gguf_reference.py prints it.
type ggufJSON struct {
	Model          string    `json:"model"`
	Pre            *string   `json:"pre"`
	Tokens         []string  `json:"tokens"`
	Scores         []float32 `json:"scores"`
	Types          []int32   `json:"token_type"`
	Merges         []string  `json:"merges"`
	BOS            int       `json:"bos_token_id"`
	EOS            int       `json:"eos_token_id"`
	UNK            int       `json:"unknown_token_id"`
	PAD            int       `json:"padding_token_id"`
	SEP            int       `json:"seperator_token_id"`
	CLS            int       `json:"cls_token_id"`
	MASK           int       `json:"mask_token_id"`
	AddBOS         *bool     `json:"add_bos_token"`
	AddEOS         *bool     `json:"add_eos_token"`
	AddSpacePrefix *bool     `json:"add_space_prefix"`
}

func (j *ggufJSON) vocab() GGUFVocab {
	v := GGUFVocab{Model: j.Model, Tokens: j.Tokens, Scores: j.Scores, Types: j.Types, Merges: j.Merges,
		BOS: j.BOS, EOS: j.EOS, UNK: j.UNK, PAD: j.PAD, SEP: j.SEP, CLS: j.CLS, MASK: j.MASK,
		AddBOS: j.AddBOS, AddEOS: j.AddEOS, AddSpacePrefix: j.AddSpacePrefix}
	if j.Pre != nil {
		v.Pre = *j.Pre
	}
	return v
}

// refIDs are the ids Python's tokenizers gives every corpus line.
type refIDs struct {
	File  string  `json:"file"`
	IDs   [][]int `json:"ids"`
	Plain [][]int `json:"plain"`
}

type llamaRef struct {
	Vocab         ggufJSON `json:"vocab"`
	SentencePiece [][]int  `json:"sentencepiece"`
	HF            refIDs   `json:"hf"`
	NoPrefixEOS   refIDs   `json:"hf_noprefix_eos"`
}

type lookaheadRef struct {
	refIDs
	Pre [][]string `json:"pre"`
}

// ggufFixture is the work folder the GGUF tests share with the Python
// reference: corpus.json, the reference's tokenizer.json files and ours.
type ggufFixture struct {
	dir    string
	corpus []string

	mu   sync.Mutex
	runs map[string][]byte
}

var (
	ggufOnce sync.Once
	ggufFix  *ggufFixture
	ggufErrS string
)

func ggufWork(t *testing.T) *ggufFixture {
	t.Helper()
	testenv.Python(t)
	ggufOnce.Do(func() {
		ggufErrS = "the GGUF fixture failed in an earlier test"
		dir, err := os.MkdirTemp("", "migu-gguf-ref-")
		if err != nil {
			t.Fatal(err)
		}
		f := &ggufFixture{dir: dir, corpus: ggufCorpus(), runs: map[string][]byte{}}
		data, err := json.Marshal(map[string]any{"corpus": f.corpus, "train": SampleCorpus(600, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "corpus.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		ggufFix, ggufErrS = f, ""
	})
	if ggufFix == nil {
		t.Fatal(ggufErrS)
	}
	return ggufFix
}

// python runs testdata/gguf_reference.py once per argument list and
// decodes its output into out.
func (f *ggufFixture) python(t *testing.T, out any, kind string, args ...string) {
	t.Helper()
	key := kind + "\x00" + strings.Join(args, "\x00")
	f.mu.Lock()
	raw, ok := f.runs[key]
	f.mu.Unlock()
	if !ok {
		script, err := os.ReadFile(filepath.Join("testdata", "gguf_reference.py"))
		if err != nil {
			t.Fatal(err)
		}
		raw = testenv.RunPython(t, string(script), append([]string{kind, f.dir}, args...)...)
		f.mu.Lock()
		f.runs[key] = raw
		f.mu.Unlock()
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("reading the reference output of %s: %v", kind, err)
	}
}

// pythonIDs encodes the corpus with Python's tokenizers on each file.
func (f *ggufFixture) pythonIDs(t *testing.T, files map[string]string) map[string]refIDs {
	t.Helper()
	data, err := json.Marshal(files)
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(f.dir, fmt.Sprintf("files-%d.json", len(f.runs)))
	if err := os.WriteFile(list, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out map[string]refIDs
	f.python(t, &out, "encode", list)
	return out
}

func (f *ggufFixture) smolLM2(t *testing.T) GGUFVocab {
	t.Helper()
	var j ggufJSON
	f.python(t, &j, "smollm2", testenv.SmolLM2(t))
	return j.vocab()
}

func (f *ggufFixture) llama2(t *testing.T) *llamaRef {
	t.Helper()
	var r llamaRef
	f.python(t, &r, "llama2", testenv.SharedData(t, "tokenizers/llama2/tokenizer.model"))
	return &r
}

// compareIDs encodes every line with and without special tokens and
// compares with Python's ids; want.Plain may be nil.
func compareIDs(t *testing.T, tk *Tokenizer, corpus []string, want refIDs) {
	t.Helper()
	if len(want.IDs) != len(corpus) {
		t.Fatalf("reference has %d encodings for %d lines", len(want.IDs), len(corpus))
	}
	bad := 0
	for i, s := range corpus {
		got, err := tk.EncodeIDs(s, true)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		plain, err := tk.EncodeIDs(s, false)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if !slices.Equal(got, want.IDs[i]) || want.Plain != nil && !slices.Equal(plain, want.Plain[i]) {
			bad++
			if bad <= 5 {
				t.Errorf("%q:\n  go:     %v\n  python: %v", s, got, want.IDs[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d lines differ", bad, len(corpus))
	}
}

func saveTo(t *testing.T, tk *Tokenizer, path string) {
	t.Helper()
	if err := tk.Save(path); err != nil {
		t.Fatal(err)
	}
}

// sameDocument compares the tokenizer.json we write with another, field
// by field.
func sameDocument(t *testing.T, tk *Tokenizer, wantFile string) {
	t.Helper()
	ours, err := tk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(wantFile)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(ours, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(theirs, &b); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"} {
		if !reflect.DeepEqual(a[k], b[k]) {
			t.Errorf("tokenizer.json %s:\n  ours:   %v\n  theirs: %v", k, a[k], b[k])
		}
	}
	ma, mb := a["model"].(map[string]any), b["model"].(map[string]any)
	for k := range mb {
		if !reflect.DeepEqual(ma[k], mb[k]) {
			t.Errorf("tokenizer.json model.%s differs", k)
		}
	}
}

func TestGGUFSmolLM2(t *testing.T) {
	f := ggufWork(t)
	v := f.smolLM2(t)
	if v.Model != "gpt2" || v.Pre != "smollm" || len(v.Tokens) != 49152 {
		t.Fatalf("unexpected SmolLM2 vocabulary: model %q, pre %q, %d tokens", v.Model, v.Pre, len(v.Tokens))
	}
	tk, err := FromGGUF(v)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(f.dir, "smollm2_from_gguf.json")
	saveTo(t, tk, file)
	compareIDs(t, tk, f.corpus, f.pythonIDs(t, map[string]string{"smollm2": file})["smollm2"])

	// Facts about SmolLM2's tokenizer.
	facts := []struct {
		text string
		want []int
	}{
		{"<|im_start|>", []int{1}},
		{"<|im_end|>", []int{2}},
		{"<|endoftext|>", []int{0}},
		{"\n", []int{198}},
		{"Hello world! 123", []int{19556, 905, 17, 216, 33, 34, 35}},
		{"Hello, we can use", []int{19556, 28, 392, 416, 722}},
	}
	for _, c := range facts {
		if got, _ := tk.EncodeIDs(c.text, true); !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.text, got, c.want)
		}
	}
	e, err := tk.Encode("year 2024, pi 3.14159", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range e.Tokens {
		if strings.ContainsAny(tok, "0123456789") && len(tok) > 1 {
			t.Errorf("digits are not split one by one: %q", e.Tokens)
		}
	}
	if s := tk.SpecialIDs(); s.BOS != 1 || s.EOS != 2 || s.PAD != 2 || s.UNK != 0 {
		t.Errorf("special ids %+v, want bos 1, eos 2, pad 2, unk 0", s)
	}
}

func TestGGUFLlama2(t *testing.T) {
	f := ggufWork(t)
	r := f.llama2(t)
	v := r.Vocab.vocab()
	tk, err := FromGGUF(v)
	if err != nil {
		t.Fatal(err)
	}
	compareIDs(t, tk, f.corpus, r.HF)
	sameDocument(t, tk, r.HF.File)
	// sentencepiece itself reads "<s>" in the text as characters, where
	// Hugging Face (and llama.cpp) find the special token; elsewhere it
	// must agree.
	n, bad := 0, 0
	for i, s := range f.corpus {
		if hasLlamaSpecial(s) {
			continue
		}
		n++
		if got, _ := tk.EncodeIDs(s, true); !slices.Equal(got, r.SentencePiece[i]) {
			bad++
			if bad <= 5 {
				t.Errorf("%q:\n  go:            %v\n  sentencepiece: %v", s, got, r.SentencePiece[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("sentencepiece differs on %d of %d lines", bad, n)
	}
	t.Logf("sentencepiece agrees on all %d lines without special tokens in the text", n)
	file := filepath.Join(f.dir, "llama2_from_gguf.json")
	saveTo(t, tk, file)
	compareIDs(t, tk, f.corpus, f.pythonIDs(t, map[string]string{"llama2": file})["llama2"])

	// add_space_prefix and add_eos_token, as LlamaTokenizerFast reads them.
	no, yes := false, true
	v.AddSpacePrefix, v.AddEOS = &no, &yes
	tk2, err := FromGGUF(v)
	if err != nil {
		t.Fatal(err)
	}
	compareIDs(t, tk2, f.corpus, r.NoPrefixEOS)
	sameDocument(t, tk2, r.NoPrefixEOS.File)
}

func hasLlamaSpecial(s string) bool {
	return strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>")
}

// preTokens is what the pre-tokenizer makes of a whole text.
func preTokens(tk *Tokenizer, s string) []string {
	var out []string
	for _, w := range splitEach([]*normString{newNormString(s, 0)}, tk.pre.preTokenize) {
		out = append(out, w.s)
	}
	return out
}

// TestGGUFLookahead loads tokenizer.json files whose Split patterns need
// look-ahead (Llama 3's and Qwen2's) and compares pre-tokenization and ids
// with Python; their GGUF form keeps them.
func TestGGUFLookahead(t *testing.T) {
	f := ggufWork(t)
	var look map[string]lookaheadRef
	f.python(t, &look, "lookahead")
	for _, c := range []struct{ name, pre string }{{"llama3", "llama-bpe"}, {"qwen2", "qwen2"}} {
		t.Run(c.name, func(t *testing.T) {
			ref := look[c.name]
			tk, err := Load(ref.File)
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i, s := range f.corpus {
				if got := preTokens(tk, s); !slices.Equal(got, ref.Pre[i]) {
					bad++
					if bad <= 5 {
						t.Errorf("pre-tokenizing %q:\n  go:     %q\n  python: %q", s, got, ref.Pre[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d lines pre-tokenize differently", bad, len(f.corpus))
			}
			compareIDs(t, tk, f.corpus, ref.refIDs)
			v, err := tk.ToGGUF()
			if err != nil {
				t.Fatal(err)
			}
			if v.Model != "gpt2" || v.Pre != c.pre || *v.AddBOS != (c.name == "llama3") {
				t.Errorf("GGUF form: model %q, pre %q, add_bos %v", v.Model, v.Pre, *v.AddBOS)
			}
			back, err := FromGGUF(v)
			if err != nil {
				t.Fatal(err)
			}
			compareIDs(t, back, f.corpus, ref.refIDs)
		})
	}
}

// TestGGUFRoundTrip writes the GGUF form of the tokenizers FromGGUF
// built, in memory and after a trip through tokenizer.json (which loses
// scores and types, so ToGGUF derives them).
func TestGGUFRoundTrip(t *testing.T) {
	f := ggufWork(t)
	cases := []struct {
		name  string
		vocab func(t *testing.T) (GGUFVocab, *llamaRef)
	}{
		{"smollm2", func(t *testing.T) (GGUFVocab, *llamaRef) { return f.smolLM2(t), nil }},
		{"llama2", func(t *testing.T) (GGUFVocab, *llamaRef) { r := f.llama2(t); return r.Vocab.vocab(), r }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, llama := c.vocab(t)
			tk, err := FromGGUF(v)
			if err != nil {
				t.Fatal(err)
			}
			want := make([][]int, len(f.corpus))
			for i, s := range f.corpus {
				if want[i], err = tk.EncodeIDs(s, true); err != nil {
					t.Fatal(err)
				}
			}
			back, err := tk.ToGGUF()
			if err != nil {
				t.Fatal(err)
			}
			sameVocab(t, back, v, true)
			tk2, err := FromGGUF(back)
			if err != nil {
				t.Fatal(err)
			}
			compareIDs(t, tk2, f.corpus, refIDs{IDs: want})

			// tokenizer.json with the tokenizer_config.json that names the
			// roles, as a model folder holds them.
			dir := filepath.Join(f.dir, c.name+"_roundtrip")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			saveTo(t, tk, filepath.Join(dir, "tokenizer.json"))
			cfg := map[string]any{}
			for role, id := range map[string]int{"bos_token": v.BOS, "eos_token": v.EOS, "unk_token": v.UNK, "pad_token": v.PAD} {
				if id >= 0 {
					cfg[role] = v.Tokens[id]
				}
			}
			raw, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), raw, 0o644); err != nil {
				t.Fatal(err)
			}
			loaded, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			derived, err := loaded.ToGGUF()
			if err != nil {
				t.Fatal(err)
			}
			sameVocab(t, derived, v, false)
			tk3, err := FromGGUF(derived)
			if err != nil {
				t.Fatal(err)
			}
			compareIDs(t, tk3, f.corpus, refIDs{IDs: want})
			if llama != nil {
				// llama.cpp's own SentencePiece merging, with the derived scores.
				spm := newLlamaCppSPM(derived)
				n, bad := 0, 0
				for i, s := range f.corpus {
					if hasLlamaSpecial(s) {
						continue
					}
					n++
					if got := spm.tokenize(s); !slices.Equal(got, llama.HF.IDs[i]) {
						bad++
						if bad <= 5 {
							t.Errorf("llama.cpp's merging with derived scores on %q:\n  got:  %v\n  want: %v", s, got, llama.HF.IDs[i])
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d of %d lines differ", bad, n)
				}
				t.Logf("llama.cpp-style merging with derived scores matches Hugging Face on %d lines", n-bad)
			}
		})
	}
}

// sameVocab compares a GGUF form with the original; scores only where
// exact says so (derived ones differ by design).
func sameVocab(t *testing.T, got, want GGUFVocab, exact bool) {
	t.Helper()
	if got.Model != want.Model || got.Pre != want.Pre {
		t.Errorf("model %q pre %q, want %q %q", got.Model, got.Pre, want.Model, want.Pre)
	}
	if !slices.Equal(got.Tokens, want.Tokens) {
		t.Errorf("tokens differ (%d vs %d)", len(got.Tokens), len(want.Tokens))
	}
	if !slices.Equal(got.Types, want.Types) {
		for i := range min(len(got.Types), len(want.Types)) {
			if got.Types[i] != want.Types[i] {
				t.Errorf("types differ first at id %d (%q): %d, want %d", i, want.Tokens[i], got.Types[i], want.Types[i])
				break
			}
		}
	}
	if !slices.Equal(got.Merges, want.Merges) {
		t.Errorf("merges differ (%d vs %d)", len(got.Merges), len(want.Merges))
	}
	if exact && !slices.Equal(got.Scores, want.Scores) {
		t.Errorf("scores differ")
	}
	if got.BOS != want.BOS || got.EOS != want.EOS || got.UNK != want.UNK || got.PAD != want.PAD {
		t.Errorf("bos/eos/unk/pad %d/%d/%d/%d, want %d/%d/%d/%d", got.BOS, got.EOS, got.UNK, got.PAD, want.BOS, want.EOS, want.UNK, want.PAD)
	}
	if exact && (got.SEP != want.SEP || got.CLS != want.CLS || got.MASK != want.MASK) {
		t.Errorf("special ids %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d", got.UNK, got.PAD, got.SEP, got.CLS, got.MASK,
			want.UNK, want.PAD, want.SEP, want.CLS, want.MASK)
	}
	def := want.Model == "llama"
	if *got.AddBOS != boolOr(want.AddBOS, def) || *got.AddEOS != boolOr(want.AddEOS, false) {
		t.Errorf("add_bos %v add_eos %v", *got.AddBOS, *got.AddEOS)
	}
}

// llamaCppSPM tokenizes as llama.cpp's SentencePiece tokenizer does: the
// text split into characters, then the adjacent pair whose merged text is
// the best-scoring token merged first (leftmost on ties), characters no
// token covers spelled as byte tokens.
type llamaCppSPM struct {
	v   GGUFVocab
	ids map[string]int
}

func newLlamaCppSPM(v GGUFVocab) *llamaCppSPM {
	s := &llamaCppSPM{v: v, ids: map[string]int{}}
	for i, tok := range v.Tokens {
		s.ids[tok] = i
	}
	return s
}

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

type spmQueue []spmBigram

func (q spmQueue) Len() int { return len(q) }
func (q spmQueue) Less(i, j int) bool {
	return q[i].score > q[j].score || q[i].score == q[j].score && q[i].left < q[j].left
}
func (q spmQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *spmQueue) Push(x any)   { *q = append(*q, x.(spmBigram)) }
func (q *spmQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

func (s *llamaCppSPM) tokenize(text string) []int {
	out := []int{}
	if boolOr(s.v.AddBOS, true) {
		out = append(out, s.v.BOS)
	}
	if text == "" {
		return out
	}
	if boolOr(s.v.AddSpacePrefix, true) {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", "▁")
	type sym struct{ start, n, prev, next int }
	var syms []sym
	for i, r := range text {
		_ = r
		syms = append(syms, sym{start: i, prev: len(syms) - 1, next: len(syms) + 1})
	}
	for k := range syms {
		end := len(text)
		if k+1 < len(syms) {
			end = syms[k+1].start
		}
		syms[k].n = end - syms[k].start
	}
	syms[len(syms)-1].next = -1
	q := &spmQueue{}
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		piece := text[syms[l].start : syms[l].start+syms[l].n+syms[r].n]
		if id, ok := s.ids[piece]; ok {
			heap.Push(q, spmBigram{l, r, s.v.Scores[id], len(piece)})
		}
	}
	for k := 1; k < len(syms); k++ {
		try(k-1, k)
	}
	for q.Len() > 0 {
		b := heap.Pop(q).(spmBigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		try(l.prev, b.left)
		try(b.left, l.next)
	}
	for k := 0; k >= 0; k = syms[k].next {
		piece := text[syms[k].start : syms[k].start+syms[k].n]
		if id, ok := s.ids[piece]; ok {
			out = append(out, id)
			continue
		}
		for _, c := range []byte(piece) {
			out = append(out, s.ids[fmt.Sprintf("<0x%02X>", c)])
		}
	}
	return out
}

// tinyGPT2 is a small byte-level vocabulary: a control token, the 256
// byte symbols and three merges.
func tinyGPT2(pre string) GGUFVocab {
	v := GGUFVocab{Model: "gpt2", Pre: pre, Tokens: []string{"<|endoftext|>"}, Types: []int32{3},
		BOS: 0, EOS: 0, UNK: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1}
	for b := range 256 {
		v.Tokens = append(v.Tokens, string(byteToRune[b]))
		v.Types = append(v.Types, 1)
	}
	v.Tokens = append(v.Tokens, "Ġt", "he", "Ġthe", "<tool>")
	v.Types = append(v.Types, 1, 1, 1, 4)
	v.Merges = []string{"Ġ t", "h e", "Ġt he"}
	return v
}

// tinyLlama is a small SentencePiece vocabulary.
func tinyLlama() GGUFVocab {
	v := GGUFVocab{Model: "llama", Tokens: []string{"<unk>", "<s>", "</s>"}, Scores: []float32{0, 0, 0}, Types: []int32{2, 3, 3},
		BOS: 1, EOS: 2, UNK: 0, PAD: -1, SEP: -1, CLS: -1, MASK: -1}
	for b := range 256 {
		v.Tokens = append(v.Tokens, fmt.Sprintf("<0x%02X>", b))
		v.Scores = append(v.Scores, 0)
		v.Types = append(v.Types, 6)
	}
	for i, p := range []string{"▁t", "he", "▁the", "▁", "t", "h", "e"} {
		v.Tokens = append(v.Tokens, p)
		v.Scores = append(v.Scores, -float32(i))
		v.Types = append(v.Types, 1)
	}
	return v
}

// TestGGUFPresets builds a tokenizer for every supported pre-tokenizer
// name and checks that its tokenizer.json reads back as the same GGUF
// form.
func TestGGUFPresets(t *testing.T) {
	for _, p := range ggufPres() {
		for _, name := range p.names {
			t.Run(name, func(t *testing.T) {
				tk, err := FromGGUF(tinyGPT2(name))
				if err != nil {
					t.Fatal(err)
				}
				v, err := tk.ToGGUF()
				if err != nil {
					t.Fatal(err)
				}
				if v.Pre != name {
					t.Errorf("in memory: pre %q, want %q", v.Pre, name)
				}
				data, err := tk.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				loaded, err := FromJSON(data)
				if err != nil {
					t.Fatal(err)
				}
				if v, err = loaded.ToGGUF(); err != nil {
					t.Fatal(err)
				}
				if v.Pre != p.names[0] {
					t.Errorf("from tokenizer.json: pre %q, want %q", v.Pre, p.names[0])
				}
				if !slices.Equal(v.Types, tinyGPT2(name).Types) {
					t.Errorf("types %v", v.Types[len(v.Types)-5:])
				}
				ids, err := loaded.EncodeIDs("the <tool> the<|endoftext|>", false)
				if err != nil {
					t.Fatal(err)
				}
				if want := []int{117, 258, 33, 260, 259, 0}; !slices.Equal(ids, want) {
					t.Errorf("ids %v, want %v", ids, want)
				}
			})
		}
	}
	// A missing name reads as "default".
	if _, err := FromGGUF(tinyGPT2("")); err != nil {
		t.Error(err)
	}
}

// TestGGUFUnusedPads: ids llama.cpp's converter filled with "[PADn]" are
// gaps in tokenizer.json and come back as such.
func TestGGUFUnusedPads(t *testing.T) {
	v := tinyGPT2("gpt-2")
	n := len(v.Tokens)
	v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", n), fmt.Sprintf("[PAD%d]", n+1))
	v.Types = append(v.Types, 5, 5)
	tk, err := FromGGUF(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tk.TokenToID(v.Tokens[n]); ok {
		t.Errorf("%s is in the vocabulary", v.Tokens[n])
	}
	if tk.VocabSize() != n {
		t.Errorf("VocabSize %d, want %d", tk.VocabSize(), n)
	}
	tk.gguf = nil
	back, err := tk.ToGGUF()
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Tokens) != n {
		t.Errorf("%d tokens, want %d (ToGGUF pads only up to the vocabulary)", len(back.Tokens), n)
	}
}

// TestToGGUFRefuses: tokenizers llama.cpp cannot reproduce have no GGUF
// form.
func TestToGGUFRefuses(t *testing.T) {
	for kind, tk := range trainedTokenizers(t) {
		if _, err := tk.ToGGUF(); kind != SentencePieceBPE && err == nil {
			t.Errorf("%v: accepted", kind)
		} else if err != nil && !badinput.Is(err) {
			t.Errorf("%v: %v is not bad input", kind, err)
		}
	}
	tk, err := FromGGUF(tinyGPT2("gpt-2"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := tk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	edits := []struct {
		field string
		edit  func(doc map[string]any)
	}{
		{"pre_tokenizer", func(doc map[string]any) { doc["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }},
		{"pre_tokenizer", func(doc map[string]any) {
			doc["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}
		}},
		{"normalizer", func(doc map[string]any) { doc["normalizer"] = map[string]any{"type": "Lowercase"} }},
		{"post_processor", func(doc map[string]any) {
			doc["post_processor"] = map[string]any{"type": "RobertaProcessing", "sep": []any{"<|endoftext|>", 0}, "cls": []any{"<|endoftext|>", 0}}
		}},
		{"model.ignore_merges", func(doc map[string]any) { doc["model"].(map[string]any)["ignore_merges"] = true }},
	}
	for _, c := range edits {
		var doc map[string]any
		if err := json.Unmarshal(base, &doc); err != nil {
			t.Fatal(err)
		}
		c.edit(doc)
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		bad, err := FromJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.ToGGUF(); err == nil || !strings.Contains(err.Error(), c.field) || !badinput.Is(err) {
			t.Errorf("%s: %v", c.field, err)
		}
	}
}

func TestGGUFBadInput(t *testing.T) {
	cases := []struct {
		name  string
		base  func() GGUFVocab
		edit  func(v *GGUFVocab)
		field string
	}{
		{"unknown model", tinyGPT2gpt, func(v *GGUFVocab) { v.Model = "rwkv" }, "tokenizer.ggml.model"},
		{"unknown pre", tinyGPT2gpt, func(v *GGUFVocab) { v.Pre = "tekken" }, "tokenizer.ggml.pre"},
		{"no tokens", tinyGPT2gpt, func(v *GGUFVocab) { v.Tokens, v.Types, v.Merges = nil, nil, nil }, "tokenizer.ggml.tokens"},
		{"scores length", tinyLlama, func(v *GGUFVocab) { v.Scores = v.Scores[1:] }, "tokenizer.ggml.scores"},
		{"no scores", tinyLlama, func(v *GGUFVocab) { v.Scores = nil }, "tokenizer.ggml.scores"},
		{"types length", tinyGPT2gpt, func(v *GGUFVocab) { v.Types = v.Types[:10] }, "tokenizer.ggml.token_type"},
		{"type value", tinyGPT2gpt, func(v *GGUFVocab) { v.Types[3] = 9 }, "tokenizer.ggml.token_type[3]"},
		{"merge names unknown token", tinyGPT2gpt, func(v *GGUFVocab) { v.Merges = append(v.Merges, "Ġ zz") }, "tokenizer.ggml.merges[3]"},
		{"merged token missing", tinyGPT2gpt, func(v *GGUFVocab) { v.Merges = append(v.Merges, "a b") }, "tokenizer.ggml.merges[3]"},
		{"merge without space", tinyGPT2gpt, func(v *GGUFVocab) { v.Merges[1] = "he" }, "tokenizer.ggml.merges[1]"},
		{"duplicate token", tinyGPT2gpt, func(v *GGUFVocab) { v.Tokens[5] = v.Tokens[6] }, "tokenizer.ggml.tokens[6]"},
		{"empty token", tinyGPT2gpt, func(v *GGUFVocab) { v.Tokens[5] = "" }, "tokenizer.ggml.tokens[5]"},
		{"bos out of range", tinyGPT2gpt, func(v *GGUFVocab) { v.BOS = 100000 }, "tokenizer.ggml.bos_token_id"},
		{"eos out of range", tinyLlama, func(v *GGUFVocab) { v.EOS = len(v.Tokens) }, "tokenizer.ggml.eos_token_id"},
		{"unk negative", tinyLlama, func(v *GGUFVocab) { v.UNK = -7 }, "tokenizer.ggml.unknown_token_id"},
		{"pad out of range", tinyGPT2gpt, func(v *GGUFVocab) { v.PAD = 9999 }, "tokenizer.ggml.padding_token_id"},
		{"sep out of range", tinyGPT2gpt, func(v *GGUFVocab) { v.SEP = 9999 }, "tokenizer.ggml.seperator_token_id"},
		{"cls out of range", tinyGPT2gpt, func(v *GGUFVocab) { v.CLS = 9999 }, "tokenizer.ggml.cls_token_id"},
		{"mask out of range", tinyGPT2gpt, func(v *GGUFVocab) { v.MASK = 9999 }, "tokenizer.ggml.mask_token_id"},
		{"add_bos without bos", tinyGPT2gpt, func(v *GGUFVocab) { v.BOS, v.AddBOS = -1, ptrTrue() }, "tokenizer.ggml.add_bos_token"},
		{"add_eos without eos", tinyGPT2gpt, func(v *GGUFVocab) { v.EOS, v.AddEOS = -1, ptrTrue() }, "tokenizer.ggml.add_eos_token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := c.base()
			c.edit(&v)
			_, err := FromGGUF(v)
			if err == nil {
				t.Fatal("accepted")
			}
			if !badinput.Is(err) {
				t.Errorf("%v is not bad input", err)
			}
			if !strings.HasPrefix(err.Error(), c.field+":") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q does not start with %q", err, c.field)
			}
		})
	}
	// The supported names are listed.
	v := tinyGPT2("nope")
	if _, err := FromGGUF(v); err == nil || !strings.Contains(err.Error(), "smollm") || !strings.Contains(err.Error(), "llama-bpe") {
		t.Errorf("%v", err)
	}
}

func tinyGPT2gpt() GGUFVocab { return tinyGPT2("gpt-2") }

func ptrTrue() *bool {
	b := true
	return &b
}

// TestGGUFTinyLlama checks the template flags on a small SentencePiece
// vocabulary.
func TestGGUFTinyLlama(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		bos, eos, prefix *bool
		want             []int
	}{
		{nil, nil, nil, []int{1, 261, 261}},
		{&no, &yes, nil, []int{261, 261, 2}},
		{&yes, &yes, &no, []int{1, 263, 260, 261, 2}},
	}
	for _, c := range cases {
		v := tinyLlama()
		v.AddBOS, v.AddEOS, v.AddSpacePrefix = c.bos, c.eos, c.prefix
		tk, err := FromGGUF(v)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := tk.EncodeIDs("the the", true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, c.want) {
			t.Errorf("bos %v eos %v prefix %v: %v, want %v", c.bos, c.eos, c.prefix, ids, c.want)
		}
		back, err := tk.ToGGUF()
		if err != nil {
			t.Fatal(err)
		}
		if *back.AddBOS != boolOr(c.bos, true) || *back.AddEOS != boolOr(c.eos, false) || *back.AddSpacePrefix != boolOr(c.prefix, true) {
			t.Errorf("flags back: %v %v %v", *back.AddBOS, *back.AddEOS, *back.AddSpacePrefix)
		}
	}
}
