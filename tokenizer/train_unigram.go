package tokenizer

import (
	"math"
	"sort"

	"github.com/migu-ml/migu/internal/badinput"
)

// Unigram training follows SentencePiece in outline: seed the vocabulary
// with frequent substrings, fit piece probabilities by EM over each word's
// segmentation lattice, and prune the pieces whose removal costs the least
// likelihood, until the vocabulary fits.

const (
	maxPieceRunes   = 16
	shrinkFactor    = 0.75
	emRounds        = 2
	minExpectedFreq = 0.5
)

type segment struct {
	s     string
	count int
}

func learnUnigram(counts map[string]int, size int, coverage float64) ([]unigramItem, error) {
	chars := coveredChars(counts, coverage)
	if len(chars) > size {
		return nil, badinput.Errorf("tokenizer: a unigram vocabulary for this corpus needs at least %d pieces for its characters, got room for %d", len(chars), size)
	}
	covered := map[rune]bool{}
	for _, r := range chars {
		covered[r] = true
	}
	// Cut words at uncovered characters: those become <unk>.
	segCount := map[string]int{}
	for _, w := range sortedWords(counts) {
		start := 0
		for i, r := range w {
			if !covered[r] {
				if i > start {
					segCount[w[start:i]] += counts[w]
				}
				start = i + len(string(r))
			}
		}
		if start < len(w) {
			segCount[w[start:]] += counts[w]
		}
	}
	var segs []segment
	for _, s := range sortedWords(segCount) {
		segs = append(segs, segment{s, segCount[s]})
	}

	isChar := map[string]bool{}
	freq := map[string]float64{}
	for _, r := range chars {
		isChar[string(r)] = true
	}
	sub := map[string]int{}
	for _, sg := range segs {
		bounds := runeBounds(sg.s)
		for i := 0; i < len(bounds)-1; i++ {
			freq[sg.s[bounds[i]:bounds[i+1]]] += float64(sg.count)
			for j := i + 2; j < len(bounds) && j-i <= maxPieceRunes; j++ {
				sub[sg.s[bounds[i]:bounds[j]]] += sg.count
			}
		}
	}
	seeds := make([]string, 0, len(sub))
	for s, c := range sub {
		if c >= 2 {
			seeds = append(seeds, s)
		}
	}
	sort.Slice(seeds, func(i, j int) bool {
		a, b := sub[seeds[i]]*runeLen(seeds[i]), sub[seeds[j]]*runeLen(seeds[j])
		if a != b {
			return a > b
		}
		return seeds[i] < seeds[j]
	})
	seeds = seeds[:min(len(seeds), max(10*size, 1000))]
	for _, s := range seeds {
		freq[s] = float64(sub[s])
	}
	scores := normalizeScores(freq)

	for {
		for range emRounds {
			scores = emStep(segs, scores, isChar)
		}
		if len(scores) <= size {
			break
		}
		scores = prune(segs, scores, isChar, max(size, int(shrinkFactor*float64(len(scores)))))
	}
	scores = emStep(segs, scores, isChar)

	out := make([]unigramItem, 0, len(scores))
	for p, sc := range scores {
		out = append(out, unigramItem{p, sc})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return out[i].Piece < out[j].Piece
	})
	return out, nil
}

func runeBounds(s string) []int {
	b := make([]int, 0, len(s)+1)
	for i := range s {
		b = append(b, i)
	}
	return append(b, len(s))
}

func normalizeScores(freq map[string]float64) map[string]float64 {
	total := 0.0
	for _, p := range sortedKeys(freq) {
		total += freq[p]
	}
	out := make(map[string]float64, len(freq))
	for p, f := range freq {
		out[p] = math.Log(max(f, 1e-3)) - math.Log(total)
	}
	return out
}

// edges calls f for every piece of scores that starts at byte bounds[i] of s.
func edges(s string, bounds []int, i int, scores map[string]float64, f func(j int, piece string, score float64)) {
	for j := i + 1; j < len(bounds) && j-i <= maxPieceRunes; j++ {
		p := s[bounds[i]:bounds[j]]
		if sc, ok := scores[p]; ok {
			f(j, p, sc)
		}
	}
}

func logAdd(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	if math.IsInf(b, -1) {
		return a
	}
	if a < b {
		a, b = b, a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// emStep re-estimates piece log-probabilities from expected counts
// (forward-backward over each segment's lattice) and drops pieces that are
// expected less than minExpectedFreq times; characters always stay.
func emStep(segs []segment, scores map[string]float64, isChar map[string]bool) map[string]float64 {
	expected := make(map[string]float64, len(scores))
	for _, sg := range segs {
		b := runeBounds(sg.s)
		n := len(b) - 1
		alpha := make([]float64, n+1)
		beta := make([]float64, n+1)
		for i := 1; i <= n; i++ {
			alpha[i] = math.Inf(-1)
		}
		for i := 0; i < n; i++ {
			edges(sg.s, b, i, scores, func(j int, _ string, sc float64) {
				alpha[j] = logAdd(alpha[j], alpha[i]+sc)
			})
		}
		for i := n - 1; i >= 0; i-- {
			beta[i] = math.Inf(-1)
			edges(sg.s, b, i, scores, func(j int, _ string, sc float64) {
				beta[i] = logAdd(beta[i], sc+beta[j])
			})
		}
		z := alpha[n]
		for i := 0; i < n; i++ {
			edges(sg.s, b, i, scores, func(j int, p string, sc float64) {
				expected[p] += float64(sg.count) * math.Exp(alpha[i]+sc+beta[j]-z)
			})
		}
	}
	kept := map[string]float64{}
	for p := range scores {
		e := expected[p]
		if e < minExpectedFreq && !isChar[p] {
			continue
		}
		kept[p] = e
	}
	return normalizeScores(kept)
}

// viterbi returns the best segmentation of s as piece boundaries, skipping
// the piece equal to skip.
func viterbi(s string, scores map[string]float64, skip string) []string {
	b := runeBounds(s)
	n := len(b) - 1
	best := make([]float64, n+1)
	from := make([]int, n+1)
	piece := make([]string, n+1)
	for i := 1; i <= n; i++ {
		best[i] = math.Inf(-1)
		from[i] = -1
	}
	for i := 0; i < n; i++ {
		if from[i] < 0 && i > 0 {
			continue
		}
		edges(s, b, i, scores, func(j int, p string, sc float64) {
			if p == skip {
				return
			}
			if c := best[i] + sc; c > best[j] {
				best[j], from[j], piece[j] = c, i, p
			}
		})
	}
	if from[n] < 0 && n > 0 {
		return nil
	}
	var out []string
	for j := n; j > 0; j = from[j] {
		out = append(out, piece[j])
	}
	return out
}

// prune keeps the characters and the pieces whose removal would cost the
// most likelihood, keep pieces in all.
func prune(segs []segment, scores map[string]float64, isChar map[string]bool, keep int) map[string]float64 {
	vfreq := map[string]float64{}
	for _, sg := range segs {
		for _, p := range viterbi(sg.s, scores, "") {
			vfreq[p] += float64(sg.count)
		}
	}
	type cand struct {
		p    string
		loss float64
	}
	var cands []cand
	out := map[string]float64{}
	for p, sc := range scores {
		if isChar[p] {
			out[p] = sc
			continue
		}
		loss := 0.0
		if f := vfreq[p]; f > 0 {
			alt := 0.0
			for _, q := range viterbi(p, scores, p) {
				alt += scores[q]
			}
			loss = f * (sc - alt)
		}
		cands = append(cands, cand{p, loss})
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].loss != cands[j].loss {
			return cands[i].loss > cands[j].loss
		}
		return cands[i].p < cands[j].p
	})
	for _, c := range cands {
		if len(out) >= keep {
			break
		}
		out[c.p] = scores[c.p]
	}
	return out
}

// sortedKeys lists a map's keys in order, for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
