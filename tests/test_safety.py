"""The traced program is never broken by us: its memory, its own seccomp filter, its process
state, its bytes, its descriptors. Each test runs natively and under wasmbinfmt, as the current
user and as an unprivileged one (docs/security.md lists the classes and their guards).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 120


def wasmbinfmt(user, args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("capture_output", True)
    return subprocess.run(user([sys.executable, "-m", "wasmbinfmt", *args]), **kwargs)


def native_rule(box: Path) -> list[str]:
    """A rule that runs probe.wasm as the native probe: fast, and shows argc."""
    return ["--no-default-rules", "--rule", f":probe:M::\\x00asm::{box / 'runtime.sh'}:"]


# ---------------------------------------------------------------------------
# 1. Memory shared with another process: the rewrite never writes into the parent's data

@pytest.mark.parametrize("mode", ["vfork", "vm"])
@pytest.mark.parametrize("stack, count", [(16384, 4000), (1024 + 4096, 2000), (16384, 10)])
def test_a_clone_vm_child_on_a_small_stack_leaves_its_parent_intact(box, user, mode, stack,
                                                                    count):
    argv = ["./vmspawn", mode, str(stack), str(count), "./probe.wasm", "count"]
    done = wasmbinfmt(user, [*native_rule(box), "--", *argv], cwd=box)
    assert done.stdout.decode().splitlines() == [
        f"argc={count + 1}", "parent memory intact", "child exit=0"], done.stderr
    assert done.returncode == 0


def test_a_failed_exec_in_a_clone_vm_child_leaves_its_parent_intact(box, user):
    missing = ["--no-default-rules", "--rule", f":probe:M::\\x00asm::{box / 'missing'}:"]
    argv = ["./vmspawn", "vfork", "16384", "4000", "./probe.wasm", "count"]
    done = wasmbinfmt(user, [*missing, "--", *argv], cwd=box)
    assert done.stdout.decode().splitlines() == ["parent memory intact", "child exit=127"]


@pytest.mark.parametrize("count", [10, 2000, 4000])
def test_musls_posix_spawn_child_leaves_its_parent_intact(box, user, count):
    argv = ["./spawn.musl", str(count), "./probe.wasm", "count"]
    done = wasmbinfmt(user, [*native_rule(box), "--", *argv], cwd=box)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stdout.decode().splitlines() == [
        f"argc={count + 1}", "parent memory intact", "child exit=0"]


SPAWN_LOOP = """
import os, sys
def anonymous():
    return sum(1 for line in open("/proc/self/maps") if len(line.split()) == 5)
before = None
for i in range(60):
    pid = os.posix_spawn("./probe.wasm", ["./probe.wasm", "count"] + ["x"] * (i % 7),
                         dict(os.environ))
    assert os.waitpid(pid, 0)[1] == 0
    if i == 9:
        before = anonymous()
print("mappings grew by", anonymous() - before)
"""


def test_posix_spawn_children_reuse_one_scratch_area(box, user):
    """glibc's posix_spawn child runs on its own small stack in the parent's memory: its new
    argv goes to a scratch area of that memory, mapped once and reused, not one per exec."""
    done = wasmbinfmt(user, [*native_rule(box), "--", "/usr/bin/python3", "-c", SPAWN_LOOP],
                      cwd=box)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[:60] == [f"argc={2 + i % 7}" for i in range(60)]
    assert lines[60] == "mappings grew by 0"


# ---------------------------------------------------------------------------
# 9. The program's own seccomp filter behaves as without a tracer

@pytest.mark.parametrize("action", ["trace", "errno", "trap", "notify"])
@pytest.mark.parametrize("inherited", [False, True], ids=["installed", "across-exec"])
def test_the_programs_own_seccomp_filter_gives_what_the_kernel_gives(box, user, action,
                                                                     inherited):
    argv = ["./ownfilter", action, "getppid", *(["exec"] if inherited else [])]
    native = subprocess.run(user(argv), cwd=box, capture_output=True, timeout=TIMEOUT)
    ours = wasmbinfmt(user, ["--", *argv], cwd=box)
    assert (ours.returncode, ours.stdout) == (native.returncode, native.stdout)
    expected = {"trace": b"getppid errno=38\n", "errno": b"getppid errno=1\n",
                "trap": b"", "notify": b"getppid errno=38\n"}[action]
    assert native.stdout == expected and (action != "trap" or native.returncode == -31)


@pytest.mark.parametrize("action, error", [("trace", 38), ("errno", 1)])
def test_the_programs_own_filter_on_execve_wins_over_the_rules(box, user, action, error):
    argv = ["./ownfilter", action, "execve", "./probe.wasm", "count"]
    native = subprocess.run(user(argv), cwd=box, capture_output=True, timeout=TIMEOUT)
    ours = wasmbinfmt(user, [*native_rule(box), "--", *argv], cwd=box)
    assert native.stdout == ours.stdout == f"execve errno={error}\n".encode()
