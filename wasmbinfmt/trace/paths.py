"""Paths as a tracee sees them, turned into paths the tracer can open (pure).

The tracer runs in another process, so a tracee's paths must be read
through ``/proc/<tid>``: its working directory, root, descriptors and
identity, not ours.
"""

from __future__ import annotations

_DEV_STDIO = {b"/dev/stdin": b"0", b"/dev/stdout": b"1", b"/dev/stderr": b"2"}


def host_path(tid: int, name: bytes) -> bytes:
    """The path to open for `name` as the exec handlers receive it (see rewrite.exec_filename).

    Relative names resolve in the tracee's cwd; ``/dev/fd/N[/...]`` (which is
    also how execveat's dirfd and AT_EMPTY_PATH reach the handlers),
    ``/dev/std*``, ``/proc/self`` and ``/proc/thread-self`` name the tracee's;
    other absolute names resolve in the tracee's root, so that a tracee in a
    chroot or in a mount namespace of its own (``unshare -rm``, which needs
    no privilege) has its files looked at, not ours.
    """
    proc = b"/proc/%d" % tid
    if not name.startswith(b"/"):
        return proc + b"/cwd/" + name
    if name.startswith((b"/dev/", b"/proc/")):
        for prefix, replacement in ((b"/dev/fd", b"/fd"), (b"/proc/self", b""),
                                    (b"/proc/thread-self", b"")):
            if name == prefix or name.startswith(prefix + b"/"):
                return proc + replacement + name[len(prefix):]
        if name in _DEV_STDIO:
            return proc + b"/fd/" + _DEV_STDIO[name]
    return proc + b"/root" + name
