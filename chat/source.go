package chat

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The template source is lexed here, before the Jinja library sees it,
// because the library's own whitespace handling differs from Jinja's (it
// applies trim_blocks and lstrip_blocks to the nearest text even across an
// expression, strips mid-line spaces before the first block, ignores the
// + modifiers and Unicode spaces) and its string literals know only five
// escapes. prepare applies Jinja's rules itself (newline normalisation,
// the dropped trailing newline, -/+ modifiers, trim_blocks, lstrip_blocks,
// comments) and hands the library a template without text or comments:
// every piece of text becomes a {{ '…' }} expression and every string
// literal is re-spelled with escapes the library reads as Jinja does. The
// library's trimming then has nothing to act on.

// segKind is what a piece of the source is.
type segKind int

const (
	segText    segKind = iota
	segExpr            // {{ … }}
	segStmt            // {% … %}
	segComment         // {# … #}
)

// segment is one piece of the source: text, or a tag with its body (the
// part between the delimiters and the modifiers) and its whitespace
// modifiers ('-', '+' or 0) on each side.
type segment struct {
	kind        segKind
	text        string
	left, right byte
	line        int
}

// syntaxError is a template the lexer rejects, with the line (1-based) of
// the tag at fault.
type syntaxError struct {
	Line int
	Msg  string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// normalize does what Jinja's lexer does to a source before anything else:
// \r\n and \r become \n, and one trailing newline is dropped
// (keep_trailing_newline=False).
func normalize(src string) string {
	src = strings.ReplaceAll(src, "\r\n", "\n")
	src = strings.ReplaceAll(src, "\r", "\n")
	return strings.TrimSuffix(src, "\n")
}

// lex cuts a normalized source into text and tags. Inside {{ }} and {% %}
// quoted strings may hold the closing delimiter; comments end at the first
// #}.
func lex(src string) ([]segment, error) {
	var segs []segment
	line, textStart := 1, 0
	for i := 0; i < len(src); {
		if src[i] != '{' || i+1 >= len(src) || strings.IndexByte("{%#", src[i+1]) < 0 {
			if src[i] == '\n' {
				line++
			}
			i++
			continue
		}
		if i > textStart {
			segs = append(segs, segment{kind: segText, text: src[textStart:i], line: line - strings.Count(src[textStart:i], "\n")})
		}
		kind, closer := segExpr, "}}"
		switch src[i+1] {
		case '%':
			kind, closer = segStmt, "%}"
		case '#':
			kind, closer = segComment, "#}"
		}
		tagLine := line
		i += 2
		seg := segment{kind: kind, line: tagLine}
		if i < len(src) && (src[i] == '-' || src[i] == '+') {
			seg.left = src[i]
			i++
		}
		start, found := i, false
		for i < len(src) {
			c := src[i]
			if kind != segComment && (c == '\'' || c == '"') {
				end := skipString(src, i)
				line += strings.Count(src[i:end], "\n")
				i = end
				continue
			}
			if strings.HasPrefix(src[i:], closer) {
				body := src[start:i]
				if n := len(body); n > 0 && (body[n-1] == '-' || body[n-1] == '+' && kind != segExpr) {
					seg.right, body = body[n-1], body[:n-1]
				}
				seg.text = body
				i += 2
				found = true
				break
			}
			if c == '\n' {
				line++
			}
			i++
		}
		if !found {
			return nil, &syntaxError{tagLine, fmt.Sprintf("%s opened here is never closed by %s", src[start-2-btoi(seg.left != 0):start], closer)}
		}
		segs = append(segs, seg)
		textStart = i
	}
	if textStart < len(src) {
		segs = append(segs, segment{kind: segText, text: src[textStart:], line: line - strings.Count(src[textStart:], "\n")})
	}
	return segs, nil
}

// skipString returns the index just past the quoted string that starts at
// src[i] (or len(src) when it is not closed).
func skipString(src string, i int) int {
	q := src[i]
	for i++; i < len(src); i++ {
		switch src[i] {
		case '\\':
			i++
		case q:
			return i + 1
		}
	}
	return len(src)
}

// applyWhitespace applies Jinja's whitespace control as transformers
// configures it (trim_blocks=True, lstrip_blocks=True) to the text
// segments, in place: a '-' strips all whitespace on its side; otherwise a
// block or comment tag strips the spaces before it when only whitespace
// stands between it and the start of its line (lstrip_blocks, unless
// '{%+'), and one newline after it (trim_blocks, unless '+%}').
func applyWhitespace(segs []segment) {
	lineStarting := true // what Jinja's lexer calls line_starting
	for i := range segs {
		s := &segs[i]
		if s.kind != segText {
			lineStarting = false
			if s.right == '-' || s.right == 0 && s.kind != segExpr {
				// The tag's own match ends with the newline that the next
				// text loses (below); that is when Jinja's next line starts.
				if i+1 < len(segs) && segs[i+1].kind == segText {
					if s.right == '-' {
						t := segs[i+1].text
						lineStarting = strings.HasSuffix(t[:len(t)-len(trimLeftSpace(t))], "\n")
					} else {
						lineStarting = strings.HasPrefix(segs[i+1].text, "\n")
					}
				}
			}
			continue
		}
		if i > 0 {
			prev := segs[i-1]
			switch {
			case prev.right == '-':
				s.text = trimLeftSpace(s.text)
			case prev.right == 0 && prev.kind != segExpr:
				s.text = strings.TrimPrefix(s.text, "\n")
			}
		}
		if i+1 < len(segs) {
			next := segs[i+1]
			switch {
			case next.left == '-':
				s.text = trimRightSpace(s.text)
			case next.left == 0 && next.kind != segExpr:
				lpos := strings.LastIndexByte(s.text, '\n') + 1
				if (lpos > 0 || lineStarting) && lpos < len(s.text) && allSpace(s.text[lpos:]) {
					s.text = s.text[:lpos]
				}
			}
		}
	}
}

// isSpace is Python's str.isspace for one character, which Jinja's \s
// patterns and str.strip follow.
func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

func allSpace(s string) bool {
	for _, r := range s {
		if !isSpace(r) {
			return false
		}
	}
	return true
}

func trimLeftSpace(s string) string  { return strings.TrimLeftFunc(s, isSpace) }
func trimRightSpace(s string) string { return strings.TrimRightFunc(s, isSpace) }

// quote spells s as a string literal the library reads back exactly: only
// the backslash, the quote and the newline are escaped, with escapes it
// knows.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString(`\'`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// respellStrings rewrites the string literals in a tag's body so that the
// library reads each as Jinja reads it (Python's unicode-escape codec:
// \r, \xhh, \uhhhh, octal, a backslash before a newline, …).
func respellStrings(body string, line int) (string, error) {
	if !strings.ContainsAny(body, `'"`) {
		return body, nil
	}
	var b strings.Builder
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\'' && c != '"' {
			b.WriteByte(c)
			i++
			continue
		}
		end := skipString(body, i)
		if end > len(body) || end-i < 2 || body[end-1] != c {
			return "", &syntaxError{line, "a string literal is not closed"}
		}
		v, err := unescape(body[i+1 : end-1])
		if err != nil {
			return "", &syntaxError{line + strings.Count(body[:i], "\n"), err.Error()}
		}
		b.WriteString(quote(v))
		i = end
	}
	return b.String(), nil
}

// unescape reads the inside of a Jinja string literal as Jinja does:
// value.encode("ascii", "backslashreplace").decode("unicode-escape").
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			i++
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf(`a string literal ends with a lone backslash`)
		}
		c := s[i+1]
		i += 2
		switch c {
		case '\n':
		case '\\', '\'', '"':
			b.WriteByte(c)
		case 'a':
			b.WriteByte(7)
		case 'b':
			b.WriteByte(8)
		case 'f':
			b.WriteByte(12)
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte(11)
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n, j := int(c-'0'), 0
			for ; j < 2 && i < len(s) && s[i] >= '0' && s[i] <= '7'; j++ {
				n = n*8 + int(s[i]-'0')
				i++
			}
			b.WriteRune(rune(n))
		case 'x', 'u', 'U':
			digits := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			if i+digits > len(s) {
				return "", fmt.Errorf(`a string literal has a truncated \%c escape`, c)
			}
			n, err := strconv.ParseUint(s[i:i+digits], 16, 32)
			if err != nil {
				return "", fmt.Errorf(`a string literal has a truncated \%c escape`, c)
			}
			r := rune(n)
			if r > utf8.MaxRune || r >= 0xd800 && r < 0xe000 {
				return "", fmt.Errorf(`a string literal escapes %s, which is not a character UTF-8 can hold`, s[i-2:i+digits])
			}
			b.WriteRune(r)
			i += digits
		case 'N':
			return "", fmt.Errorf(`\N{…} escapes (characters by name) are not supported`)
		default:
			if c >= utf8.RuneSelf {
				// Python sees the backslash, then the character spelled by
				// backslashreplace, which it reads as text.
				r, size := utf8.DecodeRuneInString(s[i-1:])
				i += size - 1
				b.WriteByte('\\')
				switch {
				case r < 0x100:
					fmt.Fprintf(&b, `x%02x`, r)
				case r < 0x10000:
					fmt.Fprintf(&b, `u%04x`, r)
				default:
					fmt.Fprintf(&b, `U%08x`, r)
				}
				continue
			}
			b.WriteByte('\\')
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// prepare turns a chat template's source into the equivalent template the
// library renders exactly; unsupported constructs are errors.
func prepare(src string) (string, error) {
	segs, err := lex(normalize(src))
	if err != nil {
		return "", err
	}
	applyWhitespace(segs)
	var b strings.Builder
	line := 1 // of the output, kept level with the source's so that the library's errors name source lines
	emit := func(s segment, out string) {
		if s.line > line {
			b.WriteString("{{''" + strings.Repeat("\n", s.line-line) + "}}")
			line = s.line
		}
		b.WriteString(out)
		line += strings.Count(out, "\n")
	}
	for _, s := range segs {
		switch s.kind {
		case segText:
			if s.text != "" {
				emit(s, "{{ "+quote(s.text)+" }}")
			}
		case segComment:
		case segExpr, segStmt:
			if s.kind == segStmt {
				switch keyword(s.text) {
				case "raw", "endraw":
					return "", &syntaxError{s.line, "{% raw %} blocks are not supported"}
				}
			}
			body, err := respellStrings(s.text, s.line)
			if err != nil {
				return "", err
			}
			if hasWord(body, "sort_keys") {
				return "", &syntaxError{s.line, "tojson's sort_keys is not supported"}
			}
			if s.kind == segExpr {
				emit(s, "{{"+body+"}}")
			} else {
				emit(s, "{%"+body+"%}")
			}
		}
	}
	return b.String(), nil
}

// keyword is the first word of a statement's body.
func keyword(body string) string {
	body = strings.TrimLeftFunc(body, isSpace)
	end := strings.IndexFunc(body, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') })
	if end < 0 {
		end = len(body)
	}
	return body[:end]
}

// hasWord reports whether name appears in body outside string literals
// as a whole identifier.
func hasWord(body, name string) bool {
	for i := 0; i < len(body); {
		switch c := body[i]; {
		case c == '\'' || c == '"':
			i = skipString(body, i)
		case strings.HasPrefix(body[i:], name) && (i == 0 || !isIdent(body[i-1])) && (i+len(name) == len(body) || !isIdent(body[i+len(name)])):
			return true
		default:
			i++
		}
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
