package tokenizer

import (
	"bytes"
	"encoding/json"
)

// The types in this file write tokenizer.json components, for converted
// SentencePiece models and trained tokenizers. Field order follows what
// Hugging Face writes, so that files diff cleanly against theirs.

// orderedVocab is a BPE vocabulary in id order: token i has id i. An
// empty string is a gap: no token has that id (GGUF files pad such ids
// with unused tokens).
type orderedVocab []string

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for i, tok := range v {
		if tok == "" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		k, err := marshalJSON(tok)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(jsonInt(i))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func jsonInt(i int) []byte {
	b, _ := json.Marshal(i)
	return b
}

type bpeJSON struct {
	Type                    string       `json:"type"`
	Dropout                 *float64     `json:"dropout"`
	UnkToken                *string      `json:"unk_token"`
	ContinuingSubwordPrefix *string      `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string      `json:"end_of_word_suffix"`
	FuseUnk                 bool         `json:"fuse_unk"`
	ByteFallback            bool         `json:"byte_fallback"`
	IgnoreMerges            bool         `json:"ignore_merges"`
	Vocab                   orderedVocab `json:"vocab"`
	Merges                  [][2]string  `json:"merges"`
}

type unigramJSON struct {
	Type         string        `json:"type"`
	UnkID        *int          `json:"unk_id"`
	Vocab        []unigramItem `json:"vocab"`
	ByteFallback bool          `json:"byte_fallback"`
}

// unigramItem is [piece, score].
type unigramItem struct {
	Piece string
	Score float64
}

func (u unigramItem) MarshalJSON() ([]byte, error) {
	return marshalJSON([]any{u.Piece, u.Score})
}

type typed = map[string]any

func seqNormalizer(items ...any) typed { return typed{"type": "Sequence", "normalizers": items} }
func seqDecoder(items ...any) typed    { return typed{"type": "Sequence", "decoders": items} }

func replaceJSON(pattern, content string, regex bool) typed {
	key := "String"
	if regex {
		key = "Regex"
	}
	return typed{"type": "Replace", "pattern": map[string]string{key: pattern}, "content": content}
}

func metaspaceJSON(scheme string, split bool) typed {
	return typed{"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}
}

func templateJSON(single, pair []string, specials map[string]int) typed {
	pieces := func(spec []string) []any {
		var out []any
		for _, s := range spec {
			p, _ := parsePieceString("", s)
			if p.seq >= 0 {
				out = append(out, typed{"Sequence": typed{"id": string(rune('A' + p.seq)), "type_id": p.typeID}})
			} else {
				out = append(out, typed{"SpecialToken": typed{"id": p.special, "type_id": p.typeID}})
			}
		}
		return out
	}
	st := typed{}
	for tok, id := range specials {
		st[tok] = typed{"id": tok, "ids": []int{id}, "tokens": []string{tok}}
	}
	return typed{"type": "TemplateProcessing", "single": pieces(single), "pair": pieces(pair), "special_tokens": st}
}

// buildDoc assembles a tokenizer.json and loads it, so built tokenizers go
// through the same checks as files.
func buildDoc(added []AddedToken, norm, pre, post, dec, mdl any) (*Tokenizer, error) {
	raw := func(v any) (json.RawMessage, error) {
		if v == nil {
			return json.RawMessage("null"), nil
		}
		return marshalJSON(v)
	}
	d := document{Version: "1.0", AddedTokens: added}
	if d.AddedTokens == nil {
		d.AddedTokens = []AddedToken{}
	}
	var err error
	for _, f := range []struct {
		dst *json.RawMessage
		v   any
	}{{&d.Normalizer, norm}, {&d.PreTokenizer, pre}, {&d.PostProcessor, post}, {&d.Decoder, dec}, {&d.Model, mdl}} {
		if *f.dst, err = raw(f.v); err != nil {
			return nil, err
		}
	}
	data, err := marshalJSON(d)
	if err != nil {
		return nil, err
	}
	return fromJSON(data)
}
