package data

import (
	"unicode/utf8"

	"github.com/migu-ml/migu/chat"
)

// Bounded work per record. Tokenizing a record costs time and memory in
// proportion to its text, but an example keeps at most MaxLen tokens
// (MaxTargetLen for a seq2seq target): without a bound, one 50 MB line
// with --max-len 32 is tokenized whole before being cut to 32 tokens.
// bounded shortens every field too long to matter before the record is
// tokenized: it keeps a piece of the field (its beginning, or its end
// where truncation keeps the end) that still tokenizes to more tokens
// than any example holds, found by tokenizing pieces that grow
// geometrically from about 8 bytes per token. The piece is cut at the
// start of a run of white space, a boundary of every pre-tokenizer migu
// reads, so the words before the cut give the tokens the whole field
// gives them; boundMargin further tokens of slack stand between the cut
// and any token an example keeps. The word at the field's other end is
// kept too, so that where the field meets the template's text the tokens
// are the whole field's. A run without white space longer than maxWord
// is cut inside (see maxWord). The examples are then those of the whole
// record (TestBoundedEncoding and FuzzBoundedEncoding compare with full
// tokenization), whether truncation keeps a field's beginning (text,
// answers, chat, a templated prompt's content) or its end (a verbatim
// prompt, an instruction followed by an input).

// boundMargin is the number of tokens a shortened field yields beyond the
// longest example, so that no kept token lies near the cut.
const boundMargin = 16

// bytesPerToken is the first guess of a piece's size per token needed.
const bytesPerToken = 8

// boundLimit is the number of tokens a shortened field must still yield.
func (e *Encoder) boundLimit() int {
	return max(e.cfg.MaxLen, e.cfg.MaxTargetLen) + boundMargin
}

// bounded returns r, or a copy of it whose fields too long to fit an
// example are shortened as the comment above describes.
func (e *Encoder) bounded(r *Record) (*Record, error) {
	if e.unbounded {
		return r, nil
	}
	need := e.boundLimit()
	short := bytesPerToken * need
	long := func(s string) bool { return len(s) > short }
	some := long(r.Instruction) || long(r.Input) || long(r.Prompt) || long(r.Output) ||
		long(r.Sentence) || long(r.Label) || long(r.Text)
	for _, m := range r.Messages {
		some = some || long(m.Content)
	}
	if !some {
		return r, nil
	}
	c := *r
	var err error
	head := func(s *string) {
		if err == nil && long(*s) {
			*s, err = e.headFor(*s, need)
		}
	}
	tail := func(s *string) {
		if err == nil && long(*s) {
			*s, err = e.tailFor(*s, need)
		}
	}
	head(&c.Input)
	head(&c.Output)
	head(&c.Sentence)
	head(&c.Label)
	head(&c.Text)
	// Where clm and seq2seq truncate a prompt (Encoder.prompt, shorten),
	// a verbatim prompt loses its beginning, and so does the instruction
	// when an input follows it (the input goes first, then the prompt's
	// beginning). Everywhere else a field keeps its beginning.
	generative := e.cfg.Chat == nil && (e.cfg.Objective == CLM || e.cfg.Objective == Seq2Seq) && r.Kind == Instruction
	if generative && r.Instruction == "" && r.Input == "" {
		tail(&c.Prompt)
	} else {
		head(&c.Prompt)
	}
	if generative && r.Input != "" {
		tail(&c.Instruction)
	} else {
		head(&c.Instruction)
	}
	if len(r.Messages) > 0 {
		c.Messages = make([]chat.Message, len(r.Messages))
		copy(c.Messages, r.Messages)
		for i := range c.Messages {
			head(&c.Messages[i].Content)
		}
	}
	return &c, err
}

// headFor returns a shortened s whose tokens number at least need: the
// shortest beginning of s, cut where headCut says, that yields them,
// followed by s's last word and what follows it (lastWord), so that the
// field ends as it did where it meets the text after it. It returns s
// itself when nothing shorter does.
func (e *Encoder) headFor(s string, need int) (string, error) {
	for size := bytesPerToken * need; size < len(s); size *= 2 {
		cut := headCut(s, size)
		if cut >= len(s) {
			break
		}
		ids, err := e.tok.EncodeIDs(s[:cut], false)
		if err != nil {
			return "", err
		}
		if len(ids) >= need {
			return s[:cut] + s[max(cut, lastWord(s)):], nil
		}
	}
	return s, nil
}

// tailFor is headFor for the end of s: s's first word (firstWord), then
// the shortest end of s that yields need tokens.
func (e *Encoder) tailFor(s string, need int) (string, error) {
	for size := bytesPerToken * need; size < len(s); size *= 2 {
		cut := tailCut(s, len(s)-size)
		if cut <= 0 {
			break
		}
		ids, err := e.tok.EncodeIDs(s[cut:], false)
		if err != nil {
			return "", err
		}
		if len(ids) >= need {
			return s[:min(cut, firstWord(s))] + s[cut:], nil
		}
	}
	return s, nil
}

// lastWord returns where the run of white space before s's last word
// starts (its trailing white space included), or len(s) when there is no
// such run or the word is longer than maxWord.
func lastWord(s string) int {
	k := len(s)
	for k > 0 && isSpace(s[k-1]) {
		k--
	}
	for k > 0 && !isSpace(s[k-1]) {
		if k--; len(s)-k > maxWord {
			return len(s)
		}
	}
	for k > 0 && isSpace(s[k-1]) {
		k--
	}
	if k == 0 {
		return len(s)
	}
	return k
}

// firstWord returns where the run of white space after s's first word
// (its leading white space included) starts, or 0 when there is no such
// run or the word is longer than maxWord.
func firstWord(s string) int {
	k := 0
	for k < len(s) && isSpace(s[k]) {
		k++
	}
	for k < len(s) && !isSpace(s[k]) {
		if k++; k > maxWord {
			return 0
		}
	}
	if k == len(s) {
		return 0
	}
	return k
}

// maxWord is the longest run without white space that bounded keeps
// whole. Pre-tokenizers split at white space, so a cut at the start of a
// run of white space leaves every word's tokens as the whole text gives
// them; a longer run — no language's word, but the shape of a hostile
// record — is cut inside, at a character boundary, where its first tokens
// may differ from the whole run's (a unigram model's best segmentation of
// a long periodic word can shift with its length).
const maxWord = 64 << 10

// spaceStart reports whether a run of white space starts at s[i].
func spaceStart(s string, i int) bool {
	return i > 0 && i < len(s) && isSpace(s[i]) && !isSpace(s[i-1])
}

// headCut returns where to cut s to keep about its first size bytes: the
// start of the last run of white space at or before size, or of the first
// one after it, within maxWord bytes; len(s) when the word that size
// falls in runs to the end; else (a longer word) the character boundary
// at or before size.
func headCut(s string, size int) int {
	for i := size; i > size-maxWord && i > 0; i-- {
		if spaceStart(s, i) {
			return i
		}
	}
	for i := size + 1; i < size+maxWord && i < len(s); i++ {
		if spaceStart(s, i) {
			return i
		}
	}
	if size < maxWord && len(s) <= size+maxWord {
		return len(s) // one word, short enough to keep whole
	}
	for size > 0 && !utf8.RuneStart(s[size]) {
		size--
	}
	return size
}

// tailCut is headCut for keeping s[cut:], about the bytes from from on:
// the start of the first run of white space at or after from, or of the
// last one before it, within maxWord bytes; 0 when the word runs from the
// start; else the character boundary at or after from.
func tailCut(s string, from int) int {
	for i := from; i < from+maxWord && i < len(s); i++ {
		if spaceStart(s, i) {
			return i
		}
	}
	for i := from - 1; i > from-maxWord && i > 0; i-- {
		if spaceStart(s, i) {
			return i
		}
	}
	if from < maxWord && len(s) <= from+maxWord {
		return 0
	}
	for from < len(s) && !utf8.RuneStart(s[from]) {
		from++
	}
	return from
}

// isSpace reports ASCII white space, the separator every pre-tokenizer
// splits at.
func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'
}
