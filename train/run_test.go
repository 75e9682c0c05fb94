package train

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// TruncateMetrics keeps the rows up to the step a run continues from and
// drops the rest, including a row a kill cut short; a file with nothing
// to drop is not rewritten.
func TestTruncateMetrics(t *testing.T) {
	rows := `{"step":1,"loss":2}` + "\n" + `{"step":2,"loss":1.5}` + "\n" + `{"step":3,"loss":1.2}` + "\n"
	cases := []struct {
		name, content string
		step          int64
		want          string
	}{
		{"resume at 2", rows, 2, `{"step":1,"loss":2}` + "\n" + `{"step":2,"loss":1.5}` + "\n"},
		{"fresh start", rows, 0, ""},
		{"nothing past the step", rows, 3, rows},
		{"row cut by a kill", rows + `{"step":4,"lo`, 3, rows},
		{"cut row within the steps", rows + `{"step":2`, 5, rows},
		{"duplicates of an earlier resume", rows + `{"step":2,"loss":1.5}` + "\n" + `{"step":3,"loss":1.2}` + "\n", 1, `{"step":1,"loss":2}` + "\n"},
		{"foreign line", "not json\n" + rows, 1, `{"step":1,"loss":2}` + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), MetricsFile)
			if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(path)
			if err := TruncateMetrics(path, c.step); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != c.want {
				t.Fatalf("kept %q (%v), want %q", got, err, c.want)
			}
			after, _ := os.Stat(path)
			if c.want == c.content && !os.SameFile(before, after) {
				t.Error("a file with nothing to drop was rewritten")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("%d files left beside the metrics", len(entries))
			}
		})
	}
	if err := TruncateMetrics(filepath.Join(t.TempDir(), MetricsFile), 3); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

// Config, AdamWConfig and RunOptions refuse each value outside its range
// with one line of bad input naming the flag; a zero micro-batch count is
// no longer taken as 1.
func TestConfigCheck(t *testing.T) {
	if err := DefaultConfig().Check(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	cases := []struct {
		name string
		set  func(*Config, *RunOptions)
		want string
	}{
		{"grad accum 0", func(c *Config, _ *RunOptions) { c.GradAccum = 0 }, "grad_accum 0 is outside its range: ≥ 1"},
		{"warmup", func(c *Config, _ *RunOptions) { c.Warmup = -1 }, "warmup -1 is outside"},
		{"clip Inf", func(c *Config, _ *RunOptions) { c.ClipNorm = math.Inf(1) }, "clip_norm +Inf is outside"},
		{"lr NaN", func(c *Config, _ *RunOptions) { c.Optim.LR = math.NaN() }, "lr NaN is outside its range: a finite number ≥ 0"},
		{"beta2 1", func(c *Config, _ *RunOptions) { c.Optim.Beta2 = 1 }, "beta2 1 is outside its range: [0, 1)"},
		{"eps 0", func(c *Config, _ *RunOptions) { c.Optim.Eps = 0 }, "eps 0 is outside"},
		{"threads", func(c *Config, _ *RunOptions) { c.Threads = -2 }, "threads -2 is outside"},
		{"T", func(c *Config, _ *RunOptions) { c.UseMIGU, c.T = true, -0.1 }, "migu_t -0.1 is outside"},
		{"schedule", func(c *Config, _ *RunOptions) { c.Schedule = "exp" }, `unknown schedule "exp"`},
		{"recompute", func(c *Config, _ *RunOptions) { c.Recompute = "all" }, `recompute "all"`},
		{"max steps", func(_ *Config, o *RunOptions) { o.MaxSteps = -5 }, "max_steps -5 is outside its range: ≥ 0"},
		{"save every", func(_ *Config, o *RunOptions) { o.SaveEvery = -1 }, "save_every -1 is outside"},
		{"keep", func(_ *Config, o *RunOptions) { o.Keep = -1 }, "keep -1 is outside"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, opt := DefaultConfig(), RunOptions{}
			c.set(&cfg, &opt)
			err := cfg.Check()
			if err == nil {
				err = opt.Check()
			}
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line of bad input with %q", err, c.want)
			}
		})
	}
	if _, err := NewTrainer(nil, t.TempDir(), Config{Optim: DefaultAdamW()}); !badinput.Is(err) || !strings.Contains(err.Error(), "grad_accum 0") {
		t.Errorf("NewTrainer with a zero GradAccum: %v", err)
	}
}
