package data

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/tokenizer"
)

// span is a byte range [start, end) of a prompt: the part of the record's
// content that truncation shortens first.
type span struct{ start, end int }

// Template turns an instruction record into a prompt: NoInput for records
// without input, WithInput for the others. The placeholders {instruction}
// and {input} stand for the record's fields; the answer follows the prompt
// directly, so a template ends where the answer begins.
type Template struct {
	NoInput   string
	WithInput string
}

// AlpacaTemplate is Stanford Alpaca's prompt, the most common format for
// instruction tuning, and the default.
var AlpacaTemplate = Template{
	NoInput: "Below is an instruction that describes a task. " +
		"Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n{instruction}\n\n### Response:\n",
	WithInput: "Below is an instruction that describes a task, paired with an input that provides further context. " +
		"Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
}

// PlainTemplate puts the instruction and the input on lines of their own,
// with no wording around them.
var PlainTemplate = Template{
	NoInput:   "{instruction}\n",
	WithInput: "{instruction}\n{input}\n",
}

// Validate checks that the templates name the placeholders they need.
func (t Template) Validate() error {
	if !strings.Contains(t.NoInput, "{instruction}") {
		return fmt.Errorf("prompt template without input: no {instruction} placeholder in %q", t.NoInput)
	}
	if !strings.Contains(t.WithInput, "{instruction}") || !strings.Contains(t.WithInput, "{input}") {
		return fmt.Errorf("prompt template with input: it needs both {instruction} and {input}, got %q", t.WithInput)
	}
	return nil
}

// Format fills the template with an instruction and an optional input.
func (t Template) Format(instruction, input string) string {
	s, _ := t.format(instruction, input)
	return s
}

// format fills the template and returns where the input (or, without one,
// the instruction) landed: truncation shortens that part first.
func (t Template) format(instruction, input string) (string, span) {
	tpl, cutName := t.NoInput, "{instruction}"
	if input != "" {
		tpl, cutName = t.WithInput, "{input}"
	}
	values := map[string]string{"{instruction}": instruction, "{input}": input}
	var b strings.Builder
	b.Grow(len(tpl) + len(instruction) + len(input))
	cut, found := span{}, false
	for tpl != "" {
		at, name := len(tpl), ""
		for p := range values {
			if i := strings.Index(tpl, p); i >= 0 && i < at {
				at, name = i, p
			}
		}
		b.WriteString(tpl[:at])
		if name == "" {
			break
		}
		if name == cutName && !found {
			cut, found = span{b.Len(), b.Len() + len(values[name])}, true
		}
		b.WriteString(values[name])
		tpl = tpl[at+len(name):]
	}
	return b.String(), cut
}

// CLPrompt is the prompt of the continual-learning benchmark as O-LoRA and
// MIGU build it (their data collator with the task and dataset names on),
// so that a model trained here answers the benchmark's prompts:
//
//	Task:{Task}\n
//	Dataset:{Dataset}\n
//	{Instruction}                  (ends with \n)
//	Option: {o1}, {o2}, …, {on} \n  (note the space before \n)
//	{sentence}\n
//	Answer:
//
// The target is the label text itself, with no leading space. An empty
// Task or Dataset drops its line, nil Options drop the option line (COPA,
// whose sentences carry their question and options). Accuracy is exact
// match of the generated label.
type CLPrompt struct {
	Task        string
	Dataset     string
	Instruction string
	Options     []string
}

// CLInstructions are the benchmark's instructions per task type (the
// folder above a task's folder: SC/amazon is task type SC).
var CLInstructions = map[string]string{
	"NLI":     "What is the logical relationship between the \"sentence 1\" and the \"sentence 2\"? Choose one from the option.\n",
	"QQP":     "Whether the \"first sentence\" and the \"second sentence\" have the same meaning? Choose one from the option.\n",
	"SC":      "What is the sentiment of the following paragraph? Choose one from the option.\n",
	"TC":      "What is the topic of the following paragraph? Choose one from the option.\n",
	"BoolQA":  "According to the following passage, is the question true or false? Choose one from the option.\n",
	"MultiRC": "According to the following passage and question, is the candidate answer true or false? Choose one from the option.\n",
	"WiC":     "Given a word and two sentences, whether the word is used with the same sense in both sentence? Choose one from the option.\n",
}

// GenericCLInstruction is the instruction for classification data outside
// the benchmark's task types.
const GenericCLInstruction = "What is the label of the following text? Choose one from the option.\n"

// CLPromptFor builds the prompt for a classification file laid out as the
// CL benchmark is (TYPE/DATASET/train.json, e.g. SC/amazon/train.json):
// the task type and dataset are the two folders above the file. Files
// elsewhere get no task line, their folder as dataset name, and
// GenericCLInstruction.
func CLPromptFor(path string, labels []string) CLPrompt {
	dir := filepath.Dir(filepath.Clean(path))
	dataset := filepath.Base(dir)
	if dataset == "." || dataset == string(filepath.Separator) {
		dataset = ""
	}
	task := filepath.Base(filepath.Dir(dir))
	if task == "COPA" {
		return CLPrompt{Task: task, Dataset: dataset}
	}
	if ins, ok := CLInstructions[task]; ok {
		return CLPrompt{Task: task, Dataset: dataset, Instruction: ins, Options: labels}
	}
	return CLPrompt{Dataset: dataset, Instruction: GenericCLInstruction, Options: labels}
}

// Format builds the prompt for one sentence.
func (p CLPrompt) Format(sentence string) string {
	s, _ := p.format(sentence)
	return s
}

// format builds the prompt and returns where the sentence landed.
func (p CLPrompt) format(sentence string) (string, span) {
	var b strings.Builder
	if p.Task != "" {
		b.WriteString("Task:" + p.Task + "\n")
	}
	if p.Dataset != "" {
		b.WriteString("Dataset:" + p.Dataset + "\n")
	}
	b.WriteString(p.Instruction)
	if len(p.Options) > 0 {
		b.WriteString("Option: " + strings.Join(p.Options, ", ") + " \n")
	}
	cut := span{b.Len(), b.Len() + len(sentence)}
	b.WriteString(sentence)
	b.WriteString("\nAnswer:")
	return b.String(), cut
}

// LoadChat returns the chat template a model folder formats conversations
// with: the Jinja file override when given, else the chat_template of the
// folder's tokenizer_config.json. Special tokens the template reads
// (bos_token, eos_token, unk_token, pad_token) come from
// tokenizer_config.json, and where it lacks them from migu.json's special
// tokens spelled by the tokenizer. Without a template it returns nil, or,
// when need says what requires one, bad input naming the folder's
// tokenizer_config.json and --chat-template.
func LoadChat(modelDir, override string, man *modeldir.Manifest, tok *tokenizer.Tokenizer, need any) (*chat.Template, error) {
	tpl, err := chat.Load(modelDir, override)
	if err != nil {
		return nil, err
	}
	if tpl == nil {
		if need == nil || need == "" {
			return nil, nil
		}
		return nil, badinput.Errorf("%v needs a chat template, and %s has none (no field chat_template): give the model's template with %v FILE",
			need, filepath.Join(modelDir, modeldir.TokenizerConfigFile), badinput.Setting("chat_template"))
	}
	fill := map[string]any{}
	for role, id := range man.SpecialTokens {
		name := role + "_token"
		if _, ok := tpl.Vars[name]; ok || role == "decoder_start" {
			continue
		}
		if s, ok := tok.IDToToken(int(id)); ok {
			fill[name] = s
		}
	}
	return tpl.WithVars(fill), nil
}
