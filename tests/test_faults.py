"""Faults and load: signals to wasmbinfmt and to its tracer, debuggers and wasmbinfmt inside
the tree, tracees killed mid-exec, thread storms, fork loops, 10,000 processes and
`make -j8` of 2,000 wasm runs. Every test runs as the current user and as `nobody` (the
heaviest, marked `load`, as `nobody` only: that is what users are).

What must hold each time: every status the tree sees is the right one, the caller gets the
command's own status, nothing hangs, and when the tree is done the tracer is gone and no
process of the tree is left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from unprivileged import as_unprivileged

TIMEOUT = 300


def start(user, args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(user([sys.executable, "-m", "wasmbinfmt", *args]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def native_rule(box: Path) -> list[str]:
    """wasm goes to runtime.sh, which runs the native build of the probe: rerouted execs
    that cost little."""
    return ["--no-default-rules", "--rule", f":probe:M::\\x00asm::{box / 'runtime.sh'}:"]


def processes() -> dict[int, tuple[int, bytes, bytes]]:
    """pid -> (parent pid, comm, cmdline) of every process now."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    head, rest = f.read().rsplit(b")", 1)
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            found[int(name)] = (int(rest.split()[1]), head.split(b"(", 1)[1], cmdline)
    return found


def descendants(root: int) -> set[int]:
    table = processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def tracer_of_run(token: str) -> int:
    """The tracer of the run whose command line holds `token` (its comm is "wasmbinfmt")."""
    for _ in range(100):
        for pid, (_, comm, cmdline) in processes().items():
            if comm == b"wasmbinfmt" and token.encode() in cmdline:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no tracer for {token}")


def gone(pids: set[int], timeout: float = 30) -> bool:
    """Whether every pid has exited (zombies count as not gone) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids):
            return True
        time.sleep(0.05)
    return False


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


# ---------------------------------------------------------------------------
# Signals

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_sent_to_wasmbinfmt_reach_the_command(user, sig):
    name = signal.Signals(sig).name[3:]
    proc = start(user, ["--", "sh", "-c", f"trap 'echo got {name}; exit 3' {name}; "
                        "echo ready; while :; do sleep 0.05; done"])
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert (out, err, proc.returncode) == (f"got {name}\n".encode(), b"", 3)


def test_killing_the_tracer_takes_the_whole_tree_with_it(user):
    """Without its tracer the tree's execs would fail (ENOSYS, from the seccomp filter), so
    PTRACE_O_EXITKILL ends it: SIGKILL to every traced process, nothing left, no hang."""
    token = uuid.uuid4().hex
    proc = start(user, ["--", "sh", "-c", "sleep 300 & sleep 300 & echo ready; wait", token])
    assert proc.stdout.readline() == b"ready\n"
    tree = descendants(proc.pid) | {proc.pid}
    assert len(tree) == 3
    os.kill(tracer_of_run(token), signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert gone(tree)


def test_killing_wasmbinfmt_is_killing_the_command(box, user):
    """The caller's child is the command itself: SIGKILL ends it at once, as natively; its
    background children live on, still traced, and the tracer leaves after the last one."""
    token = uuid.uuid4().hex
    script = ("(sleep 1; ./probe.wasm from-background > bg.out) </dev/null >/dev/null 2>&1 & "
              "echo ready; exec sleep 300")
    proc = start(user, [*native_rule(box), "--", "sh", "-c", script, token], cwd=box)
    assert proc.stdout.readline() == b"ready\n"
    tracer = tracer_of_run(token)
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert gone({tracer})  # once the background job is done
    assert (box / "bg.out").read_text().splitlines()[::2] == ["argc=2", "argv[1]=from-background"]


# ---------------------------------------------------------------------------
# Tracers inside the tree, wasmbinfmt inside wasmbinfmt

def test_a_tracer_inside_the_tree_gets_a_clear_reason(user):
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--", "strace", "-f",
                                "-o", "/dev/null", "true"]), capture_output=True,
                          timeout=TIMEOUT)
    assert done.returncode != 0  # strace's own failure, as it reports it
    assert b"strace: " in done.stderr and b"Operation not permitted" in done.stderr
    assert b"wasmbinfmt: strace (pid " in done.stderr
    assert b"a process has only one tracer, so ptrace fails with EPERM. Run debuggers and " \
           b"tracers (gdb, strace) outside wasmbinfmt" in done.stderr
    assert b"internal error" not in done.stderr


def test_wasmbinfmt_inside_wasmbinfmt_says_why_not(user):
    wasmbinfmt = [sys.executable, "-m", "wasmbinfmt"]
    done = subprocess.run(user([*wasmbinfmt, "--", *wasmbinfmt, "--", "echo", "inner"]),
                          capture_output=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (125, b"")
    assert done.stderr.startswith(b"wasmbinfmt: cannot trace: this process is already traced "
                                  b"by another wasmbinfmt (pid ")
    assert b"wasmbinfmt inside wasmbinfmt does not work" in done.stderr
    assert done.stderr.count(b"\n") == 1  # the outer one has nothing to add


def test_wasmbinfmt_under_a_debugger_says_why_not(user):
    wasmbinfmt = [sys.executable, "-m", "wasmbinfmt"]
    done = subprocess.run(user(["strace", "-f", "-o", "/dev/null", *wasmbinfmt, "--", "echo",
                                "x"]), capture_output=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (125, b"")
    assert done.stderr.startswith(b"wasmbinfmt: cannot trace: this process is already traced "
                                  b"by pid ")
    assert b"(strace), and a process has only one tracer" in done.stderr


# ---------------------------------------------------------------------------
# Faults inside the tree

def test_thread_storms_at_exec(box, user):
    """16 threads exec a rerouted file at once, 100 times: one exec wins each time, whole."""
    loop = "for i in $(seq 100); do ./execer storm ./probe.wasm 16 a0 \"$i\"; done"
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", *native_rule(box), "--",
                                "sh", "-c", loop]), cwd=box, capture_output=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.decode().splitlines() == [
        line for i in range(1, 101)
        for line in ("argc=2", f"argv[0]={box}/probe.native", f"argv[1]={i}")]


def test_fork_loops_beside_rerouted_execs(box, user):
    """3,000 children forked at once (statuses checked by the parent), twice, while the rest
    of the tree runs 200 rerouted execs."""
    script = ("./execer forks 3000 & ./execer forks 3000 & "
              "for i in $(seq 200); do ./probe.wasm exit 5; [ $? = 5 ] || echo WRONG; done; wait")
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", *native_rule(box), "--",
                                "sh", "-c", script]), cwd=box, capture_output=True,
                          timeout=TIMEOUT)
    assert (done.returncode, done.stderr) == (0, b"")
    assert sorted(done.stdout.decode().splitlines()) == ["forks ok 3000"] * 2


def test_random_kills_during_rerouted_execs(box, user):
    """SIGKILL to random processes of a tree that is busy exec'ing rerouted files: every child
    the shell waits for either finished (0) or was killed (137); the shell carries on, the
    caller gets its status, and nothing is left behind."""
    token = uuid.uuid4().hex
    # (No $(...): its subshell would be one of the children killed.)
    script = ("pids=; i=0; while [ $i -lt 1000 ]; do ./probe.wasm count >/dev/null & "
              "pids=\"$pids $!\"; i=$((i + 1)); done; "
              "for p in $pids; do wait $p; echo \"status $?\"; done; echo loop-done; "
              "read go; ./probe.wasm exit 7")
    proc = start(user, [*native_rule(box), "--", "sh", "-c", script, token], cwd=box)
    tracer = tracer_of_run(token)
    while processes()[proc.pid][1] != b"sh":  # kill only the jobs, never the tracer's start
        time.sleep(0.01)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))
    reader.start()
    rng = random.Random(7)
    kills = 0
    while b"loop-done\n" not in lines[-1:] and proc.poll() is None:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = f.read().split()  # the jobs: each execs, is rerouted, execs again
        if children and kills < 300:
            try:
                os.kill(int(rng.choice(children)), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.002)
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    proc.wait(timeout=TIMEOUT)
    reader.join(timeout=TIMEOUT)
    err = proc.stderr.read()
    out = b"".join(lines)
    statuses = [line for line in out.decode().splitlines() if line.startswith("status ")]
    assert len(statuses) == 1000 and set(statuses) <= {"status 0", "status 137"}, \
        (proc.returncode, kills, err[-2000:], out[-300:])
    assert kills > 100 and statuses.count("status 137") > 0
    assert proc.returncode == 7 and out.decode().endswith("loop-done\n")
    assert b"internal error" not in err
    assert gone({tracer})



def test_a_file_replaced_while_it_is_exec_ed_runs_as_one_or_the_other(box, user):
    """A file swapped (rename) between wasm and native 300 times while the tree execs it:
    each exec runs as the tracer saw it, or, when the tracer saw native and the kernel then
    opened the wasm, fails with ENOEXEC as an unknown format does (docs/security.md).
    Never a hang, never anything else."""
    wasm, native = (box / "probe.wasm").read_bytes(), (box / "probe.native").read_bytes()
    stop = threading.Event()

    def swap():
        for turn in range(10 ** 9):
            if stop.is_set():
                return
            (box / "next").write_bytes(wasm if turn % 2 else native)
            os.chmod(box / "next", 0o755)
            os.rename(box / "next", box / "flip")

    swapper = threading.Thread(target=swap)
    (box / "flip").write_bytes(native)
    os.chmod(box / "flip", 0o755)
    swapper.start()
    try:
        rule = f":probe:M::\\x00asm::{box / 'emu.sh'}:"
        done = subprocess.run(
            user([sys.executable, "-m", "wasmbinfmt", "--no-default-rules", "--rule", rule,
                  "--", "sh", "-c", "for i in $(seq 300); do ./execer execve ./flip a0 x; "
                  "echo --; done"]), cwd=box, capture_output=True, timeout=TIMEOUT)
    finally:
        stop.set()
        swapper.join()
    runs = done.stdout.decode().split("--\n")[:-1]
    outcomes = {"native": "argc=2\nargv[0]=a0\nargv[1]=x\n",
                "emulator": f"[{box}/emu.sh]\n[./flip]\n[x]\n", "ENOEXEC": "errno=8\n"}
    assert (done.returncode, done.stderr, len(runs)) == (0, b"", 300)
    assert set(runs) <= set(outcomes.values()), set(runs) - set(outcomes.values())
    assert outcomes["native"] in runs and outcomes["emulator"] in runs  # it did swap

# ---------------------------------------------------------------------------
# Load (as nobody only: the heaviest tests, for the user that matters)

@pytest.mark.load
def test_ten_thousand_processes_with_their_statuses_and_flat_tracer_memory(box):
    """10,000 processes, each exiting with its own status, checked by the shell; the
    tracer's memory after 1,000 and after 10,000 is the same (no per-process leak)."""
    token = uuid.uuid4().hex
    script = ('i=0; while [ $i -lt 10000 ]; do sh -c "exit $((i % 256))"; '
              '[ $? = $((i % 256)) ] || echo "WRONG $i"; i=$((i + 1)); '
              '[ $i = 1000 ] && echo at-1000 && read go; done; echo at-10000; read go')
    command = [sys.executable, "-m", "wasmbinfmt", "--", "sh", "-c", script, token]
    proc = subprocess.Popen(as_unprivileged(command), cwd=box, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tracer = tracer_of_run(token)
    assert proc.stdout.readline() == b"at-1000\n"
    early = rss_kib(tracer)
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"at-10000\n"
    late = rss_kib(tracer)
    out, err = proc.communicate(b"go\n", timeout=TIMEOUT)
    assert (proc.returncode, out, err) == (0, b"", b"")
    assert late - early < 2048, (early, late)
    assert gone({tracer})


MAKEFILE = """\
RUNS := $(shell i=0; while [ $$i -lt 2000 ]; do echo $$i; i=$$((i + 1)); done)
all: $(RUNS:%=out/%)
out/%:
\t@./probe.wasm exit $$(($* % 7)); echo "$* $$?" > $@
"""


@pytest.mark.load
def test_make_j8_of_two_thousand_wasm_runs(box):
    """The built-in WASI runner, 2,000 times, 8 at once: every status right, none missing."""
    (box / "Makefile").write_text(MAKEFILE)
    (box / "out").mkdir()
    os.chmod(box / "out", 0o777)
    token = uuid.uuid4().hex
    command = [sys.executable, "-m", "wasmbinfmt", "--", "make", "-j8", "-s", f"TOKEN={token}"]
    proc = subprocess.Popen(as_unprivileged(command), cwd=box, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    tracer = tracer_of_run(token)
    out, err = proc.communicate(timeout=1800)
    assert (proc.returncode, out, err) == (0, b"", b"")
    results = sorted((box / "out").iterdir(), key=lambda path: int(path.name))
    assert [path.read_text() for path in results] == [f"{i} {i % 7}\n" for i in range(2000)]
    assert gone({tracer})
