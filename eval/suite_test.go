package eval

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// TestSuiteAverage checks the average of the papers' metrics by hand:
// (0.5 + 0.25 + 0.75)/3 = 0.5, stderr √(0.03²+0.04²+0.12²)/3 = 0.13/3.
func TestSuiteAverage(t *testing.T) {
	scores := []Score{
		{"hellaswag", "acc", 0.9, 0.01, 10}, {"hellaswag", "acc_norm", 0.5, 0.03, 10},
		{"arc_challenge", "acc", 0.9, 0.01, 10}, {"arc_challenge", "acc_norm", 0.25, 0.04, 10},
		{"winogrande", "acc", 0.75, 0.12, 10},
	}
	avg, ok := SuiteAverage(scores)
	if !ok || math.Abs(avg.Value-0.5) > 1e-12 || math.Abs(avg.Stderr-0.13/3) > 1e-12 || avg.N != 3 || avg.Task != SuiteTask {
		t.Errorf("average %+v, want 0.5 ± %v over 3 tasks", avg, 0.13/3)
	}
	if _, ok := SuiteAverage([]Score{{"perplexity", "bits_per_byte", 1, 0, 1}}); ok {
		t.Error("an average without suite tasks")
	}
}

// TestCompare checks per-metric differences and their standard errors.
func TestCompare(t *testing.T) {
	base := []Score{{"winogrande", "acc", 0.5, 0.03, 100}, {"suite", "average", 0.4, 0.05, 3}, {"only", "base", 1, 0, 1}}
	other := []Score{{"suite", "average", 0.3, 0.12, 3}, {"winogrande", "acc", 0.75, 0.04, 100}}
	got := Compare(base, other)
	if len(got) != 2 {
		t.Fatalf("%d rows, want 2: %+v", len(got), got)
	}
	if got[0].Task != "winogrande" || math.Abs(got[0].Delta-0.25) > 1e-12 || math.Abs(got[0].Stderr-0.05) > 1e-12 {
		t.Errorf("winogrande %+v, want +0.25 ± 0.05", got[0])
	}
	if math.Abs(got[1].Delta+0.1) > 1e-12 || math.Abs(got[1].Stderr-0.13) > 1e-12 {
		t.Errorf("suite %+v, want -0.1 ± 0.13", got[1])
	}
}

// TestSuiteFilesAndTaskList checks the standard file names and bad input.
func TestSuiteFilesAndTaskList(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"hellaswag_validation.jsonl", "winogrande_xl_validation.jsonl.gz"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := SuiteFiles(dir, []string{"hellaswag", "winogrande"})
	if err != nil || files["winogrande"] != filepath.Join(dir, "winogrande_xl_validation.jsonl.gz") {
		t.Errorf("files %v, %v", files, err)
	}
	if _, err := SuiteFiles(dir, []string{"arc_challenge"}); !badinput.Is(err) || !strings.Contains(err.Error(), "arc_challenge_test.jsonl") {
		t.Errorf("missing file: %v", err)
	}
	if got, err := ParseTaskList(" hellaswag,winogrande, "); err != nil || len(got) != 2 {
		t.Errorf("task list %v, %v", got, err)
	}
	for _, bad := range []string{"", "hellaswag,mmlu"} {
		if _, err := ParseTaskList(bad); !badinput.Is(err) {
			t.Errorf("ParseTaskList(%q): %v, want bad input", bad, err)
		}
	}
}
