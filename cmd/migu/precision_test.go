package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/train"
)

// `migu train --precision bf16` trains with bf16 products, records the
// precision in train.json, and on a CPU whose bf16 units do not pay says once, on
// stderr, that they run as float32 products of rounded operands, slower
// than fp32 (and trains all the same).
func TestTrainPrecisionBF16(t *testing.T) {
	t.Setenv(kernels.BF16EnvVar, testenv.BF16(t))
	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := runCLI(t, "train", "--model", tinyModelDir(t, "llama"), "--data", fixture(t, "instruction", 40), "--out", out,
		"--max-steps", "2", "--batch-size", "4", "--threads", "1", "--precision", "bf16")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	var art train.Artifact
	readJSON(t, filepath.Join(out, train.ArtifactFile), &art)
	if art.Precision != train.PrecisionBF16 || art.BF16Products == 0 {
		t.Errorf("train.json records precision %q with %d bf16 products", art.Precision, art.BF16Products)
	}
	hw := kernels.ReadBF16Hardware()
	warned := strings.Count(stderr, "fp32 is the faster choice on this machine")
	if want := !hw.Native(); want && warned != 1 || !want && warned != 0 {
		t.Errorf("CPU %+v: the slow-CPU warning appears %d times in stderr:\n%s", hw, warned, stderr)
	}
}

// A bad --precision or --products, or bf16 or onednn without the bf16
// library, stops train and continual with exit status 2 and one line
// naming the flag (or $MIGU_BF16), before the run folder exists.
func TestPrecisionBadInput(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 40)
	missing := filepath.Join(t.TempDir(), "libmigu_bf16.so")
	cases := []struct {
		name string
		args []string
		env  string // $MIGU_BF16
		want string
	}{
		{"train unknown", []string{"train", "--precision", "fp16"}, "", `--precision "fp16" is not one of fp32, bf16`},
		{"continual unknown", []string{"continual", "--precision", "BF16"}, "", `--precision "BF16" is not one of fp32, bf16`},
		{"bf16 library missing", []string{"train", "--precision", "bf16"}, missing, "bf16 library " + missing + " (from $MIGU_BF16) does not exist"},
		{"train products unknown", []string{"train", "--products", "fast"}, "", `--products "fast" is not one of auto, mlas, onednn`},
		{"continual products unknown", []string{"continual", "--products", "MLAS"}, "", `--products "MLAS" is not one of auto, mlas, onednn`},
		{"onednn library missing", []string{"train", "--products", "onednn"}, missing, "bf16 library " + missing + " (from $MIGU_BF16) does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv(kernels.BF16EnvVar, c.env)
			}
			out := filepath.Join(t.TempDir(), "run")
			args := append(c.args[:1:1], "--model", model, "--data", data, "--out", out, "--threads", "1", "--max-steps", "2")
			if c.args[0] == "continual" {
				args = append(c.args[:1:1], "--model", model, "--sequence", "order1", "--out", out, "--threads", "1", "--max-steps", "2")
			}
			code, _, stderr := runCLI(t, append(args, c.args[1:]...)...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Fatalf("exit %d, stderr %q; want exit 2 and one line with %q", code, stderr, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("the refused run created %s (%v)", out, err)
			}
		})
	}
}
