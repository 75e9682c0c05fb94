package tokenizer

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// postProcessor adds the special tokens around encoded sequences (and
// sets their type ids); encs holds one encoding, or two for a pair.
type postProcessor interface {
	process(encs []*Encoding, addSpecial bool) []*Encoding
	// added is how many tokens process adds for a single or a pair.
	added(pair bool) int
}

var supportedProcessors = []string{"TemplateProcessing", "RobertaProcessing", "BertProcessing", "ByteLevel", "Sequence"}

func parseProcessor(path string, raw json.RawMessage) (postProcessor, error) {
	o, typ, err := decodeComponent(path, raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "TemplateProcessing":
		return parseTemplate(o)
	case "RobertaProcessing", "BertProcessing":
		p := &clsSepProcessor{roberta: typ == "RobertaProcessing"}
		if p.sep, p.sepID, err = tokenIDPair(o, "sep"); err != nil {
			return nil, err
		}
		if p.cls, p.clsID, err = tokenIDPair(o, "cls"); err != nil {
			return nil, err
		}
		if p.roberta {
			if p.trimOffsets, err = o.boolean("trim_offsets", true); err != nil {
				return nil, err
			}
			if p.addPrefixSpace, err = o.boolean("add_prefix_space", true); err != nil {
				return nil, err
			}
		}
		return p, nil
	case "ByteLevel":
		p := &byteLevelProcessor{}
		if p.trimOffsets, err = o.boolean("trim_offsets", true); err != nil {
			return nil, err
		}
		if p.addPrefixSpace, err = o.boolean("add_prefix_space", true); err != nil {
			return nil, err
		}
		return p, nil
	case "Sequence":
		seq, err := parseSequence(o, "processors", parseProcessor)
		if err != nil {
			return nil, err
		}
		return sequenceProcessor(seq), nil
	}
	return nil, unsupported(o.field("type"), "post-processor", typ, supportedProcessors)
}

// tokenIDPair reads ["</s>", 2].
func tokenIDPair(o jsonObj, k string) (string, int, error) {
	raw, ok := o.get(k)
	if !ok {
		return "", 0, fieldErr(o.field(k), "missing")
	}
	var pair []json.RawMessage
	var tok string
	var id int
	if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 || json.Unmarshal(pair[0], &tok) != nil || json.Unmarshal(pair[1], &id) != nil || id < 0 {
		return "", 0, fieldErr(o.field(k), `expected ["token", id], got %s`, strings.TrimSpace(string(raw)))
	}
	return tok, id, nil
}

// templatePiece is one element of a template: a sequence ($A or $B) or a
// special token, with the type id its tokens get.
type templatePiece struct {
	seq     int    // 0 for A, 1 for B; -1 for a special token
	special string // name in the special_tokens table
	typeID  int
}

type specialEntry struct {
	ids    []int
	tokens []string
}

// templateProcessor is TemplateProcessing: e.g. "<s> $A" for Llama, "$A </s>"
// for T5.
type templateProcessor struct {
	single, pair []templatePiece
	specials     map[string]specialEntry
}

func parseTemplate(o jsonObj) (*templateProcessor, error) {
	p := &templateProcessor{specials: map[string]specialEntry{}}
	if raw, ok := o.get("special_tokens"); ok {
		so, err := decodeObj(o.field("special_tokens"), raw)
		if err != nil {
			return nil, err
		}
		for name, entry := range so.m {
			eo, err := decodeObj(so.field(name), entry)
			if err != nil {
				return nil, err
			}
			var e specialEntry
			idsRaw, _ := eo.get("ids")
			toksRaw, _ := eo.get("tokens")
			if json.Unmarshal(idsRaw, &e.ids) != nil {
				return nil, fieldErr(eo.field("ids"), "expected an array of ids")
			}
			if json.Unmarshal(toksRaw, &e.tokens) != nil {
				return nil, fieldErr(eo.field("tokens"), "expected an array of strings")
			}
			if len(e.ids) != len(e.tokens) {
				return nil, fieldErr(so.field(name), "ids and tokens differ in length")
			}
			for _, id := range e.ids {
				if id < 0 {
					return nil, fieldErr(eo.field("ids"), "negative id %d", id)
				}
			}
			p.specials[name] = e
		}
	}
	var err error
	if p.single, err = parseTemplatePieces(o, "single", p.specials); err != nil {
		return nil, err
	}
	if p.pair, err = parseTemplatePieces(o, "pair", p.specials); err != nil {
		return nil, err
	}
	return p, nil
}

func parseTemplatePieces(o jsonObj, k string, specials map[string]specialEntry) ([]templatePiece, error) {
	raw, ok := o.get(k)
	if !ok {
		return nil, nil
	}
	var items []json.RawMessage
	var text string
	if json.Unmarshal(raw, &text) == nil {
		for _, f := range strings.Fields(text) {
			items = append(items, json.RawMessage(strconv.Quote(f)))
		}
	} else if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fieldErr(o.field(k), "expected an array of template pieces, got %s", jsonKind(raw))
	}
	var out []templatePiece
	for i, item := range items {
		path := indexPath(o.field(k), i)
		var s string
		if json.Unmarshal(item, &s) == nil {
			tp, err := parsePieceString(path, s)
			if err != nil {
				return nil, err
			}
			out = append(out, tp)
		} else {
			po, err := decodeObj(path, item)
			if err != nil {
				return nil, err
			}
			var tp templatePiece
			switch {
			case po.has("Sequence"):
				so, err := decodeObj(po.field("Sequence"), po.m["Sequence"])
				if err != nil {
					return nil, err
				}
				id, err := so.str("id", "A")
				if err != nil {
					return nil, err
				}
				switch id {
				case "A":
					tp.seq = 0
				case "B":
					tp.seq = 1
				default:
					return nil, fieldErr(so.field("id"), `expected "A" or "B", got %q`, id)
				}
				if tp.typeID, err = so.integer("type_id", 0); err != nil {
					return nil, err
				}
			case po.has("SpecialToken"):
				so, err := decodeObj(po.field("SpecialToken"), po.m["SpecialToken"])
				if err != nil {
					return nil, err
				}
				tp.seq = -1
				if tp.special, err = so.reqStr("id"); err != nil {
					return nil, err
				}
				if tp.typeID, err = so.integer("type_id", 0); err != nil {
					return nil, err
				}
			default:
				return nil, fieldErr(path, `expected {"Sequence": ...} or {"SpecialToken": ...}`)
			}
			out = append(out, tp)
		}
		if last := out[len(out)-1]; last.seq < 0 {
			if _, ok := specials[last.special]; !ok {
				return nil, fieldErr(path, "special token %q is missing from special_tokens", last.special)
			}
		}
	}
	return out, nil
}

// parsePieceString reads the short form "$A", "$B:1", "</s>" or "<s>:0".
func parsePieceString(path, s string) (templatePiece, error) {
	name, typ := s, 0
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		if n, err := strconv.Atoi(s[i+1:]); err == nil && n >= 0 {
			name, typ = s[:i], n
		}
	}
	switch name {
	case "$", "$A":
		return templatePiece{seq: 0, typeID: typ}, nil
	case "$B":
		return templatePiece{seq: 1, typeID: typ}, nil
	}
	if strings.HasPrefix(name, "$") {
		return templatePiece{}, fieldErr(path, "unknown sequence %q (use $A or $B)", name)
	}
	return templatePiece{seq: -1, special: name, typeID: typ}, nil
}

func (p *templateProcessor) added(pair bool) int {
	tmpl := p.single
	if pair {
		tmpl = p.pair
	}
	n := 0
	for _, tp := range tmpl {
		if tp.seq < 0 {
			n += len(p.specials[tp.special].ids)
		}
	}
	return n
}

func (p *templateProcessor) process(encs []*Encoding, addSpecial bool) []*Encoding {
	tmpl := p.single
	if len(encs) == 2 {
		tmpl = p.pair
	}
	var out []*Encoding
	for _, tp := range tmpl {
		if tp.seq >= 0 {
			if tp.seq >= len(encs) {
				continue
			}
			e := encs[tp.seq]
			for i := range e.TypeIDs {
				e.TypeIDs[i] = tp.typeID
			}
			out = append(out, e)
			continue
		}
		if !addSpecial {
			continue
		}
		sp := p.specials[tp.special]
		out = append(out, specialEncoding(sp.ids, sp.tokens, tp.typeID))
	}
	return out
}

func specialEncoding(ids []int, tokens []string, typeID int) *Encoding {
	e := &Encoding{}
	for i, id := range ids {
		e.IDs = append(e.IDs, id)
		e.Tokens = append(e.Tokens, tokens[i])
		e.TypeIDs = append(e.TypeIDs, typeID)
		e.Offsets = append(e.Offsets, Offset{})
		e.SpecialTokensMask = append(e.SpecialTokensMask, 1)
		e.AttentionMask = append(e.AttentionMask, 1)
	}
	return e
}

// clsSepProcessor is RobertaProcessing (<s> A </s></s> B </s>, type ids all
// 0, offsets trimmed of spaces) and BertProcessing ([CLS] A [SEP] B [SEP]).
type clsSepProcessor struct {
	roberta        bool
	cls, sep       string
	clsID, sepID   int
	trimOffsets    bool
	addPrefixSpace bool
}

func (p *clsSepProcessor) added(pair bool) int {
	switch {
	case !pair:
		return 2
	case p.roberta:
		return 4
	}
	return 3
}

func (p *clsSepProcessor) process(encs []*Encoding, addSpecial bool) []*Encoding {
	if p.roberta {
		for _, e := range encs {
			if p.trimOffsets {
				trimOffsets(e, p.addPrefixSpace)
			}
			for i := range e.TypeIDs {
				e.TypeIDs[i] = 0
			}
		}
	}
	if !addSpecial {
		return encs
	}
	out := []*Encoding{specialEncoding([]int{p.clsID}, []string{p.cls}, 0), encs[0], specialEncoding([]int{p.sepID}, []string{p.sep}, 0)}
	if len(encs) == 2 {
		typ := 1
		if p.roberta {
			typ = 0
			out = append(out, specialEncoding([]int{p.sepID}, []string{p.sep}, 0))
		}
		out = append(out, encs[1], specialEncoding([]int{p.sepID}, []string{p.sep}, typ))
	}
	return out
}

// byteLevelProcessor only trims offsets.
type byteLevelProcessor struct {
	trimOffsets    bool
	addPrefixSpace bool
}

func (p *byteLevelProcessor) added(bool) int { return 0 }

func (p *byteLevelProcessor) process(encs []*Encoding, _ bool) []*Encoding {
	if p.trimOffsets {
		for _, e := range encs {
			trimOffsets(e, p.addPrefixSpace)
		}
	}
	return encs
}

type sequenceProcessor []postProcessor

func (s sequenceProcessor) added(pair bool) int {
	n := 0
	for _, p := range s {
		n += p.added(pair)
	}
	return n
}

func (s sequenceProcessor) process(encs []*Encoding, addSpecial bool) []*Encoding {
	for _, p := range s {
		encs = p.process(encs, addSpecial)
	}
	return encs
}

// trimOffsets moves offsets past the spaces ("Ġ" or white space) that
// byte-level tokens carry at their ends. Python's library trims after
// converting offsets to characters, so the counts here are in characters.
func trimOffsets(e *Encoding, addPrefixSpace bool) {
	isSpace := func(r rune) bool { return r == byteToRune[' '] || isWhitespace(r) }
	for i, tok := range e.Tokens {
		rs := []rune(tok)
		lead, trail := 0, 0
		for lead < len(rs) && isSpace(rs[lead]) {
			lead++
		}
		for trail < len(rs) && isSpace(rs[len(rs)-1-trail]) {
			trail++
		}
		off := &e.Offsets[i]
		if lead > 0 {
			if (i == 0 || off.Start == 0) && addPrefixSpace && lead == 1 {
				lead = 0
			}
			off.Start = runesForward(e.text, off.Start, lead, off.End)
		}
		if trail > 0 && utf8.RuneCountInString(e.text[:min(off.End, len(e.text))]) >= trail {
			off.End = runesBack(e.text, off.End, trail, off.Start)
		}
	}
}

// runesForward moves byte offset i forward by n runes of text, up to limit.
func runesForward(text string, i, n, limit int) int {
	for ; n > 0 && i < limit && i < len(text); n-- {
		_, sz := utf8.DecodeRuneInString(text[i:])
		i += sz
	}
	return min(i, limit)
}

// runesBack moves byte offset i back by n runes of text, down to limit.
func runesBack(text string, i, n, limit int) int {
	i = min(i, len(text))
	for ; n > 0 && i > limit; n-- {
		_, sz := utf8.DecodeLastRuneInString(text[:i])
		i -= sz
	}
	return max(i, limit)
}
