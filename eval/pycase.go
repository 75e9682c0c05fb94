package eval

import (
	"strings"
	"unicode"
)

//go:generate go run gen_pycase.go

// pyCapitalize is Python's str.capitalize (3.8 and later), which lm-eval
// applies to HellaSwag's ctx_b: the first character becomes its full
// title-case mapping ('ß' → "Ss", 'ﬁ' → "Fi", 'ŉ' → "ʼN"), every other
// character its full lowercase mapping ('İ' → "i̇"), with a capital sigma
// lowered to the final form 'ς' where Python's final-sigma rule says so.
// Go's unicode package has only the simple (one rune to one rune) mappings;
// pycase_tables.go, generated from the reference Python's own behaviour,
// holds where the full ones differ and the two properties the sigma rule
// reads. Invalid UTF-8 is read as U+FFFD, as strings.ToLower does.
func pyCapitalize(s string) string {
	if s == "" {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s) + 4)
	if t, ok := pyTitleExceptions[rs[0]]; ok {
		b.WriteString(t)
	} else {
		b.WriteRune(unicode.ToTitle(rs[0]))
	}
	for i := 1; i < len(rs); i++ {
		r := rs[i]
		if r == 'Σ' {
			if finalSigma(rs, i) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
			continue
		}
		if l, ok := pyLowerExceptions[r]; ok {
			b.WriteString(l)
		} else {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma reports whether the capital sigma at rs[i] lowers to 'ς', by
// CPython's rule (handle_capital_sigma, after Unicode's Final_Sigma
// condition): the nearest character before it that is not case-ignorable
// exists and is cased, and the nearest one after it that is not
// case-ignorable is not cased or does not exist. The characters read are
// the original ones, not their mappings.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && unicode.Is(pyCaseIgnorable, rs[j]) {
		j--
	}
	if j < 0 || !unicode.Is(pyCased, rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && unicode.Is(pyCaseIgnorable, rs[j]) {
		j++
	}
	return j == len(rs) || !unicode.Is(pyCased, rs[j])
}
