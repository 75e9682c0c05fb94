# migu sandbox harness: runs before the untrusted program, which it reads
# from standard input, and is the only code that can record a pass.
#
# The run's secret token arrives on file descriptor 3, which the harness
# reads to its end and closes before anything else runs; it is never on the
# command line, in the environment, in a file or in the program's source.
# The harness lowers the resource limits (soft and hard), installs the
# seccomp filter the sandbox built (no new processes or threads, no exec,
# no sockets but IP ones, no ptrace, namespaces or io_uring), forgets
# ctypes and the garbage collector's object graph, blocks every signal, and
# installs two audit
# hooks: the guard (_guard: what a test program has no use for) and the
# reporter (_reporter), which alone holds the token, in its closure, where
# no Python code can reach it (audit hooks cannot be listed; gc, tracing
# and profiling are refused). It runs the program as the module "program".
# Only when the module's last statement (the problem's check call) has
# returned does the harness, with signals blocked and the collector off so
# that no program code runs in between, raise the event the reporter
# answers: it checks that the event comes from the harness's own frame and
# that descriptor 4 is still the pipe the sandbox gave, writes the token
# there and exits. A program that exits early, fails, or prints anything
# cannot pass: the sandbox reads the token only from that pipe.


def _harness():
    import builtins
    import gc
    import os
    import posix
    import resource
    import signal
    import sys
    import types

    token_fd, result_fd = 3, 4
    token = b""
    while True:
        chunk = posix.read(token_fd, 4096)
        if not chunk:
            break
        token += chunk
    posix.close(token_fd)

    cfg = dict(arg.split("=", 1) for arg in sys.argv[1:])
    sys.argv = ["program.py"]
    src = sys.stdin.buffer.read()
    null = posix.open(os.devnull, os.O_RDONLY)
    posix.dup2(null, 0)
    posix.close(null)

    for which, value in (
        (resource.RLIMIT_AS, int(cfg["mem"])),
        (resource.RLIMIT_DATA, int(cfg["mem"])),
        (resource.RLIMIT_NPROC, int(cfg["nproc"])),
        (resource.RLIMIT_FSIZE, int(cfg["fsize"])),
        (resource.RLIMIT_CPU, int(cfg["cpu"])),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    # No signal reaches the program's Python code: all are blocked (the
    # filter then refuses sigprocmask and sigaction, so they stay blocked
    # and no handler can be set), and SIGINT, which interrupt_main raises
    # without the kernel, is ignored. A handler could otherwise run at any
    # bytecode, inside the reporter too. Timeouts kill with SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    if cfg.get("seccomp"):
        _seccomp(bytes.fromhex(cfg["seccomp"]))

    # Saved now, so that what the program replaces cannot reach the end.
    audit, exit_now = sys.audit, posix._exit
    gc_disable = gc.disable
    excepthook = sys.__excepthook__
    stdout, stderr = sys.stdout, sys.stderr

    sys.addaudithook(_reporter(token, result_fd, sys._getframe(0)))
    del token
    if cfg.get("guards", "1") == "1":
        _guard(cfg["scratch"], cfg["net"] != "namespace")
    # Nothing of the harness stays where the program can import it.
    main = sys.modules["__main__"].__dict__
    for name in [n for n in main if not n.startswith("__")]:
        del main[name]

    module = types.ModuleType("program")
    module.__file__ = "program.py"
    module.__builtins__ = builtins
    sys.modules["program"] = module
    try:
        code = compile(src, "program.py", "exec")
        del src
        exec(code, module.__dict__)
        stdout.flush()
        stderr.flush()
    except BaseException as e:  # noqa: B902 - every way out is a failure
        try:
            excepthook(type(e), e, e.__traceback__)
            stdout.flush()
            stderr.flush()
        finally:
            exit_now(1)
    try:
        gc_disable()
        audit("migu.sandbox.done")
    finally:
        exit_now(1)


def _reporter(token, result_fd, harness_frame):
    """Returns the audit hook that, on the event migu.sandbox.done raised
    by harness_frame itself, writes token to result_fd if that is still the
    pipe it was, and exits.

    Its frame reaches the token, so no program code may run while it is on
    the stack and no exception may leave it with its traceback: it
    allocates nothing before switching the collector off (a collection
    could run a program's finalizer), swallows every exception, and calls
    C functions only. No signal handler can run inside it: every signal is
    blocked and SIGINT ignored before the program starts (see _harness)."""
    import gc
    import posix
    import sys

    getframe, fstat, write, exit_now = sys._getframe, posix.fstat, posix.write, posix._exit
    isenabled, disable, enable = gc.isenabled, gc.disable, gc.enable
    st = fstat(result_fd)
    result_id = (st.st_dev, st.st_ino)

    def report(event, args):
        if event != "migu.sandbox.done":
            return
        was = isenabled()
        disable()
        try:
            if getframe(1) is harness_frame:
                st = fstat(result_fd)
                if (st.st_dev, st.st_ino) == result_id:
                    write(result_fd, token)
                    exit_now(0)
                exit_now(1)
        except BaseException:  # noqa: B902 - nothing may leave this frame
            pass
        if was:
            enable()

    return report


def _seccomp(prog):
    """Installs the classic BPF filter prog (8-byte sock_filter entries) with
    no_new_privs, as an unprivileged process may. A failure ends the run:
    the sandbox's probe then tries a weaker level and says so."""
    import ctypes

    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

    class FProg(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    fprog = FProg(len(prog) // 8, prog)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: prctl(PR_SET_SECCOMP)")


# Modules a test program has no use for that reach memory, processes or
# shared memory behind the audit hook's back.
_BLOCKED_MODULES = frozenset((
    "ctypes", "_ctypes", "_ctypes_test", "cffi", "_cffi_backend", "gc",
    "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing",
    "_posixshmem", "pty", "_testcapi", "_testinternalcapi", "_testbuffer",
    "_testmultiphase", "_testclinic", "_testimportmultiple", "_xxsubinterpreters",
    "_xxinterpchannels", "_xxtestfuzz", "faulthandler", "tracemalloc",
))

# Builtin modules that may not be made again (see _guard).
_NO_REMAKE = frozenset(("posix", "_signal", "_thread", "gc", "_imp", "sys", "builtins", "_io", "faulthandler", "_tracemalloc"))

# Audit events refused outright: new processes and threads, signals, tracing,
# profiling and object-graph introspection (the ways to a running hook's
# locals or a hook function's closure), new audit hooks, limit changes.
_BLOCKED_EVENTS = frozenset((
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
    "sys._current_frames", "sys._current_exceptions",
    "sys.settrace", "sys.setprofile", "sys.addaudithook",
    "sys.monitoring.register_callback",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "function.__new__", "code.__new__",
    "resource.setrlimit", "resource.prlimit",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.addressof",
    "cpython.PyInterpreterState_New", "_thread.start_new_thread",
    "os.add_dll_directory", "pty.spawn",
))

# Audit events whose first argument is a path that must lie in the scratch
# folder (changes to the file system).
_PATH_EVENTS = frozenset((
    "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.chflags",
    "os.lchflags", "os.truncate", "os.utime", "os.setxattr", "os.removexattr",
    "shutil.chown", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
    "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.make_archive",
    "shutil.unpack_archive",
))

# Audit events with two paths (source, destination), both in the scratch
# folder.
_TWO_PATH_EVENTS = frozenset(("os.rename", "os.link", "os.symlink"))


def _guard(scratch, block_sockets):
    """Forgets the blocked modules and installs the audit hook. The hook
    keeps references to C functions only, so that a program replacing
    os.path or os functions cannot change its decisions."""
    import os
    import posix
    import sys
    import types

    for name in list(sys.modules):
        if name.split(".")[0] in _BLOCKED_MODULES:
            del sys.modules[name]
    import _signal
    import _thread
    import signal

    for mods, names in (
        ((os, posix), ("mkfifo", "mknod", "fork", "forkpty", "kill", "killpg", "system")),
        # A Python signal handler or a simulated interrupt runs program code
        # (or raises) at whatever bytecode comes next, the reporter's too.
        ((signal, _signal), ("signal",)),
        ((_thread,), ("interrupt_main",)),
    ):
        for mod in mods:
            for name in names:
                if hasattr(mod, name):
                    delattr(mod, name)

    # os.open is the one file-creating call whose audit event does not
    # carry its dir_fd: a path relative to a descriptor of /tmp would pass
    # for one in the scratch folder. Its replacement refuses dir_fd, and
    # the original leaves every place a program could find it.
    real_open = posix.open

    def open_without_dir_fd(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None:
            raise PermissionError("sandbox: os.open with dir_fd is not allowed")
        return real_open(path, flags, mode)

    open_without_dir_fd.__name__ = open_without_dir_fd.__qualname__ = "open"
    for mod in (os, posix):
        mod.open = open_without_dir_fd
    for name in ("supports_dir_fd", "supports_fd", "supports_follow_symlinks", "supports_effective_ids"):
        group = getattr(os, name, None)
        if isinstance(group, set) and real_open in group:
            group.discard(real_open)

    # A builtin module made afresh would bring back what was taken from it
    # (posix.open, _signal.signal, _thread.interrupt_main, gc) without an
    # import audit event; the import system makes them through this call.
    import _imp

    real_create_builtin, no_remake, namespace = _imp.create_builtin, _NO_REMAKE, types.SimpleNamespace

    def create_builtin(spec):
        name = spec.name
        if type(name) is not str or name in no_remake:
            raise ImportError("sandbox: builtin module %r cannot be made again" % (name,))
        return real_create_builtin(namespace(name=name))

    _imp.create_builtin = create_builtin

    lstat, readlink, getcwd = posix.lstat, posix.readlink, posix.getcwd
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    blocked_modules, blocked_events = _BLOCKED_MODULES, _BLOCKED_EVENTS
    path_events, two_path_events = _PATH_EVENTS, _TWO_PATH_EVENTS
    dir_fd_last = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime"))

    def resolve(path):
        """The absolute path with every symbolic link resolved, or None. Only
        str and bytes are taken: a path-like object's __fspath__ is program
        code and could answer differently when the file is really opened."""
        if type(path) is bytes:
            p = path.decode("utf-8", "surrogateescape")
        elif type(path) is str:
            p = path
        else:
            return None
        if not p.startswith("/"):
            p = getcwd() + "/" + p
        pending = p.split("/")
        pending.reverse()
        done = []
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join(done + [part])
            try:
                is_link = (lstat(here).st_mode & 0o170000) == 0o120000
            except OSError:
                is_link = False
            if not is_link:
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                return None
            target = readlink(here)
            if target.startswith("/"):
                done = []
            parts = target.split("/")
            parts.reverse()
            pending.extend(parts)
        return "/" + "/".join(done)

    def inside(path):
        p = resolve(path)
        return p is not None and (p == scratch or p.startswith(scratch + "/") or p == "/dev/null")

    def is_proc(path):
        p = resolve(path)
        return p is None or p == "/proc" or p.startswith("/proc/")

    def hook(event, args):
        if event in blocked_events or event.startswith("ctypes."):
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import":
            if type(args[0]) is not str or args[0].split(".")[0] in blocked_modules:
                raise ImportError("sandbox: module %s is not available" % args[0])
        elif event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if is_proc(path):
                raise PermissionError("sandbox: /proc is not readable")
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writes and not inside(path):
                raise PermissionError("sandbox: writing outside the working folder")
        elif event in ("os.listdir", "os.scandir"):
            if args[0] is not None and not isinstance(args[0], int) and is_proc(args[0]):
                raise PermissionError("sandbox: /proc is not readable")
        elif event in path_events:
            if args and not isinstance(args[0], int) and not inside(args[0]):
                raise PermissionError("sandbox: %s outside the working folder" % event)
            if event in dir_fd_last and isinstance(args[-1], int) and args[-1] >= 0:
                raise PermissionError("sandbox: %s with dir_fd is not allowed" % event)
        elif event in two_path_events:
            if not inside(args[0]) or not inside(args[1]):
                raise PermissionError("sandbox: %s outside the working folder" % event)
            if any(isinstance(a, int) and a >= 0 for a in args[2:]):
                raise PermissionError("sandbox: %s with dir_fd is not allowed" % event)
        elif event == "socket.__new__" and block_sockets:
            raise PermissionError("sandbox: sockets are not allowed")

    sys.addaudithook(hook)


_harness()
