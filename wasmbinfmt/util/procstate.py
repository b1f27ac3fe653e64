"""The process state Python's own start changes, put back as an exec leaves it.

Before any code of ours runs, Python ignores SIGPIPE and SIGXFSZ and, when
SIGINT is at its default, installs a handler that only sets a flag. A
program started natively would have the dispositions its caller left: exec
resets handled signals to the default and keeps ignored ones ignored (the
mask is kept too, and Python leaves it alone). What the caller had for
SIGPIPE and SIGXFSZ is gone by then; whoever saw the exec (the tracer reads
it at the exec stop) passes it as `ignored`, a SigIgn-style mask.

Its environment too: os.environ is a dict (one entry a name, none without
"="), to which a C locale's coercion adds LC_CTYPE=C.UTF-8; what the exec
gave is still on the stack, /proc/self/environ (exec_environment), and goes
on whole with execve_exactly.
"""

from __future__ import annotations

import os
import _signal as signal  # the C module: signal.py imports enum (~4 ms a start)

PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)
PYTHON_IGNORES_MASK = sum(1 << (sig - 1) for sig in PYTHON_IGNORES)


def restore_signals(ignored: int = 0) -> None:
    """Dispositions as exec would leave them; `ignored`: the caller's ignored signals."""
    for sig in PYTHON_IGNORES:
        signal.signal(sig, signal.SIG_IGN if ignored >> (sig - 1) & 1 else signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def exec_environment() -> list[bytes]:
    """The environment this process's exec gave it, byte for byte."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:  # no /proc
        return [name + b"=" + value for name, value in os.environb.items()]


def execve_exactly(path: str, argv: list[str], env: list[bytes]) -> None:
    """execve(2) with `env` as it is (os.execve takes a dict). Raises OSError."""
    import ctypes

    def strings(items: list[bytes]):
        return (ctypes.c_char_p * (len(items) + 1))(*items, None)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.execve(os.fsencode(path), strings([os.fsencode(arg) for arg in argv]), strings(env))
    error = ctypes.get_errno()
    raise OSError(error, os.strerror(error))


# Faults wasmtime turns into wasm traps: its handlers, installed with the engine, stay.
WASMTIME_HANDLES = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)


def adopt_signal_state(ignored: int, blocked: int) -> None:
    """Every other disposition as exec leaves it for a caller that ignored `ignored` and
    blocked `blocked` (SigIgn- and SigBlk-style masks): for a process that is not the
    caller's exec but stands in for it (the warm runner's worker)."""
    for sig in range(1, signal.NSIG):
        if sig in WASMTIME_HANDLES or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_IGN if ignored >> (sig - 1) & 1 else signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # the C library's own (32, 33)
    signal.pthread_sigmask(signal.SIG_SETMASK,
                           [sig for sig in range(1, signal.NSIG) if blocked >> (sig - 1) & 1])


def stay_on_current_cpu() -> None:
    """Keep this process's threads, and those it starts from now on, on the CPU this one
    runs on (among those it may use).

    A thread that hands work to another and sleeps until it is done then wakes it next to
    itself; threads free to move are woken on an idle CPU instead: an IPI, and on a VM an
    exit from idle, at every hand-off."""
    import ctypes  # loaded already by whoever calls this (ptrace, wasmtime)

    try:
        cpus = os.sched_getaffinity(0)
        cpu = ctypes.CDLL(None).sched_getcpu()
        target = {cpu if cpu in cpus else min(cpus)}
        for tid in _threads():
            os.sched_setaffinity(tid, target)
    except (OSError, AttributeError):
        pass  # a speed-up only


def no_wakeup_preemption() -> None:
    """SCHED_BATCH for this process's threads and those it starts from now on, where they
    run SCHED_OTHER (another policy, chosen by the caller, stays).

    wasmtime-wasi hands each operation on a file to a thread of its blocking pool and parks
    until it is done. Woken at the end of it, the parked thread preempts the helper before
    the helper is back in the pool, so the next hand-off finds none idle: tokio starts more
    helpers, which then contend for the pool's lock (3.4 switches and 8 futex calls a write,
    measured). A SCHED_BATCH thread does not preempt on wake-up: 2 switches, 4 futex calls.
    No WASI call shows a scheduling policy."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return
        batch = os.sched_param(0)
        for tid in _threads():
            os.sched_setscheduler(tid, os.SCHED_BATCH, batch)
    except (OSError, AttributeError):
        pass  # a speed-up only


def _threads(pid: int | str = "self") -> list[int]:
    """A process's threads (a setting made for each applies to those they start)."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def lower_priority(pid: int | str, niceness: int) -> None:
    """The nice value `niceness` for every thread of process `pid` (Linux keeps one per
    thread; those started later inherit their starter's)."""
    try:
        threads = _threads(pid)
    except OSError:
        return  # it has ended
    for thread in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except OSError:
            pass  # a thread that has just ended


PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """In a forked process: be killed (SIGKILL) when the parent ends. False when it has
    ended already."""
    import ctypes  # loaded already by whoever forks us (wasmtime, ptrace)

    parent = os.getppid()
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent
