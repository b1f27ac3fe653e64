"""What one rerouted exec printed, for `wasmbinfmt --log FILE --log-output` (and compare).

    python -I -S capture.py LOG [--ignored-signals=MASK] -- EMULATOR ARGS...

The tracer starts this in the caller's pid instead of the emulator (with
--log-output only). It runs the emulator as its child with stdout and
stderr on pipes, passes every byte on to its own stdout and stderr as it
comes, and appends an ``output`` event to LOG: for each stream its length,
BLAKE2b digest and a file keeping its first KEPT bytes (in LOG.output/).
Then it exits as the emulator did (its status, or its signal). The price
of looking: the emulator writes to pipes, not to the caller's files or
terminal. A standalone script: the runner's Python starts it with -I -S.

Looking must change nothing a signal or a closed reader does:
- the emulator starts with the dispositions exec would have given it (the
  caller's ignored signals ignored, MASK saying which of those Python's start
  changed), and every signal sent to this process that the caller did not
  ignore goes on to it; this process stops when the emulator stops (job
  control sees the caller's pid stopped), and dies with it;
- SIGKILL, which no one can pass on, kills the emulator too (its parent-death
  signal);
- a reader that closes our stdout (``| head``) makes the emulator's next
  write fail as natively: EPIPE, or death by SIGPIPE.
And the emulator's environment is the one this exec was given, byte for byte (not our
Python's, which a C locale's coercion adds to).
"""

import fcntl
import json
import os
import select
import signal
import sys
import time
from _blake2 import blake2b

# procstate: this package's own, found from where this file is (-I puts nothing on the path).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from wasmbinfmt.util.procstate import (  # noqa: E402
    PYTHON_IGNORES, die_with_parent, exec_environment, execve_exactly, restore_signals,
)

KEPT = 1 << 20  # bytes of each stream kept for a diff
# Not passed on: those no one can catch, the one that tells us of the emulator, and the faults
# (a handler of ours for a fault of our own would loop; sent by kill, they kill us, and
# the emulator with us).
NOT_PASSED_ON = (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
                 signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS)


class Stream:
    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd  # ours, where the bytes go on
        self.read_end, self.write_end = os.pipe()
        self.path = path
        self.file = open(path, "wb")
        self.digest = blake2b(digest_size=32)
        self.size = 0
        self.passing_on = True

    def take(self) -> bool:
        """Pass on what the emulator wrote; False once the stream has ended: the emulator
        closed it, or our reader did (then so does the emulator's)."""
        data = os.read(self.read_end, 65536)
        if not data:
            return False
        self.digest.update(data)
        if self.size < KEPT:
            self.file.write(data[:KEPT - self.size])
        self.size += len(data)
        view = memoryview(data)
        while view and self.passing_on:
            try:
                view = view[os.write(self.fd, view):]
            except BrokenPipeError:
                return False  # the emulator's next write meets the closed reader
            except OSError:
                self.passing_on = False  # another failure: only the record goes on
        return True

    def record(self) -> dict:
        self.file.close()
        return {"bytes": self.size, "blake2b": self.digest.hexdigest(), "file": self.path}


def start_emulator(argv: list[str], streams: dict, ignored: int) -> int:
    child = os.fork()
    if child:
        return child
    try:
        die_with_parent()
        for stream in streams.values():
            os.dup2(stream.write_end, stream.fd)
        restore_signals(ignored)
        execve_exactly(argv[0], argv, exec_environment())  # not our Python's os.environ
    except OSError as e:
        os.write(2, f"wasmbinfmt: {argv[0]}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == 2 else 126)
    finally:
        os._exit(126)


def pass_signals_on(child: int, ignored: int) -> None:
    """Each signal the caller did not ignore, to the emulator (not ours to act on)."""
    for sig in range(1, signal.NSIG):
        if sig in NOT_PASSED_ON:
            continue
        if sig in PYTHON_IGNORES:
            if ignored >> (sig - 1) & 1:
                continue
        elif signal.getsignal(sig) == signal.SIG_IGN:
            continue
        try:
            signal.signal(sig, lambda sig, _: os.kill(child, sig))
        except (OSError, ValueError):
            pass  # the C library's own (32, 33)


def follow(child: int) -> int | None:
    """The emulator's wait status once it has ended, else None; when it has stopped, stop
    too (the caller's pid is what job control watches)."""
    while True:
        try:
            pid, status = os.waitpid(child, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        if os.WIFSTOPPED(status):
            os.kill(os.getpid(), signal.SIGSTOP)  # a SIGCONT to us goes on to it
            continue
        return status


def main() -> None:
    log, rest = sys.argv[1], sys.argv[2:]
    ignored = 0
    if rest[0].startswith("--ignored-signals="):
        ignored = int(rest.pop(0)[len("--ignored-signals="):], 16)
    argv = rest[1:]
    folder = log + ".output"
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}")
    streams = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        except OSError:
            continue  # closed: the emulator starts without it too
        # Not open for writing (the module itself, fexecve'd from a descriptor that took
        # the number of a closed stdout): left as it is, writes to it fail as natively.
        if writable:
            streams[name] = Stream(fd, f"{stem}.{name}")
    child = start_emulator(argv, streams, ignored)
    for stream in streams.values():
        os.close(stream.write_end)
    # A SIGCHLD wakes the loop (the emulator stopped or ended) through this pipe.
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pass_signals_on(child, ignored)
    open_ends = {stream.read_end: stream for stream in streams.values()}
    status = follow(child)  # it may have stopped or ended before the handler was there
    while open_ends or status is None:
        try:
            ready, _, _ = select.select([*open_ends, wake_read], [], [])
        except InterruptedError:
            continue
        for fd in ready:
            if fd == wake_read:
                os.read(wake_read, 4096)
                status = status if status is not None else follow(child)
            elif not open_ends[fd].take():
                os.close(fd)
                del open_ends[fd]
    event = {"event": "output", "time": round(time.time(), 6), "pid": os.getpid(),
             **{name: stream.record() for name, stream in streams.items()}}
    with open(log, "a") as f:
        f.write(json.dumps(event) + "\n")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
