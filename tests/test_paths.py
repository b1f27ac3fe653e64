"""Paths as a tracee sees them, as the tracer must open them (trace/paths.py, pure)."""

from __future__ import annotations

import pytest

from wasmbinfmt.trace.paths import host_path, resolve_in_root


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


# A tree as a tracee in a chroot sees it: symlinks by path, inside its root.
LINKS = {b"/usr/bin/tool": b"/bin/real", b"/bin/rel": b"real", b"/lib": b"usr/lib",
         b"/usr/lib/up": b"../../bin/real", b"/loop1": b"/loop2", b"/loop2": b"/loop1",
         b"/etc/escape": b"../../../../bin/real", b"/home/u/here": b"./sub/../x"}


def resolve(name, start=b"/", follow=True):
    return resolve_in_root(name, start, LINKS.get, follow)


@pytest.mark.parametrize("name, start, resolved", [
    (b"/usr/bin/tool", b"/", b"/bin/real"),  # an absolute target: from the tracee's root
    (b"/bin/rel", b"/", b"/bin/real"),  # a relative one: from the link's directory
    (b"/lib/up", b"/", b"/bin/real"),  # a link in the middle, then ".." inside it
    (b"/etc/escape", b"/", b"/bin/real"),  # ".." stops at the root
    (b"../../../bin/real", b"/home/u", b"/bin/real"),
    (b"tool", b"/usr/bin", b"/bin/real"),  # relative names start in the cwd
    (b"./here", b"/home/u", b"/home/u/x"),
    (b"/usr/bin/tool/", b"/", b"/bin/real/"),  # a trailing slash stays (ENOTDIR natively)
    (b"/missing/../bin/rel", b"/", b"/bin/real"),  # a missing directory: left as it is
])
def test_names_resolve_in_the_tracees_root_as_its_kernel_resolves_them(name, start, resolved):
    assert resolve(name, start) == resolved


def test_a_last_symlink_is_left_when_not_followed():
    assert resolve(b"/usr/bin/tool", follow=False) == b"/usr/bin/tool"  # AT_SYMLINK_NOFOLLOW
    assert resolve(b"/lib/up", follow=False) == b"/usr/lib/up"


def test_a_symlink_loop_gives_a_path_that_cannot_be_opened():
    with pytest.raises(OSError):
        open(resolve(b"/loop1"), "rb")
