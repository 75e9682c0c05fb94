package continual

import (
	"image"
	"image/color"
	"math"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/testfix"
)

// decodePNG decodes a plot of at least 200 × 120 pixels.
func decodePNG(t *testing.T, path string) image.Image {
	return testfix.DecodePNG(t, path, 200, 120)
}

// has reports whether img contains a pixel of colour c (give or take
// antialiasing, tol per channel).
func has(img image.Image, c color.RGBA, tol int) bool {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			if abs(int(r>>8)-int(c.R)) <= tol && abs(int(g>>8)-int(c.G)) <= tol && abs(int(bb>>8)-int(c.B)) <= tol {
				return true
			}
		}
	}
	return false
}

func abs(x int) int { return max(x, -x) }

// TestPlots draws each kind of figure and checks that the file is a PNG
// showing what it should: the heat map's cells in the colours of their
// accuracies, the line plot's series in their palette colours.
func TestPlots(t *testing.T) {
	dir := t.TempDir()
	hm := filepath.Join(dir, "matrix.png")
	m := Matrix{Base: []float64{0, 0.5}, R: [][]float64{{1, 0.5}, {1, 0}}}
	if err := heatmapPNG(hm, "full: accuracy matrix", []string{"dbpedia", "amazon"}, m); err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, hm)
	for _, v := range []float64{0, 1} {
		if !has(img, heat(v), 2) {
			t.Errorf("heat map lacks the colour of %.0f%% %v", 100*v, heat(v))
		}
	}
	if has(img, heat(0.25), 2) {
		t.Error("heat map has the colour of 25%, which no cell holds")
	}
	lines := filepath.Join(dir, "curves.png")
	ss := []series{{name: "a", values: []float64{0.2, 0.8, math.NaN()}}, {name: "b", values: []float64{0.5, 0.4, 0.9}}}
	if err := linesPNG(lines, "curves", "stage", []string{"start", "after 1", "after 2"}, ss, 0.3, "chance"); err != nil {
		t.Fatal(err)
	}
	img = decodePNG(t, lines)
	for k := range ss {
		if !has(img, palette[k], 8) {
			t.Errorf("line plot lacks series %d's colour %v", k, palette[k])
		}
	}
	if has(img, palette[2], 8) {
		t.Error("line plot has a third series' colour")
	}
	if err := heatmapPNG(filepath.Join(dir, "empty.png"), "empty", nil, Matrix{}); err == nil {
		t.Error("an empty matrix drew a heat map")
	}
}
