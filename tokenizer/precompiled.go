package tokenizer

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// precompiled is SentencePiece's compiled normalization rules (the
// `precompiled_charsmap` of a model's normalizer_spec): a Darts-clone double
// array trie over UTF-8 byte strings whose values index a blob of
// NUL-terminated replacement strings.
type precompiled struct {
	units      []uint32
	normalized []byte
}

// parsePrecompiled reads the charsmap layout: a little-endian uint32 byte
// size of the trie, the trie's units, then the replacement strings.
func parsePrecompiled(b []byte) (*precompiled, error) {
	if len(b) < 4 {
		return nil, errors.New("charsmap shorter than its 4-byte header")
	}
	size := binary.LittleEndian.Uint32(b)
	if size%4 != 0 || uint64(size) > uint64(len(b)-4) {
		return nil, errors.New("charsmap trie size does not fit the data")
	}
	if size == 0 {
		return nil, errors.New("charsmap has an empty trie")
	}
	units := make([]uint32, size/4)
	for i := range units {
		units[i] = binary.LittleEndian.Uint32(b[4+4*i:])
	}
	normalized := b[4+size:]
	if !utf8.Valid(normalized) {
		return nil, errors.New("charsmap replacement strings are not valid UTF-8")
	}
	return &precompiled{units: units, normalized: normalized}, nil
}

func unitHasLeaf(u uint32) bool { return (u>>8)&1 == 1 }
func unitValue(u uint32) uint32 { return u & (1<<31 - 1) }
func unitLabel(u uint32) uint32 { return u & (1<<31 | 0xFF) }
func unitOffset(u uint32) uint32 {
	return (u >> 10) << ((u & (1 << 9)) >> 6)
}

// firstMatch returns the value of the shortest key of the trie that is a
// prefix of key.
func (p *precompiled) firstMatch(key string) (uint32, bool) {
	pos := uint32(0)
	pos ^= unitOffset(p.units[0])
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == 0 {
			break
		}
		pos ^= uint32(c)
		if int(pos) >= len(p.units) {
			return 0, false
		}
		u := p.units[pos]
		if unitLabel(u) != uint32(c) {
			return 0, false
		}
		pos ^= unitOffset(u)
		if unitHasLeaf(u) {
			if int(pos) >= len(p.units) {
				return 0, false
			}
			return unitValue(p.units[pos]), true
		}
	}
	return 0, false
}

// lookup returns the replacement of the shortest rule matching a prefix of
// chunk, which then stands for the whole chunk (as in Hugging Face).
func (p *precompiled) lookup(chunk string) (string, bool) {
	v, ok := p.firstMatch(chunk)
	if !ok || int(v) > len(p.normalized) {
		return "", false
	}
	end := int(v)
	for end < len(p.normalized) && p.normalized[end] != 0 {
		end++
	}
	return string(p.normalized[v:end]), true
}

// normalize applies the rules grapheme by grapheme: a cluster shorter than
// 6 bytes is looked up whole, otherwise (or failing that) rune by rune.
func (p *precompiled) normalize(n *normString) {
	s := n.s
	dest := make([]edit, 0, len(s))
	modified := false
	for i := 0; i < len(s); {
		gl := graphemeLen(s[i:])
		g := s[i : i+gl]
		i += gl
		if gl < 6 {
			if norm, ok := p.lookup(g); ok {
				modified = true
				dest = replaceEdits(dest, g, norm)
				continue
			}
		}
		for j := 0; j < len(g); {
			r, sz := utf8.DecodeRuneInString(g[j:])
			part := g[j : j+sz]
			j += sz
			if norm, ok := p.lookup(part); ok {
				modified = true
				dest = replaceEdits(dest, part, norm)
			} else {
				dest = append(dest, edit{r, 0})
			}
		}
	}
	if modified {
		n.transform(dest, 0)
	}
}

// replaceEdits appends the edits that replace old with new: extra runes are
// insertions, missing ones are removals charged to the last edit.
func replaceEdits(dest []edit, old, new string) []edit {
	diff := utf8.RuneCountInString(new) - utf8.RuneCountInString(old)
	for _, r := range new {
		dest = append(dest, edit{r, 0})
	}
	switch {
	case diff > 0:
		for k := len(dest) - 1; k >= len(dest)-diff; k-- {
			dest[k].change = 1
		}
	case diff < 0 && len(dest) > 0:
		dest[len(dest)-1].change += diff
	}
	return dest
}
