// Package sandbox runs untrusted Python programs (model-written code, as in
// HumanEval) one process each, with a wall-clock limit that kills the whole
// process tree, memory, process-count, file-size and CPU limits, a
// throwaway working folder as cwd and HOME, no network, and guards against
// writing outside that folder. The strongest isolation the system allows is
// found once by probing: new network and PID namespaces and an unprivileged
// user id per concurrent run when running as root, else a user namespace,
// else Python-level guards only. Isolation says which one is in force.
package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed preamble.py
var preamble string

// Limits bound one run. Zero fields take the defaults of DefaultLimits.
type Limits struct {
	// Timeout is the wall-clock limit; the process tree is killed after it.
	Timeout time.Duration
	// MemoryMB caps the address space (RLIMIT_AS) of the program.
	MemoryMB int
	// Processes caps the processes and threads of the run's user
	// (RLIMIT_NPROC), against fork bombs.
	Processes int
	// FileSizeMB caps the size of any file the program writes.
	FileSizeMB int
}

// DefaultLimits are generous enough for HumanEval's tests on a loaded
// machine and small enough that a runaway program cannot hurt it.
var DefaultLimits = Limits{Timeout: 10 * time.Second, MemoryMB: 1024, Processes: 16, FileSizeMB: 16}

func (l Limits) withDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultLimits.Timeout
	}
	if l.MemoryMB <= 0 {
		l.MemoryMB = DefaultLimits.MemoryMB
	}
	if l.Processes <= 0 {
		l.Processes = DefaultLimits.Processes
	}
	if l.FileSizeMB <= 0 {
		l.FileSizeMB = DefaultLimits.FileSizeMB
	}
	return l
}

// Status is how a run ended.
type Status string

// The outcomes of a run. Only Passed counts as a success.
const (
	Passed   Status = "passed"    // exit status 0 after the whole program ran
	Failed   Status = "failed"    // an exception, a failed assert, an early exit
	TimedOut Status = "timed out" // killed at the wall-clock limit
)

// Result is the outcome of one run.
type Result struct {
	Status   Status
	ExitCode int
	// Output is the tail of the program's standard output and error.
	Output   string
	Duration time.Duration
}

// mode is one isolation level the probe may pick.
type mode struct {
	name     string
	userNS   bool // a new user namespace mapping the caller to root inside
	netPID   bool // new network and PID namespaces
	dropUID  bool // run as an unprivileged user id of its own (needs root)
	netGuard bool // sockets are refused by the preamble instead
}

var modes = []mode{
	{name: "network+PID namespaces, unprivileged uid per run", netPID: true, dropUID: true},
	{name: "user+network+PID namespaces", userNS: true, netPID: true},
	{name: "network+PID namespaces (as root)", netPID: true},
	{name: "process group only; sockets refused in Python", netGuard: true},
}

// firstUID is the first of the user ids runs take when the sandbox drops
// root; each concurrent run has its own (see uidLock), so RLIMIT_NPROC
// counts only its processes and leftovers can be found and killed by uid.
const firstUID = 61000

// Sandbox runs programs with one interpreter and isolation level. It is
// safe for concurrent use.
type Sandbox struct {
	python string
	mode   mode
}

// Options configure New.
type Options struct {
	// Python is the interpreter; empty: python3 from PATH (resolved through
	// shims such as pyenv's), falling back to /usr/bin/python3 when the
	// first cannot run under the strongest isolation.
	Python string
}

// New finds an interpreter and the strongest isolation that works here by
// running a tiny program under each in turn.
func New(o Options) (*Sandbox, error) {
	candidates := interpreters(o.Python)
	if len(candidates) == 0 {
		return nil, errors.New("sandbox: no python3 interpreter found on PATH")
	}
	var firstErr error
	for _, m := range modes {
		if m.userNS && os.Geteuid() == 0 {
			continue // root gets the stronger own-uid mode
		}
		s, err := probe(m, candidates)
		if err == nil {
			return s, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("sandbox: no way to run python here: %w", firstErr)
}

// probe returns a sandbox of mode m with the first interpreter that runs
// a tiny program under it.
func probe(m mode, interpreters []string) (*Sandbox, error) {
	if m.dropUID && os.Geteuid() != 0 {
		return nil, fmt.Errorf("%s needs root", m.name)
	}
	var firstErr error
	for _, py := range interpreters {
		s := &Sandbox{python: py, mode: m}
		res, err := s.Run(context.Background(), "print(sum(range(4)))", Limits{Timeout: 20 * time.Second})
		if err == nil && res.Status == Passed && strings.TrimSpace(res.Output) == "6" {
			return s, nil
		}
		if firstErr == nil {
			if err == nil {
				err = fmt.Errorf("%s: %s", res.Status, res.Output)
			}
			firstErr = fmt.Errorf("%s under %s: %w", py, m.name, err)
		}
	}
	return nil, firstErr
}

// interpreters lists the python3 binaries to try, explicit first.
func interpreters(explicit string) []string {
	if explicit != "" {
		return []string{explicit}
	}
	var out []string
	add := func(p string) {
		if p == "" {
			return
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		for _, q := range out {
			if q == p {
				return
			}
		}
		out = append(out, p)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		// Shims (pyenv) are scripts that fork; ask the interpreter itself.
		if b, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output(); err == nil {
			add(strings.TrimSpace(string(b)))
		} else {
			add(p)
		}
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		add("/usr/bin/python3")
	}
	return out
}

// Python is the interpreter in use.
func (s *Sandbox) Python() string { return s.python }

// Isolation describes the isolation level the probe chose.
func (s *Sandbox) Isolation() string { return s.mode.name }

// OwnUser reports whether each run has an unprivileged user id of its
// own, so that file permissions and RLIMIT_NPROC bind even code that
// bypasses the Python-level guards (ctypes, say).
func (s *Sandbox) OwnUser() bool { return s.mode.dropUID }

// NetworkIsolated reports whether runs have a network namespace of their
// own (no interfaces but a down loopback) rather than a Python guard.
func (s *Sandbox) NetworkIsolated() bool { return s.mode.netPID }

// Run executes program (Python source) in a fresh temporary folder under
// the limits and reports how it ended. The error is for failures of the
// sandbox itself; a program that fails is a Result with Status Failed.
func (s *Sandbox) Run(ctx context.Context, program string, l Limits) (Result, error) {
	l = l.withDefaults()
	dir, err := os.MkdirTemp("", "migu-sandbox-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	uid := -1
	if s.mode.dropUID {
		lock, err := s.takeUID(ctx)
		if err != nil {
			return Result{}, err
		}
		defer lock.release()
		uid = lock.uid
		if err := os.Chown(dir, uid, uid); err != nil {
			return Result{}, err
		}
	}
	token, err := newToken()
	if err != nil {
		return Result{}, err
	}
	net := "namespace"
	if s.mode.netGuard {
		net = "guard"
	}
	cpu := int(l.Timeout/time.Second) + 2
	args := []string{"-I", "-B", "-c", preamble,
		"mem=" + strconv.FormatInt(int64(l.MemoryMB)<<20, 10),
		"nproc=" + strconv.Itoa(l.Processes),
		"fsize=" + strconv.FormatInt(int64(l.FileSizeMB)<<20, 10),
		"cpu=" + strconv.Itoa(cpu),
		"net=" + net,
		"token=" + token,
	}
	runCtx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, s.python, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "TMPDIR=" + dir,
		"LANG=C.UTF-8", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1"}
	cmd.Stdin = strings.NewReader(program)
	out := &tailBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = s.procAttr(uid)
	cmd.Cancel = func() error {
		killTree(cmd.Process.Pid, uid)
		return nil
	}
	// Grandchildren that outlive the program may hold the output pipes.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Run()
	res := Result{Duration: time.Since(start), ExitCode: cmd.ProcessState.ExitCode()}
	if cmd.Process != nil {
		killTree(cmd.Process.Pid, uid)
	}
	text := out.String()
	switch {
	case runCtx.Err() != nil && ctx.Err() == nil:
		res.Status = TimedOut
	case ctx.Err() != nil:
		return res, ctx.Err()
	case err == nil && strings.HasSuffix(text, "\n"+token+"\n"):
		res.Status = Passed
		text = strings.TrimSuffix(text, "\n"+token+"\n")
	default:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
			return res, fmt.Errorf("sandbox: running %s: %w", s.python, err)
		}
		res.Status = Failed
	}
	res.Output = text
	return res, nil
}

// procAttr sets the namespaces, the process group and the user of a run.
func (s *Sandbox) procAttr(uid int) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.mode.netPID {
		a.Cloneflags |= syscall.CLONE_NEWNET | syscall.CLONE_NEWPID
	}
	if s.mode.userNS {
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	if uid >= 0 {
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), NoSetGroups: false}
	}
	return a
}

// uidLock is a user id held by one run: an exclusive flock on a file named
// after it, so that runs of every process on the machine (parallel test
// binaries, two evaluations) never share an id, and killing the leftovers
// of one run cannot touch another.
type uidLock struct {
	uid int
	f   *os.File
}

// maxUIDs bounds the ids tried; more concurrent runs than this wait.
const maxUIDs = 4096

func (s *Sandbox) takeUID(ctx context.Context) (*uidLock, error) {
	dir := filepath.Join(os.TempDir(), "migu-sandbox-uids")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for {
		for uid := firstUID; uid < firstUID+maxUIDs; uid++ {
			f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(uid)), os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				return nil, err
			}
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				// A run of a process that died may have left processes.
				killUID(uid)
				return &uidLock{uid: uid, f: f}, nil
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *uidLock) release() {
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// killTree kills the run's process group, the run's PID namespace (by
// killing its first process), and, when the run had a user id of its own,
// every process left with that id (a child that left the group).
func killTree(pid, uid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	if uid < 0 {
		return
	}
	for round := 0; round < 5; round++ {
		if killUID(uid) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killUID sends SIGKILL to every process whose real user id is uid and
// returns how many it found.
func killUID(uid int) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := strconv.Itoa(uid)
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				if f[1] == want {
					syscall.Kill(pid, syscall.SIGKILL)
					n++
				}
				break
			}
		}
	}
	return n
}

func newToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "migu-sandbox-done-" + hex.EncodeToString(b), nil
}

// tailBuffer keeps the last max bytes written to it, so a program that
// prints without end cannot exhaust memory.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = bytes.Clone(t.buf[over:])
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
