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


# ---------------------------------------------------------------------------
# 2, 3. Signals reach a module as they reach a native program: the whole table of
# dispositions the caller leaves (default, ignored, blocked), for a busy and a blocked module

SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGPIPE", "SIGXFSZ", "SIGALRM"]
# Sets the disposition of one signal, then execs the program (the exec wasmbinfmt reroutes).
DRIVER = """
import os, signal, sys
state, name, *argv = sys.argv[1:]
sig = getattr(signal, name)
for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # as Python found them
    signal.signal(s, signal.SIG_DFL)
if state == "ignored":
    signal.signal(sig, signal.SIG_IGN)
elif state == "blocked":
    signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
os.execv(argv[0], argv)
"""


def signal_outcome(argv: list[str], cwd: Path, name: str):
    """The exit status after `name` is sent to the running program, or "survived"."""
    import signal as signals

    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"ready\n", process.stderr.read()
        process.send_signal(getattr(signals, name))
        try:
            return process.wait(timeout=0.4)
        except subprocess.TimeoutExpired:
            return "survived"
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("mode", ["spin", "wait"])
@pytest.mark.parametrize("state", ["default", "ignored", "blocked"])
@pytest.mark.parametrize("name", SIGNALS)
def test_signals_reach_a_module_as_a_native_program(box, user, mode, state, name):
    driver = [sys.executable, "-c", DRIVER, state, name]
    native = signal_outcome(user([*driver, "./probe.native", mode]), box, name)
    ours = signal_outcome(user([sys.executable, "-m", "wasmbinfmt", "--", *driver,
                                "./probe.wasm", mode]), box, name)
    assert ours == native
    assert native == ("survived" if state != "default" else -getattr(__import__("signal"),
                                                                     name))


def test_ctrl_c_in_a_terminal_ends_a_running_module(box, user):
    import fcntl
    import os
    import termios

    master, slave = os.openpty()

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(user([sys.executable, "-m", "wasmbinfmt", "--", "./probe.wasm",
                                     "spin"]), cwd=box, stdin=slave, stdout=slave,
                               stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    try:
        seen = b""
        while b"ready" not in seen:
            seen += os.read(master, 100)
        os.write(master, b"\x03")
        assert process.wait(timeout=10) == -2
    finally:
        process.kill()
        process.wait()
        os.close(master)


def test_a_module_over_the_file_size_limit_dies_by_sigxfsz_as_natively(box, user, tmp_path):
    script = ("ulimit -f 8; ./probe.native spew 700 native.out; echo native $?; "
              "./probe.wasm spew 700 wasm.out; echo wasm $?; ./probe.wasm count")
    done = wasmbinfmt(user, ["--", "sh", "-c", script], cwd=box)
    assert done.stdout.decode().splitlines() == ["native 153", "wasm 153", "argc=2"]


@pytest.mark.parametrize("ignored", [False, True])
def test_a_module_writing_to_a_closed_pipe_gets_sigpipe_as_natively(box, user, ignored):
    trap = "trap '' PIPE; " if ignored else ""
    script = (f"{trap}./probe.native spew 100000 | true; echo native ${{PIPESTATUS[0]}}; "
              f"./probe.wasm spew 100000 | true; echo wasm ${{PIPESTATUS[0]}}")
    done = wasmbinfmt(user, ["--", "bash", "-c", script], cwd=box)
    status = 1 if ignored else 141  # ignored: write fails with EPIPE, probe exits 1
    assert done.stdout.decode().splitlines() == [f"native {status}", f"wasm {status}"]


def test_the_umask_reaches_the_files_a_module_creates(box, user):
    script = ("umask 027; ./probe.native write native.out x; ./probe.wasm write wasm.out x; "
              "./probe-nochdir.wasm write nochdir.out x; stat -c %a native.out wasm.out "
              "nochdir.out")
    done = wasmbinfmt(user, ["--", "sh", "-c", script], cwd=box)
    assert done.stdout.decode().split() == ["640"] * 3


def test_a_traced_command_holds_no_descriptor_of_ours(box, user):
    listing = ["sh", "-c", "ls /proc/self/fd"]
    native = subprocess.run(user(listing), capture_output=True, timeout=TIMEOUT)
    ours = wasmbinfmt(user, ["--", *listing])
    assert ours.stdout == native.stdout and ours.returncode == 0


# ---------------------------------------------------------------------------
# 4. The program's environment is the program's: the runner's Python reads none of it

PYTHON_VARIABLES = {"PYTHONHOME": "/nonexistent", "PYTHONPATH": "{box}/shadow",
                    "PYTHONVERBOSE": "1", "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONWARNINGS": "error", "PYTHONSTARTUP": "{box}/shadow/boom.py",
                    "PYTHONINSPECT": "1", "PYTHONSAFEPATH": "1"}


def test_python_variables_of_the_program_do_not_reach_the_runner(box, user):
    shadow = box / "shadow" / "wasmbinfmt"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    (box / "shadow" / "boom.py").write_text("raise SystemExit('startup')\n")
    assignments = [f"{k}={v.format(box=box)}" for k, v in PYTHON_VARIABLES.items()]
    done = wasmbinfmt(user, ["--", "env", *assignments, "./probe.wasm", "env", "PYTHONHOME"],
                      cwd=box)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"/nonexistent\n", b"")


# ---------------------------------------------------------------------------
# 5, 6. Bytes that are not UTF-8: refused with one line and 126, never cut or a panic

def test_a_non_utf8_argument_is_refused_not_cut(box, user):
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--", "./probe.wasm",
                                "a"]) + [b"\xff", b"b"], cwd=box, capture_output=True,
                          timeout=TIMEOUT)
    assert done.returncode == 126 and done.stdout == b""
    assert done.stderr == (b"wasmbinfmt-wasi: ./probe.wasm: argument 2 ('\\xff') is not UTF-8, "
                           b"and a WASI program's strings are UTF-8: not run\n")


def test_a_non_utf8_environment_variable_is_refused_not_a_panic(box, user):
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--", "env"])
                          + [b"PWD=/tmp/dir\xe9", b"./probe.wasm", b"count"], cwd=box,
                          capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 126 and done.stdout == b""
    assert done.stderr.splitlines() == [
        b"wasmbinfmt-wasi: ./probe.wasm: environment variable 'PWD' is not UTF-8, and a WASI "
        b"program's strings are UTF-8: not run"]


# ---------------------------------------------------------------------------
# 10. Nothing from the current directory

def test_a_relative_cache_directory_is_ignored(box, user):
    done = wasmbinfmt(user, ["--", "env", "WASMBINFMT_CACHE_DIR=cache-here", "./probe.wasm",
                             "count"], cwd=box)
    assert done.stdout == b"argc=2\n" and not (box / "cache-here").exists()


def test_a_relative_rules_file_in_the_variable_is_refused(box, user):
    (box / "rules.yaml").write_text("rules: []\n")
    done = wasmbinfmt(user, ["--", "true"], cwd=box,
                      env={**__import__("os").environ, "WASMBINFMT_RULES": "rules.yaml"})
    assert done.returncode == 2
    assert b"WASMBINFMT_RULES: 'rules.yaml' is a relative path" in done.stderr


# ---------------------------------------------------------------------------
# 7. Descriptors: a module can open (nearly) as many files as a native program

def opened(done: subprocess.CompletedProcess) -> list[int]:
    return [int(line.split()[1]) for line in done.stdout.decode().splitlines()]


@pytest.mark.parametrize("limit", ["-Sn 16", "-Sn 32", "-Sn 64"])
def test_a_soft_descriptor_limit_leaves_a_module_what_a_native_program_has(box, user, limit):
    script = (f"ulimit {limit}; ./probe.native openmany /dev/null; "
              f"./probe.wasm openmany /dev/null; ./probe-nochdir.wasm openmany /dev/null")
    done = wasmbinfmt(user, ["--", "bash", "-c", script], cwd=box)
    native, chdir, nochdir = opened(done)
    assert native > 0 and chdir == nochdir == native, done.stderr


@pytest.mark.parametrize("limit, spared", [(16, 7), (32, 8), (64, 12)])
def test_a_hard_descriptor_limit_costs_a_module_few_descriptors(box, user, limit, spared):
    """With no room above the limit, the runner holds its own few and the most useful
    preopens: never a panic, and the program keeps most of what it has natively."""
    script = (f"ulimit -n {limit}; ./probe.native openmany /dev/null; "
              f"./probe.wasm openmany /dev/null; ./probe-nochdir.wasm openmany /dev/null")
    done = wasmbinfmt(user, ["--", "bash", "-c", script], cwd=box)
    assert done.returncode == 0 and b"panicked" not in done.stderr, done.stderr
    native, chdir, nochdir = opened(done)
    assert native - spared <= nochdir <= chdir <= native


def test_too_few_descriptors_for_the_runner_is_said_once_not_a_panic(box, user):
    done = wasmbinfmt(user, ["--", "bash", "-c", "ulimit -n 8; ./probe.wasm count"], cwd=box)
    assert done.returncode == 126 and done.stdout == b""
    assert done.stderr == (b"wasmbinfmt-wasi: ./probe.wasm: too few file descriptors for the "
                           b"runner (RLIMIT_NOFILE 8, hard limit 8): not run\n")


# ---------------------------------------------------------------------------
# 8. A current directory longer than PATH_MAX

def test_relative_paths_work_in_a_directory_longer_than_path_max(box, user):
    name = "d" * 100
    script = (f"for i in $(seq 50); do mkdir {name} && cd {name} || exit 9; done; "
              "echo hello > f && mkdir sub && echo sub > sub/g && "
              "for p in probe.native probe.wasm probe-nochdir.wasm; do "
              f"{box}/$p read f; {box}/$p read sub/g; {box}/$p read ../{name}/f; "
              f"{box}/$p read {box}/runtime.sh; done")
    done = wasmbinfmt(user, ["--", "bash", "-c", script], cwd=box)
    assert done.stdout.decode().splitlines() == ["hello", "sub", "hello", "#!/bin/sh"] * 3


# ---------------------------------------------------------------------------
# 5, 6. Arbitrary bytes: what the runner accepts runs exactly, what it refuses it says

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wasmbinfmt.runners import capi, wasi  # noqa: E402

ARGS = st.lists(st.binary(min_size=0, max_size=12).filter(lambda b: b"\0" not in b),
                min_size=1, max_size=6)
ENV = st.lists(st.tuples(st.binary(min_size=1, max_size=8).filter(
    lambda b: b"\0" not in b and b"=" not in b), st.binary(max_size=12).filter(
    lambda b: b"\0" not in b)), max_size=5)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(ARGS, ENV)
def test_the_runner_refuses_exactly_what_wasmtime_cannot_carry(argv, env):
    problem = wasi.not_utf8(argv, env)
    faithful = all(map(is_utf8, argv)) and all(is_utf8(k) and is_utf8(v) for k, v in env)
    assert (problem is None) == faithful
    if faithful:  # and then wasmtime takes every byte of it
        capi.WasiProcess(ENGINE, argv, env)


ENGINE = capi.Engine(wasi.ENGINE_FEATURES)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                        max_size=10), max_size=4))
def test_utf8_arguments_reach_a_module_byte_for_byte(fixtures, argv):
    native = subprocess.run([str(fixtures / "probe.native"), *argv], capture_output=True)
    ours = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--",
                           str(fixtures / "probe.wasm"), *argv], capture_output=True,
                          timeout=TIMEOUT)
    assert ours.stdout.splitlines()[2:] == native.stdout.splitlines()[2:]  # past argv[0]
    assert ours.stdout.splitlines()[0] == native.stdout.splitlines()[0]  # argc
