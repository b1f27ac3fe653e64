"""Kernel calls the Python standard library lacks, through ctypes, in one place.

The libc is loaded by name (libc.so.6) rather than through ctypes.util or
python-ptrace's lookup, which forks ldconfig (~40 ms at every start).
"""

from __future__ import annotations

import ctypes
import os

from .seccomp import Insn, pack

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def install_seccomp_filter(program: list[Insn]) -> None:
    """Install `program` on the calling thread; NO_NEW_PRIVS first, as unprivileged users must."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    code = ctypes.create_string_buffer(pack(program))
    fprog = _SockFprog(len(program), ctypes.cast(code, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0),
           "prctl(PR_SET_SECCOMP)")
