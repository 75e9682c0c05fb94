package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoBadInput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "demo")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--out", out, "--migu", "1.5"}, "T must be in [0, 1)"},
		{[]string{"demo", "--out", out, "--methods", "full,sgd"}, `unknown method "sgd"`},
		{[]string{"demo", "--out", out, "extra"}, "accepts 0 arg"},
	} {
		status, _, stderr := runCLI(t, tc.args...)
		if status != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, status, stderr, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused demo created its folder")
	}
}
