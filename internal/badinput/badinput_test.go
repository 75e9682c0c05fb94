package badinput

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func flag(s Setting) string { return "--" + string(s) + "-flag" }

func TestRename(t *testing.T) {
	inner := Range("epochs", -1, "≥ 1")
	cases := []struct {
		name      string
		err       error
		plain     string
		renamed   string
		settings  []Setting
		wantInput bool
	}{
		{"range", inner, "epochs -1 is outside its range: ≥ 1", "--epochs-flag -1 is outside its range: ≥ 1", []Setting{"epochs"}, true},
		{"two settings", Errorf("%s holds a run; pass %v, or choose another %v", "dir", Setting("resume"), Setting("out")),
			"dir holds a run; pass resume, or choose another out", "dir holds a run; pass --resume-flag, or choose another --out-flag", []Setting{"resume", "out"}, true},
		{"no setting", Errorf("bad line %d", 3), "bad line 3", "bad line 3", nil, true},
		{"setting as a plain string is not renamed", Errorf("%s is off", "epochs"), "epochs is off", "epochs is off", nil, true},
		{"wrapped by fmt", fmt.Errorf("job: %w", inner), "job: epochs -1 is outside its range: ≥ 1", "job: --epochs-flag -1 is outside its range: ≥ 1", []Setting{"epochs"}, true},
		{"nested bad input", Errorf("%v: %w", Setting("model"), inner), "model: epochs -1 is outside its range: ≥ 1",
			"--model-flag: --epochs-flag -1 is outside its range: ≥ 1", []Setting{"model", "epochs"}, true},
		{"bad input given as an argument", Errorf("%v %s: %v", Setting("model"), "m", Range("lr", -2.0, "≥ 0")), "model m: lr -2 is outside its range: ≥ 0",
			"--model-flag m: --lr-flag -2 is outside its range: ≥ 0", []Setting{"model", "lr"}, true},
		{"joined", errors.Join(inner, Range("lr", -2.0, "≥ 0")), "epochs -1 is outside its range: ≥ 1\nlr -2 is outside its range: ≥ 0",
			"--epochs-flag -1 is outside its range: ≥ 1\n--lr-flag -2 is outside its range: ≥ 0", []Setting{"epochs", "lr"}, true},
		{"wrapped error keeps its text", Wrap(errors.New("epochs: no")), "epochs: no", "epochs: no", nil, true},
		{"not bad input", errors.New("disk full"), "disk full", "disk full", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Error(); got != c.plain {
				t.Errorf("Error() = %q, want %q", got, c.plain)
			}
			if got := Rename(c.err, flag); got != c.renamed {
				t.Errorf("Rename = %q, want %q", got, c.renamed)
			}
			if got := Settings(c.err); !slices.Equal(got, c.settings) {
				t.Errorf("Settings = %q, want %q", got, c.settings)
			}
			if Is(c.err) != c.wantInput {
				t.Errorf("Is = %v, want %v", Is(c.err), c.wantInput)
			}
		})
	}
}
