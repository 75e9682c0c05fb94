package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// isWhitespace is Rust's char::is_whitespace and the regex class \s: the
// Unicode White_Space property.
func isWhitespace(r rune) bool { return unicode.IsSpace(r) }

// isWordChar is the Unicode regex class \w of Rust's regex crate (used by
// the Whitespace pre-tokenizer and single_word added tokens): Alphabetic
// (letters, letter numbers, Other_Alphabetic), marks, decimal numbers,
// connector punctuation and the join controls.
func isWordChar(r rune) bool {
	return unicodeWord(r) || r == 0x200C || r == 0x200D || unicode.Is(regexWordAdded, r)
}

// unicodeWord is the part of \w that the regex engines share, in Go's
// Unicode tables.
func unicodeWord(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) || unicode.Is(unicode.Nl, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Other_Alphabetic, r)
}

// isOnigWord is Oniguruma's \w, as the tokenizers library's regexes see
// it. Outside a bracket class it also takes a few Latin-1 numbers (² ½ …).
func isOnigWord(r rune, inClass bool) bool {
	return unicodeWord(r) && !unicode.Is(onigWordRemoved, r) || !inClass && unicode.Is(onigWordAdded, r)
}

// isOnigDigit is Oniguruma's \d.
func isOnigDigit(r rune) bool {
	return unicode.Is(unicode.Nd, r) && !unicode.Is(onigDigitRemoved, r)
}

// isPunctuation is what the Punctuation and Bert pre-tokenizers split on:
// ASCII punctuation or any Unicode punctuation category (in the tables of
// the Rust crate they use).
func isPunctuation(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '!' && r <= '/' || r >= ':' && r <= '@' || r >= '[' && r <= '`' || r >= '{' && r <= '~'
	}
	return unicode.IsPunct(r) && !unicode.Is(punctRemoved, r) || unicode.Is(punctAdded, r)
}

// Grapheme cluster break classes of Unicode UAX #29.
type gcb uint8

const (
	gcbOther gcb = iota
	gcbCR
	gcbLF
	gcbControl
	gcbExtend
	gcbZWJ
	gcbRI
	gcbPrepend
	gcbSpacingMark
	gcbL
	gcbV
	gcbT
	gcbLV
	gcbLVT
	gcbPict
)

var prependRanges = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x0600, 0x0605, 1}, {0x06DD, 0x06DD, 1}, {0x070F, 0x070F, 1},
		{0x0890, 0x0891, 1}, {0x08E2, 0x08E2, 1}, {0x0D4E, 0x0D4E, 1},
	},
	R32: []unicode.Range32{
		{0x110BD, 0x110BD, 1}, {0x110CD, 0x110CD, 1}, {0x111C2, 0x111C3, 1},
		{0x1193F, 0x1193F, 1}, {0x11941, 0x11941, 1}, {0x11A3A, 0x11A3A, 1},
		{0x11A84, 0x11A89, 1}, {0x11D46, 0x11D46, 1}, {0x11F02, 0x11F02, 1},
	},
}

// pictographic approximates Extended_Pictographic with the emoji and
// symbol blocks that hold it.
var pictographic = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x00A9, 0x00A9, 1}, {0x00AE, 0x00AE, 1}, {0x203C, 0x203C, 1}, {0x2049, 0x2049, 1},
		{0x2122, 0x2122, 1}, {0x2139, 0x2139, 1}, {0x2194, 0x2199, 1}, {0x21A9, 0x21AA, 1},
		{0x231A, 0x231B, 1}, {0x2328, 0x2328, 1}, {0x2388, 0x2388, 1}, {0x23CF, 0x23CF, 1},
		{0x23E9, 0x23F3, 1}, {0x23F8, 0x23FA, 1}, {0x24C2, 0x24C2, 1}, {0x25AA, 0x25AB, 1},
		{0x25B6, 0x25B6, 1}, {0x25C0, 0x25C0, 1}, {0x25FB, 0x25FE, 1}, {0x2600, 0x2605, 1},
		{0x2607, 0x2612, 1}, {0x2614, 0x2685, 1}, {0x2690, 0x2705, 1}, {0x2708, 0x2712, 1},
		{0x2714, 0x2714, 1}, {0x2716, 0x2716, 1}, {0x271D, 0x271D, 1}, {0x2721, 0x2721, 1},
		{0x2728, 0x2728, 1}, {0x2733, 0x2734, 1}, {0x2744, 0x2744, 1}, {0x2747, 0x2747, 1},
		{0x274C, 0x274C, 1}, {0x274E, 0x274E, 1}, {0x2753, 0x2755, 1}, {0x2757, 0x2757, 1},
		{0x2763, 0x2767, 1}, {0x2795, 0x2797, 1}, {0x27A1, 0x27A1, 1}, {0x27B0, 0x27B0, 1},
		{0x27BF, 0x27BF, 1}, {0x2934, 0x2935, 1}, {0x2B05, 0x2B07, 1}, {0x2B1B, 0x2B1C, 1},
		{0x2B50, 0x2B50, 1}, {0x2B55, 0x2B55, 1}, {0x3030, 0x3030, 1}, {0x303D, 0x303D, 1},
		{0x3297, 0x3297, 1}, {0x3299, 0x3299, 1},
	},
	R32: []unicode.Range32{
		{0x1F000, 0x1F0FF, 1}, {0x1F10D, 0x1F10F, 1}, {0x1F12F, 0x1F12F, 1},
		{0x1F16C, 0x1F171, 1}, {0x1F17E, 0x1F17F, 1}, {0x1F18E, 0x1F18E, 1},
		{0x1F191, 0x1F19A, 1}, {0x1F1AD, 0x1F1E5, 1}, {0x1F201, 0x1F20F, 1},
		{0x1F21A, 0x1F21A, 1}, {0x1F22F, 0x1F22F, 1}, {0x1F232, 0x1F23A, 1},
		{0x1F23C, 0x1F23F, 1}, {0x1F249, 0x1F3FA, 1}, {0x1F400, 0x1F53D, 1},
		{0x1F546, 0x1F64F, 1}, {0x1F680, 0x1F6FF, 1}, {0x1F774, 0x1F77F, 1},
		{0x1F7D5, 0x1F7FF, 1}, {0x1F80C, 0x1F80F, 1}, {0x1F848, 0x1F84F, 1},
		{0x1F85A, 0x1F85F, 1}, {0x1F888, 0x1F88F, 1}, {0x1F8AE, 0x1F8FF, 1},
		{0x1F90C, 0x1F93A, 1}, {0x1F93C, 0x1F945, 1}, {0x1F947, 0x1FAFF, 1},
		{0x1FC00, 0x1FFFD, 1},
	},
}

func graphemeClass(r rune) gcb {
	switch {
	case r == '\r':
		return gcbCR
	case r == '\n':
		return gcbLF
	case r == 0x200D:
		return gcbZWJ
	case r < 0x20 || r >= 0x7F && r < 0xA0:
		return gcbControl
	case r < 0x7F:
		return gcbOther
	case r >= 0x1F1E6 && r <= 0x1F1FF:
		return gcbRI
	case r >= 0x1F3FB && r <= 0x1F3FF:
		return gcbExtend
	case r >= 0xAC00 && r <= 0xD7A3:
		if (r-0xAC00)%28 == 0 {
			return gcbLV
		}
		return gcbLVT
	case r >= 0x1100 && r <= 0x115F || r >= 0xA960 && r <= 0xA97C:
		return gcbL
	case r >= 0x1160 && r <= 0x11A7 || r >= 0xD7B0 && r <= 0xD7C6:
		return gcbV
	case r >= 0x11A8 && r <= 0x11FF || r >= 0xD7CB && r <= 0xD7FB:
		return gcbT
	case unicode.Is(prependRanges, r):
		return gcbPrepend
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || unicode.Is(unicode.Other_Grapheme_Extend, r):
		return gcbExtend
	case unicode.Is(unicode.Mc, r) || r == 0x0E33 || r == 0x0EB3:
		return gcbSpacingMark
	case unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r) || unicode.Is(unicode.Cf, r):
		return gcbControl
	case unicode.Is(pictographic, r):
		return gcbPict
	}
	return gcbOther
}

// graphemeLen returns the byte length of the extended grapheme cluster at
// the start of s (UAX #29, without the Indic conjunct rule).
func graphemeLen(s string) int {
	if s == "" {
		return 0
	}
	r, n := utf8.DecodeRuneInString(s)
	prev := graphemeClass(r)
	// State for GB11 (emoji ZWJ sequences) and GB12/13 (flag pairs).
	pictRun := prev == gcbPict
	riCount := 0
	if prev == gcbRI {
		riCount = 1
	}
	for n < len(s) {
		r, sz := utf8.DecodeRuneInString(s[n:])
		cur := graphemeClass(r)
		join := false
		switch {
		case prev == gcbCR && cur == gcbLF:
			join = true
		case prev == gcbCR || prev == gcbLF || prev == gcbControl:
			join = false
		case cur == gcbCR || cur == gcbLF || cur == gcbControl:
			join = false
		case prev == gcbL && (cur == gcbL || cur == gcbV || cur == gcbLV || cur == gcbLVT):
			join = true
		case (prev == gcbLV || prev == gcbV) && (cur == gcbV || cur == gcbT):
			join = true
		case (prev == gcbLVT || prev == gcbT) && cur == gcbT:
			join = true
		case cur == gcbExtend || cur == gcbZWJ || cur == gcbSpacingMark:
			join = true
		case prev == gcbPrepend:
			join = true
		case prev == gcbZWJ && cur == gcbPict && pictRun:
			join = true
		case prev == gcbRI && cur == gcbRI && riCount%2 == 1:
			join = true
		}
		if !join {
			break
		}
		switch {
		case cur == gcbPict:
			pictRun = true
		case cur == gcbExtend || cur == gcbZWJ:
		default:
			pictRun = false
		}
		if cur == gcbRI {
			riCount++
		} else {
			riCount = 0
		}
		prev = cur
		n += sz
	}
	return n
}

// rustLossy converts bytes to a string like Rust's String::from_utf8_lossy:
// each maximal invalid subsequence becomes one U+FFFD.
func rustLossy(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		r, sz := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || sz > 1 {
			out = append(out, b[i:i+sz]...)
			i += sz
			continue
		}
		i += invalidPrefixLen(b[i:])
		out = append(out, "\uFFFD"...)
	}
	return string(out)
}

// invalidPrefixLen is the length of the maximal prefix of b that starts a
// valid UTF-8 sequence but does not complete one (at least 1).
func invalidPrefixLen(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC || c == 0xEE || c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		x := b[n]
		if k == 0 {
			if x < lo || x > hi {
				return n
			}
		} else if x < 0x80 || x > 0xBF {
			return n
		}
		n++
	}
	return n
}

// validUTF8 replaces each invalid byte of s with U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out := make([]rune, 0, len(s))
	for _, r := range s {
		out = append(out, r)
	}
	return string(out)
}
