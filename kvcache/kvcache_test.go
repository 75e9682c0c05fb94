package kvcache

import (
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// Build finds a registered builder by architecture, refuses an unknown one
// as bad input, and a second registration of a name panics.
func TestRegistry(t *testing.T) {
	want := &Graphs{Cache: &Cache{Layers: 1}}
	Register("test-arch", func(dir string) (*Graphs, error) { return want, nil })
	got, err := Build("dir", "test-arch")
	if err != nil || got != want {
		t.Fatalf("Build = %v, %v", got, err)
	}
	if _, err := Build("dir", "none"); !badinput.Is(err) {
		t.Fatalf("unknown architecture: got %v, want a bad-input error", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering test-arch twice did not panic")
		}
	}()
	Register("test-arch", nil)
}
