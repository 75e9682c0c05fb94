package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// unkPenalty is how much worse than the worst piece an unknown character
// scores (SentencePiece's kUnkPenalty).
const unkPenalty = 10.0

// unigramModel is SentencePiece's unigram language model: the best
// segmentation maximises the sum of piece log-probabilities (Viterbi), and
// characters no piece covers become the unknown token, fused when adjacent.
type unigramModel struct {
	pieces       []string
	scores       []float64
	index        map[string]int
	trie         byteTrie
	unkID        int // -1 when there is none
	byteFallback bool
	minScore     float64
	byteIDs      [256]int

	cache wordCache
}

func parseUnigram(o jsonObj) (*unigramModel, error) {
	items, err := o.array("vocab")
	if err != nil {
		return nil, err
	}
	m := &unigramModel{unkID: -1, minScore: math.Inf(1), index: make(map[string]int, len(items))}
	m.pieces = make([]string, len(items))
	m.scores = make([]float64, len(items))
	for i, item := range items {
		var pair []json.RawMessage
		if err := json.Unmarshal(item, &pair); err != nil || len(pair) != 2 {
			return nil, fieldErr(indexPath(o.field("vocab"), i), "expected [piece, score], got %s", jsonKind(item))
		}
		if err := json.Unmarshal(pair[0], &m.pieces[i]); err != nil {
			return nil, fieldErr(indexPath(o.field("vocab"), i)+"[0]", "expected a string, got %s", jsonKind(pair[0]))
		}
		score, ok := parseSerdeFloat(strings.TrimSpace(string(pair[1])))
		if !ok {
			return nil, fieldErr(indexPath(o.field("vocab"), i)+"[1]", "expected a number, got %s", jsonKind(pair[1]))
		}
		m.scores[i] = score
		m.index[m.pieces[i]] = i
		m.minScore = min(m.minScore, m.scores[i])
	}
	if len(items) == 0 {
		return nil, fieldErr(o.field("vocab"), "empty vocabulary")
	}
	if o.has("unk_id") {
		if m.unkID, err = o.integer("unk_id", 0); err != nil {
			return nil, err
		}
		if m.unkID >= len(items) {
			return nil, fieldErr(o.field("unk_id"), "%d is outside the vocabulary of %d pieces", m.unkID, len(items))
		}
	}
	if m.byteFallback, err = o.boolean("byte_fallback", false); err != nil {
		return nil, err
	}
	for p, id := range m.index {
		m.trie.insert(p, id, true)
	}
	for b := range m.byteIDs {
		id, ok := m.index[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id = -1
		}
		m.byteIDs[b] = id
	}
	return m, nil
}

func (m *unigramModel) tokenToID(tok string) (int, bool) {
	id, ok := m.index[tok]
	return id, ok
}

func (m *unigramModel) idToToken(id int) (string, bool) {
	if id < 0 || id >= len(m.pieces) {
		return "", false
	}
	return m.pieces[id], true
}

func (m *unigramModel) size() int { return len(m.pieces) }

func (m *unigramModel) tokenize(word string, out []token) ([]token, error) {
	if word == "" {
		return out, nil
	}
	return m.cache.tokenize(word, out, m.segment)
}

type viterbiNode struct {
	id    int
	score float64
	from  int // start of the best piece ending here; -1 when unreached
}

// segment runs the Viterbi search over s and turns the pieces into tokens.
func (m *unigramModel) segment(s string, out []token) ([]token, error) {
	unkScore := m.minScore - unkPenalty
	best := make([]viterbiNode, len(s)+1)
	for i := range best {
		best[i].from = -1
	}
	for start := 0; start < len(s); {
		_, charLen := utf8.DecodeRuneInString(s[start:])
		base := best[start].score
		single := false
		m.trie.prefixes(s[start:], func(n, id int) {
			cand := base + m.scores[id]
			t := &best[start+n]
			if t.from < 0 || cand > t.score {
				*t = viterbiNode{id, cand, start}
			}
			if n == charLen {
				single = true
			}
		})
		if !single {
			if m.unkID < 0 {
				return out, fmt.Errorf("tokenizer: the unigram model has no unk_id and %q is not in its vocabulary", s[start:start+charLen])
			}
			t := &best[start+charLen]
			if cand := base + unkScore; t.from < 0 || cand > t.score {
				*t = viterbiNode{m.unkID, cand, start}
			}
		}
		start += charLen
	}
	// Walk back, fusing runs of unknown pieces.
	var pieces []span
	run := span{-1, -1}
	for end := len(s); end > 0; {
		n := best[end]
		if n.from < 0 {
			return out, fmt.Errorf("tokenizer: unigram lattice broken at byte %d", end)
		}
		if m.unkID >= 0 && n.id == m.unkID {
			if run.start < 0 {
				run.end = end
			}
			run.start = n.from
		} else {
			if run.start >= 0 {
				pieces = append(pieces, run)
				run = span{-1, -1}
			}
			pieces = append(pieces, span{n.from, end})
		}
		end = n.from
	}
	if run.start >= 0 {
		pieces = append(pieces, run)
	}
	for i := len(pieces) - 1; i >= 0; i-- {
		p := pieces[i]
		str := s[p.start:p.end]
		if id, ok := m.index[str]; ok {
			out = append(out, token{id, str, p.start, p.end})
			continue
		}
		if m.byteFallback && m.allBytes(str) {
			for k := 0; k < len(str); k++ {
				id := m.byteIDs[str[k]]
				out = append(out, token{id, m.pieces[id], p.start, p.end})
			}
			continue
		}
		if m.unkID < 0 {
			return out, fmt.Errorf("tokenizer: the unigram model has no unk_id and %q is not in its vocabulary", str)
		}
		out = append(out, token{m.unkID, str, p.start, p.end})
	}
	return out, nil
}

func (m *unigramModel) allBytes(s string) bool {
	for k := 0; k < len(s); k++ {
		if m.byteIDs[s[k]] < 0 {
			return false
		}
	}
	return true
}

// byteTrie finds the entries that are prefixes of a string. Nodes with
// many children index them by byte; the others keep a short list.
type byteTrie struct {
	nodes []trieNode
}

type trieNode struct {
	labels []byte
	next   []int32
	dense  []int32 // 256 children (0 = none) once the list grows long
	id     int32   // entry ending here, -1 for none
}

const trieDenseAt = 8

func (t *byteTrie) child(cur int, c byte) int {
	nd := &t.nodes[cur]
	if nd.dense != nil {
		return int(nd.dense[c])
	}
	for i, l := range nd.labels {
		if l == c {
			return int(nd.next[i])
		}
	}
	return 0
}

// insert adds s with id, replacing the id of an existing entry when
// replace is set.
func (t *byteTrie) insert(s string, id int, replace bool) {
	if len(t.nodes) == 0 {
		t.nodes = append(t.nodes, trieNode{id: -1})
	}
	cur := 0
	for i := 0; i < len(s); i++ {
		nx := t.child(cur, s[i])
		if nx == 0 {
			nx = len(t.nodes)
			t.nodes = append(t.nodes, trieNode{id: -1})
			nd := &t.nodes[cur]
			if nd.dense != nil {
				nd.dense[s[i]] = int32(nx)
			} else {
				nd.labels = append(nd.labels, s[i])
				nd.next = append(nd.next, int32(nx))
				if len(nd.labels) > trieDenseAt {
					nd.dense = make([]int32, 256)
					for k, l := range nd.labels {
						nd.dense[l] = nd.next[k]
					}
					nd.labels, nd.next = nil, nil
				}
			}
		}
		cur = nx
	}
	if t.nodes[cur].id < 0 || replace {
		t.nodes[cur].id = int32(id)
	}
}

// prefixes calls f with the length and id of every entry that is a prefix
// of s, shortest first.
func (t *byteTrie) prefixes(s string, f func(n, id int)) {
	if len(t.nodes) == 0 {
		return
	}
	cur := 0
	for i := 0; i < len(s); i++ {
		cur = t.child(cur, s[i])
		if cur == 0 {
			return
		}
		if id := t.nodes[cur].id; id >= 0 {
			f(i+1, int(id))
		}
	}
}
