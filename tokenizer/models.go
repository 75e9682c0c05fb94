package tokenizer

// token is one model output: its id, its text, and its byte range in the
// word it came from.
type token struct {
	id         int
	value      string
	start, end int
}

// model turns one pre-tokenized word into tokens.
type model interface {
	tokenize(word string, out []token) ([]token, error)
	tokenToID(tok string) (int, bool)
	idToToken(id int) (string, bool)
	size() int
}

// idTable maps ids to token strings; ids may have gaps.
type idTable struct {
	dense  []string
	valid  []bool
	sparse map[int]string
}

func newIDTable(vocab map[string]int) idTable {
	maxID := -1
	for _, id := range vocab {
		maxID = max(maxID, id)
	}
	var t idTable
	if maxID < 2*len(vocab)+1024 {
		t.dense = make([]string, maxID+1)
		t.valid = make([]bool, maxID+1)
	} else {
		t.sparse = make(map[int]string, len(vocab))
	}
	for tok, id := range vocab {
		// Two tokens with one id: keep the smaller, so loading is deterministic.
		if old, ok := t.get(id); ok && old <= tok {
			continue
		}
		if t.sparse != nil {
			t.sparse[id] = tok
		} else {
			t.dense[id], t.valid[id] = tok, true
		}
	}
	return t
}

func (t idTable) get(id int) (string, bool) {
	if t.sparse != nil {
		s, ok := t.sparse[id]
		return s, ok
	}
	if id < 0 || id >= len(t.dense) || !t.valid[id] {
		return "", false
	}
	return t.dense[id], true
}
