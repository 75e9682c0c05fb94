package tokenizer

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/migu-ml/migu/internal/testenv"
)

var (
	unicodeScan   = flag.Bool("unicode-scan", false, "compare character classes with Python's tokenizers on every code point (about 30 s)")
	updateUnicode = flag.Bool("update", false, "with -unicode-scan, rewrite unicode_tables.go from the scan")
)

type unicodeScanResult struct {
	Punct           []rune            `json:"punct"`
	Space           []rune            `json:"space"`
	Numeric         []rune            `json:"numeric"`
	Word            []rune            `json:"word"`
	Letter          []rune            `json:"letter"`
	Number          []rune            `json:"number"`
	GPT2Space       []rune            `json:"gpt2_space"`
	OnigWord        []rune            `json:"onig_word"`
	OnigDigit       []rune            `json:"onig_digit"`
	OnigSpace       []rune            `json:"onig_space"`
	Lower           map[string]string `json:"lower"`
	PrecompiledFile string            `json:"precompiled_file"`
	Probes          []string          `json:"probes"`
	Normalized      []string          `json:"normalized"`
}

func runeSet(rs []rune) map[rune]bool {
	m := make(map[rune]bool, len(rs))
	for _, r := range rs {
		m[r] = true
	}
	return m
}

func eachRune(f func(r rune)) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r < 0xD800 || r > 0xDFFF {
			f(r)
		}
	}
}

// TestUnicodeScan asks Python's tokenizers how it classifies every code
// point and checks ours agree: the tables in unicode_tables.go come from
// here (-update rewrites them).
func TestUnicodeScan(t *testing.T) {
	if !*unicodeScan {
		t.Skip("exhaustive; run with -unicode-scan")
	}
	out := testenv.RunPython(t, mustRead(t, "testdata/unicode_scan.py"), t.TempDir())
	var scan unicodeScanResult
	if err := json.Unmarshal(out, &scan); err != nil {
		t.Fatal(err)
	}
	if *updateUnicode {
		writeUnicodeTables(t, &scan)
		return
	}
	spaceRE := regexp.MustCompile("[" + reSpace + "]")
	checks := []struct {
		name string
		hf   []rune
		ours func(rune) bool
	}{
		{"Punctuation", scan.Punct, isPunctuation},
		{"WhitespaceSplit", scan.Space, isWhitespace},
		{"Digits", scan.Numeric, unicode.IsNumber},
		{`Whitespace \w`, scan.Word, isWordChar},
		{`ByteLevel \p{L}`, scan.Letter, func(r rune) bool { return gpt2Class(r) == clsLetter }},
		{`ByteLevel \p{N}`, scan.Number, func(r rune) bool { return gpt2Class(r) == clsNumber }},
		{`ByteLevel \s`, scan.GPT2Space, func(r rune) bool { return gpt2Class(r) == clsSpace }},
		{`Oniguruma \w`, scan.OnigWord, func(r rune) bool { return isOnigWord(r, false) }},
		{`Oniguruma \d`, scan.OnigDigit, isOnigDigit},
		{`Oniguruma \s`, scan.OnigSpace, func(r rune) bool { return spaceRE.MatchString(string(r)) }},
	}
	for _, c := range checks {
		hf := runeSet(c.hf)
		var diff []string
		eachRune(func(r rune) {
			if hf[r] != c.ours(r) {
				diff = append(diff, fmt.Sprintf("U+%04X", r))
			}
		})
		if len(diff) > 0 {
			t.Errorf("%s: %d code points differ, such as %v", c.name, len(diff), diff[:min(len(diff), 10)])
		}
	}
	lower := 0
	eachRune(func(r rune) {
		want, ok := scan.Lower[fmt.Sprint(int(r))]
		if !ok {
			want = string(r)
		}
		n := newNormString(string(r), 0)
		lowercaseNormalizer{}.normalize(n)
		if n.s != want {
			lower++
		}
	})
	if lower > 0 {
		t.Errorf("Lowercase: %d code points differ", lower)
	}
	tk, err := Load(scan.PrecompiledFile)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, p := range scan.Probes {
		n := newNormString("x"+p+"x", 0)
		tk.normalizer.normalize(n)
		if n.s != scan.Normalized[i] {
			if bad++; bad <= 5 {
				t.Errorf("Precompiled(%q) = %q, Python %q", p, n.s, scan.Normalized[i])
			}
		}
	}
	t.Logf("checked %d predicates and %d precompiled probes over every code point", len(checks)+1, len(scan.Probes))
}

func mustRead(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeUnicodeTables records where the library's classes differ from Go's.
func writeUnicodeTables(t *testing.T, scan *unicodeScanResult) {
	basePunct := func(r rune) bool {
		if r < 0x80 {
			return isPunctuation(r)
		}
		return unicode.IsPunct(r)
	}
	regexWord := func(r rune) bool { return unicodeWord(r) || r == 0x200C || r == 0x200D }
	tables := []struct {
		name, doc string
		hf        []rune
		base      func(rune) bool
		added     bool
	}{
		{"punctAdded", "runes the tokenizers crate's (older) tables count as punctuation and Go's do not", scan.Punct, basePunct, true},
		{"punctRemoved", "punctuation in Go's tables that the tokenizers crate's older tables lack", scan.Punct, basePunct, false},
		{"regexWordAdded", `runes Rust's regex \w matches that Go's tables lack`, scan.Word, regexWord, true},
		{"onigLetterRemoved", `letters in Go's tables that Oniguruma's \p{L} lacks`, scan.Letter, unicode.IsLetter, false},
		{"onigNumberRemoved", `numbers in Go's tables that Oniguruma's \p{N} lacks`, scan.Number, unicode.IsNumber, false},
		{"onigWordAdded", `runes Oniguruma's \w matches, outside brackets only, beyond the Unicode word classes`, scan.OnigWord, unicodeWord, true},
		{"onigWordRemoved", `word runes in Go's tables that Oniguruma's \w lacks`, scan.OnigWord, unicodeWord, false},
		{"onigDigitRemoved", `decimal digits in Go's tables that Oniguruma's \d lacks`, scan.OnigDigit, func(r rune) bool { return unicode.Is(unicode.Nd, r) }, false},
	}
	var b strings.Builder
	b.WriteString("// Code generated by TestUnicodeScan -unicode-scan -update from Python's tokenizers; DO NOT EDIT.\n\n")
	b.WriteString("package tokenizer\n\nimport \"unicode\"\n\n")
	b.WriteString("// The Rust tokenizers library classifies characters with Unicode tables of\n")
	b.WriteString("// several ages (the unicode_categories crate, the regex crate, Oniguruma).\n")
	b.WriteString("// These tables are where they differ from Go's, found by asking the\n")
	b.WriteString("// library about every code point.\n")
	for _, tb := range tables {
		hf := runeSet(tb.hf)
		var r16, r32 []string
		var lo, hi rune = -1, -1
		flush := func() {
			if lo < 0 {
				return
			}
			s := fmt.Sprintf("{0x%04X, 0x%04X, 1}", lo, hi)
			if hi <= 0xFFFF {
				r16 = append(r16, s)
			} else {
				r32 = append(r32, s)
			}
			lo = -1
		}
		eachRune(func(r rune) {
			if tb.added && hf[r] && !tb.base(r) || !tb.added && !hf[r] && tb.base(r) {
				if lo >= 0 && r == hi+1 {
					hi = r
					return
				}
				flush()
				lo, hi = r, r
			}
		})
		flush()
		fmt.Fprintf(&b, "\n// %s: %s.\nvar %s = &unicode.RangeTable{\n", tb.name, tb.doc, tb.name)
		if len(r16) > 0 {
			fmt.Fprintf(&b, "\tR16: []unicode.Range16{%s},\n", strings.Join(r16, ", "))
		}
		if len(r32) > 0 {
			fmt.Fprintf(&b, "\tR32: []unicode.Range32{%s},\n", strings.Join(r32, ", "))
		}
		b.WriteString("}\n")
	}
	if err := os.WriteFile("unicode_tables.go", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("wrote unicode_tables.go; run gofmt")
}
