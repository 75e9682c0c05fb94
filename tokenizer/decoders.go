package tokenizer

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text pieces; the pieces are
// concatenated at the end.
type decoder interface {
	decode(tokens []string) []string
}

var supportedDecoders = []string{"Sequence", "ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip", "WordPiece", "BPEDecoder"}

func parseDecoder(path string, raw json.RawMessage) (decoder, error) {
	o, typ, err := decodeComponent(path, raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(o, "decoders", parseDecoder)
		if err != nil {
			return nil, err
		}
		return sequenceDecoder(seq), nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "Metaspace":
		r, err := o.singleRune("replacement", '▁')
		if err != nil {
			return nil, err
		}
		scheme, err := parseScheme(o)
		if err != nil {
			return nil, err
		}
		return metaspaceDecoder{r, scheme != "never"}, nil
	case "Replace":
		r, err := parseReplace(o)
		if err != nil {
			return nil, err
		}
		return replaceDecoder{r}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		var d stripDecoder
		if d.content, err = o.singleRune("content", ' '); err != nil {
			return nil, err
		}
		if d.start, err = o.integer("start", 0); err != nil {
			return nil, err
		}
		if d.stop, err = o.integer("stop", 0); err != nil {
			return nil, err
		}
		return d, nil
	case "WordPiece":
		var d wordPieceDecoder
		if d.prefix, err = o.str("prefix", "##"); err != nil {
			return nil, err
		}
		if d.cleanup, err = o.boolean("cleanup", true); err != nil {
			return nil, err
		}
		return d, nil
	case "BPEDecoder":
		s, err := o.str("suffix", "</w>")
		if err != nil {
			return nil, err
		}
		return bpeDecoder{s}, nil
	}
	return nil, unsupported(o.field("type"), "decoder", typ, supportedDecoders)
}

type sequenceDecoder []decoder

func (s sequenceDecoder) decode(tokens []string) []string {
	for _, d := range s {
		tokens = d.decode(tokens)
	}
	return tokens
}

// byteLevelDecoder maps GPT-2's printable runes back to bytes; a token with
// a rune outside the table is kept as its own UTF-8 bytes.
type byteLevelDecoder struct{}

func (byteLevelDecoder) decode(tokens []string) []string {
	var b []byte
	for _, t := range tokens {
		ok := true
		for _, r := range t {
			if _, in := runeToByte[r]; !in {
				ok = false
				break
			}
		}
		if !ok {
			b = append(b, t...)
			continue
		}
		for _, r := range t {
			b = append(b, runeToByte[r])
		}
	}
	return []string{rustLossy(b)}
}

// metaspaceDecoder turns "▁" back into spaces, dropping them from the first
// token when the pre-tokenizer added a prefix.
type metaspaceDecoder struct {
	replacement rune
	prefixed    bool
}

func (m metaspaceDecoder) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		var b strings.Builder
		for _, r := range t {
			switch {
			case r != m.replacement:
				b.WriteRune(r)
			case i == 0 && m.prefixed:
			default:
				b.WriteByte(' ')
			}
		}
		out[i] = b.String()
	}
	return out
}

type replaceDecoder struct{ r replaceNormalizer }

func (d replaceDecoder) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = d.r.replaceString(t)
	}
	return out
}

// byteFallbackDecoder turns runs of <0xNN> tokens back into text; a run
// that is not valid UTF-8 becomes one U+FFFD per byte.
type byteFallbackDecoder struct{}

func byteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(t[3:5], "+"), 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

func (byteFallbackDecoder) decode(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if b, ok := byteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decode(tokens []string) []string { return []string{strings.Join(tokens, "")} }

// stripDecoder removes up to start leading and stop trailing copies of
// content from every token.
type stripDecoder struct {
	content     rune
	start, stop int
}

func (d stripDecoder) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rs := []rune(t)
		lo := 0
		for k := 0; k < d.start && k < len(rs) && rs[k] == d.content; k++ {
			lo = k + 1
		}
		hi := len(rs)
		for k := 0; k < d.stop && len(rs)-k-1 >= 0; k++ {
			idx := len(rs) - k - 1
			if rs[idx] != d.content {
				break
			}
			hi = idx
		}
		if hi < lo {
			hi = lo
		}
		out[i] = string(rs[lo:hi])
	}
	return out
}

// wordPieceDecoder joins BERT-style pieces, removing the "##" prefix.
type wordPieceDecoder struct {
	prefix  string
	cleanup bool
}

func (d wordPieceDecoder) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i != 0 {
			if strings.HasPrefix(t, d.prefix) {
				t = strings.Replace(t, d.prefix, "", 1)
			} else {
				t = " " + t
			}
		}
		if d.cleanup {
			t = cleanupSpaces(t)
		}
		out[i] = t
	}
	return out
}

var cleanupReplacer = []string{" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'", " n't", "n't", " 'm", "'m", " do not", " don't", " 's", "'s", " 've", "'ve", " 're", "'re"}

func cleanupSpaces(s string) string {
	for i := 0; i < len(cleanupReplacer); i += 2 {
		s = strings.ReplaceAll(s, cleanupReplacer[i], cleanupReplacer[i+1])
	}
	return s
}

// bpeDecoder replaces the end-of-word suffix with a space.
type bpeDecoder struct{ suffix string }

func (d bpeDecoder) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rep := " "
		if i == len(tokens)-1 {
			rep = ""
		}
		out[i] = strings.ReplaceAll(t, d.suffix, rep)
	}
	return out
}
