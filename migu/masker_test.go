package migu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

func TestMaskerRowsAndColumns(t *testing.T) {
	rules := []Rule{
		{Param: "w", Shape: []int64{3, 4}, Axis: 1, Tap: "y"},
		{Param: "e", Shape: []int64{4, 2}, Axis: 0, Tap: "y"},
		{Param: "m", Shape: []int64{4}, Axis: 0, Tap: "y"},
	}
	m, err := NewMasker(0.5, rules, map[string]int64{"y": 4})
	if err != nil {
		t.Fatal(err)
	}
	m.Accumulate(map[string][]float32{"y": {1, 5, 2, 7}})
	m.Accumulate(map[string][]float32{"y": {1, 0, 2, 0}}) // sums 2 5 4 7: keep features 1 and 3
	if err := m.Compute(); err != nil {
		t.Fatal(err)
	}
	pattern := func(param string, rows, cols int64) string {
		k := m.Keep(param)
		var s []int
		for i := int64(0); i < rows; i++ {
			for j := int64(0); j < cols; j++ {
				if k.At(i, j) {
					s = append(s, 1)
				} else {
					s = append(s, 0)
				}
			}
		}
		return fmt.Sprint(s)
	}
	if got := pattern("w", 3, 4); got != "[0 1 0 1 0 1 0 1 0 1 0 1]" {
		t.Errorf("columns: %v", got)
	}
	if got := pattern("e", 4, 2); got != "[0 0 1 1 0 0 1 1]" {
		t.Errorf("rows: %v", got)
	}
	if k := m.Keep("m"); k.Rows != 1 || k.Cols != 4 || pattern("m", 1, 4) != "[0 1 0 1]" {
		t.Errorf("vector: %+v, %v", k, pattern("m", 1, 4))
	}
	if m.Keep("other") != nil {
		t.Error("an unmasked tensor has a mask")
	}
	if s := m.Stats()["y"]; s.Updated != 0.5 || s.Overlap != 0 {
		t.Errorf("stats %+v", s)
	}
	m.Accumulate(map[string][]float32{"y": {0, 9, 9, 0}})
	m.Compute()
	if s := m.Stats()["y"]; s.Overlap != 0.5 {
		t.Errorf("overlap after a second step %+v", s)
	}
	for _, bad := range []Rule{
		{Param: "w", Shape: []int64{3, 5}, Axis: 1, Tap: "y"},
		{Param: "m", Shape: []int64{4}, Axis: 1, Tap: "y"},
		{Param: "m", Shape: []int64{5}, Axis: 0, Tap: "y"},
		{Param: "s", Shape: nil, Axis: 0, Tap: "y"},
		{Param: "c", Shape: []int64{2, 2, 4}, Axis: 2, Tap: "y"},
	} {
		if _, err := NewMasker(0.5, []Rule{bad}, map[string]int64{"y": 4}); err == nil {
			t.Errorf("rule %+v, whose axis does not match the tap, was accepted", bad)
		}
	}
	for _, bad := range []float64{-0.1, 1, 1.5} {
		if _, err := NewMasker(bad, rules, map[string]int64{"y": 4}); err == nil || err.Error() != CheckT(bad).Error() {
			t.Errorf("T = %v: %v", bad, err)
		}
	}
}

// BenchmarkMaskStep measures MIGU's Go-side work per optimizer step on the
// taps of the small llama preset (8 blocks, hidden 512, feed-forward 1376,
// vocabulary 3241): adding a micro-batch's taps and the quantile of every
// tap. Applying the masks costs nothing extra: the optimizer's one pass
// over the parameters reads them.
func BenchmarkMaskStep(b *testing.B) {
	m, taps := smallLlamaMasker(b)
	b.ReportAllocs()
	cpu := testenv.CPUTime()
	for b.Loop() {
		m.Accumulate(taps)
		if err := m.Compute(); err != nil {
			b.Fatal(err)
		}
	}
	testenv.ReportCPU(b, cpu)
}

// A step's mask selection allocates nothing: the quantile works in the
// masker's scratch space and Keep hands out the same masks every step.
func TestMaskerStepAllocatesNothing(t *testing.T) {
	m, taps := smallLlamaMasker(t)
	if n := testing.AllocsPerRun(5, func() {
		m.Accumulate(taps)
		if err := m.Compute(); err != nil {
			t.Fatal(err)
		}
		m.Keep("head.w")
	}); n != 0 {
		t.Errorf("%v allocations per step", n)
	}
}

// smallLlamaMasker is a masker over the small llama preset's taps, with
// random magnitudes for one micro-batch.
func smallLlamaMasker(tb testing.TB) (*Masker, map[string][]float32) {
	var rules []Rule
	dims := map[string]int64{}
	taps := map[string][]float32{}
	rng := rand.New(rand.NewPCG(1, 2))
	add := func(name string, din, dout int64) {
		rules = append(rules, Rule{Param: name + ".w", Shape: []int64{din, dout}, Axis: 1, Tap: name})
		dims[name] = dout
		taps[name] = make([]float32, dout)
		for i := range taps[name] {
			taps[name][i] = rng.Float32()
		}
	}
	for i := 0; i < 8; i++ {
		for k, d := range [][2]int64{{512, 512}, {512, 256}, {512, 256}, {512, 512}, {512, 1376}, {512, 1376}, {1376, 512}} {
			add(fmt.Sprintf("l%d.%d", i, k), d[0], d[1])
		}
	}
	add("head", 512, 3241)
	m, err := NewMasker(0.7, rules, dims)
	if err != nil {
		tb.Fatal(err)
	}
	return m, taps
}
