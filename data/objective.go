package data

import (
	"github.com/migu-ml/migu/chat"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// Objective is what the model learns from a batch; it fixes the layout of
// the labels.
type Objective string

// The objectives of migu.json.
const (
	// CLM is causal language modelling (decoder-only): labels aligned with
	// the input ids, IgnoreIndex on prompt positions; the training graph
	// shifts them so that position t predicts token t+1.
	CLM Objective = "clm"
	// Seq2Seq is T5's: the encoder reads the prompt, the decoder the
	// answer shifted right behind the start token, labels the answer.
	Seq2Seq Objective = "seq2seq"
	// MLM is masked language modelling (RoBERTa): 15% of the tokens
	// chosen, labels on those only.
	MLM Objective = "mlm"
	// CLS is sequence classification: one class index per row.
	CLS Objective = "cls"
)

// ParseObjective checks an objective name from a flag or a manifest.
func ParseObjective(s string) (Objective, error) {
	switch o := Objective(s); o {
	case CLM, Seq2Seq, MLM, CLS:
		return o, nil
	}
	return "", badinput.Errorf("objective %q is not one of clm, seq2seq, mlm, cls", s)
}

// Specials are the ids of the tokens the examples need; -1 where the model
// has none.
type Specials struct {
	BOS, EOS, PAD, MASK int64
	// DecoderStart begins a seq2seq decoder's input (T5: the pad id).
	DecoderStart int64
	// All lists every special id of the model (unk included): MLM never
	// chooses these positions.
	All []int64
}

// NoSpecials has no special tokens at all.
var NoSpecials = Specials{BOS: -1, EOS: -1, PAD: -1, MASK: -1, DecoderStart: -1}

// padID is the id padding uses: the model's pad token, else 0.
func (s Specials) padID() int64 {
	if s.PAD >= 0 {
		return s.PAD
	}
	return 0
}

// DefaultMaxLen is the sequence length used when neither the options nor
// the model's position table set one.
const DefaultMaxLen = 512

// Config says how records become examples for one model.
type Config struct {
	// Objective is the model's (migu.json), or an override.
	Objective Objective
	// MaxLen bounds every input sequence, special tokens included.
	MaxLen int
	// MaxTargetLen bounds a seq2seq target (0: MaxLen).
	MaxTargetLen int
	// ModelMaxLen is the longest sequence the model's positions allow (0:
	// no limit, for relative or rotary positions); MaxLen may not exceed it.
	ModelMaxLen int
	Specials    Specials
	// VocabSize bounds the random tokens of MLM.
	VocabSize int
	// NumLabels is the size of a classification head (0: unchecked).
	NumLabels int
	// Template formats instruction records (zero value: AlpacaTemplate).
	Template Template
	// CL formats classification records for the generative objectives
	// (nil: CLPromptFor the dataset's path and labels).
	CL *CLPrompt
	// Chat, when set, formats every record but text ones with the model's
	// chat template instead of Template (see Conversation and
	// chatExample), the loss on the assistant turns alone. Chat records
	// need it; objective clm only.
	Chat *chat.Template
	// MLMProbability is the share of tokens MLM chooses (0: 0.15).
	MLMProbability float64
}

// ConfigFor reads a model's objective, lengths and special tokens from its
// manifest.
func ConfigFor(m *modeldir.Manifest) Config {
	id := func(role string) int64 {
		if v, ok := m.SpecialTokens[role]; ok {
			return v
		}
		return -1
	}
	sp := Specials{BOS: id("bos"), EOS: id("eos"), PAD: id("pad"), MASK: id("mask"), DecoderStart: id("decoder_start")}
	for _, role := range m.SortedSpecialTokens() {
		sp.All = append(sp.All, m.SpecialTokens[role])
	}
	c := Config{
		Objective:   Objective(m.Objective),
		MaxLen:      DefaultMaxLen,
		ModelMaxLen: int(m.MaxLength),
		Specials:    sp,
		VocabSize:   int(m.VocabSize),
		NumLabels:   m.NumLabels,
	}
	if c.ModelMaxLen > 0 && c.ModelMaxLen < c.MaxLen {
		c.MaxLen = c.ModelMaxLen
	}
	return c
}

// minMaxLen is the shortest MaxLen accepted: room for two specials and a
// little content.
const minMaxLen = 4

// check validates a configuration and fills its defaults.
func (c *Config) check() error {
	if _, err := ParseObjective(string(c.Objective)); err != nil {
		return err
	}
	if c.MaxLen < minMaxLen {
		return badinput.Errorf("max length %d is too short: at least %d tokens", c.MaxLen, minMaxLen)
	}
	if c.ModelMaxLen > 0 && c.MaxLen > c.ModelMaxLen {
		return badinput.Errorf("max length %d exceeds the model's %d positions (max_length in migu.json)", c.MaxLen, c.ModelMaxLen)
	}
	if c.MaxTargetLen == 0 {
		c.MaxTargetLen = c.MaxLen
	}
	if c.MaxTargetLen < 1 {
		return badinput.Errorf("max target length %d must be positive", c.MaxTargetLen)
	}
	if c.Template == (Template{}) {
		c.Template = AlpacaTemplate
	}
	if err := c.Template.Validate(); err != nil {
		return badinput.Wrap(err)
	}
	if c.Chat != nil && c.Objective != CLM {
		return badinput.Errorf("the chat template format is for decoder-only models (objective clm), not objective %s", c.Objective)
	}
	if c.MLMProbability == 0 {
		c.MLMProbability = 0.15
	}
	switch c.Objective {
	case MLM:
		if c.MLMProbability < 0 || c.MLMProbability > 1 {
			return badinput.Errorf("MLM probability %g is outside [0, 1]", c.MLMProbability)
		}
		if c.Specials.MASK < 0 {
			return badinput.Errorf("objective mlm needs a mask token, and the model has none (special_tokens.mask in migu.json)")
		}
		if c.VocabSize <= 0 {
			return badinput.Errorf("objective mlm needs the vocabulary size for its random tokens")
		}
	case Seq2Seq:
		if c.Specials.DecoderStart < 0 {
			return badinput.Errorf("objective seq2seq needs a decoder start token, and the model has none (special_tokens.decoder_start in migu.json)")
		}
	}
	return nil
}
