"""The seccomp-bpf program that stops a tracee only at exec (and at attempts to trace).

For the host's native ABI, execve and execveat return SECCOMP_RET_TRACE with
FILTER_DATA (a PTRACE_EVENT_SECCOMP stop for the tracer); so do the three ptrace requests
that make a tracer (PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE), which fail
inside the tree, so that the tracer can say why. Every other syscall is
allowed in the kernel, at native speed. Syscalls of another ABI the CPU also runs (i386
or x32 on x86_64, arm32 on aarch64) are allowed too: their execs pass through
natively rather than being misread with the wrong syscall table.

With a pass key, an execve whose fourth argument (unused by execve, so
whatever the caller's register holds) is the key runs without a stop: the
command's own first exec, when it runs natively, need not wait for the tracer
(trace/launch.py). The key is 64 random bits known only to the process that
installs the filter, and that process's memory is gone once the exec succeeds.

Pure: this module only builds the program; the command installs it (launch.py).
"""

from __future__ import annotations

import struct

from ..util.record import record
from .arch import Arch

# <linux/filter.h>, <linux/seccomp.h>
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
# The data our filter's RET_TRACE carries (its low 16 bits reach the tracer): a traced
# program's own filter may return RET_TRACE too, and those stops are not ours.
FILTER_DATA = 0x7762
TRACE_OURS = SECCOMP_RET_TRACE | FILTER_DATA
# Offsets in struct seccomp_data.
NR_OFFSET = 0
ARCH_OFFSET = 4
ARG0_LOW_OFFSET = 16  # args[0]'s low 32 bits on the little-endian CPUs we support
ARG3_LOW_OFFSET = ARG0_LOW_OFFSET + 3 * 8
# <linux/ptrace.h>: the requests by which a process becomes a tracer.
PTRACE_TRACEME = 0
PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206


@record
class Insn:
    code: int
    k: int
    jt: int = 0
    jf: int = 0


def exec_filter(arch: Arch, pass_key: int | None = None) -> list[Insn]:
    """The filter for `arch`, as instructions (see the module docstring); `pass_key`, a
    64-bit number, lets the execs that carry it through."""
    # Jump offsets count the instructions skipped after this one; the layout is fixed, so
    # they are written out, and the tests run the program through a BPF interpreter.
    program = [
        Insn(BPF_LD_W_ABS, ARCH_OFFSET),
        Insn(BPF_JEQ_K, arch.audit_arch, jt=0, jf=8),  # another ABI -> allow
        Insn(BPF_LD_W_ABS, NR_OFFSET),
        Insn(BPF_JEQ_K, arch.execve, jt=7 if pass_key is None else 8, jf=0),  # -> trace/key
        Insn(BPF_JEQ_K, arch.execveat, jt=6, jf=0),  # -> trace
        Insn(BPF_JEQ_K, arch.ptrace, jt=0, jf=4),  # not ptrace -> allow
        Insn(BPF_LD_W_ABS, ARG0_LOW_OFFSET),  # the request
        Insn(BPF_JEQ_K, PTRACE_TRACEME, jt=3, jf=0),  # -> trace
        Insn(BPF_JEQ_K, PTRACE_ATTACH, jt=2, jf=0),  # -> trace
        Insn(BPF_JEQ_K, PTRACE_SEIZE, jt=1, jf=0),  # -> trace, else allow
        Insn(BPF_RET_K, SECCOMP_RET_ALLOW),
        Insn(BPF_RET_K, TRACE_OURS),
    ]
    if pass_key is not None:
        program += [  # execve: its fourth argument, both halves, against the key
            Insn(BPF_LD_W_ABS, ARG3_LOW_OFFSET),
            Insn(BPF_JEQ_K, pass_key & 0xFFFFFFFF, jt=0, jf=3),  # -> trace
            Insn(BPF_LD_W_ABS, ARG3_LOW_OFFSET + 4),
            Insn(BPF_JEQ_K, pass_key >> 32, jt=0, jf=1),  # -> trace
            Insn(BPF_RET_K, SECCOMP_RET_ALLOW),
            Insn(BPF_RET_K, TRACE_OURS),
        ]
    # x32 syscalls carry a marker bit (0x40000000), so their numbers never equal the
    # native execve's and they fall through to "allow" without an instruction of their own.
    return program


SOCK_FILTER_SIZE = 8


def pack(program: list[Insn]) -> bytes:
    """struct sock_filter[]: u16 code, u8 jt, u8 jf, u32 k, each (SOCK_FILTER_SIZE bytes)."""
    return b"".join(struct.pack("=HBBI", i.code, i.jt, i.jf, i.k) for i in program)
