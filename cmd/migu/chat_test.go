package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// chatMLTemplate is ChatML with a system turn, as Qwen2 and SmolLM2 write
// it.
const chatMLTemplate = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}
`

// chatFixture writes conversations that teach a word game: the assistant
// repeats the user's word as many times as the system (or user) asks, over
// one or two exchanges.
func chatFixture(t *testing.T, n int) (string, []data.Record) {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	words := strings.Fields("apple river stone cloud orange table garden window")
	var b strings.Builder
	var recs []data.Record
	for i := range n {
		var msgs []chat.Message
		if i%2 == 0 {
			msgs = append(msgs, chat.Message{Role: "system", Content: "Repeat words."})
		}
		for range 1 + i%3/2 {
			w, k := words[rng.IntN(len(words))], 1+rng.IntN(3)
			msgs = append(msgs, chat.Message{Role: "user", Content: fmt.Sprintf("%s %d", w, k)},
				chat.Message{Role: "assistant", Content: strings.TrimSpace(strings.Repeat(w+" ", k))})
		}
		raw, _ := json.Marshal(map[string]any{"messages": msgs})
		b.Write(raw)
		b.WriteByte('\n')
		learn := make([]bool, len(msgs))
		for k, m := range msgs {
			learn[k] = m.Role == "assistant"
		}
		recs = append(recs, data.Record{Kind: data.Chat, Messages: msgs, Learn: learn})
	}
	path := filepath.Join(t.TempDir(), "chats.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, recs
}

// `migu train` on messages data with a ChatML --chat-template: the loss
// falls; the labels of the batches the job builds cover the assistant
// turns (content and <|im_end|>) and nothing else, which run.json's count
// of target tokens confirms; messages data without a template is bad
// input naming the model's tokenizer_config.json and --chat-template; and
// `migu generate --chat` prompts the trained model through the template.
func TestTrainChat(t *testing.T) {
	model := tinyModelDir(t, "llama")
	tplPath := filepath.Join(t.TempDir(), "chatml.jinja")
	if err := os.WriteFile(tplPath, []byte(chatMLTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	chats, recs := chatFixture(t, 96)

	code, _, stderr := runCLI(t, "train", "--model", model, "--data", chats, "--out", filepath.Join(t.TempDir(), "none"))
	if code != 2 || !strings.Contains(stderr, filepath.Join(model, modeldir.TokenizerConfigFile)) || !strings.Contains(stderr, "--chat-template") {
		t.Fatalf("messages without a chat template: exit %d, %q", code, stderr)
	}

	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := runCLI(t, "train", "--model", model, "--data", chats, "--out", out, "--chat-template", tplPath,
		"--lr", "3e-3", "--epochs", "3", "--batch-size", "16", "--threads", "1", "--seed", "1")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	var res struct {
		FirstLoss float64    `json:"first_loss"`
		LastLoss  float64    `json:"last_loss"`
		Format    string     `json:"format"`
		Data      data.Stats `json:"data"`
		Output    string     `json:"output"`
	}
	readJSON(t, filepath.Join(out, "run.json"), &res)
	if !(res.LastLoss < 0.8*res.FirstLoss) || res.Format != "chat" {
		t.Errorf("format %q, loss %.4f → %.4f: want chat and a falling loss", res.Format, res.FirstLoss, res.LastLoss)
	}
	t.Logf("loss %.3f → %.3f, %s", res.FirstLoss, res.LastLoss, res.Data)

	// The labels the job trains on, rebuilt as finetune builds them.
	tok, err := tokenizer.Load(filepath.Join(model, modeldir.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	man, err := modeldir.ReadManifest(model)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := data.LoadChat(model, tplPath, man, tok, "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := data.ConfigFor(man)
	cfg.Chat = tpl
	enc, err := data.NewEncoder(tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := enc.Encode(&data.Dataset{Path: chats, Kind: data.Chat, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := data.NewLoader(ex, data.BatchOptions{BatchSize: len(recs), NoShuffle: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ld.Next()
	if err != nil {
		t.Fatal(err)
	}
	labelled := 0
	for r, rec := range recs {
		var want []string
		for _, m := range rec.Messages {
			if m.Role == "assistant" {
				want = append(want, m.Content+"<|im_end|>")
			}
		}
		var got []string
		var run []int
		labels := b.Labels[r*b.SeqLen : (r+1)*b.SeqLen]
		for k, l := range labels {
			if l != data.IgnoreIndex {
				if l != b.InputIDs[r*b.SeqLen+k] {
					t.Fatalf("row %d: label %d at %d is not the input token", r, l, k)
				}
				run = append(run, int(l))
				labelled++
			}
			if (l == data.IgnoreIndex || k == len(labels)-1) && len(run) > 0 {
				s, err := tok.Decode(run, false)
				if err != nil {
					t.Fatal(err)
				}
				got, run = append(got, s), nil
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("row %d: labelled text %q, assistant turns %q", r, got, want)
		}
	}
	if labelled != res.Data.TargetTokens {
		t.Errorf("%d labelled tokens here, the job counted %d target tokens", labelled, res.Data.TargetTokens)
	}

	code, stdout, stderr = runCLI(t, "generate", "--model", res.Output, "--chat-template", tplPath, "--prompt", "river 2", "--max-new-tokens", "12", "--json")
	if code != 0 {
		t.Fatalf("generate --chat: exit %d\n%s%s", code, stdout, stderr)
	}
	var gens []struct{ Text, Reason string }
	if err := json.Unmarshal([]byte(stdout), &gens); err != nil || len(gens) != 1 {
		t.Fatalf("generate --json: %v %q", err, stdout)
	}
	t.Logf("generate --chat: %q (%s)", gens[0].Text, gens[0].Reason)
	code, _, stderr = runCLI(t, "generate", "--model", res.Output, "--chat", "--prompt", "x")
	if code != 2 || !strings.Contains(stderr, modeldir.TokenizerConfigFile) {
		t.Errorf("generate --chat without a template: exit %d, %q", code, stderr)
	}

	// eval --task cl scores classification rows through the same template.
	clPath := filepath.Join(t.TempDir(), "cl.json")
	clRows := `[{"sentence": "river 2", "label": "river river"}, {"sentence": "stone 1", "label": "stone"}, {"sentence": "apple 3", "label": "apple apple apple"}]`
	if err := os.WriteFile(clPath, []byte(clRows), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "eval", "--model", res.Output, "--task", "cl", "--data", clPath, "--chat-template", tplPath, "--json")
	if code != 0 || !strings.Contains(stdout, `"acc_rank"`) {
		t.Fatalf("eval --task cl --chat-template: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "eval", "--model", res.Output, "--task", "perplexity", "--data", clPath, "--chat")
	if code != 2 || !strings.Contains(stderr, "--task cl") {
		t.Errorf("eval --chat on perplexity: exit %d, %q", code, stderr)
	}
}
