"""The warm runner's compiler: Cranelift's code for the modules whose runs pay for it.

One process per run, forked by the warm host (runners/warm.py) when tiers.py first says
a module's Cranelift code pays. The host sends it each such module as an open
descriptor of the module's file (a test driver may remove the file once it has run)
with what preparing it needs; the compiler compiles them one at a time (one compile
already takes every CPU: parallel compilation) into the cache, at the run's own
priority, and tells the host which are done, so that their next runs load Cranelift's
code. (SCHED_IDLE, tried first, starved: on a busy machine a compile never ended.)

When the run ends (the host's end of the socket closes) the compiler finishes what it
was given, at the lowest priority (nice 19, for its autogroup too: whatever runs next comes
first), then exits: a compile is never lost to a run that ended first, and the next run
finds its result.
It runs in a session of its own and holds nothing of the run's (no descriptor, no
process group a terminal or a `kill -- -PGID` reaches).

Two runs' compilers (the next run started while this one still compiles) do not
compile a module twice: a compile holds a lock named after the module's cache entry
(tiers.compile_lock), which the other waits for and then finds the entry made.
"""

from __future__ import annotations

import gc
import marshal
import os
import select
import _signal as signal
import threading
import time

from ..util import fdpass, stdio
from . import tiers, wasi

NICENESS_AFTER_THE_RUN = 19
AUTOGROUP_TRIES = 20
NAME = b"wasmbinfmt-tier"  # what ps shows (the host's would be "wasmbinfmt-wasi")
MAX_REQUEST = 1 << 16
_host_left = threading.Event()  # the run has ended (its host's end of the socket closed)


def encode_request(name: str, path: str, cwd: str | None, env: dict[str, str],
                   stack_limit: int, exec_log: str | None) -> bytes:
    """A module to compile: its cache entry's name, its file's path (its descriptor goes
    with the request), and the run's --exec-log (None: none)."""
    return marshal.dumps((name, path, cwd, env, stack_limit, exec_log))


def serve(channel: fdpass.Socket, engines) -> None:
    """The compiler's life, in a process the host forked (`engines(stack_limit, compiler)`:
    the host's). Never returns."""
    try:
        os.setsid()
        with open("/proc/self/comm", "wb") as comm:
            comm.write(NAME)
        gc.disable()  # a collection would touch, and copy, every object shared with the host
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a host gone: EPIPE, not death
        # The host may be writing to a client's stderr right now (its messages while
        # preparing a module): the compiler's 0-2 are /dev/null, and nothing else is kept.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        stdio.close_all_but(lambda fd: fd <= 2 or fd == channel.fileno())
        threading.Thread(target=_yield_when_the_host_is_gone, args=(channel.fileno(),),
                         daemon=True).start()
        pending: list[tuple] = []
        host_gone = False
        while pending or not host_gone:
            try:
                data, fds = fdpass.recv_fds(channel, MAX_REQUEST, 1) if not pending else \
                    _poll(channel)
            except InterruptedError:
                continue
            except OSError:
                data, fds = b"", []
            if data is None:
                pass
            elif not data:
                host_gone = True
            elif fds:
                pending.append((fds[0], marshal.loads(data)))
            if pending:
                fd, request = pending.pop(0)
                _compile(fd, request, engines)
                try:
                    channel.send(marshal.dumps(name))
                except OSError:
                    pass  # the run has ended: the next one loads it from the cache
    finally:
        os._exit(0)


def _yield_when_the_host_is_gone(channel: int) -> None:
    """Drop to the lowest priority the moment the run ends (the host's end closes), even in
    the middle of a compile: the compile of seconds under way is what the next run meets."""
    watch = select.poll()
    watch.register(channel, select.POLLRDHUP)
    while not watch.poll():
        pass
    _host_left.set()
    # Linux keeps a nice value per thread: every thread of the compile, and those it starts
    # later inherit it.
    for thread in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(thread), NICENESS_AFTER_THE_RUN)
        except OSError:
            pass  # a thread that has just ended
    # setsid gave the compiler an autogroup of its own (sched(7)): with autogroups on, the
    # CPU is shared between sessions first and a nice value counts only inside its own, so
    # the group's nice value is lowered too (anyone may lower their own).
    for _ in range(AUTOGROUP_TRIES):
        try:
            with open("/proc/self/autogroup", "w") as autogroup:
                autogroup.write(str(NICENESS_AFTER_THE_RUN))
            return
        except BlockingIOError:  # the kernel takes one such change per 100 ms, system-wide
            time.sleep(0.1)
        except OSError:
            return  # a kernel without autogroups: the threads' nice values are all there is


def _poll(channel: fdpass.Socket) -> tuple[bytes | None, list[int]]:
    """A request already waiting, else (None, [])."""
    channel.setblocking(False)
    try:
        return fdpass.recv_fds(channel, MAX_REQUEST, 1)
    except BlockingIOError:
        return None, []
    finally:
        channel.setblocking(True)


def _compile(fd: int, request: tuple, engines) -> None:
    """Cranelift's code for the module read from `fd` into the cache entry the request
    names, unless its content is no longer what the name says or another process has made
    it; logged with --exec-log while the run lasts (a later line would land after its
    summary, or in the next run's log)."""
    name, path, cwd, env, stack_limit, exec_log = request
    module = f"/proc/self/fd/{fd}"
    try:
        options = wasi.parse_args(["--compiler=cranelift", module])
        prepared = wasi.prepare(options, cwd, env, engines, stack_limit)
        if prepared.name == name and prepared.directory is not None:
            with tiers.compile_lock(os.path.join(prepared.directory, "modules"), name):
                prepared.load(module)  # from the cache, when another process made it
            if exec_log is not None and not _host_left.is_set() \
                    and prepared.compile_seconds is not None:
                options.module, options.exec_log = path, exec_log
                wasi.note_code(options, os.getpid(), prepared, background=True)
    except Exception:  # noqa: BLE001 - a speed-up only: the module keeps Winch's code
        pass
    finally:
        os.close(fd)
