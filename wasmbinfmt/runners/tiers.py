"""When a module's Cranelift code is worth compiling: the tier-up policy every runner shares.

A module with much code runs first with Winch's code (wasi.compilers_for): quick to
compile, about half as fast to run. Cranelift's code costs ~6x Winch's compile and
pays back only through the module's later runs, so whether to compile it is a
rent-or-buy choice, made from what the module's past runs measured. Each run on Winch's
code adds its CPU time to the module's usage record (a small cache entry beside the
compiled code); the record also keeps what Winch's compile cost, from which Cranelift's
price is estimated.

- **Worth it** (`cranelift_pays`): what the module would save on Cranelift's code over its
  expected future runs reaches the compile's price. Its past runs predict its future
  ones: as many runs again as it has had, and at least HORIZON. A test binary whose run
  takes seconds of Winch's time pays within its first run (the warm runner sees that live
  and starts the compile while the run goes on); one whose runs take milliseconds never
  does, and keeps Winch's code, which costs it next to nothing.
- **Due now** (`compile_before_run`): the time already lost on Winch's code has reached the
  price (rent paid equals the purchase: ski rental, never worse than twice the best
  choice in hindsight). Then the run itself compiles Cranelift's code before it starts,
  whatever the load: a machine too busy, or runs too short, for a compile in the
  background to finish no longer keep a module on Winch's code for good.

The record is a plain tuple (runs, winch_seconds, winch_compile_seconds), keyed like the
compiled entries.
"""

from __future__ import annotations

import os

from ..util import cache

# Winch's code runs ~1.5-3.3x slower than Cranelift's (Go test binaries; 3x for nbody):
# a run on it would save about half its time on Cranelift's.
SAVED_SHARE = 0.5
# Cranelift's compile takes ~5-6.3x Winch's CPU time (Go test binaries, gcc's cc1).
CRANELIFT_COMPILE_FACTOR = 5.5
# Without a measured Winch compile: CPU seconds per byte of code section (Go test
# binaries: 4.6 s for 5.5 MB).
CRANELIFT_SECONDS_PER_CODE_BYTE = 0.85e-6
# Future runs expected: as many as there have been (the longer a module has been run, the
# longer it will be), and at least this many: a suite is run again and again.
HORIZON = 16
NEW_RECORD = (0, 0.0, 0.0)


def price(record: tuple, code_bytes: int) -> float:
    """Estimated CPU seconds of Cranelift's compile."""
    winch_compile = record[2]
    if winch_compile > 0:
        return winch_compile * CRANELIFT_COMPILE_FACTOR
    return code_bytes * CRANELIFT_SECONDS_PER_CODE_BYTE


def cranelift_pays(record: tuple, code_bytes: int, running: float | None = None) -> bool:
    """Whether the saving expected over the module's future runs reaches Cranelift's price;
    `running`: the CPU seconds a run under way has spent so far (a lower bound of its
    whole)."""
    runs, seconds = record[0], record[1]
    if running is not None:
        runs, seconds = runs + 1, seconds + running
    if runs == 0:
        return False
    return seconds / runs * max(HORIZON, runs) * SAVED_SHARE >= price(record, code_bytes)


def running_seconds_until_it_pays(record: tuple, code_bytes: int) -> float:
    """The CPU seconds a run under way must reach for cranelift_pays to hold."""
    runs = record[0] + 1
    return max(0.0, price(record, code_bytes) * runs / (max(HORIZON, runs) * SAVED_SHARE)
               - record[1])


def compile_before_run(record: tuple, code_bytes: int) -> bool:
    """Whether the time already lost on Winch's code has reached Cranelift's price."""
    return record[1] * SAVED_SHARE >= price(record, code_bytes)


class compile_lock:
    """Held while Cranelift's code for `name` is compiled in the background (waiting for a
    compile of it under way elsewhere). A class, not contextlib's decorator: contextlib
    costs a runner started per exec its imports (functools, collections)."""

    def __init__(self, modules: str, name: str) -> None:
        self.path = os.path.join(modules, f"{name}.compiling")
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


def being_compiled(modules: str, name: str) -> bool:
    """Whether a compile of Cranelift's code for `name` is under way (compile_lock held)."""
    return _held(os.path.join(modules, f"{name}.compiling"))


def _held(path: str) -> bool:
    """Whether a process holds a lock on the file `path` (flock, shared or not)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# Held shared by every run that runs modules with this cache (its tracer, for its life): a
# compile its own run has left does not take the CPU while another runs.
RUNS_LOCK = "runs.lock"


def hold_run(directory: str) -> int | None:
    """Say that a run using the cache `directory` is under way, until the descriptor
    returned is closed (or its process ends); None where the lock cannot be made."""
    import fcntl

    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, RUNS_LOCK),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    # Blocks only while a compiler looks (_held: an exclusive lock taken and let go).
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def runs_under_way(directory: str) -> bool:
    """Whether a run holds the cache `directory` (hold_run)."""
    return _held(os.path.join(directory, RUNS_LOCK))


def record_path(modules: str, name: str) -> str:
    return os.path.join(modules, f"{name}.usage")


def load(modules: str, name: str) -> tuple:
    stored = cache.load(record_path(modules, name), name)
    return tuple(stored) if isinstance(stored, (tuple, list)) and len(stored) == 3 \
        else NEW_RECORD


def add_run(modules: str, name: str, seconds: float) -> None:
    """One more run on Winch's code, of `seconds` CPU time."""
    runs, total, winch_compile = load(modules, name)
    cache.store(record_path(modules, name), name, (runs + 1, total + seconds, winch_compile))


def set_winch_compile(modules: str, name: str, seconds: float) -> None:
    runs, total, _ = load(modules, name)
    cache.store(record_path(modules, name), name, (runs, total, seconds))
