package finetune

import (
	"math"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/lora"
)

// Every number of a job is checked before anything is read or written:
// each value outside its range is one line of bad input naming the flag
// and the range; zero values that once meant a default are refused.
func TestJobOptionsCheck(t *testing.T) {
	if err := DefaultJobOptions().Check(); err != nil {
		t.Fatalf("the defaults fail their own check: %v", err)
	}
	cases := []struct {
		name string
		set  func(*JobOptions)
		want string // "" passes
	}{
		{"epochs -1", func(o *JobOptions) { o.Epochs = -1 }, "epochs -1 is outside its range: ≥ 1, or 0 with max_steps"},
		{"epochs 0", func(o *JobOptions) { o.Epochs = 0 }, "epochs 0 is outside"},
		{"epochs 0 with max-steps", func(o *JobOptions) { o.Epochs, o.MaxSteps = 0, 10 }, ""},
		{"max-steps -5", func(o *JobOptions) { o.MaxSteps = -5 }, "max_steps -5 is outside its range: ≥ 0"},
		{"batch-size 0", func(o *JobOptions) { o.BatchSize = 0 }, "batch_size 0 is outside its range: ≥ 1"},
		{"grad-accum 0", func(o *JobOptions) { o.Train.GradAccum = 0 }, "grad_accum 0 is outside its range: ≥ 1"},
		{"max-len -5", func(o *JobOptions) { o.MaxLen = -5 }, "max_len -5 is outside its range: ≥ 0"},
		{"max-len 0", func(o *JobOptions) { o.MaxLen = 0 }, ""},
		{"bucket -1", func(o *JobOptions) { o.Bucket = -1 }, "bucket -1 is outside"},
		{"keep -1", func(o *JobOptions) { o.Keep = -1 }, "keep -1 is outside its range: ≥ 0"},
		{"save-every -1", func(o *JobOptions) { o.SaveEvery = -1 }, "save_every -1 is outside its range: ≥ 0"},
		{"clip -1", func(o *JobOptions) { o.Train.ClipNorm = -1 }, "clip_norm -1 is outside its range: a finite number ≥ 0"},
		{"clip NaN", func(o *JobOptions) { o.Train.ClipNorm = math.NaN() }, "clip_norm NaN is outside"},
		{"warmup -5", func(o *JobOptions) { o.Train.Warmup = -5 }, "warmup -5 is outside its range: ≥ 0"},
		{"lr NaN", func(o *JobOptions) { o.Train.Optim.LR = math.NaN() }, "lr NaN is outside its range: a finite number ≥ 0"},
		{"lr Inf", func(o *JobOptions) { o.Train.Optim.LR = math.Inf(1) }, "lr +Inf is outside"},
		{"lr negative", func(o *JobOptions) { o.Train.Optim.LR = -1e-4 }, "lr -0.0001 is outside"},
		{"weight-decay Inf", func(o *JobOptions) { o.Train.Optim.WeightDecay = math.Inf(1) }, "weight_decay +Inf is outside"},
		{"threads -2", func(o *JobOptions) { o.Train.Threads = -2 }, "threads -2 is outside its range: 0 (one per core) … 1024"},
		{"threads 1e6", func(o *JobOptions) { o.Train.Threads = 1_000_000 }, "threads 1000000 is outside"},
		{"migu T 1", func(o *JobOptions) { o.Train.UseMIGU, o.Train.T = true, 1 }, "migu_t 1 is outside [0, 1)"},
		{"migu T 0", func(o *JobOptions) { o.Train.UseMIGU, o.Train.T = true, 0 }, ""},
		{"lora r 0", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionR] = lora.Kind, "0" }, "lora-r 0 is outside its range: 1 …"},
		{"lora r 0, full", func(o *JobOptions) { o.Adapter[lora.OptionR] = "0" }, ""},
		{"lora r 0 from an adapter", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionR], o.InitAdapter = lora.Kind, "0", "a" }, ""},
		{"lora alpha NaN", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionAlpha] = lora.Kind, "NaN" }, "lora-alpha NaN is outside"},
		{"lora dropout 1", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionDropout] = lora.Kind, "1" }, "lora-dropout 1 is outside"},
		{"lora r not a number", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionR] = lora.Kind, "eight" }, `lora-r "eight" is not an integer`},
		{"lora targets", func(o *JobOptions) { o.Method, o.Adapter[lora.OptionTargets] = lora.Kind, "q,x" }, `lora-targets: unknown target "x"`},
		{"unknown method", func(o *JobOptions) { o.Method = "qlora" }, `unknown method "qlora" (full, lora`},
		{"memory limit NaN", func(o *JobOptions) { o.MemoryLimit = "NaNGB" }, `memory_limit "NaNGB" is not`},
		{"schedule", func(o *JobOptions) { o.Train.Schedule = "step" }, `unknown schedule "step"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := DefaultJobOptions()
			c.set(&o)
			err := o.Check()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line of bad input with %q", err, c.want)
			}
		})
	}
}

func TestParseMemoryLimit(t *testing.T) {
	cases := []struct {
		in   string
		want int64 // -1: bad input
	}{
		{"off", 0}, {"20GB", 20e9}, {"512mb", 512e6}, {" 1.5 g ", 1.5e9}, {"4096", 4096}, {"1", 1},
		{"0", -1}, {"-1GB", -1}, {"0.5", -1}, {"NaN", -1}, {"nanGB", -1}, {"inf", -1}, {"+Inf GB", -1},
		{"1e400", -1}, {"1e10GB", -1}, {"9.3e18", -1}, {"GB", -1}, {"twenty", -1},
	}
	for _, c := range cases {
		got, err := ParseMemoryLimit(c.in)
		if c.want < 0 {
			if !badinput.Is(err) {
				t.Errorf("ParseMemoryLimit(%q) = %d, %v; want bad input", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	if got, err := ParseMemoryLimit("auto"); err != nil || got < 0 {
		t.Errorf("auto: %d, %v", got, err)
	}
}

// FuzzParseMemoryLimit: any string is a limit of at least one byte, 0 for
// off, the available memory for auto, or one line of bad input.
func FuzzParseMemoryLimit(f *testing.F) {
	for _, s := range []string{"auto", "off", "20GB", "512m", "1", "0", "NaN", "1e400", "-3g", " 7 GB "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseMemoryLimit(s)
		if err != nil {
			if !badinput.Is(err) || strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("%q: %v is not one line of bad input", s, err)
			}
			return
		}
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "off":
			if got != 0 {
				t.Fatalf("off gave %d", got)
			}
		case "", "auto":
			if got < 0 {
				t.Fatalf("auto gave %d", got)
			}
		default:
			if got < 1 {
				t.Fatalf("%q gave %d bytes", s, got)
			}
		}
	})
}
