// Package migu implements magnitude-based gradient updating: from the
// per-feature output magnitudes of a linear layer, choose the output
// features (weight columns in MatMul orientation) that an update may change.
package migu

import (
	"fmt"
	"math"
	"slices"
)

// Threshold is the T-quantile of n with linear interpolation between order
// statistics (torch.quantile's default): the value below which a fraction T
// of the features lie. T is the fraction of features NOT updated, in
// [0, 1) as CheckT checks where T enters (NewMasker); a T outside is taken
// as the nearest end.
func Threshold(n []float32, t float64) (float32, error) {
	return threshold(n, t, nil)
}

// threshold is Threshold with work as scratch space for the selection
// (grown when shorter than n), so that a caller who keeps it allocates
// nothing per call.
func threshold(n []float32, t float64, work []float32) (float32, error) {
	if len(n) == 0 {
		return 0, fmt.Errorf("migu: no magnitudes")
	}
	pos := min(max(t, 0), 1) * float64(len(n)-1)
	lo := min(int(math.Floor(pos)), len(n)-1)
	hi := min(lo+1, len(n)-1)
	frac := pos - float64(lo)
	var a, b float32
	if slices.ContainsFunc(n, func(v float32) bool { return v != v }) {
		sorted := slices.Clone(n)
		slices.Sort(sorted)
		a, b = sorted[lo], sorted[hi]
	} else {
		// Quickselect: the lo-th smallest, then the smallest of those above
		// it; linear time instead of a sort.
		work = append(work[:0], n...)
		a = selectKth(work, lo)
		b = a
		if hi > lo {
			b = slices.Min(work[lo+1:])
		}
	}
	return float32(float64(a) + frac*(float64(b)-float64(a))), nil
}

// selectKth reorders v so that v[k] is its k-th smallest value, with no
// larger value before it and no smaller one after (Hoare's selection with
// a median-of-three pivot), and returns v[k].
func selectKth(v []float32, k int) float32 {
	lo, hi := 0, len(v)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if v[mid] < v[lo] {
			v[mid], v[lo] = v[lo], v[mid]
		}
		if v[hi] < v[lo] {
			v[hi], v[lo] = v[lo], v[hi]
		}
		if v[hi] < v[mid] {
			v[hi], v[mid] = v[mid], v[hi]
		}
		pivot := v[mid]
		i, j := lo, hi
		for i <= j {
			for v[i] < pivot {
				i++
			}
			for v[j] > pivot {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return v[k]
		}
	}
	return v[k]
}

// Mask sets keep[j] for every feature whose magnitude is at or above the
// T-quantile of n, and returns how many it kept. Per layer, never global.
func Mask(n []float32, t float64, keep []bool) (int, error) {
	return mask(n, t, keep, nil)
}

// mask is Mask with work as threshold's scratch space.
func mask(n []float32, t float64, keep []bool, work []float32) (int, error) {
	if len(keep) != len(n) {
		return 0, fmt.Errorf("migu: mask has %d entries for %d magnitudes", len(keep), len(n))
	}
	th, err := threshold(n, t, work)
	if err != nil {
		return 0, err
	}
	kept := 0
	for j, v := range n {
		keep[j] = v >= th
		if keep[j] {
			kept++
		}
	}
	return kept, nil
}
