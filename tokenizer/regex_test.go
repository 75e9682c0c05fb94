package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/migu-ml/migu/internal/testenv"
)

// GPT-4o's split pattern, as its tokenizer.json spells it.
const gpt4oPattern = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`

func mustOnig(t testing.TB, pat string) *onigRegex {
	t.Helper()
	re, err := compileOnig(pat)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

func matchTexts(s string, ms []span) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = s[m.start:m.end]
	}
	return out
}

func TestOnigRegexCases(t *testing.T) {
	cases := []struct {
		pat, text string
		want      []string
	}{
		{`\s+(?!\S)|\s+`, "a   b  ", []string{"  ", " ", "  "}},
		{llama3Split, "I'm 12345 HELLO'S\n\n  x", []string{"I", "'m", " ", "123", "45", " HELLO", "'S", "\n\n", " ", " x"}},
		{qwen2Split, "x=12;\r\n", []string{"x", "=", "1", "2", ";\r\n"}},
		{`(?<=a)b`, "abcb", []string{"b"}},
		{`(?<!a)b`, "abcb", []string{"b"}},
		{`(?>a+)b|a+`, "aaa", []string{"aaa"}},
		{`a++a|b`, "aaab", []string{"b"}},
		{`a{,2}`, "aaa", []string{"aa", "a"}},
		{`x{`, "x{", []string{"x{"}},
		{`^a|b$`, "a\nab\nb", []string{"a", "a", "b", "b"}},
		{`a(?i)b|c`, "aB C aC", []string{"aB", "aC"}},
		{`[a-z&&[^aeiou]]+`, "hello", []string{"h", "ll"}},
		{`\d{1,3}(?=(?:\d{3})*\b)`, "1234567", []string{"1", "234", "567"}},
		{`(?i)'S`, "'s 'ſ 'S", []string{"'s", "'ſ", "'S"}},
		{`[[:alpha:]]+`, "ab1c", []string{"ab", "c"}},
		{`\p{Han}+`, "a中文b", []string{"中文"}},
		{`(a|ab)(c|bcd)(d*)`, "abcd", []string{"abcd"}},
		{`(?:a|)*b`, "aab", []string{"aab"}},
		{`\x{4E00}-|[\x{4E00}-\x{9FA5}]`, "一-二", []string{"一-", "二"}},
	}
	for _, c := range cases {
		got := matchTexts(c.text, mustOnig(t, c.pat).findAll(c.text))
		if !slices.Equal(got, c.want) {
			t.Errorf("%q on %q: %q, want %q", c.pat, c.text, got, c.want)
		}
	}
}

// TestOnigGPT2 checks the matcher against the hand-written GPT-2 splitter.
func TestOnigGPT2(t *testing.T) {
	re := mustOnig(t, gpt2Pattern)
	for _, s := range append(append(randomStrings(400, 21), exoticStrings(400, 22)...), parityCorpus...) {
		s = validUTF8(s)
		if got, want := re.findAll(s), gpt2Matches(s); !slices.Equal(got, want) {
			t.Fatalf("%q: %q, want %q", s, matchTexts(s, got), matchTexts(s, want))
		}
	}
}

// regexGen builds a random pattern, within the syntax that RE2 and
// Oniguruma read alike, from fuzz bytes.
type regexGen struct {
	data []byte
	pos  int
}

func (g *regexGen) pick(n int) int {
	if g.pos >= len(g.data) {
		return 1 % n // stops the loops once the bytes run out
	}
	b := g.data[g.pos]
	g.pos++
	return int(b) % n
}

var genAtoms = []string{"a", "b", "c", " ", `\n`, "é", "中", "1", "'", ".", `\d`, `\s`, `\w`, `\D`, `\S`, `\W`,
	"[abc]", "[^a ]", "[a-c1]", `[\s\d]`, `[^\s\p{L}\p{N}]`, `\p{L}`, `\p{N}`, `[\r\n]`, "^", "$", "A", "[^\\n]"}

func (g *regexGen) alt(depth int) string {
	parts := []string{g.seq(depth)}
	for g.pick(4) == 0 {
		parts = append(parts, g.seq(depth))
	}
	return strings.Join(parts, "|")
}

func (g *regexGen) seq(depth int) string {
	var b strings.Builder
	for n := g.pick(4) + 1; n > 0; n-- {
		b.WriteString(g.item(depth))
	}
	return b.String()
}

func (g *regexGen) item(depth int) string {
	var atom string
	switch k := g.pick(8); {
	case k == 0 && depth > 0:
		atom = "(?:" + g.alt(depth-1) + ")"
	case k == 1 && depth > 0:
		atom = "(?i:" + g.alt(depth-1) + ")"
	default:
		atom = genAtoms[g.pick(len(genAtoms))]
	}
	if atom == "^" || atom == "$" {
		return atom
	}
	quants := []string{"", "", "", "?", "*", "+", "{0,2}", "{1,3}", "{2}", "??", "*?", "+?", "{1,2}?"}
	return atom + quants[g.pick(len(quants))]
}

// nullableLoop reports a quantified group that can match the empty
// string: RE2 and backtracking engines treat its empty iterations
// differently, so such patterns are left out.
func nullableLoop(pat string) bool {
	n, err := (&reParser{src: pat}).parseAlt()
	if err != nil {
		return true
	}
	var walk func(reNode) bool
	walk = func(n reNode) bool {
		switch n := n.(type) {
		case reSeq:
			return slices.ContainsFunc(n, walk)
		case reAlt:
			return slices.ContainsFunc(n, walk)
		case *reRepeat:
			if _, ok := n.sub.(*runeClass); !ok {
				if lo, _ := runeLengths(n.sub); lo == 0 {
					return true
				}
			}
			return walk(n.sub)
		}
		return false
	}
	return walk(n)
}

func checkAgainstRE2(t *testing.T, pat, text string) {
	if strings.Contains(strings.ReplaceAll(pat, "[^", ""), "^") {
		// Oniguruma's ^ never matches at the end of the text, RE2's does
		// after a final newline.
		text = strings.TrimRight(text, "\n")
	}
	re2, err := regexp.Compile("(?m)" + unicodeClasses(pat))
	if err != nil {
		t.Fatalf("RE2 rejects %q: %v", pat, err)
	}
	var want []span
	for _, m := range re2.FindAllStringIndex(text, -1) {
		want = append(want, span{m[0], m[1]})
	}
	got := mustOnig(t, pat).findAll(text)
	if !slices.Equal(got, want) {
		t.Fatalf("%q on %q:\n  onig: %v %q\n  re2:  %v %q", pat, text, got, matchTexts(text, got), want, matchTexts(text, want))
	}
}

// FuzzRegexVsRE2 compares the matcher with Go's regexp on patterns
// without look-around, where both engines must agree.
func FuzzRegexVsRE2(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5}, "abc 12 中文\n")
	f.Add([]byte{9, 0, 7, 200, 33, 14}, "aé'b  c\n\n1")
	f.Add([]byte("pattern seed bytes"), "The quick 123 fox's\tjump")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		text = validUTF8(text)
		for _, r := range text {
			if isOnigLetter(r) != unicode.IsLetter(r) || isOnigNumber(r) != unicode.IsNumber(r) {
				return
			}
		}
		g := &regexGen{data: data}
		pat := g.alt(2)
		if nullableLoop(pat) {
			return
		}
		checkAgainstRE2(t, pat, text)
	})
}

func TestRegexVsRE2(t *testing.T) {
	texts := append(randomStrings(30, 31), "aa bb\ncc 12 中文 é'x\n\n", "", "\n", "1a1a1")
	for seed := range 3000 {
		data := []byte(fmt.Sprintf("%d-%d-%d-%d", seed, seed*7, seed*13, seed*31))
		for i := range data {
			data[i] = data[i]*31 + byte(seed*17+i*5)
		}
		g := &regexGen{data: data}
		pat := g.alt(2)
		if nullableLoop(pat) {
			continue
		}
		checkAgainstRE2(t, pat, texts[seed%len(texts)])
	}
}

// onigGen extends the RE2-compatible grammar with what only Oniguruma
// has: look-around, atomic groups, possessive quantifiers, isolated
// options, line anchors and Unicode word boundaries.
type onigGen struct{ regexGen }

var onigAtoms = []string{`\b`, `\B`, `\A`, `\z`, `\Z`, `\h`, `[[:alpha:]]`, `\p{Lu}`, `\p{Ll}`, `\p{P}`, `[^\p{L}]`,
	`[a-z&&[^aeiou]]`, `\x{4E2D}`, `\p{Han}`}

func (g *onigGen) alt(depth int) string {
	parts := []string{g.seq(depth)}
	for g.pick(4) == 0 {
		parts = append(parts, g.seq(depth))
	}
	return strings.Join(parts, "|")
}

func (g *onigGen) seq(depth int) string {
	var b strings.Builder
	for n := g.pick(4) + 1; n > 0; n-- {
		b.WriteString(g.item(depth))
	}
	return b.String()
}

func (g *onigGen) item(depth int) string {
	var atom string
	switch k := g.pick(14); {
	case k == 0 && depth > 0:
		atom = "(?:" + g.alt(depth-1) + ")"
	case k == 1 && depth > 0:
		atom = "(?=" + g.alt(depth-1) + ")"
	case k == 2 && depth > 0:
		atom = "(?!" + g.alt(depth-1) + ")"
	case k == 3 && depth > 0:
		atom = "(?>" + g.alt(depth-1) + ")"
	case k == 4:
		atom = []string{"(?<=a)", "(?<!b)", "(?<=\\s|ab)", "(?<!\\p{L})"}[g.pick(4)]
	case k == 5:
		atom = onigAtoms[g.pick(len(onigAtoms))]
	case k == 6 && depth > 0:
		return "(?i)" + g.alt(depth-1)
	case k == 7 && depth > 0:
		atom = "(?i:" + g.alt(depth-1) + ")"
	default:
		atom = genAtoms[g.pick(len(genAtoms))]
	}
	if strings.HasPrefix(atom, "(?=") || strings.HasPrefix(atom, "(?!") || strings.HasPrefix(atom, "(?<") || strings.HasPrefix(atom, `\`) && len(atom) == 2 && strings.Contains("bBAzZ", atom[1:]) || atom == "^" || atom == "$" {
		return atom
	}
	quants := []string{"", "", "", "?", "*", "+", "{0,2}", "{1,3}", "{2}", "??", "*?", "+?", "?+", "*+", "++", "{,2}"}
	return atom + quants[g.pick(len(quants))]
}

// isolatedPieces are the pieces a Split pre-tokenizer with the Isolated
// behavior makes from the matches: each non-empty match and each gap.
func isolatedPieces(s string, ms []span) [][2]int {
	var out [][2]int
	prev := 0
	for _, m := range ms {
		if m.start > prev {
			out = append(out, [2]int{prev, m.start})
		}
		if m.end > m.start {
			out = append(out, [2]int{m.start, m.end})
		}
		prev = m.end
	}
	if prev < len(s) {
		out = append(out, [2]int{prev, len(s)})
	}
	return out
}

const onigScript = `
import json, sys
from tokenizers import Regex, pre_tokenizers
out = []
for pat, text in json.load(open(sys.argv[1], encoding="utf-8")):
    try:
        pieces = pre_tokenizers.Split(Regex(pat), "isolated").pre_tokenize_str(text)
    except Exception as e:
        out.append(None)
        continue
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    out.append([[starts[a], starts[b]] for _, (a, b) in pieces])
print(json.dumps(out))
`

// TestRegexVsOniguruma runs random patterns, look-around and atomic
// groups included, through the tokenizers library's Oniguruma and through
// the matcher, comparing the pieces a Split pre-tokenizer makes.
func TestRegexVsOniguruma(t *testing.T) {
	testenv.Python(t)
	texts := append(randomStrings(40, 51), "aa bb\ncc 12 中文 é'x\n\n", "AbC'S it'ſx ab\tba", "", "\n", "a\nb\n")
	var cases [][2]string
	for seed := range 3000 {
		data := []byte(fmt.Sprintf("%d.%d.%d.%d.%d", seed*3, seed*11, seed*17, seed*29, seed))
		for i := range data {
			data[i] = data[i]*37 + byte(seed*13+i*7)
		}
		g := &onigGen{regexGen{data: data}}
		pat := g.alt(2)
		if _, err := compileOnig(pat); err != nil {
			continue
		}
		cases = append(cases, [2]string{pat, validUTF8(texts[seed%len(texts)])})
	}
	for _, pat := range []string{gpt4oPattern, llama3Split, qwen2Split, gpt2Pattern} {
		for _, text := range texts {
			cases = append(cases, [2]string{pat, validUTF8(text)})
		}
	}
	dir := t.TempDir()
	data, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cases.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var want [][][2]int
	if err := json.Unmarshal(testenv.RunPython(t, onigScript, file), &want); err != nil {
		t.Fatal(err)
	}
	refused, bad := 0, 0
	for i, c := range cases {
		if want[i] == nil {
			refused++
			continue
		}
		got := isolatedPieces(c[1], mustOnig(t, c[0]).findAll(c[1]))
		if !slices.Equal(got, want[i]) && !(len(got) == 0 && len(want[i]) == 0) {
			bad++
			if bad <= 8 {
				t.Errorf("%q on %q:\n  go:   %v\n  onig: %v", c[0], c[1], got, want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d patterns split differently", bad, len(cases)-refused)
	}
	t.Logf("%d patterns agree with Oniguruma (%d more it refuses)", len(cases)-refused-bad, refused)
}

// FuzzCompileRegex feeds the parser arbitrary patterns: it must refuse or
// compile them without panicking, and matches must be in order and in
// bounds. Texts stay short, as nested quantifiers backtrack exponentially
// (in Oniguruma too).
func FuzzCompileRegex(f *testing.F) {
	for _, p := range []string{llama3Split, qwen2Split, gpt4oPattern, gpt2Pattern, `[a-z&&[^x]]{2,}`, `(?<=ab|c)d`, `(?i)x(?#c)y`, `[[:^alpha:]\]]`, `\x{1F600}+`, `a{,3}?`} {
		f.Add(p, "it's 12 ab cd\n")
	}
	f.Fuzz(func(t *testing.T, pat, text string) {
		re, err := compileOnig(pat)
		if err != nil {
			return
		}
		if len(text) > 16 {
			text = text[:16]
		}
		text = validUTF8(text)
		prev := 0
		for _, m := range re.findAll(text) {
			if m.start < prev || m.end < m.start || m.end > len(text) {
				t.Fatalf("%q on %q: bad match %v after %d", pat, text, m, prev)
			}
			prev = m.end
		}
	})
}

// TestRegexStepLimit: exponential backtracking stops at the step limit
// instead of hanging the tokenizer.
func TestRegexStepLimit(t *testing.T) {
	text := strings.Repeat("a", 40) + " ab"
	got := mustOnig(t, `(?:a|a)*b|\s`).findAll(text)
	if len(got) != 0 {
		t.Errorf("matches after giving up: %v", got)
	}
	if got := mustOnig(t, `(?:a|a)*b`).findAll("aab"); !slices.Equal(got, []span{{0, 3}}) {
		t.Errorf("short text: %v", got)
	}
}
