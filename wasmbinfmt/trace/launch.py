"""Starting a traced command: the command keeps our process, the tracer runs beside it.

Like ``strace -D``, the process the caller started becomes the command
itself (exec), and the tracer is a grandchild that has left its parent and
its process group. So the caller waits for the command's own pid: its exit status,
its death by a signal, job control (Ctrl-Z, ``fg``) and signals sent to
``wasmbinfmt`` (SIGTERM, SIGHUP) are the command's, natively; and a command
that leaves background processes returns at once while the tracer stays
with them until they exit.

The handshake, before the command's first exec::

    command (our process)             tracer (grandchild, own group)
      judge its first exec,
      build the exec-only
      seccomp filter
      fork a middle process  ──────►  forked by the middle one, which exits
      install the filter
      learn the tracer's pid ◄──────  its pid
      allow it (Yama)        ──────►  PTRACE_SEIZE the command
      exec the command       ◄──────  "go"; then the rest of its set-up

When the caller says which files run natively, the command judges its first
exec itself, as the tracer would: a native one carries the filter's pass key
(seccomp.py) and runs without a stop, while the tracer is still setting up
(~1 ms of every start). If that exec fails, libc's execvp runs it again,
stopped as any other.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import _signal as signal  # the C module: signal.py adds enums, and enum costs ~4 ms a start
import sys

from ..util.abcs import Callable, Iterable
from ..util import stdio
from ..util.procstate import restore_signals, stay_on_current_cpu
from . import kernel
from .arch import host_arch
from .seccomp import exec_filter
from .tracee import command_name, tracer_of

EXIT_CANNOT_TRACE = 125  # our own failure, as env(1) and timeout(1) use it
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
TRACER_NAME = "wasmbinfmt"
# What the tracer (tracer.py) hears of: the filter's stops, every new process and thread.
SEIZE_OPTIONS = (kernel.PTRACE_O_TRACESYSGOOD | kernel.PTRACE_O_TRACEFORK
                 | kernel.PTRACE_O_TRACEVFORK | kernel.PTRACE_O_TRACECLONE
                 | kernel.PTRACE_O_TRACESECCOMP | kernel.PTRACE_O_EXITKILL)


def run_traced(command: list[bytes], start_tracer: Callable[[int], None],
               runs_natively: Callable[[bytes], bool] | None = None,
               tracer_fds: Iterable[int] = ()) -> None:
    """Exec `command` here, traced by `start_tracer(command_pid)` in a grandchild.
    `runs_natively(path)`: whether an exec of that file runs as it is (no rule for it);
    without it, the first exec stops like every other. `tracer_fds`: descriptors (close-on-exec)
    the tracer keeps (its logs). Never returns."""
    command_pid = os.getpid()
    _refuse_if_traced()
    # Before the forks: what runs after them copies each page it writes to.
    native = _native_first_exec(command[0], runs_natively)
    key = int.from_bytes(os.urandom(8), "little") if native is not None else None
    arch = host_arch()
    program = kernel.pack_filter(exec_filter(arch, key))
    closed = stdio.hold_closed()  # else our pipes would become the command's stdio
    to_tracer_r, to_tracer_w = os.pipe()
    to_command_r, to_command_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                os.close(to_tracer_w)
                os.close(to_command_r)
                _be_tracer(command_pid, to_tracer_r, to_command_w, start_tracer,
                           frozenset(tracer_fds))
        finally:
            os._exit(0)
    os.close(to_tracer_r)
    os.close(to_command_w)
    try:  # while the tracer starts; its forks are done: they must not inherit the filter
        kernel.install_seccomp_filter(program, arch.seccomp, no_new_privs=os.geteuid() != 0)
    except OSError as e:
        _die(f"cannot install the seccomp filter: {e.strerror}", EXIT_CANNOT_TRACE)
    os.waitpid(middle, 0)
    with os.fdopen(to_command_r, "rb", buffering=0) as from_tracer:
        line = _read_line(from_tracer)
        if not line.isdigit():
            _die("cannot start the tracer", EXIT_CANNOT_TRACE)
        kernel.allow_tracer(int(line))
        os.write(to_tracer_w, b"s")
        os.close(to_tracer_w)
        if from_tracer.read(1) != b"g":
            _die("the tracer could not attach (see above)", EXIT_CANNOT_TRACE)
    restore_signals()  # Python's own dispositions must not reach the command
    stdio.release(closed)
    if native is not None:
        kernel.execve_with_key(native, command, arch.execve, key)  # returns if it failed
    error = kernel.execvp(command)
    _die(f"{os.fsdecode(command[0])}: {error.strerror}",
         EXIT_NOT_FOUND if error.errno == 2 else EXIT_CANNOT_RUN)


def _native_first_exec(name: bytes, runs_natively: Callable[[bytes], bool] | None
                       ) -> bytes | None:
    """The file the command's first exec runs, when no rule applies to it."""
    if runs_natively is None:
        return None
    path = execvp_target(name, os.environ.get("PATH", os.defpath))
    return path if path is not None and runs_natively(path) else None


def execvp_target(name: bytes, search_path: str) -> bytes | None:
    """The file libc's execvp runs for `name`, or None where it would not simply run one
    found here (then execvp itself is left to decide). Like glibc: a name with a '/' as it
    is; else the first executable regular file along `search_path`, past the candidates
    missing or refused (ENOENT, ENOTDIR, EACCES...), stopping at any other error."""
    if b"/" in name:
        return name
    if not name:
        return None
    for directory in os.fsencode(search_path).split(b":"):
        candidate = os.path.join(directory or b".", name)
        try:
            st = os.stat(candidate)
        except OSError as e:
            if e.errno in _EXECVP_SKIPS:
                continue
            return None
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK, effective_ids=True):
            return candidate
    return None


# The errors on which glibc's execvp tries the next directory of PATH.
_EXECVP_SKIPS = frozenset((errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ESTALE,
                           errno.ENODEV, errno.ETIMEDOUT))


def _refuse_if_traced() -> None:
    """A process has one tracer: under a debugger, or inside another wasmbinfmt (which
    traces every descendant), ours could not attach. Say so before trying."""
    try:
        tracer = tracer_of("self")
    except OSError:
        return  # no /proc to ask: PTRACE_SEIZE will tell
    if not tracer:
        return
    name = command_name(tracer)
    if name == TRACER_NAME:
        _die(f"cannot trace: this process is already traced by another wasmbinfmt (pid "
             f"{tracer}), and a process has only one tracer. wasmbinfmt inside wasmbinfmt "
             f"does not work: the outer one already reroutes every exec of the tree; give it "
             f"the rules you meant for this one", EXIT_CANNOT_TRACE)
    _die(f"cannot trace: this process is already traced by pid {tracer} ({name}), and a "
         f"process has only one tracer", EXIT_CANNOT_TRACE)


def _be_tracer(command_pid: int, from_command: int, to_command: int,
               start_tracer: Callable[[int], None], kept: frozenset[int]) -> None:
    status = 1
    # bin/wasmbinfmt starts without collections; the tracer lives as long as the tree. What
    # the start made stays put: a collection over it would copy every page of the heap
    # that this process shares with the command since the fork (~1 ms).
    gc.freeze()
    gc.enable()
    try:
        # Its own process group: no terminal signals (Ctrl-C, Ctrl-Z) and no kill(-PGID) of
        # the command's group for the tracer; the command's session still, where the warm
        # runner's host (handoff.py) must be to put its workers in their callers' groups.
        os.setpgid(0, 0)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        os.write(to_command, b"%d\n" % os.getpid())
        if os.read(from_command, 1) != b"s":
            os._exit(1)
        try:
            kernel.ptrace(kernel.PTRACE_SEIZE, command_pid, 0, SEIZE_OPTIONS)
        except OSError as e:
            print(f"wasmbinfmt: cannot trace: {e.strerror} (is ptrace allowed here? "
                  f"containers may need CAP_SYS_PTRACE or a seccomp profile allowing it)",
                  file=sys.stderr)
            os._exit(1)
        os.write(to_command, b"g")
        os.close(to_command)
        os.close(from_command)
        # The rest, while the command starts (its first stop, if any, waits for the loop).
        _name_tracer()
        # The tracer, not the tree: every stop hands the CPU from a tracee to the tracer
        # and back (scripts/bench.py's exec loop, 2 vCPUs: 1.44x native -> 1.28-1.34x).
        stay_on_current_cpu()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        # The tracer must hold none of the caller's files (a pipe it reads would never end)
        # but its logs.
        stdio.close_all_but(lambda fd: fd <= 2 or fd in kept)
        start_tracer(command_pid)
        status = 0
    except BaseException as e:  # noqa: BLE001 - a forked child must never return to the caller
        print(f"wasmbinfmt: tracer failed: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        os._exit(status)


def _name_tracer() -> None:
    """The tracer's comm is "wasmbinfmt" (what ps shows, and how a nested wasmbinfmt and the
    tests recognise it); it would otherwise be the Python that runs us."""
    try:
        with open("/proc/self/comm", "wb") as comm:
            comm.write(TRACER_NAME.encode())
    except OSError:
        pass  # a name only


def _read_line(stream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = stream.read(1)
        if not byte:
            break
        line += byte
    return line.strip()


def _die(message: str, status: int) -> None:
    if sys.stderr is not None:  # started without fd 2
        print(f"wasmbinfmt: {message}", file=sys.stderr)
        sys.stderr.flush()
    os._exit(status)
