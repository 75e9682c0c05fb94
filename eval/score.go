package eval

import (
	"encoding/json"
	"math"

	"github.com/migu-ml/migu/internal/stats"
)

// Score is one row of a results table (task, metric, value, stderr, n).
// Stderr is NaN where it is undefined (fewer than two samples, or a
// metric without one); JSON writes it as null.
type Score struct {
	Task, Metric  string
	Value, Stderr float64
	N             int
}

// Scores travel as JSON rows in `migu eval --json`.
var (
	_ json.Marshaler   = Score{}
	_ json.Unmarshaler = (*Score)(nil)
)

// MarshalJSON writes a score with lower-case keys and a null stderr where
// it is NaN, since JSON has no NaN.
func (s Score) MarshalJSON() ([]byte, error) {
	type row struct {
		Task   string   `json:"task"`
		Metric string   `json:"metric"`
		Value  *float64 `json:"value"`
		Stderr *float64 `json:"stderr"`
		N      int      `json:"n"`
	}
	return json.Marshal(row{s.Task, s.Metric, finite(s.Value), finite(s.Stderr), s.N})
}

// UnmarshalJSON reads what MarshalJSON writes (null becomes NaN).
func (s *Score) UnmarshalJSON(data []byte) error {
	var r struct {
		Task   string   `json:"task"`
		Metric string   `json:"metric"`
		Value  *float64 `json:"value"`
		Stderr *float64 `json:"stderr"`
		N      int      `json:"n"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	*s = Score{Task: r.Task, Metric: r.Metric, Value: math.NaN(), Stderr: math.NaN(), N: r.N}
	if r.Value != nil {
		s.Value = *r.Value
	}
	if r.Stderr != nil {
		s.Stderr = *r.Stderr
	}
	return nil
}

func finite(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// Mean is the average of xs (NaN for none).
func Mean(xs []float64) float64 { return stats.Mean(xs) }

// MeanStderr is the standard error of the mean as lm-eval's mean_stderr
// reports it: the sample standard deviation (n−1 in the denominator)
// divided by √n; NaN for fewer than two values.
func MeanStderr(xs []float64) float64 { return stats.MeanStderr(xs) }

// MeanScore summarises per-sample values (1 for right, 0 for wrong, or any
// per-document metric) as a Score: their mean and its standard error.
func MeanScore(task, metric string, xs []float64) Score {
	return Score{Task: task, Metric: metric, Value: Mean(xs), Stderr: MeanStderr(xs), N: len(xs)}
}

func nan() float64 { return math.NaN() }
