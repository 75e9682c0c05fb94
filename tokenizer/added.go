package tokenizer

import (
	"encoding/json"
	"unicode/utf8"
)

// AddedToken is a token matched in the text before the model runs, such as
// "<s>" or "<mask>". Flags follow Hugging Face: LStrip/RStrip swallow the
// white space beside a match, SingleWord matches only between non-word
// characters, Normalized matches against the normalized text, Special ones
// are dropped by Decode(…, skipSpecialTokens=true).
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

func (a AddedToken) sameAs(b AddedToken) bool {
	a.ID, b.ID = 0, 0
	return a == b
}

// addedVocab holds the added tokens and finds them in text.
type addedVocab struct {
	byContent map[string]int
	byID      map[int]AddedToken
	special   map[string]bool
	order     []AddedToken // as listed in the file, for writing it back
	raw       *trieMatcher // tokens matched in the raw text
	norm      *trieMatcher // tokens matched in normalized text
}

func parseAddedTokens(path string, raw json.RawMessage) ([]AddedToken, error) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fieldErr(path, "expected an array, got %s", jsonKind(raw))
	}
	out := make([]AddedToken, 0, len(items))
	for i, item := range items {
		o, err := decodeObj(indexPath(path, i), item)
		if err != nil {
			return nil, err
		}
		var t AddedToken
		if t.ID, err = o.integer("id", 0); err != nil {
			return nil, err
		}
		if t.Content, err = o.reqStr("content"); err != nil {
			return nil, err
		}
		if t.SingleWord, err = o.boolean("single_word", false); err != nil {
			return nil, err
		}
		if t.LStrip, err = o.boolean("lstrip", false); err != nil {
			return nil, err
		}
		if t.RStrip, err = o.boolean("rstrip", false); err != nil {
			return nil, err
		}
		if t.Special, err = o.boolean("special", false); err != nil {
			return nil, err
		}
		if t.Normalized, err = o.boolean("normalized", !t.Special); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// newAddedVocab registers tokens the way Hugging Face does when it loads a
// file: a token already in the model keeps the model's id, a new one gets
// the next id after the model's vocabulary.
func newAddedVocab(tokens []AddedToken, m model, norm normalizer) *addedVocab {
	v := &addedVocab{byContent: map[string]int{}, byID: map[int]AddedToken{}, special: map[string]bool{}}
	var specials, classic []AddedToken
	for _, t := range tokens {
		if t.Special && t.Content != "" && !v.special[t.Content] {
			specials = append(specials, t)
			v.special[t.Content] = true
		}
	}
	for _, t := range tokens {
		if t.Content == "" {
			continue
		}
		dup := false
		for _, old := range v.byID {
			if old.sameAs(t) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		id, ok := v.byContent[t.Content]
		if !ok {
			id, ok = m.tokenToID(t.Content)
		}
		if !ok {
			id = m.size()
			maxID := -1
			for _, x := range v.byContent {
				maxID = max(maxID, x)
			}
			if maxID >= 0 && (maxID >= m.size() || m.size() == 0) {
				id = maxID + 1
			}
		}
		t.ID = id
		v.byContent[t.Content] = id
		v.byID[id] = t
		v.order = append(v.order, t)
		if !v.special[t.Content] {
			classic = append(classic, t)
		}
	}
	v.raw, v.norm = &trieMatcher{}, &trieMatcher{}
	for _, list := range [][]AddedToken{specials, classic} {
		for _, t := range list {
			id := v.byContent[t.Content]
			if !t.Normalized {
				v.raw.add(t.Content, id)
				continue
			}
			pat := t.Content
			if norm != nil {
				n := newNormString(pat, 0)
				norm.normalize(n)
				pat = n.s
			}
			v.norm.add(pat, id)
		}
	}
	return v
}

// split is a piece of the text on its way through the pipeline; tok is set
// once the piece is an added token.
type split struct {
	n   *normString
	tok *token
}

// extract finds the added tokens, normalizing the text between them: first
// the tokens matched raw, then the normalized ones in each normalized gap.
func (v *addedVocab) extract(norm normalizer, text string) []split {
	var out []split
	whole := newNormString(text, 0)
	for _, s := range v.splitOn(whole, v.raw) {
		if s.tok != nil {
			out = append(out, s)
			continue
		}
		if norm != nil {
			norm.normalize(s.n)
		}
		out = append(out, v.splitOn(s.n, v.norm)...)
	}
	return out
}

func (v *addedVocab) splitOn(n *normString, m *trieMatcher) []split {
	var out []split
	for _, p := range v.findMatches(n.s, m) {
		if p.start == p.end {
			continue
		}
		sl := n.slice(p.start, p.end)
		if p.id >= 0 {
			out = append(out, split{n: sl, tok: &token{p.id, sl.s, 0, len(sl.s)}})
		} else {
			out = append(out, split{n: sl})
		}
	}
	return out
}

type addedMatch struct {
	start, end int
	id         int // -1 for text between tokens
}

func (v *addedVocab) findMatches(s string, m *trieMatcher) []addedMatch {
	if s == "" {
		return nil
	}
	var out []addedMatch
	startOffset := 0
	m.each(s, func(start, stop, id int) {
		t := v.byID[id]
		if t.SingleWord {
			startSpace := start == 0 || !endsWithWord(s[:start])
			stopSpace := stop == len(s) || !startsWithWord(s[stop:])
			if !startSpace || !stopSpace {
				return
			}
		}
		if t.LStrip {
			start = max(trailingSpaceStart(s[:start]), startOffset)
		}
		if t.RStrip {
			stop += leadingSpaceLen(s[stop:])
		}
		if startOffset < start {
			out = append(out, addedMatch{startOffset, start, -1})
		}
		out = append(out, addedMatch{start, stop, id})
		startOffset = stop
	})
	if startOffset != len(s) {
		out = append(out, addedMatch{startOffset, len(s), -1})
	}
	return out
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWordChar(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWordChar(r)
}

// trailingSpaceStart is where the white space at the end of s begins.
func trailingSpaceStart(s string) int {
	end := len(s)
	for end > 0 {
		r, sz := utf8.DecodeLastRuneInString(s[:end])
		if !isWhitespace(r) {
			break
		}
		end -= sz
	}
	return end
}

// leadingSpaceLen is the byte length of the white space that starts s.
func leadingSpaceLen(s string) int {
	i := 0
	for i < len(s) {
		r, sz := utf8.DecodeRuneInString(s[i:])
		if !isWhitespace(r) {
			break
		}
		i += sz
	}
	return i
}

// trieMatcher finds patterns leftmost-longest, without overlaps, like the
// Aho-Corasick automaton Hugging Face uses.
type trieMatcher struct {
	trie byteTrie
	n    int
}

func (m *trieMatcher) add(pat string, id int) {
	if pat == "" {
		return
	}
	m.trie.insert(pat, id, false)
	m.n++
}

func (m *trieMatcher) each(s string, f func(start, end, id int)) {
	if m.n == 0 {
		return
	}
	for i := 0; i < len(s); {
		n, id := 0, -1
		m.trie.prefixes(s[i:], func(k, x int) { n, id = k, x })
		if n == 0 {
			i++
			continue
		}
		f(i, i+n, id)
		i += n
	}
}
