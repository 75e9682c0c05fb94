package continual

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/migu-ml/migu/internal/atomicfile"
)

// The figures are drawn with gonum/plot and written as PNG.

var (
	grey = color.RGBA{120, 120, 120, 255}
	// palette is a colour-blind-safe qualitative palette (Okabe–Ito) for
	// lines.
	palette = []color.RGBA{{0, 114, 178, 255}, {230, 159, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255},
		{86, 180, 233, 255}, {213, 94, 0, 255}, {240, 228, 66, 255}, {0, 0, 0, 255}}
)

// SavePNG renders p at w × h and writes the PNG atomically.
func SavePNG(p *plot.Plot, path string, w, h vg.Length) error {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, buf.Bytes())
}

// heat maps v in [0, 1] to a colour from dark blue through teal to yellow
// (viridis-like stops), readable in grey scale.
func heat(v float64) color.RGBA {
	stops := []color.RGBA{{68, 1, 84, 255}, {59, 82, 139, 255}, {33, 145, 140, 255}, {94, 201, 98, 255}, {253, 231, 37, 255}}
	v = math.Min(math.Max(v, 0), 1) * float64(len(stops)-1)
	i := min(int(v), len(stops)-2)
	f := v - float64(i)
	mix := func(a, b uint8) uint8 { return uint8(math.Round(float64(a) + f*(float64(b)-float64(a)))) }
	a, b := stops[i], stops[i+1]
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 255}
}

// heatPalette is heat sampled at 256 levels, the heat map's palette.
type heatPalette struct{}

func (heatPalette) Colors() []color.Color {
	out := make([]color.Color, 256)
	for i := range out {
		out[i] = heat(float64(i) / 255)
	}
	return out
}

// shorten cuts a label to n characters, marking the cut with a full stop.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "."
}

// grid is an accuracy matrix as gonum's GridXYZ: column c is task c, and
// row r counts from the bottom, so the first row of the matrix is drawn
// at the top.
type grid struct{ rows [][]float64 }

func (g grid) Dims() (c, r int)   { return len(g.rows[0]), len(g.rows) }
func (g grid) Z(c, r int) float64 { return g.rows[len(g.rows)-1-r][c] }
func (g grid) X(c int) float64    { return float64(c) }
func (g grid) Y(r int) float64    { return float64(r) }

// heatmapPNG draws an accuracy matrix: rows start, after 1…T; columns the
// tasks; each cell coloured by accuracy and labelled in percent.
func heatmapPNG(path, title string, tasks []string, m Matrix) error {
	rows := [][]float64{}
	labels := []string{}
	if len(m.Base) > 0 {
		rows = append(rows, m.Base)
		labels = append(labels, "start")
	}
	for i, r := range m.R {
		rows = append(rows, r)
		labels = append(labels, fmt.Sprintf("after %d", i+1))
	}
	if len(rows) == 0 || len(tasks) == 0 {
		return fmt.Errorf("heat map %s: empty matrix", path)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "accuracy on each task (%); rows: after training task i"
	hm := plotter.NewHeatMap(grid{rows}, heatPalette{})
	hm.Min, hm.Max = 0, 1
	hm.NaN = color.White
	p.Add(hm)
	var xys plotter.XYs
	var texts []string
	for i, row := range rows {
		for j, v := range row {
			xys = append(xys, plotter.XY{X: float64(j), Y: float64(len(rows) - 1 - i)})
			texts = append(texts, pct(v))
		}
	}
	lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
	if err != nil {
		return err
	}
	k := 0
	for _, row := range rows {
		for _, v := range row {
			// Dark cells get white text, light ones black.
			if v <= 0.6 {
				lab.TextStyle[k].Color = color.White
			}
			lab.TextStyle[k].XAlign, lab.TextStyle[k].YAlign = draw.XCenter, draw.YCenter
			k++
		}
	}
	p.Add(lab)
	names := make([]string, len(tasks))
	for j, t := range tasks {
		names[j] = shorten(t, 12)
	}
	p.NominalX(names...)
	rev := make([]string, len(labels))
	for i, l := range labels {
		rev[len(labels)-1-i] = l
	}
	p.NominalY(rev...)
	w := vg.Length(max(110+80*len(tasks), 360)) * vg.Points(1)
	h := vg.Length(110+34*len(rows)) * vg.Points(1)
	return SavePNG(p, path, w, h)
}

// series is one line of a line plot.
type series struct {
	name   string
	values []float64 // NaN: no point
}

// linesPNG draws lines over categorical x positions, y in [0, 1]; ref > 0
// adds a dashed horizontal line labelled refName.
func linesPNG(path, title, xLabel string, xs []string, ss []series, ref float64, refName string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Min, p.Y.Max = 0, 1
	p.Y.Tick.Marker = percentTicks{}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.XOffs = 0
	if ref > 0 {
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: ref}, {X: float64(max(len(xs)-1, 1)), Y: ref}})
		if err != nil {
			return err
		}
		l.Color = grey
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
		p.Add(l)
		p.Legend.Add(refName, l)
	}
	for k, s := range ss {
		col := palette[k%len(palette)]
		var pts plotter.XYs
		var seg plotter.XYs
		var lines []*plotter.Line
		flush := func() error {
			if len(seg) > 1 {
				l, err := plotter.NewLine(seg)
				if err != nil {
					return err
				}
				l.Color, l.Width = col, vg.Points(1.5)
				lines = append(lines, l)
			}
			seg = nil
			return nil
		}
		for i, v := range s.values {
			if math.IsNaN(v) {
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			pts = append(pts, plotter.XY{X: float64(i), Y: v})
			seg = append(seg, plotter.XY{X: float64(i), Y: v})
		}
		if err := flush(); err != nil {
			return err
		}
		if len(pts) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.Color, sc.Shape = col, draw.CircleGlyph{}
		for _, l := range lines {
			p.Add(l)
		}
		p.Add(sc)
		p.Legend.Add(shorten(s.name, 24), sc)
	}
	names := make([]string, len(xs))
	for i, x := range xs {
		names[i] = shorten(x, 10)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.3, float64(len(xs)-1)+0.3
	// Wide enough for the stage names, but a 30-layer model's overlap
	// plot stays a readable page width.
	w := vg.Length(min(max(70*len(xs)+200, 480), 1000)) * vg.Points(1)
	return SavePNG(p, path, w, 320)
}

// percentTicks labels [0, 1] in steps of 25%.
type percentTicks struct{}

func (percentTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for k := 0; k <= 4; k++ {
		v := float64(k) / 4
		out = append(out, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f%%", 100*v)})
	}
	return out
}

// fileSafe turns a method name into part of a file name.
func fileSafe(s string) string {
	return strings.NewReplacer("+", "-", "/", "-", " ", "-").Replace(s)
}

// plot draws every figure of the report into dir and returns the paths.
func (rep *Report) plot(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, sum := range rep.Summary {
		name := fileSafe(sum.Method) + "-" + sum.Score
		p := filepath.Join(dir, "matrix-"+name+".png")
		if err := heatmapPNG(p, fmt.Sprintf("%s: accuracy matrix (%s, mean of %d seed(s))", sum.Method, sum.Score, sum.AA.N), rep.Tasks, sum.Mean); err != nil {
			return nil, err
		}
		paths = append(paths, p)
		xs := []string{}
		if len(sum.Mean.Base) > 0 {
			xs = append(xs, "start")
		}
		for i := range sum.Mean.R {
			xs = append(xs, fmt.Sprintf("after %d", i+1))
		}
		var ss []series
		for j, t := range rep.Tasks {
			s := series{name: t}
			if len(sum.Mean.Base) > 0 {
				s.values = append(s.values, sum.Mean.Base[j])
			}
			for _, row := range sum.Mean.R {
				s.values = append(s.values, row[j])
			}
			ss = append(ss, s)
		}
		p = filepath.Join(dir, "curves-"+name+".png")
		if err := linesPNG(p, fmt.Sprintf("%s: each task's accuracy over the sequence (%s)", sum.Method, sum.Score), "accuracy after each training stage", xs, ss, 0, ""); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	// Mask overlap: consecutive task pairs per layer, mean over seeds.
	done := map[string]bool{}
	for _, rr := range rep.Runs {
		if rr.Overlap == nil || done[rr.Method] {
			continue
		}
		done[rr.Method] = true
		var ovs []*Overlap
		for _, o := range rep.Runs {
			if o.Method == rr.Method && o.Overlap != nil {
				ovs = append(ovs, o.Overlap)
			}
		}
		first := ovs[0]
		var ss []series
		for k := range first.Consecutive {
			s := series{name: fmt.Sprintf("%s->%s", shorten(rep.Tasks[k], 8), shorten(rep.Tasks[k+1], 8)), values: make([]float64, len(first.Layers))}
			for l := range first.Layers {
				for _, o := range ovs {
					s.values[l] += o.Consecutive[k][l] / float64(len(ovs))
				}
			}
			ss = append(ss, s)
		}
		if len(ss) == 0 {
			continue
		}
		p := filepath.Join(dir, "overlap-"+fileSafe(rr.Method)+".png")
		if err := linesPNG(p, fmt.Sprintf("%s: MIGU's updated positions shared by consecutive tasks (T = %g)", rr.Method, first.T),
			"layer (transformer block)", first.Layers, ss, first.Chance, "chance"); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}
