"""Paths as a tracee sees them, turned into paths the tracer can open (pure).

The tracer runs in another process, so a tracee's paths must be read
through ``/proc/<tid>``: its working directory, root, descriptors and
identity, not ours. A path walked through ``/proc/<tid>/root`` still follows
an absolute symlink from the *tracer's* root, so for a tracee whose root is
not ours (a chroot, another mount namespace) names are first resolved as its
kernel would resolve them (resolve_in_root), and the result has no symlink
left to follow.
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


MAX_SYMLINKS = 40  # the kernel's limit on symlinks followed in one lookup (ELOOP past it)


def resolve_in_root(name: bytes, start: bytes, readlink, follow_last: bool = True) -> bytes:
    """`name` as a lookup from directory `start` (both in the tracee's root, which
    `start` is given from) resolves it, with every symlink followed as the kernel does:
    an absolute target from the root, ".." never above it; the last component too unless
    `follow_last` is false. `readlink(path)` gives a symlink's target, or None for a
    file or directory that is not one, or a name that does not exist (the walk then
    keeps the rest as it is: opening it fails as the exec would). Past MAX_SYMLINKS the
    answer is a path that cannot be opened, as the kernel's lookup gives ELOOP."""
    parts = [p for p in name.split(b"/") if p]
    resolved = [] if name.startswith(b"/") else [p for p in start.split(b"/") if p]
    followed = 0
    while parts:
        part = parts.pop(0)
        if part == b".":
            continue
        if part == b"..":
            if resolved:
                resolved.pop()
            continue
        candidate = b"/" + b"/".join([*resolved, part])
        target = readlink(candidate) if parts or follow_last or name.endswith(b"/") else None
        if target is None:
            resolved.append(part)
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            return b"/proc/self/fd/-1/too-many-symlinks"
        if target.startswith(b"/"):
            resolved = []
        parts[:0] = [p for p in target.split(b"/") if p]
    return b"/" + b"/".join(resolved) + (b"/" if name.endswith(b"/") and resolved else b"")
