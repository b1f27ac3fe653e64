"""Giving a WASI program the host's current directory.

WASI has no current directory: wasi-libc turns a path into (preopened
directory, path relative to it) by the longest preopen name that prefixes
the path. What it does with a *relative* path depends on whether the
program links ``chdir`` (same in Debian 12's wasi-libc 0.0~git20220510 and
in the one zig 0.17 ships; see docs/wasi.md):

- A program that calls ``chdir`` links wasi-libc's emulated current
  directory: a ``char *`` (``__wasilibc_cwd``) that starts as ``"/"``, is
  prefixed to every relative path, and is what ``getcwd`` returns. The
  runner *seeds* it with the real current directory before ``_start`` and
  maps the host's ``/`` to ``/``: absolute paths, relative paths (``../``
  included) and ``getcwd()`` then behave as natively.
- A program that does not call ``chdir`` resolves a relative path against
  the root of the preopens: ``f`` and ``/f`` are the same request once libc
  is done with them, so no mapping serves both. The runner maps the current
  directory as ``.``, its ancestors as ``..``, ``../..`` ..., and every
  top-level directory of the host under its own name, except names the
  current directory also has (there the relative reading wins). ``f``,
  ``../f``, ``sub/f``, ``/usr/...`` and ``/tmp/...`` work; ``/`` itself,
  files directly in ``/`` and absolute paths under a shadowed top-level
  name do not. If it links ``getcwd``, that is seeded too. Each preopen is a
  descriptor the runner holds; when the process may not have that many more
  (RLIMIT_NOFILE, whose soft limit is raised for them where the hard one
  allows), the most useful few are kept (most_useful).

Finding ``__wasilibc_cwd`` in a linked module, which has no symbols: an
aligned word of the data image that points at a ``"/"`` string (or the tail
``"/"`` of a longer one: linkers merge strings) and that the code reads at
that constant address, in either form LLVM emits (``i32.const 0; i32.load
offset=ADDR`` or ``i32.const ADDR; i32.load``): one pass over the code, linear
in the module's size. Linked ``chdir`` is recognised by a store to it; when
several words qualify, the one written is it. Anything less certain (several
written, or several read and none written) leaves the module as it is. The
runner keeps the answer in its cache, by the module's content. The one misreading left: a program that links neither
``getcwd`` nor ``chdir`` but has its own global ``char *p = "/"`` would see
``p`` seeded; ``--dir`` (which turns all of this off) is the way out. The seeded string goes just below the initial stack
pointer, which is lowered past it (as the kernel puts argv strings above a
new process' stack); that needs the stack pointer (global 0, as wasm-ld
emits it) exported, the only change made to the module.
"""

from __future__ import annotations

import os
import struct

from ..util.abcs import Callable
from ..util.record import record
from . import wasm

STACK_POINTER_EXPORT = "__wasmbinfmt_stack_pointer"
LONGEST_SEEDED_CWD = 4096  # PATH_MAX; a longer cwd is left unseeded


@record
class LibcCwd:
    address: int  # of wasi-libc's ``char *__wasilibc_cwd``
    resolves_paths: bool  # chdir is linked: relative paths go through it


def find_libc_cwd(data: bytes, doubts: list[str] | None = None) -> LibcCwd | None:
    """Where the module's emulated cwd is, or None; `doubts` gets why, when there are
    words it could be but no telling which."""
    try:
        found = wasm.sections(data)
        stack_pointer = wasm.first_global(data, found)
        if stack_pointer is None or not stack_pointer[0] or stack_pointer[1] is None:
            return None
        image = wasm.DataImage(wasm.data_segments(data, found))
        loads, stores = wasm.constant_address_accesses(data, found)
        # Globals the code reads whose initial value points at a "/" (the string may be
        # the tail of a longer one: linkers merge them).
        candidates = [address for address in sorted(loads) if address % 4 == 0
                      and (image.read(image.word(address) or 0, 2) or b"") == b"/\0"
                      and image.word(address) is not None]
        # chdir writes it: as a store's offset, or pushed once more than it is read (the
        # store whose value comes between the address and the instruction).
        written = [address for address in candidates if address in stores
                   or wasm.constant_uses(data, found, address)
                   > wasm.constant_uses(data, found, address, then=b"\x28\x02\x00")]
        if len(written) == 1:
            return LibcCwd(written[0], True)
        if not written and len(candidates) == 1:
            return LibcCwd(candidates[0], False)
        alike = written if written else candidates
        if len(alike) > 1 and doubts is not None:
            doubts.append(f"{len(alike)} words could be wasi-libc's current directory "
                          f"({', '.join(hex(a) for a in alike)}); none is seeded, so getcwd() "
                          f"gives / and relative paths resolve from the root of the mapping")
    except wasm.WasmFormatError:
        pass
    return None  # none, or more than one that could be it: left as it is


def prepare(data: bytes, libc_cwd: LibcCwd | None | bool = True
            ) -> tuple[bytes, LibcCwd | None]:
    """The module to compile (the stack pointer exported when seeding is possible)
    and where its cwd lives (`libc_cwd`: what find_libc_cwd said, if known already)."""
    if libc_cwd is True:
        libc_cwd = find_libc_cwd(data)
    if libc_cwd is None:
        return data, None
    patched = wasm.with_exported_global(data, wasm.sections(data), 0, STACK_POINTER_EXPORT)
    return patched, libc_cwd


def code_key() -> tuple:
    """What find_libc_cwd's answer depends on besides the module: its code."""
    here = os.path.dirname(os.path.abspath(__file__))
    return tuple((st.st_mtime_ns, st.st_size) for st in
                 (os.stat(os.path.join(here, name)) for name in ("wasi_cwd.py", "wasm.py")))


def preopens(cwd: str, libc_cwd: LibcCwd | None,
             listdir: Callable[[str], list[str]] = os.listdir,
             isdir: Callable[[str], bool] = os.path.isdir,
             lexists: Callable[[str], bool] = os.path.lexists) -> list[tuple[str, str]]:
    """(host directory, guest name) pairs, in registration order."""
    if libc_cwd is not None and libc_cwd.resolves_paths or cwd == "/":
        return [("/", "/")]
    mapped = [(cwd, ".")]
    parts = cwd.strip("/").split("/")
    for up in range(1, len(parts) + 1):
        mapped.append(("/" + "/".join(parts[:-up]), "/".join([".."] * up)))
    return mapped + _top_level(listdir, isdir, lambda name: lexists(os.path.join(cwd, name)))


def _top_level(listdir, isdir, shadowed) -> list[tuple[str, str]]:
    """Every top-level directory of the host under its own name, but those the current
    directory has a name for (there the relative reading wins)."""
    try:
        top_level = sorted(listdir("/"))
    except OSError:
        top_level = []
    return [("/" + name, "/" + name) for name in top_level
            if isdir("/" + name) and not shadowed(name)]


ANCESTORS_BY_DESCRIPTOR = 8


def preopens_by_descriptor(listdir: Callable[[str], list[str]] = os.listdir,
                           isdir: Callable[[str], bool] = os.path.isdir,
                           lexists: Callable[[str], bool] = os.path.lexists,
                           ) -> tuple[list[tuple[str, str]], list[int]]:
    """The layout of `preopens` for a current directory whose path cannot be had (longer
    than PATH_MAX, or removed): it and up to ANCESTORS_BY_DESCRIPTOR of its ancestors are
    named by /proc/self/fd/N (a short path to any directory). Also the descriptors, to
    close once the runtime has opened its own."""
    held: list[int] = []
    mapped: list[tuple[str, str]] = []
    try:
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return [("/", "/")], held
    root = os.stat("/")
    for up in range(ANCESTORS_BY_DESCRIPTOR + 1):
        held.append(fd)
        mapped.append((f"/proc/self/fd/{fd}", "/".join([".."] * up) or "."))
        st = os.stat(fd)
        if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
            break
        try:
            fd = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            break
    return mapped + _top_level(listdir, isdir, lexists), held


# When descriptors are short, the preopens kept first: relative paths, then the top-level
# directories programs use most, then the rest in layout order.
USEFUL_FIRST = (".", "/dev", "..", "/tmp", "/usr", "/etc", "/home", "/proc", "/var")


def most_useful(mapped: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """`count` of the preopens, by USEFUL_FIRST, in their registration order."""
    rank = {guest: i for i, guest in enumerate(USEFUL_FIRST)}
    kept = sorted(range(len(mapped)),
                  key=lambda i: (rank.get(mapped[i][1], len(rank)), i))[:max(0, count)]
    return [mapped[i] for i in sorted(kept)]


def seed(process, libc_cwd: LibcCwd, cwd: str) -> bool:
    """Point the module's ``__wasilibc_cwd`` at a copy of `cwd` below its stack
    (`process`: a capi.WasiProcess, instantiated, not started)."""
    from .capi import EXTERN_GLOBAL, EXTERN_MEMORY

    encoded = cwd.encode("utf-8", "surrogateescape") + b"\0"
    if len(encoded) > LONGEST_SEEDED_CWD or not process.has_export(
            STACK_POINTER_EXPORT, EXTERN_GLOBAL) or not process.has_export("memory",
                                                                         EXTERN_MEMORY):
        return False
    string = (process.global_i32(STACK_POINTER_EXPORT) - len(encoded)) & ~15
    if string <= 0:
        return False
    process.write_memory("memory", string, encoded)
    process.set_global_i32(STACK_POINTER_EXPORT, string)
    process.write_memory("memory", libc_cwd.address, struct.pack("<I", string))
    return True
