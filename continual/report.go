package continual

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/eval"
	"github.com/migu-ml/migu/finetune"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/train"
)

// Output files of a run folder.
const (
	ResultsFile = "results.json"
	ReportFile  = "report.md"
	PlotsDir    = "plots"
)

// ValidationPrefix names the scores of the validation split
// (Sequence.ValSamples): "validation-rank" is rank accuracy on rows held
// out of the training files, the score hyperparameters are chosen on.
const ValidationPrefix = "validation-"

// Report is the outcome of Run, written as results.json.
type Report struct {
	Sequence string    `json:"sequence"`
	Source   string    `json:"source"`
	Tasks    []string  `json:"tasks"`
	Skipped  []Skipped `json:"skipped,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`
	// Scores are the scoring modes of the matrices (rank, generate).
	Scores []string     `json:"scores"`
	Config ReportConfig `json:"config"`
	Runs   []RunReport  `json:"runs"`
	// Summary has one row per method and score: metrics over seeds.
	Summary []Summary `json:"summary"`
	// Stopped is set when the run was interrupted; nothing is written then.
	Stopped bool `json:"stopped,omitempty"`
	// Out, ResultsPath, ReportPath and Plots say where the files are.
	Out         string   `json:"-"`
	ResultsPath string   `json:"-"`
	ReportPath  string   `json:"-"`
	Plots       []string `json:"plots"`
}

// ReportConfig is the configuration a report was made with.
type ReportConfig struct {
	Model        string              `json:"model"`
	Methods      []string            `json:"methods"`
	Seeds        []uint64            `json:"seeds"`
	TrainSamples int                 `json:"train_samples"`
	TestSamples  int                 `json:"test_samples"`
	ValSamples   int                 `json:"val_samples,omitempty"`
	SampleSeed   uint64              `json:"sample_seed"`
	Job          finetune.JobOptions `json:"job"`
	MaxSteps     int64               `json:"max_steps,omitempty"`
	// OverlapDefinition says how the mask overlap is computed.
	OverlapDefinition string `json:"overlap_definition,omitempty"`
}

// RunReport is one method and seed.
type RunReport struct {
	Method   string             `json:"method"`
	Seed     uint64             `json:"seed"`
	Tasks    []TaskReport       `json:"tasks"`
	Matrices map[string]Matrix  `json:"matrices"` // score → matrix
	Metrics  map[string]Metrics `json:"metrics"`  // score → metrics
	Overlap  *Overlap           `json:"mask_overlap,omitempty"`
}

// TaskReport is one trained task of a run.
type TaskReport struct {
	Task      string  `json:"task"`
	Steps     int64   `json:"steps"`
	Resumed   int64   `json:"resumed_from,omitempty"`
	FirstLoss float64 `json:"first_loss"`
	LastLoss  float64 `json:"last_loss"`
	Seconds   float64 `json:"train_seconds"`
	// Trained is set when this invocation trained the task (false: done
	// by an earlier, interrupted invocation).
	Trained bool `json:"trained_now"`
}

// Summary is one method under one score, over seeds.
type Summary struct {
	Method     string `json:"method"`
	Score      string `json:"score"`
	AA         Stat   `json:"aa"`
	BWT        *Stat  `json:"bwt,omitempty"`
	Forgetting *Stat  `json:"forgetting,omitempty"`
	FWT        *Stat  `json:"fwt,omitempty"`
	// Mean is the accuracy matrix averaged over seeds.
	Mean Matrix `json:"mean_matrix"`
}

// Overlap is MIGU's mask overlap between the tasks of one run.
type Overlap struct {
	T float64 `json:"t"`
	// Chance is the overlap two random selections of the same size have
	// on average (≈ 1 − T).
	Chance float64 `json:"chance"`
	// Layers name the groups of linears (transformer blocks, head).
	Layers []string `json:"layers"`
	// Consecutive[k][l] is the overlap of tasks k and k+1 in layer l.
	Consecutive [][]float64 `json:"consecutive"`
	// Pairs[i][j] is the overlap of tasks i and j over all layers.
	Pairs [][]float64 `json:"pairs"`
}

// OverlapDefinition documents Overlap.
const OverlapDefinition = "For each task, MIGU's magnitudes n_j (Σ|y_j| over tokens) of every linear layer are summed over the task's steps; " +
	"the task's updated positions in a layer are the ⌈(1−T)·d_out⌉ output features with the largest sum (the features MIGU at threshold T " +
	"selects for the task as a whole). The overlap of two tasks in a layer group is the number of positions both select over the number " +
	"one selects, summed over the group's linears. Two random selections overlap by about 1−T (chance)."

// report builds the report from the state.
func (r *runner) report(stopped bool) (*Report, error) {
	rep := &Report{Sequence: r.seq.Name, Source: r.seq.Source, Skipped: r.seq.Skipped, Warnings: r.warnings,
		Scores: r.scores, Stopped: stopped, Out: r.o.Out,
		ResultsPath: filepath.Join(r.o.Out, ResultsFile), ReportPath: filepath.Join(r.o.Out, ReportFile)}
	for _, t := range r.tasks {
		rep.Tasks = append(rep.Tasks, t.Name)
	}
	job := r.o.Job
	job.Progress, job.MaskRecord = nil, nil
	rep.Config = ReportConfig{Model: r.o.Model, Seeds: r.o.Seeds, TrainSamples: r.seq.TrainSamples, TestSamples: r.seq.TestSamples,
		ValSamples: r.seq.ValSamples, SampleSeed: r.seq.SampleSeed, Job: job, MaxSteps: r.o.Job.MaxSteps}
	for _, m := range r.o.Methods {
		rep.Config.Methods = append(rep.Config.Methods, m.Name)
		if m.MIGU {
			rep.Config.OverlapDefinition = OverlapDefinition
		}
	}
	T := len(r.tasks)
	for _, m := range r.o.Methods {
		for _, seed := range r.o.Seeds {
			rs := r.st.Runs[runKey(m, seed)]
			if rs == nil {
				continue
			}
			rr := RunReport{Method: m.Name, Seed: seed, Matrices: map[string]Matrix{}, Metrics: map[string]Metrics{}}
			for _, ts := range rs.Tasks {
				rr.Tasks = append(rr.Tasks, TaskReport{Task: ts.Task, Steps: ts.Steps, Resumed: ts.Resumed, FirstLoss: ts.FirstLoss,
					LastLoss: ts.LastLoss, Seconds: ts.Seconds, Trained: ts.Trained})
			}
			for _, s := range r.scores {
				mat := Matrix{Base: r.st.Base[s], BaseItems: r.st.BaseItems[s]}
				for _, ts := range rs.Tasks {
					mat.R = append(mat.R, ts.Eval[s])
					mat.RItems = append(mat.RItems, ts.Items[s])
				}
				if mat.BaseItems == nil || slices.ContainsFunc(mat.RItems, func(v []string) bool { return v == nil }) { // recorded before items were
					mat.BaseItems, mat.RItems = nil, nil
				}
				rr.Matrices[s] = mat
				if len(rs.Tasks) == T {
					rr.Metrics[s] = mat.Compute()
				}
			}
			if m.MIGU && len(rs.Tasks) == T {
				ov, err := r.overlap(m, seed)
				if err != nil {
					return nil, err
				}
				rr.Overlap = ov
			}
			rep.Runs = append(rep.Runs, rr)
		}
	}
	if !stopped {
		rep.Summary = summarize(rep.Runs, r.o.Methods, r.scores)
	}
	rep.Warnings = append(rep.Warnings, r.truncationWarnings()...)
	return rep, nil
}

// truncationWarnings names the tasks whose training examples were cut to
// the maximum length (the sentence is cut first, so a model may not see
// what it must classify).
func (r *runner) truncationWarnings() []string {
	var out []string
	for i, t := range r.tasks {
		cut, n := 0, 0
		for _, rs := range r.st.Runs {
			if i < len(rs.Tasks) && rs.Tasks[i].Truncated > cut {
				cut, n = rs.Tasks[i].Truncated, rs.Tasks[i].Examples
			}
		}
		if cut > 0 {
			out = append(out, fmt.Sprintf("task %s: %d of %d training examples were cut to the maximum length, the sentence first; raise the max_len setting", t.Name, cut, n))
		}
	}
	return out
}

// summarize averages each method's metrics over its seeds.
func summarize(runs []RunReport, methods []Method, scores []string) []Summary {
	var out []Summary
	for _, s := range scores {
		for _, m := range methods {
			var aa, bwt, fg, fwt []float64
			var mats []Matrix
			for _, rr := range runs {
				met, ok := rr.Metrics[s]
				if rr.Method != m.Name || !ok {
					continue
				}
				mats = append(mats, rr.Matrices[s])
				aa = append(aa, met.AA)
				if met.BWT != nil {
					bwt = append(bwt, *met.BWT)
					fg = append(fg, *met.Forgetting)
				}
				if met.FWT != nil {
					fwt = append(fwt, *met.FWT)
				}
			}
			if len(aa) == 0 {
				continue
			}
			sum := Summary{Method: m.Name, Score: s, AA: statOf(aa), Mean: meanMatrix(mats)}
			if len(bwt) > 0 {
				b, f := statOf(bwt), statOf(fg)
				sum.BWT, sum.Forgetting = &b, &f
			}
			if len(fwt) > 0 {
				f := statOf(fwt)
				sum.FWT = &f
			}
			out = append(out, sum)
		}
	}
	return out
}

// overlap reads the mask records of a MIGU run's tasks.
func (r *runner) overlap(m Method, seed uint64) (*Overlap, error) {
	dir := filepath.Join(r.runDir(m, seed), "masks")
	recs := make([]*train.MaskRecord, len(r.tasks))
	for i, t := range r.tasks {
		rec, err := train.LoadMaskRecord(filepath.Join(dir, taskDir(i, t.Task)+".json"))
		if err != nil {
			if os.IsNotExist(err) {
				return nil, nil // recorded by no step (e.g. a task of zero steps)
			}
			return nil, err
		}
		recs[i] = rec
	}
	return computeOverlap(recs, r.man, r.o.Job.Train.T), nil
}

// layerOf groups a linear by transformer block (and stack, for T5).
func layerOf(l modeldir.Linear) string {
	if l.Block < 0 {
		return string(l.Role)
	}
	if l.Stack != "" {
		return l.Stack[:3] + " " + strconv.Itoa(l.Block)
	}
	return strconv.Itoa(l.Block)
}

// computeOverlap compares the tasks' selected features per layer group.
func computeOverlap(recs []*train.MaskRecord, man *modeldir.Manifest, T float64) *Overlap {
	ov := &Overlap{T: T}
	type group struct{ taps []string }
	index := map[string]int{}
	var groups []group
	var chanceNum, chanceDen float64
	for _, l := range man.Linears {
		if _, ok := recs[0].Magnitudes[l.Name]; !ok {
			continue // not tapped (LoRA leaves it alone)
		}
		name := layerOf(l)
		k, ok := index[name]
		if !ok {
			k = len(groups)
			index[name] = k
			groups = append(groups, group{})
			ov.Layers = append(ov.Layers, name)
		}
		groups[k].taps = append(groups[k].taps, l.Name)
		d := int(l.DOut)
		chanceNum += float64(train.TopCount(d, T)) * float64(train.TopCount(d, T)) / float64(d)
		chanceDen += float64(train.TopCount(d, T))
	}
	if chanceDen > 0 {
		ov.Chance = chanceNum / chanceDen
	}
	sel := make([]map[string][]bool, len(recs))
	for i, rec := range recs {
		sel[i] = map[string][]bool{}
		for _, g := range groups {
			for _, tap := range g.taps {
				sel[i][tap] = rec.Top(tap, T)
			}
		}
	}
	inter := func(i, j int, taps []string) float64 {
		var both, n int
		for _, tap := range taps {
			a, b := sel[i][tap], sel[j][tap]
			for f, x := range a {
				if x {
					n++
					if f < len(b) && b[f] {
						both++
					}
				}
			}
		}
		if n == 0 {
			return 0
		}
		return float64(both) / float64(n)
	}
	var all []string
	for _, g := range groups {
		all = append(all, g.taps...)
	}
	ov.Pairs = make([][]float64, len(recs))
	for i := range recs {
		ov.Pairs[i] = make([]float64, len(recs))
		for j := range recs {
			ov.Pairs[i][j] = inter(i, j, all)
		}
	}
	for k := 0; k+1 < len(recs); k++ {
		row := make([]float64, len(groups))
		for l, g := range groups {
			row[l] = inter(k, k+1, g.taps)
		}
		ov.Consecutive = append(ov.Consecutive, row)
	}
	return ov
}

// write puts results.json, report.md and the plots into the run folder.
func (rep *Report) write() error {
	plots, err := rep.plot(filepath.Join(rep.Out, PlotsDir))
	if err != nil {
		return err
	}
	rep.Plots = plots
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(rep.ResultsPath, append(raw, '\n')); err != nil {
		return err
	}
	return atomicfile.WriteFile(rep.ReportPath, []byte(rep.Markdown()))
}

// pct formats an accuracy as a percentage.
func pct(v float64) string { return strconv.FormatFloat(100*v, 'f', 1, 64) }

func statText(s *Stat) string {
	if s == nil {
		return "–"
	}
	if s.N > 1 {
		return fmt.Sprintf("%s ± %s", pct(s.Mean), pct(s.Std))
	}
	return pct(s.Mean)
}

// ComparisonTable is the methods side by side (one table per score), in
// Markdown: AA, BWT, forgetting and FWT in percent, mean ± std over seeds.
func (rep *Report) ComparisonTable() string {
	var b strings.Builder
	for _, s := range rep.Scores {
		fmt.Fprintf(&b, "Score: %s (%s)\n\n", s, scoreDescription(s))
		b.WriteString("| method | AA | BWT | forgetting | FWT | seeds |\n|---|---|---|---|---|---|\n")
		for _, sum := range rep.Summary {
			if sum.Score == s {
				b.WriteString(sum.Row() + "\n")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Row is the summary as a Markdown table row: method, AA, BWT, forgetting
// and FWT in percent (mean ± std over seeds), and the number of seeds.
func (sum Summary) Row() string {
	aa := sum.AA
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %d |", sum.Method, statText(&aa), statText(sum.BWT), statText(sum.Forgetting), statText(sum.FWT), sum.AA.N)
}

func scoreDescription(s string) string {
	base, val := strings.CutPrefix(s, ValidationPrefix)
	d := "rank classification: the label with the highest log-likelihood"
	if base == eval.CLGenerate {
		d = "exact match of the greedily generated label"
	}
	if val {
		d += ", on the validation rows held out of the training files"
	}
	return d
}

// Markdown is report.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Continual learning: %s\n\n", rep.Sequence)
	fmt.Fprintf(&b, "Sequence %s (%s): %s.\n\n", rep.Sequence, rep.Source, strings.Join(rep.Tasks, " → "))
	fmt.Fprintf(&b, "Model `%s`; methods %s; seeds %v; training rows per task %s, test rows %s", rep.Config.Model,
		strings.Join(rep.Config.Methods, ", "), rep.Config.Seeds, countText(rep.Config.TrainSamples), countText(rep.Config.TestSamples))
	if n := rep.Config.ValSamples; n > 0 {
		fmt.Fprintf(&b, "; %d rows per task held out of the training file before drawing the training rows, as a validation split (scores %s…)", n, ValidationPrefix)
	}
	b.WriteString(".\n\n")
	for _, s := range rep.Skipped {
		fmt.Fprintf(&b, "- Skipped task %s: %s.\n", s.Task, s.Reason)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(&b, "- Warning: %s.\n", w)
	}
	if len(rep.Skipped)+len(rep.Warnings) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("## Comparison\n\nAA: average accuracy after the last task; BWT: backward transfer; forgetting: mean drop from each task's best earlier accuracy; FWT: forward transfer over the starting model. Percent, mean ± sample std over seeds.\n\n")
	b.WriteString(rep.ComparisonTable())
	b.WriteString("## Accuracy matrices (mean over seeds)\n\nRow *after i*: accuracy on each task (columns) after training tasks 1…i; row *start*: the model before training.\n\n")
	for _, sum := range rep.Summary {
		fmt.Fprintf(&b, "### %s, %s\n\n| after | %s |\n|---|%s\n", sum.Method, sum.Score, strings.Join(rep.Tasks, " | "), strings.Repeat("---|", len(rep.Tasks)))
		if len(sum.Mean.Base) > 0 {
			fmt.Fprintf(&b, "| start | %s |\n", joinPct(sum.Mean.Base))
		}
		for i, row := range sum.Mean.R {
			fmt.Fprintf(&b, "| %d %s | %s |\n", i+1, rep.Tasks[i], joinPct(row))
		}
		b.WriteString("\n")
	}
	b.WriteString("## Training\n\n| method | seed | task | steps | loss first → last | seconds |\n|---|---|---|---|---|---|\n")
	for _, rr := range rep.Runs {
		for _, t := range rr.Tasks {
			fmt.Fprintf(&b, "| %s | %d | %s | %d | %.4f → %.4f | %.1f |\n", rr.Method, rr.Seed, t.Task, t.Steps, t.FirstLoss, t.LastLoss, t.Seconds)
		}
	}
	b.WriteString("\n")
	var ov []RunReport
	for _, rr := range rep.Runs {
		if rr.Overlap != nil {
			ov = append(ov, rr)
		}
	}
	if len(ov) > 0 {
		b.WriteString("## MIGU mask overlap between tasks\n\n" + OverlapDefinition + "\n\n")
		for _, rr := range ov {
			o := rr.Overlap
			fmt.Fprintf(&b, "### %s, seed %d (T = %g, chance %.2f)\n\n| tasks | %s |\n|---|%s\n", rr.Method, rr.Seed, o.T, o.Chance,
				strings.Join(o.Layers, " | "), strings.Repeat("---|", len(o.Layers)))
			for k, row := range o.Consecutive {
				fmt.Fprintf(&b, "| %s → %s | %s |\n", rep.Tasks[k], rep.Tasks[k+1], joinFixed(row))
			}
			b.WriteString("\n")
		}
	}
	if len(rep.Plots) > 0 {
		b.WriteString("## Plots\n\n")
		for _, p := range rep.Plots {
			rel, err := filepath.Rel(rep.Out, p)
			if err != nil {
				rel = p
			}
			fmt.Fprintf(&b, "![%s](%s)\n\n", filepath.Base(p), filepath.ToSlash(rel))
		}
	}
	return b.String()
}

func countText(n int) string {
	if n <= 0 {
		return "all"
	}
	return strconv.Itoa(n)
}

func joinPct(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = pct(x)
	}
	return strings.Join(s, " | ")
}

func joinFixed(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(s, " | ")
}
