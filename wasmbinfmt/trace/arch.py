"""Everything architecture-specific, in one place: syscall numbers and register roles.

The tracer reads and writes registers by role (syscall number, arguments,
result, stack pointer), never by name, so the exec logic never mentions rdi
or x0. Registers are read with PTRACE_GETREGSET(NT_PRSTATUS), which both
x86_64 and aarch64 have (aarch64 has no PTRACE_GETREGS), into the kernel's
own layout, declared here with ctypes so that every architecture's layout can
be unit-tested on any host.
"""

from __future__ import annotations

import ctypes
import os
import struct
from _operator import itemgetter  # the C module: operator.py costs ~0.2 ms a start

from ..util.record import record

# <linux/audit.h>: what seccomp reports as seccomp_data.arch. The other ABIs a CPU runs
# (i386 and x32 on x86_64, arm32 on aarch64) are named for the tests of the filter.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
X32_SYSCALL_BIT = 0x40000000
_WORD = struct.Struct("=Q")  # every register in both layouts is a 64-bit word
# Derived from an Arch's fields once, on first use: (register set type, role) -> byte
# offset, and Arch name -> how to pick the syscall number and arguments from the words.
_OFFSETS: dict[tuple[type, str], int] = {}
_SYSCALL_READERS: dict[str, tuple[struct.Struct, itemgetter]] = {}


class X86_64Regs(ctypes.Structure):
    """struct user_regs_struct, arch/x86/include/asm/user_64.h."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]


class Aarch64Regs(ctypes.Structure):
    """struct user_pt_regs, arch/arm64/include/uapi/asm/ptrace.h."""

    _fields_ = [("regs", ctypes.c_ulonglong * 31), ("sp", ctypes.c_ulonglong),
                ("pc", ctypes.c_ulonglong), ("pstate", ctypes.c_ulonglong)]


@record
class Arch:
    name: str
    audit_arch: int  # the native ABI, as seccomp names it
    execve: int
    execveat: int
    ptrace: int
    regs: type[ctypes.Structure]
    syscall_register: str  # where the tracer reads the syscall number at a seccomp stop
    arg_registers: tuple[str, ...]  # arguments 1..6
    result_register: str
    stack_pointer: str
    red_zone: int  # bytes below the stack pointer the tracee may be using
    stack_alignment: int
    instruction_pointer: str
    syscall_insn_size: int  # to step back and make the tracee run its syscall again
    restart_register: str  # where the syscall number goes for that second run
    mmap: int
    seccomp: int
    kcmp: int
    clone: int  # clone(flags, ...): the flags are argument 1
    clone3: int  # clone3(struct clone_args *): the flags are its first word
    ioprio_get: int  # glibc has no wrapper: the warm worker takes on its caller's I/O priority
    ioprio_set: int
    # aarch64 changes the syscall number through NT_ARM_SYSTEM_CALL, not the registers.
    syscall_number_regset: int | None = None

    def new_regs(self) -> ctypes.Structure:
        return self.regs()

    def offset(self, role: str) -> int:
        """Byte offset in the register set of a register named like 'rdi' or 'regs[3]'."""
        found = _OFFSETS.get((self.regs, role))
        if found is None:
            field, _, index = role.rstrip("]").partition("[")
            found = getattr(self.regs, field).offset + 8 * int(index or 0)
            _OFFSETS[(self.regs, role)] = found
        return found

    def get(self, regs: ctypes.Structure, role: str) -> int:
        return _WORD.unpack_from(regs, self.offset(role))[0]

    def set(self, regs: ctypes.Structure, role: str, value: int) -> None:
        _WORD.pack_into(regs, self.offset(role), value & 0xFFFFFFFFFFFFFFFF)

    def syscall_args(self, regs: ctypes.Structure) -> tuple[int, ...]:
        """(syscall number, argument 1, ..., argument 6), in one pass over the register set."""
        reader = _SYSCALL_READERS.get(self.name)
        if reader is None:
            words = struct.Struct(f"={ctypes.sizeof(self.regs) // 8}Q")
            roles = (self.syscall_register, *self.arg_registers)
            reader = words, itemgetter(*(self.offset(r) // 8 for r in roles))
            _SYSCALL_READERS[self.name] = reader
        words, pick = reader
        return pick(words.unpack_from(regs))

    def set_arg(self, regs: ctypes.Structure, n: int, value: int) -> None:
        """Set syscall argument n, counted from 1 as in the man pages."""
        self.set(regs, self.arg_registers[n - 1], value)

    def result(self, regs: ctypes.Structure) -> int:
        """The syscall's return value as a signed number (-errno on failure)."""
        value = self.get(regs, self.result_register)
        return value - (1 << 64) if value >= 1 << 63 else value

    def stack(self, regs: ctypes.Structure) -> int:
        return self.get(regs, self.stack_pointer)

    def set_syscall_number(self, regs: ctypes.Structure, number: int) -> None:
        """Change the syscall at a seccomp stop (-1 skips it); see syscall_number_regset."""
        self.set(regs, self.syscall_register, number)

    def rerun_syscall(self, regs: ctypes.Structure, number: int) -> None:
        """Make the tracee execute syscall `number` again from where it stopped."""
        self.set(regs, self.instruction_pointer,
                 self.get(regs, self.instruction_pointer) - self.syscall_insn_size)
        self.set(regs, self.restart_register, number)

    def scratch_below_stack(self, regs: ctypes.Structure, size: int) -> int:
        """An address for `size` bytes below the stack pointer, past the red zone, aligned."""
        top = self.stack(regs) - self.red_zone - size
        return top & ~(self.stack_alignment - 1)


X86_64 = Arch(
    name="x86_64", audit_arch=AUDIT_ARCH_X86_64, execve=59, execveat=322, ptrace=101,
    regs=X86_64Regs,
    syscall_register="orig_rax", arg_registers=("rdi", "rsi", "rdx", "r10", "r8", "r9"),
    result_register="rax", stack_pointer="rsp", red_zone=128, stack_alignment=16,
    instruction_pointer="rip", syscall_insn_size=2, restart_register="rax", mmap=9,
    seccomp=317, kcmp=312, clone=56, clone3=435, ioprio_get=252, ioprio_set=251)

AARCH64 = Arch(
    name="aarch64", audit_arch=AUDIT_ARCH_AARCH64, execve=221, execveat=281, ptrace=117,
    regs=Aarch64Regs,
    syscall_register="regs[8]",
    arg_registers=tuple(f"regs[{i}]" for i in range(6)),
    result_register="regs[0]", stack_pointer="sp", red_zone=0, stack_alignment=16,
    instruction_pointer="pc", syscall_insn_size=4, restart_register="regs[8]", mmap=222,
    seccomp=277, kcmp=272, clone=220, clone3=435, ioprio_get=31, ioprio_set=30,
    syscall_number_regset=0x404)  # NT_ARM_SYSTEM_CALL

ARCHES = {"x86_64": X86_64, "aarch64": AARCH64}


def host_arch() -> Arch:
    machine = os.uname().machine
    try:
        return ARCHES[{"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)]
    except KeyError:
        raise OSError(f"wasmbinfmt's tracer does not support this CPU ({machine}) yet") from None
