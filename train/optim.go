package train

import (
	"math"
	"sync"

	"github.com/migu-ml/migu/internal/badinput"
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
}

// AdamW updates tensors as torch.optim.AdamW does (decoupled weight decay,
// bias correction, eps outside the square root), in float32 with the same
// order of operations so that runs agree with PyTorch to rounding.
type AdamW struct {
	cfg AdamWConfig
}

// NewAdamW checks the hyperparameters.
func NewAdamW(cfg AdamWConfig) (*AdamW, error) {
	switch {
	case !(cfg.LR >= 0):
		return nil, badinput.Errorf("learning rate %v must be ≥ 0", cfg.LR)
	case !(cfg.Beta1 >= 0 && cfg.Beta1 < 1) || !(cfg.Beta2 >= 0 && cfg.Beta2 < 1):
		return nil, badinput.Errorf("betas (%v, %v) must be in [0, 1)", cfg.Beta1, cfg.Beta2)
	case !(cfg.Eps > 0):
		return nil, badinput.Errorf("eps %v must be > 0", cfg.Eps)
	case !(cfg.WeightDecay >= 0):
		return nil, badinput.Errorf("weight decay %v must be ≥ 0", cfg.WeightDecay)
	}
	return &AdamW{cfg: cfg}, nil
}

// Masking says how Step treats the rows or columns a MIGU mask leaves out.
type Masking int

const (
	// MaskNone updates every element.
	MaskNone Masking = iota
	// MaskGrad updates masked elements as if their gradient were zero:
	// their momentum and weight decay still move them (the authors' code).
	MaskGrad
	// MaskUpdate leaves masked elements exactly as they are, value and
	// moments (the paper's update rule).
	MaskUpdate
)

// Step applies one update at learning rate lr to every tensor, in
// parallel over tensors. For tensors with a mask in keep, masked rows or
// columns are treated as masking says; folding the mask into this one pass
// over the parameters costs nothing extra.
func (o *AdamW) Step(tensors []*Tensor, lr float64, keep map[*Tensor]*migu.Keep, masking Masking) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, t := range tensors {
		wg.Add(1)
		sem <- struct{}{}
		go func(t *Tensor) {
			defer func() { <-sem; wg.Done() }()
			k := keep[t]
			if masking == MaskNone {
				k = nil
			}
			o.step(t, lr, k, masking)
		}(t)
	}
	wg.Wait()
}

func (o *AdamW) step(t *Tensor, lr float64, keep *migu.Keep, masking Masking) {
	t.Steps++
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	decay := float32(1 - lr*o.cfg.WeightDecay)
	bc1 := 1 - math.Pow(b1, float64(t.Steps))
	bc2 := 1 - math.Pow(b2, float64(t.Steps))
	negStep := float32(-(lr / bc1))
	bc2Sqrt := float32(math.Sqrt(bc2))
	eps := float32(o.cfg.Eps)
	fb1, fb2 := float32(b1), float32(b2)
	ob1, ob2 := float32(1-b1), float32(1-b2)
	update := func(p, g, m, v []float32) {
		for i := range p {
			gi := g[i]
			pi := p[i] * decay
			mi := m[i]*fb1 + gi*ob1
			vi := v[i]*fb2 + gi*gi*ob2
			denom := float32(math.Sqrt(float64(vi)))/bc2Sqrt + eps
			p[i] = pi + negStep*(mi/denom)
			m[i], v[i] = mi, vi
		}
	}
	// zeroGrad is update with g = 0, for masked elements in grad mode.
	zeroGrad := func(p, m, v []float32) {
		for i := range p {
			pi := p[i] * decay
			mi := m[i] * fb1
			vi := v[i] * fb2
			denom := float32(math.Sqrt(float64(vi)))/bc2Sqrt + eps
			p[i] = pi + negStep*(mi/denom)
			m[i], v[i] = mi, vi
		}
	}
	span := func(lo, hi int64, kept bool) {
		switch {
		case kept:
			update(t.Value[lo:hi], t.Grad[lo:hi], t.M[lo:hi], t.V[lo:hi])
		case masking == MaskGrad:
			zeroGrad(t.Value[lo:hi], t.M[lo:hi], t.V[lo:hi])
		}
	}
	switch {
	case keep == nil:
		update(t.Value, t.Grad, t.M, t.V)
	case keep.Axis == 0:
		for i, k := range keep.Features {
			span(int64(i)*keep.Cols, int64(i+1)*keep.Cols, k)
		}
	default:
		// Runs of equally masked columns within each row go together.
		f := keep.Features
		for r := int64(0); r < keep.Rows; r++ {
			base := r * keep.Cols
			for j := 0; j < len(f); {
				end := j + 1
				for end < len(f) && f[end] == f[j] {
					end++
				}
				span(base+int64(j), base+int64(end), f[j])
				j = end
			}
		}
	}
}

// ClipGradNorm scales all gradients so that their global L2 norm is at most
// maxNorm (when maxNorm > 0), as torch.nn.utils.clip_grad_norm_, and
// returns the norm before clipping.
func ClipGradNorm(tensors []*Tensor, maxNorm float64) float64 {
	var sq float64
	for _, t := range tensors {
		var s float64
		for _, g := range t.Grad {
			s += float64(g) * float64(g)
		}
		sq += s
	}
	norm := math.Sqrt(sq)
	if maxNorm > 0 {
		if coef := maxNorm / (norm + 1e-6); coef < 1 {
			c := float32(coef)
			for _, t := range tensors {
				for i := range t.Grad {
					t.Grad[i] *= c
				}
			}
		}
	}
	return norm
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
	return "", badinput.Errorf("unknown --schedule %q (constant, linear, cosine)", kind)
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
