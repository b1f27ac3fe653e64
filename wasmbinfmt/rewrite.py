"""What the emulator receives: the kernel's load_misc_binary, as pure functions.

For ``execve(path, [a0, a1, ...])`` matched by a rule with interpreter I:

- without P: ``[I, *args, path, a1, ...]``  (a0 is dropped)
- with P:    ``[I, *args, path, a0, a1, ...]``

``path`` is the file name exactly as the caller passed it (relative stays
relative); for ``execveat`` it is the name the kernel builds (exec_filename).
``args`` is our extension (rules.yaml), so no wrapper script is ever needed.
The environment goes through unchanged, plus the rule's ``env`` for the
emulator only.

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

import os
from dataclasses import dataclass
from typing import Sequence

from .rules import Rule

AT_FDCWD = -100


@dataclass(frozen=True)
class ExecPlan:
    """The exec that replaces the caller's: run `path` with `argv`, adding `env` for it."""

    path: bytes
    argv: tuple[bytes, ...]
    env: tuple[tuple[bytes, bytes], ...] = ()


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


def plan_exec(rule: Rule, path: bytes, argv: Sequence[bytes]) -> ExecPlan:
    """The emulator's exec for a matched file, as binfmt_misc would build it."""
    if not argv:
        # Since Linux 5.18 an empty argv is given a single "" as argv[0].
        argv = (b"",)
    head = (os.fsencode(rule.interpreter), *map(os.fsencode, rule.args), path)
    rest = tuple(argv) if rule.preserve_argv0 else tuple(argv[1:])
    env = tuple((os.fsencode(k), os.fsencode(v)) for k, v in rule.env)
    return ExecPlan(os.fsencode(rule.interpreter), head + rest, env)
