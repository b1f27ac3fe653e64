"""What the emulator receives: the kernel's load_misc_binary, as pure functions.

For ``execve(path, [a0, a1, ...])`` matched by a rule with interpreter I:

- without P: ``[I, *args, path, a1, ...]``  (a0 is dropped)
- with P:    ``[I, *args, path, a0, a1, ...]``
- with P and an ``argv0_option`` O (ours, for qemu-user's ``-0``):
  ``[I, *args, O, a0, path, a1, ...]``

``path`` is the file name exactly as the caller passed it (relative stays
relative); for ``execveat`` it is the name the kernel builds (exec_filename).
``args`` is our extension (rules.yaml), so no wrapper script is ever needed.
The environment goes through unchanged, plus the rule's ``env`` for the
emulator only.

The emulator is looked at again, as the kernel does: it may match another
rule or be a ``#!`` script, and a ``#!`` script's interpreter may be a
foreign binary (resolve_exec follows the chain, to the kernel's depth limit).

The flags a userspace tracer can only approximate:

- P: the kernel also sets AT_FLAGS_PRESERVE_ARGV0 in the auxiliary vector. A
  tracer cannot; emulators that need to be told (qemu) take ``-0 a0`` instead,
  written in the rule's ``args`` or handled by the emulator's ``-binfmt-P`` name.
- O: the kernel hands the interpreter an open descriptor of the binary
  (AT_EXECFD). We pass the path only, so the emulator opens the file itself:
  a binary that is executable but not readable by the caller (mode 0111) runs
  natively under binfmt_misc but cannot be read by the emulator here.
- C: the kernel computes credentials from the binary (setuid/setgid). A tracer
  cannot grant privileges and its tracees run with NO_NEW_PRIVS when it is
  unprivileged: the emulator runs with the caller's credentials.
- F: the kernel opens the interpreter once, at registration, so it works
  inside chroots and mount namespaces. We check and resolve the interpreter to
  an absolute path when rules are loaded; the file is still opened at each exec.
"""

from __future__ import annotations

import errno
import os

from ..util.abcs import Callable, Sequence
from .match import Matcher
from ..util.record import record
from ..rules.model import HEADER_SIZE, Rule

AT_FDCWD = -100
# The kernel's exec_binprm allows 5 interpreter rewrites (binfmt_misc or #!) before the
# file that finally loads; a 6th gives ELOOP. Measured on Linux 6.18 with #! chains.
MAX_REWRITES = 5


def exec_filename(dirfd: int, name: bytes) -> bytes:
    """The path string the kernel gives binfmt handlers for ``execveat(dirfd, name)``.

    ``execve`` is ``execveat(AT_FDCWD, name, ..., 0)``. With a real directory
    descriptor and a relative name the kernel builds ``/dev/fd/N/name``, or
    ``/dev/fd/N`` for an empty name (AT_EMPTY_PATH, fexecve).
    """
    if dirfd == AT_FDCWD or name.startswith(b"/"):
        return name
    if not name:
        return b"/dev/fd/%d" % dirfd
    return b"/dev/fd/%d/%s" % (dirfd, name)


def parse_shebang(header: bytes) -> tuple[bytes, bytes | None] | None:
    """(interpreter, optional argument) of a ``#!`` line as fs/binfmt_script.c reads it, or None.

    Written index for index after the kernel's load_script, since its edge
    cases are what callers see: the first 256 bytes (zero-padded) are looked
    at; the search for the newline stops at a NUL; without a newline the
    interpreter must end (space, tab or NUL) within the buffer or the line is
    taken as truncated and refused; spaces and tabs around it are trimmed;
    everything after the name's first space or tab is one argument.
    """
    buf = bytearray(header[:HEADER_SIZE].ljust(HEADER_SIZE, b"\0"))
    if buf[:2] != b"#!":
        return None
    last = HEADER_SIZE - 1

    def spacetab(i: int) -> bool:
        return buf[i] in b" \t"

    def next_non_spacetab(i: int, j: int) -> int | None:
        return next((k for k in range(i, j + 1) if not spacetab(k)), None)

    def next_terminator(i: int, j: int) -> int | None:
        return next((k for k in range(i, j + 1) if spacetab(k) or buf[k] == 0), None)

    nul = buf.find(0)
    i_end = buf.find(b"\n", 0, nul if nul >= 0 else HEADER_SIZE)
    if i_end < 0:
        i_end = next_non_spacetab(2, last)
        if i_end is None or next_terminator(i_end, last) is None:
            return None
        i_end = last
    while spacetab(i_end - 1):
        i_end -= 1
    i_name = next_non_spacetab(2, i_end)
    if i_name is None or i_name == i_end:
        return None
    i_sep = next_terminator(i_name, i_end)
    i_arg = None
    if i_sep is not None and buf[i_sep] != 0:
        i_arg = next_non_spacetab(i_sep, i_end)
    buf[i_end] = 0
    if i_sep is not None:
        buf[i_sep] = 0

    def string_at(i: int) -> bytes:
        return bytes(buf[i:buf.index(0, i)])

    return string_at(i_name), (string_at(i_arg) if i_arg is not None else None)


@record
class Argv:
    """The argv the kernel is building: new strings in front of the caller's own from `skip` on.

    Only the front of argv ever changes during interpreter rewrites, so the
    caller's strings are never copied: `skip` counts those dropped from the
    front (remove_arg_zero), `head` holds what was put in front. An int in
    `head` is the caller's string of that index, moved (take_arg_zero). (For
    an empty argv the tracer supplies the "" that Linux >= 5.18 puts there.)
    """

    head: tuple[bytes | int, ...] = ()
    skip: int = 0

    def remove_arg_zero(self) -> "Argv":
        return self.take_arg_zero()[1]

    def take_arg_zero(self) -> tuple[bytes | int, "Argv"]:
        """argv[0] (a string, or the caller's index) and the argv without it."""
        if self.head:
            return self.head[0], Argv(self.head[1:], self.skip)
        return self.skip, Argv((), self.skip + 1)

    def push_front(self, *strings: bytes) -> "Argv":
        return Argv(tuple(strings) + self.head, self.skip)

    def build(self, caller: Sequence[bytes]) -> list[bytes]:
        """The whole argv, given the caller's strings (for tests and logs)."""
        caller = caller or [b""]
        return [caller_string(caller, s) for s in self.head] + list(caller[self.skip:])


def caller_string(caller: Sequence, item: bytes | int):
    """An item of Argv.head: itself, or the caller's argv entry it refers to ("" past the
    end: the argv[0] Linux gives an empty argv)."""
    if isinstance(item, bytes):
        return item
    return caller[item] if item < len(caller) else b""


@record
class FileKind:
    """What the kernel's format handlers would make of a file (found by the caller)."""

    rule: Rule | None = None  # a binfmt_misc-style rule claims it
    script: tuple[bytes, bytes | None] | None = None  # a #! line: (interpreter, argument)


@record
class Rewrite:
    """Exec `path` with `argv` instead of the caller's file; `env` is added for it."""

    path: bytes
    argv: Argv
    rules: tuple[Rule, ...]
    env: tuple[tuple[bytes, bytes], ...] = ()
    # The first rule applied that has ld-prefix sysroots, and the file it was applied to:
    # whether that file's loader is on this machine is the tracer's to find out.
    sysroot_for: tuple[Rule, bytes] | None = None


@record
class Fail:
    """Fail the exec with this errno, as the kernel would; for ELOOP, the rules that were
    applied before the depth ran out (a rule whose emulator a rule takes again)."""

    errno: int
    rules: tuple[Rule, ...] = ()


def classify(matcher: Matcher, name: bytes, header: bytes,
             confirm: Callable[[Rule], bool] | None = None) -> FileKind | None:
    """binfmt_misc first (as the kernel tries it before #! and ELF), then a #! line."""
    rule = matcher.match(name, header, confirm)
    if rule is not None:
        return FileKind(rule=rule)
    script = parse_shebang(header) if header.startswith(b"#!") else None
    return FileKind(script=script) if script else None


def resolve_exec(path: bytes, inspect: Callable[[bytes, bool], FileKind | None],
                 path_inaccessible: bool = False) -> Rewrite | Fail | None:
    """Follow the kernel's interpreter rewrites from `path` as far as the last rule applies.

    `inspect(name, first)` says what the handlers would make of the file
    (None: not ours to handle: an ELF, or not executable, or missing, so the
    kernel runs or refuses it natively). `first` is true for the caller's own
    file. The result rewrites the exec up to and including the last rule that
    applies, leaving any #! steps after it to the kernel. With no rule
    anywhere in the chain the exec is left alone. `path_inaccessible` is the
    kernel's BINPRM_FLAGS_PATH_INACCESSIBLE (execveat on a close-on-exec fd):
    binfmt_misc and #! then fail with ENOENT.
    """
    kind = inspect(path, True)
    if kind is None:
        return None  # nearly every exec of a tree: nothing more to set up
    argv = Argv()
    current, applied, env = path, (), ()
    sysroot_for = None
    result: Rewrite | Fail | None = None
    for depth in range(MAX_REWRITES + 1):
        if depth:
            kind = inspect(current, False)
        if kind is None or (kind.rule is None and kind.script is None):
            return result
        if depth == MAX_REWRITES:
            return Fail(errno.ELOOP, applied) if applied or kind.rule else None
        if depth == 0 and path_inaccessible:
            return Fail(errno.ENOENT)  # what the kernel answers for a rule and for #! alike
        if kind.rule is not None:
            rule = kind.rule
            interpreter = os.fsencode(rule.interpreter)
            args = tuple(map(os.fsencode, rule.args))
            if rule.argv0_option is not None:
                arg0, argv = argv.take_arg_zero()
                argv = argv.push_front(interpreter, *args, os.fsencode(rule.argv0_option), arg0,
                                       current)
            else:
                if not rule.preserve_argv0:
                    argv = argv.remove_arg_zero()
                argv = argv.push_front(interpreter, *args, current)
            env += tuple((os.fsencode(k), os.fsencode(v)) for k, v in rule.env)
            if rule.ld_prefixes and sysroot_for is None:
                sysroot_for = (rule, current)
            applied += (rule,)
            current = interpreter
            result = Rewrite(current, argv, applied, env, sysroot_for)
        else:
            name, arg = kind.script
            argv = argv.remove_arg_zero()
            argv = argv.push_front(name, *([arg] if arg is not None else []), current)
            current = name
    return result

