package tokenizer

import "sync"

// wordCacheSize bounds a wordCache: when full, it forgets every word.
const wordCacheSize = 10000

// wordCacheMaxLen is the byte length from which words are not remembered.
const wordCacheMaxLen = 256

// wordCache remembers the tokens of recently seen words for the models
// whose tokenization of a word is costly (BPE's merges, unigram's
// Viterbi search). It is safe for concurrent use; the zero value is ready.
type wordCache struct {
	mu    sync.Mutex
	words map[string][]token
}

// tokenize appends word's tokens to out: the remembered ones, or those
// split computes, which are then remembered.
func (c *wordCache) tokenize(word string, out []token, split func(string, []token) ([]token, error)) ([]token, error) {
	c.mu.Lock()
	hit, ok := c.words[word]
	c.mu.Unlock()
	if ok {
		return append(out, hit...), nil
	}
	start := len(out)
	out, err := split(word, out)
	if err != nil {
		return out, err
	}
	if len(word) < wordCacheMaxLen {
		c.mu.Lock()
		if c.words == nil {
			c.words = make(map[string][]token)
		} else if len(c.words) >= wordCacheSize {
			clear(c.words)
		}
		c.words[word] = append([]token(nil), out[start:]...)
		c.mu.Unlock()
	}
	return out, nil
}
