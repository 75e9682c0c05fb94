package testfix

import (
	"image"
	"image/png"
	"os"
	"testing"
)

// DecodePNG decodes the PNG file at path and checks that it is at least
// minWidth × minHeight pixels: a plot, not a thumbnail or an empty file.
func DecodePNG(t testing.TB, path string, minWidth, minHeight int) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < minWidth || b.Dy() < minHeight {
		t.Errorf("%s: only %v", path, b)
	}
	return img
}
