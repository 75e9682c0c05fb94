package finetune

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// RecordFormat picks chat for messages data (or a --chat-template),
// alpaca otherwise, honours --template, and refuses what cannot work with
// bad input that says what to do.
func TestRecordFormat(t *testing.T) {
	bare, withTpl := t.TempDir(), t.TempDir()
	cfg := `{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}", "eos_token": "</s>"}`
	if err := os.WriteFile(filepath.Join(withTpl, modeldir.TokenizerConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	override := filepath.Join(t.TempDir(), "t.jinja")
	if err := os.WriteFile(override, []byte("{{ messages|length }}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, model, template, chatTemplate string
		kind                                data.Kind
		format, tplName, err                string
	}{
		{"messages data take the model's template", withTpl, "", "", data.Chat, FormatChat, filepath.Join(withTpl, modeldir.TokenizerConfigFile), ""},
		{"instruction data stay alpaca", withTpl, "", "", data.Instruction, FormatAlpaca, "", ""},
		{"--template chat for instructions", withTpl, "chat", "", data.Instruction, FormatChat, filepath.Join(withTpl, modeldir.TokenizerConfigFile), ""},
		{"--chat-template chooses chat", bare, "", override, data.Classification, FormatChat, override, ""},
		{"--template plain", bare, "plain", "", data.Instruction, FormatPlain, "", ""},
		{"text records take no format", bare, "chat", "", data.Text, "", "", ""},
		{"messages without a template", bare, "", "", data.Chat, "", "", filepath.Join(bare, modeldir.TokenizerConfigFile) + " has none (no field chat_template): give the model's template with chat_template FILE"},
		{"--template chat without a template", bare, "chat", "", data.Instruction, "", "", "template chat needs a chat template"},
		{"messages with --template alpaca", withTpl, "alpaca", "", data.Chat, "", "", "only template chat formats"},
		{"--chat-template with --template plain", withTpl, "plain", override, data.Instruction, "", "", "chat_template applies to template chat"},
		{"unknown template", withTpl, "vicuna", "", data.Instruction, "", "", `unknown template "vicuna"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := JobOptions{Model: c.model, Data: "d.jsonl", Template: c.template, ChatTemplate: c.chatTemplate}
			_, tpl, format, err := RecordFormat(o, c.kind, &modeldir.Manifest{}, nil)
			if c.err != "" {
				if !badinput.Is(err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want bad input with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			name := ""
			if tpl != nil {
				name = tpl.Name
			}
			if format != c.format || name != c.tplName {
				t.Errorf("format %q template %q, want %q %q", format, name, c.format, c.tplName)
			}
		})
	}
}
