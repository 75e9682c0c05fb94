// Package tokenizer reads Hugging Face tokenizer.json files (and
// SentencePiece tokenizer.model files) and encodes text to the same ids as
// the Python `tokenizers` library: byte-level BPE for GPT-2/RoBERTa, Unigram
// with SentencePiece's precompiled normalizer for T5, and SentencePiece-style
// BPE with byte fallback for Llama 2. It also trains such tokenizers, for
// models initialised from scratch, and converts them to and from the
// vocabularies GGUF files carry (FromGGUF, ToGGUF).
//
// Encoding runs the Hugging Face pipeline: added tokens are cut out of the
// raw text, the rest is normalized, pre-tokenized into words, tokenized by
// the model, and the post-processor adds special tokens. Offsets are byte
// offsets into the input text.
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// Offset is a byte range [Start, End) of the encoded text.
type Offset struct{ Start, End int }

// Encoding is the result of encoding one text (or a pair): parallel slices
// with one entry per token.
type Encoding struct {
	IDs               []int
	TypeIDs           []int
	Tokens            []string
	Offsets           []Offset // into the text each token came from; (0, 0) for inserted ones
	SpecialTokensMask []int    // 1 for tokens the post-processor or padding added
	AttentionMask     []int    // 0 for padding

	text string // the encoded text, while offsets refer to it alone
}

// Len is the number of tokens.
func (e *Encoding) Len() int { return len(e.IDs) }

func (e *Encoding) appendEnc(o *Encoding) {
	e.IDs = append(e.IDs, o.IDs...)
	e.TypeIDs = append(e.TypeIDs, o.TypeIDs...)
	e.Tokens = append(e.Tokens, o.Tokens...)
	e.Offsets = append(e.Offsets, o.Offsets...)
	e.SpecialTokensMask = append(e.SpecialTokensMask, o.SpecialTokensMask...)
	e.AttentionMask = append(e.AttentionMask, o.AttentionMask...)
}

func mergeEncodings(encs []*Encoding) *Encoding {
	if len(encs) == 1 {
		return encs[0]
	}
	n := 0
	for _, e := range encs {
		n += e.Len()
	}
	out := &Encoding{IDs: make([]int, 0, n), TypeIDs: make([]int, 0, n), Tokens: make([]string, 0, n),
		Offsets: make([]Offset, 0, n), SpecialTokensMask: make([]int, 0, n), AttentionMask: make([]int, 0, n)}
	for _, e := range encs {
		out.appendEnc(e)
	}
	return out
}

// Side says which end of a sequence truncation or padding acts on.
type Side int

const (
	Right Side = iota
	Left
)

func (s Side) String() string {
	if s == Left {
		return "Left"
	}
	return "Right"
}

// Truncation limits encodings to MaxLength tokens, special tokens included,
// cutting on Side. For pairs the strategy is "longest_first" (trim the
// longer sequence first), "only_first" or "only_second". Overflowing tokens
// are dropped.
type Truncation struct {
	MaxLength int
	Side      Side
	Strategy  string
	Stride    int
}

// Padding pads encodings to Length tokens, or to the longest of the batch
// when Length is 0, rounded up to a multiple of MultipleOf when it is set.
type Padding struct {
	Side       Side
	Length     int
	MultipleOf int
	PadID      int
	PadTypeID  int
	PadToken   string
}

// SpecialIDs are the ids of the tokens with a role, -1 where the tokenizer
// has none. They come from tokenizer_config.json or special_tokens_map.json
// beside the file when present, else from the usual token names.
type SpecialIDs struct {
	BOS, EOS, PAD, UNK, MASK int
}

// Tokenizer encodes text to ids and decodes ids to text. It is safe for
// concurrent use, except for the Set… methods.
type Tokenizer struct {
	normalizer normalizer
	pre        preTokenizer
	model      model
	post       postProcessor
	decoder    decoder
	added      *addedVocab
	trunc      *Truncation
	pad        *Padding
	special    SpecialIDs
	doc        document
	gguf       *ggufMemo // what a GGUF vocabulary said beyond tokenizer.json
}

// document is the file as loaded, so that Save writes back what it read.
type document struct {
	Version       string          `json:"version"`
	Truncation    any             `json:"truncation"`
	Padding       any             `json:"padding"`
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

var supportedModels = []string{"BPE", "Unigram", "WordLevel"}

// Load reads a tokenizer.json, or a SentencePiece model when the file is a
// protobuf (tokenizer.model). Given a folder, it reads the folder's
// tokenizer.json, else its tokenizer.model or spiece.model. Special-token
// roles come from tokenizer_config.json and special_tokens_map.json beside
// the file when they exist.
func Load(path string) (*Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		dir := path
		path = filepath.Join(dir, "tokenizer.json")
		for _, name := range []string{"tokenizer.json", "tokenizer.model", "spiece.model"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				path = filepath.Join(dir, name)
				break
			}
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	var t *Tokenizer
	if looksLikeJSON(data) {
		t, err = FromJSON(data)
	} else {
		t, err = FromSentencePiece(data)
	}
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.File = path
		}
		return nil, badinput.Wrap(err)
	}
	if err := t.readSpecialTokenFiles(filepath.Dir(path)); err != nil {
		return nil, badinput.Wrap(err)
	}
	return t, nil
}

func looksLikeJSON(data []byte) bool {
	for _, c := range data {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// FromJSON builds a tokenizer from the contents of a tokenizer.json.
func FromJSON(data []byte) (*Tokenizer, error) {
	t, err := fromJSON(data)
	return t, badinput.Wrap(err)
}

func fromJSON(data []byte) (*Tokenizer, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, &FormatError{Msg: fmt.Sprintf("not valid JSON: %v", err)}
	}
	if top == nil {
		return nil, &FormatError{Msg: "expected a JSON object"}
	}
	o := jsonObj{m: top}
	t := &Tokenizer{}
	t.doc.Version, _ = o.str("version", "1.0")
	mraw, ok := o.get("model")
	if !ok {
		return nil, fieldErr("model", "missing")
	}
	var err error
	if t.model, err = parseModel(mraw); err != nil {
		return nil, err
	}
	t.doc.Model = mraw
	if raw, ok := o.get("normalizer"); ok {
		if t.normalizer, err = parseNormalizer("normalizer", raw); err != nil {
			return nil, err
		}
		t.doc.Normalizer = raw
	}
	if raw, ok := o.get("pre_tokenizer"); ok {
		if t.pre, err = parsePreTokenizer("pre_tokenizer", raw); err != nil {
			return nil, err
		}
		t.doc.PreTokenizer = raw
	}
	if raw, ok := o.get("decoder"); ok {
		if t.decoder, err = parseDecoder("decoder", raw); err != nil {
			return nil, err
		}
		t.doc.Decoder = raw
	}
	added, err := parseAddedTokens("added_tokens", o.m["added_tokens"])
	if err != nil {
		return nil, err
	}
	t.added = newAddedVocab(added, t.model, t.normalizer)
	t.doc.AddedTokens = t.added.order
	if raw, ok := o.get("post_processor"); ok {
		if t.post, err = parseProcessor("post_processor", raw); err != nil {
			return nil, err
		}
		t.doc.PostProcessor = raw
	}
	if raw, ok := o.get("truncation"); ok {
		if t.trunc, err = parseTruncation(raw); err != nil {
			return nil, err
		}
	}
	if raw, ok := o.get("padding"); ok {
		if t.pad, err = parsePadding(raw); err != nil {
			return nil, err
		}
	}
	t.special = t.guessSpecialIDs()
	return t, nil
}

func parseModel(raw json.RawMessage) (model, error) {
	o, err := decodeObj("model", raw)
	if err != nil {
		return nil, err
	}
	typ, err := o.str("type", "")
	if err != nil {
		return nil, err
	}
	if typ == "" {
		// Files from old versions of the library carry no type tag.
		vraw, _ := o.get("vocab")
		switch {
		case o.has("merges"):
			typ = "BPE"
		case jsonKind(vraw) == "an array":
			typ = "Unigram"
		default:
			return nil, fieldErr("model.type", "missing, and the model is neither BPE (merges) nor Unigram (a vocab list)")
		}
	}
	switch typ {
	case "BPE":
		return parseBPE(o)
	case "Unigram":
		return parseUnigram(o)
	case "WordLevel":
		return parseWordLevel(o)
	}
	return nil, unsupported("model.type", "model", typ, supportedModels)
}

func parseTruncation(raw json.RawMessage) (*Truncation, error) {
	o, err := decodeObj("truncation", raw)
	if err != nil {
		return nil, err
	}
	tr := &Truncation{}
	if tr.MaxLength, err = o.integer("max_length", 512); err != nil {
		return nil, err
	}
	if tr.Stride, err = o.integer("stride", 0); err != nil {
		return nil, err
	}
	dir, err := o.str("direction", "Right")
	if err != nil {
		return nil, err
	}
	if tr.Side, err = parseSide("truncation.direction", dir); err != nil {
		return nil, err
	}
	strategy, err := o.str("strategy", "LongestFirst")
	if err != nil {
		return nil, err
	}
	switch strategy {
	case "LongestFirst":
		tr.Strategy = "longest_first"
	case "OnlyFirst":
		tr.Strategy = "only_first"
	case "OnlySecond":
		tr.Strategy = "only_second"
	default:
		return nil, fieldErr("truncation.strategy", "expected LongestFirst, OnlyFirst or OnlySecond, got %q", strategy)
	}
	return tr, nil
}

func parseSide(field, s string) (Side, error) {
	switch s {
	case "Right":
		return Right, nil
	case "Left":
		return Left, nil
	}
	return Right, fieldErr(field, `expected "Left" or "Right", got %q`, s)
}

func parsePadding(raw json.RawMessage) (*Padding, error) {
	o, err := decodeObj("padding", raw)
	if err != nil {
		return nil, err
	}
	p := &Padding{}
	if sraw, ok := o.get("strategy"); ok {
		var s string
		if json.Unmarshal(sraw, &s) == nil {
			if s != "BatchLongest" {
				return nil, fieldErr("padding.strategy", `expected "BatchLongest" or {"Fixed": n}, got %q`, s)
			}
		} else {
			so, err := decodeObj("padding.strategy", sraw)
			if err != nil {
				return nil, err
			}
			if p.Length, err = so.integer("Fixed", 0); err != nil {
				return nil, err
			}
		}
	}
	dir, err := o.str("direction", "Right")
	if err != nil {
		return nil, err
	}
	if p.Side, err = parseSide("padding.direction", dir); err != nil {
		return nil, err
	}
	if p.MultipleOf, err = o.integer("pad_to_multiple_of", 0); err != nil {
		return nil, err
	}
	if p.PadID, err = o.integer("pad_id", 0); err != nil {
		return nil, err
	}
	if p.PadTypeID, err = o.integer("pad_type_id", 0); err != nil {
		return nil, err
	}
	if p.PadToken, err = o.str("pad_token", "[PAD]"); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode turns text into tokens. addSpecialTokens runs the post-processor's
// template (e.g. "<s> …" for Llama, "<s> … </s>" for RoBERTa, "… </s>" for
// T5). Truncation and padding set on the tokenizer apply. Invalid UTF-8 in
// text is read as U+FFFD.
func (t *Tokenizer) Encode(text string, addSpecialTokens bool) (*Encoding, error) {
	e, err := t.encodeSequence(text, 0)
	if err != nil {
		return nil, err
	}
	return t.postProcess(e, nil, addSpecialTokens)
}

// EncodePair encodes a pair of texts, such as a question and a passage.
func (t *Tokenizer) EncodePair(a, b string, addSpecialTokens bool) (*Encoding, error) {
	ea, err := t.encodeSequence(a, 0)
	if err != nil {
		return nil, err
	}
	eb, err := t.encodeSequence(b, 1)
	if err != nil {
		return nil, err
	}
	return t.postProcess(ea, eb, addSpecialTokens)
}

// EncodeBatch encodes texts and, when padding is set, pads them together.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecialTokens bool) ([]*Encoding, error) {
	out := make([]*Encoding, len(texts))
	for i, s := range texts {
		e, err := t.Encode(s, addSpecialTokens)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	if t.pad != nil {
		Pad(out, *t.pad)
	}
	return out, nil
}

// EncodeIDs is Encode returning only the ids.
func (t *Tokenizer) EncodeIDs(text string, addSpecialTokens bool) ([]int, error) {
	e, err := t.Encode(text, addSpecialTokens)
	if err != nil {
		return nil, err
	}
	return e.IDs, nil
}

func (t *Tokenizer) encodeSequence(text string, typeID int) (*Encoding, error) {
	text = validUTF8(text)
	type encTok struct {
		id    int
		value string
		off   Offset
	}
	all := make([]encTok, 0, len(text)/3+4)
	add := func(n *normString, toks []token) {
		for _, tk := range toks {
			s, end := n.origRange(tk.start, tk.end)
			all = append(all, encTok{tk.id, tk.value, Offset{s, end}})
		}
	}
	var toks []token
	for _, sp := range t.added.extract(t.normalizer, text) {
		if sp.tok != nil {
			add(sp.n, []token{*sp.tok})
			continue
		}
		words := []*normString{sp.n}
		if t.pre != nil {
			words = splitEach(words, t.pre.preTokenize)
		}
		for _, w := range words {
			var err error
			toks, err = t.model.tokenize(w.s, toks[:0])
			if err != nil {
				return nil, err
			}
			add(w, toks)
		}
	}
	n := len(all)
	e := &Encoding{text: text, IDs: make([]int, n), TypeIDs: make([]int, n), Tokens: make([]string, n),
		Offsets: make([]Offset, n), SpecialTokensMask: make([]int, n), AttentionMask: make([]int, n)}
	for i, tk := range all {
		e.IDs[i], e.Tokens[i], e.Offsets[i] = tk.id, tk.value, tk.off
		e.TypeIDs[i], e.AttentionMask[i] = typeID, 1
	}
	return e, nil
}

func (t *Tokenizer) postProcess(a, b *Encoding, addSpecial bool) (*Encoding, error) {
	if t.trunc != nil {
		tr := *t.trunc
		if addSpecial && t.post != nil {
			if n := t.post.added(b != nil); n > 0 {
				tr.MaxLength = max(tr.MaxLength-n, 0)
			}
		}
		if err := truncatePair(a, b, tr); err != nil {
			return nil, err
		}
	}
	encs := []*Encoding{a}
	if b != nil {
		encs = append(encs, b)
	}
	if t.post != nil {
		encs = t.post.process(encs, addSpecial)
	}
	e := mergeEncodings(encs)
	if t.pad != nil {
		Pad([]*Encoding{e}, *t.pad)
	}
	return e, nil
}

// truncate keeps n tokens of e, cutting on side.
func (e *Encoding) truncate(n int, side Side) {
	if n >= len(e.IDs) {
		return
	}
	lo, hi := 0, n
	if side == Left {
		lo, hi = len(e.IDs)-n, len(e.IDs)
	}
	e.IDs = e.IDs[lo:hi]
	e.TypeIDs = e.TypeIDs[lo:hi]
	e.Tokens = e.Tokens[lo:hi]
	e.Offsets = e.Offsets[lo:hi]
	e.SpecialTokensMask = e.SpecialTokensMask[lo:hi]
	e.AttentionMask = e.AttentionMask[lo:hi]
}

func truncatePair(a, b *Encoding, tr Truncation) error {
	if tr.MaxLength == 0 {
		a.truncate(0, tr.Side)
		if b != nil {
			b.truncate(0, tr.Side)
		}
		return nil
	}
	total := a.Len()
	if b != nil {
		total += b.Len()
	}
	if total <= tr.MaxLength {
		return nil
	}
	remove := total - tr.MaxLength
	switch tr.Strategy {
	case "only_first", "only_second":
		target := a
		if tr.Strategy == "only_second" {
			if b == nil {
				return errors.New("tokenizer: truncation strategy only_second needs a pair of sequences")
			}
			target = b
		}
		if target.Len() <= remove {
			return fmt.Errorf("tokenizer: cannot truncate: the sequence has %d tokens and %d must go", target.Len(), remove)
		}
		target.truncate(target.Len()-remove, tr.Side)
		return nil
	}
	if b == nil {
		a.truncate(tr.MaxLength, tr.Side)
		return nil
	}
	n1, n2 := a.Len(), b.Len()
	swap := n1 > n2
	if swap {
		n1, n2 = n2, n1
	}
	if n1 > tr.MaxLength {
		n2 = n1
	} else {
		n2 = max(n1, tr.MaxLength-n1)
	}
	if n1+n2 > tr.MaxLength {
		n1 = tr.MaxLength / 2
		n2 = n1 + tr.MaxLength%2
	}
	if swap {
		n1, n2 = n2, n1
	}
	a.truncate(n1, tr.Side)
	b.truncate(n2, tr.Side)
	return nil
}

// Pad pads encodings in place to a common length (see Padding).
func Pad(encs []*Encoding, p Padding) {
	if len(encs) == 0 {
		return
	}
	n := p.Length
	if n == 0 {
		for _, e := range encs {
			n = max(n, e.Len())
		}
	}
	if p.MultipleOf > 0 && n%p.MultipleOf != 0 {
		n += p.MultipleOf - n%p.MultipleOf
	}
	for _, e := range encs {
		k := n - e.Len()
		if k <= 0 {
			continue
		}
		pad := &Encoding{}
		for range k {
			pad.IDs = append(pad.IDs, p.PadID)
			pad.TypeIDs = append(pad.TypeIDs, p.PadTypeID)
			pad.Tokens = append(pad.Tokens, p.PadToken)
			pad.Offsets = append(pad.Offsets, Offset{})
			pad.SpecialTokensMask = append(pad.SpecialTokensMask, 1)
			pad.AttentionMask = append(pad.AttentionMask, 0)
		}
		if p.Side == Left {
			pad.appendEnc(e)
			*e = *pad
		} else {
			e.appendEnc(pad)
		}
	}
}

// SetTruncation makes Encode truncate (nil turns it off).
func (t *Tokenizer) SetTruncation(tr *Truncation) error {
	if tr != nil {
		switch tr.Strategy {
		case "":
			c := *tr
			c.Strategy = "longest_first"
			tr = &c
		case "longest_first", "only_first", "only_second":
		default:
			return badinput.Errorf("tokenizer: unknown truncation strategy %q (longest_first, only_first, only_second)", tr.Strategy)
		}
	}
	t.trunc = tr
	return nil
}

// SetPadding makes EncodeBatch (and Encode, for a fixed Length) pad; nil
// turns it off.
func (t *Tokenizer) SetPadding(p *Padding) { t.pad = p }

// Truncation returns the truncation in force, or nil.
func (t *Tokenizer) Truncation() *Truncation { return t.trunc }

// Padding returns the padding in force, or nil.
func (t *Tokenizer) Padding() *Padding { return t.pad }

// Decode turns ids back into text; skipSpecialTokens drops special added
// tokens such as <s> and </s>. An id outside the vocabulary is an error
// (Python's library skips it silently).
func (t *Tokenizer) Decode(ids []int, skipSpecialTokens bool) (string, error) {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		tok, ok := t.IDToToken(id)
		if !ok {
			return "", fmt.Errorf("tokenizer: cannot decode id %d: outside the vocabulary (0..%d)", id, t.VocabSize()-1)
		}
		if skipSpecialTokens && t.added.special[tok] {
			continue
		}
		toks = append(toks, tok)
	}
	if t.decoder == nil {
		return strings.Join(toks, " "), nil
	}
	return strings.Join(t.decoder.decode(toks), ""), nil
}

// TokenToID returns the id of a token string.
func (t *Tokenizer) TokenToID(tok string) (int, bool) {
	if id, ok := t.added.byContent[tok]; ok {
		return id, true
	}
	return t.model.tokenToID(tok)
}

// IDToToken returns the token string of an id.
func (t *Tokenizer) IDToToken(id int) (string, bool) {
	if a, ok := t.added.byID[id]; ok {
		return a.Content, true
	}
	return t.model.idToToken(id)
}

// VocabSize is one more than the largest id, added tokens included: the
// number of rows an embedding table needs.
func (t *Tokenizer) VocabSize() int {
	n := t.model.size()
	// Map vocabularies may have gaps: the table must reach the largest id.
	var vocab map[string]int
	switch m := t.model.(type) {
	case *bpeModel:
		vocab = m.vocab
	case *wordLevelModel:
		vocab = m.vocab
	}
	for _, id := range vocab {
		n = max(n, id+1)
	}
	for id := range t.added.byID {
		n = max(n, id+1)
	}
	return n
}

// AddedTokens lists the added tokens with their ids.
func (t *Tokenizer) AddedTokens() []AddedToken {
	return append([]AddedToken(nil), t.added.order...)
}

// SpecialIDs returns the ids of the special-token roles.
func (t *Tokenizer) SpecialIDs() SpecialIDs { return t.special }

// SetSpecialToken gives a role ("bos", "eos", "pad", "unk" or "mask") to a
// token of the vocabulary; an empty token clears the role.
func (t *Tokenizer) SetSpecialToken(role, tok string) error {
	id := -1
	if tok != "" {
		var ok bool
		if id, ok = t.TokenToID(tok); !ok {
			return badinput.Errorf("tokenizer: %s token %q is not in the vocabulary", role, tok)
		}
	}
	switch role {
	case "bos":
		t.special.BOS = id
	case "eos":
		t.special.EOS = id
	case "pad":
		t.special.PAD = id
	case "unk":
		t.special.UNK = id
	case "mask":
		t.special.MASK = id
	default:
		return badinput.Errorf("tokenizer: unknown special token role %q (bos, eos, pad, unk, mask)", role)
	}
	return nil
}

var specialNames = map[string][]string{
	"bos":  {"<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>"},
	"eos":  {"</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>"},
	"pad":  {"<pad>", "[PAD]", "<|pad|>", "<|padding|>"},
	"unk":  {"<unk>", "[UNK]", "<|unk|>"},
	"mask": {"<mask>", "[MASK]"},
}

func (t *Tokenizer) guessSpecialIDs() SpecialIDs {
	find := func(role string) int {
		for _, name := range specialNames[role] {
			if id, ok := t.TokenToID(name); ok {
				return id
			}
		}
		return -1
	}
	s := SpecialIDs{BOS: find("bos"), EOS: find("eos"), PAD: find("pad"), UNK: find("unk"), MASK: find("mask")}
	switch m := t.model.(type) {
	case *bpeModel:
		if m.unk != nil {
			if id, ok := t.TokenToID(*m.unk); ok {
				s.UNK = id
			}
		}
	case *unigramModel:
		if m.unkID >= 0 {
			s.UNK = m.unkID
		}
	}
	return s
}

// readSpecialTokenFiles applies the roles named in the Hugging Face files
// that sit beside tokenizer.json (special_tokens_map.json wins, as in
// transformers); a role set to null there is cleared.
func (t *Tokenizer) readSpecialTokenFiles(dir string) error {
	for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("%s: not valid JSON: %v", filepath.Join(dir, name), err)
		}
		for _, role := range []string{"bos", "eos", "pad", "unk", "mask"} {
			raw, ok := m[role+"_token"]
			if !ok {
				continue
			}
			tok := ""
			var s string
			var obj struct {
				Content string `json:"content"`
			}
			switch {
			case isNull(raw):
			case json.Unmarshal(raw, &s) == nil:
				tok = s
			case json.Unmarshal(raw, &obj) == nil:
				tok = obj.Content
			}
			if tok != "" {
				if _, ok := t.TokenToID(tok); !ok {
					continue
				}
			}
			if err := t.SetSpecialToken(role, tok); err != nil {
				return err
			}
		}
	}
	return nil
}

// MarshalJSON writes the tokenizer in the tokenizer.json format.
func (t *Tokenizer) MarshalJSON() ([]byte, error) {
	d := t.doc
	if d.AddedTokens == nil {
		d.AddedTokens = []AddedToken{}
	}
	if t.trunc != nil {
		d.Truncation = map[string]any{
			"direction":  t.trunc.Side.String(),
			"max_length": t.trunc.MaxLength,
			"strategy":   map[string]string{"longest_first": "LongestFirst", "only_first": "OnlyFirst", "only_second": "OnlySecond"}[t.trunc.Strategy],
			"stride":     t.trunc.Stride,
		}
	}
	if t.pad != nil {
		var strategy any = "BatchLongest"
		if t.pad.Length > 0 {
			strategy = map[string]int{"Fixed": t.pad.Length}
		}
		var multiple any
		if t.pad.MultipleOf > 0 {
			multiple = t.pad.MultipleOf
		}
		d.Padding = map[string]any{
			"strategy":           strategy,
			"direction":          t.pad.Side.String(),
			"pad_to_multiple_of": multiple,
			"pad_id":             t.pad.PadID,
			"pad_type_id":        t.pad.PadTypeID,
			"pad_token":          t.pad.PadToken,
		}
	}
	for _, f := range []*json.RawMessage{&d.Normalizer, &d.PreTokenizer, &d.PostProcessor, &d.Decoder} {
		if len(*f) == 0 {
			*f = json.RawMessage("null")
		}
	}
	return marshalJSON(d)
}

// marshalJSON encodes v without escaping <, > and &, which tokens are full of.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// Save writes the tokenizer as tokenizer.json, atomically.
func (t *Tokenizer) Save(path string) error {
	data, err := t.MarshalJSON()
	if err != nil {
		return err
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}
