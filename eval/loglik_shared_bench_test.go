package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

// BenchmarkSharedConts measures shared-context scoring's continuation
// runs in one process: SmolLM2-135M (the `make smollm2` export) scores 8
// multiple-choice items — contexts of 100 to 200 tokens, four
// continuations of 3 to 20 words, as benchmarks/perf's eval benchmark —
// at batch 8 on 1 and 2 threads, the continuations of a batch in one run
// and in runs of similar length (contRuns) in turns pass by pass (one,
// split, split, one, …),
// so that a shared machine's load falls alike on both. It reports the
// median wall and CPU seconds of a pass each way (on one thread the CPU
// seconds hold no spinning of ORT's pool, the steadiest measure).
func BenchmarkSharedConts(b *testing.B) {
	dir := filepath.Join(testenv.Root(), ".deps", "models", "smollm2")
	if _, err := os.Stat(filepath.Join(dir, "migu.json")); err != nil {
		b.Skipf("no exported SmolLM2-135M-Instruct at %s (run `make smollm2`)", dir)
	}
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(b)}); err != nil {
		b.Fatal(err)
	}
	words := strings.Fields("the a man woman child dog cat house river city road car small large old new quickly slowly then after before while because and but or walks runs sits stands looks opens closes takes gives finds holds carries water bread paper window door table chair garden street")
	rng := rand.New(rand.NewPCG(1, 2))
	text := func(n int) string {
		w := make([]string, n)
		for i := range w {
			w[i] = words[rng.IntN(len(words))]
		}
		return strings.Join(w, " ")
	}
	var reqs []Request
	for range 8 {
		ctx := "Question: " + text(80+rng.IntN(80)) + "\nAnswer:"
		for range 4 {
			reqs = append(reqs, Request{ctx, " " + text(3+rng.IntN(18)) + "."})
		}
	}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads%d", threads), func(b *testing.B) {
			m, err := Open(dir, Options{BatchSize: 8, Threads: threads})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			pairedPasses(b, m, reqs)
		})
	}
}

// pairedPasses scores reqs with the continuations in one run and split
// in turns and reports the medians (BenchmarkSharedConts).
func pairedPasses(b *testing.B, m *Model, reqs []Request) {
	pass := func(one bool) (wall, cpu float64) {
		m.contRunCost = defaultContRunCost
		if one {
			m.contRunCost = 1 << 30
		}
		start, c := time.Now(), testenv.CPUTime()
		if _, err := m.LogLikelihood(context.Background(), reqs); err != nil {
			b.Fatal(err)
		}
		return time.Since(start).Seconds(), (testenv.CPUTime() - c).Seconds()
	}
	pass(true)
	pass(false)
	var oneWall, oneCPU, splitWall, splitCPU []float64
	i := 0
	for b.Loop() {
		for _, one := range [][]bool{{true, false}, {false, true}}[i%2] {
			w, c := pass(one)
			if one {
				oneWall, oneCPU = append(oneWall, w), append(oneCPU, c)
			} else {
				splitWall, splitCPU = append(splitWall, w), append(splitCPU, c)
			}
		}
		i++
	}
	median := func(x []float64) float64 {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	b.ReportMetric(median(oneWall), "one-s/pass")
	b.ReportMetric(median(splitWall), "split-s/pass")
	b.ReportMetric(median(oneCPU), "one-cpu-s/pass")
	b.ReportMetric(median(splitCPU), "split-cpu-s/pass")
}
