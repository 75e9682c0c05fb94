package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testfix"
)

var (
	sharedOnce sync.Once
	shared     *Sandbox
	sharedErr  error
)

func newSandbox(t testing.TB) *Sandbox {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = New(Options{}) })
	if sharedErr != nil {
		t.Skipf("no sandbox here: %v", sharedErr)
	}
	t.Logf("sandbox: %s with %s", shared.Isolation(), shared.Python())
	return shared
}

// levelsOnce probes every isolation level that can work for this user.
var (
	levelsOnce sync.Once
	levelsHere []*Sandbox
)

// levels returns a sandbox for every isolation level that works here: the
// strongest is what New picks, the others are the fallbacks of other
// systems (MIGU_SANDBOX=fallback forces the best of those).
func levels(t testing.TB) []*Sandbox {
	t.Helper()
	newSandbox(t)
	levelsOnce.Do(func() {
		bwrap, _ := exec.LookPath("bwrap")
		for _, m := range modes {
			if !m.applicable() || m.bwrap && bwrap == "" {
				continue
			}
			if s, err := probe(m, interpreters(""), bwrap); err == nil {
				levelsHere = append(levelsHere, s)
			} else {
				t.Logf("%s: not available here: %v", m.name, err)
			}
		}
	})
	if len(levelsHere) == 0 {
		t.Fatal("no isolation level works, though New found one")
	}
	return levelsHere
}

// TestRun drives each hostile behaviour through every isolation level that
// works here. Every hostile program would pass (exit 0 after its last
// line) if the sandbox let the behaviour through, so a leak shows up as a
// pass.
func TestRun(t *testing.T) {
	for _, s := range levels(t) {
		t.Run(s.mode.name, func(t *testing.T) {
			t.Parallel()
			testRun(t, s)
		})
	}
}

func testRun(t *testing.T, s *Sandbox) {
	outside := t.TempDir()
	target := filepath.Join(outside, "escaped.txt")
	port, connections := testfix.Listener(t)
	sock, unixConnections := unixListener(t)
	stamp := fmt.Sprintf("migu-escape-%d-%s", os.Getpid(), strings.ReplaceAll(s.mode.name, "+", "-"))
	tmpFile, shmFile := filepath.Join("/tmp", stamp), filepath.Join("/dev/shm", stamp)
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
		{"stdlib helpers", "import collections, dataclasses, hashlib, math, re, itertools, functools\n@dataclasses.dataclass\nclass P:\n    x: int\nassert P(1).x == collections.namedtuple('Q', 'a')(1).a\nassert hashlib.md5(b'a').hexdigest().startswith('0cc1')", Passed, ""},
		{"early exit", "import sys\nsys.exit(0)\nassert False", Failed, ""},
		{"raise SystemExit", "raise SystemExit(0)", Failed, ""},
		{"os._exit", "import os\nos._exit(0)", Failed, ""},
		{"prints then os._exit", "import os, sys\nprint('passed')\nsys.stdout.flush()\nos._exit(0)", Failed, ""},
		// The attack of issue 15, verbatim: the token was on argv.
		{"token from argv", "import sys,os;t=[a for a in sys.argv if a.startswith('token=')][0][6:];sys.stdout.write('\\n'+t+'\\n');sys.stdout.flush();os._exit(0)", Failed, ""},
		{"token from /proc/self/cmdline", "import os\nargs = open('/proc/self/cmdline', 'rb').read().split(b'\\0')\nt = [a for a in args if a.startswith(b'token=')][0][6:]\nos.write(1, b'\\n' + t + b'\\n')\nos._exit(0)", Failed, ""},
		{"reads /proc/self/environ", "print(open('/proc/self/environ', 'rb').read())", Failed, "PermissionError"},
		{"lists host /proc", "import os\nprint(len(os.listdir('/proc')))", Failed, "PermissionError"},
		{"forged pass event", "import os, sys\nsys.audit('migu.sandbox.done')\nos._exit(0)", Failed, ""},
		{"swaps the result pipe", "import os\nos.close(4)\nr, w = os.pipe()\nassert w == 4 or os.dup2(w, 4) == 4", Failed, ""},
		{"kills its parent", "import os\nos.kill(os.getppid(), 9)", Failed, ""},
		// A signal handler runs at the next bytecode, wherever that is: it
		// would look for the token in the frames of a forged pass event.
		{"signal handler in the reporter", "import os, signal, sys\ndef grab(*_):\n    f = sys._getframe(1)\n    while f:\n        for v in f.f_locals.values():\n            if isinstance(v, bytes) and v.startswith(b'migu-sandbox-done-'):\n                os.write(4, v)\n                os._exit(0)\n        f = f.f_back\nsignal.signal(signal.SIGALRM, grab)\nsignal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)\nfor _ in range(100000):\n    sys.audit('migu.sandbox.done')", Failed, ""},
		{"gc through importlib", "import importlib\ngc = importlib.import_module('gc')\nprint(len(gc.get_objects()))", Failed, "gc"},
		{"interrupt_main", "import _thread\n_thread.interrupt_main()", Failed, "interrupt_main"},
		{"remade _signal", "import _imp, importlib.machinery\n_imp.create_builtin(importlib.machinery.ModuleSpec('_signal', None)).signal(14, print)", Failed, "cannot be made again"},
		{"remade posix", "import _imp, importlib.machinery\n_imp.create_builtin(importlib.machinery.ModuleSpec('posix', None)).open", Failed, "cannot be made again"},
		{"timer signal", "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(0.1)\nprint('alive')", Passed, "alive"},
		{"infinite loop", "while True:\n    pass", TimedOut, ""},
		{"sleep", "import time\ntime.sleep(60)", TimedOut, ""},
		{"memory", "x = bytearray(1 << 30)\nprint(len(x))", Failed, "MemoryError"},
		{"fork bomb via os", "import os\nwhile True:\n    os.fork()", Failed, "fork"},
		{"fork bomb via libc", "import ctypes, time\nlibc = ctypes.CDLL(None)\nn = 0\nfor _ in range(300):\n    pid = libc.fork()\n    if pid == 0:\n        time.sleep(60)\n        libc._exit(0)\n    if pid > 0:\n        n += 1\nprint(n)\nassert n > 100, n", Failed, "ctypes"},
		{"write outside", fmt.Sprintf("with open(%q, 'w') as f:\n    f.write('x')", target), Failed, "Error"},
		{"write outside via libc", fmt.Sprintf("import ctypes\nlibc = ctypes.CDLL(None)\nfd = libc.open(%q.encode(), 0o101, 0o644)\nassert fd >= 0, fd", target), Failed, ""},
		{"io.open to /tmp", fmt.Sprintf("import io\nio.open(%q, 'w').write('x')", tmpFile), Failed, "PermissionError"},
		{"io.open to /dev/shm", fmt.Sprintf("import io\nf = io.open(%q, 'wb')\nfor _ in range(64):\n    f.write(bytes(1 << 20))", shmFile), Failed, "PermissionError"},
		{"os.open relative to a dir_fd", fmt.Sprintf("import os\nd = os.open(%q, os.O_RDONLY)\nos.write(os.open(%q, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d), b'x')", filepath.Dir(tmpFile), filepath.Base(tmpFile)+"-dirfd"), Failed, "dir_fd"},
		{"os.mkdir relative to a dir_fd", fmt.Sprintf("import os\nd = os.open(%q, os.O_RDONLY)\nos.mkdir(%q, dir_fd=d)", filepath.Dir(tmpFile), filepath.Base(tmpFile)+"-dirfd-dir"), Failed, "dir_fd"},
		{"original os.open", "import os, sys\nfound = [f for m in list(sys.modules.values()) for f in list(vars(m).values()) + [g for s in vars(m).values() if isinstance(s, set) for g in s] if getattr(f, '__module__', None) == 'posix' and getattr(f, '__name__', '') == 'open']\nassert not found, found", Passed, ""},
		{"os.open to /dev/shm", fmt.Sprintf("import os\nos.write(os.open(%q, os.O_WRONLY | os.O_CREAT), b'x')", shmFile), Failed, "PermissionError"},
		{"write inside", "with open('here.txt', 'w') as f:\n    f.write('x')\nprint(open('here.txt').read())", Passed, "x"},
		{"delete", "import shutil\nshutil.rmtree('/tmp')", Failed, "Error"},
		{"socket", fmt.Sprintf("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=1).sendall(b'x')", port), Failed, ""},
		{"raw socket via _socket", fmt.Sprintf("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.settimeout(1)\ns.connect(('127.0.0.1', %d))", port), Failed, ""},
		{"host unix socket", fmt.Sprintf("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect(%q)\ns.sendall(b'x')", sock), Failed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !s.NetworkIsolated() && c.name == "raw socket via _socket" {
				t.Skip("no network namespace here: only the Python-level socket guard applies")
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
			if c.name == "io.open to /tmp" && s.Bubblewrap() {
				// /tmp is the run's private scratch folder there; that
				// nothing outlives the run is checked below.
				c.want, c.output = Passed, ""
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
	for _, p := range []string{target, tmpFile, shmFile, tmpFile + "-dirfd", tmpFile + "-dirfd-dir"} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("a program wrote %s outside its folder", p)
		}
	}
	if n := connections(); n > 0 {
		t.Errorf("programs reached the host network %d times", n)
	}
	if n := unixConnections(); n > 0 {
		t.Errorf("programs reached a host Unix socket %d times", n)
	}
}

// unixListener listens on a filesystem Unix socket in a temporary folder
// and counts the connections it accepts.
func unixListener(t *testing.T) (path string, connections func() int64) {
	t.Helper()
	dir, err := os.MkdirTemp("", "migu-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// World-accessible, so that only the sandbox stands between a program
	// of another uid and the socket.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o777)
	return path, testfix.Count(t, ln)
}

// TestOSLayers runs attacks with the harness's audit hook and module
// blocks off, so that only the operating-system layers stand: the token
// kept off argv, environment and files, seccomp, the namespaces, and at
// the bubblewrap levels the private file system. What the fallback levels
// leave to the Python guard (host /tmp, /dev/shm and /proc) is checked at
// the bubblewrap levels only.
func TestOSLayers(t *testing.T) {
	for _, s := range levels(t) {
		t.Run(s.mode.name, func(t *testing.T) {
			t.Parallel()
			bare := *s
			bare.noGuards = true
			testOSLayers(t, &bare)
		})
	}
}

func testOSLayers(t *testing.T, s *Sandbox) {
	port, connections := testfix.Listener(t)
	sock, unixConnections := unixListener(t)
	stamp := fmt.Sprintf("migu-escape-bare-%d-%s", os.Getpid(), strings.ReplaceAll(s.mode.name, "+", "-"))
	tmpFile, shmFile := filepath.Join("/tmp", stamp), filepath.Join("/dev/shm", stamp)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The token is looked for everywhere the program can read: a find is
	// reported on the result pipe as the harness would.
	hunt := `import os, sys
def scan(data):
    i = data.find(b"migu-sandbox-done-")
    if i >= 0:
        os.write(4, data[i:i + 42])
        os._exit(0)
scan(" ".join(sys.argv).encode())
scan(repr(os.environ).encode())
for root in ["/proc/self", "/proc/1"] + ["/proc/" + p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("cmdline", "environ"):
        try:
            scan(open(root + "/" + name, "rb").read())
        except OSError:
            pass
for d in (".", os.environ.get("HOME", ".")):
    for name in os.listdir(d):
        try:
            scan(open(os.path.join(d, name), "rb").read())
        except OSError:
            pass
os._exit(0)
`
	cases := []struct {
		name    string
		program string
		want    Status
		output  string
		bwrap   bool // checked at the bubblewrap levels only
	}{
		{name: "token nowhere to read", program: hunt, want: Failed},
		{name: "fork", program: "import os\nos.fork()", want: Failed, output: "Operation not permitted"},
		{name: "exec", program: "import os\nos.execv('/bin/true', ['true'])", want: Failed, output: "Operation not permitted"},
		{name: "signal handler", program: "import signal\nsignal.signal(signal.SIGALRM, print)", want: Failed, output: "Operation not permitted"},
		{name: "signal mask", program: "import signal\nsignal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])", want: Failed, output: "Operation not permitted"},
		{name: "host unix socket", program: fmt.Sprintf("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect(%q)", sock), want: Failed, output: "Operation not permitted"},
		{name: "network", program: fmt.Sprintf("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=1)", port), want: Failed},
		{name: "host /proc hidden", program: fmt.Sprintf("import os\nseen = []\nfor p in os.listdir('/proc'):\n    try:\n        seen.append(open('/proc/%%s/cmdline' %% p, 'rb').read())\n    except OSError:\n        pass\nassert not any(%q.encode() in c for c in seen), 'host processes visible'\nprint(len(seen), 'processes')", self), want: Passed, bwrap: true},
		{name: "/tmp and /dev/shm private", program: fmt.Sprintf("for p in (%q, %q):\n    open(p, 'w').write('x')\nprint('written')", tmpFile, shmFile), want: Passed, output: "written", bwrap: true},
		{name: "/dev/shm fill bounded", program: fmt.Sprintf("import errno\nf = open(%q, 'wb')\nn = 0\ntry:\n    for _ in range(600):\n        f.write(bytes(1 << 20))\n        f.flush()\n        n += 1\nexcept OSError as e:\n    assert e.errno == errno.ENOSPC, e\nassert n <= 8, n\nprint('stopped after', n, 'MiB')", shmFile+"-fill"), want: Passed, output: "stopped after", bwrap: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "network" && !s.NetworkIsolated() {
				t.Skip("no network namespace at this level")
			}
			if c.bwrap && !s.Bubblewrap() {
				// Run bare, the program would write to the host's /tmp and
				// fill its /dev/shm.
				t.Skipf("left to the Python guard at %s", s.mode.name)
			}
			res, err := s.Run(context.Background(), c.program, Limits{Timeout: 60 * time.Second, MemoryMB: 256, FileSizeMB: 1024, ScratchMB: 8})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != c.want || !strings.Contains(res.Output, c.output) {
				t.Errorf("status %q, want %q with %q; output:\n%s", res.Status, c.want, c.output, res.Output)
			}
		})
	}
	for _, p := range []string{tmpFile, shmFile, shmFile + "-fill"} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s outlived the run", p)
		}
	}
	if n := connections(); n > 0 {
		t.Errorf("programs reached the host network %d times", n)
	}
	if n := unixConnections(); n > 0 {
		t.Errorf("programs reached a host Unix socket %d times", n)
	}
}

// TestNewLevel checks MIGU_SANDBOX: an unknown value and bubblewrap where
// bwrap cannot be found are bad input; fallback never picks bubblewrap.
func TestNewLevel(t *testing.T) {
	newSandbox(t)
	if _, err := New(Options{Level: "docker"}); !badinput.Is(err) || !strings.Contains(err.Error(), "MIGU_SANDBOX") {
		t.Errorf("unknown level: %v", err)
	}
	s, err := New(Options{Level: LevelFallback})
	if err != nil || s.Bubblewrap() {
		t.Errorf("fallback: %v, %+v", err, s)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := New(Options{Level: LevelBubblewrap}); !badinput.Is(err) || !strings.Contains(err.Error(), "bubblewrap") {
		t.Errorf("bubblewrap without bwrap: %v", err)
	}
	t.Setenv("MIGU_SANDBOX", "nope")
	if _, err := New(Options{}); !badinput.Is(err) {
		t.Errorf("MIGU_SANDBOX=nope: %v", err)
	}
}

// TestRunParallel checks that concurrent runs keep working while a fork
// bomb and an endless loop run beside them.
func TestRunParallel(t *testing.T) {
	s := newSandbox(t)
	bomb := "import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass"
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

// BenchmarkRunLevels measures the cost of one small program at each
// isolation level: process start, isolation set-up, harness, teardown.
func BenchmarkRunLevels(b *testing.B) {
	for _, s := range levels(b) {
		b.Run(s.mode.name, func(b *testing.B) {
			for b.Loop() {
				res, err := s.Run(context.Background(), "assert sum(range(4)) == 6", Limits{Timeout: 20 * time.Second})
				if err != nil || res.Status != Passed {
					b.Fatal(err, res.Status, res.Output)
				}
			}
		})
	}
}
