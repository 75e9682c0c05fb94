package data

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// PyFunction is one function definition found in Python source by
// ParsePython: where it is, its signature, its docstring and its body.
type PyFunction struct {
	// Name is the function's name; Line the 1-based line of its def (after
	// any decorators), EndLine the last line of its body.
	Name          string
	Line, EndLine int
	// Async is set for `async def`.
	Async bool
	// Indent is the whitespace before def (methods and nested functions
	// have some).
	Indent string
	// Signature is the decorators and the def header, as written (several
	// lines when the parameters span several), less Indent.
	Signature string
	// Docstring is the docstring's value cleaned as Python's
	// inspect.cleandoc cleans it (what ast.get_docstring returns); empty
	// when the function has none. RawDocstring is its literal as written,
	// less Indent.
	Docstring, RawDocstring string
	// Body is the function's statements after the docstring, as written,
	// less Indent; trailing blank lines are dropped.
	Body string
	// BodyLines counts Body's non-blank lines.
	BodyLines int
}

// ParsePython finds every function definition in Python source — at any
// indentation (methods, nested functions), with decorators, signatures
// over several lines, and docstrings in any quote style — in source
// order. It is a lexical reader, not a full parser: it tracks strings,
// comments, brackets and line continuations to find logical lines and
// their indentation, which is what function boundaries depend on. A
// one-line function (`def f(): return 1`) is skipped; source that is not
// valid Python yields what can be recognised, without error.
func ParsePython(src string) []PyFunction {
	src = strings.TrimPrefix(src, "\ufeff")
	src = strings.ReplaceAll(src, "\r\n", "\n")
	lines := logicalLines(src)
	phys := strings.Split(src, "\n")
	var out []PyFunction
	for i, ll := range lines {
		if ll.blank() {
			continue
		}
		if f, ok := parseDef(src, phys, lines, i); ok {
			out = append(out, f)
		}
	}
	return out
}

// pyTokKind is the kind of a token of the lexical reader.
type pyTokKind uint8

const (
	tokName pyTokKind = iota // identifiers, keywords and numbers
	tokString
	tokOp // one punctuation character
	tokComment
)

// pyTok is one token: its kind, its byte range in the source and the
// bracket depth before it.
type pyTok struct {
	kind       pyTokKind
	start, end int
	depth      int
}

// logical is one logical line: its first and last physical lines
// (0-based), the leading whitespace of its first line and its tokens.
type logical struct {
	first, last int
	indent      string
	toks        []pyTok
}

// blank reports whether the line holds no code (only a comment or
// nothing).
func (l logical) blank() bool {
	for _, t := range l.toks {
		if t.kind != tokComment {
			return false
		}
	}
	return true
}

// code returns the tokens that are not comments.
func (l logical) code() []pyTok {
	var out []pyTok
	for _, t := range l.toks {
		if t.kind != tokComment {
			out = append(out, t)
		}
	}
	return out
}

// logicalLines splits source into logical lines: a newline ends one unless
// it is inside brackets or a string, or follows a backslash.
func logicalLines(src string) []logical {
	var out []logical
	line := 0
	cur := logical{first: 0}
	atStart := true // at the start of a logical line: read the indent
	depth := 0
	i := 0
	for i < len(src) {
		if atStart {
			j := i
			for j < len(src) && (src[j] == ' ' || src[j] == '\t' || src[j] == '\f') {
				j++
			}
			cur.indent = src[i:j]
			i = j
			atStart = false
			continue
		}
		c := src[i]
		switch {
		case c == '\n':
			if depth > 0 {
				line++
				i++
				continue
			}
			cur.last = line
			out = append(out, cur)
			line++
			i++
			cur = logical{first: line}
			atStart = true
		case c == ' ' || c == '\t' || c == '\f':
			i++
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			line++
			i += 2
		case c == '#':
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = len(src) - i
			}
			cur.toks = append(cur.toks, pyTok{kind: tokComment, start: i, end: i + j, depth: depth})
			i += j
		case c == '"' || c == '\'':
			end, nl := scanString(src, i, i)
			cur.toks = append(cur.toks, pyTok{kind: tokString, start: i, end: end, depth: depth})
			line += nl
			i = end
		case isNameByte(c):
			j := i
			for j < len(src) && isNameByte(src[j]) {
				j++
			}
			if j < len(src) && (src[j] == '"' || src[j] == '\'') && isStringPrefix(src[i:j]) {
				end, nl := scanString(src, i, j)
				cur.toks = append(cur.toks, pyTok{kind: tokString, start: i, end: end, depth: depth})
				line += nl
				i = end
				continue
			}
			cur.toks = append(cur.toks, pyTok{kind: tokName, start: i, end: j, depth: depth})
			i = j
		default:
			switch c {
			case '(', '[', '{':
				cur.toks = append(cur.toks, pyTok{kind: tokOp, start: i, end: i + 1, depth: depth})
				depth++
				i++
				continue
			case ')', ']', '}':
				depth = max(depth-1, 0)
			}
			cur.toks = append(cur.toks, pyTok{kind: tokOp, start: i, end: i + 1, depth: depth})
			i++
		}
	}
	if !atStart || len(cur.toks) > 0 {
		cur.last = line
		out = append(out, cur)
	}
	return out
}

// isNameByte reports whether c continues an identifier or number; bytes
// of multi-byte UTF-8 characters count (Python allows Unicode names).
func isNameByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// isStringPrefix reports whether p may prefix a string literal.
func isStringPrefix(p string) bool {
	switch strings.ToLower(p) {
	case "r", "u", "b", "f", "br", "rb", "fr", "rf":
		return true
	}
	return false
}

// scanString reads the string literal whose prefix starts at start and
// whose quotes start at q; it returns the end offset and the number of
// newlines inside. An unterminated single-quoted string ends at the end of
// its line, an unterminated triple-quoted one at the end of the source.
func scanString(src string, start, q int) (end, newlines int) {
	quote := src[q]
	triple := q+2 < len(src) && src[q+1] == quote && src[q+2] == quote
	i := q + 1
	if triple {
		i = q + 3
	}
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\\':
			if i+1 < len(src) && src[i+1] == '\n' {
				newlines++
			}
			i += 2
			continue
		case c == '\n':
			if !triple {
				return i, newlines
			}
			newlines++
		case c == quote:
			if !triple {
				return i + 1, newlines
			}
			if i+2 < len(src) && src[i+1] == quote && src[i+2] == quote {
				return i + 3, newlines
			}
		}
		i++
	}
	return len(src), newlines
}

// parseDef reads the function defined at logical line i, if it is a def.
func parseDef(src string, phys []string, lines []logical, i int) (PyFunction, bool) {
	ll := lines[i]
	code := ll.code()
	word := func(t pyTok) string { return src[t.start:t.end] }
	k := 0
	f := PyFunction{Indent: ll.indent, Line: ll.first + 1}
	if len(code) > 0 && code[0].kind == tokName && word(code[0]) == "async" {
		f.Async = true
		k = 1
	}
	if len(code) < k+3 || code[k].kind != tokName || word(code[k]) != "def" || code[k+1].kind != tokName {
		return f, false
	}
	f.Name = word(code[k+1])
	if c := f.Name[0]; c >= '0' && c <= '9' {
		return f, false
	}
	// The header ends at the first colon outside brackets; anything after
	// it is a one-line body.
	colon := -1
	for j := k + 2; j < len(code); j++ {
		if code[j].kind == tokOp && code[j].depth == 0 && word(code[j]) == ":" {
			colon = j
			break
		}
	}
	if colon < 0 || colon != len(code)-1 {
		return f, false
	}
	// Decorators: the logical lines just above at the same indentation
	// that start with @.
	sigFirst := ll.first
	for j := i - 1; j >= 0; j-- {
		c := lines[j].code()
		if len(c) == 0 || lines[j].indent != ll.indent || word(c[0]) != "@" {
			break
		}
		sigFirst = lines[j].first
	}
	f.Signature = dedentLines(phys[sigFirst:ll.last+1], f.Indent)
	// The body: following logical lines indented deeper than the def;
	// lines without code do not end it.
	width := indentWidth(ll.indent)
	bodyFirst, bodyLast := -1, -1
	for j := i + 1; j < len(lines); j++ {
		if lines[j].blank() {
			continue
		}
		if indentWidth(lines[j].indent) <= width {
			break
		}
		if bodyFirst < 0 {
			bodyFirst = j
		}
		bodyLast = j
	}
	if bodyFirst < 0 {
		return f, false
	}
	f.EndLine = lines[bodyLast].last + 1
	rest := lines[bodyFirst].first // first physical line of the body proper
	if doc, ok := docstring(src, lines[bodyFirst]); ok {
		f.Docstring = cleanDoc(doc)
		f.RawDocstring = dedentLines(phys[lines[bodyFirst].first:lines[bodyFirst].last+1], f.Indent)
		rest = lines[bodyFirst].last + 1
	}
	if rest <= lines[bodyLast].last {
		f.Body = dedentLines(phys[rest:lines[bodyLast].last+1], f.Indent)
	}
	f.Body = strings.TrimLeft(strings.TrimRight(f.Body, " \t\n"), "\n")
	for _, l := range strings.Split(f.Body, "\n") {
		if strings.TrimSpace(l) != "" {
			f.BodyLines++
		}
	}
	return f, true
}

// indentWidth is the column of the first character after the indentation,
// tabs advancing to the next multiple of 8 as Python counts them.
func indentWidth(s string) int {
	w := 0
	for _, c := range s {
		if c == '\t' {
			w = (w/8 + 1) * 8
		} else {
			w++
		}
	}
	return w
}

// dedentLines joins physical lines, removing prefix from those that start
// with it (lines inside multi-line strings may not).
func dedentLines(lines []string, prefix string) string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimPrefix(l, prefix)
	}
	return strings.Join(out, "\n")
}

// docstring returns the value of a logical line that is only string
// literals (a docstring when it is a function's first statement). Bytes
// and f-strings are not docstrings.
func docstring(src string, ll logical) (string, bool) {
	code := ll.code()
	if len(code) == 0 {
		return "", false
	}
	var b strings.Builder
	for _, t := range code {
		if t.kind != tokString {
			return "", false
		}
		v, ok := stringValue(src[t.start:t.end])
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// stringValue decodes a string literal (prefix, quotes, escapes); ok is
// false for bytes, f-strings and unterminated literals.
func stringValue(lit string) (string, bool) {
	q := strings.IndexAny(lit, `"'`)
	if q < 0 {
		return "", false
	}
	prefix := strings.ToLower(lit[:q])
	if strings.ContainsAny(prefix, "bf") {
		return "", false
	}
	raw := strings.Contains(prefix, "r")
	quote := lit[q : q+1]
	if triple := strings.Repeat(quote, 3); strings.HasPrefix(lit[q:], triple) {
		if len(lit)-q < 6 || !strings.HasSuffix(lit, triple) {
			return "", false // unterminated
		}
		quote = triple
	}
	body := lit[q:]
	if len(body) < 2*len(quote) || !strings.HasSuffix(body, quote) {
		return "", false
	}
	body = body[len(quote) : len(body)-len(quote)]
	if raw {
		return body, true
	}
	return unescape(body), true
}

// unescape applies Python's escape sequences of str literals; unknown
// escapes keep their backslash, as Python does.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case '\n':
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i
			for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			v, _ := strconv.ParseUint(s[i:j], 8, 32)
			b.WriteRune(rune(v))
			i = j - 1
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if v, err := strconv.ParseUint(s[min(i+1, len(s)):min(i+1+n, len(s))], 16, 32); err == nil && i+n < len(s) && utf8.ValidRune(rune(v)) {
				b.WriteRune(rune(v))
				i += n
			} else {
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return b.String()
}

// cleanDoc cleans a docstring as inspect.cleandoc does: tabs expanded,
// the first line's leading blanks removed, the other lines' common
// indentation removed, and blank lines at both ends dropped.
func cleanDoc(doc string) string {
	lines := strings.Split(expandTabs(doc), "\n")
	margin := -1
	for _, l := range lines[1:] {
		content := strings.TrimLeft(l, pySpace)
		if content == "" {
			continue
		}
		if ind := len(l) - len(content); margin < 0 || ind < margin {
			margin = ind
		}
	}
	lines[0] = strings.TrimLeft(lines[0], pySpace)
	if margin > 0 {
		for i := 1; i < len(lines); i++ {
			lines[i] = lines[i][min(margin, len(lines[i])):]
		}
	}
	// Python drops only empty lines at the ends, not whitespace-only ones.
	for len(lines) > 0 && lines[0] == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}

// pySpace is the ASCII whitespace Python's str.lstrip removes.
const pySpace = " \t\n\r\f\v\x1c\x1d\x1e\x1f"

// expandTabs replaces tabs with spaces to the next multiple of 8, column
// counting restarting at every newline, as str.expandtabs does.
func expandTabs(s string) string {
	if !strings.Contains(s, "\t") {
		return s
	}
	var b strings.Builder
	col := 0
	for _, r := range s {
		switch r {
		case '\t':
			n := 8 - col%8
			b.WriteString(strings.Repeat(" ", n))
			col += n
		case '\n', '\r':
			b.WriteRune(r)
			col = 0
		default:
			b.WriteRune(r)
			col++
		}
	}
	return b.String()
}
