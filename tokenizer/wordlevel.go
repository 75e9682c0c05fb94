package tokenizer

import (
	"encoding/json"
	"fmt"
)

// wordLevelModel maps each pre-tokenized word to one id, or to the unknown
// token: the simplest tokenizer.json model, common in small test fixtures.
type wordLevelModel struct {
	vocab map[string]int
	ids   idTable
	unk   string
}

var _ model = (*wordLevelModel)(nil)

func parseWordLevel(o jsonObj) (*wordLevelModel, error) {
	m := &wordLevelModel{}
	vraw, ok := o.get("vocab")
	if !ok {
		return nil, fieldErr(o.field("vocab"), "missing")
	}
	if err := json.Unmarshal(vraw, &m.vocab); err != nil {
		return nil, fieldErr(o.field("vocab"), "expected an object mapping words to non-negative ids, got %s", jsonKind(vraw))
	}
	for w, id := range m.vocab {
		if id < 0 || id > 1<<31-1 {
			return nil, fieldErr(o.field("vocab"), "word %q has id %d, outside 0..2147483647", w, id)
		}
	}
	m.ids = newIDTable(m.vocab)
	var err error
	if m.unk, err = o.str("unk_token", "<unk>"); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *wordLevelModel) tokenize(word string, out []token) ([]token, error) {
	if word == "" {
		return out, nil
	}
	if id, ok := m.vocab[word]; ok {
		return append(out, token{id, word, 0, len(word)}), nil
	}
	id, ok := m.vocab[m.unk]
	if !ok {
		return out, fmt.Errorf("tokenizer: word %q is not in the WordLevel vocabulary and the unknown token %q is missing from it", word, m.unk)
	}
	return append(out, token{id, m.unk, 0, len(word)}), nil
}

func (m *wordLevelModel) tokenToID(tok string) (int, bool) {
	id, ok := m.vocab[tok]
	return id, ok
}

func (m *wordLevelModel) idToToken(id int) (string, bool) { return m.ids.get(id) }

func (m *wordLevelModel) size() int { return len(m.vocab) }
