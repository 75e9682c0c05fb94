package data

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/migu-ml/migu/chat"
)

// Kind is what a record holds; it decides how the record becomes a prompt,
// an answer or a text.
type Kind string

// The record kinds. Read detects them from the fields present, or takes
// the one ReadOptions.Kind forces.
const (
	// Instruction records: "instruction", optional "input", and "output" or
	// "response"; or "prompt" and "completion" (the prompt used verbatim).
	Instruction Kind = "instruction"
	// Classification records: "sentence" and "label", as in the CL
	// benchmark of O-LoRA and MIGU.
	Classification Kind = "classification"
	// Text records: "text" (or ReadOptions.TextField), for continual
	// pre-training.
	Text Kind = "text"
	// Chat records: "messages", a list of {"role", "content"} with roles
	// system, user and assistant, as in OpenAI's and TRL's fine-tuning
	// files; an assistant message may carry OpenAI's "weight" (0: not
	// learnt). The model's chat template renders them; the loss is on the
	// assistant turns.
	Chat Kind = "chat"
)

// ParseKind checks a record kind from a flag; "" and "auto" mean detect.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case "", "auto":
		return "", nil
	case Instruction, Classification, Text, Chat:
		return Kind(s), nil
	}
	return "", fmt.Errorf("unknown record kind %q (instruction, classification, text, chat or auto)", s)
}

// Record is one example of a data file before tokenization. Which fields
// are set depends on Kind.
type Record struct {
	Kind Kind
	// Instruction and Input are an instruction record's task and optional
	// context; the prompt template joins them.
	Instruction string
	Input       string
	// Prompt is a prompt/completion record's prompt, used verbatim.
	Prompt string
	// Output is the answer of an instruction record ("output", "response"
	// or "completion").
	Output string
	// Sentence and Label are a classification record's text and label;
	// Class is the label's index in Dataset.Labels.
	Sentence string
	Label    string
	Class    int
	// Text is a text record's text.
	Text string
	// Messages are a chat record's conversation; Learn[i] says whether
	// message i is an assistant message the loss is taken on.
	Messages []chat.Message
	Learn    []bool
	// Line is where the record starts in its file (1-based).
	Line int
}

// fieldError is a problem with one field of a record; the reader adds the
// file and line.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return e.msg
	}
	return fmt.Sprintf("field %q: %s", e.field, e.msg)
}

func missing(field, why string) error {
	return &fieldError{field, "missing: " + why}
}

// answerFields are the names an instruction record's answer may have, in
// order of preference.
var answerFields = []string{"output", "response", "completion"}

// parseRecord reads one JSON object into a record of the forced kind, or of
// the kind its fields say when forced is empty.
func parseRecord(obj map[string]json.RawMessage, forced Kind, textField string) (Record, error) {
	var r Record
	kind := forced
	if kind == "" {
		switch {
		case has(obj, "messages"):
			kind = Chat
		case has(obj, "instruction"), has(obj, "prompt"):
			kind = Instruction
		case has(obj, "sentence"), has(obj, "label"):
			kind = Classification
		case has(obj, textField):
			kind = Text
		default:
			return r, &fieldError{"", fmt.Sprintf(`no known fields: expected "messages", "instruction" and "output" (or "response"), "prompt" and "completion", "sentence" and "label", or %q`, textField)}
		}
	}
	r.Kind = kind
	var err error
	switch kind {
	case Instruction:
		if has(obj, "instruction") {
			if r.Instruction, err = str(obj, "instruction"); err != nil {
				return r, err
			}
			if has(obj, "input") {
				if r.Input, err = str(obj, "input"); err != nil {
					return r, err
				}
			}
		} else if has(obj, "prompt") {
			if r.Prompt, err = str(obj, "prompt"); err != nil {
				return r, err
			}
		} else {
			return r, missing("instruction", `an instruction record needs "instruction" (or "prompt") and "output" (or "response", "completion")`)
		}
		for _, f := range answerFields {
			if has(obj, f) {
				r.Output, err = str(obj, f)
				return r, err
			}
		}
		if !has(obj, "instruction") {
			return r, missing("completion", `a prompt record needs "completion" (or "output", "response")`)
		}
		return r, missing("output", `an instruction record needs "output" (or "response", "completion")`)
	case Classification:
		if !has(obj, "sentence") {
			return r, missing("sentence", `a classification record needs "sentence" and "label"`)
		}
		if r.Sentence, err = str(obj, "sentence"); err != nil {
			return r, err
		}
		if !has(obj, "label") {
			return r, missing("label", `a classification record needs "sentence" and "label"`)
		}
		r.Label, err = labelText("label", obj["label"])
		return r, err
	case Text:
		if !has(obj, textField) {
			return r, missing(textField, "a text record needs it")
		}
		r.Text, err = str(obj, textField)
		return r, err
	case Chat:
		if !has(obj, "messages") {
			return r, missing("messages", `a chat record needs "messages": [{"role": …, "content": …}, …]`)
		}
		r.Messages, r.Learn, err = parseMessages(obj["messages"])
		return r, err
	}
	return r, fmt.Errorf("unknown record kind %q", kind)
}

// parseMessages checks a chat record's "messages": a non-empty list of
// objects with a known "role" and a string "content", at least one of
// them an assistant message to learn from.
func parseMessages(raw json.RawMessage) ([]chat.Message, []bool, error) {
	var items []json.RawMessage
	if jsonKind(raw) != "an array" || json.Unmarshal(raw, &items) != nil {
		return nil, nil, &fieldError{"messages", `expected a list of {"role", "content"} objects, got ` + jsonKind(raw)}
	}
	if len(items) == 0 {
		return nil, nil, &fieldError{"messages", "the list is empty: a conversation needs at least an assistant message"}
	}
	msgs, learn := make([]chat.Message, len(items)), make([]bool, len(items))
	learnt := 0
	for i, it := range items {
		at := fmt.Sprintf("messages[%d]", i)
		var m map[string]json.RawMessage
		if jsonKind(it) != "an object" || json.Unmarshal(it, &m) != nil {
			return nil, nil, &fieldError{at, `expected an object with "role" and "content", got ` + jsonKind(it)}
		}
		for _, f := range []string{"role", "content"} {
			v, ok := m[f]
			switch {
			case !ok:
				return nil, nil, missing(at+"."+f, `every message needs "role" and "content"`)
			case jsonKind(v) == "an array" && f == "content":
				return nil, nil, &fieldError{at + ".content", "expected a string, got an array (content parts are not supported: give the text as a string)"}
			case jsonKind(v) != "a string" || json.Unmarshal(v, new(string)) != nil:
				return nil, nil, &fieldError{at + "." + f, "expected a string, got " + jsonKind(v)}
			}
		}
		json.Unmarshal(m["role"], &msgs[i].Role)
		json.Unmarshal(m["content"], &msgs[i].Content)
		switch msgs[i].Role {
		case chat.RoleSystem, chat.RoleUser, chat.RoleAssistant:
		default:
			return nil, nil, &fieldError{at + ".role", fmt.Sprintf("unknown role %q: expected system, user or assistant", msgs[i].Role)}
		}
		learn[i] = msgs[i].Role == chat.RoleAssistant
		if w := m["weight"]; has(m, "weight") {
			var f float64
			switch err := json.Unmarshal(w, &f); {
			case !learn[i]:
				return nil, nil, &fieldError{at + ".weight", "only assistant messages carry a weight"}
			case err != nil || f != 0 && f != 1:
				return nil, nil, &fieldError{at + ".weight", "expected 0 (do not learn this message) or 1, got " + string(w)}
			}
			learn[i] = f == 1
		}
		if learn[i] {
			learnt++
		}
	}
	if learnt == 0 {
		return nil, nil, &fieldError{"messages", `no assistant message to learn from: a conversation needs a message with role "assistant" (and weight 1 where weights are given)`}
	}
	return msgs, learn, nil
}

// has reports whether obj has field with a non-null value.
func has(obj map[string]json.RawMessage, field string) bool {
	v, ok := obj[field]
	return ok && string(v) != "null"
}

func str(obj map[string]json.RawMessage, field string) (string, error) {
	var s string
	if err := json.Unmarshal(obj[field], &s); err != nil {
		return "", &fieldError{field, "expected a string, got " + jsonKind(obj[field])}
	}
	return s, nil
}

// labelText reads a label: a string, or a number or boolean taken as its
// JSON spelling (so 0 and "0" are the same label).
func labelText(field string, raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", &fieldError{field, "not valid JSON"}
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return string(raw), nil
	}
	return "", &fieldError{field, "expected a string, number or boolean, got " + jsonKind(raw)}
}

// jsonKind names the JSON type of raw for messages.
func jsonKind(raw json.RawMessage) string {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return "an object"
		case '[':
			return "an array"
		case '"':
			return "a string"
		case 't', 'f':
			return "a boolean"
		case 'n':
			return "null"
		}
		return "a number"
	}
	return "nothing"
}
