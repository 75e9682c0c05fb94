package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// span is a byte range [start, end) of the original input text.
type span struct{ start, end int }

// normString is a piece of text being normalized, with the original-text
// range of every byte of its current form. It follows the alignment rules of
// Hugging Face's NormalizedString, because one of its pre-tokenizers (the
// Metaspace "first" scheme) decides by a piece's original offset, and the
// offsets we report must be the ones Python reports.
type normString struct {
	s     string
	align []span // one per byte of s, absolute offsets in the input text
	shift int    // original offset where this piece starts
}

func newNormString(s string, base int) *normString {
	n := &normString{s: s, align: make([]span, len(s)), shift: base}
	for i, r := range s {
		sz := utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, sz = utf8.DecodeRuneInString(s[i:])
		}
		for k := 0; k < sz; k++ {
			n.align[i+k] = span{base + i, base + i + sz}
		}
	}
	return n
}

// edit is one character of a transformation's output: change is 0 when the
// rune replaces the next input rune, 1 when it is inserted, and -k when it
// replaces the next input rune and the k runes after it are removed.
type edit struct {
	r      rune
	change int
}

// transformRange replaces the bytes [start, end) with the runes of dest,
// skipping initialRemoved input runes first, and derives the alignments of
// the new bytes from the replaced ones.
func (n *normString) transformRange(start, end int, dest []edit, initialRemoved int) {
	old := n.s[start:end]
	pos := 0
	next := func() int {
		if pos >= len(old) {
			return 0
		}
		_, sz := utf8.DecodeRuneInString(old[pos:])
		pos += sz
		return sz
	}
	for i := 0; i < initialRemoved; i++ {
		next()
	}
	offset := start + pos
	var b strings.Builder
	b.Grow(len(old) + 4*len(dest))
	newAlign := make([]span, 0, len(old)+len(dest))
	for _, d := range dest {
		idx := offset
		var a span
		switch {
		case d.change > 0 && idx < 1:
			a = span{n.shift, n.shift}
		case d.change > 0:
			a = n.align[min(idx, len(n.align))-1]
		case idx < len(n.align):
			a = n.align[idx]
		case len(n.align) > 0:
			a = n.align[len(n.align)-1]
		default:
			a = span{n.shift, n.shift}
		}
		if d.change <= 0 {
			offset += next()
		}
		for k := 0; k < -d.change; k++ {
			offset += next()
		}
		r := d.r
		if !utf8.ValidRune(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		for k := utf8.RuneLen(r); k > 0; k-- {
			newAlign = append(newAlign, a)
		}
	}
	mid := b.String()
	align := make([]span, 0, start+len(newAlign)+len(n.align)-end)
	align = append(align, n.align[:start]...)
	align = append(align, newAlign...)
	align = append(align, n.align[end:]...)
	n.s = n.s[:start] + mid + n.s[end:]
	n.align = align
}

// transform applies dest to the whole string.
func (n *normString) transform(dest []edit, initialRemoved int) {
	n.transformRange(0, len(n.s), dest, initialRemoved)
}

// prepend puts s in front of a non-empty string; the new runes take the
// alignment of the first rune.
func (n *normString) prepend(s string) {
	if n.s == "" || s == "" {
		return
	}
	first, sz := utf8.DecodeRuneInString(n.s)
	dest := make([]edit, 0, utf8.RuneCountInString(s)+1)
	for i, r := range []rune(s) {
		dest = append(dest, edit{r, min(i, 1)})
	}
	dest = append(dest, edit{first, 1})
	n.transformRange(0, sz, dest, 0)
}

// replaceMatches replaces each match [start, end) with content; matches
// are ordered and do not overlap. The new bytes take the alignment of the
// last byte they replace (Hugging Face inserts them after removing the match).
func (n *normString) replaceMatches(matches []span, content string) {
	if len(matches) == 0 {
		return
	}
	size := len(n.s) + len(matches)*len(content)
	for _, m := range matches {
		size -= m.end - m.start
	}
	b := make([]byte, 0, size)
	align := make([]span, 0, size)
	prev := 0
	for _, m := range matches {
		b = append(b, n.s[prev:m.start]...)
		align = append(align, n.align[prev:m.start]...)
		b = append(b, content...)
		a := n.align[m.end-1]
		for range len(content) {
			align = append(align, a)
		}
		prev = m.end
	}
	b = append(b, n.s[prev:]...)
	align = append(align, n.align[prev:]...)
	n.s = string(b)
	n.align = align
}

// lrstrip removes leading and/or trailing white space (Unicode White_Space).
func (n *normString) lrstrip(left, right bool) {
	start, end := 0, len(n.s)
	if left {
		for start < end {
			r, sz := utf8.DecodeRuneInString(n.s[start:])
			if !isWhitespace(r) {
				break
			}
			start += sz
		}
	}
	if right {
		for end > start {
			r, sz := utf8.DecodeLastRuneInString(n.s[:end])
			if !isWhitespace(r) {
				break
			}
			end -= sz
		}
	}
	if start == 0 && end == len(n.s) {
		return
	}
	n.s = n.s[start:end]
	n.align = append([]span(nil), n.align[start:end]...)
}

// slice returns the piece [start, end) of the normalized string.
func (n *normString) slice(start, end int) *normString {
	shift := n.shift + start
	if start < end {
		shift = n.align[start].start
	}
	return &normString{s: n.s[start:end], align: n.align[start:end:end], shift: shift}
}

// origRange maps a byte range of the normalized string to the original
// text, as the first byte's start and the last byte's end.
func (n *normString) origRange(start, end int) (int, int) {
	if start >= end || end > len(n.align) {
		return n.shift + start, n.shift + end
	}
	return n.align[start].start, n.align[end-1].end
}

// piece is a byte range of a string with a flag telling whether it matched
// a pattern; a pattern's pieces cover the whole string in order.
type piece struct {
	start, end int
	match      bool
}

// splitBehavior says what a split does with the delimiter it matched.
type splitBehavior int

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

var splitBehaviorNames = map[string]splitBehavior{
	"Removed":            splitRemoved,
	"Isolated":           splitIsolated,
	"MergedWithPrevious": splitMergedWithPrevious,
	"MergedWithNext":     splitMergedWithNext,
	"Contiguous":         splitContiguous,
}

// split cuts n at the matches of pieces according to behavior.
func (n *normString) split(pieces []piece, behavior splitBehavior) []*normString {
	type cut struct {
		start, end int
		remove     bool
	}
	var cuts []cut
	switch behavior {
	case splitIsolated:
		for _, p := range pieces {
			cuts = append(cuts, cut{p.start, p.end, false})
		}
	case splitRemoved:
		for _, p := range pieces {
			cuts = append(cuts, cut{p.start, p.end, p.match})
		}
	case splitContiguous:
		prev := false
		for _, p := range pieces {
			if p.match == prev && len(cuts) > 0 {
				cuts[len(cuts)-1].end = p.end
			} else {
				cuts = append(cuts, cut{p.start, p.end, false})
			}
			prev = p.match
		}
	case splitMergedWithPrevious:
		prev := false
		for _, p := range pieces {
			if p.match && !prev && len(cuts) > 0 {
				cuts[len(cuts)-1].end = p.end
			} else {
				cuts = append(cuts, cut{p.start, p.end, false})
			}
			prev = p.match
		}
	case splitMergedWithNext:
		prev := false
		for i := len(pieces) - 1; i >= 0; i-- {
			p := pieces[i]
			if p.match && !prev && len(cuts) > 0 {
				cuts[len(cuts)-1].start = p.start
			} else {
				cuts = append(cuts, cut{p.start, p.end, false})
			}
			prev = p.match
		}
		for i, j := 0, len(cuts)-1; i < j; i, j = i+1, j-1 {
			cuts[i], cuts[j] = cuts[j], cuts[i]
		}
	}
	out := make([]*normString, 0, len(cuts))
	for _, c := range cuts {
		if !c.remove {
			out = append(out, n.slice(c.start, c.end))
		}
	}
	return out
}

// runePieces marks every rune for which is returns true as its own match.
func runePieces(s string, is func(rune) bool) []piece {
	if s == "" {
		return []piece{{0, 0, false}}
	}
	var out []piece
	last := 0
	for i, r := range s {
		if is(r) {
			sz := utf8.RuneLen(r)
			if r == utf8.RuneError {
				_, sz = utf8.DecodeRuneInString(s[i:])
			}
			if last < i {
				out = append(out, piece{last, i, false})
			}
			out = append(out, piece{i, i + sz, true})
			last = i + sz
		}
	}
	if last < len(s) {
		out = append(out, piece{last, len(s), false})
	}
	return out
}

// matchPieces turns ordered, non-overlapping matches into pieces that cover s.
func matchPieces(s string, matches []span) []piece {
	if s == "" {
		return []piece{{0, 0, false}}
	}
	out := make([]piece, 0, 2*len(matches)+1)
	prev := 0
	for _, m := range matches {
		if prev != m.start {
			out = append(out, piece{prev, m.start, false})
		}
		out = append(out, piece{m.start, m.end, true})
		prev = m.end
	}
	if prev != len(s) {
		out = append(out, piece{prev, len(s), false})
	}
	return out
}

// stringMatches finds the non-overlapping occurrences of pat in s.
func stringMatches(s, pat string) []span {
	if pat == "" {
		return nil
	}
	var out []span
	for i := 0; ; {
		j := strings.Index(s[i:], pat)
		if j < 0 {
			return out
		}
		out = append(out, span{i + j, i + j + len(pat)})
		i += j + len(pat)
	}
}

func invertPieces(p []piece) []piece {
	out := make([]piece, len(p))
	for i, x := range p {
		out[i] = piece{x.start, x.end, !x.match}
	}
	return out
}
