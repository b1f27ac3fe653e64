"""Looking at files the way exec handlers do: the first 256 bytes; and what conditional rules
ask for: a wasm module's imports, binfmt-support detectors."""

from __future__ import annotations

import os
import stat
import sys

from ..util.abcs import Callable
from .match import Matcher
from .rewrite import FileKind, classify
from ..rules.model import HEADER_SIZE, Rule

DETECTOR_TIMEOUT = 10  # seconds a binfmt-support detector may take
HEADER_CACHE_SIZE = 4096
# How much of a wasm module a wasm-imports rule reads, whatever the module says: real
# WALI programs have their imports 500-900 bytes in; larger type sections may not fit.
IMPORTS_READ_LIMIT = 8192


def read_header(path: str | bytes, follow_symlinks: bool = True,
                cache: dict | None = None) -> bytes:
    """The first 256 bytes of a regular file; never opens anything else (a FIFO would block,
    a tape device would rewind). OSError if it is missing, unreadable or not regular.

    With `cache`, a file already read is known by its identity and change
    time (st_ctime changes with every write, whatever mtime says), so a tree
    that runs /bin/sh a thousand times opens it once.
    """
    st = os.stat(path, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(0, "not a regular file")
    if cache is not None:
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)
        header = cache.get(key)
        if header is not None:
            return header
    header = _read_start(path, HEADER_SIZE, follow_symlinks)
    if cache is not None:
        if len(cache) >= HEADER_CACHE_SIZE:
            cache.clear()
        cache[key] = header
    return header


def _read_start(path: str | bytes, size: int, follow_symlinks: bool = True) -> bytes:
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since it was looked at
            raise OSError(0, "not a regular file")
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def confirm(rule: Rule, path: str | bytes, follow_symlinks: bool = True) -> bool:
    """Whether a conditional rule that matched by magic also wants the file (regular:
    read_header checked): it imports from one of `wasm_imports`, its detector agrees."""
    if rule.wasm_imports:
        try:
            start = _read_start(path, IMPORTS_READ_LIMIT, follow_symlinks)
        except OSError:
            return False
        from ..runners.wasm import import_modules  # only for rules that ask

        if not import_modules(start)[0] & set(rule.wasm_imports):
            return False
    return rule.detector is None or run_detector(rule, path)


def run_detector(rule: Rule, path: str | bytes) -> bool:
    """A binfmt-support detector accepts the file by exiting 0."""
    import subprocess  # only rules with detectors pay for it, not every start

    try:
        done = subprocess.run([rule.detector, path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, timeout=DETECTOR_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"wasmbinfmt: detector of rule {rule.name!r} failed: {e}", file=sys.stderr)
        return False
    return done.returncode == 0


class Inspector:
    """The `inspect` callback of rewrite.resolve_exec, for files found through `locate`.

    `locate` turns the name exec handlers see into a path to open (the tracer
    reads a tracee's files through /proc); `executable(path, first)` says
    whether the exec may go on with that file. `headers` caches what was read
    (see read_header). One inspector serves every exec: the tracer calls it
    for each of them, so it is built once, not per call.
    """

    def __init__(self, matcher: Matcher, locate: Callable[[bytes], bytes | str],
                 executable: Callable[[bytes | str, bool], bool], headers: dict | None = None):
        self.matcher = matcher
        self.locate = locate
        self.executable = executable
        self.headers = headers
        self.nofollow_first = False  # execveat's AT_SYMLINK_NOFOLLOW, for the exec at hand

    def __call__(self, name: bytes, first: bool) -> FileKind | None:
        path = self.locate(name)
        follow = not (first and self.nofollow_first)
        try:
            header = read_header(path, follow, self.headers)
        except OSError:
            return None
        kind = classify(self.matcher, name, header, lambda rule: confirm(rule, path, follow))
        if kind is None or not self.executable(path, first):
            return None
        return kind
