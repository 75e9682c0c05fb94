package train

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/migu-ml/migu/internal/atomicfile"
)

// MaskRecord sums, per MIGU tap, the magnitudes n_j of every optimizer step
// of a run, so that a continual run can say which output features a task
// drove most and compare tasks (the paper's Figure 5). With gradient
// accumulation each step contributes its last micro-batch.
type MaskRecord struct {
	// Steps counts the steps summed.
	Steps int64 `json:"steps"`
	// Magnitudes is Σ_steps n_j per tap name.
	Magnitudes map[string][]float64 `json:"magnitudes"`
}

// NewMaskRecord returns an empty record.
func NewMaskRecord() *MaskRecord {
	return &MaskRecord{Magnitudes: map[string][]float64{}}
}

// add sums the taps of the step the trainer just took (nothing for a nil
// record or without MIGU taps).
func (r *MaskRecord) add(t *Trainer) {
	if r == nil || len(t.tapOut) == 0 {
		return
	}
	for name, v := range t.tapOut {
		acc := r.Magnitudes[name]
		if len(acc) != len(v) {
			acc = make([]float64, len(v))
			r.Magnitudes[name] = acc
		}
		for j, x := range v {
			acc[j] += float64(x)
		}
	}
	r.Steps++
}

// extra is the record as a checkpoint carries it (nil for a nil record),
// so that a resumed run continues the sums of the checkpoint's step.
func (r *MaskRecord) extra() json.RawMessage {
	if r == nil {
		return nil
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	return raw
}

// restore replaces the record with the one a checkpoint carried (an empty
// record when it carried none).
func (r *MaskRecord) restore(raw json.RawMessage) error {
	if r == nil {
		return nil
	}
	r.Steps, r.Magnitudes = 0, map[string][]float64{}
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, r); err != nil {
		return fmt.Errorf("checkpoint's MIGU mask record: %w", err)
	}
	if r.Magnitudes == nil {
		r.Magnitudes = map[string][]float64{}
	}
	return nil
}

// Top returns, for a tap, the features whose summed magnitude is among the
// ⌈(1−T)·d⌉ largest (ties go to the lower index): the positions MIGU at
// threshold T would update for the task as a whole. Nil for an unknown tap.
func (r *MaskRecord) Top(tap string, t float64) []bool {
	acc := r.Magnitudes[tap]
	if len(acc) == 0 {
		return nil
	}
	k := TopCount(len(acc), t)
	idx := make([]int, len(acc))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(acc[b], acc[a]) })
	keep := make([]bool, len(acc))
	for _, i := range idx[:k] {
		keep[i] = true
	}
	return keep
}

// TopCount is how many of d features threshold T updates: ⌈(1−T)·d⌉, at
// least one.
func TopCount(d int, t float64) int {
	k := int(math.Ceil((1 - t) * float64(d)))
	return min(max(k, 1), d)
}

// Overlap is the share of a's selected features that b selects too
// (|a ∩ b| / |a|; symmetric when both select as many); 0 when a selects
// none.
func Overlap(a, b []bool) float64 {
	var n, both int
	for j, x := range a {
		if x {
			n++
			if j < len(b) && b[j] {
				both++
			}
		}
	}
	if n == 0 {
		return 0
	}
	return float64(both) / float64(n)
}

// Save writes the record atomically as JSON.
func (r *MaskRecord) Save(path string) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, raw)
}

// LoadMaskRecord reads a record written by Save.
func LoadMaskRecord(path string) (*MaskRecord, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := NewMaskRecord()
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}
