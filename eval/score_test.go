package eval

import (
	"encoding/json"
	"math"
	"testing"
)

// TestMeanStderr compares with values worked out by hand: for 1,0,1,1 the
// mean is 0.75, the sample variance 0.25 and the standard error
// √0.25/√4 = 0.25.
func TestMeanStderr(t *testing.T) {
	tests := []struct {
		xs         []float64
		mean, serr float64
	}{
		{[]float64{1, 0, 1, 1}, 0.75, 0.25},
		{[]float64{2, 4}, 3, 1},
		{[]float64{1, 1, 1}, 1, 0},
		{[]float64{5}, 5, math.NaN()},
		{nil, math.NaN(), math.NaN()},
	}
	for _, tc := range tests {
		s := MeanScore("t", "acc", tc.xs)
		if !same(s.Value, tc.mean) || !same(s.Stderr, tc.serr) || s.N != len(tc.xs) {
			t.Errorf("%v: %v ± %v (n %d), want %v ± %v", tc.xs, s.Value, s.Stderr, s.N, tc.mean, tc.serr)
		}
	}
}

func same(a, b float64) bool {
	return (math.IsNaN(a) && math.IsNaN(b)) || math.Abs(a-b) < 1e-12
}

// TestScoreJSON checks the JSON row, NaN as null, and the round trip.
func TestScoreJSON(t *testing.T) {
	in := []Score{{"hellaswag", "acc", 0.25, 0.1, 4}, {"perplexity", "token_perplexity", 12.5, math.NaN(), 1}}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"task":"hellaswag","metric":"acc","value":0.25,"stderr":0.1,"n":4},{"task":"perplexity","metric":"token_perplexity","value":12.5,"stderr":null,"n":1}]`
	if string(data) != want {
		t.Errorf("JSON %s, want %s", data, want)
	}
	var back []Score
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back[0] != in[0] || !math.IsNaN(back[1].Stderr) || back[1].Value != 12.5 {
		t.Errorf("round trip %+v", back)
	}
}
