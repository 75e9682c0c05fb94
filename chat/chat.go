// Package chat renders a model's chat template — the Jinja template in
// tokenizer_config.json's chat_template — as transformers 4.46's
// tokenizer.apply_chat_template(conversation, tokenize=False) renders it,
// and finds the bytes of every assistant turn in the result, so that
// training can take its loss on those alone.
//
// Rendering uses github.com/ardanlabs/jinja (a Jinja engine written for
// chat templates) behind a lexer of our own: transformers' environment
// has trim_blocks, lstrip_blocks, the loopcontrols extension, a tojson
// filter with ensure_ascii=False, the globals raise_exception and
// strftime_now, and passes messages, tools (None), documents (None),
// add_generation_prompt and the special-token strings (bos_token,
// eos_token, …). The library gets whitespace control and string-literal
// escapes wrong in places, so Parse applies Jinja's rules itself (see
// source.go) and gives the library a template of expressions and
// statements only; strftime_now is ours too.
//
// RenderTurns finds the assistant turns by rendering prefixes of the
// conversation. A template that renders a message differently depending
// on what follows it (Phi-3's writes eos_token only at the end of a
// conversation without a generation prompt; Qwen3's drops the reasoning
// of earlier turns) renders, but its turns cannot be found: an error
// naming the template.
//
// Not supported, an error naming the template rather than a different
// text: {% raw %} blocks, \N{name} escapes and surrogate escapes in string
// literals, tojson's sort_keys, number literals with exponents, the
// {% with %} block, the format filter, dict literals nested in a {{ }}
// (the inner }} ends the tag), and strftime_now directives other than
// %a %A %b %B %d %H %I %j %m %M %p %S %y %Y %%.
//
// Known differences the library leaves, none of which the templates of
// the usual model families reach with conversations of strings: None
// prints as an empty string (Python prints "None") and joins to strings
// as one; floats print as Go's %g ("6" for Python's "6.0"); an attribute
// of an undefined value is undefined rather than an error; adding a
// string and a number concatenates instead of failing; list.append is
// allowed (transformers' sandbox refuses it); str.split ignores maxsplit;
// tojson escapes U+2028 and U+2029; upper() leaves ß alone; printed
// tuples look like lists; `in` does not find 2 among [2.0]; division by
// zero gives 0; a macro that calls itself without end overflows the Go
// stack and ends the program (Python raises RecursionError). Panics of
// the library are errors naming the template.
package chat

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
	"github.com/migu-ml/migu/internal/badinput"
)

// Message is one turn of a conversation, as in the OpenAI and TRL
// "messages" format.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// The roles a conversation of training data may hold.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Template is a parsed chat template. It is safe for concurrent use.
type Template struct {
	// Name says where the template came from (a file, or a model folder's
	// tokenizer_config.json); errors name it.
	Name string
	// Vars are passed to every render: the special-token strings
	// (bos_token, eos_token, unk_token, …) as transformers passes its
	// special_tokens_map. Options.Vars add to them and win.
	Vars map[string]any
	tpl  *jinja.Template
}

// Parse reads a chat template's source; name stands for it in errors.
// Constructs the renderer does not support are bad input naming the
// template and the line.
func Parse(name, src string) (t *Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, badinput.Errorf("chat template %s: %v", name, r)
		}
	}()
	prepared, err := prepare(src)
	if err != nil {
		return nil, badinput.Errorf("chat template %s: %v", name, err)
	}
	tpl, err := jinja.Compile(prepared)
	if err != nil {
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "jinja scan: "), "jinja parse: ")
		return nil, badinput.Errorf("chat template %s: %s", name, msg)
	}
	return &Template{Name: name, tpl: tpl}, nil
}

// Options control one render.
type Options struct {
	// AddGenerationPrompt asks the template for the text that opens an
	// assistant turn (add_generation_prompt), for generation.
	AddGenerationPrompt bool
	// Vars are further template variables; they replace Template.Vars of
	// the same name. messages and add_generation_prompt are reserved.
	Vars map[string]any
}

// Render renders a conversation to text, as apply_chat_template with
// tokenize=False. A template's raise_exception (roles that do not
// alternate, say) is bad input naming the template.
func (t *Template) Render(msgs []Message, o Options) (out string, err error) {
	defer func() {
		// The library panics on some mistakes (a negative repeat count,
		// say); they are the template's.
		if r := recover(); r != nil {
			out, err = "", badinput.Errorf("chat template %s: %v", t.Name, r)
		}
	}()
	vars := map[string]jinja.Value{
		"tools":        jinja.None(),
		"documents":    jinja.None(),
		"strftime_now": strftimeNow,
	}
	for _, m := range []map[string]any{t.Vars, o.Vars} {
		for k, v := range m {
			if k == "messages" || k == "add_generation_prompt" {
				return "", fmt.Errorf("chat template %s: variable %s is set by the renderer", t.Name, k)
			}
			vars[k] = jinja.FromGoValue(v)
		}
	}
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		list[i] = d
	}
	vars["messages"] = jinja.NewList(list)
	vars["add_generation_prompt"] = jinja.NewBool(o.AddGenerationPrompt)
	out, err = t.tpl.RenderValues(vars)
	if err != nil {
		return "", badinput.Errorf("chat template %s: %v", t.Name, err)
	}
	return out, nil
}

// WithVars returns a copy of t whose Vars are t's with vars added (vars
// win), so that callers can fill special tokens a model folder lacks.
func (t *Template) WithVars(vars map[string]any) *Template {
	c := *t
	c.Vars = maps.Clone(t.Vars)
	if c.Vars == nil {
		c.Vars = map[string]any{}
	}
	maps.Copy(c.Vars, vars)
	return &c
}

// strftimeNow is transformers' strftime_now: the local time formatted by
// Python's strftime (C locale).
var strftimeNow = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) != 1 || !args[0].IsString() {
		return jinja.Undefined(), errors.New("strftime_now takes one format string")
	}
	s, err := strftime(args[0].AsString(), time.Now())
	if err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(s), nil
})

// strftime formats t as Python's time.strftime does in the C locale, for
// the directives chat templates use.
func strftime(format string, t time.Time) (string, error) {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			b.WriteByte(format[i])
			continue
		}
		if i+1 == len(format) {
			return "", fmt.Errorf("strftime_now(%q): the format ends with a lone %%", format)
		}
		i++
		switch format[i] {
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'Y':
			fmt.Fprintf(&b, "%d", t.Year())
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("strftime_now(%q): directive %%%c is not supported", format, format[i])
		}
	}
	return b.String(), nil
}
