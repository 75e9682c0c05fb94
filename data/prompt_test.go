package data

import (
	"path/filepath"
	"testing"
)

func TestTemplate(t *testing.T) {
	cases := []struct {
		name               string
		tpl                Template
		instruction, input string
		want, cut          string
	}{
		{"alpaca without input", AlpacaTemplate, "Add 2 and 3.", "",
			"Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
				"### Instruction:\nAdd 2 and 3.\n\n### Response:\n", "Add 2 and 3."},
		{"alpaca with input", AlpacaTemplate, "Translate.", "Bonjour",
			"Below is an instruction that describes a task, paired with an input that provides further context. " +
				"Write a response that appropriately completes the request.\n\n" +
				"### Instruction:\nTranslate.\n\n### Input:\nBonjour\n\n### Response:\n", "Bonjour"},
		{"plain", PlainTemplate, "do", "x", "do\nx\n", "x"},
		{"placeholders in the content stay", PlainTemplate, "say {input}", "", "say {input}\n", "say {input}"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, cut := c.tpl.format(c.instruction, c.input)
			if got != c.want {
				t.Errorf("prompt\n got %q\nwant %q", got, c.want)
			}
			if got[cut.start:cut.end] != c.cut {
				t.Errorf("cut region %q, want %q", got[cut.start:cut.end], c.cut)
			}
			if c.tpl.Format(c.instruction, c.input) != got {
				t.Error("Format differs from format")
			}
		})
	}
	for _, bad := range []Template{{NoInput: "x", WithInput: "{instruction}{input}"}, {NoInput: "{instruction}", WithInput: "{instruction}"}} {
		if bad.Validate() == nil {
			t.Errorf("template %+v accepted", bad)
		}
	}
}

func TestCLPrompt(t *testing.T) {
	labels := []string{"very negative", "negative", "neutral", "positive", "very positive"}
	cases := []struct {
		name, path string
		labels     []string
		sentence   string
		want       string
	}{
		{"sentiment, as O-LoRA writes it", filepath.FromSlash("cl_benchmark/SC/amazon/train.json"), labels, "Great value.",
			"Task:SC\nDataset:amazon\nWhat is the sentiment of the following paragraph? Choose one from the option.\n" +
				"Option: very negative, negative, neutral, positive, very positive \nGreat value.\nAnswer:"},
		{"NLI task", filepath.FromSlash("/d/NLI/CB/test.json"), []string{"entailment", "contradiction", "neutral"}, "sentence 1: a\nsentence 2: b",
			"Task:NLI\nDataset:CB\nWhat is the logical relationship between the \"sentence 1\" and the \"sentence 2\"? Choose one from the option.\n" +
				"Option: entailment, contradiction, neutral \nsentence 1: a\nsentence 2: b\nAnswer:"},
		{"COPA has no instruction or options", filepath.FromSlash("/d/COPA/COPA/train.json"), []string{"A", "B"}, "Which? A: x B: y",
			"Task:COPA\nDataset:COPA\nWhich? A: x B: y\nAnswer:"},
		{"other data", filepath.FromSlash("/home/me/reviews/train.jsonl"), []string{"good", "bad"}, "Nice.",
			"Dataset:reviews\nWhat is the label of the following text? Choose one from the option.\nOption: good, bad \nNice.\nAnswer:"},
		{"bare file name", "train.jsonl", []string{"a"}, "s",
			"What is the label of the following text? Choose one from the option.\nOption: a \ns\nAnswer:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := CLPromptFor(c.path, c.labels)
			got, cut := p.format(c.sentence)
			if got != c.want {
				t.Errorf("prompt\n got %q\nwant %q", got, c.want)
			}
			if got[cut.start:cut.end] != c.sentence {
				t.Errorf("cut region %q, want the sentence", got[cut.start:cut.end])
			}
			if p.Format(c.sentence) != got {
				t.Error("Format differs from format")
			}
		})
	}
}
