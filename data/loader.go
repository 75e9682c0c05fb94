package data

import (
	"cmp"
	"encoding/json"
	"io"
	"math/rand/v2"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
)

// BatchOptions control a Loader.
type BatchOptions struct {
	BatchSize int
	// Seed fixes the order of every epoch (and MLM's choices).
	Seed uint64
	// NoShuffle keeps the file's order (evaluation).
	NoShuffle bool
	// Bucket groups examples of similar length to cut padding: the
	// shuffled examples are sorted by length within chunks of Bucket
	// batches, cut into batches, and the batches of a chunk shuffled
	// again. 0 turns it off; 64 is a good value.
	Bucket int
	// DropLast drops an epoch's last, smaller batch.
	DropLast bool
	// PadMultiple rounds padded lengths up to a multiple (8 helps some
	// kernels; MaxLen gives fixed shapes), never past MaxLen.
	PadMultiple int
	// Epochs is the number of passes before Next returns io.EOF: 0 means
	// one, a negative number no end (the trainer stops by steps).
	Epochs int
}

// State is a loader's position: the next batch is batch Index of epoch
// Epoch. Each epoch's order is a function of Seed and the epoch alone, so a
// run resumed from a State sees exactly the batches an uninterrupted run
// would have. Examples guards against resuming on other data.
type State struct {
	Epoch    int    `json:"epoch"`
	Index    int    `json:"index"`
	Seed     uint64 `json:"seed"`
	Examples int    `json:"examples"`
}

// Loader cuts examples into padded batches, epoch after epoch. It is not
// safe for concurrent use.
type Loader struct {
	ex           *Examples
	opt          BatchOptions
	epoch, index int
	plan         [][]int // the batches of epoch planEpoch
	planEpoch    int
	masker       *masker
}

// NewLoader prepares batches of ex.
func NewLoader(ex *Examples, opt BatchOptions) (*Loader, error) {
	if opt.BatchSize <= 0 {
		return nil, badinput.Errorf("batch size %d must be positive", opt.BatchSize)
	}
	if opt.Bucket < 0 || opt.PadMultiple < 0 {
		return nil, badinput.Errorf("bucket (%d) and pad multiple (%d) may not be negative", opt.Bucket, opt.PadMultiple)
	}
	if opt.Epochs == 0 {
		opt.Epochs = 1
	}
	if len(ex.Items) == 0 || opt.DropLast && len(ex.Items) < opt.BatchSize {
		return nil, badinput.Errorf("%d examples do not fill one batch of %d", len(ex.Items), opt.BatchSize)
	}
	l := &Loader{ex: ex, opt: opt, planEpoch: -1}
	if ex.Config.Objective == MLM {
		l.masker = newMasker(ex.Config)
	}
	return l, nil
}

// BatchesPerEpoch is the number of batches in one pass over the data.
func (l *Loader) BatchesPerEpoch() int {
	n, bs := len(l.ex.Items), l.opt.BatchSize
	if l.opt.DropLast {
		return n / bs
	}
	return (n + bs - 1) / bs
}

// Next returns the next batch, or io.EOF after the last epoch.
func (l *Loader) Next() (*Batch, error) {
	if l.opt.Epochs > 0 && l.epoch >= l.opt.Epochs {
		return nil, io.EOF
	}
	plan := l.planOf(l.epoch)
	b := l.Build(plan[l.index], l.epoch)
	l.index++
	if l.index == len(plan) {
		l.epoch, l.index = l.epoch+1, 0
	}
	return b, nil
}

// Position returns where the loader stands.
func (l *Loader) Position() State {
	return State{Epoch: l.epoch, Index: l.index, Seed: l.opt.Seed, Examples: len(l.ex.Items)}
}

// SetPosition moves the loader to a saved position; the seed and the
// number of examples must match the ones it was saved with.
func (l *Loader) SetPosition(s State) error {
	if s.Seed != l.opt.Seed {
		return badinput.Errorf("data position was saved with seed %d, this run uses seed %d", s.Seed, l.opt.Seed)
	}
	if s.Examples != 0 && s.Examples != len(l.ex.Items) {
		return badinput.Errorf("data position was saved for %d examples, this data has %d: resume with the same data and options", s.Examples, len(l.ex.Items))
	}
	per := l.BatchesPerEpoch()
	if s.Epoch < 0 || s.Index < 0 || s.Index > per {
		return badinput.Errorf("data position epoch %d batch %d is outside the %d batches of an epoch", s.Epoch, s.Index, per)
	}
	l.epoch, l.index = s.Epoch, s.Index
	if l.index == per {
		l.epoch, l.index = l.epoch+1, 0
	}
	return nil
}

// State returns Position as JSON, for checkpoints.
func (l *Loader) State() (json.RawMessage, error) {
	return json.Marshal(l.Position())
}

// Restore reads a position written by State.
func (l *Loader) Restore(raw json.RawMessage) error {
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return badinput.Errorf("data position: %v", err)
	}
	return l.SetPosition(s)
}

// planOf returns the batches of an epoch (example indices), computing them
// when the epoch changes.
func (l *Loader) planOf(epoch int) [][]int {
	if l.planEpoch == epoch {
		return l.plan
	}
	items, bs := l.ex.Items, l.opt.BatchSize
	perm := make([]int, len(items))
	for i := range perm {
		perm[i] = i
	}
	var rng *rand.Rand
	if !l.opt.NoShuffle {
		rng = rand.New(rand.NewPCG(mix(l.opt.Seed, shuffleStream, uint64(epoch)), 0))
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	}
	if l.opt.Bucket > 0 {
		length := func(i int) int { return len(items[i].InputIDs) + len(items[i].Target) }
		for c := range slices.Chunk(perm, l.opt.Bucket*bs) {
			slices.SortStableFunc(c, func(a, b int) int { return cmp.Compare(length(b), length(a)) })
		}
	}
	plan := make([][]int, 0, l.BatchesPerEpoch())
	for b := range slices.Chunk(perm, bs) {
		if len(b) == bs || !l.opt.DropLast {
			plan = append(plan, b)
		}
	}
	if l.opt.Bucket > 0 && rng != nil {
		for c := range slices.Chunk(plan, l.opt.Bucket) {
			rng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		}
	}
	l.plan, l.planEpoch = plan, epoch
	return plan
}

// Build pads the examples at rows into one batch; epoch seeds MLM's
// choices. Evaluation can call it directly with rows of its choosing.
func (l *Loader) Build(rows []int, epoch int) *Batch {
	cfg := l.ex.Config
	pad := cfg.Specials.padID()
	b := &Batch{Objective: cfg.Objective, Size: len(rows), Items: slices.Clone(rows)}
	for _, i := range rows {
		b.SeqLen = max(b.SeqLen, len(l.ex.Items[i].InputIDs))
		b.TgtLen = max(b.TgtLen, len(l.ex.Items[i].Target))
	}
	b.SeqLen = l.round(b.SeqLen, cfg.MaxLen)
	n := b.Size * b.SeqLen
	b.InputIDs, b.AttentionMask = make([]int64, n), make([]int64, n)
	switch cfg.Objective {
	case CLS:
		b.Labels = make([]int64, b.Size)
	case Seq2Seq:
		b.TgtLen = l.round(b.TgtLen, cfg.MaxTargetLen)
		m := b.Size * b.TgtLen
		b.Labels, b.DecoderInputIDs, b.DecoderAttentionMask = make([]int64, m), make([]int64, m), make([]int64, m)
	default:
		b.Labels = make([]int64, n)
	}
	for r, i := range rows {
		ex := &l.ex.Items[i]
		ids, mask := b.InputIDs[r*b.SeqLen:(r+1)*b.SeqLen], b.AttentionMask[r*b.SeqLen:(r+1)*b.SeqLen]
		for t := range ids {
			ids[t] = pad
			if t < len(ex.InputIDs) {
				ids[t], mask[t] = int64(ex.InputIDs[t]), 1
				b.Tokens++
			}
		}
		switch cfg.Objective {
		case CLM:
			labels := b.Labels[r*b.SeqLen : (r+1)*b.SeqLen]
			for t := range labels {
				labels[t] = IgnoreIndex
				if t < len(ex.InputIDs) && (ex.LossMask == nil && t >= ex.PromptLen || ex.LossMask != nil && ex.LossMask[t]) {
					labels[t] = ids[t]
					if t > 0 {
						b.LossTokens++
					}
				}
			}
		case MLM:
			labels := b.Labels[r*b.SeqLen : (r+1)*b.SeqLen]
			k := len(ex.InputIDs)
			l.masker.apply(ex.InputIDs, ids[:k], labels[:k], l.opt.Seed, epoch, i)
			for t := range labels {
				if t >= k {
					labels[t] = IgnoreIndex
				} else if labels[t] != IgnoreIndex {
					b.LossTokens++
				}
			}
		case CLS:
			b.Labels[r] = int64(ex.Class)
			b.LossTokens++
		case Seq2Seq:
			lo, hi := r*b.TgtLen, (r+1)*b.TgtLen
			labels, dec, dmask := b.Labels[lo:hi], b.DecoderInputIDs[lo:hi], b.DecoderAttentionMask[lo:hi]
			for t := range labels {
				labels[t], dec[t] = IgnoreIndex, pad
				if t < len(ex.Target) {
					labels[t], dmask[t] = int64(ex.Target[t]), 1
					b.LossTokens++
				}
				switch {
				case t == 0:
					dec[t] = cfg.Specials.DecoderStart
				case t <= len(ex.Target):
					dec[t] = int64(ex.Target[t-1])
				}
			}
		}
	}
	return b
}

// round pads a length up to the pad multiple, never past limit unless the
// length itself is.
func (l *Loader) round(n, limit int) int {
	m := l.opt.PadMultiple
	if m <= 1 || n%m == 0 {
		return n
	}
	return max(n, min((n/m+1)*m, limit))
}
