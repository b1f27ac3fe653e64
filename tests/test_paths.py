"""Paths as a tracee sees them, as the tracer must open them (trace/paths.py, pure)."""

from __future__ import annotations

import pytest

from wasmbinfmt.trace.paths import host_path


@pytest.mark.parametrize("name,path", [
    (b"prog", b"/proc/7/cwd/prog"),
    (b"./a/../prog", b"/proc/7/cwd/./a/../prog"),
    (b"/usr/bin/prog", b"/proc/7/root/usr/bin/prog"),  # the tracee's root (chroot, mounts)
    (b"/", b"/proc/7/root/"),
    (b"/dev/fd/3", b"/proc/7/fd/3"),  # execveat(fd, "", AT_EMPTY_PATH)
    (b"/dev/fd/3/prog", b"/proc/7/fd/3/prog"),  # execveat(dirfd, "prog")
    (b"/dev/fd", b"/proc/7/fd"),
    (b"/dev/fdx", b"/proc/7/root/dev/fdx"),
    (b"/dev/stdin", b"/proc/7/fd/0"),
    (b"/dev/stderr", b"/proc/7/fd/2"),
    (b"/dev/null", b"/proc/7/root/dev/null"),
    (b"/proc/self/exe", b"/proc/7/exe"),
    (b"/proc/self", b"/proc/7"),
    (b"/proc/selfish", b"/proc/7/root/proc/selfish"),
    (b"/proc/thread-self/exe", b"/proc/7/exe"),
    (b"/proc/1/exe", b"/proc/7/root/proc/1/exe"),
    (b"\xff/x", b"/proc/7/cwd/\xff/x"),
])
def test_host_path(name, path):
    assert host_path(7, name) == path
