// Command mpi is the data-parallel benchmark (`make bench-mpi`): on one
// machine it trains the same model on the same global batch as one process
// with two ONNX Runtime threads and as two mpirun ranks with one thread
// each, in alternating order over several rounds so that the machine's
// changing load falls on both alike, and writes tokens per second side by
// side to RESULTS.md.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/migu-ml/migu/benchmarks/internal/bench"
	"github.com/migu-ml/migu/internal/atomicfile"
)

func main() {
	preset := flag.String("preset", bench.EnvOr("MPI_BENCH_PRESET", "small"), "llama preset of `migu init`")
	methods := flag.String("methods", bench.EnvOr("MPI_BENCH_METHODS", "full,lora"), "methods to train")
	steps := flag.Int("steps", bench.EnvInt("MPI_BENCH_STEPS", 8), "optimizer steps per process")
	rounds := flag.Int("rounds", bench.EnvInt("MPI_BENCH_ROUNDS", 3), "processes per configuration")
	batch := flag.Int("batch", bench.EnvInt("MPI_BENCH_BATCH", 8), "global batch (rows)")
	migu := flag.String("migu", "bin/migu", "the migu binary")
	work := flag.String("work", bench.EnvOr("MPI_BENCH_WORK", filepath.Join(os.TempDir(), "migu-bench-mpi")), "scratch folder")
	out := flag.String("out", "benchmarks/mpi/RESULTS.md", "report")
	flag.Parse()
	if err := run(*preset, bench.Split(*methods), *steps, *rounds, *batch, *migu, *work, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench-mpi:", err)
		os.Exit(1)
	}
}

// config is one way of running a training job on the machine's two cores.
type config struct {
	name    string
	ranks   int
	threads int
}

var configs = []config{{"1 process × 2 threads", 1, 2}, {"2 ranks × 1 thread", 2, 1}}

func run(preset string, methods []string, steps, rounds, batch int, migu, work, out string) error {
	start := time.Now()
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	hf, model, data := filepath.Join(work, "hf"), filepath.Join(work, "model"), filepath.Join(work, "data.jsonl")
	for _, args := range [][]string{{"init", "--arch", "llama", "--preset", preset, "--out", hf}, {"export", "--from", hf, "--out", model}} {
		if b, err := exec.Command(migu, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("migu %s: %v\n%s", args[0], err, b)
		}
	}
	if err := writeData(data, batch*(steps+1)); err != nil {
		return err
	}
	speeds := map[string][]float64{} // method/config → tokens/s per process
	for r := range rounds {
		for k := range configs {
			c := configs[k]
			if r%2 == 1 {
				c = configs[len(configs)-1-k]
			}
			for _, m := range methods {
				dir := filepath.Join(work, fmt.Sprintf("run-%s-%d-%d", m, c.ranks, r))
				args := []string{"train", "--model", model, "--data", data, "--out", dir, "--method", m, "--migu", "0.7",
					"--max-steps", fmt.Sprint(steps), "--batch-size", fmt.Sprint(batch / c.ranks), "--threads", fmt.Sprint(c.threads)}
				cmd := exec.Command(migu, args...)
				if c.ranks > 1 {
					mpi := []string{"-np", fmt.Sprint(c.ranks), "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none"}
					if os.Geteuid() == 0 {
						mpi = append(mpi, "--allow-run-as-root")
					}
					cmd = exec.Command("mpirun", append(append(mpi, migu), args...)...)
				}
				if b, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%s %s: %v\n%s", m, c.name, err, bench.LastLines(string(b), 5))
				}
				tps, err := tokensPerSecond(filepath.Join(dir, "metrics.jsonl"))
				if err != nil {
					return err
				}
				key := m + "/" + c.name
				speeds[key] = append(speeds[key], tps)
				fmt.Printf("[%4.0fs] %s %s: %.0f tokens/s\n", time.Since(start).Seconds(), m, c.name, tps)
				os.RemoveAll(dir)
			}
		}
	}
	return report(out, preset, methods, steps, rounds, batch, speeds, time.Since(start))
}

// writeData writes n instruction records of about 100 words.
func writeData(path string, n int) error {
	words := strings.Fields("river stone cloud orange table garden window yellow silver paper mountain apple north quiet")
	rng := rand.New(rand.NewPCG(1, 2))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for range n {
		var in, outw []string
		for range 80 {
			in = append(in, words[rng.IntN(len(words))])
		}
		for range 20 {
			outw = append(outw, words[rng.IntN(len(words))])
		}
		if err := enc.Encode(map[string]string{"instruction": strings.Join(in, " "), "output": strings.Join(outw, " ")}); err != nil {
			return err
		}
	}
	return f.Close()
}

// tokensPerSecond is the median of a run's steps after the first (warm-up).
func tokensPerSecond(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var v []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var row struct {
			Step int64   `json:"step"`
			TPS  float64 `json:"tokens_per_s"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return 0, fmt.Errorf("%s: %v", path, err)
		}
		if row.Step > 1 {
			v = append(v, row.TPS)
		}
	}
	if len(v) == 0 {
		return 0, fmt.Errorf("%s: no steps after the first", path)
	}
	return bench.Median(v), sc.Err()
}

func report(out, preset string, methods []string, steps, rounds, batch int, speeds map[string][]float64, took time.Duration) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Data parallelism on one machine: two MPI ranks against one process with two threads\n\n")
	fmt.Fprintf(&b, "Written by `make bench-mpi` on %s (%.1f min). Machine: %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), took.Minutes(), bench.Machine())
	fmt.Fprintf(&b, "Model: `migu init --arch llama --preset %s` (random weights), global batch %d instruction records of 100 words, MIGU T = 0.7, LoRA q,v r 8. "+
		"Each configuration trains %d steps in its own process (or mpirun job), %d times, the order reversed every other round; tokens/s is the median of the steps after the first, then the median over the processes.\n\n",
		preset, batch, steps, rounds)
	fmt.Fprintf(&b, "| method | %s tokens/s | %s tokens/s | ranks / threads |\n|---|---|---|---|\n", configs[0].name, configs[1].name)
	for _, m := range methods {
		a, c := bench.Median(speeds[m+"/"+configs[0].name]), bench.Median(speeds[m+"/"+configs[1].name])
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2f× |\n", m, a, c, c/a)
	}
	fmt.Fprintf(&b, "\nBoth configurations use the machine's two cores. Two ranks add the gradient sums of every step (shared memory, Reduce + Bcast) "+
		"and run two copies of the model, its graph and the optimizer; one process splits each matrix product over two threads. "+
		"The ratio says which way of using the cores trains faster here, not how data parallelism scales over machines: that is in docs/distributed.md.\n")
	return atomicfile.WriteFile(out, []byte(b.String()))
}
