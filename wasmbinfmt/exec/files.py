"""Looking at files the way exec handlers do: the first 256 bytes; what conditional rules
ask for: a wasm module's imports, binfmt-support detectors; and an ELF program's loader,
for the sysroot qemu-user is given (ld-prefix)."""

from __future__ import annotations

import errno
import os
import stat
import struct
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


PT_INTERP = 3
LOADER_PATH_MAX = 4096  # the kernel refuses a longer PT_INTERP (ENOEXEC)


def elf_loader(path: str | bytes) -> bytes | None:
    """The loader an ELF program names (PT_INTERP, as the kernel's load_elf_binary reads
    it), or None: a static program, not ELF, unreadable or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return loader_in(lambda offset, size: os.pread(fd, size, offset))
    except (OSError, struct.error, ValueError):
        return None
    finally:
        os.close(fd)


def loader_in(read: Callable[[int, int], bytes]) -> bytes | None:
    """PT_INTERP's path from an ELF file read by `read(offset, size)` (struct.error,
    ValueError: cut short or malformed)."""
    ident = read(0, 64)
    if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None
    wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if wide:
        phoff, = struct.unpack_from(order + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", ident, 54)
    else:
        phoff, = struct.unpack_from(order + "I", ident, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", ident, 42)
    if phentsize < (56 if wide else 32) or phnum > 4096:
        raise ValueError("program headers")
    table = read(phoff, phentsize * phnum)
    for i in range(phnum):
        if wide:
            kind, _, offset, _, _, size = struct.unpack_from(order + "IIQQQQ", table,
                                                             i * phentsize)
        else:
            kind, offset, _, _, size = struct.unpack_from(order + "IIIII", table, i * phentsize)
        if kind == PT_INTERP:
            if not 2 <= size <= LOADER_PATH_MAX:
                raise ValueError("PT_INTERP size")
            loader = read(offset, size)
            if len(loader) != size or loader[-1:] != b"\0":
                raise ValueError("PT_INTERP")
            return loader[:-1]
    return None


def ld_prefix_for(loader: bytes, prefixes: tuple[str, ...],
                  exists: Callable[[bytes], bool] = os.path.exists) -> str | None:
    """The sysroot to give qemu for a program whose loader is `loader`: None where this
    machine has the loader itself, else the first of `prefixes` that has it, if any."""
    if not loader.startswith(b"/") or exists(loader):
        return None
    for prefix in prefixes:
        if exists(os.fsencode(prefix.rstrip("/")) + loader):
            return prefix
    return None


def emulator_loop(matcher: Matcher, rule: Rule) -> tuple[Rule, ...]:
    """The rules that take `rule`'s emulator in turn, where that never ends (the kernel
    looks an interpreter up again, up to its depth: ELOOP for every file of `rule`); ()
    where the emulator runs (or is missing: another message says so)."""
    from .rewrite import Fail, resolve_exec

    if not rule.interpreter.startswith("/"):
        return ()
    inspect = Inspector(matcher, lambda path, first: os.access(path, os.X_OK))
    verdict = resolve_exec(os.fsencode(rule.interpreter), inspect)
    return verdict.rules if isinstance(verdict, Fail) and verdict.errno == errno.ELOOP else ()


def loop_message(emulator: str, rules: tuple[Rule, ...]) -> str:
    """What check and -v say of an emulator that `rules` take in turn, without end."""
    names = " → ".join(repr(name) for name in dict.fromkeys(rule.name for rule in rules))
    return (f"its emulator {emulator} is itself taken by rule {names}: a loop, so the exec "
            f"fails with ELOOP, as under binfmt_misc (the kernel looks an emulator up again)")


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

    `executable(path, first)` says whether the exec may go on with that file.
    `locate(name, follow)` turns the name exec handlers see into a path to open (the
    tracer reads a tracee's files through /proc), following a last symlink or not; None:
    the name as it is. `headers` caches what was read (see read_header). One inspector
    serves every exec: the tracer calls it for each of them, so it is built once, not per
    call.
    """

    def __init__(self, matcher: Matcher, executable: Callable[[bytes | str, bool], bool],
                 locate: Callable[[bytes, bool], bytes | str] | None = None,
                 headers: dict | None = None):
        self.matcher = matcher
        self.locate = locate
        self.executable = executable
        self.headers = headers
        self.nofollow_first = False  # execveat's AT_SYMLINK_NOFOLLOW, for the exec at hand

    def __call__(self, name: bytes, first: bool) -> FileKind | None:
        follow = not (first and self.nofollow_first)
        path = name if self.locate is None else self.locate(name, follow)
        try:
            header = read_header(path, follow, self.headers)
        except OSError:
            return None
        kind = classify(self.matcher, name, header, lambda rule: confirm(rule, path, follow))
        if kind is None or not self.executable(path, first):
            return None
        return kind
