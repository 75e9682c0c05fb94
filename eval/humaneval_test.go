package eval

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/sandbox"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
)

// TestHumanEvalCanonicalSolutions runs all 164 canonical solutions (pass@1
// must be 1) and 164 empty completions (pass@1 must be 0) through the same
// execution path the scores use.
func TestHumanEvalCanonicalSolutions(t *testing.T) {
	path := testenv.SharedData(t, "eval/HumanEval.jsonl.gz")
	problems, err := ReadHumanEval(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 164 {
		t.Fatalf("%d problems, want 164", len(problems))
	}
	canonical := make([][]string, len(problems))
	empty := make([][]string, len(problems))
	for i, p := range problems {
		canonical[i] = []string{p.CanonicalSolution}
		empty[i] = []string{""}
	}
	var log bytes.Buffer
	o := HumanEvalOptions{Log: &log}
	start := time.Now()
	run, err := RunHumanEval(context.Background(), problems, canonical, o)
	if err != nil {
		t.Fatal(err)
	}
	passed := run.Passed
	t.Logf("%s164 canonical solutions in %v (%s)", log.String(), time.Since(start).Round(time.Millisecond), run.Isolation)
	for i, p := range passed {
		if !p[0] {
			t.Errorf("%s: the canonical solution failed", problems[i].TaskID)
		}
	}
	if s := PassAtKScores(passed, []int{1})[0]; s.Value != 1 || s.N != 164 {
		t.Errorf("canonical %s = %g over %d problems, want 1 over 164", s.Metric, s.Value, s.N)
	}
	run, err = RunHumanEval(context.Background(), problems, empty, o)
	if err != nil {
		t.Fatal(err)
	}
	if s := PassAtKScores(run.Passed, []int{1})[0]; s.Value != 0 {
		t.Errorf("empty completions: %s = %g, want 0", s.Metric, s.Value)
	}
}

// TestHumanEvalHostileCompletions checks that completions which loop,
// fork, write outside their folder, open sockets or try to forge a pass
// are stopped and counted as failed while the harness keeps going, at the
// strongest isolation level here and at the fallback (MIGU_SANDBOX=
// fallback). Every hostile completion returns the right answer after its
// attack, so an attack the sandbox let through would show up as a pass.
func TestHumanEvalHostileCompletions(t *testing.T) {
	for _, level := range []string{sandbox.LevelAuto, sandbox.LevelFallback} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			testHostileCompletions(t, level)
		})
	}
}

func testHostileCompletions(t *testing.T, level string) {
	outside := filepath.Join(t.TempDir(), "escaped.txt")
	stamp := fmt.Sprintf("migu-humaneval-escape-%d-%s", os.Getpid(), level)
	tmpFile, shmFile := filepath.Join("/tmp", stamp), filepath.Join("/dev/shm", stamp)
	port, connections := testfix.Listener(t)
	problem := HumanEvalProblem{TaskID: "double", Prompt: "def double(x):\n", Test: "def check(f):\n    assert f(2) == 4\n    assert f(-3) == -6\n", EntryPoint: "double"}
	cases := []struct {
		name       string
		completion string
		pass       bool
	}{
		{"correct", "    return 2 * x", true},
		{"wrong", "    return x + 2", false},
		{"empty", "", false},
		// Issue 15's forgery: the token was on the interpreter's argv.
		{"forges the token from argv", "    import sys,os;t=[a for a in sys.argv if a.startswith('token=')][0][6:];sys.stdout.write('\\n'+t+'\\n');sys.stdout.flush();os._exit(0)", false},
		{"forges the token from /proc/self/cmdline", "    import os\n    a = open('/proc/self/cmdline', 'rb').read().split(b'\\0')\n    t = [x for x in a if x.startswith(b'token=')][0][6:]\n    os.write(1, b'\\n' + t + b'\\n')\n    os._exit(0)", false},
		{"forges the pass event", "    import os, sys\n    sys.audit('migu.sandbox.done')\n    os._exit(0)", false},
		{"prints and leaves", "    import os\n    print('all tests passed', flush=True)\n    os._exit(0)", false},
		{"exits early", "    import sys\n    sys.exit(0)", false},
		{"raises SystemExit", "    raise SystemExit(0)", false},
		{"kills its parent", "    import os\n    os.kill(os.getppid(), 9)\n    return 2 * x", false},
		{"loops forever", "    while True:\n        pass", false},
		{"sleeps", "    import time\n    time.sleep(1000)\n    return 2 * x", false},
		{"forks repeatedly", "    import os\n    for _ in range(100):\n        os.fork()\n    return 2 * x", false},
		{"fork bomb through libc", "    import ctypes\n    libc = ctypes.CDLL(None)\n    kids = 0\n    for _ in range(200):\n        pid = libc.fork()\n        if pid == 0:\n            import time\n            time.sleep(1000)\n        if pid > 0:\n            kids += 1\n    assert kids > 100\n    return 2 * x", false},
		{"writes outside", fmt.Sprintf("    open(%q, 'w').write('x')\n    return 2 * x", outside), false},
		{"writes outside through libc", fmt.Sprintf("    import ctypes\n    assert ctypes.CDLL(None).open(%q.encode(), 0o101, 0o644) >= 0\n    return 2 * x", outside), false},
		{"io.open to /tmp", fmt.Sprintf("    import io\n    io.open(%q, 'w').write('x')\n    return 2 * x", tmpFile), false},
		{"fills /dev/shm", fmt.Sprintf("    import io\n    f = io.open(%q, 'wb')\n    for _ in range(600):\n        f.write(bytes(1 << 20))\n    return 2 * x", shmFile), false},
		{"reads host /proc", "    import os\n    assert len(os.listdir('/proc')) >= 0\n    return 2 * x", false},
		{"deletes", "    import shutil\n    shutil.rmtree('/tmp/nonexistent-migu')\n    return 2 * x", false},
		{"opens a socket", fmt.Sprintf("    import socket\n    socket.create_connection(('127.0.0.1', %d), timeout=1).close()\n    return 2 * x", port), false},
		{"raw socket", fmt.Sprintf("    import _socket\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n    s.settimeout(1)\n    s.connect(('127.0.0.1', %d))\n    return 2 * x", port), false},
		{"eats memory", "    x = bytearray(8 << 30)\n    return 2 * x", false},
		{"correct after the others", "    return x * 2", true},
	}
	problems := make([]HumanEvalProblem, len(cases))
	completions := make([][]string, len(cases))
	for i, c := range cases {
		problems[i] = problem
		problems[i].TaskID = c.name
		completions[i] = []string{c.completion}
	}
	start := time.Now()
	run, err := RunHumanEval(context.Background(), problems, completions, HumanEvalOptions{Timeout: 5 * time.Second, MemoryMB: 512, Workers: 4, Sandbox: level})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d hostile and honest completions in %v under %s", len(cases), time.Since(start).Round(time.Millisecond), run.Isolation)
	if level == sandbox.LevelFallback && strings.HasPrefix(run.Isolation, "bubblewrap") {
		t.Errorf("MIGU_SANDBOX=fallback ran %s", run.Isolation)
	}
	for i, c := range cases {
		if c.name == "io.open to /tmp" && strings.HasPrefix(run.Isolation, "bubblewrap") {
			// There /tmp is the run's private scratch folder; that the
			// file did not outlive the run is checked below.
			c.pass = true
		}
		if run.Passed[i][0] != c.pass {
			t.Errorf("%s: passed = %v, want %v", c.name, run.Passed[i][0], c.pass)
		}
	}
	for _, p := range []string{outside, tmpFile, shmFile} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("a completion wrote %s", p)
		}
	}
	if n := connections(); n != 0 {
		t.Errorf("completions reached the host's network %d times", n)
	}
}

// TestHumanEvalCompletionScores scores a samples file with several
// samples per task against two problems and checks pass@1 (the mean of the
// per-task pass shares) and the file:line errors of bad samples files.
func TestHumanEvalCompletionScores(t *testing.T) {
	dir := t.TempDir()
	problems := filepath.Join(dir, "problems.jsonl")
	rows := `{"task_id": "t/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n", "test": "def check(c):\n    assert c(3) == 3\n", "entry_point": "f"}
{"task_id": "t/1", "prompt": "def g(x):\n", "canonical_solution": "    return -x\n", "test": "def check(c):\n    assert c(3) == -3\n", "entry_point": "g"}
`
	if err := os.WriteFile(problems, []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// t/0: 2 of 4 pass; t/1: 1 of 4 (a forgery among the failures).
	samples := write("samples.jsonl", `{"task_id": "t/0", "completion": "    return x\n"}
{"task_id": "t/0", "completion": "    return x + 1\n", "extra": 1}
{"task_id": "t/1", "completion": "    return -x\n"}
{"task_id": "t/0", "completion": "    return x * 1\n"}

{"task_id": "t/1", "completion": "    import sys,os;t=[a for a in sys.argv if a.startswith('token=')][0][6:];sys.stdout.write('\\n'+t+'\\n');sys.stdout.flush();os._exit(0)\n"}
{"task_id": "t/0", "completion": "    return 0\n"}
{"task_id": "t/1", "completion": "    return x\n"}
{"task_id": "t/1", "completion": "    return x\n"}
`)
	r, err := HumanEvalCompletionScores(context.Background(), problems, samples, HumanEvalOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Scores) != 1 || r.Scores[0].Metric != "pass@1" || math.Abs(r.Scores[0].Value-0.375) > 1e-12 || r.Scores[0].N != 2 || r.Isolation == "" {
		t.Errorf("got %+v, want pass@1 = (2/4 + 1/4)/2 = 0.375 over 2 problems with an isolation level", r)
	}
	bad := []struct{ name, body, want string }{
		{"not json", "{\"task_id\": \"t/0\", \"completion\": \"\"}\n{oops\n", "bad1.jsonl:2: not a JSON object"},
		{"no completion", `{"task_id": "t/0"}`, "bad2.jsonl:1: field completion is missing"},
		{"number", `{"task_id": "t/0", "completion": 5}`, "bad3.jsonl:1: field completion is not a string"},
		{"null", `{"task_id": null, "completion": ""}`, "bad4.jsonl:1: field task_id is not a string"},
		{"unknown task", "{\"task_id\": \"t/0\", \"completion\": \"\"}\n{\"task_id\": \"t/9\", \"completion\": \"\"}", "bad5.jsonl:2: task_id \"t/9\" is not a problem"},
		{"missing task", `{"task_id": "t/0", "completion": ""}`, "bad6.jsonl: no completion for t/1"},
		{"empty", "\n", "bad7.jsonl: no completions"},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			p := write(fmt.Sprintf("bad%d.jsonl", i+1), c.body)
			_, err := HumanEvalCompletionScores(context.Background(), problems, p, HumanEvalOptions{})
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a bad-input error containing %q", err, c.want)
			}
		})
	}
}

func FuzzParseCompletions(f *testing.F) {
	problems := []HumanEvalProblem{{TaskID: "t/0"}, {TaskID: "t/1"}}
	f.Add(`{"task_id": "t/0", "completion": "    return 1\n"}`)
	f.Add("{}\n[1]\n")
	f.Add(`{"task_id": "t/1", "completion": null}`)
	f.Fuzz(func(t *testing.T, body string) {
		c, err := parseCompletions(strings.NewReader(body), "fuzz.jsonl", problems)
		if err != nil {
			if !badinput.Is(err) {
				t.Fatalf("error %v is not bad input", err)
			}
			return
		}
		if len(c) != len(problems) || len(c[0])+len(c[1]) == 0 {
			t.Fatalf("accepted %d rows for %d problems", len(c[0])+len(c[1]), len(c))
		}
	})
}

// TestPassAtK compares the estimator with 1 − C(n−c,k)/C(n,k) computed
// exactly with big integers, and with a few values by hand.
func TestPassAtK(t *testing.T) {
	hand := []struct {
		n, c, k int
		want    float64
	}{
		{5, 2, 1, 0.4},       // 1 − 3/5
		{5, 2, 2, 0.7},       // 1 − C(3,2)/C(5,2) = 1 − 3/10
		{10, 0, 3, 0},        // nothing passed
		{4, 3, 2, 1},         // fewer failures than k
		{1, 1, 1, 1},         // a single passing sample
		{20, 1, 10, 0.5},     // 1 − C(19,10)/C(20,10) = 1 − 10/20
		{3, 1, 3, 1},         // k = n
		{200, 0, 100, 0},     // large n, no pass
		{200, 200, 100, 1.0}, // large n, all pass
	}
	for _, h := range hand {
		if got := PassAtK(h.n, h.c, h.k); math.Abs(got-h.want) > 1e-12 {
			t.Errorf("PassAtK(%d, %d, %d) = %g, want %g", h.n, h.c, h.k, got, h.want)
		}
	}
	for _, n := range []int{1, 7, 50, 200} {
		for c := 0; c <= n; c += max(1, n/9) {
			for _, k := range []int{1, 2, 5, 10, 100} {
				if k > n {
					continue
				}
				num := new(big.Int).Binomial(int64(n-c), int64(k))
				den := new(big.Int).Binomial(int64(n), int64(k))
				r, _ := new(big.Rat).SetFrac(num, den).Float64()
				if got := PassAtK(n, c, k); math.Abs(got-(1-r)) > 1e-12 {
					t.Errorf("PassAtK(%d, %d, %d) = %.15g, exact %.15g", n, c, k, got, 1-r)
				}
			}
		}
	}
	s := PassAtKScores([][]bool{{true, false, false, false, true}, {false, false, false, false, false}}, []int{1, 2})
	if s[0].Metric != "pass@1" || math.Abs(s[0].Value-0.2) > 1e-12 || s[1].Metric != "pass@2" || math.Abs(s[1].Value-0.35) > 1e-12 || s[0].N != 2 {
		t.Errorf("scores %+v, want pass@1 0.2 and pass@2 0.35 over 2 problems", s)
	}
}

func TestReadHumanEvalBadRows(t *testing.T) {
	good := `{"task_id": "t/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n", "test": "def check(c): pass", "entry_point": "f"}`
	cases := []struct {
		name, body, want string
	}{
		{"not json", good + "\n{nope", "rows.jsonl:2: not a JSON object"},
		{"missing field", `{"task_id": "a", "prompt": "p", "canonical_solution": "", "test": "t"}`, "rows.jsonl:1: field entry_point is missing"},
		{"number field", `{"task_id": 3, "prompt": "p", "canonical_solution": "", "test": "t", "entry_point": "f"}`, "rows.jsonl:1: field task_id is not a string"},
		{"empty prompt", `{"task_id": "a", "prompt": "", "canonical_solution": "", "test": "t", "entry_point": "f"}`, "rows.jsonl:1: field prompt is empty"},
		{"duplicate", good + "\n\n" + good, "rows.jsonl:3: task_id \"t/0\" repeats line 1"},
		{"empty file", "\n", "rows.jsonl: no problems"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rows.jsonl")
			if err := os.WriteFile(path, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadHumanEval(path)
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a bad-input error containing %q", err, c.want)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "ok.jsonl")
	if err := os.WriteFile(path, []byte(good+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := ReadHumanEval(path)
	if err != nil || len(ps) != 1 || ps[0].EntryPoint != "f" || ps[0].Program("    return 1\n") != "def f():\n    return 1\n\ndef check(c): pass\ncheck(f)\n" {
		t.Errorf("got %+v, %v", ps, err)
	}
}

func FuzzParseHumanEval(f *testing.F) {
	f.Add(`{"task_id": "t/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n", "test": "x", "entry_point": "f"}`)
	f.Add("{}\n[1]\n")
	f.Add("\n\n{\"task_id\": null}")
	f.Fuzz(func(t *testing.T, body string) {
		ps, err := parseHumanEval(strings.NewReader(body), "fuzz.jsonl")
		if err != nil {
			if !badinput.Is(err) {
				t.Fatalf("error %v is not bad input", err)
			}
			return
		}
		for _, p := range ps {
			if p.TaskID == "" || p.Prompt == "" || p.Test == "" || p.EntryPoint == "" {
				t.Fatalf("accepted a problem with an empty field: %+v", p)
			}
		}
	})
}

// TestHumanEvalScoresTinyModel runs the whole pipeline on three problems
// with a tiny random model: generation, execution, scores.
func TestHumanEvalScoresTinyModel(t *testing.T) {
	path := testenv.SharedData(t, "eval/HumanEval.jsonl.gz")
	_, m := tinyModel(t, "llama", Options{BatchSize: 4})
	var log bytes.Buffer
	r, err := HumanEvalScores(context.Background(), m, path, HumanEvalOptions{Limit: 3, Samples: 2, Temperature: 0.8, MaxNewTokens: 16, K: []int{1, 2}, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	scores := r.Scores
	t.Log(log.String())
	if len(scores) != 2 || scores[0].Metric != "pass@1" || scores[1].Metric != "pass@2" || scores[0].N != 3 {
		t.Fatalf("scores %+v", scores)
	}
	for _, s := range scores {
		if s.Value < 0 || s.Value > 1 {
			t.Errorf("%s = %g", s.Metric, s.Value)
		}
	}
	for _, o := range []HumanEvalOptions{{Samples: 3}, {Samples: 2, Temperature: 1, K: []int{3}}, {Samples: -1}} {
		if _, err := HumanEvalScores(context.Background(), m, path, o); !badinput.Is(err) {
			t.Errorf("%+v: got %v, want bad input", o, err)
		}
	}
}

// BenchmarkRunHumanEval measures the execution harness alone: the 164
// canonical solutions through the sandbox, one worker per CPU.
func BenchmarkRunHumanEval(b *testing.B) {
	problems, err := ReadHumanEval(testenv.SharedData(b, "eval/HumanEval.jsonl.gz"))
	if err != nil {
		b.Fatal(err)
	}
	canonical := make([][]string, len(problems))
	for i, p := range problems {
		canonical[i] = []string{p.CanonicalSolution}
	}
	for b.Loop() {
		if _, err := RunHumanEval(context.Background(), problems, canonical, HumanEvalOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(problems))*float64(b.N)/b.Elapsed().Seconds(), "programs/s")
}
