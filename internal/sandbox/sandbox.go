// Package sandbox runs untrusted Python programs (model-written code, as in
// HumanEval) one process each, with a wall-clock limit that kills the whole
// process tree, memory, process-count, file-size and CPU limits, and no way
// to record a pass but finishing the program: the run's secret token
// reaches the harness (preamble.py) on an inherited pipe, never on the
// command line, in the environment or in a file, and goes back on another
// pipe only after the program's last statement returned.
//
// The isolation is the strongest the system allows, found once by probing:
//
//   - bubblewrap+uid: bwrap (Flatpak's sandbox) with every namespace new, a
//     read-only view of /usr and /etc only, a fresh /proc in a new PID
//     namespace, private size-limited tmpfs folders for /tmp and /dev/shm
//     (nothing written outlives the run), no network, uid 65534 inside a
//     user namespace and, when migu runs as root, an unprivileged host uid
//     of the run's own;
//   - namespaces+uid and weaker fallbacks: new network and PID namespaces
//     and an unprivileged uid per run (root), or a user namespace, or
//     Python-level guards only; the file system and /proc are the host's,
//     guarded by the harness's audit hook.
//
// Every level adds the harness's seccomp filter (seccomp.go) and its audit
// hook (no ctypes, no subprocesses, no frames, no writes outside the
// scratch folder, no /proc). MIGU_SANDBOX=auto|bubblewrap|fallback picks
// the family; Isolation names the level in force.
package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/migu-ml/migu/internal/badinput"
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
	// ScratchMB is the size of each of the private tmpfs folders /tmp and
	// /dev/shm at the bubblewrap level.
	ScratchMB int
}

// DefaultLimits are generous enough for HumanEval's tests on a loaded
// machine and small enough that a runaway program cannot hurt it.
var DefaultLimits = Limits{Timeout: 10 * time.Second, MemoryMB: 1024, Processes: 16, FileSizeMB: 16, ScratchMB: 64}

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
	if l.ScratchMB <= 0 {
		l.ScratchMB = DefaultLimits.ScratchMB
	}
	return l
}

// Status is how a run ended.
type Status string

// The outcomes of a run. Only Passed counts as a success.
const (
	Passed   Status = "passed"    // the harness reported the whole program ran
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
	bwrap    bool // run under bubblewrap
	userNS   bool // a new user namespace mapping the caller to root inside
	netPID   bool // new network and PID namespaces (fallback levels)
	dropUID  bool // run as an unprivileged user id of its own (needs root)
	netGuard bool // sockets are refused by the preamble instead
}

// The levels, strongest first. The names are what reports show.
var modes = []mode{
	{name: "bubblewrap+uid", bwrap: true, dropUID: true},
	{name: "bubblewrap", bwrap: true},
	{name: "namespaces+uid", netPID: true, dropUID: true},
	{name: "userns+namespaces", userNS: true, netPID: true},
	{name: "namespaces", netPID: true},
	{name: "python-guards", netGuard: true},
}

// applicable reports whether m is for this user: root gets the own-uid
// levels (a user namespace or bwrap as root would map to host root), and
// others cannot have them.
func (m mode) applicable() bool {
	root := os.Geteuid() == 0
	if m.dropUID {
		return root
	}
	return !root || !m.userNS && !m.bwrap
}

// The values of MIGU_SANDBOX (and Options.Level).
const (
	LevelAuto       = "auto"
	LevelBubblewrap = "bubblewrap"
	LevelFallback   = "fallback"
)

// firstUID is the first of the user ids runs take when the sandbox drops
// root; each concurrent run has its own (see uidLock), so RLIMIT_NPROC
// counts only its processes and leftovers can be found and killed by uid.
const firstUID = 61000

// insideUID is the user id of the program inside bubblewrap's user
// namespace: nobody.
const insideUID = "65534"

// Sandbox runs programs with one interpreter and isolation level. It is
// safe for concurrent use.
type Sandbox struct {
	python string
	mode   mode
	bwrap  string // the bwrap binary at the bubblewrap levels
	filter []byte // the seccomp filter; nil where none is known
	// noGuards runs the harness without its audit hook and module blocks,
	// so that tests can check what the operating-system layers hold alone.
	noGuards bool
}

// Options configure New.
type Options struct {
	// Python is the interpreter; empty: python3 from PATH (resolved through
	// shims such as pyenv's), falling back to /usr/bin/python3 when the
	// first cannot run under the strongest isolation.
	Python string
	// Level is auto, bubblewrap or fallback; empty: $MIGU_SANDBOX, else
	// auto. bubblewrap fails when bwrap is missing or cannot run here.
	Level string
}

// New finds an interpreter and the strongest isolation of the chosen
// family that works here by running a tiny program under each in turn.
func New(o Options) (*Sandbox, error) {
	level := o.Level
	if level == "" {
		level = os.Getenv("MIGU_SANDBOX")
	}
	if level == "" {
		level = LevelAuto
	}
	if level != LevelAuto && level != LevelBubblewrap && level != LevelFallback {
		return nil, badinput.Errorf("MIGU_SANDBOX=%q: want auto, bubblewrap or fallback", level)
	}
	candidates := interpreters(o.Python)
	if len(candidates) == 0 {
		return nil, errors.New("sandbox: no python3 interpreter found on PATH")
	}
	bwrap, bwrapErr := exec.LookPath("bwrap")
	var firstErr error
	for _, m := range modes {
		if m.bwrap && level == LevelFallback || !m.bwrap && level == LevelBubblewrap {
			continue
		}
		if !m.applicable() {
			continue
		}
		if m.bwrap && bwrapErr != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("bwrap not found: %w", bwrapErr)
			}
			continue
		}
		s, err := probe(m, candidates, bwrap)
		if err == nil {
			return s, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if level == LevelBubblewrap {
		return nil, badinput.Errorf("MIGU_SANDBOX=bubblewrap: bubblewrap cannot run here (install the bubblewrap package, or use MIGU_SANDBOX=auto): %v", firstErr)
	}
	return nil, fmt.Errorf("sandbox: no way to run python here: %w", firstErr)
}

// probe returns a sandbox of mode m with the first interpreter that runs
// a tiny program under it.
func probe(m mode, interpreters []string, bwrap string) (*Sandbox, error) {
	var firstErr error
	for _, py := range interpreters {
		s := &Sandbox{python: py, mode: m, filter: seccompFilter()}
		if m.bwrap {
			s.bwrap = bwrap
		}
		res, err := s.Run(context.Background(), "print(sum(range(4)))", Limits{Timeout: 20 * time.Second})
		if err == nil && res.Status == Passed && strings.TrimSpace(res.Output) == "6" {
			return s, nil
		}
		if firstErr == nil {
			if err == nil {
				err = fmt.Errorf("%s: %s", res.Status, strings.TrimSpace(res.Output))
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

// Isolation names the isolation level the probe chose (bubblewrap+uid,
// bubblewrap, namespaces+uid, userns+namespaces, namespaces or
// python-guards), with ", no seccomp" where this architecture has no
// filter.
func (s *Sandbox) Isolation() string {
	if s.filter == nil {
		return s.mode.name + ", no seccomp"
	}
	return s.mode.name
}

// Bubblewrap reports whether runs are under bubblewrap: a private file
// system view, /proc and tmpfs folders.
func (s *Sandbox) Bubblewrap() bool { return s.mode.bwrap }

// OwnUser reports whether each run has an unprivileged user id of its
// own, so that file permissions and RLIMIT_NPROC bind even code that
// bypasses the Python-level guards.
func (s *Sandbox) OwnUser() bool { return s.mode.dropUID }

// NetworkIsolated reports whether runs have a network namespace of their
// own (no interfaces but a down loopback) rather than a Python guard.
func (s *Sandbox) NetworkIsolated() bool { return s.mode.netPID || s.mode.bwrap }

// bwrapBinds are the host folders visible read-only inside bubblewrap
// (symbolic links among them, as /bin on merged-/usr systems, are
// recreated as links).
var bwrapBinds = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// bwrapArgs are bubblewrap's options for one run, before the command.
func (s *Sandbox) bwrapArgs(l Limits) []string {
	// --as-pid-1: python is the PID namespace's init, so no bwrap init
	// process outlives the monitor as a zombie for the host's init to reap.
	args := []string{"--unshare-all", "--unshare-user", "--uid", insideUID, "--gid", insideUID,
		"--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"}
	for _, p := range bwrapBinds {
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(p); err == nil {
				args = append(args, "--symlink", target, p)
			}
		case fi.IsDir():
			args = append(args, "--ro-bind", p, p)
		}
	}
	// An interpreter outside those folders (pyenv, a venv) brings its
	// installation prefix.
	if prefix := filepath.Dir(filepath.Dir(s.python)); !underAny(prefix, bwrapBinds) {
		args = append(args, "--ro-bind", prefix, prefix)
	}
	size := strconv.FormatInt(int64(l.ScratchMB)<<20, 10)
	return append(args, "--proc", "/proc", "--dev", "/dev",
		"--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm",
		"--chdir", "/tmp", "--remount-ro", "/")
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// Run executes program (Python source) in a fresh scratch folder under
// the limits and reports how it ended. The error is for failures of the
// sandbox itself; a program that fails is a Result with Status Failed.
func (s *Sandbox) Run(ctx context.Context, program string, l Limits) (Result, error) {
	l = l.withDefaults()
	uid := -1
	if s.mode.dropUID {
		lock, err := s.takeUID(ctx)
		if err != nil {
			return Result{}, err
		}
		defer lock.release()
		uid = lock.uid
	}
	scratch, hostDir := "/tmp", "/"
	if !s.mode.bwrap {
		dir, err := os.MkdirTemp("", "migu-sandbox-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(dir)
		if uid >= 0 {
			if err := os.Chown(dir, uid, uid); err != nil {
				return Result{}, err
			}
		}
		scratch, hostDir = dir, dir
		// The harness compares resolved paths with it.
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			scratch = real
		}
	}
	token, err := newToken()
	if err != nil {
		return Result{}, err
	}
	tokenR, result, err := tokenPipes(token)
	if err != nil {
		return Result{}, err
	}
	defer tokenR.Close()
	defer result.r.Close()

	net := "namespace"
	if s.mode.netGuard {
		net = "guard"
	}
	guards := "1"
	if s.noGuards {
		guards = "0"
	}
	cpu := int(l.Timeout/time.Second) + 2
	py := []string{s.python, "-I", "-S", "-B", "-c", preamble,
		"mem=" + strconv.FormatInt(int64(l.MemoryMB)<<20, 10),
		"nproc=" + strconv.Itoa(l.Processes),
		"fsize=" + strconv.FormatInt(int64(l.FileSizeMB)<<20, 10),
		"cpu=" + strconv.Itoa(cpu),
		"net=" + net,
		"scratch=" + scratch,
		"seccomp=" + hex.EncodeToString(s.filter),
		"guards=" + guards,
	}
	name, args := py[0], py[1:]
	if s.mode.bwrap {
		name, args = s.bwrap, append(s.bwrapArgs(l), py...)
	}
	runCtx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, name, args...)
	cmd.Dir = hostDir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + scratch, "TMPDIR=" + scratch,
		"LANG=C.UTF-8", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1"}
	cmd.Stdin = strings.NewReader(program)
	out := &tailBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	// Descriptors 3 and 4 of the child: the token to read, the pipe to
	// report the pass on.
	cmd.ExtraFiles = []*os.File{tokenR, result.w}
	cmd.SysProcAttr = s.procAttr(uid)
	cmd.Cancel = func() error {
		killTree(cmd.Process.Pid, uid)
		return nil
	}
	// Grandchildren that outlive the program may hold the output pipes.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Start()
	tokenR.Close()
	result.w.Close()
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: starting %s: %w", name, err)
	}
	err = cmd.Wait()
	res := Result{Duration: time.Since(start), ExitCode: cmd.ProcessState.ExitCode()}
	killTree(cmd.Process.Pid, uid)
	reported := result.read()
	res.Output = out.String()
	switch {
	case runCtx.Err() != nil && ctx.Err() == nil:
		res.Status = TimedOut
	case ctx.Err() != nil:
		return res, ctx.Err()
	case err == nil && reported == token:
		res.Status = Passed
	default:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
			return res, fmt.Errorf("sandbox: running %s: %w", name, err)
		}
		res.Status = Failed
	}
	return res, nil
}

// resultPipe is the pipe the harness reports a pass on; a goroutine keeps
// the first bytes written to it.
type resultPipe struct {
	r, w *os.File
	done chan struct{}
	got  []byte
}

// tokenPipes makes the pipe holding the token (its write end already
// closed, so the harness reads to EOF) and the result pipe.
func tokenPipes(token string) (*os.File, *resultPipe, error) {
	tr, tw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	_, err = tw.WriteString(token)
	tw.Close()
	if err != nil {
		tr.Close()
		return nil, nil, err
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		tr.Close()
		return nil, nil, err
	}
	p := &resultPipe{r: rr, w: rw, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		b, _ := io.ReadAll(io.LimitReader(rr, 1<<10))
		p.got = b
		io.Copy(io.Discard, rr)
	}()
	return tr, p, nil
}

// read returns what the harness wrote, waiting at most a second for the
// last holders of the write end (killed with the run) to go.
func (p *resultPipe) read() string {
	select {
	case <-p.done:
	case <-time.After(time.Second):
		p.r.SetReadDeadline(time.Now())
		<-p.done
	}
	return string(p.got)
}

// procAttr sets the namespaces, the process group and the user of a run.
// At the bubblewrap levels bwrap makes the namespaces itself.
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
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}
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

// killUID sends SIGKILL to every live process whose real user id is uid
// and returns how many it found; zombies, which only their parent (or the
// host's init) can remove, are not counted.
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
		zombie := false
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && f[0] == "State:" {
				zombie = f[1] == "Z" || f[1] == "X"
			}
			if len(f) > 1 && f[0] == "Uid:" {
				if f[1] == want && !zombie {
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
