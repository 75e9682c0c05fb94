package tokenizer

import (
	"fmt"
	"strings"
	"sync"
	"unicode"
)

// The RE2 translation of Oniguruma's classes: Go's regexp is the oracle
// the matcher is fuzzed against, on patterns both engines read alike.

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
