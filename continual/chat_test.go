package continual

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/train"
)

// With --template chat every task trains on chat-formatted rows and the
// evaluation renders rows with the same template; without a template the
// run stops before training, naming the model's tokenizer_config.json.
func TestChatTemplateSequence(t *testing.T) {
	model := tinyLlama(t)
	root := t.TempDir()
	seq := writeFixture(t, filepath.Join(root, "data"), 8, 4)
	seq.Tasks = seq.Tasks[:2]
	job := finetune.JobOptions{Train: train.Config{GradAccum: 1, Optim: train.DefaultAdamW(), T: 0.7}, BatchSize: 4, MaxSteps: 2, Template: finetune.FormatChat}
	o := Options{Model: model, Out: filepath.Join(root, "none"), Seeds: []uint64{1}, Job: job}
	_, err := Run(context.Background(), seq, o)
	if !badinput.Is(err) || !strings.Contains(err.Error(), filepath.Join(model, modeldir.TokenizerConfigFile)) {
		t.Fatalf("no chat template: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "none", "full")); err == nil {
		t.Fatal("a task trained before the missing template was noticed")
	}

	tpl := filepath.Join(root, "chatml.jinja")
	src := "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
	if err := os.WriteFile(tpl, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Out, o.Job.ChatTemplate, o.Score = filepath.Join(root, "run"), tpl, eval.CLBoth
	r, err := newRunner(seq, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.chat == nil || r.chat.Name != tpl {
		t.Fatalf("evaluation template %v, want %s", r.chat, tpl)
	}
	os.RemoveAll(o.Out)
	rep, err := Run(context.Background(), seq, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || len(rep.Runs[0].Tasks) != 2 {
		t.Fatalf("report: %+v", rep.Runs)
	}
	for i, task := range []string{"01-weather", "02-pets"} {
		raw, err := os.ReadFile(filepath.Join(o.Out, "full", "seed-1", task, "run.json"))
		if err != nil {
			t.Fatal(err)
		}
		var res finetune.JobResult
		if err := json.Unmarshal(raw, &res); err != nil || res.Format != finetune.FormatChat {
			t.Errorf("task %d trained in format %q (%v), want chat", i+1, res.Format, err)
		}
	}
}
