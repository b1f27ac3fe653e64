"""The start of a traced command (trace/launch.py): the command's first exec, judged native
in its own process, runs without a stop; every other exec stops as before.

The launch tests run run_traced with a minimal tracer of their own that counts the
filter's stops, as root and as nobody; execvp_target is checked against what glibc's
execvp does with PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wasmbinfmt.trace.launch import execvp_target

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

# Runs `command` through run_traced; the tracer counts the seccomp stops of the tree and
# writes the count to `out` when the tree is gone. argv: out judge command...
# judge: "none" (no judge: every exec stops), "native" or "foreign" (its answer).
COUNTING_LAUNCH = """
import os, sys
from wasmbinfmt.trace import kernel
from wasmbinfmt.trace.launch import run_traced

out, judge, command = sys.argv[1], sys.argv[2], [os.fsencode(a) for a in sys.argv[3:]]

def judged(path):
    os.write(2, b"judged " + path + b"\\n")
    return judge == "native"

def count_stops(command_pid):
    stops = 0
    while True:
        try:
            tid, status = os.waitpid(-1, kernel.WALL)
        except ChildProcessError:
            break
        if status & 0xFF != 0x7F:
            continue
        event, sig = status >> 16, (status >> 8) & 0xFF
        stops += event == kernel.PTRACE_EVENT_SECCOMP
        kernel.resume(kernel.PTRACE_CONT, tid, 0 if event else sig)
    with open(out + ".tmp", "w") as f:
        f.write(str(stops))
    os.rename(out + ".tmp", out)

run_traced(command, count_stops, None if judge == "none" else judged)
"""


def launch(user, box: Path, judge: str, command: list[str], env_extra: dict | None = None):
    out = box / f"stops-{time.monotonic_ns()}"
    done = subprocess.run(user([sys.executable, "-c", COUNTING_LAUNCH, str(out), judge,
                                *command]),
                          capture_output=True, timeout=TIMEOUT, cwd=box,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               **(env_extra or {})})
    deadline = time.monotonic() + TIMEOUT
    while not out.exists():  # the tracer writes it once the tree has gone
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.01)
    return done, int(out.read_text())


def test_without_a_judge_the_first_exec_stops(box, user):
    done, stops = launch(user, box, "none", ["/bin/true"])
    assert (done.returncode, stops) == (0, 1)
    assert b"judged" not in done.stderr


def test_a_first_exec_judged_native_runs_without_a_stop(box, user):
    done, stops = launch(user, box, "native", ["/bin/true"])
    assert (done.returncode, done.stderr, stops) == (0, b"judged /bin/true\n", 0)


@pytest.mark.parametrize("judge", ["native", "foreign", "none"])
def test_the_first_exec_gets_the_environment_either_way(box, user, judge):
    done, _ = launch(user, box, judge, ["/usr/bin/env"], env_extra={"PROBE": "a=b c"})
    assert b"PROBE=a=b c\n" in done.stdout
    assert sorted(done.stdout.splitlines()) == sorted(
        launch(user, box, "none", ["/usr/bin/env"], env_extra={"PROBE": "a=b c"})[0]
        .stdout.splitlines())


def test_the_judge_sees_the_file_execvp_runs_from_PATH(box, user):
    done, stops = launch(user, box, "native", ["true"])
    assert (done.returncode, stops) == (0, 0)
    assert done.stderr == b"judged /usr/bin/true\n"


def test_a_first_exec_judged_foreign_stops(box, user):
    done, stops = launch(user, box, "foreign", ["/bin/true"])
    assert (done.returncode, stops) == (0, 1)


def test_the_execs_after_the_first_still_stop(box, user):
    done, stops = launch(user, box, "native", ["/bin/sh", "-c", "/bin/true; /bin/true; exit 4"])
    assert (done.returncode, stops) == (4, 2)


def test_a_first_exec_that_fails_runs_again_through_execvp(box, user):
    """A script without #!: the keyed execve fails (ENOEXEC); libc's execvp then tries it
    (a stop) and runs it with /bin/sh (another), as it would have without the key."""
    script = box / "no-shebang"
    script.write_text('echo "run by sh as $0"\n')
    script.chmod(0o755)
    done, stops = launch(user, box, "native", [str(script)])
    assert (done.returncode, done.stdout, stops) == (0, f"run by sh as {script}\n".encode(), 2)


def test_a_missing_first_command_is_not_judged_and_fails_as_before(box, user):
    done, stops = launch(user, box, "native", ["no-such-command"])
    assert done.returncode == 127 and b"judged" not in done.stderr
    assert b"no-such-command: No such file or directory" in done.stderr


# ---------------------------------------------------------------------------
# execvp_target: which file glibc's execvp runs

def executable(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_a_name_with_a_slash_is_taken_as_it_is(tmp_path):
    assert execvp_target(b"./prog", "/nonexistent") == b"./prog"
    assert execvp_target(b"/no/such/file", "") == b"/no/such/file"


def test_the_first_executable_regular_file_along_PATH(tmp_path):
    missing, plain, directory, found, later = (tmp_path / name for name in "abcde")
    for d in (plain, directory, found, later):
        d.mkdir()
    executable(plain / "prog", 0o644)  # not executable: EACCES, the search goes on
    (directory / "prog").mkdir()  # a directory: EACCES too
    executable(found / "prog")
    executable(later / "prog")
    path = os.pathsep.join(map(str, (missing, plain, directory, found, later)))
    assert execvp_target(b"prog", path) == os.fsencode(found / "prog")


def test_an_empty_PATH_entry_is_the_current_directory(tmp_path, monkeypatch):
    executable(tmp_path / "prog")
    monkeypatch.chdir(tmp_path)
    assert execvp_target(b"prog", "/nonexistent::/bin") == b"./prog"
    assert execvp_target(b"prog", "") == b"./prog"


def test_an_error_execvp_stops_at_leaves_the_choice_to_it(tmp_path):
    """ELOOP is no reason for glibc to try the next directory: neither here."""
    looping, found = tmp_path / "a", tmp_path / "b"
    looping.mkdir()
    found.mkdir()
    (looping / "prog").symlink_to(looping / "prog")
    executable(found / "prog")
    assert execvp_target(b"prog", f"{looping}:{found}") is None


@pytest.mark.parametrize("name", [b"", b"x" * 300])
def test_no_file_for_names_execvp_refuses(name):
    assert execvp_target(name, "/bin:/usr/bin") is None


def test_nothing_found_is_None(tmp_path):
    assert execvp_target(b"prog", str(tmp_path)) is None
