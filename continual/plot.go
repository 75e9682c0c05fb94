package continual

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// canvas is a white RGBA image with the few drawing operations the plots
// need, in pure Go.
type canvas struct{ img *image.RGBA }

var (
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{160, 160, 160, 255}
	light = color.RGBA{225, 225, 225, 255}
	// palette is a colour-blind-safe qualitative palette (Okabe–Ito) for
	// lines.
	palette = []color.RGBA{{0, 114, 178, 255}, {230, 159, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255},
		{86, 180, 233, 255}, {213, 94, 0, 255}, {240, 228, 66, 255}, {0, 0, 0, 255}}
)

const charW, lineH = 7, 13 // basicfont.Face7x13

func newCanvas(w, h int) *canvas {
	c := &canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	draw.Draw(c.img, c.img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	return c
}

// text draws s with its baseline at y, starting at x.
func (c *canvas) text(x, y int, s string, col color.Color) {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// centered draws s centred on x.
func (c *canvas) centered(x, y int, s string, col color.Color) {
	c.text(x-len([]rune(s))*charW/2, y, s, col)
}

func (c *canvas) fill(r image.Rectangle, col color.Color) {
	draw.Draw(c.img, r, image.NewUniform(col), image.Point{}, draw.Src)
}

// line draws a line of width w (pixels); dash > 0 draws dashes of that
// length.
func (c *canvas) line(x0, y0, x1, y1 float64, col color.Color, w, dash int) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		if dash > 0 && (i/dash)%2 == 1 {
			continue
		}
		t := float64(i) / float64(n)
		x, y := int(math.Round(x0+t*(x1-x0))), int(math.Round(y0+t*(y1-y0)))
		c.fill(image.Rect(x-w/2, y-w/2, x-w/2+w, y-w/2+w), col)
	}
}

// save writes the PNG atomically.
func (c *canvas) save(path string) error {
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
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

// shorten cuts a label to n characters, marking the cut with a full stop
// (basicfont has ASCII glyphs only).
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "."
}

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
	const cw, ch, left, top = 72, 30, 80, 60
	w := left + cw*len(tasks) + 20
	h := top + ch*len(rows) + 50
	const footer = "columns: accuracy on each task (%); rows: after training task i"
	c := newCanvas(max(w, len(title)*charW+20, len(footer)*charW+left+24), h)
	c.text(10, 20, title, black)
	for j, t := range tasks {
		c.centered(left+j*cw+cw/2, top-8, shorten(t, 10), black)
	}
	c.text(left, h-20, footer, grey)
	for i, row := range rows {
		c.text(8, top+i*ch+ch/2+4, labels[i], black)
		for j, v := range row {
			r := image.Rect(left+j*cw, top+i*ch, left+(j+1)*cw-1, top+(i+1)*ch-1)
			col := heat(v)
			c.fill(r, col)
			txt := color.Color(color.White)
			if v > 0.6 {
				txt = black
			}
			c.centered(left+j*cw+cw/2, top+i*ch+ch/2+4, pct(v), txt)
		}
	}
	return c.save(path)
}

// series is one line of a line plot.
type series struct {
	name   string
	values []float64 // NaN: no point
}

// linesPNG draws lines over categorical x positions, y in [0, 1]; ref > 0
// adds a dashed horizontal line labelled refName.
func linesPNG(path, title, yLabel string, xs []string, ss []series, ref float64, refName string) error {
	const left, right, top, bottom = 60, 170, 40, 60
	pw := max(60*len(xs), 360)
	ph := 260
	c := newCanvas(left+pw+right, top+ph+bottom)
	c.text(10, 20, title, black)
	x := func(i int) float64 {
		if len(xs) == 1 {
			return float64(left + pw/2)
		}
		return float64(left) + float64(i)*float64(pw)/float64(len(xs)-1)
	}
	y := func(v float64) float64 { return float64(top) + (1-v)*float64(ph) }
	for k := 0; k <= 4; k++ {
		v := float64(k) / 4
		c.line(float64(left), y(v), float64(left+pw), y(v), light, 1, 0)
		c.text(left-36, int(y(v))+4, fmt.Sprintf("%3.0f%%", 100*v), black)
	}
	c.line(float64(left), float64(top), float64(left), float64(top+ph), black, 1, 0)
	c.line(float64(left), float64(top+ph), float64(left+pw), float64(top+ph), black, 1, 0)
	for i, s := range xs {
		c.centered(int(x(i)), top+ph+16, shorten(s, 9), black)
	}
	c.text(left, top+ph+40, yLabel, grey)
	if ref > 0 {
		c.line(float64(left), y(ref), float64(left+pw), y(ref), grey, 1, 6)
		c.text(left+pw+10, int(y(ref))+4, refName, grey)
	}
	for k, s := range ss {
		col := palette[k%len(palette)]
		for i := range s.values {
			if math.IsNaN(s.values[i]) {
				continue
			}
			if i+1 < len(s.values) && !math.IsNaN(s.values[i+1]) {
				c.line(x(i), y(s.values[i]), x(i+1), y(s.values[i+1]), col, 2, 0)
			}
			c.fill(image.Rect(int(x(i))-3, int(y(s.values[i]))-3, int(x(i))+4, int(y(s.values[i]))+4), col)
		}
		ly := top + 10 + k*(lineH+4)
		c.fill(image.Rect(left+pw+10, ly-6, left+pw+24, ly), col)
		c.text(left+pw+30, ly, shorten(s.name, 19), black)
	}
	return c.save(path)
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
