"""The warm runner's compiler: Cranelift's code for the modules whose runs pay for it.

One process per run, forked by the warm host (runners/warm.py) when tiers.py first says
a module's Cranelift code pays. The host sends it each such module as an open
descriptor of the module's file (a test driver may remove the file once it has run)
with what preparing it needs. A module the run has run more than once, which its later
execs would run faster, is compiled at once, at the run's own priority; the others (a
suite's test binaries, each run once a run) are kept for when the run has ended: during
it their compile would only slow it. The compiler compiles them one at a time (one
compile already takes every CPU: parallel compilation) into the cache, and tells the host
which are done, so that their next runs load Cranelift's code. (SCHED_IDLE, tried first,
starved: on a busy machine a compile never ended.)

When the run ends (the host's end of the socket closes) the compiler finishes what it
was given, at the lowest priority (nice 19, for its autogroup too: whatever runs next comes
first), then exits: a compile is never lost to a run that ended first, and the next run
finds its result. But never while another run holds the cache (tiers.hold_run): even at
nice 19 a compile slows the run that comes next (a sibling hyperthread, the caches), the
tier-up costing a run. Each compile runs in a child process, which the compiler kills
when another run starts after its own has ended (within YIELD_CHECK_MS), and starts again
once no run holds the cache (waiting IDLE_WAIT_LIMIT at most: then it leaves, and the
module's runs see to it: the ski rental, tiers.compile_before_run). Killed, not stopped: a
compile stopped for as long as runs go on would be a process nobody sees waiting, with
memory to match.
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

from ..util import cache, fdpass, stdio
from ..util.procstate import die_with_parent, lower_priority
from . import tiers, wasi

NICENESS_AFTER_THE_RUN = 19
AUTOGROUP_TRIES = 20
NAME = b"wasmbinfmt-tier"  # what ps shows (the host's would be "wasmbinfmt-wasi")
MAX_REQUEST = 1 << 16
YIELD_CHECK_MS = 100  # between two looks at whether another run holds the cache
IDLE_CHECK_SECONDS = 1.0  # the same, while waiting for no run to hold it
IDLE_WAIT_LIMIT = 600.0
_host_left = threading.Event()  # the run has ended (its host's end of the socket closed)


def encode_request(name: str, path: str, cwd: str | None, env: dict[str, str],
                   stack_limit: int, exec_log: str | None, now: bool) -> bytes:
    """A module to compile: its cache entry's name, its file's path (its descriptor goes
    with the request), the run's --exec-log (None: none); `now`, or once the run has
    ended (a module the run would not use again)."""
    return marshal.dumps((now, (name, path, cwd, env, stack_limit, exec_log)))


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
        after_the_run: dict[str, tuple] = {}  # by name
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
                pending += after_the_run.values()
            elif fds:
                now, request = marshal.loads(data)
                kept = after_the_run.pop(request[0], None)
                if kept is not None:  # asked again, now: the module is run again
                    os.close(kept[0])
                if now:
                    pending.append((fds[0], request))
                else:
                    after_the_run[request[0]] = (fds[0], request)
            if pending:
                fd, request = pending.pop(0)
                _compile(fd, request, engines)
                try:
                    channel.send(marshal.dumps(request[0]))
                except OSError:
                    pass  # the run has ended: the next one loads it from the cache
    finally:
        os._exit(0)


def _yield_when_the_host_is_gone(channel: int) -> None:
    """Drop to the lowest priority the moment the run ends (the host's end closes), even in
    the middle of a compile: whatever runs then comes first."""
    watch = select.poll()
    watch.register(channel, select.POLLRDHUP)
    while not watch.poll():
        pass
    _host_left.set()
    lower_priority("self", NICENESS_AFTER_THE_RUN)  # a compile forked later inherits it
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
    names, by a child process (unless the module's content is no longer what the name
    says, or another process has made the entry); logged with --exec-log while the run
    lasts (a later line would land after its summary, or in the next run's log). The
    module's compile lock is held throughout, waits for a run to end included: a run's
    compiler given the module meanwhile waits for it, and finds the entry made."""
    name, path, cwd, env, stack_limit, exec_log = request
    directory = cache.usable_dir(env)
    data = b""
    try:
        if directory is None:
            return
        with tiers.compile_lock(os.path.join(directory, "modules"), name):
            while True:
                if _host_left.is_set() and not _no_run_within(directory, IDLE_WAIT_LIMIT):
                    return  # runs all along: the module's own runs will compile it
                results, child_results = os.pipe2(os.O_CLOEXEC)
                child = os.fork()
                if child == 0:
                    event = None
                    try:
                        os.close(results)
                        if die_with_parent():
                            event = _compile_here(fd, name, path, cwd, env, stack_limit,
                                                  exec_log, engines)
                    except Exception:  # noqa: BLE001 - a speed-up only: Winch's code stays
                        pass
                    finally:
                        os.write(child_results, marshal.dumps(event))
                        os._exit(0)
                os.close(child_results)
                with os.fdopen(results, "rb") as pipe:
                    if _wait_unless_a_run_starts(child, directory):
                        data = pipe.read()
                        break
    finally:
        os.close(fd)
    if data and not _host_left.is_set():
        event = marshal.loads(data)
        if event is not None:
            from ..report.execlog import append

            append(exec_log, "code", **event)


def _compile_here(fd: int, name: str, path: str, cwd: str | None, env: dict, stack_limit: int,
                  exec_log: str | None, engines) -> dict | None:
    """The compile, in the child: its `code` event for the log (None: nothing compiled,
    or no log)."""
    module = f"/proc/self/fd/{fd}"
    options = wasi.parse_args(["--compiler=cranelift", module])
    prepared = wasi.prepare(options, cwd, env, engines, stack_limit)
    if prepared.name != name or prepared.directory is None:
        return None
    prepared.load(module)  # from the cache, when another process made it
    if exec_log is None or prepared.compile_seconds is None:
        return None
    options.module, options.exec_log = path, exec_log
    return wasi.code_event(options, os.getppid(), prepared, background=True)


def _wait_unless_a_run_starts(child: int, directory: str | None) -> bool:
    """Wait for the compile in process `child` (True), or kill it (False) when, our run
    ended, another holds the cache `directory`; at the lowest priority once ours ended."""
    pidfd = os.pidfd_open(child)
    watch = select.poll()
    watch.register(pidfd, select.POLLIN)
    lowered = False
    try:
        while not watch.poll(YIELD_CHECK_MS):
            if not _host_left.is_set():
                continue
            if not lowered:
                lower_priority(child, NICENESS_AFTER_THE_RUN)
                lowered = True
            if directory is not None and tiers.runs_under_way(directory):
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                return False
        os.waitpid(child, 0)
        return True
    finally:
        os.close(pidfd)


def _no_run_within(directory: str | None, limit: float) -> bool:
    """Whether, within `limit` seconds, no run holds the cache `directory` (at once, if
    none does now)."""
    deadline = time.monotonic() + limit
    while directory is not None and tiers.runs_under_way(directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(IDLE_CHECK_SECONDS)
    return True
