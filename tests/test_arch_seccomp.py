"""Per-architecture register roles and the exec-only seccomp filter (pure)."""

from __future__ import annotations

import ctypes
import struct

import pytest

from wasmbinfmt.trace.arch import (
    AARCH64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X86_64,
    X32_SYSCALL_BIT, host_arch,
)
from wasmbinfmt.trace.seccomp import (
    BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, SECCOMP_RET_ALLOW, TRACE_OURS,
    exec_filter, pack,
)


def test_register_layouts_match_the_kernel_headers():
    assert ctypes.sizeof(X86_64.regs) == 27 * 8
    assert X86_64.regs.orig_rax.offset == 15 * 8 and X86_64.regs.rsp.offset == 19 * 8
    assert ctypes.sizeof(AARCH64.regs) == 34 * 8
    assert AARCH64.regs.sp.offset == 31 * 8 and AARCH64.regs.pc.offset == 32 * 8


@pytest.mark.parametrize("arch,raw", [
    (X86_64, dict(orig_rax=59, rdi=1, rsi=2, rdx=3, r10=4, r8=5, r9=6, rsp=0x7FFF1000,
                  rax=(-2) & 0xFFFFFFFFFFFFFFFF)),
    (AARCH64, {"regs[8]": 221, **{f"regs[{i}]": i + 1 for i in range(6)}, "sp": 0x7FFF1000}),
])
def test_roles_read_and_write_the_right_registers(arch, raw):
    regs = arch.new_regs()
    for name, value in raw.items():
        arch.set(regs, name, value)
    assert arch.syscall_args(regs) == (arch.execve, 1, 2, 3, 4, 5, 6)
    assert arch.stack(regs) == 0x7FFF1000
    arch.set_arg(regs, 1, 0xDEAD)
    assert arch.syscall_args(regs)[1] == 0xDEAD
    arch.set(regs, arch.result_register, -2)
    assert arch.result(regs) == -2  # ENOENT, signed


def test_aarch64_result_is_x0_and_x8_is_the_syscall_number():
    regs = AARCH64.new_regs()
    regs.regs[0], regs.regs[8] = 7, 281
    number, first, *_ = AARCH64.syscall_args(regs)
    assert first == 7 and AARCH64.result(regs) == 7 and number == AARCH64.execveat


def test_scratch_space_skips_the_red_zone_and_is_aligned():
    regs = X86_64.new_regs()
    regs.rsp = 0x7FFF0F08
    address = X86_64.scratch_below_stack(regs, 100)
    assert address % 16 == 0 and address + 100 <= 0x7FFF0F08 - 128
    regs = AARCH64.new_regs()
    regs.sp = 0x7FFF0F00
    assert AARCH64.scratch_below_stack(regs, 32) == 0x7FFF0F00 - 32


def test_host_arch_is_known_here():
    assert host_arch().name in ("x86_64", "aarch64")


# The host's own kernel headers (libc6-dev): x86_64's table, or the generic one aarch64 uses.
UNISTD = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
          "aarch64": "/usr/include/asm-generic/unistd.h"}
SYSCALLS = ("execve", "execveat", "ptrace", "mmap", "seccomp", "kcmp", "clone", "clone3",
            "ioprio_get", "ioprio_set")


def test_the_hosts_syscall_numbers_are_its_kernel_headers():
    import re

    arch = host_arch()
    text = open(UNISTD[arch.name]).read()
    defined = dict(re.findall(r"^#define (__NR\w+)\s+(\w+)", text, re.M))

    def number(name: str) -> int:
        value = defined[name]
        return int(value) if value.isdigit() else number(value)  # __NR3264_mmap and such
    assert {name: getattr(arch, name) for name in SYSCALLS} == {
        name: number(f"__NR_{name}") for name in SYSCALLS}


def run_bpf(program, nr: int, audit_arch: int, arg0: int = 0, arg3: int = 0) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    # struct seccomp_data: nr, arch, instruction_pointer, args[6]
    data = struct.pack("=iIQ6Q", nr, audit_arch, 0, arg0, 0, 0, arg3, 0, 0)
    acc, pc = 0, 0
    while True:
        insn = program[pc]
        if insn.code == BPF_LD_W_ABS:
            acc = struct.unpack_from("=I", data, insn.k)[0]
        elif insn.code == BPF_JEQ_K:
            pc += insn.jt if acc == insn.k else insn.jf
        elif insn.code == BPF_RET_K:
            return insn.k
        else:
            raise AssertionError(f"unexpected instruction {insn}")
        pc += 1


KEY = 0x8BADF00D_DEADBEEF


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("arch,foreign,foreign_execve", [
    (X86_64, AUDIT_ARCH_I386, 11), (AARCH64, AUDIT_ARCH_ARM, 11)])
def test_filter_traces_only_native_execs(arch, foreign, foreign_execve, key):
    program = exec_filter(arch, key)
    assert run_bpf(program, arch.execve, arch.audit_arch) == TRACE_OURS
    assert run_bpf(program, arch.execveat, arch.audit_arch) == TRACE_OURS
    for other in range(0, 460):
        if other not in (arch.execve, arch.execveat, arch.ptrace):
            for arg0 in (0, 16, 0x4206, 2):
                assert run_bpf(program, other, arch.audit_arch, arg0) == SECCOMP_RET_ALLOW, other
    # The other ABI's execs (and its syscalls with the native execs' numbers) run natively.
    for nr in (foreign_execve, arch.execve, arch.execveat, arch.ptrace, 0):
        assert run_bpf(program, nr, foreign) == SECCOMP_RET_ALLOW


@pytest.mark.parametrize("arch", [X86_64, AARCH64])
def test_the_pass_key_lets_only_an_execve_carrying_it_through(arch):
    """The command's first exec, judged native, carries the key as execve's unused fourth
    argument; every other exec, and execveat even with the key, still stops."""
    keyed = exec_filter(arch, KEY)
    assert run_bpf(keyed, arch.execve, arch.audit_arch, arg3=KEY) == SECCOMP_RET_ALLOW
    for other in (0, KEY & 0xFFFFFFFF, KEY & ~0xFFFFFFFF, KEY ^ 1, KEY ^ (1 << 63)):
        assert run_bpf(keyed, arch.execve, arch.audit_arch, arg3=other) == TRACE_OURS, other
    assert run_bpf(keyed, arch.execveat, arch.audit_arch, arg3=KEY) == TRACE_OURS
    assert run_bpf(exec_filter(arch), arch.execve, arch.audit_arch, arg3=KEY) == TRACE_OURS
    # Other syscalls carrying the key are what they were: allowed, or (ptrace) stopped.
    assert run_bpf(keyed, arch.ptrace, arch.audit_arch, arg3=KEY) == TRACE_OURS
    assert run_bpf(keyed, arch.clone, arch.audit_arch, arg3=KEY) == SECCOMP_RET_ALLOW


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("arch", [X86_64, AARCH64])
def test_filter_traces_only_the_ptrace_requests_that_make_a_tracer(arch, key):
    """PTRACE_TRACEME, PTRACE_ATTACH and PTRACE_SEIZE stop, so the tracer can say why they
    fail; a debugger's other requests (PEEKDATA, CONT, GETREGSET...) run at native speed."""
    program = exec_filter(arch, key)
    stopping = {request for request in range(0, 0x4300)
                if run_bpf(program, arch.ptrace, arch.audit_arch, request) == TRACE_OURS}
    assert stopping == {0, 16, 0x4206}


def test_filter_lets_x32_execs_through_on_x86_64():
    program = exec_filter(X86_64)
    for x32_nr in (X32_SYSCALL_BIT | 520, X32_SYSCALL_BIT | 545, X32_SYSCALL_BIT | 59):
        assert run_bpf(program, x32_nr, AUDIT_ARCH_X86_64) == SECCOMP_RET_ALLOW


def test_pack_is_struct_sock_filter():
    program = exec_filter(X86_64)
    packed = pack(program)
    assert len(packed) == 8 * len(program)
    assert struct.unpack_from("=HBBI", packed, 8) == (BPF_JEQ_K, 0, 8, AUDIT_ARCH_X86_64)
    assert AUDIT_ARCH_AARCH64 in [i.k for i in exec_filter(AARCH64)]


INSTALLED_FILTER_PROBE = """
import errno, os, sys
from wasmbinfmt.trace.arch import host_arch
from wasmbinfmt.trace.kernel import install_seccomp_filter, pack_filter
from wasmbinfmt.trace.seccomp import exec_filter
install_seccomp_filter(pack_filter(exec_filter(host_arch())), host_arch().seccomp)
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f)
print("seccomp", status["Seccomp"].strip(), "nnp", status["NoNewPrivs"].strip())
print("pid", os.getpid() > 0, "cwd", os.getcwd() == "/")
pid = os.fork()  # children inherit the filter
if pid == 0:
    try:
        os.execv("/bin/true", ["true"])
    except OSError as e:
        os._exit(100 + e.errno)
print("child", os.waitpid(pid, 0)[1] >> 8)
try:
    os.execv("/bin/true", ["true"])
except OSError as e:
    print("exec", errno.errorcode[e.errno])
"""


@pytest.mark.parametrize("unprivileged", [False, True])
def test_installed_filter_stops_only_exec(unprivileged):
    """With no tracer attached, RET_TRACE makes exec fail with ENOSYS; all else works."""
    import os
    import subprocess
    import sys

    from unprivileged import as_unprivileged

    argv = [sys.executable, "-c", INSTALLED_FILTER_PROBE]
    if unprivileged:
        argv = as_unprivileged(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/",
                          env={"PYTHONPATH": root, "PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "seccomp 2 nnp 1", "pid True cwd True", "child 138", "exec ENOSYS"]
