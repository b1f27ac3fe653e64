"""The test harness itself: where the unprivileged user cannot run the tool, one failure says
why (not one per unprivileged test); where the kernel cannot serve as the binfmt_misc
oracle, the tests check the tool alone and the summary says, once, what was not compared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HERE = Path(__file__).resolve().parent

SYNTHETIC = '''
def test_first(user):
    assert user(["true"])

def test_second(user):
    assert user(["true"])

def test_third(user):
    assert user(["true"])
'''


def test_where_nobody_cannot_run_our_python_the_unprivileged_variants_fail_once():
    if os.geteuid() != 0:
        pytest.skip("the unprivileged variants exist only when the tests run as root")
    work = Path(tempfile.mkdtemp(prefix="wasmbinfmt-harness-"))
    try:
        os.chmod(work, 0o755)
        # A venv whose interpreter only root may run: what a per-user Python looks like to
        # nobody when no directory above it is the obstacle.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--copies",
                        str(work / "venv")], check=True)
        python = work / "venv" / "bin" / "python"
        os.chmod(os.path.realpath(python), 0o700)
        (work / "tests").mkdir()
        for name in ("conftest.py", "unprivileged.py"):
            shutil.copy(HERE / name, work / "tests" / name)
        (work / "tests" / "test_synthetic.py").write_text(SYNTHETIC)
        path = os.pathsep.join([str(HERE.parent), sysconfig.get_paths()["purelib"]])
        done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(work / "tests")], cwd=work, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": path,
                                   "WASMBINFMT_STRICT": "1"}, timeout=300)
        lines = done.stdout.splitlines()
        assert done.returncode == 1
        assert lines[-1].startswith("3 passed, 2 deselected, 1 error"), done.stdout
        failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        assert len(failures) == 1 and failures[0].startswith(
            "ERROR tests/test_synthetic.py::test_first[nobody]")
        assert ("every other unprivileged variant was left out: the unprivileged user nobody "
                f"cannot run {python} with wasmbinfmt") in done.stdout
        assert "Make the checkout and the venv readable by other users" in done.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("test", [
    "tests/test_tracer.py::test_a_rule_loop_gives_ELOOP_like_the_kernel",
    "tests/test_registration.py::test_kernel_opens_the_interpreter_of_F_rules_at_registration",
    "tests/test_transparency.py::test_matched_execs_are_as_under_the_kernels_binfmt_misc",
])
def test_without_the_kernel_oracle_tests_pass_on_the_tool_and_say_what_was_not_compared(test):
    """As on Debian 12's kernel (6.1, no private binfmt_misc): the mount fails on purpose."""
    selected = test if "transparency" not in test else f"{test} -k relative"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selected.split()],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "WASMBINFMT_TEST_ORACLE_FSTYPE": "no-such-filesystem",
             "WASMBINFMT_STRICT": "1"})
    assert done.returncode == 0, done.stdout[-3000:]
    summary = [line for line in done.stdout.splitlines()
               if line.startswith("kernel oracle unavailable (")]
    assert len(summary) == 1, done.stdout[-3000:]
    assert "no-such-filesystem" in summary[0] and test.split("::")[1] in summary[0]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_the_signals_tests_pass_under_nohup():
    """nohup leaves SIGHUP ignored for pytest; tests that send SIGHUP assume its default."""
    import signal

    selected = ["tests/test_faults.py::test_signals_sent_to_wasmbinfmt_reach_the_command",
                "tests/test_safety.py::test_signals_reach_a_module_as_a_native_program",
                "-k", "HUP"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *selected],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "caught by pytest so that the tests' programs start with their default: SIGHUP" \
        in done.stdout
    assert " passed" in done.stdout and "failed" not in done.stdout
