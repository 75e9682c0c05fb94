package train

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
)

// Top keeps the ⌈(1−T)·d⌉ features with the largest sums; Overlap counts
// the shared ones, by hand.
func TestMaskRecordTopAndOverlap(t *testing.T) {
	r := NewMaskRecord()
	tr := &Trainer{tapOut: map[string][]float32{"q": {1, 5, 2, 4, 3}}}
	r.add(tr)
	tr.tapOut["q"] = []float32{1, 0, 9, 0, 0}
	r.add(tr) // sums 2, 5, 11, 4, 3
	cases := []struct {
		T    float64
		want []bool
	}{
		{0.7, []bool{false, true, true, false, false}}, // ⌈0.3·5⌉ = 2: features 2 (11) and 1 (5)
		{0.5, []bool{false, true, true, true, false}},  // ⌈2.5⌉ = 3
		{0.99, []bool{false, false, true, false, false}},
		{0, []bool{true, true, true, true, true}},
	}
	for _, c := range cases {
		if got := r.Top("q", c.T); !slices.Equal(got, c.want) {
			t.Errorf("T=%v: %v, want %v", c.T, got, c.want)
		}
	}
	if r.Steps != 2 || r.Top("none", 0.5) != nil {
		t.Errorf("steps %d", r.Steps)
	}
	if got := Overlap([]bool{true, true, false, false}, []bool{false, true, true, false}); got != 0.5 {
		t.Errorf("overlap %v", got)
	}
	if got := Overlap([]bool{false}, []bool{true}); got != 0 {
		t.Errorf("empty overlap %v", got)
	}
	// The record travels through a checkpoint's extra state and a file.
	var back MaskRecord
	if err := back.restore(r.extra()); err != nil || back.Steps != 2 || !slices.Equal(back.Magnitudes["q"], []float64{2, 5, 11, 4, 3}) {
		t.Errorf("restore: %+v %v", back, err)
	}
	if err := back.restore(nil); err != nil || back.Steps != 0 || len(back.Magnitudes) != 0 {
		t.Errorf("restore of nothing: %+v %v", back, err)
	}
	if err := back.restore(json.RawMessage("[1]")); err == nil {
		t.Error("a damaged record restored")
	}
	path := filepath.Join(t.TempDir(), "rec.json")
	if err := r.Save(path); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMaskRecord(path); err != nil || got.Steps != 2 {
		t.Errorf("load: %+v %v", got, err)
	}
	var nilRec *MaskRecord
	nilRec.add(tr) // a nil record records nothing
	if nilRec.extra() != nil || nilRec.restore([]byte("{}")) != nil {
		t.Error("nil record")
	}
}

// BenchmarkMaskRecordAdd measures what recording adds to a step of the
// small llama preset (taps of 4 layers × 7 linears and an 8000-row head).
func BenchmarkMaskRecordAdd(b *testing.B) {
	tr := &Trainer{tapOut: map[string][]float32{}}
	for l := range 4 {
		for k, d := range []int{512, 512, 512, 512, 1376, 1376, 512} {
			tr.tapOut[string(rune('a'+l))+string(rune('a'+k))] = make([]float32, d)
		}
	}
	tr.tapOut["head"] = make([]float32, 8000)
	r := NewMaskRecord()
	for b.Loop() {
		r.add(tr)
	}
}
