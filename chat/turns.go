package chat

import (
	"fmt"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
)

// Span is a byte range [Start, End) of a rendered text.
type Span struct{ Start, End int }

// Rendered is a conversation rendered for training.
type Rendered struct {
	// Text is the conversation as apply_chat_template renders it without
	// a generation prompt.
	Text string
	// Assistant holds one span of Text per assistant message, in order:
	// what the template writes for that turn after the generation prompt
	// — the content as the template spells it and the end-of-turn text
	// after it (ChatML's <|im_end|>, Llama 2's " </s>") — up to the
	// whitespace the template puts between turns, which is left out: a
	// model stops at the end-of-turn token and never generates it.
	Assistant []Span
}

// RenderTurns renders a conversation and finds its assistant turns by
// rendering prefixes: the messages before assistant message i with the
// generation prompt, then the messages up to and including it. What the
// second adds to the first is the turn. Each render must be the start of
// the next and of the whole conversation's text; a template that renders
// a message differently depending on what follows it (one that writes
// eos_token only when no generation prompt is asked for, or drops earlier
// turns' reasoning) breaks that, and is bad input naming the message.
func (t *Template) RenderTurns(msgs []Message, vars map[string]any) (*Rendered, error) {
	o := Options{Vars: vars}
	full, err := t.Render(msgs, o)
	if err != nil {
		return nil, err
	}
	r := &Rendered{Text: full}
	for i, m := range msgs {
		if m.Role != RoleAssistant {
			continue
		}
		before, err := t.Render(msgs[:i], Options{AddGenerationPrompt: true, Vars: vars})
		if err != nil {
			return nil, fmt.Errorf("rendering the %d message(s) before assistant message %d with the generation prompt: %w", i, i+1, err)
		}
		upto := full
		if i+1 < len(msgs) {
			if upto, err = t.Render(msgs[:i+1], o); err != nil {
				return nil, fmt.Errorf("rendering the messages up to assistant message %d: %w", i+1, err)
			}
		}
		switch {
		case !strings.HasPrefix(upto, before):
			return nil, badinput.Errorf("chat template %s: the text before assistant message %d (rendered with the generation prompt) is not the start of the text with it: the template's generation prompt does not open an assistant turn as its assistant messages do, so the turn's tokens cannot be found", t.Name, i+1)
		case !strings.HasPrefix(full, upto):
			return nil, badinput.Errorf("chat template %s: the text of the messages up to assistant message %d is not the start of the whole conversation's text: the template renders a message differently depending on what follows it (it ends a conversation with extra text, or rewrites earlier turns), so the turn's tokens cannot be found", t.Name, i+1)
		}
		end := len(before) + len(strings.TrimRight(upto[len(before):], " \t\r\n"))
		r.Assistant = append(r.Assistant, Span{len(before), end})
	}
	return r, nil
}

// endProbe is the assistant content EndOfTurn renders, unlikely to occur
// in any template's own text.
const endProbe = "migu·probe·answer"

// EndOfTurn is the text the template writes after an assistant message's
// content to end the turn ("<|im_end|>" for ChatML, "</s>" for Llama 2,
// "<|end|>" for Phi-3), learnt by rendering a one-exchange conversation:
// the first word after the content; "" when the template writes nothing
// there. Generation stops at it.
func (t *Template) EndOfTurn(vars map[string]any) (string, error) {
	r, err := t.RenderTurns([]Message{{Role: RoleUser, Content: "Hello"}, {Role: RoleAssistant, Content: endProbe}}, vars)
	if err != nil {
		return "", err
	}
	if len(r.Assistant) != 1 {
		return "", nil
	}
	s := r.Assistant[0]
	turn := r.Text[s.Start:s.End]
	i := strings.LastIndex(turn, endProbe)
	if i < 0 {
		return "", badinput.Errorf("chat template %s: an assistant message's content does not appear in its turn, so the end of a turn cannot be found", t.Name)
	}
	if f := strings.Fields(turn[i+len(endProbe):]); len(f) > 0 {
		return f[0], nil
	}
	return "", nil
}
