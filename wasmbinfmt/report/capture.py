"""What one rerouted exec printed, for `wasmbinfmt --log FILE --log-output` (and compare).

    python -I -S capture.py LOG -- EMULATOR ARGS...

The tracer starts this in the caller's pid instead of the emulator (with
--log-output only). It runs the emulator as its child with stdout and
stderr on pipes, passes every byte on to its own stdout and stderr as it
comes, and appends an ``output`` event to LOG: for each stream its length,
BLAKE2b digest and a file keeping its first KEPT bytes (in LOG.output/).
Then it exits as the emulator did (its status, or its signal). The price
of looking: the emulator writes to pipes, not to the caller's files or
terminal. A standalone script: the runner's Python starts it with -I -S.
"""

import json
import os
import select
import signal
import sys
import time
from _blake2 import blake2b

KEPT = 1 << 20  # bytes of each stream kept for a diff
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM)


class Stream:
    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd  # ours, where the bytes go on
        self.read_end, self.write_end = os.pipe()
        self.path = path
        self.file = open(path, "wb")
        self.digest = blake2b(digest_size=32)
        self.size = 0

    def take(self) -> bool:
        data = os.read(self.read_end, 65536)
        if not data:
            return False
        self.digest.update(data)
        if self.size < KEPT:
            self.file.write(data[:KEPT - self.size])
        self.size += len(data)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except OSError:
                break  # our own stdout is gone: the record goes on
        return True

    def record(self) -> dict:
        self.file.close()
        return {"bytes": self.size, "blake2b": self.digest.hexdigest(), "file": self.path}


def main() -> None:
    log, argv = sys.argv[1], sys.argv[3:]
    folder = log + ".output"
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}")
    streams = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            continue  # closed: the emulator starts without it too
        streams[name] = Stream(fd, f"{stem}.{name}")
    child = os.fork()
    if child == 0:
        for name, stream in streams.items():
            os.dup2(stream.write_end, stream.fd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # Python's start's
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execv(argv[0], argv)
        except OSError as e:
            os.write(2, f"wasmbinfmt: {argv[0]}: {e.strerror}\n".encode())
            os._exit(127 if e.errno == 2 else 126)
    for stream in streams.values():
        os.close(stream.write_end)
    for sig in FORWARDED:
        signal.signal(sig, lambda sig, _: os.kill(child, sig))
    open_ends = {stream.read_end: stream for stream in streams.values()}
    while open_ends:
        try:
            ready, _, _ = select.select(list(open_ends), [], [])
        except InterruptedError:
            continue
        for fd in ready:
            if not open_ends[fd].take():
                del open_ends[fd]
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
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
