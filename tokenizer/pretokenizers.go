package tokenizer

import (
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizer cuts a normalized piece of text into the words the model
// tokenizes one at a time; it may also rewrite them (ByteLevel, Metaspace).
type preTokenizer interface {
	preTokenize(n *normString) []*normString
}

var supportedPreTokenizers = []string{"Sequence", "ByteLevel", "Metaspace", "Whitespace", "WhitespaceSplit", "Split", "Digits", "Punctuation", "BertPreTokenizer"}

func parsePreTokenizer(path string, raw json.RawMessage) (preTokenizer, error) {
	o, typ, err := decodeComponent(path, raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(o, "pretokenizers", parsePreTokenizer)
		if err != nil {
			return nil, err
		}
		return sequencePreTokenizer(seq), nil
	case "ByteLevel":
		var b byteLevelPreTokenizer
		if b.addPrefixSpace, err = o.boolean("add_prefix_space", true); err != nil {
			return nil, err
		}
		if b.useRegex, err = o.boolean("use_regex", true); err != nil {
			return nil, err
		}
		return b, nil
	case "Metaspace":
		return parseMetaspace(o)
	case "Whitespace":
		return whitespacePreTokenizer{}, nil
	case "WhitespaceSplit":
		return whitespaceSplitPreTokenizer{}, nil
	case "Split":
		return parseSplit(o)
	case "Digits":
		individual, err := o.boolean("individual_digits", false)
		if err != nil {
			return nil, err
		}
		return digitsPreTokenizer{individual}, nil
	case "Punctuation":
		b, err := parseBehavior(o, "behavior", splitIsolated)
		if err != nil {
			return nil, err
		}
		return punctuationPreTokenizer{b}, nil
	case "BertPreTokenizer":
		return bertPreTokenizer{}, nil
	}
	return nil, unsupported(o.field("type"), "pre-tokenizer", typ, supportedPreTokenizers)
}

func parseBehavior(o jsonObj, k string, def splitBehavior) (splitBehavior, error) {
	if !o.has(k) {
		return def, nil
	}
	s, err := o.str(k, "")
	if err != nil {
		return 0, err
	}
	b, ok := splitBehaviorNames[s]
	if !ok {
		return 0, fieldErr(o.field(k), "unknown split behavior %q (one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)", s)
	}
	return b, nil
}

// splitEach applies f to every piece and drops the empty results.
func splitEach(parts []*normString, f func(*normString) []*normString) []*normString {
	out := make([]*normString, 0, len(parts))
	for _, p := range parts {
		for _, q := range f(p) {
			if q.s != "" {
				out = append(out, q)
			}
		}
	}
	return out
}

// sequencePreTokenizer applies its pre-tokenizers in order.
type sequencePreTokenizer []preTokenizer

func (s sequencePreTokenizer) preTokenize(n *normString) []*normString {
	parts := []*normString{n}
	for _, p := range s {
		parts = splitEach(parts, p.preTokenize)
	}
	return parts
}

// byteLevelPreTokenizer is GPT-2's: split with its regex, then spell each
// byte as a printable rune so the vocabulary covers every input.
type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	useRegex       bool
}

func (b byteLevelPreTokenizer) preTokenize(n *normString) []*normString {
	if b.addPrefixSpace && !strings.HasPrefix(n.s, " ") {
		n.prepend(" ")
	}
	parts := []*normString{n}
	if b.useRegex {
		parts = n.split(matchPieces(n.s, gpt2Matches(n.s)), splitIsolated)
	}
	out := parts[:0]
	for _, p := range parts {
		if p.s == "" {
			continue
		}
		byteLevelTransform(p)
		out = append(out, p)
	}
	return out
}

const (
	clsSpace = iota
	clsLetter
	clsNumber
	clsOther
)

func gpt2Class(r rune) int {
	switch {
	case isWhitespace(r):
		return clsSpace
	case unicode.IsLetter(r) && !unicode.Is(onigLetterRemoved, r):
		return clsLetter
	case unicode.IsNumber(r) && !unicode.Is(onigNumberRemoved, r):
		return clsNumber
	}
	return clsOther
}

// gpt2Matches splits s as the regex
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does; every byte of s belongs to one match.
func gpt2Matches(s string) []span {
	out := make([]span, 0, len(s)/4+1)
	for i := 0; i < len(s); {
		end := gpt2Match(s, i)
		out = append(out, span{i, end})
		i = end
	}
	return out
}

func gpt2Match(s string, i int) int {
	if s[i] == '\'' {
		rest := s[i+1:]
		for _, c := range [...]string{"s", "t", "re", "ve", "m", "ll", "d"} {
			if strings.HasPrefix(rest, c) {
				return i + 1 + len(c)
			}
		}
	}
	r, sz := utf8.DecodeRuneInString(s[i:])
	if r == ' ' && i+sz < len(s) {
		r2, _ := utf8.DecodeRuneInString(s[i+sz:])
		if c := gpt2Class(r2); c != clsSpace {
			return classRun(s, i+sz, c)
		}
	}
	if c := gpt2Class(r); c != clsSpace {
		return classRun(s, i, c)
	}
	// A run of white space: all of it at the end of the text, else all but
	// its last rune (which may then lead the next word), else just one.
	end, last := i, i
	for end < len(s) {
		r, sz := utf8.DecodeRuneInString(s[end:])
		if !isWhitespace(r) {
			break
		}
		last = end
		end += sz
	}
	if end == len(s) || last == i {
		return end
	}
	return last
}

// classRun returns the end of the run of runes of class c starting at i.
func classRun(s string, i, c int) int {
	for i < len(s) {
		r, sz := utf8.DecodeRuneInString(s[i:])
		if gpt2Class(r) != c {
			break
		}
		i += sz
	}
	return i
}

// gpt2Pattern is the split regex of GPT-2 and RoBERTa as Split pre-tokenizers
// spell it; gpt2Matches, written by hand, runs it faster than the regex
// matcher.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// metaspacePreTokenizer is SentencePiece's: spaces become "▁", a "▁" is put
// in front (always, only at the start of the text, or never), and words
// start at each "▁".
type metaspacePreTokenizer struct {
	replacement rune
	scheme      string // "always", "first" or "never"
	split       bool
}

func parseMetaspace(o jsonObj) (metaspacePreTokenizer, error) {
	m := metaspacePreTokenizer{scheme: "always", split: true}
	var err error
	if m.replacement, err = o.singleRune("replacement", '▁'); err != nil {
		return m, err
	}
	if m.scheme, err = parseScheme(o); err != nil {
		return m, err
	}
	if m.split, err = o.boolean("split", true); err != nil {
		return m, err
	}
	return m, nil
}

func parseScheme(o jsonObj) (string, error) {
	if o.has("prepend_scheme") {
		s, err := o.str("prepend_scheme", "")
		if err != nil {
			return "", err
		}
		switch s {
		case "always", "first", "never":
			return s, nil
		}
		return "", fieldErr(o.field("prepend_scheme"), `expected "always", "first" or "never", got %q`, s)
	}
	add, err := o.boolean("add_prefix_space", true)
	if err != nil || add {
		return "always", err
	}
	return "never", nil
}

func (m metaspacePreTokenizer) preTokenize(n *normString) []*normString {
	rep := string(m.replacement)
	n.replaceMatches(stringMatches(n.s, " "), rep)
	switch m.scheme {
	case "always":
		if !strings.HasPrefix(n.s, rep) {
			n.prepend(rep)
		}
	case "first":
		if !strings.HasPrefix(n.s, rep) && n.shift == 0 {
			n.prepend(rep)
		}
	}
	if !m.split {
		return []*normString{n}
	}
	return n.split(runePieces(n.s, func(r rune) bool { return r == m.replacement }), splitMergedWithNext)
}

// whitespacePreTokenizer keeps runs of word characters and runs of other
// non-space characters (the regex \w+|[^\w\s]+).
type whitespacePreTokenizer struct{}

func (whitespacePreTokenizer) preTokenize(n *normString) []*normString {
	var ms []span
	s := n.s
	for i := 0; i < len(s); {
		r, sz := utf8.DecodeRuneInString(s[i:])
		if isWhitespace(r) && !isWordChar(r) {
			i += sz
			continue
		}
		word := isWordChar(r)
		j := i + sz
		for j < len(s) {
			r, sz := utf8.DecodeRuneInString(s[j:])
			if isWordChar(r) != word || !word && isWhitespace(r) {
				break
			}
			j += sz
		}
		ms = append(ms, span{i, j})
		i = j
	}
	return n.split(invertPieces(matchPieces(s, ms)), splitRemoved)
}

// whitespaceSplitPreTokenizer splits on white space and drops it.
type whitespaceSplitPreTokenizer struct{}

func (whitespaceSplitPreTokenizer) preTokenize(n *normString) []*normString {
	return n.split(runePieces(n.s, isWhitespace), splitRemoved)
}

// splitPreTokenizer splits on a literal or a regex.
type splitPreTokenizer struct {
	lit      string
	pattern  string // the regex as written, for ToGGUF
	re       regexFinder
	gpt2     bool
	behavior splitBehavior
	invert   bool
}

func parseSplit(o jsonObj) (splitPreTokenizer, error) {
	var sp splitPreTokenizer
	pat, isRegex, err := o.pattern("pattern")
	if err != nil {
		return sp, err
	}
	if sp.behavior, err = parseBehavior(o, "behavior", splitIsolated); err != nil {
		return sp, err
	}
	if !o.has("behavior") {
		return sp, fieldErr(o.field("behavior"), "missing")
	}
	if sp.invert, err = o.boolean("invert", false); err != nil {
		return sp, err
	}
	if isRegex {
		sp.pattern = pat
	}
	switch {
	case !isRegex:
		sp.lit = pat
	case pat == gpt2Pattern:
		sp.gpt2 = true
	default:
		if sp.re, err = compileRegex(pat); err != nil {
			return sp, fieldErr(o.field("pattern")+".Regex", "%v", err)
		}
	}
	return sp, nil
}

func (sp splitPreTokenizer) preTokenize(n *normString) []*normString {
	var ms []span
	switch {
	case sp.gpt2:
		ms = gpt2Matches(n.s)
	case sp.re != nil:
		ms = sp.re.findAll(n.s)
	default:
		ms = stringMatches(n.s, sp.lit)
	}
	p := matchPieces(n.s, ms)
	if sp.invert {
		p = invertPieces(p)
	}
	return n.split(p, sp.behavior)
}

// digitsPreTokenizer isolates digits, one by one or in runs.
type digitsPreTokenizer struct{ individual bool }

func (d digitsPreTokenizer) preTokenize(n *normString) []*normString {
	b := splitContiguous
	if d.individual {
		b = splitIsolated
	}
	return n.split(runePieces(n.s, unicode.IsNumber), b)
}

// punctuationPreTokenizer splits on punctuation runes.
type punctuationPreTokenizer struct{ behavior splitBehavior }

func (p punctuationPreTokenizer) preTokenize(n *normString) []*normString {
	return n.split(runePieces(n.s, isPunctuation), p.behavior)
}

// bertPreTokenizer splits on white space and isolates punctuation.
type bertPreTokenizer struct{}

func (bertPreTokenizer) preTokenize(n *normString) []*normString {
	parts := splitEach([]*normString{n}, func(m *normString) []*normString {
		return m.split(runePieces(m.s, isWhitespace), splitRemoved)
	})
	return splitEach(parts, func(m *normString) []*normString {
		return m.split(runePieces(m.s, isPunctuation), splitIsolated)
	})
}

// byteToRune is GPT-2's byte-to-unicode table: printable Latin-1 bytes
// stand for themselves, the others map to U+0100 onwards.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			b2r[b] = rune(b)
		} else {
			b2r[b] = 256 + n
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()
