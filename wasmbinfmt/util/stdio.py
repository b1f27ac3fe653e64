"""Standard descriptors we were started without, and leaving none but those we keep.

A program started with fd 0, 1 or 2 closed must keep it closed, yet the
first file or pipe we open would take that number and become the program's
stdin or stdout (or where our own error lines go). So each closed one is
held by /dev/null while we work and released again before the program
starts.
"""

from __future__ import annotations

import os

from .abcs import Callable


def close_all_but(keep: Callable[[int], bool]) -> None:
    """Close every open descriptor for which `keep(fd)` is false."""
    for fd in [int(fd) for fd in os.listdir("/proc/self/fd")]:
        try:
            if not keep(fd):
                os.close(fd)
        except OSError:
            pass  # the descriptor listdir used


def hold_closed() -> set[int]:
    """Fill each closed fd 0-2 with /dev/null; the set of them."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            # The lowest free number is `fd` itself: the lower ones are open or just held.
            os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
    return closed


def release(fds: set[int]) -> None:
    for fd in fds:
        os.close(fd)
