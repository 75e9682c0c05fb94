package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
)

// zephyrLike is a chat template whose turns end with eos_token, which the
// tiny test tokenizer has as a special token.
const zephyrLike = "{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"

func zephyrTemplate(t *testing.T, m *Model) *chat.Template {
	t.Helper()
	tpl, err := chat.Parse("zephyr-like", zephyrLike)
	if err != nil {
		t.Fatal(err)
	}
	eos, ok := m.Tokenizer().IDToToken(int(m.Manifest().SpecialTokens["eos"]))
	if !ok {
		t.Fatal("the test model has no eos token")
	}
	return tpl.WithVars(map[string]any{"eos_token": eos})
}

// clChatRefScript renders each (row, label) conversation with transformers'
// apply_chat_template through the model folder's tokenizer.json, takes the
// prompt (the user turn with the generation prompt) and the answer (the
// label up to its end-of-turn eos), and scores the answer's
// log-likelihood with transformers.
const clChatRefScript = `
import json, sys, torch, transformers
from transformers import PreTrainedTokenizerFast
spec = json.load(open(sys.argv[1]))
tk = PreTrainedTokenizerFast(tokenizer_file=spec["tokenizer"], eos_token=spec["eos_token"])
tk.chat_template = spec["template"]
eos = tk.convert_tokens_to_ids(spec["eos_token"])
model = transformers.AutoModelForCausalLM.from_pretrained(spec["hf"]).eval()
out = []
with torch.no_grad():
    for user, label in spec["pairs"]:
        prompt = tk.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True)
        full = tk.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": label}], tokenize=True)
        assert full[:len(prompt)] == prompt
        cont = full[len(prompt):]
        cont = cont[:len(cont) - cont[::-1].index(eos)]
        logits = model(input_ids=torch.tensor([full])).logits[0]
        lp = torch.log_softmax(logits.double(), -1)
        n = len(prompt)
        out.append(float(sum(lp[n + i - 1, t] for i, t in enumerate(cont))))
print(json.dumps(out))
`

// With --template chat, CL rank scoring renders each row as training
// does (a user turn holding the CL prompt, the label as the assistant's
// answer with its end-of-turn token) and its log-likelihoods equal
// transformers' on apply_chat_template's ids within 1e-4.
func TestCLRankChatMatchesTransformers(t *testing.T) {
	hf, m := tinyModel(t, "llama", Options{BatchSize: 3})
	tpl := zephyrTemplate(t, m)
	path, labels := clRows(t)
	ds := mustRead(t, path)
	res, err := CLEvaluate(context.Background(), m, ds, CLOptions{Mode: CLRank, Chat: tpl})
	if err != nil {
		t.Fatal(err)
	}
	prompt := data.CLPromptFor(path, labels)
	var pairs [][2]string
	for _, r := range ds.Records {
		for _, l := range labels {
			pairs = append(pairs, [2]string{prompt.Format(r.Sentence), l})
		}
	}
	spec, _ := json.Marshal(map[string]any{"hf": hf, "tokenizer": filepath.Join(m.dir, modeldir.TokenizerFile), "eos_token": tpl.Vars["eos_token"],
		"template": zephyrLike, "pairs": pairs})
	specPath := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	var ref []float64
	if err := json.Unmarshal(testenv.RunPython(t, clChatRefScript, specPath), &ref); err != nil {
		t.Fatal(err)
	}
	for i, p := range res.Predictions {
		for k := range labels {
			if d := math.Abs(p.LogProbs[k] - ref[i*len(labels)+k]); d > 1e-4 {
				t.Errorf("row %d label %q: log-likelihood %v, transformers %v", i, labels[k], p.LogProbs[k], ref[i*len(labels)+k])
			}
		}
	}
}

// Generation with a chat template encodes the rendered prompt without the
// tokenizer's special tokens and stops at the template's end-of-turn
// token: a template that ends turns with the token greedy decoding
// produces third stops generation right before it.
func TestGenerateChatStopsAtEndOfTurn(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{})
	ctx := context.Background()
	prompts := []string{"The quick brown fox", "Once upon a time"}
	plain, err := chat.Parse("plain-end", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
	if err != nil {
		t.Fatal(err)
	}
	free, err := m.Generate(ctx, prompts, GenOptions{MaxNewTokens: 8, Chat: plain})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for i, p := range prompts {
		text, err := plain.Render([]chat.Message{{Role: chat.RoleUser, Content: p}}, chat.Options{AddGenerationPrompt: true})
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.encodeText(text, 8, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.encodeText(text, 8, true)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(want, got) {
			t.Fatalf("the tokenizer adds no special tokens: the test cannot tell chat prompts apart")
		}
		if len(free[i].ids) < 3 {
			t.Fatalf("prompt %d: only %d tokens generated", i, len(free[i].ids))
		}
		// A template that ends turns with the third generated token.
		stop := free[i].ids[2]
		if slices.Contains(free[i].ids[:2], stop) {
			continue
		}
		word, ok := m.Tokenizer().IDToToken(int(stop))
		if !ok {
			t.Fatal("no token for an id")
		}
		ending, err := chat.Parse("ending", "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.role == 'assistant' %}"+quoteJinja(word)+"{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
		if err != nil {
			t.Fatal(err)
		}
		if eot, err := ending.EndOfTurn(nil); err != nil || eot != word {
			t.Skipf("token %q is not a whole end-of-turn word (%q, %v)", word, eot, err)
		}
		gens, err := m.Generate(ctx, prompts[i:i+1], GenOptions{MaxNewTokens: 8, Chat: ending})
		if err != nil {
			t.Fatal(err)
		}
		if g := gens[0]; !slices.Equal(g.ids, free[i].ids[:2]) || g.Reason != ReasonEOS {
			t.Errorf("prompt %d: generated %v (%s), want %v then the end of turn", i, g.ids, g.Reason, free[i].ids[:2])
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no prompt's third token was new: nothing checked")
	}
}

// quoteJinja spells s as a Jinja expression printing it.
func quoteJinja(s string) string {
	raw, _ := json.Marshal(s)
	return "{{ " + string(raw) + " }}"
}
