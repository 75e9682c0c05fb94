package identity

import (
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// Equal parts give equal identities; a changed or regrouped part changes
// it; a part JSON cannot encode is bad input.
func TestOf(t *testing.T) {
	a, err1 := Of(map[string]int{"r": 8}, 32)
	b, err2 := Of(map[string]int{"r": 8}, 32)
	c, err3 := Of(map[string]int{"r": 16}, 32)
	d, err4 := Of(map[string]int{"r": 8}, "32")
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		t.Fatal(err1, err2, err3, err4)
	}
	if a != b || a == c || a == d || len(a) != 64 {
		t.Fatalf("identities %s %s %s %s", a, b, c, d)
	}
	if _, err := Of(make(chan int)); !badinput.Is(err) {
		t.Fatalf("a channel: got %v, want bad input", err)
	}
}
