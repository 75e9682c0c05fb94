package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
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
	re      *regexp.Regexp
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
	var out []span
	for _, m := range r.re.FindAllStringIndex(s, -1) {
		out = append(out, span{m[0], m[1]})
	}
	return out
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

// compileRegex compiles a pattern written for Oniguruma with Go's RE2.
// Oniguruma's \d, \s and \w are Unicode-aware where RE2's are ASCII, so
// they are rewritten as Unicode classes first. (The GPT-2 split pattern,
// which needs look-ahead, is recognised and handled by hand elsewhere.)
func compileRegex(pat string) (*regexp.Regexp, error) {
	return regexp.Compile(unicodeClasses(pat))
}

const reSpace = `\t\n\v\f\r \x{85}\p{Z}`

// onigClasses are Oniguruma's \w (outside and inside brackets) and \d
// spelled as RE2 class contents, built on first use.
var onigClasses = sync.OnceValue(func() [3]string {
	return [3]string{
		classOf(func(r rune) bool { return isOnigWord(r, false) }),
		classOf(func(r rune) bool { return isOnigWord(r, true) }),
		classOf(isOnigDigit),
	}
})

func reWord(inClass bool) string {
	if inClass {
		return onigClasses()[1]
	}
	return onigClasses()[0]
}

func reDigit() string { return onigClasses()[2] }

// classOf lists the runes for which is holds as RE2 class ranges.
func classOf(is func(rune) bool) string {
	var b strings.Builder
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !is(r) {
			continue
		}
		lo := r
		for r+1 <= unicode.MaxRune && is(r+1) {
			r++
		}
		if lo == r {
			fmt.Fprintf(&b, `\x{%X}`, lo)
		} else {
			fmt.Fprintf(&b, `\x{%X}-\x{%X}`, lo, r)
		}
	}
	return b.String()
}

// unicodeClasses rewrites \d, \s and \w (and their negations) as Unicode
// classes. A negated escape inside a bracket class, which RE2 cannot
// express there, turns the class into an alternation.
func unicodeClasses(pat string) string {
	var b strings.Builder
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch {
		case c == '\\' && i+1 < len(pat):
			i++
			switch pat[i] {
			case 'd':
				b.WriteString("[" + reDigit() + "]")
			case 'D':
				b.WriteString("[^" + reDigit() + "]")
			case 's':
				b.WriteString("[" + reSpace + "]")
			case 'S':
				b.WriteString("[^" + reSpace + "]")
			case 'w':
				b.WriteString("[" + reWord(false) + "]")
			case 'W':
				b.WriteString("[^" + reWord(false) + "]")
			default:
				b.WriteByte('\\')
				b.WriteByte(pat[i])
			}
		case c == '[':
			end, class := bracketClass(pat, i)
			b.WriteString(class)
			i = end
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// bracketClass rewrites the class that opens at pat[i] and returns the
// index of its closing ']'.
func bracketClass(pat string, i int) (int, string) {
	j := i + 1
	negated := j < len(pat) && pat[j] == '^'
	if negated {
		j++
	}
	var items strings.Builder
	var excluded []string // classes of the negated escapes
	var escapes []byte    // and the escapes themselves
	first := true
	for ; j < len(pat); j++ {
		c := pat[j]
		if c == ']' && !first {
			break
		}
		first = false
		switch {
		case c == '\\' && j+1 < len(pat):
			j++
			switch pat[j] {
			case 'd':
				items.WriteString(reDigit())
			case 's':
				items.WriteString(reSpace)
			case 'w':
				items.WriteString(reWord(true))
			case 'D':
				excluded, escapes = append(excluded, reDigit()), append(escapes, 'D')
			case 'S':
				excluded, escapes = append(excluded, reSpace), append(escapes, 'S')
			case 'W':
				excluded, escapes = append(excluded, reWord(true)), append(escapes, 'W')
			default:
				items.WriteByte('\\')
				items.WriteByte(pat[j])
			}
		case c == '[' && j+1 < len(pat) && pat[j+1] == ':':
			// A POSIX class such as [:alpha:] passes through.
			k := strings.Index(pat[j:], ":]")
			if k < 0 {
				items.WriteByte(c)
				continue
			}
			items.WriteString(pat[j : j+k+2])
			j += k + 1
		default:
			items.WriteByte(c)
		}
	}
	if j >= len(pat) {
		// Unterminated: leave it for the compiler to report.
		return len(pat) - 1, pat[i:]
	}
	if len(excluded) == 0 || negated {
		prefix := "["
		if negated {
			prefix = "[^"
		}
		// [^…\W] cannot be written in RE2: these keep their ASCII meaning.
		for _, e := range escapes {
			items.WriteByte('\\')
			items.WriteByte(e)
		}
		return j, prefix + items.String() + "]"
	}
	alts := make([]string, 0, len(excluded)+1)
	if items.Len() > 0 {
		alts = append(alts, "["+items.String()+"]")
	}
	for _, x := range excluded {
		alts = append(alts, "[^"+x+"]")
	}
	return j, "(?:" + strings.Join(alts, "|") + ")"
}
