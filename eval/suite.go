package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
)

// SuiteTask and SuiteMetric name the row holding a suite's average.
const (
	SuiteTask   = "suite"
	SuiteMetric = "average"
)

// SuiteMetrics is the metric of each task that enters the suite average,
// the one papers plot for forgetting: HellaSwag acc_norm, ARC-Challenge
// acc_norm, Winogrande acc.
var SuiteMetrics = map[string]string{
	"hellaswag":     "acc_norm",
	"arc_challenge": "acc_norm",
	"winogrande":    "acc",
}

// ParseTaskList splits a comma-separated list of multiple-choice task
// names, checking each.
func ParseTaskList(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if _, err := LookupTask(name); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, badinput.Errorf("%v is empty; list tasks such as hellaswag,arc_challenge,winogrande", badinput.Setting("tasks"))
	}
	return out, nil
}

// SuiteFiles finds each task's data file by its standard name (Task.File)
// in dir, failing before any scoring if one is missing.
func SuiteFiles(dir string, tasks []string) (map[string]string, error) {
	files := map[string]string{}
	for _, name := range tasks {
		t, err := LookupTask(name)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, t.File)
		if _, err := os.Stat(p); err != nil {
			if _, gzErr := os.Stat(p + ".gz"); gzErr != nil {
				return nil, badinput.Errorf("%v %s: no %s for task %s", badinput.Setting("data_dir"), dir, t.File, name)
			}
			p += ".gz"
		}
		files[name] = p
	}
	return files, nil
}

// SuiteScores scores each task on its file in dir (standard names) and
// appends the suite average (see SuiteAverage).
func SuiteScores(ctx context.Context, m *Model, tasks []string, dir string, o TaskOptions) ([]Score, error) {
	files, err := SuiteFiles(dir, tasks)
	if err != nil {
		return nil, err
	}
	// Read every file first so that a bad row stops the run before the
	// first task is scored.
	for _, name := range tasks {
		t, err := LookupTask(name)
		if err != nil {
			return nil, err
		}
		if _, err := t.ReadDocs(files[name]); err != nil {
			return nil, err
		}
	}
	var out []Score
	for _, name := range tasks {
		s, err := TaskScores(ctx, m, name, files[name], o)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	if avg, ok := SuiteAverage(out); ok {
		out = append(out, avg)
	}
	return out, nil
}

// SuiteAverage is the mean of the suite metric (SuiteMetrics) of every
// task present in scores; its standard error combines the tasks' as
// independent estimates, √(Σ se²)/k, and N counts the tasks. ok is false
// when no suite task is present.
func SuiteAverage(scores []Score) (Score, bool) {
	var vals, ses []float64
	for _, s := range scores {
		if SuiteMetrics[s.Task] == s.Metric {
			vals = append(vals, s.Value)
			ses = append(ses, s.Stderr)
		}
	}
	if len(vals) == 0 {
		return Score{}, false
	}
	var v float64
	for _, se := range ses {
		v += se * se
	}
	return Score{Task: SuiteTask, Metric: SuiteMetric, Value: Mean(vals), Stderr: math.Sqrt(v) / float64(len(vals)), N: len(vals)}, true
}

// Diff is the change of one metric between a base and another model.
type Diff struct {
	Task, Metric string
	Base, Other  float64
	// Delta is Other − Base; Stderr treats the two scores as independent,
	// √(se_base² + se_other²), NaN when either is unknown.
	Delta, Stderr float64
	N             int
}

// Compare pairs the rows of base and other by task and metric, in base's
// order, and reports the difference of each; rows present in only one
// list are left out.
func Compare(base, other []Score) []Diff {
	type key struct{ task, metric string }
	idx := map[key]Score{}
	for _, s := range other {
		idx[key{s.Task, s.Metric}] = s
	}
	var out []Diff
	for _, b := range base {
		o, ok := idx[key{b.Task, b.Metric}]
		if !ok {
			continue
		}
		out = append(out, Diff{
			Task: b.Task, Metric: b.Metric, Base: b.Value, Other: o.Value,
			Delta: o.Value - b.Value, Stderr: math.Sqrt(b.Stderr*b.Stderr + o.Stderr*o.Stderr), N: b.N,
		})
	}
	return out
}

var _ json.Marshaler = Diff{}

// MarshalJSON writes a Diff with lower-case keys and null for NaN.
func (d Diff) MarshalJSON() ([]byte, error) {
	type row struct {
		Task   string   `json:"task"`
		Metric string   `json:"metric"`
		Base   *float64 `json:"base"`
		Other  *float64 `json:"other"`
		Delta  *float64 `json:"delta"`
		Stderr *float64 `json:"stderr"`
		N      int      `json:"n"`
	}
	return json.Marshal(row{d.Task, d.Metric, finite(d.Base), finite(d.Other), finite(d.Delta), finite(d.Stderr), d.N})
}
