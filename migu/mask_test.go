package migu

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestThresholdMatchesTorchQuantile(t *testing.T) {
	// Values from torch.quantile(torch.tensor(n), q) with the default
	// linear interpolation.
	cases := []struct {
		n    []float32
		q    float64
		want float32
	}{
		{[]float32{1, 2, 3, 4}, 0.5, 2.5},
		{[]float32{4, 1, 3, 2}, 0.7, 3.1},
		{[]float32{5}, 0.7, 5},
		{[]float32{0, 10}, 0, 0},
		{[]float32{3, 3, 3}, 0.7, 3},
	}
	for _, c := range cases {
		got, err := Threshold(c.n, c.q)
		if err != nil || got != c.want {
			t.Errorf("Threshold(%v, %v) = %v, %v; want %v", c.n, c.q, got, err, c.want)
		}
	}
}

// T = 0.7 keeps about 30% of the features: those at or above the quantile.
func TestMaskKeepsTopFraction(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, d := range []int{8, 64, 1000} {
		n := make([]float32, d)
		for i := range n {
			n[i] = rng.Float32()
		}
		keep := make([]bool, d)
		kept, err := Mask(n, 0.7, keep)
		if err != nil {
			t.Fatal(err)
		}
		sorted := append([]float32(nil), n...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] > sorted[j] })
		// Everything kept is at least as large as everything dropped.
		for j := range n {
			if keep[j] && n[j] < sorted[kept-1] || !keep[j] && n[j] >= sorted[kept-1] {
				t.Fatalf("d=%d: feature %d (%v) kept=%v breaks the order", d, j, n[j], keep[j])
			}
		}
		pos := 0.7 * float64(d-1)
		want := d - int(pos) - 1 // features strictly above the interpolated quantile
		if kept != want {
			t.Errorf("d=%d kept %d, want %d", d, kept, want)
		}
	}
}

// Threshold's quickselect agrees with sorting, with ties, tiny and odd
// lengths and every T on a grid.
func TestThresholdEqualsSortedQuantile(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, n := range []int{1, 2, 3, 7, 64, 1000} {
		for _, levels := range []int{2, 1 << 20} { // many ties, or few
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.IntN(levels))
			}
			sorted := slices.Clone(v)
			slices.Sort(sorted)
			for k := range 20 {
				q := float64(k) / 20
				pos := q * float64(n-1)
				lo := int(math.Floor(pos))
				hi := min(lo+1, n-1)
				want := float32(float64(sorted[lo]) + (pos-float64(lo))*(float64(sorted[hi])-float64(sorted[lo])))
				got, err := Threshold(v, q)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("n %d levels %d T %v: %v, want %v", n, levels, q, got, want)
				}
			}
		}
	}
}
