package kernels_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"
)

// signalsChild marks the child process of TestProductsSurviveSignals.
const signalsChild = "MIGU_TEST_SIGNALS_CHILD"

// MatMulF32 and MatMulBF16 run oneDNN on ONNX Runtime's threads, which
// signals meant for the Go runtime reach as well: SIGPROF while a CPU
// profile runs, SIGCHLD when a subprocess ends, SIGINT. A handler that ran
// inside oneDNN's code corrupted the heap (glibc aborted with "free():
// invalid size" in dnnl_primitive_execute within seconds of profiling a
// 2-thread training step), so the blocks keep signals masked while oneDNN
// runs. The test multiplies on 2 threads for 2 s under a CPU profile and a
// stream of SIGCHLDs, in a child process so that a crash fails the test
// instead of ending the run, and wants every product to equal the first.
func TestProductsSurviveSignals(t *testing.T) {
	lib := withBF16(t)
	if os.Getenv(signalsChild) == "1" {
		productsUnderSignals(t, lib)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProductsSurviveSignals$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), signalsChild+"=1", "MIGU_BF16="+lib)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		t.Fatalf("products under signals: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestProductsSurviveSignals")) {
		t.Fatalf("the child did not pass:\n%s", out)
	}
}

// productsUnderSignals is the child's side of TestProductsSurviveSignals.
func productsUnderSignals(t *testing.T, lib string) {
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		t.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				syscall.Kill(os.Getpid(), syscall.SIGCHLD)
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	for _, p := range []product{
		{name: "forward", a: []int64{512, 512}, b: []int64{512, 512}, f32: true},
		{name: "weight gradient", a: []int64{512, 512}, b: []int64{512, 384}, transA: 1, f32: true},
		{name: "bf16", a: []int64{512, 512}, b: []int64{512, 512}},
	} {
		rng := rand.New(rand.NewPCG(1, 2))
		a, b := gaussian(rng, numel(p.a)), gaussian(rng, numel(p.b))
		path := p.save(t)
		first := p.run(t, path, lib, 2, a, b)
		runs := 0
		for start := time.Now(); time.Since(start) < 700*time.Millisecond; runs++ {
			for j, v := range p.run(t, path, lib, 2, a, b) {
				if v != first[j] {
					t.Fatalf("%s: run %d: y[%d] = %g, first run %g", p.name, runs, j, v, first[j])
				}
			}
		}
		t.Logf("%s: %d products under signals", p.name, runs)
	}
}
