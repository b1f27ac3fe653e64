"""The warm WASI runner: wasmtime loaded once per wasmbinfmt run, a fork per module exec.

A Python start costs more than a small module's whole run, so an exec that
the built-in runner's rule reroutes does not start one. The tracer
(trace/handoff.py) turns the exec into a small /bin/sh client, which keeps
the caller's pid and all its descriptors, waits for the module's status and
then exits with it or dies by its signal; and it hands this host what the
runner would have been given: its argv, the environment, the client's
standard descriptors after the exec (pidfd_getfd: the same open files) and
the state exec keeps (ignored signals, signal mask, umask, process group, no_new_privs).

The host, one process per run, in the command's session, prepares the
module in the client's current directory (compiled modules stay in memory)
and hands the exec to a worker: the spare it forked after the previous exec,
when that one has the module ready, else one forked for it. The worker takes on the rest of the client's state
(resource limits, priority, CPU affinity, environment) and runs the module
as wasi.py's runner does, with the same messages and exit statuses.

Signals: the worker joins the client's process group, so the terminal's
(Ctrl-C, Ctrl-Z, a background read) and a group's (`kill -- -PGID`,
timeout(1)) reach both; the tracer forwards a signal sent to the client
alone; the client's death (SIGKILL too) kills the worker. Nothing of the run
outlives it: the host leaves when the tracer's socket closes, workers die with
the host (PR_SET_PDEATHSIG); only the compiler (below) finishes its compiles.

Tiers: a module with much code (wasi.WINCH_FIRST_RUN_CODE) runs first
with Winch's code, quick to compile. Once Cranelift's code pays (tiers.py: the
CPU time its runs spend on Winch's code, counted across runs, and watched live
while one runs), the run's compiler (runners/compiler.py, forked by the host)
compiles it into the cache, one module at a time; until that is there, runs
take Winch's from the cache, so none waits for a compile. A compile under way
when the run ends is finished after it; when the time lost on Winch's code
reaches the compile's price, a run compiles Cranelift's code before it starts.

Fork safety: the host never compiles or runs wasm, so it has no thread for a
fork to lose (Cranelift's pool and WASI's async runtime start in the
worker); it only loads compiled modules from the cache, which starts none.
"""

from __future__ import annotations

import ctypes
import gc
import marshal
import os
import select
import sys
import time
import _signal as signal

from ..util import cache, fdpass, stdio
from ..util.abcs import Callable
from ..util.procstate import adopt_signal_state, die_with_parent
from . import compiler, tiers, wasi
from .warm_messages import MAX_FDS, MAX_MESSAGE, decode

KEPT_MODULES = 64  # prepared modules kept in memory, least recently used dropped
# A module whose code a worker compiles keeps its bytes until a later exec loads the code
# from the cache (then it keeps none): at most this many such bytes are kept in all.
KEPT_MODULE_BYTES = 32 << 20
QUEUED, ENDED, AFTER_THE_RUN = 0, 1, 2  # Host.tiering's states
# A spare's request carries the environment as pairs (a few bytes more an entry than the
# tracer's request): under a unix socket's default send buffer (~208 KiB), else a fork.
SPARE_MESSAGE = 3 * MAX_MESSAGE
LIVE_CHECK_INTERVAL = 0.05  # seconds, at least, between two looks at a run's CPU time
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_NO_NEW_PRIVS = 38
P_PIDFD = 3
IOPRIO_WHO_PROCESS = 1
HOST_NAME = b"wasmbinfmt-wasi"
CHANNEL_FD = 3
CLD_EXITED = 1


class Job:
    def __init__(self, client: int, client_pidfd: int, status_fd: int) -> None:
        self.client = client
        self.client_pidfd = client_pidfd
        self.status_fd = status_fd  # where the status goes: "N" or "-SIGNAL", a line
        self.worker_pidfd = -1
        self.worker_pid = 0
        self.tier: Tier | None = None  # a run on Winch's code, timed live
        self.check_at = 0.0  # when to look at its CPU time next (time.monotonic())


class Tier:
    """What a run on Winch's code needs for Cranelift's compile to be decided while it runs:
    the module, where its compile would start from, and whether the worker compiles
    Winch's code first (that CPU time is not the run's)."""

    def __init__(self, prepared: wasi.Prepared, start: tuple, compiles_first: bool) -> None:
        self.prepared = prepared
        self.start = start  # the module's path, and _compile's (cwd, env, stack_limit)
        self.compiles_first = compiles_first


class Spare:
    def __init__(self, pid: int, pidfd: int, channel: fdpass.Socket, ready: frozenset) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel  # where its request goes
        self.ready = ready  # the keys of the modules it has ready (Host._ready())


class Host:
    def __init__(self, channel: fdpass.Socket) -> None:
        self.channel = channel
        self.poller = select.epoll()
        self.handlers: dict[int, Callable[[], None]] = {}  # by descriptor, for the poller
        self._watch(channel.fileno(), self._on_message)
        self.jobs: dict[int, Job] = {}
        self.engines: dict[tuple, object] = {}  # by stack limit and compiler
        self.linkers: dict[object, object] = {}  # by engine
        self.prepared: dict[tuple, wasi.Prepared] = {}  # by module file and settings
        self.spare: Spare | None = None
        # Cranelift's compiles of this run, by cache entry (directory, name): QUEUED until
        # the compiler has made it, then ENDED (so too when a run compiled it first);
        # AFTER_THE_RUN while the compiler keeps it for when the run has ended.
        self.tiering: dict[tuple, int] = {}
        self.execs: dict[tuple, int] = {}  # this run's execs of each module on Winch's code
        self.compiler: fdpass.Socket | None = None  # runners/compiler.py's, once started
        self.watched: dict[int, Job] = {}  # by client: runs on Winch's code, timed live
        self.devnull = os.open(os.devnull, os.O_RDWR)

    def warm_up(self) -> None:
        """What the first request most likely needs, made while it is on its way (the
        tracer sends it once the client's exec has succeeded): wasmtime's library, and
        Cranelift's engine and linker for our stack limit, which is the tree's."""
        import resource

        try:
            self._linker(self._engine(resource.getrlimit(resource.RLIMIT_STACK)[0],
                                      "cranelift"))
        except Exception:  # noqa: BLE001 - a head start only: a request meets the error again
            pass

    def serve(self) -> None:
        while True:
            # The handlers of what was ready, taken before any runs (one may unwatch another).
            for handler in [self.handlers[fd] for fd, _ in self.poller.poll(self._next_check())
                            if fd in self.handlers]:
                handler()
            if self.watched:
                self._check_watched()

    def _watch(self, fd: int, handler: Callable[[], None]) -> None:
        """`handler()` when `fd` is readable (a pidfd: its process has exited)."""
        self.poller.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        self.poller.unregister(fd)
        del self.handlers[fd]

    # -- messages from the tracer -------------------------------------------------------

    def _on_message(self) -> None:
        try:
            data, fds = fdpass.recv_fds(self.channel, MAX_MESSAGE, MAX_FDS)
        except InterruptedError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the tracer has left: so does everyone
            for job in self.jobs.values():
                _kill(job.worker_pidfd)
            os._exit(0)
        try:
            message = decode(data)
        except ValueError:  # never sent (handoff checks the size): dropped, never the host
            for fd in fds:
                os.close(fd)
            return
        if message[0] == "signal":
            job = self.jobs.get(message[1])
            if job is not None:
                _kill(job.worker_pidfd, message[2])
            return
        _, client, argv, env, state, std_mask = message
        job = Job(client, fds[0], fds[1])
        std = {}
        rest = iter(fds[2:])
        for n in (0, 1, 2):
            if std_mask >> n & 1:
                std[n] = next(rest)
        try:
            self._start(job, argv, env, state, std)
        except Exception as e:  # noqa: BLE001 - the caller gets a status, never a hang
            self._report_failure(job, std, f"internal error: {type(e).__name__}: {e}")
        finally:
            for fd in std.values():
                os.close(fd)

    def _report_failure(self, job: Job, std: dict[int, int], message: str) -> None:
        if 2 in std:
            try:
                os.write(std[2], f"wasmbinfmt-wasi: {message}\n".encode())
            except OSError:
                pass
        self._finish(job, b"%d\n" % wasi.EXIT_CANNOT_RUN)

    # -- a module exec ------------------------------------------------------------------

    def _start(self, job: Job, argv: list[bytes], env: list[bytes], state: tuple,
               std: dict[int, int]) -> None:
        os.chdir(f"/proc/{job.client}/cwd")  # the worker inherits it
        env_pairs = wasi.variables(env)
        options = error = prepared = cwd = layout = key = tier = None
        ready_before = self._ready()
        # Messages while preparing (-v's doubts) go to the client's stderr, as the runner's.
        os.dup2(std.get(2, self.devnull), 2)
        try:
            options = wasi.parse_args([os.fsdecode(arg) for arg in argv])
            options.module = _in_callers_table(options.module, job.client)
            cwd = None if options.dirs else wasi.current_directory()
            prepared, key, tier = self._prepare(options, cwd, env_pairs, job.client)
            if cwd is not None and not options.dirs:
                layout = wasi.default_layout(prepared, cwd)  # quicker here than in a fork
        except ValueError as e:
            error = (str(e), 2)
        except wasi.CannotRun as e:
            error = (str(e), e.status)
        finally:
            sys.stderr.flush()
            os.dup2(self.devnull, 2)
        request = (job.client, state, env_pairs, argv, key, cwd, layout)
        job.worker_pidfd = -1
        if error is None and self.spare is not None and key in self.spare.ready:
            job.worker_pid, job.worker_pidfd = self._hand_to_spare(request, std)
        if job.worker_pidfd < 0:
            gc.freeze()  # the worker's collections would touch (and copy) every object
            pid = _fork_holding_signals()
            if pid == 0:
                status = wasi.EXIT_CANNOT_RUN
                try:
                    status = _work(job.client, state, std, env_pairs, options, prepared, cwd,
                                   layout, error)
                except BaseException as e:  # noqa: BLE001 - a forked child must never return
                    wasi.complain(f"internal error: {type(e).__name__}: {e}")
                finally:
                    wasi.leave(status)
            job.worker_pid, job.worker_pidfd = pid, os.pidfd_open(pid)
        self.jobs[job.client] = job
        if tier is not None:
            self._time_live(job, tier)
        self._watch(job.worker_pidfd, lambda: self._on_worker_exit(job))
        self._watch(job.client_pidfd, lambda: self._on_client_exit(job))
        os.chdir("/")
        self._keep_a_spare(repeated=key in ready_before)

    # -- the spare: a worker forked before its job ---------------------------------------

    def _ready(self) -> frozenset:
        """The modules a worker forked now would find ready to instantiate."""
        return frozenset(key for key, prepared in self.prepared.items()
                         if prepared.pre is not None)

    def _keep_a_spare(self, repeated: bool) -> None:
        """A spare, with the modules ready that the host has: the next exec of any of them
        skips the fork (~2 ms of copying a 40 MB process's page tables on this VM). One
        that lacks a module is replaced when that module runs again (`repeated`: the exec
        just served was of a module the host had ready), not at each new module, which a
        suite of programs run once would pay a second fork for at every exec.
        (Starting wasmtime-wasi's runtime in the spare as well measured slower: its
        threads, forked ahead, then sit on another CPU.)"""
        ready = self._ready()
        if self.spare is not None:
            if self.spare.ready == ready or not repeated:
                return
            self._retire(self.spare)
        host_end, spare_end = fdpass.seqpacket_pair()
        gc.freeze()
        pid = _fork_holding_signals()
        if pid == 0:
            host_end.close()
            _be_spare(self.prepared, spare_end)
        spare_end.close()
        self.spare = Spare(pid, os.pidfd_open(pid), host_end, ready)

    def _hand_to_spare(self, request: tuple, std: dict[int, int]) -> tuple[int, int]:
        """The spare's pid and pidfd once it has the request, or (0, -1) (it has died, or
        the request as the spare takes it is too long: a fork, then)."""
        data = marshal.dumps((*request, sum(1 << n for n in std)))
        if len(data) > SPARE_MESSAGE:
            return 0, -1  # a fork, and the spare waits for the next
        spare, self.spare = self.spare, None
        try:
            fdpass.send_fds(spare.channel, data, [std[n] for n in sorted(std)])
        except OSError:
            self._retire(spare)
            return 0, -1
        spare.channel.close()
        return spare.pid, spare.pidfd

    def _retire(self, spare: Spare) -> None:
        spare.channel.close()  # it leaves when its channel ends
        self.spare = None

        def reap() -> None:
            os.waitid(P_PIDFD, spare.pidfd, os.WEXITED)
            self._unwatch(spare.pidfd)
            os.close(spare.pidfd)
        self._watch(spare.pidfd, reap)

    def _prepare(self, options: wasi.Options, cwd: str | None,
                 env_pairs: list[tuple[bytes, bytes]], client: int) -> tuple:
        """The module prepared (and loaded, when its compiled code is in the cache), from
        memory when its file has not changed since; its key among those kept (None: not
        kept); and, for a run on Winch's code that is to be timed live, its Tier."""
        import resource

        stack_limit = resource.prlimit(client, resource.RLIMIT_STACK)[0]
        env = {os.fsdecode(k): os.fsdecode(v) for k, v in env_pairs}
        try:
            before = _identity(options.module)
        except OSError:
            before = None
        key = (before, options.cache, options.verbose, options.compiler, cwd is not None,
               stack_limit, wasi.cache_dir_for(options, env))
        prepared = self.prepared.pop(key, None) if before is not None else None
        fresh = prepared is None
        if fresh:
            prepared = wasi.prepare(options, cwd, env, self._engine, stack_limit)
            prepared.tiered = self._tiers(prepared)
        kept_code = prepared.module is not None
        tier = None
        if prepared.tiered and prepared.compiled_by != "cranelift":
            # Absolute: the compile is queued later, when the host is no longer in the
            # client's directory.
            start = (os.path.abspath(options.module), cwd, env, stack_limit, options.exec_log)
            if self._plan_cranelift(prepared, start):
                tier = Tier(prepared, start, compiles_first=False)
        if prepared.module is None:
            prepared.load(options.module, compile=False)  # a worker may have compiled it
            if tier is not None:
                tier.compiles_first = prepared.module is None
        if prepared.compiled_by == "cranelift":
            tier = None
        wasi.note_code(options, client, prepared, "memory" if kept_code else "cache")
        if prepared.module is not None and prepared.pre is None:
            prepared.linker = self._linker(prepared.module.engine)
            prepared.pre = prepared.linker.instantiate_pre(prepared.module)
        if fresh:  # kept only if the file did not change while it was read
            try:
                after = _identity(options.module)
            except OSError:
                after = None
        if before is not None and (not fresh or before == after):
            self.prepared[key] = prepared  # the most recently used last
            while len(self.prepared) > KEPT_MODULES or sum(
                    len(kept.wasm) for kept in self.prepared.values()) > KEPT_MODULE_BYTES:
                del self.prepared[next(iter(self.prepared))]
            return prepared, key, tier
        return prepared, None, tier

    def _tiers(self, prepared: wasi.Prepared) -> bool:
        """Whether the module runs Winch's code until Cranelift's pays (tiers.py): under
        --compiler=auto, with a cache, and much code."""
        if prepared.compiler != "auto" or prepared.directory is None:
            return False
        return ((prepared.directory, prepared.name) in self.tiering
                or prepared.code_bytes >= wasi.WINCH_FIRST_RUN_CODE)

    def _plan_cranelift(self, prepared: wasi.Prepared, start: tuple) -> bool:
        """Cranelift's code for a module that has none cached, as its runs so far decide:
        compiled by this run before it starts (the time lost on Winch's code has reached its
        price), queued (it pays), or to be decided while the run goes on (True)."""
        entry = (prepared.directory, prepared.name)
        self.execs[entry] = self.execs.get(entry, 0) + 1
        if self.tiering.get(entry) == AFTER_THE_RUN and self._used_again(entry):
            self._queue_compile(entry, prepared, start, now=True)  # for the run's next execs
        if entry in self.tiering:  # queued, compiling or compiled in this run
            return False
        record = tiers.load(os.path.join(prepared.directory, "modules"), prepared.name)
        if prepared.module is None and tiers.compile_before_run(record, prepared.code_bytes):
            prepared.cranelift_due = True  # the worker compiles it
            self.tiering[entry] = ENDED
            return False
        if tiers.cranelift_pays(record, prepared.code_bytes):
            self._queue_compile(entry, prepared, start, self._used_again(entry))
            return False
        return True

    def _used_again(self, entry: tuple) -> bool:
        """Whether the run has run the module more than once: Cranelift's code would serve
        its next execs. (A module run once a run, as a suite's test binary is, gets it
        compiled after the run, unless this run is its first: a compile during a later
        one would only slow it.)"""
        return self.execs.get(entry, 0) > 1

    # -- Cranelift's compiles, in the background -----------------------------------------

    def _time_live(self, job: Job, tier: Tier) -> None:
        """Look at the worker's CPU time when it could first have made Cranelift's code pay
        (it cannot use more CPU time than the time that passes, on its one CPU)."""
        record = tiers.load(os.path.join(tier.prepared.directory, "modules"),
                            tier.prepared.name)
        job.tier = tier
        job.check_at = time.monotonic() + max(
            LIVE_CHECK_INTERVAL, tiers.running_seconds_until_it_pays(
                record, tier.prepared.code_bytes))
        self.watched[job.client] = job

    def _next_check(self) -> float:
        """The poller's timeout (seconds; -1: none) until the next look at a watched run."""
        if not self.watched:
            return -1
        return max(0.0, min(job.check_at for job in self.watched.values()) - time.monotonic())

    def _check_watched(self) -> None:
        now = time.monotonic()
        for client, job in list(self.watched.items()):
            if job.check_at > now:
                continue
            prepared = job.tier.prepared
            entry = (prepared.directory, prepared.name)
            record = tiers.load(os.path.join(prepared.directory, "modules"), prepared.name)
            running = _cpu_seconds(job.worker_pid)
            if entry in self.tiering or running is None:
                del self.watched[client]
                continue
            if job.tier.compiles_first:
                if not record[2]:  # Winch's compile is still under way
                    job.check_at = now + LIVE_CHECK_INTERVAL
                    continue
                running -= record[2]
            if tiers.cranelift_pays(record, prepared.code_bytes, running):
                del self.watched[client]
                # A run that compiled the module (Winch's code) is its first: the cold
                # run, which the compiles are for, as the wasmtime CLI's first run is.
                self._queue_compile(entry, prepared, job.tier.start,
                                    job.tier.compiles_first or self._used_again(entry))
            else:
                job.check_at = now + max(LIVE_CHECK_INTERVAL, tiers.running_seconds_until_it_pays(
                    record, prepared.code_bytes) - running)

    def _queue_compile(self, entry: tuple, prepared: wasi.Prepared, start: tuple,
                       now: bool) -> None:
        """Cranelift's code for `prepared` into the cache, by the run's compiler (started
        now, if not yet), which reads the module through a descriptor opened now: `now`,
        or once the run has ended."""
        path, cwd, env, stack_limit, exec_log = start
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if self.compiler is None:
                self.compiler = self._start_compiler()
            fdpass.send_fds(self.compiler, compiler.encode_request(
                prepared.name, path, cwd, env, stack_limit, exec_log, now), [fd])
            self.tiering[entry] = QUEUED if now else AFTER_THE_RUN
        except OSError:
            pass  # a speed-up only: the module keeps Winch's code
        finally:
            os.close(fd)

    def _start_compiler(self) -> fdpass.Socket:
        ours, theirs = fdpass.seqpacket_pair()
        gc.freeze()
        if os.fork() == 0:
            ours.close()
            # What the host keeps loaded is not the compiler's to hold (it may outlive us).
            self.prepared.clear()
            self.spare = None
            compiler.serve(theirs, self._engine)
        theirs.close()
        self._watch(ours.fileno(), self._on_compiled)
        return ours

    def _on_compiled(self) -> None:
        """The compiler has made Cranelift's code for a module (or could not): the modules
        kept with Winch's are dropped, and their next run loads it."""
        try:
            data = self.compiler.recv(compiler.MAX_REQUEST)
        except InterruptedError:
            return
        except OSError:
            data = b""
        if not data:  # the compiler died: the modules keep Winch's code
            self._unwatch(self.compiler.fileno())
            return
        name = marshal.loads(data)
        for entry in self.tiering:
            if entry[1] == name:
                self.tiering[entry] = ENDED
        for key, prepared in list(self.prepared.items()):
            if prepared.name == name and prepared.compiled_by == "winch":
                del self.prepared[key]

    def _linker(self, engine):
        linker = self.linkers.get(engine)
        if linker is None:
            linker = self.linkers[engine] = wasi.new_linker(engine)
        return linker

    def _engine(self, stack_limit: int, compiler: str):
        engine = self.engines.get((stack_limit, compiler))
        if engine is None:
            engine = self.engines[stack_limit, compiler] = wasi.new_engine(stack_limit, compiler)
        return engine

    # -- ends ---------------------------------------------------------------------------

    def _on_worker_exit(self, job: Job) -> None:
        info = os.waitid(P_PIDFD, job.worker_pidfd, os.WEXITED)
        if info.si_code == CLD_EXITED:
            status = b"%d\n" % info.si_status
        else:  # killed, or dumped core
            status = b"-%d\n" % info.si_status
        self._unwatch(job.worker_pidfd)
        os.close(job.worker_pidfd)
        job.worker_pidfd = -1
        self.jobs.pop(job.client, None)
        self.watched.pop(job.client, None)
        self._finish(job, status)

    def _on_client_exit(self, job: Job) -> None:
        """The client died first (killed): so does the module, as natively."""
        _kill(job.worker_pidfd)
        self._forget_client(job)

    def _finish(self, job: Job, status: bytes) -> None:
        try:
            os.write(job.status_fd, status)
        except OSError:
            pass  # the client is gone
        os.close(job.status_fd)
        self._forget_client(job)

    def _forget_client(self, job: Job) -> None:
        if job.client_pidfd >= 0:
            if job.client_pidfd in self.handlers:
                self._unwatch(job.client_pidfd)
            os.close(job.client_pidfd)
            job.client_pidfd = -1


_libc = ctypes.CDLL(None)


# Paths that name a process's own descriptors: fexecve and execveat(fd, "", AT_EMPTY_PATH)
# give the runner /dev/fd/N, as binfmt_misc gives its interpreter.
OWN_DESCRIPTORS = ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")


def _in_callers_table(path: str, client: int) -> str:
    """`path` as the host can open it: one naming a descriptor names the caller's (the
    same number in the host's table is another file: its status pipe, say)."""
    for prefix in OWN_DESCRIPTORS:
        if path.startswith(prefix):
            number, slash, rest = path[len(prefix):].partition("/")
            if number.isdigit():
                return f"/proc/{client}/fd/{number}{slash}{rest}"
    return path


def _identity(path: str) -> tuple:
    return cache.file_identity(os.stat(path))


def _kill(pidfd: int, sig: int = signal.SIGKILL) -> None:
    if pidfd >= 0:
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except OSError:
            pass  # already gone


def _work(client: int, state: tuple, std: dict[int, int],
          env_pairs: list[tuple[bytes, bytes]], options, prepared, cwd, layout, error) -> int:
    """In the worker: become the client's process, then run the module; its status."""
    if not _tied_to_host():
        return wasi.EXIT_CANNOT_RUN
    ignored, blocked, umask, pgid, no_new_privs = state
    try:
        os.setpgid(0, pgid)
    except OSError:
        pass  # the group has gone with its members: none left to signal it
    closed = set()
    for n in (0, 1, 2):  # the host's own are /dev/null: what a closed one stays, unused
        if n in std:
            os.dup2(std[n], n)
        else:
            closed.add(n)
    # Every descriptor but 0-2 and the module's compiled file (wasmtime maps its memory
    # from it) goes: the host's, and the other modules' files it keeps loaded, which would
    # count against the program's RLIMIT_NOFILE.
    module_file = prepared.module.file if prepared and prepared.module else None
    stdio.close_all_but(lambda fd: fd <= 2 or _inode(fd) == module_file)
    os.umask(umask)
    _adopt_limits(client)
    if no_new_privs:  # setpriv --no-new-privs, or our own tracer's for its seccomp filter
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    adopt_signal_state(ignored, blocked)
    if error is not None:
        wasi.complain(error[0])
        return error[1]
    try:
        if prepared.module is None:
            prepared.load(options.module)
            wasi.note_code(options, client, prepared)
    except wasi.CannotRun as e:
        wasi.complain(str(e))
        return e.status
    return wasi.start(prepared, options, env_pairs, closed, cwd, layout)


# Every signal a worker can hold back: not those no one can, nor the faults (wasmtime's).
HELD_SIGNALS = frozenset(range(1, signal.NSIG)) - {
    signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
    signal.SIGTRAP, signal.SIGSYS}


def _fork_holding_signals() -> int:
    """fork(), the child (a worker, or a spare) holding every signal until it has taken on
    its caller's dispositions and mask (adopt_signal_state): a signal forwarded to it at once
    then meets the caller's dispositions, never the host's."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return pid


def _tied_to_host() -> bool:
    """In a process the host forked: die with the host (PR_SET_PDEATHSIG), and collect no
    garbage (a collection would touch, and copy, every object shared with the host). False
    when the host died before the tie was made."""
    gc.disable()
    return die_with_parent()


def _be_spare(prepared: dict, channel: fdpass.Socket) -> None:
    """In a spare: wait for a request, then work as a worker forked for it would (the
    modules ready in `prepared`, the host's as they were at the fork). Never returns."""
    status = wasi.EXIT_CANNOT_RUN
    try:
        if not _tied_to_host():
            os._exit(0)
        files = {p.module.file for p in prepared.values() if p.module is not None}
        stdio.close_all_but(lambda fd: fd <= 2 or fd == channel.fileno() or _inode(fd) in files)
        data, fds = fdpass.recv_fds(channel, SPARE_MESSAGE, 3)
        if not data:
            os._exit(0)  # retired
        client, state, env_pairs, argv, key, cwd, layout, std_mask = marshal.loads(data)
        given = iter(fds)
        std = {n: next(given) for n in (0, 1, 2) if std_mask >> n & 1}
        os.chdir(f"/proc/{client}/cwd")
        options = wasi.parse_args([os.fsdecode(arg) for arg in argv])
        status = _work(client, state, std, env_pairs, options, prepared[key], cwd, layout,
                       None)
    except BaseException as e:  # noqa: BLE001 - a forked child must never return
        wasi.complain(f"internal error: {type(e).__name__}: {e}")
    finally:
        wasi.leave(status)


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time process `pid` (all its threads) has used, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _adopt_limits(client: int) -> None:
    """The client's resource limits, scheduling priority and policy, CPU affinity, OOM
    score adjustment and I/O priority."""
    import resource

    for limit in {getattr(resource, name) for name in dir(resource)
                  if name.startswith("RLIMIT_")}:
        try:
            resource.setrlimit(limit, resource.prlimit(client, limit))
        except (OSError, ValueError):
            pass  # one we may not raise: the host's lower limit stays
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, client))
    except OSError:
        pass
    try:  # chrt: SCHED_IDLE, SCHED_BATCH (a real-time one where we may)
        os.sched_setscheduler(0, os.sched_getscheduler(client), os.sched_getparam(client))
    except OSError:
        pass
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(client))
    except OSError:
        pass
    try:  # choom, systemd's OOMScoreAdjust
        with open(f"/proc/{client}/oom_score_adj", "rb") as theirs, \
                open("/proc/self/oom_score_adj", "wb") as ours:
            ours.write(theirs.read())
    except OSError:
        pass  # one we may not lower
    from ..trace.arch import host_arch  # ionice: its class and level

    arch = host_arch()
    priority = _libc.syscall(arch.ioprio_get, IOPRIO_WHO_PROCESS, client)
    if priority >= 0:
        _libc.syscall(arch.ioprio_set, IOPRIO_WHO_PROCESS, 0, priority)


def serve(channel_fd: int) -> None:
    """The host's life: `channel_fd` is its end of the tracer's socket. Never returns."""
    try:
        with open("/proc/self/comm", "wb") as comm:
            comm.write(HOST_NAME)  # what ps shows (the tracer's would be "wasmbinfmt")
        os.setpgid(0, 0)  # not in a group the terminal or a kill(-PGID) signals
        # The channel first: a dying process closes its descriptors in order, so the
        # tracer sees the host gone before any client sees its status pipe end.
        if channel_fd != CHANNEL_FD:
            os.dup2(channel_fd, CHANNEL_FD)
            os.close(channel_fd)
            channel_fd = CHANNEL_FD
        devnull = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(devnull, n)
        stdio.close_all_but(lambda fd: fd <= 2 or fd == CHANNEL_FD)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP,
                    signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)
        host = Host(fdpass.Socket(fileno=channel_fd))
        host.warm_up()
        host.serve()
    finally:
        os._exit(0)
