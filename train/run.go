package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// Source yields training batches in a reproducible order. State and
// Restore let a resumed run continue with exactly the batches an
// uninterrupted run would have seen.
type Source interface {
	// Next returns the next batch, or io.EOF when the data is exhausted.
	Next() (*data.Batch, error)
	State() (json.RawMessage, error)
	Restore(json.RawMessage) error
}

// MetricsFile is the per-step log in the run folder, one JSON object a line.
const MetricsFile = "metrics.jsonl"

// RunOptions control Run.
type RunOptions struct {
	// MaxSteps stops after this many optimizer steps (0: until the source
	// is exhausted).
	MaxSteps int64
	// SaveEvery writes a checkpoint every N steps (0: only at the end).
	SaveEvery int64
	// Keep is how many checkpoints to keep (0: all).
	Keep int
	// Resume continues from the newest good checkpoint in the run folder.
	Resume bool
	// Unmasked trains without MIGU's mask (the first task of a sequence).
	Unmasked bool
	// MaskRecord, when set, sums MIGU's magnitudes of every step; it
	// travels in the checkpoints, so a resumed run continues its sums.
	MaskRecord *MaskRecord
	// Identity names the model and configuration; checkpoints of another
	// identity are refused on resume. internal/identity makes one.
	Identity string
	// Progress receives one line per step (nil: silent); on a terminal
	// (Terminal set) each step's line replaces the previous one.
	Progress io.Writer
	Terminal bool
	// Follower trains without writing: a data-parallel rank other than 0,
	// whose rank 0 writes the metrics and checkpoints of the same steps.
	// It still reads runDir's checkpoints to resume.
	Follower bool
}

// Check checks the ranges of the step counts: --max-steps, --save-every
// and --keep are ≥ 0, 0 meaning none (all for --keep).
func (o RunOptions) Check() error {
	switch {
	case o.MaxSteps < 0:
		return badinput.Range("max_steps", o.MaxSteps, "≥ 0 (0: run the epochs)")
	case o.SaveEvery < 0:
		return badinput.Range("save_every", o.SaveEvery, "≥ 0 (0: only at the end)")
	case o.Keep < 0:
		return badinput.Range("keep", o.Keep, "≥ 0 (0: all)")
	}
	return nil
}

// RunResult summarises a run.
type RunResult struct {
	Steps      int64
	Resumed    int64 // the step a resumed run started from
	Tokens     int
	FirstLoss  float64
	LastLoss   float64
	Checkpoint string // the last checkpoint written
	Stopped    bool   // interrupted by the context (Ctrl-C): checkpointed
}

// Run trains until the source is exhausted, MaxSteps is reached or ctx is
// cancelled, writing metrics.jsonl and checkpoints into runDir. A
// cancelled run writes a checkpoint of the last finished step and returns
// with Stopped set. A non-finite loss stops the run with an error naming
// the step; the last good checkpoint stays as it was.
func Run(ctx context.Context, t *Trainer, src Source, runDir string, opt RunOptions) (*RunResult, error) {
	if err := opt.Check(); err != nil {
		return nil, err
	}
	res := &RunResult{}
	if opt.Resume {
		dir, st, skipped, err := LatestCheckpoint(runDir)
		if err != nil {
			return nil, err
		}
		for _, s := range skipped {
			logf(opt.Progress, "skipping damaged checkpoint: %s", s)
		}
		if dir == "" && len(skipped) > 0 {
			return nil, badinput.Errorf("%v: no usable checkpoint in %s (%d damaged: %s)", badinput.Setting("resume"), runDir, len(skipped), skipped[0])
		}
		if dir != "" {
			if err := t.LoadCheckpoint(dir, st, opt.Identity); err != nil {
				return nil, err
			}
			if err := src.Restore(st.Data); err != nil {
				return nil, err
			}
			if err := opt.MaskRecord.restore(st.Extra); err != nil {
				return nil, err
			}
			res.Resumed = t.Step
			logf(opt.Progress, "resumed from %s (step %d)", dir, t.Step)
		}
	}
	enc := json.NewEncoder(io.Discard)
	if !opt.Follower {
		// Rows past the step the run continues from were written by a run
		// killed after its last checkpoint; the steps are trained again.
		if err := TruncateMetrics(filepath.Join(runDir, MetricsFile), t.Step); err != nil {
			return nil, err
		}
		metrics, err := os.OpenFile(filepath.Join(runDir, MetricsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer metrics.Close()
		enc = json.NewEncoder(metrics)
	}

	save := func() error {
		if opt.Follower {
			return nil
		}
		state, err := src.State()
		if err != nil {
			return err
		}
		dir, err := t.SaveCheckpoint(runDir, opt.Identity, state, opt.MaskRecord.extra(), opt.Keep)
		if err != nil {
			return err
		}
		res.Checkpoint = dir
		return nil
	}
	micro := make([]*data.Batch, 0, t.cfg.GradAccum)
	start := time.Now()
	for opt.MaxSteps == 0 || t.Step < opt.MaxSteps {
		if stop, err := t.stopRequested(ctx); err != nil || stop {
			if err != nil {
				return nil, err
			}
			res.Stopped = true
			break
		}
		micro = micro[:0]
		for len(micro) < t.cfg.GradAccum {
			b, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			micro = append(micro, b)
		}
		if len(micro) < t.cfg.GradAccum {
			break // not enough data left for a whole step
		}
		step, err := t.TrainStep(micro, !opt.Unmasked)
		if err != nil {
			if errors.Is(err, ErrNonFinite) {
				return nil, fmt.Errorf("%w; the last good checkpoint is %s", err, lastCheckpoint(runDir))
			}
			return nil, err
		}
		opt.MaskRecord.add(t)
		if res.Steps == 0 {
			res.FirstLoss = step.Loss
		}
		res.Steps++
		res.LastLoss = step.Loss
		res.Tokens += step.Tokens
		line := struct {
			*StepResult
			TokensPerSecond float64 `json:"tokens_per_s"`
			Elapsed         float64 `json:"elapsed_s"`
		}{step, float64(step.Tokens) / step.Seconds, time.Since(start).Seconds()}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
		if opt.Progress != nil {
			text := fmt.Sprintf("step %d  loss %.4f  lr %.3g  grad norm %.3g  %.0f tokens/s", step.Step, step.Loss, step.LR, step.GradNorm, line.TokensPerSecond)
			if opt.Terminal {
				fmt.Fprintf(opt.Progress, "\r\033[K%s", text)
			} else {
				fmt.Fprintln(opt.Progress, text)
			}
		}
		if opt.SaveEvery > 0 && t.Step%opt.SaveEvery == 0 {
			if err := save(); err != nil {
				return nil, err
			}
		}
	}
	if opt.Terminal && opt.Progress != nil && res.Steps > 0 {
		fmt.Fprintln(opt.Progress)
	}
	if res.Checkpoint == "" || !checkpointIsStep(res.Checkpoint, t.Step) {
		if err := save(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// TruncateMetrics drops the rows of a metrics file after step (all rows
// for step 0), and a last row cut short by a kill, so that a resumed run
// appends each step once. The file is rewritten atomically, and only when
// a row goes; a missing file is left missing.
func TruncateMetrics(path string, step int64) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer out.Abort()
	r := bufio.NewReader(f)
	dropped := false
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var row struct {
				Step *int64 `json:"step"`
			}
			complete := line[len(line)-1] == '\n'
			if complete && json.Unmarshal(line, &row) == nil && row.Step != nil && *row.Step <= step {
				if _, err := out.Write(line); err != nil {
					return err
				}
			} else {
				dropped = true
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if !dropped {
		return nil
	}
	return out.Commit()
}

func checkpointIsStep(dir string, step int64) bool {
	return filepath.Base(dir) == fmt.Sprintf("step-%08d", step)
}

func lastCheckpoint(runDir string) string {
	dir, _, _, _ := LatestCheckpoint(runDir)
	if dir == "" {
		return "none (no checkpoint was written yet)"
	}
	return dir
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
