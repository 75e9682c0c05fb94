package data

import "math/rand/v2"

// specialIDs is the small set of special token ids that MLM never chooses.
type specialIDs []int32

func specialSet(s Specials) specialIDs {
	var out specialIDs
	for _, id := range append([]int64{s.BOS, s.EOS, s.PAD, s.MASK, s.DecoderStart}, s.All...) {
		if id >= 0 && !out.has(int32(id)) {
			out = append(out, int32(id))
		}
	}
	return out
}

func (s specialIDs) has(id int32) bool {
	for _, x := range s {
		if x == id {
			return true
		}
	}
	return false
}

// masker applies BERT's masking, as Hugging Face's
// DataCollatorForLanguageModeling does: each token that is not special is
// chosen with probability prob; a chosen token becomes the mask token 80%
// of the time, a random token of the vocabulary 10%, and stays itself 10%;
// labels hold the original id at chosen positions, IgnoreIndex elsewhere.
type masker struct {
	prob    float64
	mask    int64
	vocab   int
	special specialIDs
	src     rand.PCG
	rng     *rand.Rand
}

func newMasker(c Config) *masker {
	m := &masker{prob: c.MLMProbability, mask: c.Specials.MASK, vocab: c.VocabSize, special: specialSet(c.Specials)}
	m.rng = rand.New(&m.src)
	return m
}

// apply masks ids into in and labels (both len(ids) long). The choice
// depends only on the seed, the epoch and the example's index, so a
// resumed run masks exactly as an uninterrupted one.
func (m *masker) apply(ids []int32, in, labels []int64, seed uint64, epoch, index int) {
	m.src.Seed(mix(seed, mlmStream, uint64(epoch)), uint64(index))
	for t, id := range ids {
		in[t], labels[t] = int64(id), IgnoreIndex
		if m.special.has(id) || m.rng.Float64() >= m.prob {
			continue
		}
		labels[t] = int64(id)
		switch r := m.rng.Float64(); {
		case r < 0.8:
			in[t] = m.mask
		case r < 0.9:
			in[t] = m.rng.Int64N(int64(m.vocab))
		}
	}
}

// Streams keep the random sequences of shuffling, masking and sampling
// apart.
const (
	shuffleStream uint64 = 0x53485546464c45 // "SHUFFLE"
	mlmStream     uint64 = 0x4d4c4d         // "MLM"
	sampleStream  uint64 = 0x53414d504c45   // "SAMPLE"
)

// mix hashes values into one seed (splitmix64 steps).
func mix(vals ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range vals {
		h ^= v
		h += 0x9e3779b97f4a7c15
		h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
		h = (h ^ h>>27) * 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}
