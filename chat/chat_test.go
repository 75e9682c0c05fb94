package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
)

// testTemplate is an entry of testdata/templates.json: a template file and
// the special tokens its model has.
type testTemplate struct {
	Name   string            `json:"name"`
	File   string            `json:"file"`
	Tokens map[string]string `json:"tokens"`
}

type conversation struct {
	Name     string    `json:"name"`
	Messages []Message `json:"messages"`
}

// outcome is one render: its text, or the error it raised.
type outcome struct {
	Text  *string `json:"text"`
	Error *string `json:"error"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func loadTemplates(t *testing.T) ([]testTemplate, map[string]*Template, []conversation) {
	t.Helper()
	var specs []testTemplate
	var convs []conversation
	readJSON(t, "testdata/templates.json", &specs)
	readJSON(t, "testdata/conversations.json", &convs)
	tpls := map[string]*Template{}
	for _, s := range specs {
		src, err := os.ReadFile(filepath.Join("testdata", s.File))
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := Parse(s.File, string(src))
		if err != nil {
			t.Fatalf("%s: %v", s.File, err)
		}
		tpl.Vars = map[string]any{}
		for k, v := range s.Tokens {
			tpl.Vars[k] = v
		}
		tpls[s.Name] = tpl
	}
	return specs, tpls, convs
}

// renderScript renders every conversation of testdata with every template
// through a transformers PreTrainedTokenizerFast that has the template and
// the special tokens, with and without the generation prompt, and the
// character spans of {% generation %} blocks where a template has them.
const renderScript = `
import json, os, re, sys
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import _compile_jinja_template, _render_with_assistant_indices
d = sys.argv[1]
templates = json.load(open(os.path.join(d, "templates.json")))
convs = json.load(open(os.path.join(d, "conversations.json")))
out = {"renders": {}, "generation": {}}
for t in templates:
    src = open(os.path.join(d, t["file"]), encoding="utf-8", newline="").read()
    vocab = {"[UNK]": 0}
    for v in t["tokens"].values():
        vocab.setdefault(v, len(vocab))
    tk = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="[UNK]")), **t["tokens"])
    tk.chat_template = src
    rows, gens = [], []
    for c in convs:
        row = {}
        for agp in (False, True):
            try:
                row[str(agp).lower()] = {"text": tk.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=agp)}
            except Exception as e:
                row[str(agp).lower()] = {"error": str(e)}
        rows.append(row)
        if re.search(r"\{%-?\s*generation", src) and "error" not in row["false"]:
            text, idx = _render_with_assistant_indices(_compile_jinja_template(src), c["messages"], None, None, False, **tk.special_tokens_map)
            assert text == row["false"]["text"]
            gens.append([[len(text[:a].encode()), len(text[:b].encode())] for a, b in idx])
        else:
            gens.append(None)
    out["renders"][t["name"]] = rows
    out["generation"][t["name"]] = gens
json.dump(out, sys.stdout, ensure_ascii=False)
`

type reference struct {
	Renders    map[string][]map[string]outcome `json:"renders"`
	Generation map[string][][][2]int           `json:"generation"`
}

func renderReference(t *testing.T) reference {
	t.Helper()
	var ref reference
	out := testenv.RunPython(t, renderScript, "testdata")
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatalf("reference output: %v", err)
	}
	return ref
}

// TestRenderMatchesTransformers renders the conversations of testdata
// (system turns or not, several turns, Unicode, newlines, padding, empty
// and whitespace-only content, template syntax and special-token strings
// inside content, roles out of order) with the templates of SmolLM2,
// Llama 2 chat, Qwen2.5 (ChatML with a system turn), Zephyr, Mistral
// instruct, Llama 3 instruct, a ChatML with {% generation %} blocks and
// Phi-3, with and without the generation prompt, and requires the text
// transformers renders, byte for byte, or an error where transformers
// raises one (raise_exception on role alternation, say).
func TestRenderMatchesTransformers(t *testing.T) {
	specs, tpls, convs := loadTemplates(t)
	if len(convs) < 20 {
		t.Fatalf("only %d conversations", len(convs))
	}
	ref := renderReference(t)
	texts, errs := 0, 0
	for _, s := range specs {
		for i, c := range convs {
			for _, agp := range []bool{false, true} {
				want := ref.Renders[s.Name][i][fmt.Sprint(agp)]
				got, err := tpls[s.Name].Render(c.Messages, Options{AddGenerationPrompt: agp})
				where := fmt.Sprintf("%s, %q, add_generation_prompt=%v", s.Name, c.Name, agp)
				switch {
				case want.Error != nil && err == nil:
					t.Errorf("%s: transformers raised %q, we rendered %q", where, *want.Error, got)
				case want.Error != nil:
					if !strings.Contains(err.Error(), *want.Error) {
						t.Errorf("%s: error %q does not carry the template's message %q", where, err, *want.Error)
					}
					if !badinput.Is(err) {
						t.Errorf("%s: error %v is not bad input", where, err)
					}
					errs++
				case err != nil:
					t.Errorf("%s: %v", where, err)
				case got != *want.Text:
					t.Errorf("%s:\n got  %q\n want %q", where, got, *want.Text)
				default:
					texts++
				}
			}
		}
	}
	t.Logf("%d texts identical to transformers', %d errors where it raises, over %d templates and %d conversations", texts, errs, len(specs), len(convs))
}

// pyStrip is Python's str.strip().
func pyStrip(s string) string { return strings.TrimFunc(s, isSpace) }

// expectedTurn is what each template writes for an assistant message
// after its generation prompt, end-of-turn marker included, written out
// by hand from the templates.
var expectedTurn = map[string]func(content string) string{
	"smollm2":           func(c string) string { return c + "<|im_end|>" },
	"qwen25":            func(c string) string { return c + "<|im_end|>" },
	"chatml_generation": func(c string) string { return c + "<|im_end|>" },
	"llama2":            func(c string) string { return " " + pyStrip(c) + " </s>" },
	"zephyr":            func(c string) string { return c + "</s>" },
	"mistral":           func(c string) string { return c + "</s>" },
	"llama3":            func(c string) string { return pyStrip(c) + "<|eot_id|>" },
	"phi3":              func(c string) string { return c + "<|end|>" },
}

// TestRenderTurns checks every assistant span of every conversation that
// renders: the span is the turn as written out by hand for the template,
// the spans are in order and inside the text, and for the template with
// {% generation %} blocks they are exactly transformers' generation
// indices (what TRL's assistant_only_loss trains on). Phi-3's template
// writes eos_token at the end of a conversation without a generation
// prompt; its conversations of more than one exchange must fail clearly.
func TestRenderTurns(t *testing.T) {
	specs, tpls, convs := loadTemplates(t)
	ref := renderReference(t)
	spans := 0
	for _, s := range specs {
		for i, c := range convs {
			if ref.Renders[s.Name][i]["false"].Error != nil || c.Messages[0].Role == RoleAssistant {
				// A conversation that opens with the assistant has no
				// messages before its first turn; templates that write the
				// generation prompt inside their loop write none for it.
				continue
			}
			where := fmt.Sprintf("%s, %q", s.Name, c.Name)
			r, err := tpls[s.Name].RenderTurns(c.Messages, nil)
			var assistants []string
			for _, m := range c.Messages {
				if m.Role == RoleAssistant {
					assistants = append(assistants, m.Content)
				}
			}
			if s.Name == "phi3" && len(c.Messages) > 0 && (len(assistants) > 1 || len(assistants) == 1 && c.Messages[len(c.Messages)-1].Role != RoleAssistant) {
				if err == nil || !strings.Contains(err.Error(), "depending on what follows") {
					t.Errorf("%s: want the error naming a template that renders a message by what follows, got %v", where, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if r.Text != *ref.Renders[s.Name][i]["false"].Text {
				t.Errorf("%s: text differs from transformers'", where)
			}
			if len(r.Assistant) != len(assistants) {
				t.Fatalf("%s: %d spans for %d assistant messages", where, len(r.Assistant), len(assistants))
			}
			prev := 0
			for k, sp := range r.Assistant {
				if sp.Start < prev || sp.End < sp.Start || sp.End > len(r.Text) {
					t.Fatalf("%s: span %d %v out of order or outside the %d bytes", where, k, sp, len(r.Text))
				}
				prev = sp.End
				want := expectedTurn[s.Name](assistants[k])
				if s.Name == "phi3" {
					want += "\n<|endoftext|>"
				}
				if got := r.Text[sp.Start:sp.End]; got != want {
					t.Errorf("%s: turn %d is %q, want %q", where, k+1, got, want)
				}
				spans++
			}
			if gen := ref.Generation[s.Name][i]; gen != nil {
				want := make([]Span, len(gen))
				for k, g := range gen {
					want[k] = Span{g[0], g[1]}
				}
				if fmt.Sprint(want) != fmt.Sprint(r.Assistant) {
					t.Errorf("%s: spans %v, transformers' generation indices %v", where, r.Assistant, gen)
				}
			}
		}
	}
	t.Logf("%d assistant spans checked", spans)
}

// TestRenderTurnsRejectsRewritingTemplates: a template that renders the
// last assistant turn unlike the earlier ones (as Qwen3's does with its
// reasoning) cannot have its turns found by prefixes.
func TestRenderTurnsRejectsRewritingTemplates(t *testing.T) {
	src := `{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' and loop.last %}<think></think>{% endif %}{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}`
	tpl, err := Parse("rewriting.jinja", src)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{RoleUser, "a"}, {RoleAssistant, "b"}, {RoleUser, "c"}, {RoleAssistant, "d"}}
	_, err = tpl.RenderTurns(msgs, nil)
	if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), "rewriting.jinja") || !strings.Contains(err.Error(), "assistant message 2") {
		t.Fatalf("want bad input naming the template and the message, got %v", err)
	}
}

func TestEndOfTurn(t *testing.T) {
	_, tpls, _ := loadTemplates(t)
	for name, want := range map[string]string{
		"smollm2": "<|im_end|>", "qwen25": "<|im_end|>", "chatml_generation": "<|im_end|>", "llama2": "</s>",
		"zephyr": "</s>", "mistral": "</s>", "llama3": "<|eot_id|>", "phi3": "<|end|>",
	} {
		got, err := tpls[name].EndOfTurn(nil)
		if err != nil || got != want {
			t.Errorf("%s: end of turn %q, %v; want %q", name, got, err, want)
		}
	}
}

// probe is an entry of testdata/probes.json: a template, its variables,
// and what the renderer does with it: "same" as Jinja (default), an
// "error" (unsupported), or "differs" (a known difference the package
// documentation lists).
type probe struct {
	Name     string         `json:"name"`
	Template string         `json:"template"`
	Vars     map[string]any `json:"vars"`
	Expect   string         `json:"expect"`
}

// probeScript renders the probes with transformers' own Jinja environment.
const probeScript = `
import json, sys
from transformers.utils.chat_template_utils import _compile_jinja_template
messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
out = []
for p in json.load(open(sys.argv[1])):
    try:
        t = _compile_jinja_template(p["template"])
        out.append({"text": t.render(messages=messages, tools=None, documents=None, add_generation_prompt=False, **p.get("vars", {}))})
    except Exception as e:
        out.append({"error": type(e).__name__ + ": " + str(e)})
json.dump(out, sys.stdout, ensure_ascii=False)
`

// TestJinjaFeatures renders small templates that use one construct each
// (loops, filters, tests, string methods, literals, whitespace control)
// and requires Jinja's text under transformers' settings, or an error
// where Jinja raises one; constructs documented as unsupported must give
// an error, never a text.
func TestJinjaFeatures(t *testing.T) {
	var probes []probe
	raw, err := os.ReadFile("testdata/probes.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // integers stay integers, as in Python
	if err := dec.Decode(&probes); err != nil {
		t.Fatal(err)
	}
	var ref []outcome
	if err := json.Unmarshal(testenv.RunPython(t, probeScript, "testdata/probes.json"), &ref); err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{RoleUser, "a"}, {RoleAssistant, "b"}}
	same := 0
	for i, p := range probes {
		var got string
		tpl, err := Parse(p.Name, p.Template)
		if err == nil {
			got, err = tpl.Render(msgs, Options{Vars: p.Vars})
		}
		want := ref[i]
		switch p.Expect {
		case "error":
			if err == nil {
				t.Errorf("%s: unsupported, yet rendered %q", p.Name, got)
			} else if !strings.Contains(err.Error(), p.Name) {
				t.Errorf("%s: error %q does not name the template", p.Name, err)
			}
		case "differs":
			t.Logf("%s: known difference: Jinja %v, here %q (%v)", p.Name, show(want), got, err)
		default:
			switch {
			case want.Error != nil && err != nil:
				same++
			case want.Error != nil:
				t.Errorf("%s: Jinja raised %s, we rendered %q", p.Name, *want.Error, got)
			case err != nil:
				t.Errorf("%s: %v (Jinja renders %q)", p.Name, err, *want.Text)
			case got != *want.Text:
				t.Errorf("%s:\n got  %q\n want %q", p.Name, got, *want.Text)
			default:
				same++
			}
		}
	}
	t.Logf("%d of %d probes as Jinja renders them", same, len(probes))
}

func show(o outcome) string {
	if o.Error != nil {
		return "error " + *o.Error
	}
	return fmt.Sprintf("%q", *o.Text)
}

// randomTemplate builds a template of text, expressions, statements,
// comments and if blocks with random whitespace and -/+ modifiers, to
// compare whitespace control with Jinja's.
func randomTemplate(rng *rand.Rand) string {
	texts := []string{" ", "  ", "\t", "\n", "\n  ", "x", " y ", "\n\n", "z\n", "\u00a0", " \n \n", "w  \n  "}
	mod := func(plus bool) string {
		switch n := rng.IntN(4); {
		case n == 0:
			return "-"
		case n == 1 && plus:
			return "+"
		}
		return ""
	}
	var b strings.Builder
	open := 0
	for range 6 + rng.IntN(10) {
		switch rng.IntN(7) {
		case 0, 1, 2:
			b.WriteString(texts[rng.IntN(len(texts))])
		case 3:
			fmt.Fprintf(&b, "{{%s 'v' %s}}", mod(true), mod(false))
		case 4:
			fmt.Fprintf(&b, "{#%s c %s#}", mod(true), mod(true))
		case 5:
			fmt.Fprintf(&b, "{%%%s if true %s%%}", mod(true), mod(true))
			open++
		case 6:
			if open > 0 {
				fmt.Fprintf(&b, "{%%%s endif %s%%}", mod(true), mod(true))
				open--
			} else {
				fmt.Fprintf(&b, "{%%%s set a = 1 %s%%}", mod(true), mod(true))
			}
		}
	}
	for ; open > 0; open-- {
		fmt.Fprintf(&b, "{%%%s endif %s%%}%s", mod(true), mod(true), texts[rng.IntN(len(texts))])
	}
	return b.String()
}

// TestWhitespaceControlMatchesJinja compares 400 random templates' texts
// with Jinja's under trim_blocks and lstrip_blocks.
func TestWhitespaceControlMatchesJinja(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	srcs := make([]string, 400)
	for i := range srcs {
		srcs[i] = randomTemplate(rng)
	}
	path := filepath.Join(t.TempDir(), "templates.json")
	raw, _ := json.Marshal(srcs)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	var want []string
	out := testenv.RunPython(t, `
import json, sys
from transformers.utils.chat_template_utils import _compile_jinja_template
json.dump([_compile_jinja_template(s).render() for s in json.load(open(sys.argv[1]))], sys.stdout)
`, path)
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, src := range srcs {
		tpl, err := Parse("random", src)
		var got string
		if err == nil {
			got, err = tpl.Render(nil, Options{})
		}
		if err != nil || got != want[i] {
			if bad++; bad <= 5 {
				t.Errorf("template %q: got %q (%v), Jinja %q", src, got, err, want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d templates differ", bad, len(srcs))
	}
}

// TestStrftime compares strftime_now's formatting with Python's
// time.strftime at fixed instants.
func TestStrftime(t *testing.T) {
	const format = "%a %A %b %B %d %H %I %j %m %M %p %S %y %Y %% | %d %b %Y, 1 2 Jan Mon"
	stamps := []int64{0, 1700000000, 1733391000, 951825600, 1719792000 + 13*3600}
	arg, _ := json.Marshal(stamps)
	out := testenv.RunPython(t, `
import json, sys, time
print(json.dumps([time.strftime(sys.argv[2], time.gmtime(s)) for s in json.loads(sys.argv[1])]))
`, string(arg), format)
	var want []string
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	for i, s := range stamps {
		got, err := strftime(format, time.Unix(s, 0).UTC())
		if err != nil || got != want[i] {
			t.Errorf("%d: got %q (%v), want %q", s, got, err, want[i])
		}
	}
}

func TestUnescape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\nb\tc\\d\'e\"f`, "a\nb\tc\\d'e\"f"},
		{`\r\a\b\f\v`, "\r\a\b\f\v"},
		{`\101\7\1011`, "A\a" + "A1"},
		{`\x41\u00e9\U0001F600`, "Aé😀"},
		{`\q\ `, `\q\ `},
		{"a\\\nb", "ab"},
		{`\é`, `\xe9`},
		{`\中`, `\u4e2d`},
	} {
		got, err := unescape(c.in)
		if err != nil || got != c.want {
			t.Errorf("unescape(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`\x4`, `\u12`, `\N{BULLET}`, `\ud800`, `\U00110000`} {
		if _, err := unescape(bad); err == nil {
			t.Errorf("unescape(%q): want an error", bad)
		}
	}
}

func TestParseConfig(t *testing.T) {
	for _, c := range []struct {
		name, raw, tpl, err string
		tokens              map[string]any
	}{
		{name: "string template and tokens", raw: `{"chat_template": "{{ x }}", "bos_token": "<s>", "eos_token": "</s>", "pad_token": null, "unk_token": ""}`,
			tpl: "{{ x }}", tokens: map[string]any{"bos_token": "<s>", "eos_token": "</s>"}},
		{name: "added token objects", raw: `{"eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": false}, "additional_special_tokens": ["<a>", {"content": "<b>"}]}`,
			tokens: map[string]any{"eos_token": "<|im_end|>", "additional_special_tokens": []any{"<a>", "<b>"}}},
		{name: "named templates", raw: `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`, tpl: "D", tokens: map[string]any{}},
		{name: "no default", raw: `{"chat_template": [{"name": "tool_use", "template": "T"}]}`, err: `none named "default"`},
		{name: "template of the wrong type", raw: `{"chat_template": 3}`, err: "field chat_template"},
		{name: "token of the wrong type", raw: `{"bos_token": 1}`, err: "field bos_token"},
		{name: "not an object", raw: `[1]`, err: "not a JSON object"},
		{name: "no template", raw: `{"model_max_length": 2048}`, tokens: map[string]any{}},
	} {
		got, err := ParseConfig("tokenizer_config.json", []byte(c.raw))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "tokenizer_config.json") || !badinput.Is(err) {
				t.Errorf("%s: error %v, want bad input with %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Template != c.tpl || fmt.Sprint(got.Tokens) != fmt.Sprint(c.tokens) {
			t.Errorf("%s: got %q %v, want %q %v", c.name, got.Template, got.Tokens, c.tpl, c.tokens)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if tpl, err := Load(dir, ""); tpl != nil || err != nil {
		t.Fatalf("empty folder: %v, %v; want nothing", tpl, err)
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("tokenizer_config.json", `{"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}", "bos_token": "<s>", "eos_token": "</s>"}`)
	write(SpecialTokensMapFile, `{"eos_token": {"content": "<|end|>"}}`)
	tpl, err := Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render([]Message{{RoleUser, "hi"}}, Options{})
	if err != nil || got != "<s>hi<|end|>" {
		t.Fatalf("model template: %q, %v", got, err)
	}
	override := write("override.jinja", "[{{ eos_token }}]{% for m in messages %}{{ m.role }}{% endfor %}\n")
	tpl, err = Load(dir, override)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpl.Render([]Message{{RoleUser, "hi"}}, Options{}); err != nil || got != "[<|end|>]user" || tpl.Name != override {
		t.Fatalf("override: %q, %v (name %s)", got, err, tpl.Name)
	}
	bad := write("bad.jinja", "{% raw %}x{% endraw %}")
	if _, err := Load(dir, bad); err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("unsupported override: %v", err)
	}
	if _, err := Load(dir, filepath.Join(dir, "missing.jinja")); err == nil || !badinput.Is(err) {
		t.Fatalf("missing override: %v", err)
	}
}

func TestRenderReservedVars(t *testing.T) {
	tpl, err := Parse("t", "{{ messages|length }}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Render(nil, Options{Vars: map[string]any{"messages": 1}}); err == nil {
		t.Fatal("messages in Vars: want an error")
	}
	w := tpl.WithVars(map[string]any{"x": 1})
	if tpl.Vars != nil || w.Vars["x"] != 1 {
		t.Fatalf("WithVars changed the original or lost the variable: %v %v", tpl.Vars, w.Vars)
	}
	if !utf8.ValidString(endProbe) {
		t.Fatal("probe is not UTF-8")
	}
}

// TestRenderRecoversPanics: the library panics on some template mistakes;
// they come back as errors naming the template.
func TestRenderRecoversPanics(t *testing.T) {
	tpl, err := Parse("negative.jinja", "{{ 'x' * -1 }}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Render(nil, Options{}); err == nil || !strings.Contains(err.Error(), "negative.jinja") {
		t.Fatalf("want an error naming the template, got %v", err)
	}
}
