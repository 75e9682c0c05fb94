package eval

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/badinput"
)

// DefaultMaxNewTokens is the generation length when GenOptions.MaxNewTokens
// is 0.
const DefaultMaxNewTokens = 128

// GenOptions configure Generate.
type GenOptions struct {
	// MaxNewTokens bounds the generated tokens per prompt (0:
	// DefaultMaxNewTokens). The prompt is cut from the left so that prompt
	// and generation fit the model's context.
	MaxNewTokens int
	// Temperature divides the logits before sampling; 0 is greedy decoding.
	Temperature float64
	// TopP keeps, when sampling, the smallest set of most likely tokens
	// whose probabilities reach TopP (nucleus sampling); 0 or 1: off.
	TopP float64
	// Stop strings end a generation; the text is cut at the earliest one.
	Stop []string
	// Seed makes sampling reproducible: prompt i samples from its own
	// stream (Seed, i), whatever the batch size.
	Seed uint64
	// NoCache recomputes the whole sequence every step instead of using
	// the key/value cache (for measuring the cache, and for checking it).
	NoCache bool
	// Chat, when set, makes each prompt a user message rendered with the
	// template's generation prompt and encoded without the tokenizer's
	// special tokens (the template writes them), as a chat model is
	// prompted; generation then also ends at the template's end-of-turn
	// text (Template.EndOfTurn): its token when the tokenizer has it as
	// one, else as a stop string.
	Chat *chat.Template

	endIDs []int64 // tokens that end a generation as the end-of-sequence token does
}

// Generation is the output for one prompt.
type Generation struct {
	// Text is the generated text (the prompt excluded), cut before the
	// stop string that ended it.
	Text string
	// Tokens is the number of tokens generated (an end-of-sequence token
	// excluded).
	Tokens int
	// Stop is the stop string that ended the text, "" otherwise.
	Stop string
	// Reason is why generation ended: "stop" (a stop string), "eos" (the
	// end-of-sequence token) or "length" (MaxNewTokens).
	Reason string

	ids []int64 // the generated token ids, for tests
}

// The values of Generation.Reason.
const (
	ReasonStop   = "stop"
	ReasonEOS    = "eos"
	ReasonLength = "length"
)

// validate checks the options and fills defaults.
func (o GenOptions) validate() (GenOptions, error) {
	switch {
	case o.MaxNewTokens < 0:
		return o, badinput.Errorf("max new tokens is %d; it must not be negative", o.MaxNewTokens)
	case o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0):
		return o, badinput.Errorf("temperature %g: it must be 0 (greedy) or positive", o.Temperature)
	case o.TopP < 0 || o.TopP > 1 || math.IsNaN(o.TopP):
		return o, badinput.Errorf("top-p %g: it must be in [0, 1]", o.TopP)
	}
	for _, s := range o.Stop {
		if s == "" {
			return o, badinput.Errorf("an empty stop string would stop every generation at once")
		}
	}
	if o.MaxNewTokens == 0 {
		o.MaxNewTokens = DefaultMaxNewTokens
	}
	return o, nil
}

// Generate continues each prompt, batched (rows left-padded so every row's
// next token sits at the last position), greedily or by temperature/top-p
// sampling, until the end-of-sequence token, a stop string or MaxNewTokens.
// Models whose architecture registered key/value-cache graphs with kvcache
// (Llama-style and T5, by the exporters) use them, built from the folder's
// own weights (T5 encodes the prompt once). Results are in prompt order.
func (m *Model) Generate(ctx context.Context, prompts []string, o GenOptions) ([]Generation, error) {
	if m.mlm {
		return nil, m.errMaskedLM("generate")
	}
	o, err := o.validate()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	if id, ok := m.man.SpecialTokens["eos"]; ok {
		o.endIDs = append(o.endIDs, id)
	}
	if o.Chat != nil {
		if prompts, err = chatPrompts(o.Chat, prompts); err != nil {
			return nil, err
		}
		eot, err := o.Chat.EndOfTurn(nil)
		if err != nil {
			return nil, err
		}
		if id, ok := m.tok.TokenToID(eot); ok && eot != "" {
			o.endIDs = append(o.endIDs, int64(id))
		} else if eot != "" {
			// Not a token of its own: the text stops it.
			o.Stop = append(slices.Clone(o.Stop), eot)
		}
	}
	encoded := make([][]int64, len(prompts))
	for i, p := range prompts {
		if encoded[i], err = m.encodeText(p, o.MaxNewTokens, o.Chat == nil); err != nil {
			return nil, err
		}
	}
	// Batches of similar lengths waste less on padding; each prompt keeps
	// its own sampling stream, so the order changes no result.
	order := make([]int, len(prompts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(encoded[order[a]]) > len(encoded[order[b]]) })
	out := make([]Generation, len(prompts))
	for start := 0; start < len(order); start += m.batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		idx := order[start:min(start+m.batch, len(order))]
		batch := make([][]int64, len(idx))
		for r, i := range idx {
			batch[r] = encoded[i]
		}
		gens, err := m.generateBatch(ctx, batch, idx, o)
		if err != nil {
			return nil, err
		}
		for r, i := range idx {
			out[i] = gens[r]
		}
	}
	return out, nil
}

// chatPrompts renders each prompt as a one-message conversation with the
// generation prompt.
func chatPrompts(tpl *chat.Template, prompts []string) ([]string, error) {
	out := make([]string, len(prompts))
	for i, p := range prompts {
		s, err := tpl.Render([]chat.Message{{Role: chat.RoleUser, Content: p}}, chat.Options{AddGenerationPrompt: true})
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// encodePrompt tokenizes a prompt (with the tokenizer's special tokens)
// and cuts it from the left to leave room for maxNew tokens (causal
// models) or to the context length (the encoder of a seq2seq model).
func (m *Model) encodePrompt(prompt string, maxNew int) ([]int64, error) {
	return m.encodeText(prompt, maxNew, true)
}

// encodeText is encodePrompt, the tokenizer's special tokens added only
// when specials is set (a rendered chat template holds its own).
func (m *Model) encodeText(prompt string, maxNew int, specials bool) ([]int64, error) {
	ids, err := m.tok.EncodeIDs(prompt, specials)
	if err != nil {
		return nil, err
	}
	room := m.maxLen
	if !m.seq2seq {
		room = m.maxLen - maxNew
		if room < 1 {
			return nil, badinput.Errorf("max new tokens %d leaves no room for the prompt in the model's context of %d tokens", maxNew, m.maxLen)
		}
	}
	if len(ids) > room {
		ids = ids[len(ids)-room:]
	}
	if len(ids) == 0 {
		ids = []int{int(m.prefixToken())}
	}
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out, nil
}

// stepper runs a model one token at a time for a batch of rows.
type stepper interface {
	// first runs the left-padded prompts ([rows, seq] ids and mask) and
	// returns the next-token logits of every row, [rows, vocab].
	first(ids, mask []int64, rows, seq int) ([]float32, error)
	// next appends one token per row and returns the next-token logits.
	next(tokens []int64) ([]float32, error)
	// keep drops every row but the given ones (increasing row numbers),
	// which become rows 0, 1, … of the later steps.
	keep(rows []int) error
	close()
}

var (
	_ stepper = (*cachedStepper)(nil)
	_ stepper = (*fullStepper)(nil)
	_ stepper = (*seq2seqStepper)(nil)
)

// rowState is the generation of one row.
type rowState struct {
	prompt []int64
	gen    []int64
	rng    *rand.Rand
	out    Generation
}

// generateBatch generates for one batch of encoded prompts; index holds
// their positions in the caller's list (their sampling streams).
func (m *Model) generateBatch(ctx context.Context, prompts [][]int64, index []int, o GenOptions) ([]Generation, error) {
	rows := len(prompts)
	seq := 0
	for _, p := range prompts {
		seq = max(seq, len(p))
	}
	ids := make([]int64, rows*seq)
	mask := make([]int64, rows*seq)
	pad := m.padToken()
	states := make([]*rowState, rows)
	for r, p := range prompts {
		off := r*seq + seq - len(p)
		for s := r * seq; s < off; s++ {
			ids[s] = pad
		}
		copy(ids[off:], p)
		for s := off; s < (r+1)*seq; s++ {
			mask[s] = 1
		}
		states[r] = &rowState{prompt: p, rng: rand.New(rand.NewPCG(o.Seed, uint64(index[r])))}
	}
	st, err := m.newStepper(o.NoCache)
	if err != nil {
		return nil, err
	}
	defer st.close()
	logits, err := st.first(ids, mask, rows, seq)
	if err != nil {
		return nil, err
	}
	probs := make([]float64, m.vocab)
	// active[k] is the state of the stepper's row k; finished rows leave
	// the batch so that later steps only compute the live ones.
	active := make([]int, rows)
	for r := range active {
		active[r] = r
	}
	var keep []int
	var next []int64
	for {
		keep, next = keep[:0], next[:0]
		for k, r := range active {
			s := states[r]
			tok := int64(pick(logits[k*m.vocab:(k+1)*m.vocab], o, s.rng, probs))
			if slices.Contains(o.endIDs, tok) {
				s.finish(ReasonEOS, "")
				continue
			}
			s.gen = append(s.gen, tok)
			text, err := m.continuation(s.prompt, s.gen)
			if err != nil {
				return nil, err
			}
			s.out.Text = text
			if cut, stop := earliestStop(text, o.Stop); stop != "" {
				s.out.Text = text[:cut]
				s.finish(ReasonStop, stop)
				continue
			}
			if len(s.gen) >= o.MaxNewTokens {
				s.finish(ReasonLength, "")
				continue
			}
			keep, next = append(keep, k), append(next, tok)
		}
		if len(keep) == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(keep) < len(active) {
			if err := st.keep(keep); err != nil {
				return nil, err
			}
			kept := make([]int, len(keep))
			for i, k := range keep {
				kept[i] = active[k]
			}
			active = kept
		}
		if logits, err = st.next(next); err != nil {
			return nil, err
		}
	}
	out := make([]Generation, rows)
	for r, s := range states {
		out[r] = s.out
	}
	return out, nil
}

func (s *rowState) finish(reason, stop string) {
	s.out.Tokens = len(s.gen)
	s.out.ids = s.gen
	s.out.Reason, s.out.Stop = reason, stop
}

// padToken is the id fed at left padding (its value never matters: the
// mask hides it).
func (m *Model) padToken() int64 {
	if id, ok := m.man.SpecialTokens["pad"]; ok {
		return id
	}
	if id, ok := m.man.SpecialTokens["eos"]; ok {
		return id
	}
	return 0
}

// continuationContext is how many prompt tokens are decoded in front of the
// generated ones: SentencePiece decoders drop the leading space of a text's
// first word, so decoding the continuation on its own would eat the first
// space of an indented line.
const continuationContext = 8

// continuation decodes the generated tokens as they read after the prompt:
// the decoding of the prompt's last tokens plus the generation, minus that
// of the prompt's last tokens alone. When the two do not line up (a byte
// sequence split across the boundary) the generation is decoded alone.
func (m *Model) continuation(prompt, gen []int64) (string, error) {
	tail := prompt[max(0, len(prompt)-continuationContext):]
	ids := make([]int, 0, len(tail)+len(gen))
	for _, id := range tail {
		ids = append(ids, int(id))
	}
	head, err := m.tok.Decode(ids, true)
	if err != nil {
		return "", err
	}
	for _, id := range gen {
		ids = append(ids, int(id))
	}
	full, err := m.tok.Decode(ids, true)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(full, head) {
		return full[len(head):], nil
	}
	return m.tok.Decode(ids[len(tail):], true)
}

// earliestStop returns where the first stop string starts in text and
// which one it is ("" when none occurs).
func earliestStop(text string, stops []string) (int, string) {
	cut, which := len(text)+1, ""
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (i < cut || (i == cut && len(s) > len(which))) {
			cut, which = i, s
		}
	}
	return cut, which
}

// pick chooses the next token from one row of logits: the argmax when
// greedy, else a sample from softmax(logits / temperature) restricted to
// the top-p nucleus. probs is scratch space of the vocabulary's size.
func pick(logits []float32, o GenOptions, rng *rand.Rand, probs []float64) int {
	if o.Temperature == 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	top := math.Inf(-1)
	for _, v := range logits {
		top = max(top, float64(v))
	}
	probs = probs[:len(logits)]
	var sum float64
	for i, v := range logits {
		probs[i] = math.Exp((float64(v) - top) / o.Temperature)
		sum += probs[i]
	}
	order := make([]int, len(probs))
	for i := range order {
		order[i] = i
	}
	keep := len(order)
	if o.TopP > 0 && o.TopP < 1 {
		sort.SliceStable(order, func(a, b int) bool { return probs[order[a]] > probs[order[b]] })
		var cum float64
		for k, i := range order {
			cum += probs[i] / sum
			if cum >= o.TopP {
				keep = k + 1
				break
			}
		}
		order = order[:keep]
		sum = 0
		for _, i := range order {
			sum += probs[i]
		}
	}
	u := rng.Float64() * sum
	for _, i := range order {
		u -= probs[i]
		if u < 0 {
			return i
		}
	}
	return order[len(order)-1]
}

// newStepper chooses how to run the model: the key/value-cache graphs
// unless noCache, else the forward graph on the whole sequence every step
// (encoder and decoder together for seq2seq models).
func (m *Model) newStepper(noCache bool) (stepper, error) {
	switch {
	case noCache && m.seq2seq:
		return &seq2seqStepper{m: m}, nil
	case noCache:
		return &fullStepper{m: m}, nil
	}
	if err := m.gen.load(m.dir, m.man.Architecture, m.seq2seq); err != nil {
		return nil, err
	}
	return &cachedStepper{m: m, g: &m.gen, seq2seq: m.seq2seq}, nil
}

// lastPositions is the position query of a forward run that reads the
// last of seq positions of each of rows rows.
func lastPositions(rows, seq int) []int64 {
	pos := make([]int64, rows)
	for r := range pos {
		pos[r] = int64(seq - 1)
	}
	return pos
}

// fullStepper reruns the forward graph on the whole sequence every step.
type fullStepper struct {
	m          *Model
	ids, mask  []int64
	rows, seq  int
	lastLogits []float32
}

func (f *fullStepper) first(ids, mask []int64, rows, seq int) ([]float32, error) {
	f.ids, f.mask, f.rows, f.seq = slices.Clone(ids), slices.Clone(mask), rows, seq
	return f.run()
}

func (f *fullStepper) next(tokens []int64) ([]float32, error) {
	f.ids = appendColumn(f.ids, f.rows, f.seq, tokens)
	f.mask = appendColumn(f.mask, f.rows, f.seq, nil)
	f.seq++
	return f.run()
}

func (f *fullStepper) keep(rows []int) error {
	f.ids = keepRows(f.ids, f.rows, rows)
	f.mask = keepRows(f.mask, f.rows, rows)
	f.rows = len(rows)
	return nil
}

func (f *fullStepper) run() ([]float32, error) {
	if f.seq > f.m.maxLen {
		return nil, fmt.Errorf("generation reached the context length %d", f.m.maxLen)
	}
	logits, err := f.m.forward(f.ids, f.mask, f.rows, f.seq, lastPositions(f.rows, f.seq), 1)
	if err != nil {
		return nil, err
	}
	f.lastLogits = append(f.lastLogits[:0], logits...)
	return f.lastLogits, nil
}

func (f *fullStepper) close() {}

// keepRows returns the given rows of a row-major matrix of n rows.
func keepRows[T any](a []T, n int, rows []int) []T {
	width := len(a) / n
	out := make([]T, 0, len(rows)*width)
	for _, r := range rows {
		out = append(out, a[r*width:(r+1)*width]...)
	}
	return out
}

// appendColumn returns the [rows, seq+1] matrix of a [rows, seq] one with
// col (or ones, when col is nil) as its new last column.
func appendColumn(a []int64, rows, seq int, col []int64) []int64 {
	out := make([]int64, rows*(seq+1))
	for r := range rows {
		copy(out[r*(seq+1):], a[r*seq:(r+1)*seq])
		v := int64(1)
		if col != nil {
			v = col[r]
		}
		out[r*(seq+1)+seq] = v
	}
	return out
}

// seq2seqStepper runs encoder and decoder on the prompt and the decoder's
// growing input every step (no cache).
type seq2seqStepper struct {
	m               *Model
	encIDs, encMask []int64
	encLen, rows    int
	decIDs, decMask []int64
	decLen          int
	lastLogits      []float32
}

func (s *seq2seqStepper) first(ids, mask []int64, rows, seq int) ([]float32, error) {
	s.encIDs, s.encMask, s.encLen, s.rows = ids, mask, seq, rows
	s.decLen = 1
	s.decIDs = make([]int64, rows)
	s.decMask = make([]int64, rows)
	for r := range rows {
		s.decIDs[r], s.decMask[r] = s.m.decoderStart(), 1
	}
	return s.run()
}

func (s *seq2seqStepper) next(tokens []int64) ([]float32, error) {
	s.decIDs = appendColumn(s.decIDs, s.rows, s.decLen, tokens)
	s.decMask = appendColumn(s.decMask, s.rows, s.decLen, nil)
	s.decLen++
	return s.run()
}

func (s *seq2seqStepper) keep(rows []int) error {
	s.encIDs = keepRows(s.encIDs, s.rows, rows)
	s.encMask = keepRows(s.encMask, s.rows, rows)
	s.decIDs = keepRows(s.decIDs, s.rows, rows)
	s.decMask = keepRows(s.decMask, s.rows, rows)
	s.rows = len(rows)
	return nil
}

func (s *seq2seqStepper) run() ([]float32, error) {
	logits, err := s.m.forwardSeq2Seq(s.encIDs, s.encMask, s.encLen, s.decIDs, s.decMask, s.decLen, s.rows, lastPositions(s.rows, s.decLen), 1)
	if err != nil {
		return nil, err
	}
	s.lastLogits = append(s.lastLogits[:0], logits...)
	return s.lastLogits, nil
}

func (s *seq2seqStepper) close() {}
