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
// of the features lie. T is the fraction of features NOT updated.
func Threshold(n []float32, t float64) (float32, error) {
	if len(n) == 0 {
		return 0, fmt.Errorf("migu: no magnitudes")
	}
	if !(t >= 0 && t < 1) {
		return 0, fmt.Errorf("migu: T = %v is outside [0, 1)", t)
	}
	sorted := slices.Clone(n)
	slices.Sort(sorted)
	pos := t * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	frac := pos - float64(lo)
	return float32(float64(sorted[lo]) + frac*(float64(sorted[hi])-float64(sorted[lo]))), nil
}

// Mask sets keep[j] for every feature whose magnitude is at or above the
// T-quantile of n, and returns how many it kept. Per layer, never global.
func Mask(n []float32, t float64, keep []bool) (int, error) {
	if len(keep) != len(n) {
		return 0, fmt.Errorf("migu: mask has %d entries for %d magnitudes", len(keep), len(n))
	}
	th, err := Threshold(n, t)
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
