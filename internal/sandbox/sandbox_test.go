package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testfix"
)

var (
	sharedOnce sync.Once
	shared     *Sandbox
	sharedErr  error
)

func newSandbox(t *testing.T) *Sandbox {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = New(Options{}) })
	if sharedErr != nil {
		t.Skipf("no sandbox here: %v", sharedErr)
	}
	t.Logf("sandbox: %s with %s", shared.Isolation(), shared.Python())
	return shared
}

// TestRun drives each hostile behaviour through every isolation level that
// works here (the strongest is what New picks; the others are the
// fallbacks of other systems). Every hostile program would pass (exit 0
// after its last line) if the sandbox let the behaviour through, so a leak
// shows up as a pass.
func TestRun(t *testing.T) {
	newSandbox(t)
	ran := 0
	for _, m := range modes {
		s, err := probe(m, interpreters(""))
		if err != nil {
			t.Logf("%s: not available here: %v", m.name, err)
			continue
		}
		ran++
		t.Run(strings.ReplaceAll(m.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			testRun(t, s)
		})
	}
	if ran == 0 {
		t.Fatal("no isolation level works, though New found one")
	}
}

func testRun(t *testing.T, s *Sandbox) {
	outside := t.TempDir()
	target := filepath.Join(outside, "escaped.txt")
	port, connections := testfix.Listener(t)
	short := Limits{Timeout: 2 * time.Second, MemoryMB: 256, Processes: 8}
	cases := []struct {
		name    string
		program string
		want    Status
		output  string // a substring the output must hold
	}{
		{"passes", "assert 1 + 1 == 2\nprint('fine')", Passed, "fine"},
		{"failed assert", "assert 1 + 1 == 3", Failed, "AssertionError"},
		{"syntax error", "def f(:\n  pass", Failed, "SyntaxError"},
		{"empty", "", Passed, ""},
		{"early exit", "import sys\nsys.exit(0)\nassert False", Failed, ""},
		{"os._exit", "import os\nos._exit(0)", Failed, ""},
		{"infinite loop", "while True:\n    pass", TimedOut, ""},
		{"sleep", "import time\ntime.sleep(60)", TimedOut, ""},
		{"memory", "x = bytearray(1 << 30)\nprint(len(x))", Failed, "MemoryError"},
		{"fork bomb via os", "import os\nwhile True:\n    os.fork()", Failed, "disabled"},
		{"fork bomb via libc", "import ctypes, time\nlibc = ctypes.CDLL(None)\nn = 0\nfor _ in range(300):\n    pid = libc.fork()\n    if pid == 0:\n        time.sleep(60)\n        libc._exit(0)\n    if pid > 0:\n        n += 1\nprint(n)\nassert n > 100, n", Failed, ""},
		{"write outside", fmt.Sprintf("with open(%q, 'w') as f:\n    f.write('x')", target), Failed, "PermissionError"},
		{"write outside via libc", fmt.Sprintf("import ctypes\nlibc = ctypes.CDLL(None)\nfd = libc.open(%q.encode(), 0o101, 0o644)\nassert fd >= 0, fd", target), Failed, ""},
		{"write inside", "with open('here.txt', 'w') as f:\n    f.write('x')\nprint(open('here.txt').read())", Passed, "x"},
		{"delete", "import shutil\nshutil.rmtree('/tmp')", Failed, "disabled"},
		{"socket", fmt.Sprintf("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=1).sendall(b'x')", port), Failed, ""},
		{"raw socket via _socket", fmt.Sprintf("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.settimeout(1)\ns.connect(('127.0.0.1', %d))", port), Failed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !s.NetworkIsolated() && c.name == "raw socket via _socket" {
				t.Skip("no network namespace here: only the Python-level socket guard applies")
			}
			if !s.OwnUser() && strings.Contains(c.name, "libc") {
				t.Skip("OS-level limits need the unprivileged-uid mode")
			}
			l := short
			if c.want != TimedOut {
				// Only the endless cases need a short limit; a loaded
				// machine must not turn the others into timeouts.
				l.Timeout = 60 * time.Second
			}
			res, err := s.Run(context.Background(), c.program, l)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != c.want {
				t.Fatalf("status %q, want %q; output:\n%s", res.Status, c.want, res.Output)
			}
			if !strings.Contains(res.Output, c.output) {
				t.Errorf("output lacks %q:\n%s", c.output, res.Output)
			}
			if res.Status == TimedOut && res.Duration > short.Timeout+2*time.Second {
				t.Errorf("killed after %v, limit %v", res.Duration, short.Timeout)
			}
		})
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("a program wrote %s outside its folder", target)
	}
	if n := connections(); n > 0 {
		t.Errorf("programs reached the host network %d times", n)
	}
}

// TestRunParallel checks that concurrent runs keep working while a fork
// bomb and an endless loop run beside them.
func TestRunParallel(t *testing.T) {
	s := newSandbox(t)
	bomb := "import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass"
	if s.OwnUser() {
		// Past the Python guard: only the per-run process cap holds it.
		bomb = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()"
	}
	programs := []string{bomb, "while True: pass"}
	for i := range 6 {
		programs = append(programs, fmt.Sprintf("assert %d * 2 == %d", i, 2*i))
	}
	results := make([]Result, len(programs))
	var wg sync.WaitGroup
	for i, p := range programs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := Limits{Timeout: 60 * time.Second}
			if i < 2 {
				l.Timeout = 2 * time.Second
			}
			r, err := s.Run(context.Background(), p, l)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	if results[1].Status != TimedOut {
		t.Errorf("endless loop: %s", results[1].Status)
	}
	for i, r := range results[2:] {
		if r.Status != Passed {
			t.Errorf("program %d beside the hostile ones: %s\n%s", i, r.Status, r.Output)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 4}
	for _, s := range []string{"ab", "cde", "f"} {
		b.Write([]byte(s))
	}
	if got := b.String(); got != "cdef" {
		t.Errorf("tail %q, want %q", got, "cdef")
	}
}
