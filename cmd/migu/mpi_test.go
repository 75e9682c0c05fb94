package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/train"
)

// mpirunCommand runs this test binary as `mpirun -np n migu args…`; mark
// tags the ranks' environment so a test can find their processes.
func mpirunCommand(t *testing.T, n int, mark string, args ...string) *exec.Cmd {
	t.Helper()
	mpirun := testenv.Mpirun(t)
	full := append(testenv.MpirunArgs(n), "-x", "MIGU_TEST_CLI=1", "-x", "MIGU_TEST_MARK="+mark, os.Args[0])
	full = append(full, args...)
	return exec.Command(mpirun, append(full, "--ort-lib", testenv.ORTLib(t))...)
}

// TestMpirunTrainEqualsOneProcess: `mpirun -np 2 migu train --batch-size
// 4` takes the steps of `migu train --batch-size 8`, full and LoRA with
// MIGU: every step's loss within 1e-5 and its mask statistics (each
// layer's share updated and overlap with the last step, which follow from
// the mask bits) equal, and the final weights within 1e-5 norm-wise after
// 20 steps, 2e-4 element-wise for full fine-tuning. Full fine-tuning runs
// with --products mlas and auto: where auto picks oneDNN (Ice Lake or Zen 4 with
// the bf16 library), its weight-gradient sums round about twice as far
// from the exact sum as MLAS's (mean 0.15–0.34 against 0.10–0.25
// u·Σ|ab|), and AdamW turns sign changes of near-zero gradients into
// full-size steps: measured 1.2e-4 element-wise (7.4e-6 norm-wise)
// against MLAS's 1.4e-5 (1.1e-6). The fused attention (kernels.FuseAttention,
// where the CPU has AVX-512) rounds otherwise again, which moves which
// gradients flip: on a Xeon with AMX, MLAS 4.6e-5 → 1.0e-4 element-wise
// (2.5e-6 → 7.5e-6 norm-wise), auto 1.2e-4 → 3.7e-5; so both bounds are 2e-4.
// Only rank 0 writes the run folder.
func TestMpirunTrainEqualsOneProcess(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 160)
	for _, c := range []struct {
		method, products string
		elemTol          float64
	}{{"full", train.ProductsMLAS, 2e-4}, {"full", train.ProductsAuto, 2e-4}, {"lora", train.ProductsAuto, 1e-4}} {
		method := c.method
		t.Run(method+"/"+c.products, func(t *testing.T) {
			args := func(out, batch string) []string {
				return []string{"train", "--model", model, "--data", data, "--out", out, "--method", method, "--migu", "0.7",
					"--max-steps", "20", "--batch-size", batch, "--threads", "1", "--lr", "1e-3", "--products", c.products}
			}
			one, two := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
			if code, stdout, stderr := runCLI(t, args(one, "8")...); code != 0 {
				t.Fatalf("one process: exit %d\n%s%s", code, stdout, stderr)
			}
			cmd := mpirunCommand(t, 2, "equal", args(two, "4")...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("mpirun: %v\n%s", err, out)
			}
			if n := strings.Count(string(out), "trained 20 steps"); n != 1 {
				t.Errorf("%d ranks reported the run; rank 0 alone should:\n%s", n, out)
			}
			a, b := metricRows(t, one), metricRows(t, two)
			if len(a) != 20 || len(b) != 20 {
				t.Fatalf("%d and %d metrics rows, want 20 each", len(a), len(b))
			}
			for i := range a {
				if d := math.Abs(a[i].Loss-b[i].Loss) / a[i].Loss; d > 1e-5 {
					t.Errorf("step %d: loss %.7g with one process, %.7g with two ranks", i+1, a[i].Loss, b[i].Loss)
				}
				if len(a[i].Masks) == 0 || !reflect.DeepEqual(a[i].Masks, b[i].Masks) {
					t.Fatalf("step %d: MIGU mask statistics differ (or are missing):\n%v\n%v", i+1, a[i].Masks, b[i].Masks)
				}
			}
			file := "model/model.onnx.data"
			if method == "lora" {
				file = "adapter/adapter_model.safetensors"
			}
			wa, wb := floatsOf(t, filepath.Join(one, file)), floatsOf(t, filepath.Join(two, file))
			norm, elem := relDiffs(wa, wb)
			if norm > 1e-5 || elem > c.elemTol {
				t.Fatalf("%s: weights differ by %.3g norm-wise, %.3g element-wise (relative)", file, norm, elem)
			}
			t.Logf("20 steps: losses within 1e-5, mask statistics equal; %s within %.2g norm-wise, %.2g element-wise", file, norm, elem)
		})
	}
}

// TestMpirunContinual: `migu continual` under `mpirun -np 2` with half the
// batch per rank scores every task as one process does: the same accuracy
// matrices, rank 0 alone writing the report.
func TestMpirunContinual(t *testing.T) {
	model := tinyModelDir(t, "llama")
	seq := clFixture(t)
	args := func(out, batch string) []string {
		return []string{"continual", "--model", model, "--sequence", seq, "--out", out, "--methods", "full+migu,lora+migu",
			"--max-steps", "3", "--batch-size", batch, "--lr", "3e-3", "--threads", "1", "--seeds", "1", "--max-len", "128"}
	}
	one, two := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
	if code, stdout, stderr := runCLI(t, args(one, "4")...); code != 0 {
		t.Fatalf("one process: exit %d\n%s%s", code, stdout, stderr)
	}
	out, err := mpirunCommand(t, 2, "continual", args(two, "2")...).CombinedOutput()
	if err != nil {
		t.Fatalf("mpirun: %v\n%s", err, out)
	}
	ra, rb := readResults(t, one), readResults(t, two)
	if len(ra.Runs) != 2 || len(rb.Runs) != 2 {
		t.Fatalf("%d and %d runs, want 2", len(ra.Runs), len(rb.Runs))
	}
	for i := range ra.Runs {
		ma, mb := ra.Runs[i].Matrices["rank"], rb.Runs[i].Matrices["rank"]
		if len(ma.R) != 3 || !reflect.DeepEqual(ma, mb) {
			t.Errorf("%s: accuracy matrix %v / %v with one process, %v / %v with two ranks", ra.Runs[i].Method, ma.Base, ma.R, mb.Base, mb.R)
		}
	}
}

// TestMpirunRankKilled: when one rank is killed, the job ends within 10 s
// with a non-zero status and a line naming the dead rank, the checkpoints
// rank 0 wrote stay good, and `--resume` under mpirun ends with the weights
// of an uninterrupted run.
func TestMpirunRankKilled(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 400)
	args := func(out string) []string {
		return []string{"train", "--model", model, "--data", data, "--out", out, "--migu", "0.7", "--max-steps", "50",
			"--batch-size", "4", "--threads", "1", "--save-every", "5", "--lr", "1e-3"}
	}
	straight, killed := filepath.Join(t.TempDir(), "straight"), filepath.Join(t.TempDir(), "killed")
	if out, err := mpirunCommand(t, 2, "straight", args(straight)...).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}

	mark := strconv.Itoa(os.Getpid()) + "-kill"
	cmd := mpirunCommand(t, 2, mark, args(killed)...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for len(metricRowsIfAny(killed)) < 12 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the run did not reach step 12:\n%s", output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pid := rankPID(t, mark, 1)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("mpirun exited 0 after rank 1 was killed:\n%s", output.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("mpirun still running 10 s after rank 1 was killed:\n%s", output.String())
	}
	wait := time.Since(start)
	if !strings.Contains(output.String(), "rank 1") || !strings.Contains(output.String(), "signal 9") {
		t.Errorf("mpirun's output does not name the killed rank:\n%s", output.String())
	}
	if dir, _, _, _ := train.LatestCheckpoint(killed); dir == "" {
		t.Fatal("no good checkpoint after the kill")
	}

	if out, err := mpirunCommand(t, 2, "resume", append(args(killed), "--resume")...).CombinedOutput(); err != nil || !strings.Contains(string(out), "resumed from") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	a, b := floatsOf(t, filepath.Join(straight, "model/model.onnx.data")), floatsOf(t, filepath.Join(killed, "model/model.onnx.data"))
	if norm, elem := relDiffs(a, b); norm != 0 || elem != 0 {
		t.Fatalf("resumed weights differ from the uninterrupted run's: %.3g norm-wise, %.3g element-wise", norm, elem)
	}
	t.Logf("mpirun ended %.1f s after rank 1 was killed; the resumed run's weights equal the uninterrupted run's bit for bit", wait.Seconds())
}

// metricRow is one metrics.jsonl row, as these tests read it.
type metricRow struct {
	Step  int64                         `json:"step"`
	Loss  float64                       `json:"loss"`
	Masks map[string]map[string]float64 `json:"masks"`
}

func metricRows(t *testing.T, out string) []metricRow {
	t.Helper()
	rows := metricRowsIfAny(out)
	if rows == nil {
		t.Fatalf("%s: no metrics", out)
	}
	return rows
}

// metricRowsIfAny reads the complete rows of a run's metrics.jsonl (nil
// when there is none yet).
func metricRowsIfAny(out string) []metricRow {
	f, err := os.Open(filepath.Join(out, train.MetricsFile))
	if err != nil {
		return nil
	}
	defer f.Close()
	var rows []metricRow
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r metricRow
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			rows = append(rows, r)
		}
	}
	return rows
}

// floatsOf reads a float32 weight file: an ONNX external-data file, or a
// safetensors file after its header.
func floatsOf(t *testing.T, path string) []float32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".safetensors") {
		raw = raw[8+binary.LittleEndian.Uint64(raw):]
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// relDiffs are ‖a − b‖ / ‖a‖ and max |a − b| / max |a|.
func relDiffs(a, b []float32) (norm, elem float64) {
	if len(a) != len(b) {
		return math.Inf(1), math.Inf(1)
	}
	var d2, a2, dmax, amax float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		d2, a2 = d2+d*d, a2+float64(a[i])*float64(a[i])
		dmax, amax = math.Max(dmax, math.Abs(d)), math.Max(amax, math.Abs(float64(a[i])))
	}
	return math.Sqrt(d2 / a2), dmax / amax
}

// rankPID finds the process of one rank of an mpirun job started with mark.
func rankPID(t *testing.T, mark string, rank int) int {
	t.Helper()
	want := []string{"MIGU_TEST_MARK=" + mark, "OMPI_COMM_WORLD_RANK=" + strconv.Itoa(rank)}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		found := 0
		for _, v := range vars {
			for _, w := range want {
				if v == w {
					found++
				}
			}
		}
		if found == len(want) {
			return pid
		}
	}
	t.Fatalf("no process of rank %d with %s", rank, mark)
	return 0
}

// TestMpirunResumeReshards: a run's identity is its global batch, so a
// single-process run with --batch-size 8 resumes under `mpirun -np 2` with
// --batch-size 4 (re-sharded, ending with the uninterrupted run's weights
// to float32 rounding), and a resume with another global batch is refused
// (exit 2, one line).
func TestMpirunResumeReshards(t *testing.T) {
	model := tinyModelDir(t, "llama")
	data := fixture(t, "instruction", 80)
	args := func(out, batch string) []string {
		return []string{"train", "--model", model, "--data", data, "--out", out, "--migu", "0.7", "--max-steps", "6",
			"--batch-size", batch, "--threads", "1", "--save-every", "3", "--keep", "0", "--lr", "1e-3"}
	}
	straight, cut := filepath.Join(t.TempDir(), "straight"), filepath.Join(t.TempDir(), "cut")
	for _, out := range []string{straight, cut} {
		if code, stdout, stderr := runCLI(t, args(out, "8")...); code != 0 {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
	}
	// What an interruption after step 3's checkpoint leaves.
	for _, p := range []string{"run.json", "model", filepath.Join(train.CheckpointsDir, "step-00000006")} {
		if err := os.RemoveAll(filepath.Join(cut, p)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := mpirunCommand(t, 2, "other-batch", append(args(cut, "2"), "--resume")...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || strings.Count(string(out), "migu: ") != 1 ||
		!strings.Contains(string(out), "was written for another model or configuration") {
		t.Fatalf("resume with global batch 4 instead of 8: %v, want exit 2 and one line\n%s", err, out)
	}
	out, err = mpirunCommand(t, 2, "reshard", append(args(cut, "4"), "--resume")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "resumed from") {
		t.Fatalf("resume under mpirun: %v\n%s", err, out)
	}
	a, b := floatsOf(t, filepath.Join(straight, "model/model.onnx.data")), floatsOf(t, filepath.Join(cut, "model/model.onnx.data"))
	if norm, elem := relDiffs(a, b); norm > 1e-5 || elem > 1e-4 {
		t.Fatalf("re-sharded resume ends %.3g norm-wise, %.3g element-wise from the uninterrupted run", norm, elem)
	}
}
