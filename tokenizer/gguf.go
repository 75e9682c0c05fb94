package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/migu-ml/migu/internal/badinput"
)

// GGUFVocab is a tokenizer as GGUF metadata stores it (tokenizer.ggml.*).
type GGUFVocab struct {
	Model  string // tokenizer.ggml.model
	Pre    string // tokenizer.ggml.pre ("" when absent)
	Tokens []string
	Scores []float32 // may be nil
	Types  []int32   // may be nil (all normal)
	Merges []string  // "a b", gpt2 only

	BOS, EOS, UNK, PAD, SEP, CLS, MASK int // -1: none

	AddBOS, AddEOS *bool // nil: the model's default
	AddSpacePrefix *bool
}

// GGUF token types (llama.cpp's llama_token_type; SentencePiece numbers
// its piece types the same way).
const (
	ggufUndefined   = 0
	ggufNormal      = 1
	ggufUnknown     = 2
	ggufControl     = 3
	ggufUserDefined = 4
	ggufUnused      = 5
	ggufByte        = 6
)

// ggufMemo keeps what a GGUF vocabulary says that tokenizer.json has no
// place for — SentencePiece scores, token types, the pre-tokenizer's name,
// the sep and cls roles — so that ToGGUF gives them back.
type ggufMemo struct {
	pre      string
	scores   []float32
	types    []int32
	sep, cls int
}

// ggufPre is what one tokenizer.ggml.pre name means for a "gpt2"
// (byte-level BPE) vocabulary, in Hugging Face terms: the pre-tokenizer,
// post-processor and decoder of the tokenizer.json the model ships.
type ggufPre struct {
	names        []string // names[0] is what ToGGUF writes
	pre          any
	post         any // without the bos/eos template
	decoder      any
	ignoreMerges bool
	addBOS       bool   // llama.cpp's default for add_bos_token
	sig          string // the pre-tokenizer's structure, see preSignature
}

type byteLevelJSON struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

func byteLevel(prefix, trim, regex bool) byteLevelJSON {
	return byteLevelJSON{"ByteLevel", prefix, trim, regex}
}

type splitJSON struct {
	Type     string            `json:"type"`
	Pattern  map[string]string `json:"pattern"`
	Behavior string            `json:"behavior"`
	Invert   bool              `json:"invert"`
}

func splitRegex(pat string) splitJSON {
	return splitJSON{"Split", map[string]string{"Regex": pat}, "Isolated", false}
}

func seqPre(items ...any) typed { return typed{"type": "Sequence", "pretokenizers": items} }

// The split regexes of Llama 3 and Qwen2 as their tokenizer.json files
// spell them. llama.cpp rewrites (?i:'s|…) as (?:'[sS]|…), which differs
// on "'ſ" and "'K"; these are Hugging Face's.
const (
	llama3Split = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Split  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// ggufPres are the supported pre-tokenizer names of "gpt2" vocabularies.
// "default" (and a missing name) is GPT-2's regex here; llama.cpp's
// "default" adds splits of its own that no Hugging Face model has. Qwen2's
// tokenizer.json also has an NFC normalizer, which this package lacks and
// llama.cpp does not apply: the tokenizer built here splits as llama.cpp
// does, and differs from Hugging Face's only on text that is not in NFC.
var ggufPres = sync.OnceValue(func() []*ggufPre {
	gptPost, gptDec := byteLevel(true, false, true), byteLevel(true, true, true)
	pres := []*ggufPre{
		{names: []string{"gpt-2", "default"}, pre: byteLevel(false, true, true), post: gptPost, decoder: gptDec},
		{names: []string{"smollm", "starcoder", "refact"},
			pre:  seqPre(typed{"type": "Digits", "individual_digits": true}, byteLevel(false, true, true)),
			post: gptPost, decoder: gptDec},
		{names: []string{"llama-bpe", "llama3", "llama-v3"},
			pre:  seqPre(splitRegex(llama3Split), byteLevel(false, true, false)),
			post: gptPost, decoder: gptDec, ignoreMerges: true, addBOS: true},
		{names: []string{"qwen2", "deepseek-r1-qwen"},
			pre:  seqPre(splitRegex(qwen2Split), byteLevel(false, false, false)),
			post: byteLevel(false, false, false), decoder: byteLevel(false, false, false)},
	}
	for _, p := range pres {
		raw, err := marshalJSON(p.pre)
		if err != nil {
			panic(err)
		}
		pt, err := parsePreTokenizer("pre_tokenizer", raw)
		if err != nil {
			panic(err)
		}
		p.sig = preSignature(pt)
	}
	return pres
})

func findGGUFPre(name string) *ggufPre {
	if name == "" {
		name = "default"
	}
	for _, p := range ggufPres() {
		if slices.Contains(p.names, name) {
			return p
		}
	}
	return nil
}

func ggufPreNames() string {
	var names []string
	for _, p := range ggufPres() {
		names = append(names, p.names...)
	}
	return strings.Join(names, ", ")
}

// ggufErr names a GGUF key in a bad-input error.
func ggufErr(key, format string, args ...any) error {
	return badinput.Errorf("tokenizer.ggml.%s: %s", key, fmt.Sprintf(format, args...))
}

// ggufRole is a special-token role and its GGUF key.
type ggufRole struct {
	key string
	id  *int
}

func (v *GGUFVocab) roles() []ggufRole {
	return []ggufRole{{"bos_token_id", &v.BOS}, {"eos_token_id", &v.EOS}, {"unknown_token_id", &v.UNK},
		{"padding_token_id", &v.PAD}, {"seperator_token_id", &v.SEP}, {"cls_token_id", &v.CLS}, {"mask_token_id", &v.MASK}}
}

// FromGGUF builds the tokenizer a GGUF vocabulary describes, laid out as
// the tokenizer.json Hugging Face ships for such a model, so that Save
// writes that file. "gpt2" vocabularies become byte-level BPE with the
// pre-tokenizer their tokenizer.ggml.pre names; "llama" ones go through
// the SentencePiece conversion of LlamaTokenizerFast. Control tokens
// become special added tokens, user-defined ones plain added tokens;
// add_bos_token and add_eos_token decide the post-processor's template.
// Errors name the tokenizer.ggml key at fault and are bad input.
func FromGGUF(v GGUFVocab) (*Tokenizer, error) {
	if err := v.check(); err != nil {
		return nil, err
	}
	var t *Tokenizer
	var err error
	switch v.Model {
	case "gpt2":
		t, err = v.byteLevelTokenizer()
	case "llama":
		t, err = v.sentencePieceTokenizer()
	default:
		return nil, ggufErr("model", "unsupported tokenizer model %q (supported: gpt2, llama)", v.Model)
	}
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	t.special = SpecialIDs{BOS: v.BOS, EOS: v.EOS, PAD: v.PAD, UNK: v.UNK, MASK: v.MASK}
	t.gguf = &ggufMemo{pre: v.Pre, scores: slices.Clone(v.Scores), types: slices.Clone(v.Types), sep: v.SEP, cls: v.CLS}
	return t, nil
}

// check validates what both kinds share: array lengths, token types,
// unique non-empty tokens, special ids within the vocabulary.
func (v *GGUFVocab) check() error {
	n := len(v.Tokens)
	if n == 0 {
		return ggufErr("tokens", "no tokens")
	}
	if v.Scores != nil && len(v.Scores) != n {
		return ggufErr("scores", "%d scores for %d tokens", len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) != n {
		return ggufErr("token_type", "%d types for %d tokens", len(v.Types), n)
	}
	for i, typ := range v.Types {
		if typ < ggufUndefined || typ > ggufByte {
			return ggufErr(fmt.Sprintf("token_type[%d]", i), "%d is not a token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)", typ)
		}
	}
	seen := make(map[string]int, n)
	for i, tok := range v.Tokens {
		if tok == "" {
			return ggufErr(fmt.Sprintf("tokens[%d]", i), "empty token")
		}
		if j, dup := seen[tok]; dup {
			return ggufErr(fmt.Sprintf("tokens[%d]", i), "duplicate token %q (also id %d)", tok, j)
		}
		seen[tok] = i
	}
	for _, r := range v.roles() {
		if *r.id < -1 || *r.id >= n {
			return ggufErr(r.key, "%d is outside the %d tokens", *r.id, n)
		}
	}
	return nil
}

func (v *GGUFVocab) typeOf(id int) int32 {
	if v.Types == nil || v.Types[id] == ggufUndefined {
		return ggufNormal
	}
	return v.Types[id]
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// unusedPad reports a token that llama.cpp's converter made up to fill an
// id no token had ("[PAD123]" at id 123).
func unusedPad(tok string, typ int32, id int) bool {
	return typ == ggufUnused && tok == fmt.Sprintf("[PAD%d]", id)
}

func (v *GGUFVocab) byteLevelTokenizer() (*Tokenizer, error) {
	pre := findGGUFPre(v.Pre)
	if pre == nil {
		return nil, ggufErr("pre", "unsupported pre-tokenizer %q for a gpt2 vocabulary (supported: %s)", v.Pre, ggufPreNames())
	}
	vocab := make(orderedVocab, len(v.Tokens))
	ids := make(map[string]int, len(v.Tokens))
	for i, tok := range v.Tokens {
		if unusedPad(tok, v.typeOf(i), i) {
			continue
		}
		vocab[i] = tok
		ids[tok] = i
	}
	merges := make([][2]string, len(v.Merges))
	for i, mg := range v.Merges {
		key := fmt.Sprintf("merges[%d]", i)
		a, b, ok := splitMerge(mg)
		if !ok {
			return nil, ggufErr(key, "%q is not two tokens separated by a space", mg)
		}
		for _, part := range []string{a, b, a + b} {
			if _, ok := ids[part]; !ok {
				return nil, ggufErr(key, "%q names token %q, which is not in tokenizer.ggml.tokens", mg, part)
			}
		}
		merges[i] = [2]string{a, b}
	}
	added := v.addedTokens()
	addBOS, addEOS := boolOr(v.AddBOS, pre.addBOS), boolOr(v.AddEOS, false)
	if err := v.checkAdd(addBOS, addEOS); err != nil {
		return nil, err
	}
	post := pre.post
	if addBOS || addEOS {
		tmpl, err := bosEOSTemplate(v.token(v.BOS), v.BOS, addBOS, v.token(v.EOS), v.EOS, addEOS)
		if err != nil {
			return nil, err
		}
		post = typed{"type": "Sequence", "processors": []any{pre.post, tmpl}}
	}
	mdl := bpeJSON{Type: "BPE", IgnoreMerges: pre.ignoreMerges, Vocab: vocab, Merges: merges}
	return buildDoc(added, nil, pre.pre, post, pre.decoder, mdl)
}

// splitMerge cuts "a b" as llama.cpp does: at the first space after the
// first byte.
func splitMerge(mg string) (string, string, bool) {
	if len(mg) < 3 {
		return "", "", false
	}
	k := strings.IndexByte(mg[1:], ' ')
	if k < 0 {
		return "", "", false
	}
	return mg[:k+1], mg[k+2:], true
}

func (v *GGUFVocab) token(id int) string {
	if id < 0 {
		return ""
	}
	return v.Tokens[id]
}

func (v *GGUFVocab) checkAdd(addBOS, addEOS bool) error {
	if addBOS && v.BOS < 0 {
		return ggufErr("add_bos_token", "is true but tokenizer.ggml.bos_token_id is not set")
	}
	if addEOS && v.EOS < 0 {
		return ggufErr("add_eos_token", "is true but tokenizer.ggml.eos_token_id is not set")
	}
	return nil
}

// addedTokens lists control tokens (and tokens with a special role) as
// special added tokens and user-defined ones as plain added tokens, all
// matched in the raw text as llama.cpp matches them.
func (v *GGUFVocab) addedTokens() []AddedToken {
	role := map[int]bool{}
	for _, r := range v.roles() {
		if *r.id >= 0 {
			role[*r.id] = true
		}
	}
	var added []AddedToken
	for i, tok := range v.Tokens {
		switch typ := v.typeOf(i); {
		case typ == ggufControl || role[i] && typ != ggufUserDefined && typ != ggufByte && typ != ggufUnused:
			added = append(added, AddedToken{ID: i, Content: tok, Special: true})
		case typ == ggufUserDefined:
			added = append(added, AddedToken{ID: i, Content: tok})
		}
	}
	return added
}

// sentencePieceTokenizer reads a "llama" vocabulary as the SentencePiece
// model it came from. Missing roles take llama.cpp's defaults for such
// vocabularies: unk 0, bos 1, eos 2.
func (v *GGUFVocab) sentencePieceTokenizer() (*Tokenizer, error) {
	if v.Scores == nil {
		return nil, ggufErr("scores", "missing: a llama (SentencePiece) vocabulary needs scores to order its merges")
	}
	for _, d := range []struct {
		id  *int
		def int
	}{{&v.UNK, 0}, {&v.BOS, 1}, {&v.EOS, 2}} {
		if *d.id < 0 && d.def < len(v.Tokens) {
			*d.id = d.def
		}
	}
	addBOS, addEOS := boolOr(v.AddBOS, true), boolOr(v.AddEOS, false)
	if err := v.checkAdd(addBOS, addEOS); err != nil {
		return nil, err
	}
	m := &spModel{modelType: 2, unkID: v.UNK, bosID: v.BOS, eosID: v.EOS, padID: v.PAD,
		addDummyPrefix: boolOr(v.AddSpacePrefix, true), addBOS: addBOS, addEOS: addEOS, llamaLayout: true}
	m.pieces = make([]spPiece, len(v.Tokens))
	for i, tok := range v.Tokens {
		typ := v.typeOf(i)
		m.pieces[i] = spPiece{piece: tok, score: float64(v.Scores[i]), typ: int(typ)}
		if typ == ggufByte {
			m.byteFallback = true
		}
	}
	return m.tokenizer()
}

// ToGGUF describes the tokenizer as GGUF metadata, for writing a GGUF file
// from a tokenizer.json: byte-level BPE tokenizers whose pre-tokenizer
// llama.cpp knows become "gpt2" vocabularies, SentencePiece-style BPE
// (Llama 2, Mistral) becomes "llama". Tokens come in id order, ids no
// token has as unused "[PADn]" tokens; added tokens are control (special)
// or user-defined. A "llama" vocabulary gets scores: those FromGGUF read,
// else ones derived from the merge ranks so that llama.cpp, which merges
// the best-scoring pair first, merges in the same order. FromGGUF of the
// result tokenizes like t.
func (t *Tokenizer) ToGGUF() (GGUFVocab, error) {
	v, err := t.toGGUF()
	if err != nil {
		return GGUFVocab{}, badinput.Errorf("tokenizer has no GGUF form: %v", err)
	}
	return v, nil
}

// noGGUF names the tokenizer.json field that has no GGUF form.
func noGGUF(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
}

func (t *Tokenizer) toGGUF() (GGUFVocab, error) {
	m, ok := t.model.(*bpeModel)
	if !ok {
		return GGUFVocab{}, noGGUF("model.type", "only BPE models have a GGUF form here (gpt2, llama)")
	}
	if m.prefix != nil || m.suffix != nil {
		return GGUFVocab{}, noGGUF("model", "continuing_subword_prefix and end_of_word_suffix have no GGUF form")
	}
	v := GGUFVocab{BOS: t.special.BOS, EOS: t.special.EOS, UNK: t.special.UNK, PAD: t.special.PAD,
		SEP: -1, CLS: -1, MASK: t.special.MASK}
	if t.gguf != nil {
		v.SEP, v.CLS = t.gguf.sep, t.gguf.cls
	}
	sig := "none"
	if t.pre != nil {
		sig = preSignature(t.pre)
	}
	var err error
	if strings.Contains(sig, "bytelevel") {
		err = t.byteLevelGGUF(m, sig, &v)
	} else {
		err = t.sentencePieceGGUF(m, &v)
	}
	if err != nil {
		return GGUFVocab{}, err
	}
	addBOS, addEOS, err := t.postRoles(&v)
	if err != nil {
		return GGUFVocab{}, err
	}
	v.AddBOS, v.AddEOS = &addBOS, &addEOS
	for _, r := range v.roles() {
		if *r.id >= len(v.Tokens) {
			*r.id = -1
		}
	}
	if t.gguf != nil && len(t.gguf.types) == len(v.Tokens) {
		v.Types = slices.Clone(t.gguf.types)
	}
	if t.gguf != nil && len(t.gguf.scores) == len(v.Tokens) {
		v.Scores = slices.Clone(t.gguf.scores)
	}
	return v, nil
}

// tokensAndTypes lists the tokens in id order with their derived types
// (unknown and byte types only for SentencePiece vocabularies, as
// llama.cpp's converter writes them),
// as far as the vocabulary reaches (or the GGUF vocabulary FromGGUF read,
// with its trailing "[PADn]" tokens).
func (t *Tokenizer) tokensAndTypes(m *bpeModel, sentencePiece bool) ([]string, []int32) {
	n := t.VocabSize()
	if t.gguf != nil {
		n = max(n, len(t.gguf.types))
	}
	toks := make([]string, n)
	types := make([]int32, n)
	for id := range n {
		tok, ok := t.IDToToken(id)
		switch {
		case !ok:
			tok, types[id] = fmt.Sprintf("[PAD%d]", id), ggufUnused
		case sentencePiece && m.unk != nil && tok == *m.unk:
			types[id] = ggufUnknown
		case t.added.byID[id].Content == tok && t.added.special[tok]:
			types[id] = ggufControl
		case t.added.byID[id].Content == tok:
			types[id] = ggufUserDefined
		case sentencePiece && isByteToken(tok):
			types[id] = ggufByte
		default:
			types[id] = ggufNormal
		}
		toks[id] = tok
	}
	return toks, types
}

// isByteToken reports a byte-fallback token such as <0x0A>.
func isByteToken(tok string) bool {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return false
	}
	_, ok1 := hexVal(tok[3])
	_, ok2 := hexVal(tok[4])
	return ok1 && ok2 && tok[3:5] == strings.ToUpper(tok[3:5])
}

func (t *Tokenizer) byteLevelGGUF(m *bpeModel, sig string, v *GGUFVocab) error {
	var pre *ggufPre
	for _, p := range ggufPres() {
		if p.sig == sig {
			pre = p
			break
		}
	}
	if pre == nil {
		return noGGUF("pre_tokenizer", "no llama.cpp pre-tokenizer type splits like %s (supported: %s)", sig, ggufPreNames())
	}
	if t.normalizer != nil && !emptyNormalizer(t.normalizer) {
		return noGGUF("normalizer", "llama.cpp's byte-level tokenizers do not normalize; this one does")
	}
	if m.byteFallback {
		return noGGUF("model.byte_fallback", "llama.cpp's byte-level tokenizers have no byte fallback")
	}
	if m.ignoreMerges != pre.ignoreMerges {
		return noGGUF("model.ignore_merges", "is %v, but llama.cpp's %q pre-tokenizer has it %v", m.ignoreMerges, pre.names[0], pre.ignoreMerges)
	}
	v.Model, v.Pre = "gpt2", pre.names[0]
	if t.gguf != nil && slices.Contains(pre.names, t.gguf.pre) {
		v.Pre = t.gguf.pre
	}
	v.Tokens, v.Types = t.tokensAndTypes(m, false)
	v.Merges = make([]string, len(m.mergeOrder))
	for i, key := range m.mergeOrder {
		a, _ := m.ids.get(int(key >> 32))
		b, _ := m.ids.get(int(uint32(key)))
		v.Merges[i] = a + " " + b
	}
	f := false
	v.AddSpacePrefix = &f
	return nil
}

func emptyNormalizer(n normalizer) bool {
	s, ok := n.(sequenceNormalizer)
	return ok && len(s) == 0
}

// sentencePieceGGUF writes Llama 2's layout: Prepend("▁") and Replace(" ",
// "▁") (or a Metaspace that does not split), BPE with byte fallback.
func (t *Tokenizer) sentencePieceGGUF(m *bpeModel, v *GGUFVocab) error {
	prefix, err := t.spacePrefix()
	if err != nil {
		return err
	}
	v.Model, v.Pre = "llama", "default"
	v.AddSpacePrefix = &prefix
	v.Tokens, v.Types = t.tokensAndTypes(m, true)
	if m.unk != nil {
		if id, ok := m.vocab[*m.unk]; ok {
			v.UNK = id
		}
	}
	v.Scores = spScores(m, v.Types)
	return nil
}

// spacePrefix checks that the normalizer and pre-tokenizer are Llama 2's
// and says whether they put "▁" in front of the text.
func (t *Tokenizer) spacePrefix() (bool, error) {
	if mp, ok := t.pre.(metaspacePreTokenizer); ok {
		if mp.split || mp.replacement != '▁' || t.normalizer != nil && !emptyNormalizer(t.normalizer) {
			return false, noGGUF("pre_tokenizer", "a Metaspace that splits words (or a normalizer beside it) has no llama.cpp form")
		}
		return mp.scheme != "never", nil
	}
	if t.pre != nil {
		return false, noGGUF("pre_tokenizer", "%s has no llama.cpp form (supported: byte-level BPE with %s; SentencePiece BPE)", preSignature(t.pre), ggufPreNames())
	}
	var steps []normalizer
	switch n := t.normalizer.(type) {
	case sequenceNormalizer:
		steps = n
	case nil:
	default:
		steps = []normalizer{n}
	}
	prefix, replaced := false, false
	for i, s := range steps {
		switch s := s.(type) {
		case prependNormalizer:
			if s == "▁" && i == 0 {
				prefix = true
				continue
			}
		case replaceNormalizer:
			if s.re == nil && s.lit == " " && s.content == "▁" {
				replaced = true
				continue
			}
		}
		return false, noGGUF("normalizer", "only Prepend(\"▁\") and Replace(\" \", \"▁\") have a llama.cpp form")
	}
	if !replaced {
		return false, noGGUF("normalizer", "a SentencePiece BPE tokenizer must turn spaces into \"▁\" (Replace or Metaspace)")
	}
	return prefix, nil
}

// spScores scores tokens for llama.cpp's SentencePiece tokenizer, which
// repeatedly merges the adjacent pair whose merged token scores best. A
// token's score is minus the rank of the first merge that makes it, so the
// merge order is the BPE model's; control, unknown and byte tokens score 0
// and user-defined ones -1000, as llama.cpp's converter scores them.
// Tokens no merge makes rank after every merge.
func spScores(m *bpeModel, types []int32) []float32 {
	first := make(map[int]int, len(m.merges))
	for _, mg := range m.merges {
		id := int(mg.newID)
		if r, ok := first[id]; !ok || int(mg.rank) < r {
			first[id] = int(mg.rank)
		}
	}
	scores := make([]float32, len(types))
	for id, typ := range types {
		switch {
		case typ == ggufControl || typ == ggufUnknown || typ == ggufByte:
			scores[id] = 0
		case typ == ggufUserDefined || typ == ggufUnused:
			scores[id] = -1000
		default:
			r, ok := first[id]
			if !ok {
				r = len(m.merges) + id
			}
			scores[id] = -float32(r)
		}
	}
	return scores
}

// postRoles reads add_bos_token and add_eos_token off the post-processor:
// a template "[bos] $A [eos]", maybe beside a ByteLevel processor. The
// template's tokens take the bos and eos roles.
func (t *Tokenizer) postRoles(v *GGUFVocab) (addBOS, addEOS bool, err error) {
	var procs []postProcessor
	switch p := t.post.(type) {
	case nil:
	case sequenceProcessor:
		procs = p
	default:
		procs = []postProcessor{p}
	}
	for _, p := range procs {
		switch p := p.(type) {
		case *byteLevelProcessor:
		case *templateProcessor:
			single := p.single
			id := func(piece templatePiece) (int, bool) {
				e := p.specials[piece.special]
				if piece.seq >= 0 || len(e.ids) != 1 {
					return 0, false
				}
				return e.ids[0], true
			}
			if len(single) > 0 {
				if bos, ok := id(single[0]); ok {
					addBOS, v.BOS = true, bos
					single = single[1:]
				}
			}
			if len(single) > 0 {
				if eos, ok := id(single[len(single)-1]); ok {
					addEOS, v.EOS = true, eos
					single = single[:len(single)-1]
				}
			}
			if len(single) != 1 || single[0].seq != 0 {
				return false, false, noGGUF("post_processor", "only a template \"[bos] $A [eos]\" has a GGUF form (add_bos_token, add_eos_token)")
			}
		default:
			name := fmt.Sprintf("%T", p)
			if c, ok := p.(*clsSepProcessor); ok {
				name = map[bool]string{true: "RobertaProcessing", false: "BertProcessing"}[c.roberta]
			}
			return false, false, noGGUF("post_processor", "%s has no GGUF form (only TemplateProcessing \"[bos] $A [eos]\" and ByteLevel)", name)
		}
	}
	return addBOS, addEOS, nil
}

// preSignature describes the splitting a pre-tokenizer does, leaving out
// what does not change ids (ByteLevel's trim_offsets), so that equivalent
// pre-tokenizers compare equal.
func preSignature(p preTokenizer) string {
	var parts []string
	var walk func(preTokenizer)
	walk = func(p preTokenizer) {
		switch p := p.(type) {
		case sequencePreTokenizer:
			for _, q := range p {
				walk(q)
			}
		case byteLevelPreTokenizer:
			s := "bytelevel"
			if p.addPrefixSpace {
				s += "+prefix"
			}
			if p.useRegex {
				s += "(gpt2)"
			}
			parts = append(parts, s)
		case digitsPreTokenizer:
			parts = append(parts, fmt.Sprintf("digits(individual=%v)", p.individual))
		case splitPreTokenizer:
			if p.pattern == "" || p.invert || p.behavior != splitIsolated {
				parts = append(parts, "split(other)")
			} else {
				parts = append(parts, fmt.Sprintf("split(%s)", p.pattern))
			}
		case metaspacePreTokenizer:
			parts = append(parts, "metaspace")
		default:
			parts = append(parts, strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", p), "tokenizer."), "PreTokenizer"))
		}
	}
	walk(p)
	s := strings.Join(parts, " + ")
	return strings.ReplaceAll(s, "split("+gpt2Pattern+") + bytelevel", "bytelevel(gpt2)")
}
