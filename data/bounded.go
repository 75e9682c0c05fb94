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
// reads, so the tokens before the cut are the ones the whole field gives;
// boundMargin further tokens of slack stand between the cut and any
// token an example keeps. The examples are then those of the whole
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

// headFor returns the shortest beginning of s, cut before a run of white
// space (headCut), whose tokens number at least need, or s itself when
// no such beginning is shorter.
func (e *Encoder) headFor(s string, need int) (string, error) {
	for size := bytesPerToken * need; size < len(s); size *= 2 {
		cut := headCut(s, size)
		ids, err := e.tok.EncodeIDs(s[:cut], false)
		if err != nil {
			return "", err
		}
		if len(ids) >= need {
			return s[:cut], nil
		}
	}
	return s, nil
}

// tailFor is headFor for the end of s.
func (e *Encoder) tailFor(s string, need int) (string, error) {
	for size := bytesPerToken * need; size < len(s); size *= 2 {
		cut := tailCut(s, len(s)-size)
		ids, err := e.tok.EncodeIDs(s[cut:], false)
		if err != nil {
			return "", err
		}
		if len(ids) >= need {
			return s[cut:], nil
		}
	}
	return s, nil
}

// headCut returns a place at or before size to cut s: the start of the
// last run of white space that begins in s[size/2:size], else (one long
// word) the last character boundary at or before size.
func headCut(s string, size int) int {
	for i := size; i > size/2; i-- {
		if isSpace(s[i]) && !isSpace(s[i-1]) {
			return i
		}
	}
	for size > 0 && !utf8.RuneStart(s[size]) {
		size--
	}
	return size
}

// tailCut returns a place at or after from to cut s, keeping s[cut:]: the
// start of the first run of white space that begins in
// s[from:from+(len(s)-from)/2], else the first character boundary at or
// after from.
func tailCut(s string, from int) int {
	end := from + (len(s)-from)/2
	for i := max(from, 1); i < end; i++ {
		if isSpace(s[i]) && !isSpace(s[i-1]) {
			return i
		}
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
