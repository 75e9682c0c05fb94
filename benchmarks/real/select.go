package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/internal/stats"
)

// lrRun is one method's runs at one learning rate: its continual report,
// its runs by seed, and its summaries on the test rows (sum) and on the
// validation split (val; nil without one).
type lrRun struct {
	method string
	lr     float64
	rep    *continual.Report
	seeds  map[uint64]continual.RunReport
	sum    *continual.Summary
	val    *continual.Summary
}

// lrRuns lists every method at every learning rate, in the order of the
// reports and of their methods.
func lrRuns(res *CLResults) []lrRun {
	var out []lrRun
	for _, rep := range res.Reports {
		for _, m := range rep.Config.Methods {
			r := lrRun{method: m, lr: rep.Config.Job.Train.Optim.LR, rep: rep, seeds: map[uint64]continual.RunReport{}}
			for _, rr := range rep.Runs {
				if rr.Method == m {
					r.seeds[rr.Seed] = rr
				}
			}
			for i, s := range rep.Summary {
				switch {
				case s.Method != m:
				case s.Score == eval.CLRank:
					r.sum = &rep.Summary[i]
				case s.Score == continual.ValidationPrefix+eval.CLRank:
					r.val = &rep.Summary[i]
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// findRun is method's run at lr, or nil.
func findRun(runs []lrRun, method string, lr float64) *lrRun {
	for i := range runs {
		if runs[i].method == method && runs[i].lr == lr {
			return &runs[i]
		}
	}
	return nil
}

// row is the run's line of the comparison table.
func (r lrRun) row() string {
	return fmt.Sprintf("| %s | %g %s", r.method, r.lr, strings.TrimPrefix(r.sum.Row(), "| "+r.method+" "))
}

// lrChoice is the learning rate chosen for a method: the candidate whose
// validation AA (mean over seeds) is highest, the earlier one on a tie.
type lrChoice struct {
	method string
	cands  []lrRun
	chosen int
}

// chooseLR chooses each method's learning rate on the validation split;
// nil unless some method ran at several learning rates, every candidate
// with a validation split.
func chooseLR(runs []lrRun) []lrChoice {
	var out []lrChoice
	several := false
	for _, r := range runs {
		if r.val == nil || r.sum == nil {
			return nil
		}
		i := slices.IndexFunc(out, func(c lrChoice) bool { return c.method == r.method })
		if i < 0 {
			out = append(out, lrChoice{method: r.method})
			i = len(out) - 1
		}
		c := &out[i]
		c.cands = append(c.cands, r)
		if len(c.cands) > 1 {
			several = true
		}
		if r.val.AA.Mean > c.cands[c.chosen].val.AA.Mean {
			c.chosen = len(c.cands) - 1
		}
	}
	if !several {
		return nil
	}
	return out
}

const pairHeader = "| base | +migu | lr | ΔAA per seed | ΔAA mean ± std | ΔAA 95% CI (items) | ΔBWT per seed | ΔBWT mean ± std | ΔBWT 95% CI (items) |\n|---|---|---|---|---|---|---|---|---|\n"

// pairText says what the intervals over items are.
const pairText = "Per seed, the difference of AA and of BWT (points; +migu − base) on the test rows, their mean ± std over seeds, and a paired bootstrap interval over the test items (2,000 resamples, percentile; each task's items resampled separately; an item's difference averaged over the seeds first). Per item, AA's difference is whether each model answers it right after the last task, BWT's the change of that between the end of the item's own task and the end of the sequence. An interval that excludes 0 marks a difference larger than its uncertainty (*); runs recorded before per-item outcomes show –."

// itemDiffs are +migu − base per test item, averaged over the seeds both
// ran with per-item outcomes: aa[j][k] for item k of task j after the last
// task, bwt[j][k] for the change between the end of task j and the end of
// the sequence (j < T−1). ok is false without per-item outcomes.
func itemDiffs(base, mg lrRun) (aa, bwt [][]float64, ok bool) {
	seeds := 0
	for seed, a := range base.seeds {
		b, found := mg.seeds[seed]
		ma, mb := a.Matrices[eval.CLRank], b.Matrices[eval.CLRank]
		if !found || len(ma.RItems) == 0 || len(ma.RItems) != len(mb.RItems) || len(ma.RItems) != len(ma.RItems[len(ma.RItems)-1]) {
			continue
		}
		T := len(ma.RItems)
		if aa == nil {
			aa, bwt = make([][]float64, T), make([][]float64, T-1)
		}
		for j := range T {
			last, lastB := ma.RItems[T-1][j], mb.RItems[T-1][j]
			if len(last) != len(lastB) || len(ma.RItems[j][j]) != len(last) || len(mb.RItems[j][j]) != len(last) {
				return nil, nil, false
			}
			if aa[j] == nil {
				aa[j] = make([]float64, len(last))
				if j < T-1 {
					bwt[j] = make([]float64, len(last))
				}
			}
			for k := range last {
				aa[j][k] += bit(lastB, k) - bit(last, k)
				if j < T-1 {
					bwt[j][k] += (bit(lastB, k) - bit(mb.RItems[j][j], k)) - (bit(last, k) - bit(ma.RItems[j][j], k))
				}
			}
		}
		seeds++
	}
	if seeds == 0 {
		return nil, nil, false
	}
	for _, m := range [][][]float64{aa, bwt} {
		for _, row := range m {
			for k := range row {
				row[k] /= float64(seeds)
			}
		}
	}
	return aa, bwt, true
}

func bit(s string, k int) float64 {
	if s[k] == '1' {
		return 1
	}
	return 0
}

// taskMeanInterval is the stratified bootstrap interval of the mean over
// tasks of each task's mean item difference (points).
func taskMeanInterval(d [][]float64) string {
	if len(d) == 0 {
		return "–"
	}
	sizes := make([]int, len(d))
	for j, row := range d {
		sizes[j] = len(row)
	}
	iv, err := stats.StratifiedBootstrap(sizes, func(idx [][]int) float64 {
		total := 0.0
		for j, row := range idx {
			sum := 0.0
			for _, k := range row {
				sum += d[j][k]
			}
			total += sum / float64(len(row))
		}
		return total / float64(len(idx))
	}, stats.BootstrapOptions{Seed: 1})
	if err != nil {
		return "–"
	}
	mark := ""
	if iv.Excludes(0) {
		mark = " *"
	}
	return fmt.Sprintf("%+.1f [%+.1f, %+.1f]%s", 100*iv.Estimate, 100*iv.Lo, 100*iv.Hi, mark)
}

// pairRow compares a +migu run with its base seed by seed on the test rows.
func pairRow(base, mg lrRun) string {
	var daa, dbwt []float64
	var daaText, dbwtText []string
	for seed, a := range base.seeds {
		bb, ok := mg.seeds[seed]
		ma, oka := a.Metrics[eval.CLRank]
		mb, okb := bb.Metrics[eval.CLRank]
		if !ok || !oka || !okb {
			continue
		}
		daa = append(daa, mb.AA-ma.AA)
		daaText = append(daaText, fmt.Sprintf("%d: %+.1f", seed, 100*(mb.AA-ma.AA)))
		if ma.BWT != nil && mb.BWT != nil {
			dbwt = append(dbwt, *mb.BWT-*ma.BWT)
			dbwtText = append(dbwtText, fmt.Sprintf("%d: %+.1f", seed, 100*(*mb.BWT-*ma.BWT)))
		}
	}
	slices.Sort(daaText)
	slices.Sort(dbwtText)
	lr := fmt.Sprintf("%g", base.lr)
	if mg.lr != base.lr {
		lr = fmt.Sprintf("%g / %g", base.lr, mg.lr)
	}
	aaCI, bwtCI := "–", "–"
	if aa, bwt, ok := itemDiffs(base, mg); ok {
		aaCI, bwtCI = taskMeanInterval(aa), taskMeanInterval(bwt)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |", base.method, mg.method, lr, strings.Join(daaText, ", "), meanStd(daa), aaCI,
		strings.Join(dbwtText, ", "), meanStd(dbwt), bwtCI)
}

// writeSelection is the section on the learning rates chosen on the
// validation split, and the methods compared at them.
func writeSelection(b *strings.Builder, choices []lrChoice, valRows int) {
	fmt.Fprintf(b, "\n## Learning rate chosen on the validation split\n\nEvery method ran with each candidate learning rate; the one chosen (✓) has the highest validation AA — rank accuracy after the last task on %d rows per task held out of the training files before the training rows were drawn, never the test rows — averaged over seeds; a tie keeps the earlier candidate. Test scores are reported for every candidate, but only the validation column chose.\n\n", valRows)
	b.WriteString("| method | lr | validation AA | test AA | test BWT | chosen |\n|---|---|---|---|---|---|\n")
	for _, c := range choices {
		for i, r := range c.cands {
			mark := ""
			if i == c.chosen {
				mark = "✓"
			}
			vaa, taa := r.val.AA, r.sum.AA
			bwt := "–"
			if r.sum.BWT != nil {
				bwt = fmt.Sprintf("%.1f", 100*r.sum.BWT.Mean)
			}
			fmt.Fprintf(b, "| %s | %g | %.1f | %.1f | %s | %s |\n", c.method, r.lr, 100*vaa.Mean, 100*taa.Mean, bwt, mark)
		}
	}
	b.WriteString("\n### At the chosen learning rates (test rows)\n\n| method | lr | AA | BWT | forgetting | FWT | seeds |\n|---|---|---|---|---|---|---|\n")
	chosen := map[string]lrRun{}
	for _, c := range choices {
		r := c.cands[c.chosen]
		chosen[c.method] = r
		b.WriteString(r.row() + "\n")
	}
	b.WriteString("\n" + pairHeader)
	for _, c := range choices {
		if mg, ok := chosen[c.method+"+migu"]; ok {
			b.WriteString(pairRow(chosen[c.method], mg) + "\n")
		}
	}
}
