package eval

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/migu-ml/migu/internal/testenv"
)

// TestPyCapitalize checks the cases where Go's simple case mappings and
// Python's str.capitalize part ways; every want is Python 3.11's output.
func TestPyCapitalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"hello WORLD", "Hello world"},
		{"ébc D", "Ébc d"},
		{" x", " x"},
		{"ß", "Ss"}, // title case is two letters
		{"ßA", "Ssa"},
		{"ﬁx", "Fix"},    // ligature split
		{"Aﬃ", "Aﬃ"},     // only the first character is title-cased
		{"ŉ", "ʼN"},      // apostrophe + N
		{"ǰ", "J\u030c"}, // J + combining caron
		{"ǄX", "ǅx"},     // title-case digraph, not the capital one
		{"ǅX", "ǅx"},
		{"ᾳ", "ᾼ"},         // the title-case form with prosgegrammeni
		{"aİ", "Ai\u0307"}, // i + combining dot above
		{"ΑΣ", "Ας"},       // word-final sigma
		{"ΑΣ Β", "Ας β"},
		{"ΑΣΑ", "Ασα"}, // followed by a cased letter: not final
		{"Σ", "Σ"},     // the first character is title-cased
		{"ΣΣ", "Σς"},
		{" Σ", " σ"},   // nothing cased before it
		{"ΑΣ'", "Ας'"}, // apostrophe is case-ignorable
		{"Α'Σ", "Α'ς"},
		{"A.Σ", "A.ς"},           // so is a full stop (MidNumLet)
		{"Α\u0301Σ", "Α\u0301ς"}, // and a combining mark
		{"ΑΣ\u0301α", "Ασ\u0301α"},
		{"ΌΣΟΣ ΣΟΦΌΣ", "Όσος σοφός"},
		{"\xffA", "\uFFFDa"}, // invalid UTF-8 reads as U+FFFD
	}
	for _, tc := range tests {
		if got := pyCapitalize(tc.in); got != tc.want {
			t.Errorf("pyCapitalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// capitalizeScript capitalizes a JSON list of strings and writes the
// results as a JSON list, after the Unicode version of this Python.
const capitalizeScript = `
import json, sys, unicodedata
strings = json.load(open(sys.argv[1], encoding="utf-8"))
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump({"unicode": unicodedata.unidata_version, "out": [s.capitalize() for s in strings]}, f)
`

// TestPyCapitalizeMatchesPython compares pyCapitalize with the reference
// Python's str.capitalize on every code point (surrogates aside) as the
// first character, as a middle character and beside a capital sigma on
// either side (which exercises the Cased and Case_Ignorable tables), and on
// random mixes of letters that case specially, sigmas, case-ignorable
// characters and arbitrary code points.
func TestPyCapitalizeMatchesPython(t *testing.T) {
	testenv.Python(t)
	var in []string
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		c := string(r)
		in = append(in, c+"Hİ", "x"+c+"Σ", "xΣ"+c)
	}
	special := []rune("aZ .'’:\u00ad\u0301\u0345\u02b0ΣσςΑαİıißﬁﬃŉǰǄǅǆᾳᾼΐ \t")
	rng := rand.New(rand.NewPCG(15, 13))
	for range 200_000 {
		var b strings.Builder
		for range rng.IntN(9) {
			if rng.IntN(4) == 0 {
				r := rune(rng.IntN(unicode.MaxRune + 1))
				if r >= 0xD800 && r <= 0xDFFF {
					r = 'Σ'
				}
				b.WriteRune(r)
			} else {
				b.WriteRune(special[rng.IntN(len(special))])
			}
		}
		in = append(in, b.String())
	}

	dir := t.TempDir()
	inPath, outPath := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.json")
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunPython(t, capitalizeScript, inPath, outPath)
	raw, err = os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var py struct {
		Unicode string   `json:"unicode"`
		Out     []string `json:"out"`
	}
	if err := json.Unmarshal(raw, &py); err != nil {
		t.Fatal(err)
	}
	if py.Unicode != pyUnicodeVersion {
		t.Fatalf("the reference Python has Unicode %s, pycase_tables.go was generated from %s: run go generate ./eval", py.Unicode, pyUnicodeVersion)
	}
	if len(py.Out) != len(in) {
		t.Fatalf("Python returned %d strings for %d", len(py.Out), len(in))
	}
	diffs := 0
	for i, s := range in {
		if got := pyCapitalize(s); got != py.Out[i] {
			if diffs++; diffs <= 10 {
				t.Errorf("pyCapitalize(%+q) = %+q, Python gives %+q", s, got, py.Out[i])
			}
		}
	}
	t.Logf("%d strings compared with Python's str.capitalize (Unicode %s), %d differ", len(in), py.Unicode, diffs)
}
