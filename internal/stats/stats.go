// Package stats holds the uncertainty of evaluation results: the standard
// error of a mean as lm-evaluation-harness reports it, a paired bootstrap
// interval for the difference of two methods scored on the same items, and
// the paired sign test. It is a thin layer over gonum's stat and
// stat/distuv, so that every report of the project computes these the
// same way.
package stats

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"
)

// Mean is the average of xs (NaN for none).
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return stat.Mean(xs, nil)
}

// SampleStd is the sample standard deviation (n−1 in the denominator),
// 0 for a single value and NaN for none.
func SampleStd(xs []float64) float64 {
	switch len(xs) {
	case 0:
		return math.NaN()
	case 1:
		return 0
	}
	return stat.StdDev(xs, nil)
}

// MeanStderr is the standard error of the mean as lm-eval's mean_stderr
// computes it for acc, acc_norm and pass@k: the sample standard deviation
// (n−1) divided by √n. NaN for fewer than two values, where it is
// undefined.
func MeanStderr(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	return stat.StdErr(stat.StdDev(xs, nil), float64(len(xs)))
}

// BootstrapOptions configure a paired bootstrap.
type BootstrapOptions struct {
	// Resamples is the number of bootstrap samples B (0: 2000).
	Resamples int
	// Level is the coverage of the interval (0: 0.95).
	Level float64
	// Seed makes the resamples reproducible.
	Seed uint64
}

// DefaultResamples and DefaultLevel are BootstrapOptions' defaults.
const (
	DefaultResamples = 2000
	DefaultLevel     = 0.95
)

func (o BootstrapOptions) withDefaults() (BootstrapOptions, error) {
	if o.Resamples == 0 {
		o.Resamples = DefaultResamples
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Resamples < 1 {
		return o, fmt.Errorf("bootstrap: %d resamples; need at least 1", o.Resamples)
	}
	if !(o.Level > 0 && o.Level < 1) {
		return o, fmt.Errorf("bootstrap: level %g is not in (0, 1)", o.Level)
	}
	return o, nil
}

// Interval is a point estimate with a bootstrap interval around it.
type Interval struct {
	// Estimate is the statistic on the items as they are.
	Estimate float64 `json:"estimate"`
	// Lo and Hi are the percentile interval: the (1−Level)/2 and
	// (1+Level)/2 quantiles of the statistic over the resamples.
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
	// Stderr is the standard deviation of the statistic over the
	// resamples (the bootstrap standard error).
	Stderr    float64 `json:"stderr"`
	Level     float64 `json:"level"`
	Resamples int     `json:"resamples"`
	Seed      uint64  `json:"seed"`
	N         int     `json:"n"`
}

// Excludes reports whether v lies outside the interval: a difference
// whose interval excludes 0 is larger than its uncertainty.
func (iv Interval) Excludes(v float64) bool { return v < iv.Lo || v > iv.Hi }

// PairedBootstrap resamples n items with replacement, the same indices for
// every method, and evaluates statistic on each resample. statistic gets
// the resampled item indices (the identity for the estimate) and returns a
// number, typically a difference between two methods' scores over those
// items; pairing the items removes their shared difficulty from the
// interval. The quantiles are the empirical ones (the inverse of the
// resamples' distribution function, gonum's stat.Empirical).
func PairedBootstrap(n int, statistic func(idx []int) float64, o BootstrapOptions) (Interval, error) {
	return StratifiedBootstrap([]int{n}, func(idx [][]int) float64 { return statistic(idx[0]) }, o)
}

// StratifiedBootstrap is PairedBootstrap over several item sets at once
// (strata of the given sizes, such as the tasks of a benchmark suite):
// each resample draws every stratum's items from that stratum alone, so
// a statistic like the average of per-task scores keeps every task's
// weight. statistic gets one index slice per stratum.
func StratifiedBootstrap(sizes []int, statistic func(idx [][]int) float64, o BootstrapOptions) (Interval, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Interval{}, err
	}
	if len(sizes) == 0 {
		return Interval{}, errors.New("bootstrap: no items")
	}
	idx := make([][]int, len(sizes))
	total := 0
	for s, n := range sizes {
		if n < 1 {
			return Interval{}, errors.New("bootstrap: no items")
		}
		idx[s] = make([]int, n)
		for i := range idx[s] {
			idx[s][i] = i
		}
		total += n
	}
	iv := Interval{Estimate: statistic(idx), Level: o.Level, Resamples: o.Resamples, Seed: o.Seed, N: total}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6d696775)) // "migu"
	vals := make([]float64, o.Resamples)
	for b := range vals {
		for s, n := range sizes {
			for i := range idx[s] {
				idx[s][i] = rng.IntN(n)
			}
		}
		vals[b] = statistic(idx)
	}
	slices.Sort(vals)
	alpha := (1 - o.Level) / 2
	iv.Lo = stat.Quantile(alpha, stat.Empirical, vals, nil)
	iv.Hi = stat.Quantile(1-alpha, stat.Empirical, vals, nil)
	iv.Stderr = SampleStd(vals)
	return iv, nil
}

// PairedMeanDiff is the paired bootstrap interval of mean(b) − mean(a),
// where a[i] and b[i] are two methods' scores on item i (1/0 for acc).
func PairedMeanDiff(a, b []float64, o BootstrapOptions) (Interval, error) {
	if len(a) != len(b) {
		return Interval{}, fmt.Errorf("bootstrap: %d items against %d; the methods must be scored on the same items", len(a), len(b))
	}
	d := make([]float64, len(a))
	for i := range a {
		d[i] = b[i] - a[i]
	}
	return PairedBootstrap(len(d), func(idx []int) float64 {
		var s float64
		for _, i := range idx {
			s += d[i]
		}
		return s / float64(len(idx))
	}, o)
}

// Sign is the outcome of the paired sign test.
type Sign struct {
	// Wins counts items where b scored higher than a, Losses where lower,
	// Ties where equal (ties are left out of the test).
	Wins, Losses, Ties int
	// P is the exact two-sided p-value of Wins out of Wins+Losses under a
	// fair coin: twice the smaller binomial tail, at most 1 (1 when there
	// is nothing but ties).
	P float64
}

// SignTest is the paired sign test of b against a.
func SignTest(a, b []float64) (Sign, error) {
	if len(a) != len(b) {
		return Sign{}, fmt.Errorf("sign test: %d items against %d; the methods must be scored on the same items", len(a), len(b))
	}
	var s Sign
	for i := range a {
		switch {
		case b[i] > a[i]:
			s.Wins++
		case b[i] < a[i]:
			s.Losses++
		default:
			s.Ties++
		}
	}
	n := s.Wins + s.Losses
	if n == 0 {
		s.P = 1
		return s, nil
	}
	bin := distuv.Binomial{N: float64(n), P: 0.5}
	k := float64(min(s.Wins, s.Losses))
	s.P = math.Min(1, 2*bin.CDF(k))
	return s, nil
}
