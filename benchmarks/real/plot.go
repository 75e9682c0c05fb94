package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/internal/stats"
)

// okabeIto is a colour-blind-safe palette, one colour per method.
var okabeIto = []color.RGBA{{80, 80, 80, 255}, {0, 114, 178, 255}, {230, 159, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255},
	{86, 180, 233, 255}, {213, 94, 0, 255}}

// errBars is a bar group's tops with ± one standard error.
type errBars struct {
	xs, ys, es []float64
}

func (e errBars) Len() int                        { return len(e.xs) }
func (e errBars) XY(i int) (float64, float64)     { return e.xs[i], e.ys[i] }
func (e errBars) YError(i int) (float64, float64) { return e.es[i], e.es[i] }

// groupedBars draws one group of bars per category and one bar per
// method in each, with ± one standard error; values are scaled by scale.
func groupedBars(path, title, yLabel string, categories, methods []string, val func(m, c string) (score, bool), scale float64) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	w := vg.Points(14)
	for k, m := range methods {
		var vs plotter.Values
		eb := errBars{}
		for i, c := range categories {
			s, ok := val(m, c)
			v, e := s.Value*scale, s.Stderr*scale
			if !ok || v != v {
				v, e = 0, 0
			}
			if e != e {
				e = 0
			}
			vs = append(vs, v)
			eb.xs = append(eb.xs, float64(i))
			eb.ys = append(eb.ys, v)
			eb.es = append(eb.es, e)
		}
		bars, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return err
		}
		off := (float64(k) - float64(len(methods)-1)/2) * float64(w)
		bars.Offset = vg.Length(off)
		col := okabeIto[k%len(okabeIto)]
		bars.Color = col
		bars.LineStyle.Width = 0
		ers, err := plotter.NewYErrorBars(eb)
		if err != nil {
			return err
		}
		p.Add(bars)
		p.Legend.Add(m, bars)
		p.Add(offsetBars{ers, vg.Length(off)})
	}
	p.NominalX(categories...)
	p.Y.Min = 0
	p.Y.Max *= 1.3 // room for the legend above the bars
	width := vg.Length(120+len(categories)*len(methods)*18+len(categories)*30) * vg.Points(1)
	return continual.SavePNG(p, path, max(width, 480), 320)
}

// offsetBars draws error bars moved sideways by dx, onto their bar (a
// bar chart's Offset is in canvas units, not data units).
type offsetBars struct {
	*plotter.YErrorBars
	dx vg.Length
}

func (o offsetBars) Plot(c draw.Canvas, p *plot.Plot) {
	c.Push()
	c.Translate(vg.Point{X: o.dx})
	o.YErrorBars.Plot(c, p)
	c.Pop()
}

// lossCurves draws each training run's loss over its steps (a moving
// mean over window steps, so the trend shows through the noise).
func lossCurves(path, title string, runs []ModelResult, methods []string, window int) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = fmt.Sprintf("training loss (mean of %d steps)", window)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	n := 0
	for _, m := range runs {
		if m.Train == nil || len(m.Train.Loss) == 0 {
			continue
		}
		var xys plotter.XYs
		l := m.Train.Loss
		for i := range l {
			xys = append(xys, plotter.XY{X: float64(i + 1), Y: stats.Mean(l[max(0, i+1-window) : i+1])})
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		// The method's colour in the bar charts; later seeds dashed.
		line.Color = okabeIto[max(0, slices.Index(methods, m.Method))%len(okabeIto)]
		line.Width = vg.Points(1.5)
		if m.Seed != runs[0].Seed {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s seed %d (lr %g)", m.Method, m.Seed, m.Train.LR), line)
		n++
	}
	if n == 0 {
		return nil
	}
	return continual.SavePNG(p, path, 560, 340)
}

// plots draws the report's figures into dir, their names starting with
// prefix, and returns their paths.
func (r *codeReport) plots(dir, prefix string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	general := filepath.Join(dir, prefix+"-general.png")
	cats := []string{"HellaSwag", "ARC-C", "Winogrande", "average"}
	keys := map[string]string{"HellaSwag": "hellaswag", "ARC-C": "arc_challenge", "Winogrande": "winogrande", "average": "average"}
	val := func(m, c string) (score, bool) {
		s, ok := r.scores[m][keys[c]]
		return s, ok
	}
	if err := groupedBars(general, "General ability before and after code tuning (± stderr)", "score (%)", cats, r.methods, val, 100); err != nil {
		return nil, err
	}
	out = append(out, general)
	ppl := filepath.Join(dir, prefix+"-code-ppl.png")
	pval := func(m, _ string) (score, bool) {
		s, ok := r.scores[m]["code_ppl"]
		return s, ok
	}
	if err := groupedBars(ppl, "Held-out code perplexity (lower is better; ± bootstrap stderr)", "perplexity", []string{"held-out code"}, r.methods, pval, 1); err != nil {
		return nil, err
	}
	out = append(out, ppl)
	if _, ok := r.scores["before"]["humaneval"]; ok {
		he := filepath.Join(dir, prefix+"-humaneval.png")
		hval := func(m, _ string) (score, bool) {
			s, ok := r.scores[m]["humaneval"]
			return s, ok
		}
		if err := groupedBars(he, "HumanEval pass@1 (greedy; ± stderr)", "pass@1 (%)", []string{"HumanEval"}, r.methods, hval, 100); err != nil {
			return nil, err
		}
		out = append(out, he)
	}
	var trained []ModelResult
	for _, m := range r.res.Models {
		if m.Train != nil {
			trained = append(trained, m)
		}
	}
	if len(trained) > 0 {
		loss := filepath.Join(dir, prefix+"-loss.png")
		if err := lossCurves(loss, "Training loss on the code records", trained, r.methods, 10); err != nil {
			return nil, err
		}
		out = append(out, loss)
	}
	return out, nil
}
