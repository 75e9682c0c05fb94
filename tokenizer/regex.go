package tokenizer

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// The tokenizers library runs the regexes of tokenizer.json files
// (Split pre-tokenizers, Replace normalizers and decoders) with Oniguruma
// in its Ruby syntax: a backtracking engine with look-ahead, look-behind,
// atomic groups and possessive quantifiers, where ^ and $ match at line
// boundaries. Go's RE2 has none of these, and the split patterns of Llama 3,
// Qwen2 and GPT-4-style tokenizers need \s+(?!\S). onigRegex is a small
// backtracking matcher for the syntax those patterns use, with Oniguruma's
// semantics and its (older) Unicode tables for \p{L}, \p{N}, \d, \s and \w.

// regexFinder finds the successive non-overlapping matches of a regex.
type regexFinder interface {
	findAll(s string) []span
}

// compileRegex compiles a pattern written for Oniguruma. Syntax the
// matcher lacks (back-references, \K, \X, extended mode) is an error.
func compileRegex(pat string) (regexFinder, error) {
	re, err := compileOnig(pat)
	if err != nil {
		return nil, err
	}
	return re, nil
}

// onigRegex is a compiled pattern.
type onigRegex struct{ prog reMatcher }

// reState is one search: the subject, and the bookkeeping the compiled
// matchers share while they backtrack.
type reState struct {
	s           string
	end         int // where the whole match ended
	searchStart int // \G
	loops       []loopFrame
	behindEnd   int // where a look-behind must end
	atomicEnd   int // where an atomic group ended
	steps       int // backtracking steps taken by this search
	gaveUp      bool
}

// reStepLimit bounds the backtracking of one search, as Oniguruma's
// retry limit (10 million) does: patterns such as (a|a)*b take
// exponential time. A search that reaches it finds nothing more, so the
// rest of the text stays unsplit (Oniguruma fails the whole call).
const reStepLimit = 10_000_000

// step counts one backtracking step and reports whether the search may go on.
func (st *reState) step() bool {
	st.steps++
	if st.steps > reStepLimit {
		st.gaveUp = true
	}
	return !st.gaveUp
}

type loopFrame struct{ count, start int }

// reMatcher tries to match from byte i; the continuation it was compiled
// with runs the rest of the pattern, so returning false means "backtrack".
type reMatcher func(st *reState, i int) bool

// compileOnig parses and compiles pat, or explains why it cannot.
func compileOnig(pat string) (*onigRegex, error) {
	p := &reParser{src: pat}
	n, err := p.parseAlt()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.src) {
		return nil, fmt.Errorf("regex %q: unmatched ')' at offset %d", pat, p.pos)
	}
	c := &reCompiler{}
	prog := c.compile(n, func(st *reState, i int) bool {
		st.end = i
		return true
	})
	if c.err != nil {
		return nil, fmt.Errorf("regex %q: %v", pat, c.err)
	}
	return &onigRegex{prog: prog}, nil
}

// find returns the leftmost match that starts at or after from.
func (re *onigRegex) find(st *reState, from int) (int, int, bool) {
	st.searchStart, st.steps = from, 0
	for i := from; i <= len(st.s); {
		st.loops = st.loops[:0]
		if re.prog(st, i) {
			return i, st.end, true
		}
		if st.gaveUp || i == len(st.s) {
			break
		}
		i += runeWidth(st.s, i)
	}
	return 0, 0, false
}

// findAll lists the matches as the onig crate's find_iter does: each search
// starts where the last match ended, and an empty match right after the
// previous match is skipped.
func (re *onigRegex) findAll(s string) []span {
	st := &reState{s: s}
	var out []span
	last, prevEnd := 0, -1
	for last <= len(s) {
		start, end, ok := re.find(st, last)
		if !ok {
			break
		}
		if start == end && end == prevEnd {
			if last >= len(s) {
				break
			}
			last += runeWidth(s, last)
			continue
		}
		out = append(out, span{start, end})
		last, prevEnd = end, end
	}
	return out
}

func runeWidth(s string, i int) int {
	if s[i] < utf8.RuneSelf {
		return 1
	}
	_, sz := utf8.DecodeRuneInString(s[i:])
	return sz
}

func decodeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// The syntax tree.

type reNode interface{}

type (
	reSeq    []reNode
	reAlt    []reNode
	reAssert byte // ^ $ A z Z b B G
	reRepeat struct {
		sub              reNode
		min, max         int // max -1: unbounded
		lazy, possessive bool
	}
	reLook struct {
		sub         reNode
		behind, neg bool
	}
	reAtomic struct{ sub reNode }
)

// runeClass is a set of runes: a union of items, intersected with the
// classes after &&, maybe negated, maybe case-insensitive.
type runeClass struct {
	items []func(rune) bool
	and   []*runeClass
	neg   bool
	fold  bool
	lit   rune      // the rune of a one-rune class, or -1
	ascii [2]uint64 // membership of runes below 128, filled by seal
}

func (c *runeClass) base(r rune) bool {
	in := false
	for _, f := range c.items {
		if f(r) {
			in = true
			break
		}
	}
	if in {
		for _, a := range c.and {
			if !a.has(r) {
				in = false
				break
			}
		}
	}
	return in
}

func (c *runeClass) slow(r rune) bool {
	in := c.base(r)
	if !in && c.fold {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if c.base(f) {
				in = true
				break
			}
		}
	}
	return in != c.neg
}

// seal precomputes the ASCII table; the class must not change afterwards.
func (c *runeClass) seal() *runeClass {
	for r := rune(0); r < 128; r++ {
		if c.slow(r) {
			c.ascii[r>>6] |= 1 << (r & 63)
		}
	}
	return c
}

func (c *runeClass) has(r rune) bool {
	if r < 128 {
		return c.ascii[r>>6]&(1<<(r&63)) != 0
	}
	return c.slow(r)
}

func singleRune(r rune, fold bool) *runeClass {
	return (&runeClass{items: []func(rune) bool{func(x rune) bool { return x == r }}, fold: fold, lit: r}).seal()
}

func newClass(fold bool, items ...func(rune) bool) *runeClass {
	return &runeClass{items: items, fold: fold, lit: -1}
}

// The parser.

type reParser struct {
	src   string
	pos   int
	fold  bool // (?i)
	dotNL bool // (?m): in Ruby syntax, . matches a newline
}

func (p *reParser) errorf(format string, args ...any) error {
	return fmt.Errorf("regex %q: %s at offset %d", p.src, fmt.Sprintf(format, args...), p.pos)
}

func (p *reParser) more() bool { return p.pos < len(p.src) }

func (p *reParser) peek() byte { return p.src[p.pos] }

func (p *reParser) next() rune {
	r, sz := utf8.DecodeRuneInString(p.src[p.pos:])
	p.pos += sz
	return r
}

// parseAlt reads alternatives up to a ')' or the end.
func (p *reParser) parseAlt() (reNode, error) {
	var alts reAlt
	for {
		seq, err := p.parseSeq()
		if err != nil {
			return nil, err
		}
		alts = append(alts, seq)
		if !p.more() || p.peek() != '|' {
			break
		}
		p.pos++
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return alts, nil
}

func (p *reParser) parseSeq() (reNode, error) {
	var seq reSeq
	for p.more() {
		c := p.peek()
		if c == '|' || c == ')' {
			break
		}
		atom, rest, err := p.parseAtom()
		if err != nil {
			return nil, err
		}
		if rest {
			// An isolated option such as (?i) takes the rest of the group.
			seq = append(seq, atom)
			break
		}
		if atom == nil {
			continue
		}
		if atom, err = p.parseQuantifiers(atom); err != nil {
			return nil, err
		}
		seq = append(seq, atom)
	}
	if len(seq) == 1 {
		return seq[0], nil
	}
	return seq, nil
}

func isQuantifier(c byte) bool { return c == '?' || c == '*' || c == '+' || c == '{' }

func (p *reParser) parseQuantifiers(atom reNode) (reNode, error) {
	for p.more() && isQuantifier(p.peek()) {
		if _, ok := atom.(reAssert); ok {
			return nil, p.errorf("target of repeat operator is invalid")
		}
		start := p.pos
		var rep reRepeat
		interval := false
		switch p.src[p.pos] {
		case '?':
			rep.min, rep.max = 0, 1
		case '*':
			rep.min, rep.max = 0, -1
		case '+':
			rep.min, rep.max = 1, -1
		case '{':
			lo, hi, n, ok := parseInterval(p.src[p.pos:])
			if !ok {
				return atom, nil // a literal '{', read by the next atom
			}
			rep.min, rep.max = lo, hi
			p.pos += n - 1
			interval = true
		}
		p.pos++
		if p.more() {
			switch p.peek() {
			case '?':
				rep.lazy = true
				p.pos++
			case '+':
				// Ruby syntax: ?+ *+ ++ are possessive; {n,m}+ repeats again.
				if !interval {
					rep.possessive = true
					p.pos++
				}
			}
		}
		if rep.max >= 0 && rep.min > rep.max {
			p.pos = start
			return nil, p.errorf("upper bound below lower bound in repeat range")
		}
		rep.sub = atom
		atom = &rep
	}
	return atom, nil
}

// parseInterval reads {n}, {n,}, {n,m} or {,m}; ok is false when s does not
// start with one, and the brace is then a literal.
func parseInterval(s string) (lo, hi, n int, ok bool) {
	end := strings.IndexByte(s, '}')
	if end < 0 {
		return 0, 0, 0, false
	}
	body := s[1:end]
	a, b, comma := strings.Cut(body, ",")
	num := func(x string) (int, bool) {
		if x == "" || len(x) > 6 {
			return 0, false
		}
		for i := 0; i < len(x); i++ {
			if x[i] < '0' || x[i] > '9' {
				return 0, false
			}
		}
		v, _ := strconv.Atoi(x)
		return v, true
	}
	switch {
	case !comma:
		v, ok := num(a)
		if !ok {
			return 0, 0, 0, false
		}
		return v, v, end + 1, true
	case a == "" && b == "":
		return 0, 0, 0, false
	case a == "":
		v, ok := num(b)
		if !ok {
			return 0, 0, 0, false
		}
		return 0, v, end + 1, true
	}
	lo, ok1 := num(a)
	if !ok1 {
		return 0, 0, 0, false
	}
	if b == "" {
		return lo, -1, end + 1, true
	}
	hi, ok2 := num(b)
	if !ok2 {
		return 0, 0, 0, false
	}
	return lo, hi, end + 1, true
}

// parseAtom reads one atom. rest reports an isolated option group, whose
// node holds the rest of the enclosing group. A nil node with no error is
// a comment.
func (p *reParser) parseAtom() (node reNode, rest bool, err error) {
	c := p.peek()
	switch c {
	case '(':
		return p.parseGroup()
	case '[':
		p.pos++
		cls, err := p.parseClass()
		return cls, false, err
	case '.':
		p.pos++
		if p.dotNL {
			return newClass(false, anyRune).seal(), false, nil
		}
		dot := newClass(false, func(r rune) bool { return r == '\n' })
		dot.neg = true
		return dot.seal(), false, nil
	case '^':
		p.pos++
		return reAssert('^'), false, nil
	case '$':
		p.pos++
		return reAssert('$'), false, nil
	case '\\':
		n, err := p.parseEscape(false)
		return n, false, err
	case '*', '+', '?':
		return nil, false, p.errorf("target of repeat operator is not specified")
	case '{':
		if _, _, _, ok := parseInterval(p.src[p.pos:]); ok {
			return nil, false, p.errorf("target of repeat operator is not specified")
		}
	}
	r := p.next()
	return singleRune(r, p.fold), false, nil
}

func anyRune(rune) bool { return true }

func (p *reParser) parseGroup() (reNode, bool, error) {
	open := p.pos
	p.pos++
	if !p.more() || p.peek() != '?' {
		// A capturing group; captures do not matter for splitting.
		return p.groupBody(open, func(n reNode) reNode { return n })
	}
	p.pos++
	if !p.more() {
		return nil, false, p.errorf("end pattern in group")
	}
	switch c := p.peek(); c {
	case ':':
		p.pos++
		return p.groupBody(open, func(n reNode) reNode { return n })
	case '=', '!':
		p.pos++
		return p.lookGroup(open, false, c == '!')
	case '>':
		p.pos++
		return p.groupBody(open, func(n reNode) reNode { return &reAtomic{n} })
	case '#':
		end := strings.IndexByte(p.src[p.pos:], ')')
		if end < 0 {
			return nil, false, p.errorf("end pattern in group")
		}
		p.pos += end + 1
		return nil, false, nil
	case '<':
		if p.pos+1 < len(p.src) && (p.src[p.pos+1] == '=' || p.src[p.pos+1] == '!') {
			neg := p.src[p.pos+1] == '!'
			p.pos += 2
			return p.lookGroup(open, true, neg)
		}
		return p.namedGroup(open, '>')
	case '\'':
		return p.namedGroup(open, '\'')
	}
	return p.optionGroup(open)
}

func (p *reParser) namedGroup(open int, close byte) (reNode, bool, error) {
	end := strings.IndexByte(p.src[p.pos+1:], close)
	if end < 0 {
		return nil, false, p.errorf("invalid group name")
	}
	p.pos += end + 2
	return p.groupBody(open, func(n reNode) reNode { return n })
}

func (p *reParser) lookGroup(open int, behind, neg bool) (reNode, bool, error) {
	return p.groupBody(open, func(n reNode) reNode { return &reLook{sub: n, behind: behind, neg: neg} })
}

// groupBody reads the inside of a group and its ')'; options set inside
// end with the group.
func (p *reParser) groupBody(open int, wrap func(reNode) reNode) (reNode, bool, error) {
	fold, dotNL := p.fold, p.dotNL
	n, err := p.parseAlt()
	p.fold, p.dotNL = fold, dotNL
	if err != nil {
		return nil, false, err
	}
	if !p.more() || p.peek() != ')' {
		p.pos = open
		return nil, false, p.errorf("end pattern with unmatched parenthesis")
	}
	p.pos++
	return wrap(n), false, nil
}

// optionGroup reads (?imx-imx) or (?imx-imx:…).
func (p *reParser) optionGroup(open int) (reNode, bool, error) {
	fold, dotNL := p.fold, p.dotNL
	on := true
	for p.more() {
		c := p.peek()
		switch c {
		case '-':
			on = false
		case 'i':
			fold = on
		case 'm':
			dotNL = on
		case ':', ')':
		default:
			return nil, false, p.errorf("undefined group option %q", c)
		}
		p.pos++
		if c == ':' {
			saveFold, saveDot := p.fold, p.dotNL
			p.fold, p.dotNL = fold, dotNL
			n, _, err := p.groupBody(open, func(n reNode) reNode { return n })
			p.fold, p.dotNL = saveFold, saveDot
			return n, false, err
		}
		if c == ')' {
			// Isolated: the options hold to the end of the enclosing
			// group, alternatives included, as (?i:…) would.
			saveFold, saveDot := p.fold, p.dotNL
			p.fold, p.dotNL = fold, dotNL
			n, err := p.parseAlt()
			p.fold, p.dotNL = saveFold, saveDot
			return n, true, err
		}
	}
	return nil, false, p.errorf("end pattern in group")
}

// parseEscape reads an escape after '\'. Inside a class it returns a
// *runeClass or a single rune; outside it may return an assertion.
func (p *reParser) parseEscape(inClass bool) (reNode, error) {
	p.pos++
	if !p.more() {
		return nil, p.errorf("end pattern at escape")
	}
	c := p.next()
	// Oniguruma folds case in bracket classes and literals, not in the
	// class escapes: (?i)\p{Lu} matches only capitals, (?i)[\p{Lu}] any
	// cased letter (the enclosing class folds).
	class := func(f func(rune) bool, neg bool) (reNode, error) {
		cls := newClass(false, f)
		cls.neg = neg
		return cls.seal(), nil
	}
	switch c {
	case 'd', 'D':
		return class(isOnigDigit, c == 'D')
	case 's', 'S':
		return class(isOnigSpace, c == 'S')
	case 'w', 'W':
		if inClass {
			return class(isOnigWordInClass, c == 'W')
		}
		return class(isOnigWordOutside, c == 'W')
	case 'h', 'H':
		return class(isHexDigit, c == 'H')
	case 'p', 'P':
		f, neg, err := p.parseProperty()
		if err != nil {
			return nil, err
		}
		return class(f, neg != (c == 'P'))
	case 't':
		return singleRune('\t', p.fold), nil
	case 'n':
		return singleRune('\n', p.fold), nil
	case 'r':
		return singleRune('\r', p.fold), nil
	case 'f':
		return singleRune('\f', p.fold), nil
	case 'v':
		return singleRune('\v', p.fold), nil
	case 'a':
		return singleRune('\a', p.fold), nil
	case 'e':
		return singleRune(0x1b, p.fold), nil
	case 'x':
		r, err := p.parseHex()
		if err != nil {
			return nil, err
		}
		return singleRune(r, p.fold), nil
	case 'u':
		if p.pos+4 > len(p.src) {
			return nil, p.errorf("too short \\u escape")
		}
		v, err := strconv.ParseUint(p.src[p.pos:p.pos+4], 16, 32)
		if err != nil {
			return nil, p.errorf("invalid \\u escape")
		}
		p.pos += 4
		return singleRune(rune(v), p.fold), nil
	case '0':
		v := 0
		for k := 0; k < 2 && p.more() && p.peek() >= '0' && p.peek() <= '7'; k++ {
			v = v*8 + int(p.peek()-'0')
			p.pos++
		}
		return singleRune(rune(v), p.fold), nil
	}
	if inClass {
		if c == 'b' {
			return singleRune('\b', p.fold), nil
		}
	} else {
		switch c {
		case 'A', 'z', 'Z', 'b', 'B', 'G':
			return reAssert(c), nil
		}
	}
	if c >= '1' && c <= '9' || c == 'k' || c == 'g' || c == 'K' || c == 'X' || c == 'R' || c == 'N' || c == 'O' || c == 'y' || c == 'Y' {
		return nil, p.errorf("unsupported escape \\%c", c)
	}
	return singleRune(c, p.fold), nil
}

func (p *reParser) parseHex() (rune, error) {
	if p.more() && p.peek() == '{' {
		end := strings.IndexByte(p.src[p.pos:], '}')
		if end < 0 {
			return 0, p.errorf("invalid code point value")
		}
		v, err := strconv.ParseUint(p.src[p.pos+1:p.pos+end], 16, 32)
		if err != nil || v > unicode.MaxRune {
			return 0, p.errorf("invalid code point value")
		}
		p.pos += end + 1
		return rune(v), nil
	}
	v := 0
	k := 0
	for ; k < 2 && p.more(); k++ {
		d, ok := hexVal(p.peek())
		if !ok {
			break
		}
		v = v*16 + d
		p.pos++
	}
	return rune(v), nil
}

func hexVal(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// parseProperty reads {Name} or {^Name} after \p.
func (p *reParser) parseProperty() (func(rune) bool, bool, error) {
	if !p.more() || p.peek() != '{' {
		return nil, false, p.errorf("invalid character property name")
	}
	end := strings.IndexByte(p.src[p.pos:], '}')
	if end < 0 {
		return nil, false, p.errorf("invalid character property name")
	}
	name := p.src[p.pos+1 : p.pos+end]
	p.pos += end + 1
	neg := strings.HasPrefix(name, "^")
	name = strings.TrimPrefix(name, "^")
	f, ok := onigProperty(name)
	if !ok {
		return nil, false, p.errorf("invalid character property name {%s}", name)
	}
	return f, neg, nil
}

// parseClass reads a bracket class after '['.
func (p *reParser) parseClass() (*runeClass, error) {
	start := p.pos - 1
	cls := newClass(p.fold)
	if p.more() && p.peek() == '^' {
		cls.neg = true
		p.pos++
	}
	cur := newClass(false)
	first := true
	for {
		if !p.more() {
			p.pos = start
			return nil, p.errorf("premature end of char-class")
		}
		c := p.peek()
		if c == ']' && !first {
			p.pos++
			break
		}
		first = false
		if c == '&' && strings.HasPrefix(p.src[p.pos:], "&&") {
			p.pos += 2
			cls.and = append(cls.and, cur.seal())
			cur = newClass(false)
			continue
		}
		lo, item, err := p.classAtom()
		if err != nil {
			return nil, err
		}
		if item != nil {
			cur.items = append(cur.items, item)
			continue
		}
		// A range lo-hi, unless '-' ends the class.
		if p.pos+1 < len(p.src) && p.peek() == '-' && p.src[p.pos+1] != ']' {
			save := p.pos
			p.pos++
			hi, hiItem, err := p.classAtom()
			if err != nil {
				return nil, err
			}
			if hiItem != nil {
				// [a-\d]: Oniguruma refuses a class as a range end.
				p.pos = save
				return nil, p.errorf("char-class value at end of range")
			}
			if hi < lo {
				return nil, p.errorf("empty range in char class")
			}
			cur.items = append(cur.items, func(r rune) bool { return r >= lo && r <= hi })
			continue
		}
		r := lo
		cur.items = append(cur.items, func(x rune) bool { return x == r })
	}
	if len(cls.and) == 0 {
		cls.items = cur.items
	} else {
		cls.and = append(cls.and, cur.seal())
		cls.items = []func(rune) bool{anyRune}
	}
	return cls.seal(), nil
}

// classAtom reads one element of a class: a rune (item nil) or a set.
func (p *reParser) classAtom() (rune, func(rune) bool, error) {
	c := p.peek()
	switch {
	case c == '[' && strings.HasPrefix(p.src[p.pos:], "[:"):
		// The name runs from after "[:" to the next ":]" ("[:]" has none).
		if end := strings.Index(p.src[p.pos+2:], ":]"); end >= 0 {
			name := p.src[p.pos+2 : p.pos+2+end]
			neg := strings.HasPrefix(name, "^")
			if f, ok := onigProperty(strings.TrimPrefix(name, "^")); ok {
				p.pos += end + 4
				if neg {
					return 0, func(r rune) bool { return !f(r) }, nil
				}
				return 0, f, nil
			}
		}
		p.pos++
		return '[', nil, nil
	case c == '[':
		p.pos++
		fold := p.fold
		p.fold = false
		inner, err := p.parseClass()
		p.fold = fold
		if err != nil {
			return 0, nil, err
		}
		return 0, inner.has, nil
	case c == '\\':
		n, err := p.parseEscape(true)
		if err != nil {
			return 0, nil, err
		}
		cls := n.(*runeClass)
		if r, ok := cls.single(); ok {
			return r, nil, nil
		}
		return 0, cls.has, nil
	}
	return p.next(), nil, nil
}

// single reports the rune of a class made by singleRune.
func (c *runeClass) single() (rune, bool) { return c.lit, c.lit >= 0 }

// Character classes as Oniguruma sees them.

func isOnigSpace(r rune) bool {
	return r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r' || r == ' ' || r == 0x85 || unicode.Is(unicode.Z, r)
}

func isOnigWordInClass(r rune) bool { return isOnigWord(r, true) }
func isOnigWordOutside(r rune) bool { return isOnigWord(r, false) }
func isHexDigit(r rune) bool        { _, ok := hexVal(byte(r)); return r < 128 && ok }
func isOnigLetter(r rune) bool      { return unicode.IsLetter(r) && !unicode.Is(onigLetterRemoved, r) }
func isOnigNumber(r rune) bool      { return unicode.IsNumber(r) && !unicode.Is(onigNumberRemoved, r) }
func onigAssigned(r rune) bool {
	return !unicode.Is(onigWordRemoved, r) && !unicode.Is(onigLetterRemoved, r)
}
func inTable(t *unicode.RangeTable) func(rune) bool {
	return func(r rune) bool { return unicode.Is(t, r) && onigAssigned(r) }
}

// onigProperties maps property names, folded as Oniguruma folds them
// (case, spaces, '-' and '_' ignored), to their sets.
var onigProperties = sync.OnceValue(func() map[string]func(rune) bool {
	m := map[string]func(rune) bool{}
	for name, t := range unicode.Categories {
		m[foldPropName(name)] = inTable(t)
	}
	for name, t := range unicode.Scripts {
		m[foldPropName(name)] = inTable(t)
	}
	for name, t := range unicode.Properties {
		m[foldPropName(name)] = inTable(t)
	}
	long := map[string]string{
		"letter": "L", "uppercaseletter": "Lu", "lowercaseletter": "Ll", "titlecaseletter": "Lt", "casedletter": "LC",
		"modifierletter": "Lm", "otherletter": "Lo", "mark": "M", "combiningmark": "M", "nonspacingmark": "Mn",
		"spacingmark": "Mc", "enclosingmark": "Me", "number": "N", "decimalnumber": "Nd", "letternumber": "Nl",
		"othernumber": "No", "punctuation": "P", "connectorpunctuation": "Pc", "dashpunctuation": "Pd",
		"openpunctuation": "Ps", "closepunctuation": "Pe", "initialpunctuation": "Pi", "finalpunctuation": "Pf",
		"otherpunctuation": "Po", "symbol": "S", "mathsymbol": "Sm", "currencysymbol": "Sc", "modifiersymbol": "Sk",
		"othersymbol": "So", "separator": "Z", "spaceseparator": "Zs", "lineseparator": "Zl",
		"paragraphseparator": "Zp", "control": "Cc", "format": "Cf", "surrogate": "Cs", "privateuse": "Co",
	}
	for k, v := range long {
		if f, ok := m[foldPropName(v)]; ok {
			m[k] = f
		}
	}
	m["l"], m["letter"] = isOnigLetter, isOnigLetter
	m["n"], m["number"] = isOnigNumber, isOnigNumber
	m["lc"] = func(r rune) bool {
		return (unicode.Is(unicode.Lu, r) || unicode.Is(unicode.Ll, r) || unicode.Is(unicode.Lt, r)) && onigAssigned(r)
	}
	m["casedletter"] = m["lc"]
	assigned := func(r rune) bool {
		for _, t := range unicode.Categories {
			if len(t.R16) > 0 && unicode.Is(t, r) {
				return onigAssigned(r)
			}
		}
		return false
	}
	m["cn"] = func(r rune) bool { return !assigned(r) }
	m["unassigned"] = m["cn"]
	c := m["c"]
	m["c"] = func(r rune) bool { return c(r) || !assigned(r) }
	m["other"] = m["c"]
	m["any"] = anyRune
	m["ascii"] = func(r rune) bool { return r < 128 }
	m["alpha"] = func(r rune) bool {
		return (unicode.IsLetter(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_Alphabetic, r)) && onigAssigned(r)
	}
	m["alphabetic"] = m["alpha"]
	m["digit"] = isOnigDigit
	m["alnum"] = func(r rune) bool { return m["alpha"](r) || isOnigDigit(r) }
	m["upper"] = func(r rune) bool {
		return (unicode.Is(unicode.Lu, r) || unicode.Is(unicode.Other_Uppercase, r)) && onigAssigned(r)
	}
	m["lower"] = func(r rune) bool {
		return (unicode.Is(unicode.Ll, r) || unicode.Is(unicode.Other_Lowercase, r)) && onigAssigned(r)
	}
	m["uppercase"], m["lowercase"] = m["upper"], m["lower"]
	m["space"], m["whitespace"] = isOnigSpace, isOnigSpace
	m["word"] = isOnigWordInClass
	m["punct"] = func(r rune) bool { return m["p"](r) || r < 128 && strings.ContainsRune("$+<=>^`|~", r) }
	m["cntrl"] = m["cc"]
	m["xdigit"] = isHexDigit
	m["blank"] = func(r rune) bool { return r == '\t' || unicode.Is(unicode.Zs, r) }
	m["graph"] = func(r rune) bool {
		return !isOnigSpace(r) && !unicode.Is(unicode.Cc, r) && !unicode.Is(unicode.Cs, r) && assigned(r)
	}
	m["print"] = func(r rune) bool { return m["graph"](r) || unicode.Is(unicode.Zs, r) }
	return m
})

func foldPropName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == ' ' || r == '-' || r == '_' {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

func onigProperty(name string) (func(rune) bool, bool) {
	f, ok := onigProperties()[foldPropName(name)]
	return f, ok
}

// The compiler turns the tree into closures, each holding the matcher of
// what follows it.

type reCompiler struct{ err error }

func (c *reCompiler) compile(n reNode, next reMatcher) reMatcher {
	switch n := n.(type) {
	case nil:
		return next
	case *runeClass:
		return func(st *reState, i int) bool {
			if i >= len(st.s) {
				return false
			}
			r, sz := decodeAt(st.s, i)
			return n.has(r) && next(st, i+sz)
		}
	case reSeq:
		for k := len(n) - 1; k >= 0; k-- {
			next = c.compile(n[k], next)
		}
		return next
	case reAlt:
		alts := make([]reMatcher, len(n))
		for k, a := range n {
			alts[k] = c.compile(a, next)
		}
		return func(st *reState, i int) bool {
			for _, m := range alts {
				if !st.step() {
					return false
				}
				if m(st, i) {
					return true
				}
			}
			return false
		}
	case reAssert:
		return assertion(byte(n), next)
	case *reRepeat:
		if cls, ok := n.sub.(*runeClass); ok {
			return repeatRune(cls, n, next)
		}
		if n.possessive {
			inner := *n
			inner.possessive = false
			return c.compile(&reAtomic{&inner}, next)
		}
		return c.repeat(n, next)
	case *reLook:
		if n.behind {
			return c.lookBehind(n, next)
		}
		sub := c.compile(n.sub, func(*reState, int) bool { return true })
		neg := n.neg
		return func(st *reState, i int) bool {
			loops := len(st.loops)
			ok := sub(st, i)
			st.loops = st.loops[:loops]
			return ok != neg && next(st, i)
		}
	case *reAtomic:
		sub := c.compile(n.sub, func(st *reState, j int) bool {
			st.atomicEnd = j
			return true
		})
		return func(st *reState, i int) bool {
			loops := len(st.loops)
			ok := sub(st, i)
			st.loops = st.loops[:loops]
			return ok && next(st, st.atomicEnd)
		}
	}
	c.err = fmt.Errorf("internal error: unknown node %T", n)
	return next
}

func assertion(kind byte, next reMatcher) reMatcher {
	var test func(s string, i int, st *reState) bool
	switch kind {
	case '^':
		// Not at the very end, even after a newline (Oniguruma's BEGIN_LINE).
		test = func(s string, i int, _ *reState) bool { return i == 0 || s[i-1] == '\n' && i < len(s) }
	case '$':
		test = func(s string, i int, _ *reState) bool { return i == len(s) || s[i] == '\n' }
	case 'A':
		test = func(_ string, i int, _ *reState) bool { return i == 0 }
	case 'z':
		test = func(s string, i int, _ *reState) bool { return i == len(s) }
	case 'Z':
		test = func(s string, i int, _ *reState) bool { return i == len(s) || i == len(s)-1 && s[i] == '\n' }
	case 'G':
		test = func(_ string, i int, st *reState) bool { return i == st.searchStart }
	case 'b', 'B':
		want := kind == 'b'
		test = func(s string, i int, _ *reState) bool {
			before, after := false, false
			if i > 0 {
				r, _ := utf8.DecodeLastRuneInString(s[:i])
				before = isOnigWordOutside(r)
			}
			if i < len(s) {
				r, _ := decodeAt(s, i)
				after = isOnigWordOutside(r)
			}
			return (before != after) == want
		}
	}
	return func(st *reState, i int) bool { return test(st.s, i, st) && next(st, i) }
}

// repeatRune repeats a one-rune class without recursion: greedy runs go as
// far as they can and give back one rune at a time.
func repeatRune(cls *runeClass, n *reRepeat, next reMatcher) reMatcher {
	min, max := n.min, n.max
	if n.lazy {
		return func(st *reState, i int) bool {
			s := st.s
			for count := 0; ; count++ {
				if !st.step() {
					return false
				}
				if count >= min && next(st, i) {
					return true
				}
				if max >= 0 && count >= max || i >= len(s) {
					return false
				}
				r, sz := decodeAt(s, i)
				if !cls.has(r) {
					return false
				}
				i += sz
			}
		}
	}
	possessive := n.possessive
	return func(st *reState, i int) bool {
		s := st.s
		j, count := i, 0
		for (max < 0 || count < max) && j < len(s) {
			r, sz := decodeAt(s, j)
			if !cls.has(r) {
				break
			}
			j += sz
			count++
		}
		if count < min {
			return false
		}
		if possessive {
			return next(st, j)
		}
		for {
			if !st.step() {
				return false
			}
			if next(st, j) {
				return true
			}
			if count == min {
				return false
			}
			_, sz := utf8.DecodeLastRuneInString(s[:j])
			j -= sz
			count--
		}
	}
}

// repeat repeats any sub-pattern. The iteration counts live on a stack in
// the state, since the body's continuation is compiled once for all
// iterations. An iteration that matches nothing ends the loop, as in
// Oniguruma.
func (c *reCompiler) repeat(n *reRepeat, next reMatcher) reMatcher {
	min, max, lazy := n.min, n.max, n.lazy
	var loop func(st *reState, i, count int) bool
	body := c.compile(n.sub, func(st *reState, j int) bool {
		top := len(st.loops) - 1
		f := st.loops[top]
		st.loops = st.loops[:top]
		var ok bool
		if j == f.start {
			ok = next(st, j)
		} else {
			ok = loop(st, j, f.count+1)
		}
		if !ok {
			st.loops = append(st.loops, f)
		}
		return ok
	})
	try := func(st *reState, i, count int) bool {
		if max >= 0 && count >= max {
			return false
		}
		st.loops = append(st.loops, loopFrame{count, i})
		if body(st, i) {
			return true
		}
		st.loops = st.loops[:len(st.loops)-1]
		return false
	}
	loop = func(st *reState, i, count int) bool {
		if !st.step() {
			return false
		}
		if lazy {
			return count >= min && next(st, i) || try(st, i, count)
		}
		return try(st, i, count) || count >= min && next(st, i)
	}
	return func(st *reState, i int) bool { return loop(st, i, 0) }
}

// lookBehind tries the sub-pattern from each start that could end at i;
// like Oniguruma it needs a bounded length.
func (c *reCompiler) lookBehind(n *reLook, next reMatcher) reMatcher {
	minLen, maxLen := runeLengths(n.sub)
	if maxLen < 0 {
		c.err = fmt.Errorf("invalid pattern in look-behind: its length must be bounded")
		return next
	}
	sub := c.compile(n.sub, func(st *reState, j int) bool { return j == st.behindEnd })
	neg := n.neg
	return func(st *reState, i int) bool {
		saved := st.behindEnd
		st.behindEnd = i
		loops := len(st.loops)
		found := false
		start := i
		for k := 0; k <= maxLen && st.step(); k++ {
			if k >= minLen && sub(st, start) {
				found = true
				break
			}
			if start == 0 {
				break
			}
			_, sz := utf8.DecodeLastRuneInString(st.s[:start])
			start -= sz
		}
		st.loops = st.loops[:loops]
		st.behindEnd = saved
		return found != neg && next(st, i)
	}
}

// runeLengths bounds the number of runes a node matches; max is -1 when
// unbounded.
func runeLengths(n reNode) (int, int) {
	switch n := n.(type) {
	case *runeClass:
		return 1, 1
	case reSeq:
		lo, hi := 0, 0
		for _, x := range n {
			a, b := runeLengths(x)
			lo += a
			if hi >= 0 {
				if b < 0 {
					hi = -1
				} else {
					hi += b
				}
			}
		}
		return lo, hi
	case reAlt:
		lo, hi := -1, 0
		for _, x := range n {
			a, b := runeLengths(x)
			if lo < 0 || a < lo {
				lo = a
			}
			if hi >= 0 && (b < 0 || b > hi) {
				hi = b
			}
		}
		return max(lo, 0), hi
	case *reRepeat:
		a, b := runeLengths(n.sub)
		hi := -1
		if n.max >= 0 && b >= 0 {
			hi = n.max * b
		}
		return n.min * a, hi
	case *reAtomic:
		return runeLengths(n.sub)
	}
	return 0, 0
}
