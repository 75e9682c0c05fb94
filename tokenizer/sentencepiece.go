package tokenizer

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"sort"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/migu-ml/migu/internal/badinput"
)

// SentencePiece piece types (sentencepiece_model.proto) that matter here.
const (
	spNormal      = 1
	spUnknown     = 2
	spControl     = 3
	spUserDefined = 4
)

// spModel holds the fields of a SentencePiece ModelProto that tokenization
// needs.
type spModel struct {
	pieces []spPiece
	// trainer_spec
	modelType    int
	byteFallback bool
	unkID        int
	bosID, eosID int
	padID        int
	unkPiece     string
	bosPiece     string
	eosPiece     string
	// normalizer_spec
	charsmap       []byte
	addDummyPrefix bool
	// What transformers' LlamaTokenizerFast adds: tokenizer_config.json's
	// add_bos_token and add_eos_token, true and false unless a GGUF file
	// says otherwise.
	addBOS, addEOS bool
	// llamaLayout asks for the LlamaTokenizerFast pipeline whatever the
	// model's features (a GGUF "llama" vocabulary is always one).
	llamaLayout bool
}

type spPiece struct {
	piece string
	score float64
	typ   int
}

func spErr(field, format string, args ...any) error {
	return &FormatError{File: "tokenizer.model", Field: field, Msg: fmt.Sprintf(format, args...)}
}

// parseSentencePiece decodes the protobuf by hand: only a handful of fields
// matter and this keeps the generated code out of the package.
func parseSentencePiece(data []byte) (*spModel, error) {
	m := &spModel{modelType: 1, unkID: 0, bosID: 1, eosID: 2, padID: -1,
		unkPiece: "<unk>", bosPiece: "<s>", eosPiece: "</s>", addDummyPrefix: true, addBOS: true}
	err := eachField(data, "", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			p, err := parsePiece(v, len(m.pieces))
			if err != nil {
				return err
			}
			m.pieces = append(m.pieces, p)
		case 2:
			return eachField(v, "trainer_spec", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch num {
				case 3:
					m.modelType = int(x)
				case 35:
					m.byteFallback = x != 0
				case 40:
					m.unkID = int(int32(x))
				case 41:
					m.bosID = int(int32(x))
				case 42:
					m.eosID = int(int32(x))
				case 43:
					m.padID = int(int32(x))
				case 45:
					m.unkPiece = string(v)
				case 46:
					m.bosPiece = string(v)
				case 47:
					m.eosPiece = string(v)
				}
				return nil
			})
		case 3:
			return eachField(v, "normalizer_spec", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch num {
				case 2:
					m.charsmap = append([]byte(nil), v...)
				case 3:
					m.addDummyPrefix = x != 0
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.pieces) == 0 {
		return nil, spErr("pieces", "no pieces: not a SentencePiece model")
	}
	return m, nil
}

func parsePiece(b []byte, i int) (spPiece, error) {
	p := spPiece{typ: spNormal}
	path := fmt.Sprintf("pieces[%d]", i)
	err := eachField(b, path, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return spErr(path+".piece", "not valid UTF-8")
			}
			p.piece = string(v)
		case 2:
			if typ != protowire.Fixed32Type {
				return spErr(path+".score", "expected a float")
			}
			p.score = float64(math.Float32frombits(uint32(x)))
		case 3:
			p.typ = int(x)
		}
		return nil
	})
	return p, err
}

// eachField walks the fields of one message; varints and fixed numbers
// arrive in x, length-delimited fields in v.
func eachField(b []byte, path string, f func(protowire.Number, protowire.Type, []byte, uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return spErr(path, "corrupt protobuf: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return spErr(path, "corrupt protobuf: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// FromSentencePiece builds a tokenizer from a SentencePiece model file's
// contents, laid out as transformers converts it: a BPE model with byte
// fallback and no charsmap (Llama 2) becomes the LlamaTokenizerFast
// pipeline (Prepend "▁" and Replace " " → "▁", "<s> $A"); any other model
// (Unigram such as T5's, or BPE) becomes the SpmConverter pipeline
// (Precompiled, Strip, Replace, Metaspace), with T5's "$A </s>" template
// for Unigram. T5's <extra_id_N> tokens are not part of the model file and
// are not added.
func FromSentencePiece(data []byte) (*Tokenizer, error) {
	m, err := parseSentencePiece(data)
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	t, err := m.tokenizer()
	return t, badinput.Wrap(err)
}

func (m *spModel) tokenizer() (*Tokenizer, error) {
	if m.modelType != 1 && m.modelType != 2 {
		return nil, spErr("trainer_spec.model_type", "unsupported model type %d (supported: 1 UNIGRAM, 2 BPE)", m.modelType)
	}
	if m.unkID < 0 || m.unkID >= len(m.pieces) {
		return nil, spErr("trainer_spec.unk_id", "%d is outside the %d pieces", m.unkID, len(m.pieces))
	}
	for _, id := range []*int{&m.bosID, &m.eosID} {
		if *id >= len(m.pieces) {
			*id = -1
		}
	}
	llama := m.llamaLayout || m.modelType == 2 && m.byteFallback && len(m.charsmap) == 0 && m.bosID >= 0
	scores := make([]float64, len(m.pieces))
	for i, p := range m.pieces {
		scores[i] = p.score
		if llama && i < 3 {
			scores[i] = 0
		}
	}
	// Control and user-defined pieces are added tokens; transformers' fast
	// tokenizers also register their unk, bos and eos tokens as special.
	var added []AddedToken
	specialIDs := map[int]bool{m.unkID: true}
	for _, id := range []int{m.bosID, m.eosID} {
		if id >= 0 && id < len(m.pieces) {
			specialIDs[id] = true
		}
	}
	for i, p := range m.pieces {
		if p.typ == spControl || p.typ == spUserDefined || specialIDs[i] {
			added = append(added, AddedToken{ID: i, Content: p.piece, Special: p.typ == spControl || specialIDs[i]})
		}
	}
	var mdl any
	if m.modelType == 2 {
		vocab := make(orderedVocab, len(m.pieces))
		for i, p := range m.pieces {
			vocab[i] = p.piece
		}
		unk := m.pieces[m.unkID].piece
		mdl = bpeJSON{Type: "BPE", UnkToken: &unk, FuseUnk: true, ByteFallback: llama,
			Vocab: vocab, Merges: spMerges(m.pieces, scores)}
	} else {
		items := make([]unigramItem, len(m.pieces))
		for i, p := range m.pieces {
			items[i] = unigramItem{p.piece, scores[i]}
		}
		unk := m.unkID
		mdl = unigramJSON{Type: "Unigram", UnkID: &unk, Vocab: items}
	}
	if llama {
		var norm []any
		dec := []any{replaceJSON("▁", " ", false), typed{"type": "ByteFallback"}, typed{"type": "Fuse"}}
		if m.addDummyPrefix {
			norm = append(norm, typed{"type": "Prepend", "prepend": "▁"})
			dec = append(dec, typed{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		}
		norm = append(norm, replaceJSON(" ", "▁", false))
		post, err := m.llamaTemplate()
		if err != nil {
			return nil, err
		}
		return buildDoc(added, seqNormalizer(norm...), nil, post, seqDecoder(dec...), mdl)
	}
	norm := []any{typed{"type": "Strip", "strip_left": false, "strip_right": true}, replaceJSON(" {2,}", "▁", true)}
	if len(m.charsmap) > 0 {
		norm = append([]any{typed{"type": "Precompiled", "precompiled_charsmap": base64.StdEncoding.EncodeToString(m.charsmap)}}, norm...)
	}
	scheme := "always"
	if !m.addDummyPrefix {
		scheme = "never"
	}
	var post any
	if m.modelType == 1 && m.eosID >= 0 && m.eosID < len(m.pieces) {
		eos := m.pieces[m.eosID].piece
		post = templateJSON([]string{"$A:0", eos + ":0"}, []string{"$A:0", eos + ":0", "$B:0", eos + ":0"}, map[string]int{eos: m.eosID})
	}
	return buildDoc(added, seqNormalizer(norm...), metaspaceJSON(scheme, true), post, metaspaceJSON(scheme, true), mdl)
}

// llamaTemplate is the post-processor LlamaTokenizerFast sets from
// add_bos_token and add_eos_token: "<s> $A </s>" with the parts it adds.
func (m *spModel) llamaTemplate() (typed, error) {
	piece := func(id int) string {
		if id >= 0 && id < len(m.pieces) {
			return m.pieces[id].piece
		}
		return ""
	}
	return bosEOSTemplate(piece(m.bosID), m.bosID, m.addBOS, piece(m.eosID), m.eosID, m.addEOS)
}

// bosEOSTemplate writes TemplateProcessing as transformers'
// update_post_processor does: single "[bos] $A [eos]", pair
// "[bos] $A [eos] [bos] $B [eos]", the B side with type id 1.
func bosEOSTemplate(bos string, bosID int, addBOS bool, eos string, eosID int, addEOS bool) (typed, error) {
	specials := map[string]int{}
	side := func(seq string, typeID string) []string {
		var out []string
		if addBOS {
			out = append(out, bos+":"+typeID)
		}
		out = append(out, seq+":"+typeID)
		if addEOS {
			out = append(out, eos+":"+typeID)
		}
		return out
	}
	if addBOS {
		if bos == "" {
			return nil, fieldErr("add_bos_token", "is true but the vocabulary has no bos token")
		}
		specials[bos] = bosID
	}
	if addEOS {
		if eos == "" {
			return nil, fieldErr("add_eos_token", "is true but the vocabulary has no eos token")
		}
		specials[eos] = eosID
	}
	single := side("$A", "0")
	return templateJSON(single, slices.Concat(single, side("$B", "1")), specials), nil
}

// spMerges derives BPE merges from piece scores as transformers'
// generate_merges does: every split of a piece into two pieces is a merge,
// ordered by the piece's score (best first), then by longer left and right
// halves, then by the halves' ids.
func spMerges(pieces []spPiece, scores []float64) [][2]string {
	ids := make(map[string]int, len(pieces))
	for i, p := range pieces {
		ids[p.piece] = i
	}
	// The scores dict keeps each piece at its first position with its last score.
	type entry struct {
		piece string
		score float64
	}
	var order []entry
	at := map[string]int{}
	for i, p := range pieces {
		if k, ok := at[p.piece]; ok {
			order[k].score = scores[i]
			continue
		}
		at[p.piece] = len(order)
		order = append(order, entry{p.piece, scores[i]})
	}
	type merge struct {
		l, r   string
		nl, nr int
		score  float64
	}
	var merges []merge
	var local []merge
	for _, e := range order {
		local = local[:0]
		rs := []rune(e.piece)
		for k := 1; k < len(rs); k++ {
			l, r := string(rs[:k]), string(rs[k:])
			_, okL := ids[l]
			_, okR := ids[r]
			if okL && okR {
				local = append(local, merge{l, r, k, len(rs) - k, e.score})
			}
		}
		sort.SliceStable(local, func(i, j int) bool {
			if ids[local[i].l] != ids[local[j].l] {
				return ids[local[i].l] < ids[local[j].l]
			}
			return ids[local[i].r] < ids[local[j].r]
		})
		merges = append(merges, local...)
	}
	sort.SliceStable(merges, func(i, j int) bool {
		a, b := merges[i], merges[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if a.nl != b.nl {
			return a.nl > b.nl
		}
		return a.nr > b.nr
	})
	out := make([][2]string, len(merges))
	for i, mg := range merges {
		out[i] = [2]string{mg.l, mg.r}
	}
	return out
}
