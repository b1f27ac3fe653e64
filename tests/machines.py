"""Which machine the tests run on, and what is foreign to it.

"Foreign" means an architecture other than the host's: the fixtures are built for two
(scripts/build-fixtures.sh: NAME.aarch64, NAME.riscv64) and tests take FOREIGN, the first
that is not this machine's (aarch64 on x86_64, riscv64 on aarch64), or every one of
FOREIGN_ARCHES.
"""

from __future__ import annotations

import os

HOST = os.uname().machine
FOREIGN_ARCHES = tuple(arch for arch in ("aarch64", "riscv64") if arch != HOST)
FOREIGN = FOREIGN_ARCHES[0]

# Debian 12's qemu-user-binfmt registration for each, as /usr/lib/binfmt.d has it (the
# same for qemu-user-static's, whose flags are OPF): magic and mask, in the line's escapes.
_ELF64_LSB = "\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00"
_MASK = ("\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe"
         "\\xff\\xff\\xff")
E_MACHINE = {"aarch64": "\\xb7\\x00", "riscv64": "\\xf3\\x00", "x86_64": "\\x3e\\x00"}


def debian_qemu_line(arch: str, interpreter: str, flags: str) -> str:
    """Debian's registration line for `arch`, with this interpreter and these flags."""
    return f":qemu-{arch}:M::{_ELF64_LSB}{E_MACHINE[arch]}:{_MASK}:{interpreter}:{flags}"


def debian_qemu_yaml(arch: str, interpreter: str) -> str:
    """The same magic and mask as a rules.yaml rule (P, qemu's -0 for argv[0])."""
    return (f"rules:\n  - name: {arch}\n    magic: '{_ELF64_LSB}{E_MACHINE[arch]}'\n"
            f"    mask: '{_MASK}'\n    interpreter: {interpreter}\n    flags: P\n"
            f"    argv0-option: '-0'\n")
