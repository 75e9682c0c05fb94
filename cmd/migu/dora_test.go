package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/continual"
	"github.com/migu-ml/migu/internal/testfix"
)

// `migu train --method dora --migu` lowers the loss and writes a DoRA
// adapter; `migu merge` folds it into a model that differs from the base;
// continual methods include dora and dora+migu.
func TestDoRA(t *testing.T) {
	model := tinyModelDir(t, "llama")
	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := runCLI(t, "train", "--model", model, "--data", fixture(t, "instruction", 160), "--out", out, "--method", "dora",
		"--lora-targets", "all", "--migu", "0.7", "--lr", "1e-2", "--epochs", "2", "--batch-size", "16", "--threads", "1", "--seed", "1")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	var res runJSON
	readJSON(t, filepath.Join(out, "run.json"), &res)
	if !(res.LastLoss < res.FirstLoss) || res.Output != filepath.Join(out, "adapter") {
		t.Errorf("loss %.4f → %.4f, output %s", res.FirstLoss, res.LastLoss, res.Output)
	}
	var cfg map[string]any
	raw, _ := os.ReadFile(filepath.Join(res.Output, "adapter_config.json"))
	if json.Unmarshal(raw, &cfg) != nil || cfg["use_dora"] != true {
		t.Errorf("adapter_config.json: %s", raw)
	}
	merged := filepath.Join(t.TempDir(), "merged")
	if code, stdout, stderr := runCLI(t, "merge", "--model", model, "--adapter", res.Output, "--out", merged); code != 0 {
		t.Fatalf("merge: exit %d\n%s%s", code, stdout, stderr)
	}
	ids := []int64{5, 9, 12, 3, 7, 20}
	if d := testfix.MaxAbsDiff(testfix.Logits(t, merged, ids), testfix.Logits(t, model, ids)); d < 1e-3 {
		t.Errorf("the merged DoRA adapter moves the logits by %.3g only", d)
	}
	ms, err := continual.ParseMethods("dora,dora+migu")
	if err != nil || ms[0].Adapter != "dora" || ms[1].Base() != "dora" || !ms[1].MIGU {
		t.Errorf("continual methods dora,dora+migu: %+v, %v", ms, err)
	}
}
