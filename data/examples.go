package data

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/tokenizer"
)

// Example is one record tokenized for an objective, truncated but not yet
// padded. Labels are derived from it when batching (MLM chooses its
// positions per epoch).
type Example struct {
	// InputIDs is the model's input: the whole sequence for clm, mlm and
	// cls, the encoder's input for seq2seq.
	InputIDs []int32
	// Target is a seq2seq answer, ending with eos unless truncated.
	Target []int32
	// PromptLen is, for clm, the number of leading positions (bos and the
	// prompt) that take no loss; in the chat format, where the first
	// assistant turn starts. InputIDs[:PromptLen] is the prompt.
	PromptLen int
	// LossMask, when set (the chat format), says which positions take the
	// loss: the tokens of the assistant turns learnt. Nil: every position
	// from PromptLen on.
	LossMask []bool
	// Class is a cls example's label index.
	Class int
	// Truncated says MaxLen (or MaxTargetLen) cut this example.
	Truncated bool
	// AnswerCut says the cut took answer tokens (an assistant turn's, a
	// target's), some or all.
	AnswerCut bool
}

// Examples are the encoded records of one dataset, ready for a Loader.
type Examples struct {
	Items []Example
	// Config is the encoder's, with its defaults filled.
	Config Config
	Stats  Stats
	// Labels is the dataset's label set (classification data).
	Labels []string
}

// Encoder turns records into examples for one tokenizer and objective.
type Encoder struct {
	tok *tokenizer.Tokenizer
	cfg Config
	// unbounded turns off bounded.go's shortening, for the tests that
	// compare it with full tokenization.
	unbounded bool
}

// NewEncoder checks cfg and prepares to encode with tok. Truncation or
// padding configured inside tokenizer.json is ignored (on a copy): the
// encoder truncates and pads itself.
func NewEncoder(tok *tokenizer.Tokenizer, cfg Config) (*Encoder, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if tok.Truncation() != nil || tok.Padding() != nil {
		raw, err := tok.MarshalJSON()
		if err != nil {
			return nil, err
		}
		if tok, err = tokenizer.FromJSON(raw); err != nil {
			return nil, err
		}
		if err := tok.SetTruncation(nil); err != nil {
			return nil, err
		}
		tok.SetPadding(nil)
	}
	return &Encoder{tok: tok, cfg: cfg}, nil
}

// CheckKind returns a bad-input error when records of a kind cannot train
// an objective. Classification and instruction records train every
// generative objective (the CL prompt and the template make them a prompt
// and an answer), text records train clm and mlm, chat records train clm,
// and only classification records train cls.
func CheckKind(k Kind, o Objective) error {
	switch {
	case k == Chat && o != CLM:
		return badinput.Errorf("chat records cannot train objective %s: a model's chat template is for decoder-only models (objective clm)", o)
	case k == Text && o == Seq2Seq:
		return badinput.Errorf("text records cannot train objective seq2seq: it needs a prompt and an answer (instruction or classification records)")
	case k != Classification && o == CLS:
		return badinput.Errorf("%s records cannot train objective cls: it needs classification records (sentence and label)", k)
	}
	return nil
}

// Encode tokenizes every record of ds, in parallel, and reports the
// statistics. The result does not depend on the number of cores.
func (e *Encoder) Encode(ds *Dataset) (*Examples, error) {
	if err := CheckKind(ds.Kind, e.cfg.Objective); err != nil {
		return nil, fmt.Errorf("%s: %w", ds.Path, err)
	}
	if ds.Kind == Chat && e.cfg.Chat == nil {
		return nil, badinput.Errorf("%s: chat records (messages) need the model's chat template", ds.Path)
	}
	if e.cfg.Objective == CLS && e.cfg.NumLabels > 0 && len(ds.Labels) > e.cfg.NumLabels {
		return nil, badinput.Errorf("%s: %d labels (%s), but the model's classification head has %d", ds.Path, len(ds.Labels), ds.LabelSource, e.cfg.NumLabels)
	}
	cl := CLPromptFor(ds.Path, ds.Labels)
	if e.cfg.CL != nil {
		cl = *e.cfg.CL
	}
	n := len(ds.Records)
	items := make([]Example, n)
	const chunk = 128
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		errAt    = n
	)
	workers := min(runtime.GOMAXPROCS(0), (n+chunk-1)/chunk)
	for range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+chunk, n); i++ {
					ex, err := e.EncodeRecord(&ds.Records[i], cl)
					if err != nil {
						mu.Lock()
						if i < errAt {
							errAt, firstErr = i, fmt.Errorf("%s:%d: %w", ds.Path, ds.Records[i].Line, err)
						}
						mu.Unlock()
						return
					}
					items[i] = ex
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	out := &Examples{Items: items, Config: e.cfg, Labels: ds.Labels}
	out.Stats = statsOf(out, ds)
	return out, nil
}

// EncodeRecord tokenizes one record; cl formats classification records
// for the generative objectives. Evaluation uses it to build prompts that
// match training exactly: for clm, InputIDs[:PromptLen] is the prompt.
//
// The work is bounded by MaxLen, not by the record's length: fields far
// longer than an example can hold are shortened first (bounded.go).
func (e *Encoder) EncodeRecord(r *Record, cl CLPrompt) (Example, error) {
	if err := CheckKind(r.Kind, e.cfg.Objective); err != nil {
		return Example{}, err
	}
	r, err := e.bounded(r)
	if err != nil {
		return Example{}, err
	}
	switch e.cfg.Objective {
	case CLM:
		switch {
		case r.Kind == Text:
			return e.sequence(r.Text, false)
		case r.Kind == Chat && e.cfg.Chat == nil:
			return Example{}, badinput.Errorf("a chat record needs the model's chat template")
		case e.cfg.Chat != nil:
			return e.chatExample(r, cl)
		}
		return e.causal(r, cl)
	case Seq2Seq:
		return e.seq2seq(r, cl)
	case MLM:
		text := r.Text
		switch r.Kind {
		case Classification:
			text = r.Sentence
		case Instruction:
			p, _, _ := e.prompt(r, cl)
			text = p + r.Output
		}
		return e.sequence(text, true)
	default:
		ex, err := e.sequence(r.Sentence, true)
		ex.Class = r.Class
		return ex, err
	}
}

// prompt formats a record's prompt and says which part truncation cuts
// first and from which end: a verbatim prompt loses its beginning (the
// end, nearest the answer, stays); a templated one loses the end of the
// record's content (the input, instruction or sentence) and keeps the
// template's wording.
func (e *Encoder) prompt(r *Record, cl CLPrompt) (text string, cut span, fromStart bool) {
	switch {
	case r.Kind == Classification:
		text, cut = cl.format(r.Sentence)
		return text, cut, false
	case r.Instruction == "" && r.Input == "":
		return r.Prompt, span{0, len(r.Prompt)}, true
	}
	text, cut = e.cfg.Template.format(r.Instruction, r.Input)
	return text, cut, false
}

// answer is what a generative model learns to produce for a record.
func answer(r *Record) string {
	if r.Kind == Classification {
		return r.Label
	}
	return r.Output
}

// causal builds a decoder-only example: bos? + prompt + answer + eos. When
// it is too long the answer keeps what the prompt leaves, the prompt at
// least half of the room (or all it needs); the eos goes first when the
// answer is cut, so a cut answer never teaches the model to stop.
func (e *Encoder) causal(r *Record, cl CLPrompt) (Example, error) {
	sp := e.cfg.Specials
	text, cut, fromStart := e.prompt(r, cl)
	penc, err := e.tok.Encode(text, false)
	if err != nil {
		return Example{}, err
	}
	ans, err := e.tok.EncodeIDs(answer(r), false)
	if err != nil {
		return Example{}, err
	}
	a := toInt32(ans, 1)
	if sp.EOS >= 0 {
		a = append(a, int32(sp.EOS))
	}
	nb := btoi(sp.BOS >= 0)
	room := e.cfg.MaxLen - nb
	p, np := penc.IDs, len(penc.IDs)
	keepA, keepP := len(a), np
	truncated := np+len(a) > room
	if truncated {
		keepA = min(len(a), room-min(np, room/2))
		keepP = room - keepA
	}
	ids := make([]int32, 0, nb+keepP+keepA)
	if nb == 1 {
		ids = append(ids, int32(sp.BOS))
	}
	if keepP < np {
		ids = append(ids, shorten(penc, cut, fromStart, np-keepP)...)
	} else {
		ids = append(ids, toInt32(p, 0)...)
	}
	ids = append(ids, a[:keepA]...)
	return Example{InputIDs: ids, PromptLen: nb + keepP, Truncated: truncated, AnswerCut: keepA < len(a)}, nil
}

// Conversation is a record as the chat format sees it: chat records as
// they are; an instruction or classification record as a user message
// holding the prompt without the text templates' wording (instruction, a
// blank line and the input; a prompt record's prompt; the CL prompt) and
// an assistant message holding the answer. learn marks the assistant
// messages the loss is taken on.
func Conversation(r *Record, cl CLPrompt) (msgs []chat.Message, learn []bool) {
	if r.Kind == Chat {
		return r.Messages, r.Learn
	}
	var user string
	switch {
	case r.Kind == Classification:
		user = cl.Format(r.Sentence)
	case r.Instruction == "" && r.Input == "":
		user = r.Prompt
	case r.Input == "":
		user = r.Instruction
	default:
		user = r.Instruction + "\n\n" + r.Input
	}
	return []chat.Message{{Role: chat.RoleUser, Content: user}, {Role: chat.RoleAssistant, Content: answer(r)}}, []bool{false, true}
}

// chatExample renders a record's conversation with the model's chat
// template and tokenizes the text without adding special tokens (the
// template writes them), as apply_chat_template(tokenize=True) does. The
// loss is on the tokens of the learnt assistant turns — each turn's
// content as the template writes it and its end-of-turn text (ChatML's
// <|im_end|>, Llama 2's </s>), not the whitespace the template puts
// between turns (chat.Rendered says why); a token that straddles a turn's
// edge counts as the turn's. This is the mask TRL's assistant_only_loss
// takes from a template whose {% generation %} blocks hold the content
// and the end-of-turn token. A conversation too long keeps its start and
// loses its end, except that a record the chat format builds (chatContent)
// first loses the end of its content, so that its answer stays whole.
func (e *Encoder) chatExample(r *Record, cl CLPrompt) (Example, error) {
	ex, err := e.chatRender(r, cl)
	if err != nil || len(ex.InputIDs) <= e.cfg.MaxLen {
		return ex, err
	}
	if cut, ok, err := e.chatShortened(r, cl, len(ex.InputIDs)); err != nil || ok {
		return cut, err
	}
	n := e.cfg.MaxLen
	ex.Truncated = true
	for _, m := range ex.LossMask[n:] {
		ex.AnswerCut = ex.AnswerCut || m
	}
	ex.InputIDs, ex.LossMask = ex.InputIDs[:n], ex.LossMask[:n]
	ex.PromptLen = promptLen(ex.LossMask)
	return ex, nil
}

// chatContent is the field of a record that the chat format shortens when
// the conversation is too long: a classification row's sentence, an
// instruction's input (or the instruction when it has none), a prompt
// record's prompt. Chat records have none: their turns are kept as given.
func chatContent(r *Record) *string {
	switch {
	case r.Kind == Chat:
		return nil
	case r.Kind == Classification:
		return &r.Sentence
	case r.Input != "":
		return &r.Input
	case r.Instruction != "":
		return &r.Instruction
	}
	return &r.Prompt
}

// chatShortened renders r with its content (chatContent) cut to the
// number of tokens that lets the conversation fit MaxLen: the content
// keeps its beginning, whole tokens of it as it tokenizes alone, and the
// count shrinks until the rendered conversation fits. The count depends
// only on the content's first tokens and on the template's text, so a
// field that bounded shortened gives the example the whole field gives.
// ok is false when even empty content leaves the conversation too long.
func (e *Encoder) chatShortened(r *Record, cl CLPrompt, total int) (ex Example, ok bool, err error) {
	c := *r
	field := chatContent(&c)
	if field == nil || *field == "" {
		return Example{}, false, nil
	}
	full := *field
	enc, err := e.tok.Encode(full, false)
	if err != nil {
		return Example{}, false, err
	}
	keep := len(enc.IDs) - (total - e.cfg.MaxLen)
	for ; keep > 0; keep -= len(ex.InputIDs) - e.cfg.MaxLen {
		*field = full[:enc.Offsets[keep].Start]
		if ex, err = e.chatRender(&c, cl); err != nil || len(ex.InputIDs) <= e.cfg.MaxLen {
			ex.Truncated = true
			return ex, err == nil, err
		}
	}
	*field = ""
	if ex, err = e.chatRender(&c, cl); err != nil || len(ex.InputIDs) > e.cfg.MaxLen {
		return Example{}, false, err
	}
	ex.Truncated = true
	return ex, true, nil
}

// chatRender renders and tokenizes a record's conversation whole, with
// the loss mask of its learnt assistant turns.
func (e *Encoder) chatRender(r *Record, cl CLPrompt) (Example, error) {
	msgs, learn := Conversation(r, cl)
	rt, err := e.cfg.Chat.RenderTurns(msgs, nil)
	if err != nil {
		return Example{}, err
	}
	var spans []chat.Span
	k := 0
	for i, m := range msgs {
		if m.Role == chat.RoleAssistant {
			if learn[i] {
				spans = append(spans, rt.Assistant[k])
			}
			k++
		}
	}
	enc, err := e.tok.Encode(rt.Text, false)
	if err != nil {
		return Example{}, err
	}
	ex := Example{InputIDs: toInt32(enc.IDs, 0), LossMask: make([]bool, len(enc.IDs))}
	s := 0
	for i, o := range enc.Offsets {
		for s < len(spans) && spans[s].End <= o.Start {
			s++
		}
		ex.LossMask[i] = s < len(spans) && o.End > spans[s].Start && o.Start < spans[s].End && spans[s].End > spans[s].Start
	}
	ex.PromptLen = promptLen(ex.LossMask)
	return ex, nil
}

// promptLen is the position of the first token the loss is taken on (the
// prompt's length), or the sequence's length when there is none.
func promptLen(mask []bool) int {
	for i, m := range mask {
		if m {
			return i
		}
	}
	return len(mask)
}

// seq2seq builds an encoder-decoder example: prompt + eos in, answer + eos
// out; the prompt is cut as causal cuts it, the target from its end.
func (e *Encoder) seq2seq(r *Record, cl CLPrompt) (Example, error) {
	sp := e.cfg.Specials
	text, cut, fromStart := e.prompt(r, cl)
	penc, err := e.tok.Encode(text, false)
	if err != nil {
		return Example{}, err
	}
	ans, err := e.tok.EncodeIDs(answer(r), false)
	if err != nil {
		return Example{}, err
	}
	ne := btoi(sp.EOS >= 0)
	room := e.cfg.MaxLen - ne
	var ex Example
	if np := len(penc.IDs); np > room {
		ex.InputIDs, ex.Truncated = shorten(penc, cut, fromStart, np-room), true
	} else {
		ex.InputIDs = toInt32(penc.IDs, ne)
	}
	if ne == 1 {
		ex.InputIDs = append(ex.InputIDs, int32(sp.EOS))
	}
	ex.Target = toInt32(ans, ne)
	if ne == 1 {
		ex.Target = append(ex.Target, int32(sp.EOS))
	}
	if len(ex.Target) > e.cfg.MaxTargetLen {
		ex.Target, ex.Truncated, ex.AnswerCut = ex.Target[:e.cfg.MaxTargetLen], true, true
	}
	return ex, nil
}

// sequence builds bos? + text + eos? for plain text. A text too long loses
// its end; withEOS keeps the eos after a cut (encoders, whose inputs always
// end with it), otherwise the cut text ends without one (clm: the text did
// not end there).
func (e *Encoder) sequence(text string, withEOS bool) (Example, error) {
	sp := e.cfg.Specials
	ids, err := e.tok.EncodeIDs(text, false)
	if err != nil {
		return Example{}, err
	}
	nb, ne := btoi(sp.BOS >= 0), btoi(sp.EOS >= 0)
	out := make([]int32, 0, min(nb+len(ids)+ne, e.cfg.MaxLen))
	if nb == 1 {
		out = append(out, int32(sp.BOS))
	}
	room := e.cfg.MaxLen - nb
	if withEOS {
		room -= ne
	}
	truncated := len(ids)+nb+ne > e.cfg.MaxLen
	for _, id := range ids[:min(len(ids), room)] {
		out = append(out, int32(id))
	}
	if ne == 1 && (withEOS || !truncated) {
		out = append(out, int32(sp.EOS))
	}
	return Example{InputIDs: out, Truncated: truncated}, nil
}

// shorten drops n tokens of an encoded prompt: first the tokens inside cut
// (its first ones when fromStart, else its last ones), then, when cut has
// too few, tokens from the start of what remains.
func shorten(enc *tokenizer.Encoding, cut span, fromStart bool, n int) []int32 {
	drop := make([]bool, len(enc.IDs))
	var inside []int
	for i, o := range enc.Offsets {
		if o.Start >= cut.start && o.End <= cut.end {
			inside = append(inside, i)
		}
	}
	for k := 0; k < len(inside) && n > 0; k++ {
		i := inside[k]
		if !fromStart {
			i = inside[len(inside)-1-k]
		}
		drop[i] = true
		n--
	}
	for i := 0; i < len(drop) && n > 0; i++ {
		if !drop[i] {
			drop[i] = true
			n--
		}
	}
	out := make([]int32, 0, len(enc.IDs))
	for i, id := range enc.IDs {
		if !drop[i] {
			out = append(out, int32(id))
		}
	}
	return out
}

// toInt32 converts ids, leaving room for extra more.
func toInt32(ids []int, extra int) []int32 {
	out := make([]int32, len(ids), len(ids)+extra)
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
