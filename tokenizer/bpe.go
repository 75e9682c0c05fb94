package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

type bpeMerge struct {
	rank, newID int32
}

// bpeModel is byte-pair encoding as Hugging Face runs it: split a word into
// characters (or <0xNN> byte tokens under byte_fallback), then apply the
// lowest-ranked merge among adjacent pairs until none applies. A dropout in
// the file is ignored: encoding here is always deterministic.
type bpeModel struct {
	vocab        map[string]int
	ids          idTable
	merges       map[uint64]bpeMerge
	mergeOrder   []uint64 // the pairs as the file lists them
	unk          *string
	prefix       *string
	suffix       *string
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	byteIDs      [256]int

	cache wordCache
}

func parseBPE(o jsonObj) (*bpeModel, error) {
	m := &bpeModel{}
	var err error
	vraw, ok := o.get("vocab")
	if !ok {
		return nil, fieldErr(o.field("vocab"), "missing")
	}
	if err := json.Unmarshal(vraw, &m.vocab); err != nil {
		return nil, fieldErr(o.field("vocab"), "expected an object mapping tokens to non-negative ids, got %s", jsonKind(vraw))
	}
	for tok, id := range m.vocab {
		if id < 0 || id > 1<<31-1 {
			return nil, fieldErr(o.field("vocab"), "token %q has id %d, outside 0..2147483647", tok, id)
		}
	}
	m.ids = newIDTable(m.vocab)
	if m.unk, err = o.optStr("unk_token"); err != nil {
		return nil, err
	}
	if m.prefix, err = o.optStr("continuing_subword_prefix"); err != nil {
		return nil, err
	}
	if m.suffix, err = o.optStr("end_of_word_suffix"); err != nil {
		return nil, err
	}
	if m.fuseUnk, err = o.boolean("fuse_unk", false); err != nil {
		return nil, err
	}
	if m.byteFallback, err = o.boolean("byte_fallback", false); err != nil {
		return nil, err
	}
	if m.ignoreMerges, err = o.boolean("ignore_merges", false); err != nil {
		return nil, err
	}
	if _, err = o.float("dropout", 0); err != nil {
		return nil, err
	}
	for b := range m.byteIDs {
		id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id = -1
		}
		m.byteIDs[b] = id
	}
	pairs, err := parseMerges(o)
	if err != nil {
		return nil, err
	}
	prefixLen := 0
	if m.prefix != nil {
		prefixLen = len(*m.prefix)
	}
	m.merges = make(map[uint64]bpeMerge, len(pairs))
	m.mergeOrder = make([]uint64, len(pairs))
	for i, p := range pairs {
		a, ok := m.vocab[p[0]]
		if !ok {
			return nil, fieldErr(indexPath(o.field("merges"), i), "token %q is not in the vocabulary", p[0])
		}
		b, ok := m.vocab[p[1]]
		if !ok {
			return nil, fieldErr(indexPath(o.field("merges"), i), "token %q is not in the vocabulary", p[1])
		}
		right := p[1]
		if prefixLen <= len(right) {
			right = right[prefixLen:]
		}
		merged := p[0] + right
		id, ok := m.vocab[merged]
		if !ok {
			return nil, fieldErr(indexPath(o.field("merges"), i), "merged token %q is not in the vocabulary", merged)
		}
		m.merges[pairKey(a, b)] = bpeMerge{int32(i), int32(id)}
		m.mergeOrder[i] = pairKey(a, b)
	}
	return m, nil
}

// parseMerges accepts both layouts: ["a b", ...] and [["a", "b"], ...].
func parseMerges(o jsonObj) ([][2]string, error) {
	if !o.has("merges") {
		return nil, nil
	}
	items, err := o.array("merges")
	if err != nil {
		return nil, err
	}
	out := make([][2]string, len(items))
	for i, item := range items {
		var s string
		if json.Unmarshal(item, &s) == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fieldErr(indexPath(o.field("merges"), i), "expected two tokens separated by a space, got %q", s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(item, &pair); err != nil || len(pair) != 2 {
			return nil, fieldErr(indexPath(o.field("merges"), i), `expected "a b" or ["a", "b"], got %s`, strings.TrimSpace(string(item)))
		}
		out[i] = [2]string{pair[0], pair[1]}
	}
	return out, nil
}

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (m *bpeModel) tokenToID(tok string) (int, bool) {
	id, ok := m.vocab[tok]
	return id, ok
}

func (m *bpeModel) idToToken(id int) (string, bool) { return m.ids.get(id) }

func (m *bpeModel) size() int { return len(m.vocab) }

func (m *bpeModel) tokenize(word string, out []token) ([]token, error) {
	if word == "" {
		return out, nil
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(out, token{id, word, 0, len(word)}), nil
		}
	}
	return m.cache.tokenize(word, out, m.mergeWord)
}

type bpeSymbol struct {
	id         int
	prev, next int
	len        int // bytes of the word it covers; 0 once merged away
}

// mergeWord is the heart of BPE; ties between equal ranks go to the
// leftmost pair, and stale queue entries are skipped, as in Hugging Face.
func (m *bpeModel) mergeWord(w string, out []token) ([]token, error) {
	syms := make([]bpeSymbol, 0, len(w))
	add := func(id, n int) {
		syms = append(syms, bpeSymbol{id: id, prev: len(syms) - 1, next: len(syms) + 1, len: n})
	}
	unkID, unkLen := -1, 0
	for i := 0; i < len(w); {
		_, sz := utf8.DecodeRuneInString(w[i:])
		end := i + sz
		s := w[i:end]
		if i > 0 && m.prefix != nil {
			s = *m.prefix + s
		}
		if end == len(w) && m.suffix != nil {
			s += *m.suffix
		}
		i = end
		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, sz)
			continue
		}
		if m.byteFallback && m.allBytes(s) {
			for k := 0; k < len(s); k++ {
				add(m.byteIDs[s[k]], 1)
			}
			continue
		}
		if m.unk == nil {
			continue
		}
		id, ok := m.vocab[*m.unk]
		if !ok {
			return out, fmt.Errorf("tokenizer: unknown token %q is not in the vocabulary", *m.unk)
		}
		switch {
		case unkID >= 0 && m.fuseUnk:
			unkLen += sz
		case unkID >= 0:
			add(unkID, unkLen)
			unkID, unkLen = id, sz
		default:
			unkID, unkLen = id, sz
		}
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	if len(syms) > 1 && len(m.merges) > 0 {
		m.mergeAll(syms)
	}
	pos := 0
	for _, s := range syms {
		if s.len == 0 {
			continue
		}
		v, _ := m.ids.get(s.id)
		out = append(out, token{s.id, v, pos, pos + s.len})
		pos += s.len
	}
	return out, nil
}

func (m *bpeModel) allBytes(s string) bool {
	for k := 0; k < len(s); k++ {
		if m.byteIDs[s[k]] < 0 {
			return false
		}
	}
	return true
}

type mergeItem struct {
	rank, pos int32
	newID     int32
}

// mergeFirst orders pending merges by rank, then by position.
func mergeFirst(a, b mergeItem) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

// mergeAll applies merges in place; merged-away symbols get len 0.
func (m *bpeModel) mergeAll(syms []bpeSymbol) {
	q := newMinHeap(len(syms), mergeFirst)
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			q.push(mergeItem{mg.rank, int32(i), mg.newID})
		}
	}
	for q.len() > 0 {
		top := q.pop()
		pos := int(top.pos)
		cur := &syms[pos]
		if cur.len == 0 || cur.next < 0 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		if mg, ok := m.merges[pairKey(cur.id, right.id)]; !ok || mg.newID != top.newID {
			continue
		}
		cur.id = int(top.newID)
		cur.len += right.len
		cur.next = right.next
		syms[nextPos].len = 0
		if right.next >= 0 && right.next < len(syms) {
			syms[right.next].prev = pos
		}
		if cur.prev >= 0 {
			if mg, ok := m.merges[pairKey(syms[cur.prev].id, cur.id)]; ok {
				q.push(mergeItem{mg.rank, int32(cur.prev), mg.newID})
			}
		}
		if cur.next >= 0 && cur.next < len(syms) {
			if mg, ok := m.merges[pairKey(cur.id, syms[cur.next].id)]; ok {
				q.push(mergeItem{mg.rank, top.pos, mg.newID})
			}
		}
	}
}
