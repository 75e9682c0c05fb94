# migu sandbox preamble: runs before the untrusted program, which it reads
# from standard input. It lowers the resource limits (soft and hard, so the
# program cannot raise them again), switches off the functions that delete,
# move, signal or spawn, refuses writes outside the working folder, blocks
# sockets when the process has no network namespace of its own, then runs
# the program. The last line printed on success is the run's token: a
# program that exits early (sys.exit, os._exit) never prints it, so it
# cannot pass by leaving before its checks run.
import builtins
import os
import resource
import sys

_cfg = dict(arg.split("=", 1) for arg in sys.argv[1:])
_src = sys.stdin.read()
sys.stdin = open(os.devnull)


def _lower(which, value):
    if value <= 0:
        return
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


_lower(resource.RLIMIT_AS, int(_cfg["mem"]))
_lower(resource.RLIMIT_DATA, int(_cfg["mem"]))
_lower(resource.RLIMIT_NPROC, int(_cfg["nproc"]))
_lower(resource.RLIMIT_FSIZE, int(_cfg["fsize"]))
_lower(resource.RLIMIT_CPU, int(_cfg["cpu"]))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

_home = os.path.realpath(os.getcwd())


def _inside(path):
    try:
        if isinstance(path, int):
            return True
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == _home or p.startswith(_home + os.sep) or p == os.devnull


def _refuse(name):
    def refused(*args, **kwargs):
        raise PermissionError("sandbox: %s is disabled" % name)

    return refused


_open = builtins.open


def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError("sandbox: writing outside the working folder")
    return _open(file, mode, *args, **kwargs)


_os_open = os.open
_write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _write_flags and not _inside(path):
        raise PermissionError("sandbox: writing outside the working folder")
    return _os_open(path, flags, *args, **kwargs)


builtins.open = _guarded_open
os.open = _guarded_os_open
for _name in (
    "kill", "killpg", "system", "putenv", "unsetenv", "remove", "unlink",
    "removedirs", "rmdir", "rename", "renames", "replace", "truncate",
    "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot",
    "chdir", "fchdir", "fork", "forkpty", "setuid", "setgid", "setsid",
    "link", "symlink", "mkfifo", "mknod", "execv", "execve", "execl",
    "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "popen",
):
    if hasattr(os, _name):
        setattr(os, _name, _refuse("os." + _name))

import shutil  # noqa: E402
import subprocess  # noqa: E402

for _name in ("rmtree", "move", "chown", "copyfile", "copy", "copy2", "copytree"):
    setattr(shutil, _name, _refuse("shutil." + _name))
subprocess.Popen = _refuse("subprocess.Popen")
for _name in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, _name, _refuse("subprocess." + _name))

if _cfg["net"] != "namespace":
    import socket  # noqa: E402

    socket.socket = _refuse("socket.socket")
    socket.create_connection = _refuse("socket.create_connection")
    socket.socketpair = _refuse("socket.socketpair")
    socket.fromfd = _refuse("socket.fromfd")

_token = _cfg["token"]
del _cfg
_globals = {"__name__": "__main__", "__builtins__": builtins}
exec(compile(_src, "program.py", "exec"), _globals)
sys.stdout.flush()
sys.stdout.write("\n" + _token + "\n")
sys.stdout.flush()
