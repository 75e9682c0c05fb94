package migu

import (
	"fmt"
	"maps"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
)

// Mode says how a mask acts on the update; the optimizer takes it as it
// is, ModeNone when nothing is masked.
type Mode string

const (
	// ModeNone updates every element: no mask applies.
	ModeNone Mode = ""
	// ModeGrad multiplies the gradient by the mask before the optimizer, as
	// the authors' code does: with AdamW a masked column can still move
	// through its momentum and weight decay.
	ModeGrad Mode = "grad"
	// ModeUpdate leaves masked columns exactly as they are, values and
	// optimizer moments, as the paper's update rule W ← W − η·M⊙∇W says.
	ModeUpdate Mode = "update"
)

// ParseMode checks a --migu-mode value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeGrad, ModeUpdate:
		return Mode(s), nil
	}
	return "", badinput.Errorf("unknown %v %q (grad, update)", badinput.Setting("migu_mode"), s)
}

// CheckT validates the threshold T, the fraction of features not updated:
// the one check of T's range, made where T enters (train.Config.Check and
// NewMasker).
func CheckT(t float64) error {
	if !(t >= 0 && t < 1) {
		return badinput.Errorf("%v %v is outside [0, 1): T is the fraction of output features not updated", badinput.Setting("migu_t"), t)
	}
	return nil
}

// Rule ties a trainable tensor to the tap whose magnitudes mask it: the
// tensor's elements along Axis are output features of the tap, so feature
// j of the tap's mask gates index j of that axis. Adapters give their
// tensors' rules in this form, and the trainer takes them as they are.
type Rule struct {
	Param string
	// Shape is the tensor's: a matrix [rows, cols] or a vector [d].
	Shape []int64
	// Axis is 0 for rows (a tied embedding [vocab, hidden]) or a vector's
	// only axis (DoRA's magnitude [d_out]), 1 for columns ([d_in, d_out]
	// weights).
	Axis int
	Tap  string
}

// Masker turns accumulated tap magnitudes into per-element keep masks for
// every masked tensor, once per optimizer step, and keeps statistics.
type Masker struct {
	T     float64
	rules []Rule
	// magnitudes accumulate over the micro-batches of one step.
	magnitudes map[string][]float32
	// features is the current keep mask per tap; previous the last step's.
	features, previous map[string][]bool
	// keeps holds each tensor's mask: Keep hands out the same value every
	// step, whose Features Compute rewrites in place.
	keeps map[string]*Keep
	// work is the quantile's scratch space, as long as the widest tap, so
	// that Compute allocates nothing.
	work []float32
}

// NewMasker prepares masks for the rules; tapDims gives each tap's length.
func NewMasker(t float64, rules []Rule, tapDims map[string]int64) (*Masker, error) {
	if err := CheckT(t); err != nil {
		return nil, err
	}
	m := &Masker{T: t, rules: rules, magnitudes: map[string][]float32{}, features: map[string][]bool{},
		previous: map[string][]bool{}, keeps: map[string]*Keep{}}
	for _, r := range rules {
		dim, ok := tapDims[r.Tap]
		if !ok {
			return nil, fmt.Errorf("migu: tensor %s is masked by tap %q, which the training graph lacks", r.Param, r.Tap)
		}
		if len(r.Shape) < 1 || len(r.Shape) > 2 || r.Axis < 0 || r.Axis >= len(r.Shape) || r.Shape[r.Axis] != dim {
			return nil, fmt.Errorf("migu: tensor %s %v: axis %d does not have the tap's %d features", r.Param, r.Shape, r.Axis, dim)
		}
		if _, ok := m.magnitudes[r.Tap]; !ok {
			m.magnitudes[r.Tap] = make([]float32, dim)
			m.features[r.Tap] = make([]bool, dim)
			m.previous[r.Tap] = make([]bool, dim)
		}
		if len(r.Shape) == 1 {
			m.keeps[r.Param] = &Keep{Features: m.features[r.Tap], Axis: 1, Rows: 1, Cols: r.Shape[0]}
		} else {
			m.keeps[r.Param] = &Keep{Features: m.features[r.Tap], Axis: r.Axis, Rows: r.Shape[0], Cols: r.Shape[1]}
		}
		m.work = slices.Grow(m.work, int(dim))
	}
	return m, nil
}

// Accumulate adds one micro-batch's magnitudes (tap name → Σ|y|).
func (m *Masker) Accumulate(taps map[string][]float32) {
	for name, acc := range m.magnitudes {
		for j, v := range taps[name] {
			acc[j] += v
		}
	}
}

// EachMagnitude calls fn on every tap's accumulated magnitudes, in the
// order of the taps' names, and stops at its first error; fn may change
// them (data-parallel ranks add up theirs before Compute).
func (m *Masker) EachMagnitude(fn func([]float32) error) error {
	for _, name := range slices.Sorted(maps.Keys(m.magnitudes)) {
		if err := fn(m.magnitudes[name]); err != nil {
			return err
		}
	}
	return nil
}

// Compute sets the masks from the accumulated magnitudes (per tap, keep the
// features at or above the T-quantile) and resets the accumulators for the
// next step.
func (m *Masker) Compute() error {
	for name, acc := range m.magnitudes {
		copy(m.previous[name], m.features[name])
		if _, err := mask(acc, m.T, m.features[name], m.work); err != nil {
			return fmt.Errorf("tap %s: %w", name, err)
		}
		clear(acc)
	}
	return nil
}

// Keep is the mask of one tensor [Rows, Cols]: element (i, j) may change
// when Features[j] (Axis 1) or Features[i] (Axis 0) is set. A vector [d]
// is one row of d columns masked by column: element j by Features[j].
type Keep struct {
	Features   []bool
	Axis       int
	Rows, Cols int64
}

// At reports whether element (i, j) may change.
func (k *Keep) At(i, j int64) bool {
	if k.Axis == 0 {
		return k.Features[i]
	}
	return k.Features[j]
}

// Keep returns the current mask of a tensor, or nil when it is unmasked:
// the same value at every step, which the next Compute updates. Callers
// read it and do not change it.
func (m *Masker) Keep(param string) *Keep {
	return m.keeps[param]
}

// Stats are per-tap mask statistics for the metrics.
type Stats struct {
	Updated float64 `json:"updated"` // fraction of features kept
	Overlap float64 `json:"overlap"` // share of kept features also kept at the previous step
}

// Stats reports, per tap, the share of features updated and its overlap
// with the previous step's mask.
func (m *Masker) Stats() map[string]Stats {
	out := make(map[string]Stats, len(m.features))
	for name, f := range m.features {
		var kept, both int
		for j, k := range f {
			if k {
				kept++
				if m.previous[name][j] {
					both++
				}
			}
		}
		s := Stats{Updated: float64(kept) / float64(len(f))}
		if kept > 0 {
			s.Overlap = float64(both) / float64(kept)
		}
		out[name] = s
	}
	return out
}
