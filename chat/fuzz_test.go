package chat

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ardanlabs/jinja"
)

// FuzzParse feeds arbitrary template sources to Parse and renders what
// parses: errors are fine, panics and hangs are not.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.jinja")
	for _, p := range files {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	for _, s := range []string{"", "{{", "{%- if x -%}", "{{ 'a\\x4' }}", "{# c", "a\n  {%+ if true +%}\n{% endif %}", "{{ '\\é' }}", "{% raw %}"} {
		f.Add(s)
	}
	msgs := []Message{{RoleSystem, "s"}, {RoleUser, "u"}, {RoleAssistant, "a"}}
	f.Fuzz(func(t *testing.T, src string) {
		tpl, err := Parse("fuzz", src)
		if err != nil {
			return
		}
		tpl.Render(msgs, Options{AddGenerationPrompt: true})
		tpl.RenderTurns(msgs, nil)
	})
}

// FuzzParseConfig feeds arbitrary tokenizer_config.json contents to
// ParseConfig.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"chat_template": "x", "bos_token": {"content": "<s>"}}`, `{"chat_template": [{"name": "default", "template": "t"}]}`, `{"additional_special_tokens": [1]}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig("tokenizer_config.json", raw)
		if err == nil && c.Tokens == nil {
			t.Fatal("a parsed config without a token map")
		}
	})
}

// FuzzUnescape checks that every string literal that unescapes comes back
// the same through quote and the library's reading of it (prepare hands
// the library quoted literals after normalizing the source, so carriage
// returns reach it too).
func FuzzUnescape(f *testing.F) {
	for _, s := range []string{`a\nb`, `\x41`, `\u00e9\'`, `\\`, `\101`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		v, err := unescape(lit)
		if err != nil {
			return
		}
		tpl, err := jinja.Compile("{{ " + quote(v) + " }}")
		if err != nil {
			t.Fatalf("quoted %q does not parse: %v", v, err)
		}
		got, err := tpl.Render(nil)
		if err != nil || got != v {
			t.Fatalf("quoted %q renders %q (%v)", v, got, err)
		}
	})
}
