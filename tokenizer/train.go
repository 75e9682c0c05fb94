package tokenizer

import (
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/migu-ml/migu/internal/badinput"
)

// Kind names a tokenizer family that Train can build.
type Kind string

const (
	// ByteLevelBPE is RoBERTa's and GPT-2's: byte-level BPE with
	// <s> … </s> around sequences and a <mask> token.
	ByteLevelBPE Kind = "bytelevel-bpe"
	// SentencePieceBPE is Llama 2's: BPE over "▁"-joined words, unknown
	// characters spelled as <0xNN> byte tokens, <s> in front.
	SentencePieceBPE Kind = "sentencepiece-bpe"
	// Unigram is T5's: a unigram language model over "▁"-prefixed words,
	// </s> at the end.
	Unigram Kind = "unigram"
)

// TrainOptions configure Train.
type TrainOptions struct {
	Kind      Kind
	VocabSize int // all tokens, special ones included
	// MinFrequency is the fewest occurrences a BPE merge needs (default 2).
	MinFrequency int
	// CharacterCoverage is the share of character occurrences the
	// SentencePiece-style vocabularies must spell directly (default 0.9995);
	// rarer characters become byte tokens (BPE) or <unk> (Unigram).
	CharacterCoverage float64
	// ExtraIDs adds T5's sentinel tokens <extra_id_0> … to a Unigram
	// vocabulary (counted in VocabSize).
	ExtraIDs int
}

// Train learns a tokenizer from texts. VocabSize is an upper bound: a small
// corpus may run out of merges or pieces first. The result is deterministic
// for a given corpus and options, round-trips through tokenizer.json, and
// gives the same ids in Python's `tokenizers`.
func Train(texts []string, opt TrainOptions) (*Tokenizer, error) {
	if opt.MinFrequency <= 0 {
		opt.MinFrequency = 2
	}
	if opt.CharacterCoverage <= 0 || opt.CharacterCoverage > 1 {
		opt.CharacterCoverage = 0.9995
	}
	if opt.VocabSize <= 0 {
		return nil, badinput.Errorf("tokenizer: vocabulary size must be positive, got %d", opt.VocabSize)
	}
	if len(texts) == 0 {
		return nil, badinput.Errorf("tokenizer: cannot train on an empty corpus")
	}
	switch opt.Kind {
	case ByteLevelBPE:
		return trainByteLevel(texts, opt)
	case SentencePieceBPE:
		return trainSentencePieceBPE(texts, opt)
	case Unigram:
		return trainUnigram(texts, opt)
	}
	return nil, badinput.Errorf("tokenizer: unknown tokenizer kind %q (%s, %s, %s)", opt.Kind, ByteLevelBPE, SentencePieceBPE, Unigram)
}

// countWords runs the pre-processing of skeleton over texts and counts the
// resulting words, so training sees exactly what encoding will.
func countWords(skeleton *Tokenizer, texts []string) map[string]int {
	counts := map[string]int{}
	for _, text := range texts {
		for _, sp := range skeleton.added.extract(skeleton.normalizer, validUTF8(text)) {
			if sp.tok != nil {
				continue
			}
			words := []*normString{sp.n}
			if skeleton.pre != nil {
				words = splitEach(words, skeleton.pre.preTokenize)
			}
			for _, w := range words {
				counts[w.s]++
			}
		}
	}
	return counts
}

// sortedWords lists the words in a fixed order.
func sortedWords(counts map[string]int) []string {
	words := make([]string, 0, len(counts))
	for w := range counts {
		words = append(words, w)
	}
	sort.Strings(words)
	return words
}

var robertaSpecials = []string{"<s>", "<pad>", "</s>", "<unk>"}

func trainByteLevel(texts []string, opt TrainOptions) (*Tokenizer, error) {
	base := len(robertaSpecials) + 256 + 1
	if opt.VocabSize < base {
		return nil, badinput.Errorf("tokenizer: a byte-level BPE vocabulary needs at least %d tokens (4 special, 256 bytes, <mask>), got %d", base, opt.VocabSize)
	}
	pre := typed{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	skeleton, err := buildDoc(nil, nil, pre, nil, nil, bpeJSON{Type: "BPE", Vocab: orderedVocab{}})
	if err != nil {
		return nil, err
	}
	counts := countWords(skeleton, texts)
	symbols := make([]string, 256)
	index := map[string]int{}
	for b := range 256 {
		symbols[b] = string(byteToRune[b])
		index[symbols[b]] = b
	}
	var words []trainWord
	for _, w := range sortedWords(counts) {
		tw := trainWord{count: counts[w]}
		for _, r := range w {
			tw.syms = append(tw.syms, int32(index[string(r)]))
		}
		words = append(words, tw)
	}
	symbols, merges := learnMerges(words, symbols, opt.VocabSize-len(robertaSpecials)-1, opt.MinFrequency)
	vocab := append(append(orderedVocab{}, robertaSpecials...), symbols...)
	vocab = append(vocab, "<mask>")
	var added []AddedToken
	for i, s := range robertaSpecials {
		added = append(added, AddedToken{ID: i, Content: s, Special: true})
	}
	added = append(added, AddedToken{ID: len(vocab) - 1, Content: "<mask>", LStrip: true, Special: true})
	post := typed{"type": "RobertaProcessing", "sep": []any{"</s>", 2}, "cls": []any{"<s>", 0}, "trim_offsets": true, "add_prefix_space": false}
	dec := typed{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
	mdl := bpeJSON{Type: "BPE", Vocab: vocab, Merges: mergeStrings(symbols, merges)}
	return buildDoc(added, nil, pre, post, dec, mdl)
}

// mergeStrings spells merges (pairs of symbol indexes) as token pairs.
func mergeStrings(symbols []string, merges [][2]int32) [][2]string {
	out := make([][2]string, len(merges))
	for i, m := range merges {
		out[i] = [2]string{symbols[m[0]], symbols[m[1]]}
	}
	return out
}

var llamaSpecials = []string{"<unk>", "<s>", "</s>"}

func trainSentencePieceBPE(texts []string, opt TrainOptions) (*Tokenizer, error) {
	norm := seqNormalizer(typed{"type": "Prepend", "prepend": "▁"}, replaceJSON(" ", "▁", false))
	skeleton, err := buildDoc(nil, norm, nil, nil, nil, bpeJSON{Type: "BPE", Vocab: orderedVocab{}})
	if err != nil {
		return nil, err
	}
	// Without a pre-tokenizer the model sees whole lines; training splits
	// them into words that start at each "▁", and merges never cross one.
	lines := countWords(skeleton, texts)
	counts := map[string]int{}
	for line, c := range lines {
		for _, w := range splitBefore(line, '▁') {
			counts[w] += c
		}
	}
	alphabet := coveredChars(counts, opt.CharacterCoverage)
	base := len(llamaSpecials) + 256
	if opt.VocabSize < base+len(alphabet) {
		return nil, badinput.Errorf("tokenizer: a SentencePiece BPE vocabulary for this corpus needs at least %d tokens (3 special, 256 bytes, %d characters), got %d", base+len(alphabet), len(alphabet), opt.VocabSize)
	}
	index := map[rune]int32{}
	symbols := make([]string, len(alphabet))
	for i, r := range alphabet {
		index[r] = int32(i)
		symbols[i] = string(r)
	}
	var words []trainWord
	for _, w := range sortedWords(counts) {
		// Characters outside the alphabet become byte tokens, which never
		// merge: they cut the word.
		tw := trainWord{count: counts[w]}
		for _, r := range w {
			id, ok := index[r]
			if !ok {
				if len(tw.syms) > 0 {
					words = append(words, tw)
				}
				tw = trainWord{count: counts[w]}
				continue
			}
			tw.syms = append(tw.syms, id)
		}
		if len(tw.syms) > 0 {
			words = append(words, tw)
		}
	}
	symbols, merges := learnMerges(words, symbols, opt.VocabSize-base, opt.MinFrequency)
	vocab := append(orderedVocab{}, llamaSpecials...)
	for b := range 256 {
		vocab = append(vocab, fmt.Sprintf("<0x%02X>", b))
	}
	vocab = append(vocab, symbols...)
	var added []AddedToken
	for i, s := range llamaSpecials {
		added = append(added, AddedToken{ID: i, Content: s, Special: true})
	}
	unk := "<unk>"
	mdl := bpeJSON{Type: "BPE", UnkToken: &unk, FuseUnk: true, ByteFallback: true, Vocab: vocab, Merges: mergeStrings(symbols, merges)}
	post := templateJSON([]string{"<s>:0", "$A:0"}, []string{"<s>:0", "$A:0", "<s>:1", "$B:1"}, map[string]int{"<s>": 1})
	dec := seqDecoder(replaceJSON("▁", " ", false), typed{"type": "ByteFallback"}, typed{"type": "Fuse"},
		typed{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	return buildDoc(added, norm, nil, post, dec, mdl)
}

// splitBefore cuts s before every occurrence of sep.
func splitBefore(s string, sep rune) []string {
	var out []string
	start := 0
	for i, r := range s {
		if r == sep && i > start {
			out = append(out, s[start:i])
			start = i
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// coveredChars returns the most frequent characters that together make up
// the given share of all character occurrences, most frequent first.
func coveredChars(counts map[string]int, coverage float64) []rune {
	freq := map[rune]int{}
	total := 0
	for w, c := range counts {
		for _, r := range w {
			freq[r] += c
			total += c
		}
	}
	chars := make([]rune, 0, len(freq))
	for r := range freq {
		chars = append(chars, r)
	}
	sort.Slice(chars, func(i, j int) bool {
		if freq[chars[i]] != freq[chars[j]] {
			return freq[chars[i]] > freq[chars[j]]
		}
		return chars[i] < chars[j]
	})
	kept, acc := 0, 0
	for kept < len(chars) && float64(acc) < coverage*float64(total) {
		acc += freq[chars[kept]]
		kept++
	}
	return chars[:kept]
}

// trainWord is a distinct word as a sequence of symbols, with its count.
type trainWord struct {
	syms  []int32
	count int
}

type pairCount struct {
	count int
	a, b  int32
}

// pairFirst orders pairs by count (highest first), then by symbol ids.
func pairFirst(x, y pairCount) bool {
	if x.count != y.count {
		return x.count > y.count
	}
	if x.a != y.a {
		return x.a < y.a
	}
	return x.b < y.b
}

// learnMerges runs BPE training: repeatedly merge the most frequent
// adjacent pair until the symbol table reaches size or no pair occurs
// minFreq times. It returns the grown symbol table and the merges in order.
func learnMerges(words []trainWord, symbols []string, size, minFreq int) ([]string, [][2]int32) {
	index := make(map[string]int32, size)
	for i, s := range symbols {
		index[s] = int32(i)
	}
	counts := map[uint64]int{}
	where := map[uint64][]int32{}
	for wi, w := range words {
		for i := 0; i+1 < len(w.syms); i++ {
			k := pairKey(int(w.syms[i]), int(w.syms[i+1]))
			counts[k] += w.count
			if ws := where[k]; len(ws) == 0 || ws[len(ws)-1] != int32(wi) {
				where[k] = append(ws, int32(wi))
			}
		}
	}
	h := newMinHeap(len(counts), pairFirst)
	for k, c := range counts {
		h.push(pairCount{c, int32(k >> 32), int32(uint32(k))})
	}
	var merges [][2]int32
	for len(symbols) < size && h.len() > 0 {
		top := h.pop()
		k := pairKey(int(top.a), int(top.b))
		if c := counts[k]; c != top.count {
			if c > 0 {
				h.push(pairCount{c, top.a, top.b})
			}
			continue
		}
		if top.count < minFreq {
			break
		}
		merged := symbols[top.a] + symbols[top.b]
		id, ok := index[merged]
		if !ok {
			id = int32(len(symbols))
			symbols = append(symbols, merged)
			index[merged] = id
		}
		merges = append(merges, [2]int32{top.a, top.b})
		changed := map[uint64]bool{}
		for _, wi := range where[k] {
			w := &words[wi]
			if !hasPair(w.syms, top.a, top.b) {
				continue
			}
			for i := 0; i+1 < len(w.syms); i++ {
				pk := pairKey(int(w.syms[i]), int(w.syms[i+1]))
				counts[pk] -= w.count
				changed[pk] = true
			}
			out := w.syms[:0]
			for i := 0; i < len(w.syms); i++ {
				if i+1 < len(w.syms) && w.syms[i] == top.a && w.syms[i+1] == top.b {
					out = append(out, id)
					i++
					continue
				}
				out = append(out, w.syms[i])
			}
			w.syms = out
			for i := 0; i+1 < len(w.syms); i++ {
				pk := pairKey(int(w.syms[i]), int(w.syms[i+1]))
				counts[pk] += w.count
				changed[pk] = true
				if ws := where[pk]; len(ws) == 0 || ws[len(ws)-1] != wi {
					where[pk] = append(ws, wi)
				}
			}
		}
		for pk := range changed {
			if c := counts[pk]; c > 0 {
				h.push(pairCount{c, int32(pk >> 32), int32(uint32(pk))})
			} else {
				delete(counts, pk)
			}
		}
		delete(where, k)
	}
	return symbols, merges
}

func hasPair(syms []int32, a, b int32) bool {
	for i := 0; i+1 < len(syms); i++ {
		if syms[i] == a && syms[i+1] == b {
			return true
		}
	}
	return false
}

var t5Specials = []string{"<pad>", "</s>", "<unk>"}

func trainUnigram(texts []string, opt TrainOptions) (*Tokenizer, error) {
	norm := seqNormalizer(typed{"type": "Strip", "strip_left": false, "strip_right": true}, replaceJSON(" {2,}", "▁", true))
	pre := metaspaceJSON("always", true)
	skeleton, err := buildDoc(nil, norm, pre, nil, nil, unigramJSON{Type: "Unigram", Vocab: []unigramItem{{"<unk>", 0}}})
	if err != nil {
		return nil, err
	}
	counts := countWords(skeleton, texts)
	room := opt.VocabSize - len(t5Specials) - opt.ExtraIDs
	pieces, err := learnUnigram(counts, room, opt.CharacterCoverage)
	if err != nil {
		return nil, err
	}
	items := make([]unigramItem, 0, opt.VocabSize)
	for _, s := range t5Specials {
		items = append(items, unigramItem{s, 0})
	}
	items = append(items, pieces...)
	var added []AddedToken
	for i, s := range t5Specials {
		added = append(added, AddedToken{ID: i, Content: s, Special: true})
	}
	for i := opt.ExtraIDs - 1; i >= 0; i-- {
		tok := fmt.Sprintf("<extra_id_%d>", i)
		added = append(added, AddedToken{ID: len(items), Content: tok, Special: true})
		items = append(items, unigramItem{tok, 0})
	}
	unk := 2
	mdl := unigramJSON{Type: "Unigram", UnkID: &unk, Vocab: items}
	post := templateJSON([]string{"$A:0", "</s>:0"}, []string{"$A:0", "</s>:0", "$B:0", "</s>:0"}, map[string]int{"</s>": 1})
	return buildDoc(added, norm, pre, post, metaspaceJSON("always", true), mdl)
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }
