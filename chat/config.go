package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// SpecialTokensMapFile sits beside tokenizer_config.json in some
// checkpoints; its special tokens win over the config's, as in
// transformers.
const SpecialTokensMapFile = "special_tokens_map.json"

// tokenRoles are transformers' SPECIAL_TOKENS_ATTRIBUTES: the template
// variables a tokenizer's special tokens become.
var tokenRoles = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "additional_special_tokens"}

// Config is what tokenizer_config.json says about chat.
type Config struct {
	// Template is chat_template: the string, or of a list of {"name",
	// "template"} the one named "default"; "" when the model has none.
	Template string
	// Tokens are the special tokens as template variables: bos_token,
	// eos_token, … as strings (an AddedToken object gives its content),
	// additional_special_tokens as a list of strings. Unset or empty ones
	// are absent, as in transformers' special_tokens_map.
	Tokens map[string]any
}

// ParseConfig reads a tokenizer_config.json (or special_tokens_map.json,
// which has no template); path names it in errors, which are bad input
// naming the field.
func ParseConfig(path string, raw []byte) (*Config, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badinput.Errorf("%s: not a JSON object: %v", path, err)
	}
	c := &Config{Tokens: map[string]any{}}
	if t, ok := m["chat_template"]; ok && string(t) != "null" {
		var named []struct {
			Name     string `json:"name"`
			Template string `json:"template"`
		}
		switch {
		case json.Unmarshal(t, &c.Template) == nil:
		case json.Unmarshal(t, &named) == nil:
			found := false
			for _, n := range named {
				if n.Name == "default" {
					c.Template, found = n.Template, true
				}
			}
			if !found {
				names := make([]string, len(named))
				for i, n := range named {
					names[i] = n.Name
				}
				return nil, badinput.Errorf("%s: field chat_template lists templates %q but none named \"default\"; choose one with %v FILE", path, names, badinput.Setting("chat_template"))
			}
		default:
			return nil, badinput.Errorf(`%s: field chat_template is neither a string nor a list of {"name", "template"}`, path)
		}
	}
	for _, role := range tokenRoles {
		raw, ok := m[role]
		if !ok || string(raw) == "null" {
			continue
		}
		if role == "additional_special_tokens" {
			var list []json.RawMessage
			if err := json.Unmarshal(raw, &list); err != nil {
				return nil, badinput.Errorf("%s: field %s is not a list", path, role)
			}
			toks := make([]any, 0, len(list))
			for i, e := range list {
				s, err := tokenText(e)
				if err != nil {
					return nil, badinput.Errorf("%s: field %s[%d]: %v", path, role, i, err)
				}
				toks = append(toks, s)
			}
			if len(toks) > 0 {
				c.Tokens[role] = toks
			}
			continue
		}
		s, err := tokenText(raw)
		if err != nil {
			return nil, badinput.Errorf("%s: field %s: %v", path, role, err)
		}
		if s != "" {
			c.Tokens[role] = s
		}
	}
	return c, nil
}

// tokenText reads a special token: a string, or an AddedToken object
// {"content": …}.
func tokenText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Content != nil {
		return *obj.Content, nil
	}
	return "", fmt.Errorf(`expected a string or an object with "content"`)
}

// ReadConfig reads a model folder's tokenizer_config.json, with the
// special tokens of special_tokens_map.json beside it winning. A folder
// without either gives an empty Config.
func ReadConfig(modelDir string) (*Config, error) {
	c := &Config{Tokens: map[string]any{}}
	for _, name := range []string{modeldir.TokenizerConfigFile, SpecialTokensMapFile} {
		path := filepath.Join(modelDir, name)
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, badinput.Wrap(err)
		}
		f, err := ParseConfig(path, raw)
		if err != nil {
			return nil, err
		}
		if name == modeldir.TokenizerConfigFile {
			c.Template = f.Template
		}
		for k, v := range f.Tokens {
			c.Tokens[k] = v
		}
	}
	return c, nil
}

// Load returns a model folder's chat template with its special tokens:
// the Jinja file override when given, else tokenizer_config.json's
// chat_template. It returns nil and no error when the folder has no
// template and no override is given.
func Load(modelDir, override string) (*Template, error) {
	c, err := ReadConfig(modelDir)
	if err != nil {
		return nil, err
	}
	var t *Template
	switch {
	case override != "":
		src, err := os.ReadFile(override)
		if err != nil {
			return nil, badinput.Wrap(err)
		}
		t, err = Parse(override, string(src))
		if err != nil {
			return nil, err
		}
	case c.Template != "":
		if t, err = Parse(filepath.Join(modelDir, modeldir.TokenizerConfigFile), c.Template); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	t.Vars = c.Tokens
	return t, nil
}
