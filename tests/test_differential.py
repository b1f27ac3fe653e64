"""The class guard of the fast path's fidelity: generated cases run natively (the native
build of the probe), under the runner started per exec, the launcher, the warm runner and
--log-output, and must give the same status and output under each.

A case is an exec form (execve, execvp, posix_spawn, vfork, from a thread, while other
threads run, fexecve), an argv (empty strings, spaces, thousands of short strings, one of
100 KB), an environment (as it is, empty, names repeated, an entry without "=", thousands
of variables; WASI cannot carry an entry without "=", which is left out of the native
expectation), and where stdout goes (a pipe, a file, nowhere: closed). Hypothesis draws
them; the dimensions' corners are the examples every run tries first.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from test_safety import TIMEOUT, wasmbinfmt

FORMS = ["execve", "execvp", "posix_spawn", "vfork", "thread", "threads", "execveat:fd:e"]
ARGVS = {
    "plain": ["p", "a"],
    "odd": ["p", "", "b c", "-", "é"],
    "many": ["p", *map(str, range(3000))],
    "long": ["p", "x" * 100_000],
}
ENVIRONMENTS = {
    "inherited": None,
    "empty": [],
    "repeated": ["A=1", "NOEQUALS", "A=2", "B=", "C=x=y"],
    "many": [f"V{n:05}=abcdefghijk" for n in range(2400)],
}
STDOUTS = {"pipe": "", "file": ">out; cat out", "closed": ">&-"}
# The runner started per exec first: it leaves the module's code cached, which the
# launcher (the default once it is) then runs; the warm runner without it.
RUNNERS = {"cold": ["--cold-runner"], "launched": [],
           "warm": ["WASMBINFMT_LAUNCHER=off"], "log-output": ["--log", "log.jsonl",
                                                                "--log-output"]}


def command(form: str, argv: str, environment: str, stdout: str, probe: str) -> str:
    """The shell command running the probe that way: it prints its argv, or with an
    environment of its own, that environment, then the status."""
    entries = ENVIRONMENTS[environment]
    if entries is None:
        run = f"./execer {form} ./{probe} {' '.join(map(_quoted, ARGVS[argv]))}"
    else:  # execer's env-exactly: argv is TARGET environ
        run = f"./execer env-exactly ./{probe} {' '.join(map(_quoted, entries))}"
    redirect = STDOUTS[stdout]
    if redirect.startswith(">out"):
        return f"{run} >out; echo status $?; cat out"
    return f"{run} {redirect}; echo status $?"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def native_expectation(output: bytes, environment: str) -> bytes:
    """What the native probe printed, less what WASI cannot carry."""
    if ENVIRONMENTS[environment] is None:
        return output
    return b"".join(line for line in output.splitlines(keepends=True)
                    if not line.startswith(b"NOEQUALS"))


# The same draws in every run (CI must not fail by chance); no shrinking: a case that
# hangs would be run again and again.
@settings(max_examples=16, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=st.sampled_from(FORMS), argv=st.sampled_from(sorted(ARGVS)),
       environment=st.sampled_from(sorted(ENVIRONMENTS)), stdout=st.sampled_from(sorted(STDOUTS)))
@example(form="thread", argv="many", environment="inherited", stdout="closed")
@example(form="execveat:fd:e", argv="long", environment="inherited", stdout="file")
@example(form="vfork", argv="odd", environment="repeated", stdout="pipe")
@example(form="execve", argv="plain", environment="many", stdout="pipe")
@example(form="posix_spawn", argv="plain", environment="empty", stdout="file")
@example(form="execveat:fd:e", argv="plain", environment="inherited", stdout="closed")
def test_every_runner_gives_what_the_native_program_gives(box, user, form, argv, environment,
                                                          stdout):
    native = subprocess.run(user(["bash", "-c", command(form, argv, environment, stdout,
                                                        "probe.native")]),
                            cwd=box, capture_output=True, timeout=TIMEOUT)
    assert native.returncode == 0 and b"status " in native.stdout, native.stderr
    expected = native_expectation(native.stdout, environment)
    script = command(form, argv, environment, stdout, "probe.wasm")
    for name, options in RUNNERS.items():
        env = dict(os.environ)
        env.update(option.split("=", 1) for option in options if "=" in option)
        options = [option for option in options if "=" not in option]
        done = wasmbinfmt(user, ["-v", *options, "--", "bash", "-c", script], cwd=box,
                          timeout=60, env=env)
        assert (done.returncode, done.stdout) == (0, expected), (name, done.stderr[-2000:])
        if name == "launched" and form != "execveat:fd:e":
            assert b" (launched)\n" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("stdout", sorted(STDOUTS))
def test_the_cases_differ_where_they_should(box, user, stdout):
    """The harness itself: the native probe's output shows what a case varies."""
    outputs = {subprocess.run(user(["bash", "-c", command("execve", argv, "inherited", stdout,
                                                          "probe.native")]),
                              cwd=box, capture_output=True, timeout=TIMEOUT).stdout
               for argv in ARGVS}
    assert len(outputs) == (1 if stdout == "closed" else len(ARGVS))
