package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/tokenizer"
)

func TestReadChat(t *testing.T) {
	dir := t.TempDir()
	content := `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "name": "bot"}], "id": 3}
{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x", "weight": 0}, {"role": "user", "content": "again"}, {"role": "assistant", "content": "y", "weight": 1}]}
`
	ds, err := Read(writeFile(t, dir, "c.jsonl", content), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Kind: Chat, Line: 1, Messages: []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}},
			Learn: []bool{false, false, true}},
		{Kind: Chat, Line: 2, Messages: []chat.Message{{Role: "user"}, {Role: "assistant", Content: "x"}, {Role: "user", Content: "again"}, {Role: "assistant", Content: "y"}},
			Learn: []bool{false, false, false, true}},
	}
	if ds.Kind != Chat || !reflect.DeepEqual(ds.Records, want) {
		t.Fatalf("got %s %+v\nwant %+v", ds.Kind, ds.Records, want)
	}
	arr, err := Read(writeFile(t, dir, "c.json", "[\n"+strings.Join(strings.Split(strings.TrimSpace(content), "\n"), ",\n")+"\n]"), ReadOptions{Kind: Chat})
	if err != nil || len(arr.Records) != 2 || arr.Records[1].Line != 3 {
		t.Fatalf("JSON array: %v %+v", err, arr)
	}
}

// TestReadChatErrors: every bad messages record names the file, the line
// and the field, as bad input.
func TestReadChatErrors(t *testing.T) {
	for _, c := range []struct{ name, content, want, field string }{
		{"unknown role", `{"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}`,
			`f.jsonl:1: field "messages[1].role": unknown role "tool": expected system, user or assistant`, "messages[1].role"},
		{"number content", `{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "b"}]}`,
			`f.jsonl:1: field "messages[0].content": expected a string, got a number`, "messages[0].content"},
		{"content parts", "\n" + `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]}`,
			`f.jsonl:2: field "messages[1].content": expected a string, got an array (content parts are not supported: give the text as a string)`, "messages[1].content"},
		{"null content", `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]}`,
			`f.jsonl:1: field "messages[1].content": expected a string, got null`, "messages[1].content"},
		{"missing content", `{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}`,
			`f.jsonl:1: field "messages[0].content": missing: every message needs "role" and "content"`, "messages[0].content"},
		{"missing role", `{"messages": [{"content": "a"}]}`,
			`f.jsonl:1: field "messages[0].role": missing: every message needs "role" and "content"`, "messages[0].role"},
		{"role not a string", `{"messages": [{"role": 1, "content": "a"}]}`,
			`f.jsonl:1: field "messages[0].role": expected a string, got a number`, "messages[0].role"},
		{"message not an object", `{"messages": ["hi"]}`,
			`f.jsonl:1: field "messages[0]": expected an object with "role" and "content", got a string`, "messages[0]"},
		{"messages not a list", `{"messages": {"role": "user"}}`,
			`f.jsonl:1: field "messages": expected a list of {"role", "content"} objects, got an object`, "messages"},
		{"empty list", `{"messages": []}`,
			`f.jsonl:1: field "messages": the list is empty: a conversation needs at least an assistant message`, "messages"},
		{"no assistant", `{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}`,
			`f.jsonl:1: field "messages": no assistant message to learn from: a conversation needs a message with role "assistant" (and weight 1 where weights are given)`, "messages"},
		{"every assistant weighted 0", `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}`,
			`f.jsonl:1: field "messages": no assistant message to learn from: a conversation needs a message with role "assistant" (and weight 1 where weights are given)`, "messages"},
		{"weight on a user message", `{"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}`,
			`f.jsonl:1: field "messages[0].weight": only assistant messages carry a weight`, "messages[0].weight"},
		{"weight not 0 or 1", `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}]}`,
			`f.jsonl:1: field "messages[1].weight": expected 0 (do not learn this message) or 1, got 0.5`, "messages[1].weight"},
		{"chat after instruction", "{\"instruction\": \"x\", \"output\": \"y\"}\n" + `{"messages": [{"role": "assistant", "content": "b"}]}`,
			`f.jsonl:2: a chat record in a file of instruction records (the first record decides; ReadOptions.Kind forces one)`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Read(writeFile(t, dir, "f.jsonl", c.content), ReadOptions{})
			if err == nil || !badinput.Is(err) {
				t.Fatalf("want bad input, got %v", err)
			}
			if want := filepath.Join(dir, c.want); err.Error() != want {
				t.Errorf("error\n got %s\nwant %s", err, want)
			}
			var le *LineError
			if !errors.As(err, &le) || le.Field != c.field {
				t.Errorf("LineError %+v, want field %q", le, c.field)
			}
		})
	}
}

// chatTestdata is the chat package's test data: templates, their special
// tokens and conversations.
const chatTestdata = "../chat/testdata"

// tokenizerScript trains a small byte-level BPE tokenizer with the special
// tokens of the test templates, saves its tokenizer.json, and for every
// template and conversation that renders writes transformers'
// apply_chat_template(tokenize=True) ids and, for templates with
// {% generation %} blocks, its assistant_masks (what TRL's
// assistant_only_loss trains on).
const tokenizerScript = `
import json, os, re, sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import PreTrainedTokenizerFast
d, out = sys.argv[1], sys.argv[2]
templates = json.load(open(os.path.join(d, "templates.json")))
convs = json.load(open(os.path.join(d, "conversations.json")))
specials = sorted({v for t in templates for v in t["tokens"].values()} | {"<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"})
corpus = [m["content"] for c in convs for m in c["messages"]] * 3 + ["You are a helpful assistant. system user assistant [INST] [/INST] <<SYS>> <</SYS>>"] * 5
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=700, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
path = os.path.join(out, "tokenizer.json")
tok.save(path)
res = {}
for t in templates:
    src = open(os.path.join(d, t["file"]), encoding="utf-8", newline="").read()
    tk = PreTrainedTokenizerFast(tokenizer_file=path, **t["tokens"])
    tk.chat_template = src
    gen = re.search(r"\{%-?\s*generation", src) is not None
    rows = []
    for c in convs:
        try:
            if gen:
                o = tk.apply_chat_template(c["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
                rows.append({"ids": o["input_ids"], "mask": o["assistant_masks"]})
            else:
                rows.append({"ids": tk.apply_chat_template(c["messages"], tokenize=True)})
        except Exception as e:
            rows.append({"error": str(e)})
    res[t["name"]] = rows
llama = sys.argv[3] if len(sys.argv) > 3 else ""
if llama:
    from transformers import LlamaTokenizerFast
    t = [t for t in templates if t["name"] == "llama2"][0]
    tk = LlamaTokenizerFast(vocab_file=llama, from_slow=True, add_prefix_space=True, **t["tokens"])
    tk.backend_tokenizer.save(os.path.join(out, "llama2-tokenizer.json"))
    tk.chat_template = open(os.path.join(d, t["file"]), encoding="utf-8", newline="").read()
    rows = []
    for c in convs:
        try:
            rows.append({"ids": tk.apply_chat_template(c["messages"], tokenize=True)})
        except Exception as e:
            rows.append({"error": str(e)})
    res["llama2 with the Llama 2 tokenizer"] = rows
json.dump(res, sys.stdout)
`

type testTemplate struct {
	Name   string            `json:"name"`
	File   string            `json:"file"`
	Tokens map[string]string `json:"tokens"`
}

type testConversation struct {
	Name     string         `json:"name"`
	Messages []chat.Message `json:"messages"`
}

func readTestJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// chatTemplates parses the chat package's test templates with their
// special tokens.
func chatTemplates(t *testing.T) ([]testTemplate, map[string]*chat.Template, []testConversation) {
	t.Helper()
	var specs []testTemplate
	var convs []testConversation
	readTestJSON(t, filepath.Join(chatTestdata, "templates.json"), &specs)
	readTestJSON(t, filepath.Join(chatTestdata, "conversations.json"), &convs)
	tpls := map[string]*chat.Template{}
	for _, s := range specs {
		src, err := os.ReadFile(filepath.Join(chatTestdata, s.File))
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := chat.Parse(s.File, string(src))
		if err != nil {
			t.Fatal(err)
		}
		vars := map[string]any{}
		for k, v := range s.Tokens {
			vars[k] = v
		}
		tpls[s.Name] = tpl.WithVars(vars)
	}
	return specs, tpls, convs
}

// turnText is what each test template writes for an assistant message,
// its end-of-turn marker included.
func turnText(template, content string) string {
	strip := func(s string) string {
		return strings.TrimFunc(s, func(r rune) bool { return strings.ContainsRune(" \t\n\r\v\f", r) })
	}
	switch template {
	case "llama2":
		return " " + strip(content) + " </s>"
	case "llama3":
		return strip(content) + "<|eot_id|>"
	case "zephyr", "mistral":
		return content + "</s>"
	case "phi3":
		return content + "<|end|>\n<|endoftext|>"
	}
	return content + "<|im_end|>"
}

// TestChatEncodingMatchesTransformers encodes every conversation of the
// chat package's test data with every test template through a byte-level
// BPE tokenizer.json built by the reference, and with the Llama 2 template
// through the real Llama 2 tokenizer (shared data): the ids must be
// transformers' apply_chat_template(tokenize=True) ids; the loss mask must
// cover exactly the assistant turns (each run of masked tokens decodes to
// the turn's content and end-of-turn marker, plus at most the whitespace
// of a token that straddles the turn's first byte); and for the template
// with {% generation %} blocks it must be transformers' assistant_masks,
// which TRL's assistant_only_loss trains on.
func TestChatEncodingMatchesTransformers(t *testing.T) {
	specs, tpls, convs := chatTemplates(t)
	dir := t.TempDir()
	llama := testenv.SharedData(t, "tokenizers/llama2/tokenizer.model")
	var ref map[string][]struct {
		IDs   []int32 `json:"ids"`
		Mask  []int   `json:"mask"`
		Error string  `json:"error"`
	}
	if err := json.Unmarshal(testenv.RunPython(t, tokenizerScript, chatTestdata, dir, llama), &ref); err != nil {
		t.Fatal(err)
	}
	type setup struct {
		name, template, tokenizer string
		byteLevel                 bool
	}
	var setups []setup
	for _, s := range specs {
		setups = append(setups, setup{s.Name, s.Name, "tokenizer.json", true})
	}
	setups = append(setups, setup{"llama2 with the Llama 2 tokenizer", "llama2", "llama2-tokenizer.json", false})
	compared, turns, straddled, masks := 0, 0, 0, 0
	for _, s := range setups {
		tok, err := tokenizer.Load(filepath.Join(dir, s.tokenizer))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Objective: CLM, MaxLen: 4096, Specials: NoSpecials, Chat: tpls[s.template]}
		enc, err := NewEncoder(tok, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range convs {
			want := ref[s.name][i]
			where := fmt.Sprintf("%s, %q", s.name, c.Name)
			r := Record{Kind: Chat, Messages: c.Messages, Learn: make([]bool, len(c.Messages))}
			for k, m := range c.Messages {
				r.Learn[k] = m.Role == chat.RoleAssistant
			}
			ex, err := enc.EncodeRecord(&r, CLPrompt{})
			if want.Error != "" || err != nil {
				if (want.Error != "") != (err != nil) && !(err != nil && (s.template == "phi3" || c.Messages[0].Role == chat.RoleAssistant)) {
					t.Errorf("%s: transformers %q, here %v", where, want.Error, err)
				}
				continue
			}
			if c.Messages[0].Role == chat.RoleAssistant && s.template == "zephyr" {
				// Zephyr's template writes its generation prompt inside the
				// message loop, so a conversation opening with the
				// assistant has none before its first turn: the turn's
				// header is learnt with it.
				continue
			}
			if !reflect.DeepEqual(ex.InputIDs, want.IDs) {
				t.Errorf("%s: ids differ from transformers'\n got  %v\n want %v", where, ex.InputIDs, want.IDs)
				continue
			}
			compared++
			if want.Mask != nil {
				got := make([]int, len(ex.LossMask))
				for k, m := range ex.LossMask {
					got[k] = btoi(m)
				}
				if !reflect.DeepEqual(got, want.Mask) {
					t.Errorf("%s: loss mask differs from transformers' assistant_masks\n got  %v\n want %v", where, got, want.Mask)
				}
				masks++
			}
			rt, err := tpls[s.template].RenderTurns(c.Messages, nil)
			if err != nil {
				t.Fatal(err)
			}
			full, err := tok.Encode(rt.Text, false)
			if err != nil {
				t.Fatal(err)
			}
			var assistants []string
			for _, m := range c.Messages {
				if m.Role == chat.RoleAssistant {
					assistants = append(assistants, m.Content)
				}
			}
			runs := maskRuns(ex.LossMask)
			if len(runs) != len(assistants) {
				t.Errorf("%s: %d masked runs for %d assistant turns", where, len(runs), len(assistants))
				continue
			}
			if len(runs) > 0 && ex.PromptLen != runs[0][0] {
				t.Errorf("%s: PromptLen %d, first turn at %d", where, ex.PromptLen, runs[0][0])
			}
			for k, run := range runs {
				ids := make([]int, 0, run[1]-run[0])
				for _, id := range ex.InputIDs[run[0]:run[1]] {
					ids = append(ids, int(id))
				}
				got, err := tok.Decode(ids, false)
				if err != nil {
					t.Fatal(err)
				}
				turn := turnText(s.template, assistants[k])
				if !s.byteLevel {
					// SentencePiece decoding drops the space that opens a
					// text; the turn's bytes must be the masked tokens'.
					turn = strings.TrimPrefix(turn, " ")
					if first, last := full.Offsets[run[0]], full.Offsets[run[1]-1]; first.Start > rt.Assistant[k].Start || last.End != rt.Assistant[k].End {
						t.Errorf("%s: turn %d spans bytes %v, its tokens %d..%d", where, k+1, rt.Assistant[k], first.Start, last.End)
					}
				}
				if !s.byteLevel && strings.Contains(strings.TrimSuffix(turn, "</s>"), "</s>") {
					turns++
					continue // decoding adds a space after a special token inside the text
				}
				lead, ok := strings.CutSuffix(got, turn)
				sp := rt.Assistant[k]
				switch {
				case !ok || strings.TrimSpace(lead) != "":
					t.Errorf("%s: turn %d decodes to %q, want %q", where, k+1, got, turn)
				case lead != "":
					if o := full.Offsets[run[0]]; o.Start >= sp.Start || o.End <= sp.Start {
						t.Errorf("%s: turn %d has leading %q but its first token %v does not straddle the turn's start %d", where, k+1, lead, o, sp.Start)
					}
					straddled++
				}
				turns++
			}
		}
	}
	if compared < 100 || masks < 15 {
		t.Errorf("only %d conversations compared (%d masks)", compared, masks)
	}
	t.Logf("%d encodings identical to transformers', %d masks identical to its assistant_masks, %d turns decoded (%d with a straddling first token)", compared, masks, turns, straddled)
}

// maskRuns returns the [start, end) runs of true in a mask.
func maskRuns(mask []bool) [][2]int {
	var runs [][2]int
	for i := 0; i < len(mask); i++ {
		if mask[i] && (i == 0 || !mask[i-1]) {
			runs = append(runs, [2]int{i, i})
		}
		if mask[i] {
			runs[len(runs)-1][1] = i + 1
		}
	}
	return runs
}

// chatmlTest is a ChatML template for the word-level test tokenizer:
// words separated by spaces, so tests can spell the ids.
const chatmlTest = `{% for m in messages %}{{ '<s> ' + m.role + ' ' + m.content + ' </s>' }}{% if not loop.last %} {% endif %}{% endfor %}{% if add_generation_prompt %} <s> assistant {% endif %}`

func TestChatExamplesAndLabels(t *testing.T) {
	tok := wordTokenizer(t)
	tpl, err := chat.Parse("chatml-test", chatmlTest)
	if err != nil {
		t.Fatal(err)
	}
	conv := Record{Kind: Chat, Messages: []chat.Message{{Role: "system", Content: "be nice"}, {Role: "user", Content: "hello"}, {Role: "assistant", Content: "yes"},
		{Role: "user", Content: "more"}, {Role: "assistant", Content: "no"}}, Learn: []bool{false, false, true, false, true}}
	skipFirst := conv
	skipFirst.Learn = []bool{false, false, false, false, true}
	trailing := conv
	trailing.Messages = append(slices.Clone(conv.Messages), chat.Message{Role: "user", Content: "ok"})
	trailing.Learn = append(slices.Clone(conv.Learn), false)
	inst := Record{Kind: Instruction, Instruction: "do this", Input: "a b", Output: "ok fine"}
	cls := Record{Kind: Classification, Sentence: "nice film", Label: "good"}
	for _, c := range []struct {
		name         string
		rec          Record
		maxLen       int
		ids, labels  string
		prompt       int
		cut, answers bool
	}{
		{"two turns, loss on both answers and their </s>", conv, 64,
			"<s> system be nice </s> <s> user hello </s> <s> assistant yes </s> <s> user more </s> <s> assistant no </s>",
			"- - - - - - - - - - - yes </s> - - - - - - no </s>", 11, false, false},
		{"a weight-0 turn takes no loss", skipFirst, 64,
			"<s> system be nice </s> <s> user hello </s> <s> assistant yes </s> <s> user more </s> <s> assistant no </s>",
			"- - - - - - - - - - - - - - - - - - - no </s>", 19, false, false},
		{"instruction: instruction, blank line and input as the user turn", inst, 64,
			"<s> user do this a b </s> <s> assistant ok fine </s>", "- - - - - - - - - ok fine </s>", 9, false, false},
		{"classification: the CL prompt as the user turn", cls, 64,
			"<s> user pick Option: good, bad nice film Answer: </s> <s> assistant good </s>", "- - - - - - - - - - - - good </s>", 12, false, false},
		{"truncation keeps the start and counts the lost answer", conv, 15,
			"<s> system be nice </s> <s> user hello </s> <s> assistant yes </s> <s> user",
			"- - - - - - - - - - - yes </s> - -", 11, true, true},
		{"a cut that leaves the answers whole", trailing, 23,
			"<s> system be nice </s> <s> user hello </s> <s> assistant yes </s> <s> user more </s> <s> assistant no </s> <s> user",
			"- - - - - - - - - - - yes </s> - - - - - - no </s> - -", 11, true, false},
		{"a cut before any answer", conv, 8, "<s> system be nice </s> <s> user hello", "- - - - - - - -", 8, true, true},
		{"a long sentence loses its end, the answer stays", cls, 13,
			"<s> user pick Option: good, bad nice Answer: </s> <s> assistant good </s>", "- - - - - - - - - - - good </s>", 11, true, false},
		{"the whole sentence goes before the answer does", cls, 12,
			"<s> user pick Option: good, bad Answer: </s> <s> assistant good </s>", "- - - - - - - - - - good </s>", 10, true, false},
		{"no room for the answer even without the sentence", cls, 10,
			"<s> user pick Option: good, bad nice film Answer: </s>", "- - - - - - - - - -", 10, true, true},
		{"a long input loses its end", inst, 11,
			"<s> user do this a </s> <s> assistant ok fine </s>", "- - - - - - - - ok fine </s>", 8, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(CLM, c.maxLen)
			cfg.Chat, cfg.CL = tpl, pickPrompt
			kind := c.rec.Kind
			ex, batches := encodeAll(t, tok, cfg, &Dataset{Path: "x.jsonl", Kind: kind, Records: []Record{c.rec}}, 1)
			it := ex.Items[0]
			if got, want := it.InputIDs, seq(t, tok, c.ids); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ids\n got  %v\n want %v", got, want)
			}
			b := batches[0]
			if got, want := b.Labels, seq(t, tok, c.labels); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("labels\n got  %v\n want %v", got, want)
			}
			if it.PromptLen != c.prompt || it.Truncated != c.cut || it.AnswerCut != c.answers {
				t.Errorf("PromptLen %d truncated %v answer cut %v, want %d %v %v", it.PromptLen, it.Truncated, it.AnswerCut, c.prompt, c.cut, c.answers)
			}
			loss := 0
			for _, l := range b.Labels {
				loss += btoi(l != IgnoreIndex)
			}
			if b.LossTokens != loss || ex.Stats.TargetTokens != loss || ex.Stats.AnswerCut != btoi(c.answers) {
				t.Errorf("LossTokens %d, TargetTokens %d, AnswerCut %d; %d labels set", b.LossTokens, ex.Stats.TargetTokens, ex.Stats.AnswerCut, loss)
			}
		})
	}
}

// TestChatPromptIsTheGenerationPrompt: the prompt of a chat example
// (InputIDs[:PromptLen], what CL evaluation scores labels after) is the
// user turn rendered with the generation prompt, token for token.
func TestChatPromptIsTheGenerationPrompt(t *testing.T) {
	tok := wordTokenizer(t)
	tpl, err := chat.Parse("chatml-test", chatmlTest)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(CLM, 64)
	cfg.Chat = tpl
	enc, err := NewEncoder(tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := Record{Kind: Classification, Sentence: "nice film", Label: "bad"}
	ex, err := enc.EncodeRecord(&r, *pickPrompt)
	if err != nil {
		t.Fatal(err)
	}
	text, err := tpl.Render([]chat.Message{{Role: "user", Content: pickPrompt.Format(r.Sentence)}}, chat.Options{AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.EncodeIDs(text, false)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(toInt32(ids, 0)) != fmt.Sprint(ex.InputIDs[:ex.PromptLen]) {
		t.Fatalf("prompt %v, generation prompt %v", ex.InputIDs[:ex.PromptLen], ids)
	}
}

func TestChatNeedsTemplateAndCLM(t *testing.T) {
	tok := wordTokenizer(t)
	ds := &Dataset{Path: "c.jsonl", Kind: Chat, Records: []Record{{Kind: Chat, Messages: []chat.Message{{Role: "assistant", Content: "yes"}}, Learn: []bool{true}}}}
	enc, err := NewEncoder(tok, testConfig(CLM, 16))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Encode(ds); !badinput.Is(err) || !strings.Contains(err.Error(), "chat template") {
		t.Errorf("chat records without a template: %v", err)
	}
	tpl, _ := chat.Parse("t", chatmlTest)
	cfg := testConfig(Seq2Seq, 16)
	cfg.Chat = tpl
	if _, err := NewEncoder(tok, cfg); !badinput.Is(err) || !strings.Contains(err.Error(), "objective clm") {
		t.Errorf("chat format for seq2seq: %v", err)
	}
	if err := CheckKind(Chat, MLM); !badinput.Is(err) {
		t.Errorf("chat records for mlm: %v", err)
	}
}

// FuzzParseMessages feeds arbitrary JSON to the messages parser: no
// panics, every error names a messages field, and what it accepts has a
// known role per message and at least one assistant message to learn.
func FuzzParseMessages(f *testing.F) {
	for _, s := range []string{
		`[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]`,
		`[{"role": "assistant", "content": "b", "weight": 0}]`,
		`[{"role": "assistant", "content": null}]`, `[]`, `{}`, `[1]`, `[{"role": "tool", "content": ""}]`,
		`[{"role": "assistant", "content": [{"type": "text"}], "weight": 1.0}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msgs, learn, err := parseMessages(raw)
		if err != nil {
			var fe *fieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.field, "messages") {
				t.Fatalf("error without a messages field: %v", err)
			}
			return
		}
		n := 0
		for i, m := range msgs {
			if m.Role != chat.RoleSystem && m.Role != chat.RoleUser && m.Role != chat.RoleAssistant {
				t.Fatalf("role %q accepted", m.Role)
			}
			if learn[i] {
				if m.Role != chat.RoleAssistant {
					t.Fatalf("learning a %s message", m.Role)
				}
				n++
			}
		}
		if n == 0 || len(learn) != len(msgs) {
			t.Fatalf("accepted %d messages with %d to learn", len(msgs), n)
		}
	})
}

// BenchmarkChatExample encodes a four-turn conversation: five renders of
// the template (the whole and one pair of prefixes per assistant turn)
// and one tokenization.
func BenchmarkChatExample(b *testing.B) {
	tok := wordTokenizer(b)
	tpl, err := chat.Parse("chatml-test", chatmlTest)
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(CLM, 512)
	cfg.Chat = tpl
	enc, err := NewEncoder(tok, cfg)
	if err != nil {
		b.Fatal(err)
	}
	r := Record{Kind: Chat, Messages: []chat.Message{{Role: "system", Content: "be nice"}, {Role: "user", Content: "hello world"},
		{Role: "assistant", Content: "yes ok fine"}, {Role: "user", Content: "more"}, {Role: "assistant", Content: "no"}}, Learn: []bool{false, false, true, false, true}}
	for b.Loop() {
		if _, err := enc.EncodeRecord(&r, CLPrompt{}); err != nil {
			b.Fatal(err)
		}
	}
}
