"""Standard descriptors we were started without.

A program started with fd 0, 1 or 2 closed must keep it closed, yet the
first file or pipe we open would take that number and become the program's
stdin or stdout (or where our own error lines go). So each closed one is
held by /dev/null while we work and released again before the program
starts.
"""

from __future__ import annotations

import os


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
