package train

import (
	"context"
	"encoding/json"

	"github.com/migu-ml/migu/data"
)

// Group is the set of processes that train one model together, data
// parallel (internal/mpi.Comm under mpirun): each rank trains on its rows
// of every global batch and the ranks add up their gradients, MIGU
// magnitudes, losses and token counts, so that every rank takes the step a
// single process would take on the whole batch. Sums must come out with
// the same bits on every rank, or the ranks' weights drift apart.
type Group interface {
	Rank() int
	Size() int
	SumFloat32([]float32) error
	SumFloat64([]float64) error
}

// ShardSource hands each rank its contiguous share of the batches of a
// source that yields the global batches (Size ranks × the per-rank batch):
// rows [r·n/Size, (r+1)·n/Size) of a batch of n rows, still padded to the
// global batch's length, so that padding-inclusive MIGU magnitudes add up
// to the single process's. A rank whose share of a short last batch is
// empty gets a batch of no rows.
type ShardSource struct {
	Source
	Rank, Size int
}

// Next returns this rank's rows of the next global batch.
func (s ShardSource) Next() (*data.Batch, error) {
	b, err := s.Source.Next()
	if err != nil {
		return nil, err
	}
	return b.Rows(s.Rank*b.Size/s.Size, (s.Rank+1)*b.Size/s.Size), nil
}

// State and Restore are the global source's: every rank holds the same.
func (s ShardSource) State() (json.RawMessage, error) { return s.Source.State() }

// Restore sets the global source's position.
func (s ShardSource) Restore(raw json.RawMessage) error { return s.Source.Restore(raw) }

// microWeights returns, per micro-batch, the share of the global
// micro-batch's loss positions that this rank's rows hold (nil without a
// group): the loss is a mean over positions, so a rank's gradient counts
// in that proportion.
func (t *Trainer) microWeights(batches []*data.Batch) ([]float64, error) {
	g := t.cfg.Group
	if g == nil {
		return nil, nil
	}
	counts := make([]float64, len(batches))
	for i, b := range batches {
		counts[i] = float64(b.LossTokens)
	}
	local := append([]float64(nil), counts...)
	if err := g.SumFloat64(counts); err != nil {
		return nil, err
	}
	for i := range local {
		if counts[i] > 0 {
			local[i] /= counts[i]
		}
	}
	return local, nil
}

// reduce adds the ranks' weighted gradients, MIGU magnitudes, losses and
// token counts (nothing without a group), in the same order on every rank.
func (t *Trainer) reduce(res *StepResult, loss float64) (float64, error) {
	g := t.cfg.Group
	if g == nil {
		return loss, nil
	}
	for _, tt := range t.Tensors {
		if err := g.SumFloat32(tt.Grad); err != nil {
			return 0, err
		}
	}
	if t.masker != nil {
		if err := t.masker.EachMagnitude(g.SumFloat32); err != nil {
			return 0, err
		}
	}
	sums := []float64{loss, float64(res.Tokens)}
	if err := g.SumFloat64(sums); err != nil {
		return 0, err
	}
	res.Tokens = int(sums[1])
	return sums[0], nil
}

// stopRequested reports whether the run should stop before its next step
// (Stopping with the trainer's group).
func (t *Trainer) stopRequested(ctx context.Context) (bool, error) {
	return Stopping(ctx, t.cfg.Group)
}

// Stopping reports whether ctx is cancelled here or, in a group (g not
// nil), on any rank, so that all ranks stop at the same point; in a group
// every rank must call it at the same points.
func Stopping(ctx context.Context, g Group) (bool, error) {
	stop := ctx.Err() != nil
	if g == nil {
		return stop, nil
	}
	flag := []float64{0}
	if stop {
		flag[0] = 1
	}
	err := g.SumFloat64(flag)
	return flag[0] > 0, err
}
