package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"unicode"
	"unicode/utf8"
)

// normalizer rewrites a piece of text before it is split into words.
type normalizer interface {
	normalize(n *normString)
}

var supportedNormalizers = []string{"Sequence", "Prepend", "Replace", "Strip", "Lowercase", "Precompiled", "ByteLevel"}

func parseNormalizer(path string, raw json.RawMessage) (normalizer, error) {
	o, typ, err := decodeComponent(path, raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(o, "normalizers", parseNormalizer)
		if err != nil {
			return nil, err
		}
		return sequenceNormalizer(seq), nil
	case "Prepend":
		p, err := o.str("prepend", "")
		if err != nil {
			return nil, err
		}
		return prependNormalizer(p), nil
	case "Replace":
		return parseReplace(o)
	case "Strip":
		l, err := o.boolean("strip_left", true)
		if err != nil {
			return nil, err
		}
		r, err := o.boolean("strip_right", true)
		if err != nil {
			return nil, err
		}
		return stripNormalizer{l, r}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "ByteLevel":
		return byteLevelNormalizer{}, nil
	case "Precompiled":
		s, err := o.str("precompiled_charsmap", "")
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fieldErr(o.field("precompiled_charsmap"), "not valid base64: %v", err)
		}
		p, err := parsePrecompiled(b)
		if err != nil {
			return nil, fieldErr(o.field("precompiled_charsmap"), "%v", err)
		}
		return p, nil
	}
	return nil, unsupported(o.field("type"), "normalizer", typ, supportedNormalizers)
}

// sequenceNormalizer applies its normalizers in order.
type sequenceNormalizer []normalizer

func (s sequenceNormalizer) normalize(n *normString) {
	for _, x := range s {
		x.normalize(n)
	}
}

// prependNormalizer puts a string in front of non-empty text (Llama 2's "▁").
type prependNormalizer string

func (p prependNormalizer) normalize(n *normString) { n.prepend(string(p)) }

// replaceNormalizer replaces a literal string or every regex match.
type replaceNormalizer struct {
	lit     string
	re      regexFinder
	content string
}

func parseReplace(o jsonObj) (replaceNormalizer, error) {
	pat, isRegex, err := o.pattern("pattern")
	if err != nil {
		return replaceNormalizer{}, err
	}
	content, err := o.str("content", "")
	if err != nil {
		return replaceNormalizer{}, err
	}
	r := replaceNormalizer{lit: pat, content: content}
	if isRegex {
		re, err := compileRegex(pat)
		if err != nil {
			return replaceNormalizer{}, fieldErr(o.field("pattern")+".Regex", "%v", err)
		}
		r.re = re
	}
	return r, nil
}

func (r replaceNormalizer) matches(s string) []span {
	if r.re == nil {
		return stringMatches(s, r.lit)
	}
	return r.re.findAll(s)
}

func (r replaceNormalizer) normalize(n *normString) { n.replaceMatches(r.matches(n.s), r.content) }

// replaceString replaces text in a decoded token the same way.
func (r replaceNormalizer) replaceString(s string) string {
	ms := r.matches(s)
	if len(ms) == 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	prev := 0
	for _, m := range ms {
		out = append(out, s[prev:m.start]...)
		out = append(out, r.content...)
		prev = m.end
	}
	return string(append(out, s[prev:]...))
}

// stripNormalizer removes white space at either end.
type stripNormalizer struct{ left, right bool }

func (s stripNormalizer) normalize(n *normString) { n.lrstrip(s.left, s.right) }

// lowercaseNormalizer lowercases rune by rune, as Rust's char::to_lowercase.
type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(n *normString) {
	dest := make([]edit, 0, len(n.s))
	for _, r := range n.s {
		if r == 'İ' {
			dest = append(dest, edit{'i', 0}, edit{'\u0307', 1})
			continue
		}
		dest = append(dest, edit{unicode.ToLower(r), 0})
	}
	n.transform(dest, 0)
}

// byteLevelNormalizer maps every byte to its printable stand-in.
type byteLevelNormalizer struct{}

func (byteLevelNormalizer) normalize(n *normString) { byteLevelTransform(n) }

// byteLevelTransform rewrites each byte as the rune GPT-2 uses for it. The
// first byte of a character replaces it and the others are insertions, so
// they take the alignment of the character's first and last byte.
func byteLevelTransform(n *normString) {
	b := make([]byte, 0, 2*len(n.s))
	align := make([]span, 0, 2*len(n.s))
	for i := 0; i < len(n.s); {
		_, sz := utf8.DecodeRuneInString(n.s[i:])
		for k := 0; k < sz; k++ {
			a := n.align[i]
			if k > 0 {
				a = n.align[i+sz-1]
			}
			before := len(b)
			b = utf8.AppendRune(b, byteToRune[n.s[i+k]])
			for range len(b) - before {
				align = append(align, a)
			}
		}
		i += sz
	}
	n.s = string(b)
	n.align = align
}
