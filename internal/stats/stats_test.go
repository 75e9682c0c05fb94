package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The expected values were computed independently with Python's
// statistics.stdev (n−1) and exact binomial sums (math.comb, fractions).
func TestMeanStderr(t *testing.T) {
	for _, tc := range []struct {
		xs       []float64
		mean, se float64
		std      float64
	}{
		{[]float64{1, 0, 1, 1, 0, 1, 0, 0, 1, 1}, 0.6, 0.16329931618554522, 0.5163977794943222},
		{[]float64{0.25, 1.5, -2, 3.75, 0.5}, 0.8, 0.9334077351297234, 2.08716314647418},
		{[]float64{3}, 3, math.NaN(), 0},
		{nil, math.NaN(), math.NaN(), math.NaN()},
	} {
		if got := Mean(tc.xs); !near(got, tc.mean, 1e-12) {
			t.Errorf("Mean(%v) = %v, want %v", tc.xs, got, tc.mean)
		}
		if got := MeanStderr(tc.xs); !near(got, tc.se, 1e-12) {
			t.Errorf("MeanStderr(%v) = %v, want %v", tc.xs, got, tc.se)
		}
		if got := SampleStd(tc.xs); !near(got, tc.std, 1e-12) {
			t.Errorf("SampleStd(%v) = %v, want %v", tc.xs, got, tc.std)
		}
	}
}

// TestMeanStderrBinary checks the closed form of a 0/1 metric (acc):
// √(p(1−p)·n/(n−1))/√n.
func TestMeanStderrBinary(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 2}, {37, 100}, {512, 1000}, {999, 1000}} {
		xs := make([]float64, tc.n)
		for i := range tc.k {
			xs[i] = 1
		}
		p := float64(tc.k) / float64(tc.n)
		want := math.Sqrt(p*(1-p)*float64(tc.n)/float64(tc.n-1)) / math.Sqrt(float64(tc.n))
		if got := MeanStderr(xs); !near(got, want, 1e-12) {
			t.Errorf("%d of %d: %v, want %v", tc.k, tc.n, got, want)
		}
	}
}

func TestSignTest(t *testing.T) {
	for _, tc := range []struct {
		wins, losses, ties int
		p                  float64
	}{
		{7, 3, 0, 0.34375},
		{9, 1, 4, 0.021484375},
		{10, 0, 0, 0.001953125},
		{0, 10, 2, 0.001953125},
		{5, 5, 1, 1},
		{20, 5, 0, 0.004077315330505371},
		{60, 40, 7, 0.05688793364098079},
		{3, 4, 0, 1},
		{130, 100, 0, 0.055613577781392386},
		{0, 0, 5, 1},
	} {
		var a, b []float64
		for range tc.wins {
			a, b = append(a, 0), append(b, 1)
		}
		for range tc.losses {
			a, b = append(a, 1), append(b, 0.5)
		}
		for range tc.ties {
			a, b = append(a, 0.25), append(b, 0.25)
		}
		s, err := SignTest(a, b)
		if err != nil {
			t.Fatal(err)
		}
		if s.Wins != tc.wins || s.Losses != tc.losses || s.Ties != tc.ties || !near(s.P, tc.p, 1e-9) {
			t.Errorf("%d/%d/%d: got %+v, want p %v", tc.wins, tc.losses, tc.ties, s, tc.p)
		}
	}
	if _, err := SignTest([]float64{1}, []float64{1, 0}); err == nil {
		t.Error("unequal lengths accepted")
	}
}

func TestPairedMeanDiffConstant(t *testing.T) {
	a := []float64{0, 1, 0, 1, 1, 0}
	b := make([]float64, len(a))
	for i := range a {
		b[i] = a[i] + 0.25
	}
	iv, err := PairedMeanDiff(a, b, BootstrapOptions{Resamples: 200, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Pairing removes the items' own spread: every resample differs by 0.25.
	if !near(iv.Estimate, 0.25, 1e-12) || !near(iv.Lo, 0.25, 1e-12) || !near(iv.Hi, 0.25, 1e-12) || !near(iv.Stderr, 0, 1e-12) {
		t.Errorf("constant difference: %+v", iv)
	}
	if iv.Excludes(0.25) || !iv.Excludes(0) {
		t.Errorf("Excludes wrong for %+v", iv)
	}
}

// TestPairedMeanDiffMatchesNormalTheory compares the bootstrap with the
// closed form on many items: the bootstrap standard error of a mean of n
// differences is s·√((n−1)/n)/√n, and the 95% percentile interval is
// about ±1.96 of it.
func TestPairedMeanDiffMatchesNormalTheory(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 2000
	a, b := make([]float64, n), make([]float64, n)
	d := make([]float64, n)
	for i := range a {
		a[i] = float64(rng.IntN(2))
		b[i] = a[i]
		if rng.Float64() < 0.3 { // 30% of the items are redrawn, 60% of them right
			b[i] = 0
			if rng.Float64() < 0.6 {
				b[i] = 1
			}
		}
		d[i] = b[i] - a[i]
	}
	iv, err := PairedMeanDiff(a, b, BootstrapOptions{Resamples: 4000, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	se := SampleStd(d) * math.Sqrt(float64(n-1)/float64(n)) / math.Sqrt(float64(n))
	if !near(iv.Estimate, Mean(d), 1e-12) {
		t.Errorf("estimate %v, mean difference %v", iv.Estimate, Mean(d))
	}
	if math.Abs(iv.Stderr-se) > 0.05*se {
		t.Errorf("bootstrap stderr %v, closed form %v", iv.Stderr, se)
	}
	for _, tc := range []struct{ got, want float64 }{{iv.Lo, Mean(d) - 1.96*se}, {iv.Hi, Mean(d) + 1.96*se}} {
		if math.Abs(tc.got-tc.want) > 0.15*se {
			t.Errorf("interval end %v, normal theory %v (se %v)", tc.got, tc.want, se)
		}
	}
	// The same seed gives the same interval; another seed another one.
	again, _ := PairedMeanDiff(a, b, BootstrapOptions{Resamples: 4000, Seed: 7})
	other, _ := PairedMeanDiff(a, b, BootstrapOptions{Resamples: 4000, Seed: 8})
	if again != iv {
		t.Errorf("seed 7 twice: %+v and %+v", iv, again)
	}
	if other.Lo == iv.Lo && other.Hi == iv.Hi && other.Stderr == iv.Stderr {
		t.Errorf("seeds 7 and 8 gave the same resamples")
	}
}

// TestPairedBootstrapStatistic checks that a general statistic sees the
// same resamples as PairedMeanDiff (same seed, same indices).
func TestPairedBootstrapStatistic(t *testing.T) {
	a := []float64{0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1}
	b := []float64{1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1}
	o := BootstrapOptions{Resamples: 500, Seed: 11, Level: 0.9}
	want, err := PairedMeanDiff(a, b, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := PairedBootstrap(len(a), func(idx []int) float64 {
		var sa, sb float64
		for _, i := range idx {
			sa += a[i]
			sb += b[i]
		}
		return (sb - sa) / float64(len(idx))
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !near(got.Lo, want.Lo, 1e-12) || !near(got.Hi, want.Hi, 1e-12) || got.Level != 0.9 || got.N != len(a) {
		t.Errorf("general %+v, mean difference %+v", got, want)
	}
	if got.Lo > got.Estimate || got.Hi < got.Estimate {
		t.Errorf("interval %v..%v misses its estimate %v", got.Lo, got.Hi, got.Estimate)
	}
}

// TestStratifiedBootstrap checks that each stratum is resampled from its
// own items: with two strata of constant but different values, every
// resample's per-stratum means are those constants, so the average of the
// strata's means has no spread (pooled resampling would have some).
func TestStratifiedBootstrap(t *testing.T) {
	a := []float64{1, 1, 1, 1}
	b := []float64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	iv, err := StratifiedBootstrap([]int{len(a), len(b)}, func(idx [][]int) float64 {
		var sa, sb float64
		for _, i := range idx[0] {
			sa += a[i]
		}
		for _, i := range idx[1] {
			sb += b[i]
		}
		return (sa/float64(len(idx[0])) + sb/float64(len(idx[1]))) / 2
	}, BootstrapOptions{Resamples: 300, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if iv.Estimate != 0.5 || iv.Lo != 0.5 || iv.Hi != 0.5 || iv.N != 14 {
		t.Errorf("stratified: %+v", iv)
	}
	if _, err := StratifiedBootstrap([]int{3, 0}, func([][]int) float64 { return 0 }, BootstrapOptions{}); err == nil {
		t.Error("an empty stratum accepted")
	}
}

func TestBootstrapRefusesBadOptions(t *testing.T) {
	stat := func([]int) float64 { return 0 }
	for _, tc := range []struct {
		n int
		o BootstrapOptions
	}{
		{0, BootstrapOptions{}},
		{3, BootstrapOptions{Resamples: -1}},
		{3, BootstrapOptions{Level: 1}},
		{3, BootstrapOptions{Level: -0.5}},
	} {
		if _, err := PairedBootstrap(tc.n, stat, tc.o); err == nil {
			t.Errorf("n %d, %+v: no error", tc.n, tc.o)
		}
	}
	if _, err := PairedMeanDiff([]float64{1, 2}, []float64{1}, BootstrapOptions{}); err == nil {
		t.Error("unequal lengths accepted")
	}
}

func near(got, want, tol float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got)
	}
	return math.Abs(got-want) <= tol
}
