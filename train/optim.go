package train

import (
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/migu"
)

// AdamWConfig holds AdamW's hyperparameters, with PyTorch's defaults.
type AdamWConfig struct {
	LR          float64 `json:"lr"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"`
}

// DefaultAdamW returns torch.optim.AdamW's defaults (lr 1e-3).
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

// Tensor is one trainable tensor as the optimizer sees it: the values the
// training graph reads, the gradient it writes, and the two moments.
type Tensor struct {
	Name  string
	Shape []int64
	Value []float32
	Grad  []float32
	M, V  []float32
	Steps int64 // optimizer steps taken (PyTorch keeps one count per tensor)
	// BF16 is Value rounded to bfloat16, the copy the training graph's
	// bf16 products read (Param.BF16), or nil; AdamW rounds each chunk
	// into it right after updating it.
	BF16 []uint16
}

// AdamW updates tensors as torch.optim.AdamW does (decoupled weight decay,
// bias correction, eps outside the square root), in float32 with the same
// order of operations so that runs agree with PyTorch to rounding.
type AdamW struct {
	cfg AdamWConfig
	// Reused from step to step: per-tensor constants and the work list.
	state  []adamTensor
	chunks []adamChunk
}

// NewAdamW checks the hyperparameters.
func NewAdamW(cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	return &AdamW{cfg: cfg}, nil
}

// Check checks the ranges of the hyperparameters: every one finite, the
// learning rate and weight decay ≥ 0, the betas in [0, 1), eps > 0.
func (c AdamWConfig) Check() error {
	switch {
	case !finiteAtLeast(c.LR, 0):
		return badinput.Range("lr", c.LR, "a finite number ≥ 0")
	case !finiteAtLeast(c.WeightDecay, 0):
		return badinput.Range("weight_decay", c.WeightDecay, "a finite number ≥ 0")
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return badinput.Range("beta1", c.Beta1, "[0, 1)")
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return badinput.Range("beta2", c.Beta2, "[0, 1)")
	case !(c.Eps > 0) || math.IsInf(c.Eps, 0):
		return badinput.Range("eps", c.Eps, "a finite number > 0")
	}
	return nil
}

// finiteAtLeast reports whether v is a finite number ≥ lo (NaN is not).
func finiteAtLeast(v, lo float64) bool {
	return v >= lo && !math.IsInf(v, 0)
}

// Step applies one update at learning rate lr to every tensor, in
// parallel. For tensors with a mask in keep, masked rows or columns are
// treated as mode says; folding the mask into this one pass over the
// parameters costs nothing extra. In migu.ModeGrad masked elements update
// as if their gradient were zero (their momentum and weight decay still
// move them, as in the authors' code); in migu.ModeUpdate they stay exactly
// as they are, value and moments (the paper's update rule); migu.ModeNone
// ignores keep.
func (o *AdamW) Step(tensors []*Tensor, lr float64, keep map[*Tensor]*migu.Keep, mode migu.Mode) {
	o.StepScaled(tensors, lr, 1, keep, mode)
}

// chunkSize is the number of values one worker updates at a time: large
// enough to amortise scheduling, small enough to balance two to a few
// dozen cores over tensors of very different sizes.
const chunkSize = 1 << 16

// adamChunk is a range of one tensor's values, whole rows when the tensor
// is masked by column.
type adamChunk struct {
	t      *adamTensor
	lo, hi int64
}

// adamTensor holds one tensor's constants for the current step.
type adamTensor struct {
	t       *Tensor
	keep    *migu.Keep
	factor  []float32 // per column, 1 kept, 0 masked (Axis 1)
	decay   float32
	negStep float32
	bc2Sqrt float32
}

// StepScaled is Step with every gradient multiplied by scale first, as
// clipping does in place in PyTorch (g·scale, then the update), without a
// separate pass over the gradients. The work is split into chunks that
// GOMAXPROCS goroutines take in turn, so large and small tensors balance.
func (o *AdamW) StepScaled(tensors []*Tensor, lr float64, scale float32, keep map[*Tensor]*migu.Keep, mode migu.Mode) {
	o.step(tensors, lr, scale, keep, mode, false)
}

// StepNorm is Step that also returns the global L2 norm of the gradients
// (GradNorm's), summed chunk by chunk in the update's own pass where the
// vector loop allows (chunk) and right before the chunk's update
// otherwise: without clipping, the norm a step reports costs no pass over
// the gradients of its own (a read of 100–160 MB per step of the small
// presets).
func (o *AdamW) StepNorm(tensors []*Tensor, lr float64, keep map[*Tensor]*migu.Keep, mode migu.Mode) float64 {
	sums := o.step(tensors, lr, 1, keep, mode, true)
	var sq float64
	for _, s := range sums {
		sq += s
	}
	return math.Sqrt(sq)
}

// step runs the update over chunks; with norm it returns each chunk's
// Σ g² (before scaling).
func (o *AdamW) step(tensors []*Tensor, lr float64, scale float32, keep map[*Tensor]*migu.Keep, mode migu.Mode, norm bool) []float64 {
	if len(o.state) != len(tensors) {
		o.state = make([]adamTensor, len(tensors))
	}
	o.chunks = o.chunks[:0]
	for i, t := range tensors {
		t.Steps++
		bc1 := 1 - math.Pow(o.cfg.Beta1, float64(t.Steps))
		bc2 := 1 - math.Pow(o.cfg.Beta2, float64(t.Steps))
		st := &o.state[i]
		factor := st.factor
		*st = adamTensor{t: t, decay: float32(1 - lr*o.cfg.WeightDecay), negStep: float32(-(lr / bc1)),
			bc2Sqrt: float32(math.Sqrt(bc2)), factor: factor}
		if k := keep[t]; k != nil && mode != migu.ModeNone {
			st.keep = k
			if k.Axis == 1 {
				st.factor = slices.Grow(st.factor[:0], len(k.Features))[:len(k.Features)]
				for j, f := range k.Features {
					st.factor[j] = 0
					if f {
						st.factor[j] = 1
					}
				}
			}
		}
		n := int64(len(t.Value))
		step := int64(chunkSize)
		if st.keep != nil && st.keep.Cols > 0 {
			step = max(1, chunkSize/st.keep.Cols) * st.keep.Cols
		}
		for lo := int64(0); lo < n; lo += step {
			o.chunks = append(o.chunks, adamChunk{st, lo, min(lo+step, n)})
		}
	}
	var sums []float64
	if norm {
		sums = make([]float64, len(o.chunks))
	}
	onCores(len(o.chunks), func(c int) {
		if sq := o.chunk(o.chunks[c], scale, mode, norm); norm {
			sums[c] = sq
		}
	})
	return sums
}

// onCores runs fn(0) … fn(n-1) on GOMAXPROCS goroutines, which take the
// indices in turn, so that large and small pieces of work balance.
func onCores(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// chunk updates one chunk; with norm it returns the chunk's Σ g² (before
// scaling) as sumSquares sums it, in the same pass where the vector loop
// allows (updateNormVec: scale 1, and the chunk whole or masked by column
// in grad mode, in rows of a multiple of 32 values), else first.
func (o *AdamW) chunk(c adamChunk, scale float32, mode migu.Mode, norm bool) float64 {
	st, t := c.t, c.t.t
	k := adamConsts{decay: st.decay, negStep: st.negStep, bc2Sqrt: st.bc2Sqrt, eps: float32(o.cfg.Eps),
		b1: float32(o.cfg.Beta1), b2: float32(o.cfg.Beta2), ob1: float32(1 - o.cfg.Beta1), ob2: float32(1 - o.cfg.Beta2)}
	p, g, m, v := t.Value[c.lo:c.hi], t.Grad[c.lo:c.hi], t.M[c.lo:c.hi], t.V[c.lo:c.hi]
	keep := st.keep
	var sq float64
	if norm && !(normVec && scale == 1 && (keep == nil || mode == migu.ModeGrad && keep.Axis == 1 && keep.Cols%32 == 0)) {
		sq, norm = sumSquares(g), false
	}
	switch {
	case keep == nil && norm:
		var acc squares
		done := k.updateNormVec(p, g, m, v, nil, &acc)
		k.update(p[done:], g[done:], m[done:], v[done:], 1)
		sq = sumSquaresFrom(acc.sum(), g[done:])
	case keep == nil:
		k.update(p, g, m, v, scale)
	case keep.Axis == 0:
		// Whole rows: kept rows update, masked rows update with a zero
		// gradient (grad mode) or not at all (update mode).
		cols := keep.Cols
		for lo := int64(0); lo < int64(len(p)); lo += cols {
			row := (c.lo + lo) / cols
			hi := lo + cols
			switch {
			case keep.Features[row]:
				k.update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], scale)
			case mode == migu.ModeGrad:
				k.update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], 0)
			}
		}
	case mode == migu.ModeGrad:
		// Columns: the gradient times a 0/1 factor per column; a zero
		// gradient is the authors' masked update.
		cols := keep.Cols
		var acc squares
		for lo := int64(0); lo < int64(len(p)); lo += cols {
			hi := lo + cols
			if norm {
				k.updateNormVec(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], st.factor, &acc)
				continue
			}
			k.updateFactor(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], st.factor, scale)
		}
		if norm {
			sq = acc.sum()
		}
	default:
		// Update mode by column: kept columns update, the others stay.
		cols := keep.Cols
		for lo := int64(0); lo < int64(len(p)); lo += cols {
			hi := lo + cols
			k.updateSelect(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], st.factor, scale)
		}
	}
	if t.BF16 != nil {
		// While the chunk's values are in cache.
		roundBF16(t.BF16[c.lo:c.hi], p)
	}
	return sq
}

// adamConsts are the per-tensor constants of one step, in float32 as
// PyTorch computes the update.
type adamConsts struct {
	decay, negStep, bc2Sqrt, eps, b1, b2, ob1, ob2 float32
}

// update is torch.optim.AdamW's single-tensor update for the values of p
// with gradient g·scale, in its order of operations.
func (k *adamConsts) update(p, g, m, v []float32, scale float32) {
	done := k.updateVec(p, g, m, v, nil, scale)
	for i := done; i < len(p); i++ {
		k.at(p, m, v, i, g[i]*scale)
	}
}

// updateFactor is update with the gradient of column j also multiplied by
// f[j] (0 or 1).
func (k *adamConsts) updateFactor(p, g, m, v, f []float32, scale float32) {
	done := k.updateVec(p, g, m, v, f, scale)
	for i := done; i < len(p); i++ {
		k.at(p, m, v, i, g[i]*scale*f[i])
	}
}

// updateSelect is update of the values whose f[j] is not 0; the others
// keep their value and moments (MIGU's update mode by column).
func (k *adamConsts) updateSelect(p, g, m, v, f []float32, scale float32) {
	done := k.updateSelectVec(p, g, m, v, f, scale)
	for i := done; i < len(p); i++ {
		if f[i] != 0 {
			k.at(p, m, v, i, g[i]*scale)
		}
	}
}

// at updates value i with gradient gi, in PyTorch's order of float32
// operations.
func (k *adamConsts) at(p, m, v []float32, i int, gi float32) {
	pi := p[i] * k.decay
	mi := m[i]*k.b1 + gi*k.ob1
	vi := v[i]*k.b2 + gi*gi*k.ob2
	denom := float32(math.Sqrt(float64(vi)))/k.bc2Sqrt + k.eps
	p[i] = pi + k.negStep*(mi/denom)
	m[i], v[i] = mi, vi
}

// roundBF16 rounds src to bfloat16 (to nearest even, NaNs quiet) into
// dst, as internal/half.F32ToBF16 and the bf16 products round.
func roundBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i := roundBF16Vec(dst, src); i < len(src); i++ {
		dst[i] = half.F32ToBF16(src[i])
	}
}

// ClipScale is the factor clip_grad_norm_ multiplies the gradients by for
// a global norm and a maximum (1 when maxNorm is 0 or not exceeded).
func ClipScale(norm, maxNorm float64) float32 {
	if maxNorm > 0 {
		if coef := maxNorm / (norm + 1e-6); coef < 1 {
			return float32(coef)
		}
	}
	return 1
}

// GradNorm is the global L2 norm of all gradients, summed in float64 over
// chunks on every core.
func GradNorm(tensors []*Tensor) float64 {
	var spans [][]float32
	for _, t := range tensors {
		for lo := 0; lo < len(t.Grad); lo += chunkSize {
			spans = append(spans, t.Grad[lo:min(lo+chunkSize, len(t.Grad))])
		}
	}
	// Four spans a task, read side by side (sumSquaresVec4); each span's
	// sum is sumSquares', so the norm does not depend on the grouping.
	sums := make([]float64, len(spans))
	onCores((len(spans)+3)/4, func(t int) {
		lo := 4 * t
		if lo+4 > len(spans) {
			for i := lo; i < len(spans); i++ {
				sums[i] = sumSquares(spans[i])
			}
			return
		}
		group := [4][]float32(spans[lo : lo+4])
		vec, done := sumSquaresVec4(&group)
		for k := range group {
			sums[lo+k] = sumSquaresFrom(vec[k], group[k][done[k]:])
		}
	})
	var sq float64
	for _, s := range sums {
		sq += s
	}
	return math.Sqrt(sq)
}

// addScaled adds each tensor's micro-batch gradient src[t] times scale to
// its Grad (gradient accumulation), or with src nil multiplies Grad by
// scale (a data-parallel rank's share), over chunks on every core in the
// vector loops: the same float32 operations per value as
// Grad[i] += src[i]·scale and Grad[i] *= scale. One scalar loop took
// 55 ms a micro-batch over the small llama's 26.5 M values on a Xeon with
// AMX, these 9.4 on its two cores (BenchmarkAddScaled).
func addScaled(tensors []*Tensor, src map[*Tensor][]float32, scale float32) {
	type span struct{ dst, src []float32 }
	var spans []span
	for _, t := range tensors {
		g := src[t]
		if src != nil && g == nil {
			continue
		}
		for lo := 0; lo < len(t.Grad); lo += chunkSize {
			hi := min(lo+chunkSize, len(t.Grad))
			sp := span{dst: t.Grad[lo:hi]}
			if g != nil {
				sp.src = g[lo:hi]
			}
			spans = append(spans, sp)
		}
	}
	onCores(len(spans), func(i int) {
		sp := spans[i]
		done := addScaledVec(sp.dst, sp.src, scale)
		if sp.src == nil {
			for j := done; j < len(sp.dst); j++ {
				sp.dst[j] *= scale
			}
			return
		}
		for j := done; j < len(sp.dst); j++ {
			sp.dst[j] += sp.src[j] * scale
		}
	})
}

// sumSquares is Σ g² in float64 with four independent accumulators
// (sixteen lanes when built with GOEXPERIMENT=simd).
func sumSquares(g []float32) float64 {
	vec, done := sumSquaresVec(g)
	return sumSquaresFrom(vec, g[done:])
}

// sumSquaresFrom adds the squares of the rest of g that the vector loop
// left to its sum vec, as sumSquares does.
func sumSquaresFrom(vec float64, g []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(g); i += 4 {
		a, b, c, d := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(g); i++ {
		s0 += float64(g[i]) * float64(g[i])
	}
	return vec + (s0 + s1) + (s2 + s3)
}

// Schedule gives the learning rate of each optimizer step.
type Schedule struct {
	Kind   string // constant, linear, cosine
	Base   float64
	Warmup int64 // steps of linear warm-up from 0
	Total  int64 // total optimizer steps (for linear and cosine decay)
}

// ParseSchedule checks a schedule name.
func ParseSchedule(kind string) (string, error) {
	switch kind {
	case "", "constant":
		return "constant", nil
	case "linear", "cosine":
		return kind, nil
	}
	return "", badinput.Errorf("unknown %v %q (constant, linear, cosine)", badinput.Setting("schedule"), kind)
}

// LR is the learning rate for the optimizer step with index step (0 for
// the first), as the transformers schedulers with warm-up compute it.
func (s Schedule) LR(step int64) float64 {
	if s.Warmup > 0 && step < s.Warmup {
		return s.Base * float64(step) / float64(s.Warmup)
	}
	switch s.Kind {
	case "linear":
		if s.Total <= s.Warmup {
			return s.Base
		}
		return s.Base * math.Max(0, float64(s.Total-step)/float64(s.Total-s.Warmup))
	case "cosine":
		if s.Total <= s.Warmup {
			return s.Base
		}
		progress := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
		return s.Base * math.Max(0, 0.5*(1+math.Cos(math.Pi*progress)))
	}
	return s.Base
}
