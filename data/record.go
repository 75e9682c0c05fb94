package data

import (
	"encoding/json"
	"fmt"
	"strconv"
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
)

// ParseKind checks a record kind from a flag; "" and "auto" mean detect.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case "", "auto":
		return "", nil
	case Instruction, Classification, Text:
		return Kind(s), nil
	}
	return "", fmt.Errorf("unknown record kind %q (instruction, classification, text or auto)", s)
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
		case has(obj, "instruction"), has(obj, "prompt"):
			kind = Instruction
		case has(obj, "sentence"), has(obj, "label"):
			kind = Classification
		case has(obj, textField):
			kind = Text
		default:
			return r, &fieldError{"", fmt.Sprintf(`no known fields: expected "instruction" and "output" (or "response"), "prompt" and "completion", "sentence" and "label", or %q`, textField)}
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
	}
	return r, fmt.Errorf("unknown record kind %q", kind)
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
