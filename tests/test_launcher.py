"""The launcher (runners/launcher.py, launcher.c): a module exec whose Cranelift code is cached
runs in the caller's own exec, so its parent sees what a native program gives (status,
signals, CPU time), and whatever it does not serve itself it hands to the WASI runner
with the same result. Every test runs as the current user and as an unprivileged one.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

import pytest

from test_safety import wasmbinfmt
from wasmbinfmt.runners import launcher
from wasmbinfmt.runners.wasi_cwd import LibcCwd

LAUNCHED = b" (launched)\n"
WARM = b" (warm)\n"


def run(user, box, script: str, *options: str, env: dict | None = None):
    return wasmbinfmt(user, ["-v", *options, "--", "bash", "-c", script], cwd=box,
                      env=None if env is None else {**os.environ, **env})


def warmed(user, box, script: str) -> subprocess.CompletedProcess:
    """`script` run twice: the first run leaves the modules' code cached; the second."""
    run(user, box, script)
    return run(user, box, script)


def children_cpu(output: bytes) -> float:
    """The children's user CPU time, in seconds, of bash's `times` (its second line)."""
    minutes, seconds = re.match(rb"(\d+)m([\d.]+)s", output.splitlines()[-1]).groups()
    return int(minutes) * 60 + float(seconds)


def test_the_modules_cpu_time_reaches_its_parent_as_natively(box, user):
    """A parent's wait4 (bash's `times`, make's and test drivers' timing) counts the module's
    CPU time: the launcher is the caller's exec. The warm runner's worker is not, which is
    why the launcher takes the modules it can."""
    script = "./nbody.wasm 3000000 >/dev/null; times"
    native = subprocess.run(user(["bash", "-c", script.replace(".wasm", ".native")]), cwd=box,
                            capture_output=True)
    launched = warmed(user, box, script)
    warm = run(user, box, script, env={"WASMBINFMT_LAUNCHER": "off"})
    assert LAUNCHED in launched.stderr and WARM in warm.stderr, (launched.stderr, warm.stderr)
    reference = children_cpu(native.stdout)
    assert reference > 0.05, native.stdout
    assert children_cpu(launched.stdout) > reference / 2, (native.stdout, launched.stdout)
    assert children_cpu(warm.stdout) < reference / 2, (native.stdout, warm.stdout)


# Each is run once to cache the code, then compared with the runner started per exec.
CASES = [
    "./probe.wasm a 'b c' ''; ./probe.wasm exit 300; echo $?",
    "./probe.wasm trap; echo $?",
    "./probe.wasm cwd; cd /tmp && $OLDPWD/probe.wasm cwd; ls $OLDPWD >/dev/null",
    "./probe-nochdir.wasm read ../$(basename $PWD)/probe.c 2>&1 | head -c 0; "
    "./probe-nochdir.wasm cwd; ./probe-nochdir.wasm list .",
    "printf 'a\\nb\\n' | ./probe.wasm cat; ./probe.wasm cat <&-; echo $?",
    "./probe.wasm count >&-; echo $?; ./probe.wasm trap 2>&-; echo $?",
    "ulimit -s 16384; ./probe.wasm recurse 100000",
    "env -i X=1 ./probe.wasm environ; A=1 ./probe.wasm env A",
]
# What the launcher hands to the runner, with the same result: a string that is not UTF-8,
# a tight descriptor limit, a cache this caller's environment puts elsewhere or turns off,
# a current directory without a path.
HANDED_OVER = [
    "./probe.wasm $(printf '\\377'); echo $?",
    "prlimit --nofile=100:100 ./probe.wasm openmany probe.wasm",
    "./probe.wasm x; WASMBINFMT_CACHE=off ./probe.wasm cwd; HOME=/ ./probe.wasm env HOME",
    "./probe.wasm x; mkdir -p gone && cd gone && rmdir ../gone && $OLDPWD/probe.wasm cwd; "
    "echo $?",
]


@pytest.mark.parametrize("script", CASES + HANDED_OVER)
def test_a_launched_exec_gives_what_the_runner_gives(box, user, script):
    launched = warmed(user, box, script)
    cold = run(user, box, script, "--cold-runner")
    assert launched.stderr.count(LAUNCHED) == script.count(".wasm "), launched.stderr
    assert (launched.returncode, launched.stdout, _without_log(launched.stderr)) == (
        cold.returncode, cold.stdout, _without_log(cold.stderr))


def _without_log(stderr: bytes) -> bytes:
    return b"".join(line for line in stderr.splitlines(keepends=True)
                    if not line.startswith(b"wasmbinfmt: ["))


def test_signals_meet_the_callers_dispositions_from_the_first_instant(box, user):
    """The launcher is the exec: a TERM ignored from the first instant stays ignored, a
    default one kills, a stop stops (a traced stop: 't')."""
    script = ("trap '' TERM; ./probe.wasm spin >o1 & kill -TERM $!; sleep 0.3; "
              "kill -0 $! && echo ignored; kill -KILL $!; wait $!; echo $?; trap - TERM; "
              "./probe.wasm spin >o2 & sleep 0.3; kill -TERM $!; wait $!; echo $?; "
              "./probe.wasm spin >o3 & sleep 0.3; kill -STOP $!; sleep 0.2; "
              "ps -o stat= -p $! | cut -c1 | tr t T; kill -KILL $!; wait $!; echo $?")
    done = warmed(user, box, script)
    assert done.stdout.split() == [b"ignored", b"137", b"143", b"T", b"137"], done.stderr
    assert done.stderr.count(LAUNCHED) == 3, done.stderr


def test_without_a_c_compiler_modules_go_to_the_warm_runner(box, user):
    """No launcher can be built: -v says so, once, and the exec is served warm."""
    cache = box / "cache"  # where every user may make it
    env = {"WASMBINFMT_CACHE_DIR": str(cache), "CC": "false"}
    script = "./probe.wasm exit 3; echo $?; ./probe.wasm exit 4; echo $?"
    done = run(user, box, script, env=env)
    assert done.stdout == b"3\n4\n", done.stderr
    assert done.stderr.count(b"could not be built and run") == 1 and done.stderr.count(WARM) == 2
    assert LAUNCHED not in done.stderr and (cache / "launch").is_dir()


def test_a_ticket_names_the_entry_and_where_libc_keeps_the_cwd(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm")
    entry = tmp_path / "modules" / "abc-seeded-50.0.0-1-cranelift.cwasm"
    entry.parent.mkdir(mode=0o700)
    entry.write_bytes(b"code")
    st = os.stat(module)
    assert launcher.read_ticket(str(tmp_path), st) is None
    launcher.write_ticket(str(tmp_path), st, str(entry), LibcCwd(4096, True))
    assert launcher.read_ticket(str(tmp_path), st) == (str(entry), "R:4096")
    launcher.write_ticket(str(tmp_path), st, str(entry), LibcCwd(64, False))
    assert launcher.read_ticket(str(tmp_path), st) == (str(entry), "G:64")
    launcher.write_ticket(str(tmp_path), st, str(entry), None)
    assert launcher.read_ticket(str(tmp_path), st) == (str(entry), "-")
    module.write_bytes(b"\0asm!")  # another identity: no ticket
    assert launcher.read_ticket(str(tmp_path), os.stat(module)) is None


def test_a_ticket_or_entry_others_may_write_is_not_used(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm")
    st = os.stat(module)
    entry = tmp_path / "modules" / "abc-50.0.0-1-cranelift.cwasm"
    entry.parent.mkdir(mode=0o700)
    entry.write_bytes(b"code")
    launcher.write_ticket(str(tmp_path), st, str(entry), None)
    ticket = tmp_path / launcher.TICKETS / launcher.identity(st)
    for path in (ticket, entry):
        os.chmod(path, 0o622)
        assert launcher.read_ticket(str(tmp_path), st) is None, path
        os.chmod(path, 0o600)
    assert launcher.read_ticket(str(tmp_path), st) is not None
    entry.unlink()  # evicted from the cache
    assert launcher.read_ticket(str(tmp_path), st) is None
    ticket.write_bytes(b"../../elsewhere.cwasm\n-\n")
    os.chmod(ticket, stat.S_IRUSR | stat.S_IWUSR)
    assert launcher.read_ticket(str(tmp_path), st) is None


@pytest.mark.parametrize("words, module", [
    ([b"--preserve-argv0", b"--", b"./m.wasm"], b"./m.wasm"),
    ([b"--verbose", b"--ignored-signals=1000", b"--preserve-argv0", b"--", b"m", b""], b"m"),
    ([b"--", b"m.wasm", b"arg"], b"m.wasm"),
    ([b"--dir", b"/tmp", b"--", b"m.wasm"], None),  # a layout of the user's: the runner's
    ([b"--compiler=winch", b"--", b"m.wasm"], None),
    ([b"--preserve-argv0"], None),
    ([b"--preserve-argv0", b"--"], None),
])
def test_the_launcher_takes_only_the_options_it_knows(words, module):
    assert launcher.module_of(words) == module


def test_the_launcher_refuses_to_be_started_by_hand(tmp_path):
    path = launcher.build(str(tmp_path))
    assert path is not None and os.access(path, os.X_OK)
    assert launcher.build(str(tmp_path)) == path  # built once
    done = subprocess.run([path, "x"], capture_output=True)
    assert done.returncode == 2 and b"not by hand" in done.stderr


@pytest.mark.parametrize("prefix", ["", "prlimit --nofile=4096:4096", "setsid",
                                    "prlimit --stack=unlimited"])
def test_the_launcher_runs_the_module_itself_where_it_can(box, user, prefix):
    """The common cases, a soft descriptor limit equal to the hard one (containers, CI)
    and a caller of another session included, are served by the launcher itself, not
    handed to the runner: the module's process is the launcher's."""
    script = (f"{prefix} ./probe.wasm spin >o & until grep -q ready o 2>/dev/null; do "
              f"sleep 0.02; done; basename $(readlink /proc/$!/exe) | cut -c1-17; kill $!")
    done = warmed(user, box, script)
    assert done.stdout == b"wasmbinfmt-launch\n", done.stderr


def test_a_cache_on_a_noexec_mount_sends_modules_to_the_warm_runner(box):
    """The launcher is built in the cache: where that mount forbids exec, it is found not
    to start before any exec is sent to it, and the exec goes warm. As the current user
    only: the mount needs a user namespace, where the package's files belong to the user
    mapped to root, and nobody's namespace has none (its rules would be refused)."""
    run_twice = (f"mkdir -p c && mount -t tmpfs -o noexec tmpfs c && for i in 1 2; do "
                 f"WASMBINFMT_CACHE_DIR=$PWD/c {sys.executable} -m wasmbinfmt -v -- "
                 f"./probe.wasm exit 5; echo $?; done")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", run_twice], cwd=box,
                          capture_output=True, timeout=120)
    assert done.stdout == b"5\n5\n", done.stderr
    assert done.stderr.count(b"could not be built and run") == 1, done.stderr
    assert done.stderr.count(WARM) == 2 and LAUNCHED not in done.stderr, done.stderr


# What execve keeps that a program can read of itself (docs/wasi.md's table): the
# /proc/self/status lines, and files of /proc/self.
STATUS_LINES = ("Umask", "SigIgn", "SigBlk", "NoNewPrivs", "Seccomp:", "Uid", "Gid",
                "Groups", "CapEff", "CapBnd")
PROC_FILES = ("oom_score_adj", "cgroup", "loginuid", "sessionid")


@pytest.mark.parametrize("way", ["launched", "warm", "cold"])
def test_what_exec_keeps_is_what_the_native_program_sees(box, user, way):
    """The same probe, native and as a module, reads what its process has of what exec
    keeps: under the launcher and the cold runner, the caller's own process; under the warm
    runner, the worker that took it on."""
    reads = "; ".join([f"$P read /proc/self/status {line}" for line in STATUS_LINES]
                      + [f"$P read /proc/self/{name}; echo" for name in PROC_FILES])
    script = (f"umask 027; trap '' USR1 HUP; exec choom -n 300 -- setpriv --no-new-privs "
              f"bash -c '{reads}'")
    native = subprocess.run(user(["env", "P=./probe.native", "bash", "-c", script]), cwd=box,
                            capture_output=True)
    assert native.returncode == 0 and b"Umask:\t0027\n" in native.stdout, native.stderr
    assert b"\n300\n" in native.stdout and b"NoNewPrivs:\t1\n" in native.stdout
    options, env = {"launched": ((), {}), "warm": ((), {"WASMBINFMT_LAUNCHER": "off"}),
                    "cold": (("--cold-runner",), {})}[way]
    env = {**env, "P": "./probe.wasm"}
    if way == "launched":
        run(user, box, "./probe.wasm x", env=env)
    done = run(user, box, script, *options, env=env)
    # Seccomp: the tracer's filter, on every process of the tree, native ones too; not on
    # the warm worker, which is not traced (a WASI program cannot exec: docs/wasi.md).
    expected = native.stdout if way == "warm" else native.stdout.replace(b"Seccomp:\t0",
                                                                         b"Seccomp:\t2")
    assert done.stdout == expected, done.stderr
    assert done.stderr.count(b" (launched)\n" if way == "launched" else
                             b" (warm)\n" if way == "warm" else b"] wasm ") == 14, done.stderr


def launched_in_terminal(user, box, command: list[str], keys) -> tuple[int, bytes, list]:
    """in_terminal (test_warm.py) with the module's code cached first, and the ways its
    module execs ran, from the exec log."""
    from test_execlog import events
    from test_warm import in_terminal

    run(user, box, "./probe.wasm x")
    log = box / "terminal.jsonl"
    status, output = in_terminal(user, box, command, keys, options=("--log", str(log)))
    return status, output, [e["way"] for e in events(log) if e["event"] == "exec"]


def test_ctrl_c_in_a_terminal_ends_a_launched_module_and_its_shell(box, user):
    status, output, ways = launched_in_terminal(
        user, box, ["sh", "-c", "./probe.wasm spin; echo after"], [(b"ready", b"\x03")])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT, (status, output)
    assert b"ready" in output and b"after" not in output
    assert ways == ["launcher"]


def test_a_launched_module_reads_the_terminal_and_ctrl_z_and_fg_work_as_natively(box, user):
    """As test_warm.py's for the warm runner: typed lines reach the module, Ctrl-Z stops
    its job, `fg` gives it the terminal again; the same output as the native program's."""
    from test_warm import TERMINAL_KEYS, check_terminal_session, in_terminal, terminal_session

    native = in_terminal(user, box, terminal_session("./probe.native"), TERMINAL_KEYS)
    status, output, ways = launched_in_terminal(user, box, terminal_session("./probe.wasm"),
                                                TERMINAL_KEYS)
    assert (status, output) == (native[0], native[1].replace(b"probe.native", b"probe.wasm"))
    check_terminal_session(output)
    assert ways == ["launcher"]
