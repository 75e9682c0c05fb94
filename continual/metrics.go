package continual

import (
	"math"

	"github.com/migu-ml/migu/internal/stats"
)

// Matrix is the accuracy matrix of one run: R[i][j] is the accuracy on
// task j after training tasks 0…i, Base[j] the accuracy of the model
// before any training (row −1).
type Matrix struct {
	Base []float64   `json:"base"`
	R    [][]float64 `json:"r"`
	// BaseItems and RItems are the per-item outcomes behind Base and R, one
	// string per task with '1' for each test row answered right and '0'
	// otherwise (in the order of the test file), so that two methods can
	// be compared item by item; absent in runs recorded before them.
	BaseItems []string   `json:"base_items,omitempty"`
	RItems    [][]string `json:"r_items,omitempty"`
}

// Metrics summarise a matrix as the continual-learning papers do. Fields
// that need more tasks than the sequence has are nil.
type Metrics struct {
	// AA is the average accuracy after the last task: mean_j R[T−1][j].
	AA float64 `json:"aa"`
	// BWT is backward transfer: mean_{j<T−1} (R[T−1][j] − R[j][j]);
	// negative when learning later tasks hurt earlier ones.
	BWT *float64 `json:"bwt,omitempty"`
	// Forgetting is mean_{j<T−1} (max_{i<T−1} R[i][j] − R[T−1][j]), the
	// drop from each task's best accuracy before the last task
	// (Chaudhry et al.).
	Forgetting *float64 `json:"forgetting,omitempty"`
	// FWT is forward transfer: mean_{j≥1} (R[j−1][j] − Base[j]), how much
	// training the earlier tasks helped a task before it was trained.
	FWT *float64 `json:"fwt,omitempty"`
}

// Compute returns the metrics of a complete matrix (T rows of T values);
// FWT needs Base.
func (m Matrix) Compute() Metrics {
	T := len(m.R)
	if T == 0 {
		return Metrics{AA: math.NaN()}
	}
	last := m.R[T-1]
	var out Metrics
	for _, v := range last {
		out.AA += v
	}
	out.AA /= float64(len(last))
	if T >= 2 {
		var bwt, forget float64
		for j := 0; j < T-1; j++ {
			bwt += last[j] - m.R[j][j]
			best := math.Inf(-1)
			for i := 0; i < T-1; i++ {
				best = math.Max(best, m.R[i][j])
			}
			forget += best - last[j]
		}
		bwt /= float64(T - 1)
		forget /= float64(T - 1)
		out.BWT, out.Forgetting = &bwt, &forget
		if len(m.Base) == T {
			var fwt float64
			for j := 1; j < T; j++ {
				fwt += m.R[j-1][j] - m.Base[j]
			}
			fwt /= float64(T - 1)
			out.FWT = &fwt
		}
	}
	return out
}

// Stat is a mean and sample standard deviation over seeds.
type Stat struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	N    int     `json:"n"`
}

// statOf summarises values (NaN-free); the standard deviation is the
// sample one (n−1), 0 for a single value.
func statOf(vals []float64) Stat {
	return Stat{Mean: stats.Mean(vals), Std: stats.SampleStd(vals), N: len(vals)}
}

// meanMatrix averages matrices of the same shape element by element.
func meanMatrix(ms []Matrix) Matrix {
	if len(ms) == 0 {
		return Matrix{}
	}
	out := Matrix{R: make([][]float64, len(ms[0].R))}
	if len(ms[0].Base) > 0 {
		out.Base = make([]float64, len(ms[0].Base))
	}
	for i := range out.R {
		out.R[i] = make([]float64, len(ms[0].R[i]))
	}
	for _, m := range ms {
		for j, v := range m.Base {
			out.Base[j] += v / float64(len(ms))
		}
		for i, row := range m.R {
			for j, v := range row {
				out.R[i][j] += v / float64(len(ms))
			}
		}
	}
	return out
}
