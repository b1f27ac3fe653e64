"""Looking at files the way exec handlers do: the first 256 bytes, and binfmt-support detectors."""

from __future__ import annotations

import os
import stat
import sys
from typing import Callable

from .match import Matcher
from .rewrite import FileKind, classify
from .rules import HEADER_SIZE, Rule

DETECTOR_TIMEOUT = 10  # seconds a binfmt-support detector may take
HEADER_CACHE_SIZE = 4096


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
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    try:
        header = os.pread(fd, HEADER_SIZE, 0)
    finally:
        os.close(fd)
    if cache is not None:
        if len(cache) >= HEADER_CACHE_SIZE:
            cache.clear()
        cache[key] = header
    return header


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
        try:
            header = read_header(path, not (first and self.nofollow_first), self.headers)
        except OSError:
            return None
        kind = classify(self.matcher, name, header, lambda rule: run_detector(rule, path))
        if kind is None or not self.executable(path, first):
            return None
        return kind
