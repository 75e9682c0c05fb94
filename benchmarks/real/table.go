package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/internal/atomicfile"
)

// clSetting is what tells CL runs apart across results files: the method,
// its learning rate, for +migu methods T, and the rows held out of the
// training files for validation (they change which rows train).
type clSetting struct {
	method string
	lr, T  float64
	val    int
}

// clSeedRun is one seed's AA and BWT on the test rows, and the file it
// came from.
type clSeedRun struct {
	seed    uint64
	aa, bwt float64
	hasBWT  bool
	file    string
}

// clTable collects every finished run of several `real cl` results files
// (the main run, other seeds, -tag variants such as a T sweep) into one
// Markdown table: per method, learning rate and T, AA and BWT per seed and
// their mean ± std. A seed met twice for one setting keeps the first file's.
func clTable(paths []string) (string, error) {
	runs := map[clSetting][]clSeedRun{}
	var order []clSetting
	var tasks []string
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		var res CLResults
		if err := json.Unmarshal(raw, &res); err != nil || res.Reports == nil {
			return "", fmt.Errorf("%s: not a real cl results file (%v)", path, err)
		}
		for _, rep := range res.Reports {
			if tasks == nil {
				tasks = rep.Tasks
			} else if !slices.Equal(tasks, rep.Tasks) {
				return "", fmt.Errorf("%s: tasks %v, where the first file has %v", path, rep.Tasks, tasks)
			}
			for _, rr := range rep.Runs {
				met, ok := rr.Metrics[eval.CLRank]
				if !ok {
					continue // unfinished
				}
				s := clSetting{method: rr.Method, lr: rep.Config.Job.Train.Optim.LR, val: rep.Config.ValSamples}
				if strings.HasSuffix(rr.Method, "+migu") {
					s.T = rep.Config.Job.Train.T
				}
				if slices.ContainsFunc(runs[s], func(r clSeedRun) bool { return r.seed == rr.Seed }) {
					continue
				}
				if runs[s] == nil {
					order = append(order, s)
				}
				r := clSeedRun{seed: rr.Seed, aa: met.AA, file: path}
				if met.BWT != nil {
					r.bwt, r.hasBWT = *met.BWT, true
				}
				runs[s] = append(runs[s], r)
			}
		}
	}
	if len(order) == 0 {
		return "", fmt.Errorf("no finished runs in %s", strings.Join(paths, ", "))
	}
	slices.SortStableFunc(order, func(a, b clSetting) int {
		if c := strings.Compare(a.method, b.method); c != 0 {
			return c
		}
		if a.val != b.val {
			return a.val - b.val
		}
		if a.lr != b.lr {
			return cmpFloat(a.lr, b.lr)
		}
		return cmpFloat(a.T, b.T)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "| method | validation rows | lr | T | seeds | AA per seed | AA mean ± std | BWT per seed | BWT mean ± std |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range order {
		rs := runs[s]
		slices.SortFunc(rs, func(a, b clSeedRun) int { return cmpFloat(float64(a.seed), float64(b.seed)) })
		var aa, bwt []float64
		var aaText, bwtText []string
		for _, r := range rs {
			aa = append(aa, r.aa)
			aaText = append(aaText, fmt.Sprintf("%d: %.1f", r.seed, 100*r.aa))
			if r.hasBWT {
				bwt = append(bwt, r.bwt)
				bwtText = append(bwtText, fmt.Sprintf("%d: %.1f", r.seed, 100*r.bwt))
			}
		}
		T := "–"
		if s.T > 0 {
			T = fmt.Sprint(s.T)
		}
		fmt.Fprintf(&b, "| %s | %d | %g | %s | %d | %s | %s | %s | %s |\n", s.method, s.val, s.lr, T, len(rs), strings.Join(aaText, ", "),
			strings.TrimPrefix(meanStd(aa), "+"), strings.Join(bwtText, ", "), meanStd(bwt))
	}
	b.WriteString("\nFrom: " + strings.Join(paths, ", ") + ".\n")
	return b.String(), nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeCLTable writes clTable's table to out.
func writeCLTable(paths []string, out string) error {
	text, err := clTable(paths)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(out, []byte("# Every CL run on the real model\n\nTest rows, rank accuracy, percent; AA after the last task, BWT backward transfer; mean ± sample std over seeds. *Validation rows*: rows per task held out of the training files before the training rows were drawn (0: none; runs with a validation split train on other rows). Written by `bin/real table`.\n\n"+text))
}
