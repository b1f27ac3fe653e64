"""Kernel calls the Python standard library lacks, through ctypes, in one place.

ptrace requests (SEIZE, LISTEN, register sets), process_vm_readv/writev,
seccomp installation, setfsuid/setfsgid. The libc is loaded by name
(libc.so.6): ctypes.util.find_library, which python-ptrace's bindings use,
forks ldconfig and costs ~40 ms at every start. Buffers passed to the kernel
on the hot path are allocated once by the callers (see tracee.py).
"""

from __future__ import annotations

import ctypes
import errno
import os

from .seccomp import SOCK_FILTER_SIZE, Insn, pack

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PTRACER = 0x59616D61  # Yama: let this process (not an ancestor) trace us
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2

# <linux/ptrace.h>
PTRACE_CONT = 7
PTRACE_SYSCALL = 24
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128
NT_PRSTATUS = 1
WALL = 0x40000000  # __WALL: wait for threads and clone children too
KCMP_VM = 1

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long
_ptrace = _libc.ptrace
for _name in ("process_vm_readv", "process_vm_writev"):
    getattr(_libc, _name).argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                                      ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    getattr(_libc, _name).restype = ctypes.c_ssize_t
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p]
_libc.execvp.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
_raw_syscall = _libc["syscall"]  # a function object of its own: its argtypes are not ours
_raw_syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                         ctypes.c_void_p, ctypes.c_ulong]
# What execvp passes. Looked up in the global scope: where the program refers to `environ`,
# the live variable is its copy, and libc.so.6's own stays NULL.
_environ = ctypes.c_void_p.in_dll(ctypes.CDLL(None), "environ")


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), what)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise _error(what)


def pack_filter(program: list[Insn]) -> ctypes.Array:
    """`program` as the kernel reads it, for install_seccomp_filter."""
    code = pack(program)
    return ctypes.create_string_buffer(code, len(code))


def install_seccomp_filter(program: ctypes.Array, seccomp_syscall: int,
                           no_new_privs: bool = True) -> None:
    """Install `program` (from pack_filter) on the calling thread.

    Without CAP_SYS_ADMIN the kernel requires NO_NEW_PRIVS first (setuid
    programs then run without their privileges); root may go without it.
    SPEC_ALLOW: on kernels whose speculative-store-bypass mitigation is
    "seccomp" (the default before 5.16), a filter would otherwise turn the
    mitigation on for the whole tree, slowing every program in it; the filter
    is for stopping at exec, not a sandbox, so the tree keeps the machine's
    setting. (Kernels before 4.17 lack the flag and get the filter without it.)
    """
    if no_new_privs:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    fprog = _SockFprog(len(program) // SOCK_FILTER_SIZE, ctypes.cast(program, ctypes.c_void_p))
    for flags in (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
        result = _libc.syscall(seccomp_syscall, SECCOMP_SET_MODE_FILTER, flags,
                               ctypes.addressof(fprog))
        if result == 0 or ctypes.get_errno() != errno.EINVAL:
            break
    _check(result, "seccomp(SECCOMP_SET_MODE_FILTER)")


def allow_tracer(pid: int) -> None:
    """Let `pid` trace us under Yama's ptrace_scope=1; harmless (EINVAL) without Yama."""
    _libc.prctl(PR_SET_PTRACER, pid, 0, 0, 0)


def execvp(argv: list[bytes]) -> OSError:
    """libc's execvp (PATH search, and /bin/sh for a file the kernel calls ENOEXEC, as
    shells do; os.execvp does not). Returns the error when it fails."""
    _libc.execvp(argv[0], _c_argv(argv))
    return _error(os.fsdecode(argv[0]))


def execve_with_key(path: bytes, argv: list[bytes], execve_nr: int, key: int) -> OSError:
    """execve(path, argv, environ) with `key` as its (ignored) fourth argument, which our
    seccomp filter can let through (seccomp.py). Returns the error when it fails."""
    _raw_syscall(execve_nr, path, _c_argv(argv), _environ.value, key)
    return _error(os.fsdecode(path))


def _c_argv(argv: list[bytes]) -> ctypes.Array:
    """A NULL-terminated char *[] of `argv`."""
    return (ctypes.c_char_p * (len(argv) + 1))(*argv, None)


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    result = _libc.ptrace(request, pid, addr, data)
    if result == -1:
        raise _error(f"ptrace({request:#x}, {pid})")
    return result


def resume(request: int, pid: int, signal: int = 0) -> bool:
    """PTRACE_CONT, SYSCALL or LISTEN, tolerating a tracee killed meanwhile (ESRCH): False."""
    if _ptrace(request, pid, None, signal) != -1:
        return True
    if ctypes.get_errno() == 3:  # ESRCH: killed (SIGKILL) between its stop and our request
        return False
    raise _error(f"ptrace({request:#x}, {pid})")


_event_message = ctypes.c_ulong()
_event_message_address = ctypes.addressof(_event_message)


def event_message(pid: int) -> int:
    """PTRACE_GETEVENTMSG: the new tid at a clone event, the filter's data at a seccomp stop."""
    ptrace(PTRACE_GETEVENTMSG, pid, 0, _event_message_address)
    return _event_message.value


def same_memory(kcmp_syscall: int, pid: int, other: int) -> bool:
    """Whether two processes share one address space (kcmp KCMP_VM). When the kernel cannot
    tell (no kcmp, no permission), True: the caller then takes the careful way."""
    result = _libc.syscall(kcmp_syscall, pid, other, ctypes.c_void_p(KCMP_VM))
    if result == 0:
        return True
    if result > 0:
        return False
    return ctypes.get_errno() != errno.ESRCH  # gone: it shares nothing any more


def get_regset(pid: int, regset: int, iov_address: int) -> None:
    """Fill the buffer the IoVec at `iov_address` points at with register set `regset`
    (NT_PRSTATUS: the registers)."""
    ptrace(PTRACE_GETREGSET, pid, regset, iov_address)


def set_regset(pid: int, regset: int, iov_address: int) -> None:
    ptrace(PTRACE_SETREGSET, pid, regset, iov_address)


def _vm_transfer(call, pid: int, local: ctypes.Array, remote: ctypes.Array, count: int) -> int:
    n = call(pid, ctypes.addressof(local), count, ctypes.addressof(remote), count, 0)
    if n < 0:
        raise _error(call.__name__)
    return n


def vm_readv(pid: int, local: ctypes.Array, remote: ctypes.Array, count: int) -> int:
    """process_vm_readv over the first `count` iovecs; bytes read (short at an unmapped page)."""
    return _vm_transfer(_libc.process_vm_readv, pid, local, remote, count)


def vm_writev(pid: int, local: ctypes.Array, remote: ctypes.Array, count: int) -> int:
    """process_vm_writev over the first `count` iovecs; bytes written."""
    return _vm_transfer(_libc.process_vm_writev, pid, local, remote, count)


def set_fs_ids(uid: int, gid: int) -> None:
    """setfsuid/setfsgid: the ids file access checks use, for this thread only (root only)."""
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)


# Syscalls added since Linux 5.1 have one number on every architecture.
SYS_PIDFD_GETFD = 438
PTRACE_GETSIGINFO = 0x4202
_siginfo = (ctypes.c_int * 32)()  # siginfo_t: 128 bytes
_siginfo_address = ctypes.addressof(_siginfo)


def pidfd_getfd(pidfd: int, fd: int) -> int | None:
    """A copy of process `pidfd`'s descriptor `fd` (the same open file, as after a fork), or
    None where it has none (EBADF)."""
    result = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, ctypes.c_void_p(0))
    if result >= 0:
        return result
    if ctypes.get_errno() == errno.EBADF:
        return None
    raise _error("pidfd_getfd")


def pidfd_getfd_works() -> bool:
    """Whether this kernel has pidfd_open and pidfd_getfd (Linux 5.6) and lets us use them
    (a seccomp policy may refuse them): tried on our own descriptor 0."""
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):  # ENOSYS, EPERM; a Python without os.pidfd_open
        return False
    try:
        copy = pidfd_getfd(pidfd, 0)
        if copy is not None:
            os.close(copy)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def signal_sender(pid: int) -> tuple[int, int]:
    """(si_code, si_pid) of the signal `pid` stopped to be delivered (PTRACE_GETSIGINFO);
    si_pid is the sender's for SI_USER, SI_QUEUE and SI_TKILL (si_code 0, -1, -6)."""
    ptrace(PTRACE_GETSIGINFO, pid, 0, _siginfo_address)
    return _siginfo[2], _siginfo[4]  # si_signo, si_errno, si_code, padding, si_pid
