"""Shared fixtures: built test programs, the kernel oracle, strict skips, the signal
dispositions the tests' programs start with.

With WASMBINFMT_STRICT=1 (set by .ci/run) a skipped test fails: CI installs
every dependency, so a skip there means something is missing, never "fine".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BUILD = FIXTURES / "build"
STRICT = os.environ.get("WASMBINFMT_STRICT") == "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Signals the tests expect their programs to start with at the default disposition. A
# caller may have left them ignored (nohup ignores SIGHUP), and exec keeps an ignored
# signal ignored; a caught one goes back to its default. So where one is ignored here,
# pytest catches it instead, with a handler that does nothing: pytest still outlives it,
# and every program the tests start gets the default.
ASSUMED_DEFAULT = ("SIGHUP", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGINT")
IGNORED_BY_THE_CALLER: list[str] = []


def pytest_configure(config):
    import signal

    for name in ASSUMED_DEFAULT:
        sig = getattr(signal, name)
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, lambda *_: None)
            IGNORED_BY_THE_CALLER.append(name)


def pytest_report_header(config):
    if IGNORED_BY_THE_CALLER:
        return (f"ignored by the caller, caught by pytest so that the tests' programs start "
                f"with their default: {', '.join(IGNORED_BY_THE_CALLER)}")
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under WASMBINFMT_STRICT=1 (CI must run every test): {reason}"


def pytest_collection_modifyitems(config, items):
    """Where nobody cannot run the tool at all, the unprivileged variants fail once, with the
    reason, rather than each on its own."""
    if os.geteuid() != 0:
        return
    unprivileged = [item for item in items
                    if getattr(item, "callspec", None) and item.callspec.params.get("user")
                    == "nobody"]
    if not unprivileged:
        return
    from unprivileged import problem

    if problem():
        dropped = unprivileged[1:]
        config.hook.pytest_deselected(items=dropped)
        dropped_ids = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in dropped_ids]


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """tests/fixtures/build, built from tests/fixtures/src by scripts/build-fixtures.sh."""
    done = subprocess.run(["sh", str(ROOT / "scripts" / "build-fixtures.sh")],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0:
        pytest.skip(f"cannot build the fixture programs:\n{done.stderr[-2000:]}")
    return BUILD


@pytest.fixture(scope="session")
def kernel():
    """The real kernel's binfmt_misc parser (tests/kernel_oracle.py), or an
    OracleUnavailable where this kernel cannot give one: tests then call
    kernel_oracle.not_compared(kernel) and check what they can without it."""
    from kernel_oracle import KernelOracle, OracleUnavailable
    try:
        oracle = KernelOracle()
    except (OSError, OracleUnavailable) as e:
        yield OracleUnavailable(str(e))
        return
    yield oracle
    oracle.close()


@pytest.fixture
def kernel_binfmt():
    """run_with_binfmt, or None where this kernel cannot give a private binfmt_misc: the
    test then checks the tool against what it expects, and the summary says what was not
    compared with the kernel, and why."""
    from kernel_oracle import OracleUnavailable, not_compared, run_with_binfmt

    def run(*args, **kwargs):
        try:
            return run_with_binfmt(*args, **kwargs)
        except OracleUnavailable as e:
            not_compared(e)
            return None
    return run


def pytest_terminal_summary(terminalreporter):
    oracle = sys.modules.get("kernel_oracle")  # loaded by the tests that compare
    for reason, tests in (oracle.NOT_COMPARED if oracle else {}).items():
        terminalreporter.write_line(
            f"kernel oracle unavailable ({reason}): {len(tests)} tests checked wasmbinfmt "
            f"against their expected values only, without the kernel's binfmt_misc to "
            f"compare with: {', '.join(tests[:5])}{' ...' if len(tests) > 5 else ''}",
            yellow=True)


@pytest.fixture(scope="session")
def nobody_home():
    home = tempfile.mkdtemp(prefix="wasmbinfmt-home-")
    os.chmod(home, 0o777)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["self", "nobody"])
def user(request, nobody_home):
    """A function that makes an argv run as the user under test (with a HOME of its own)."""
    if request.param == "self":
        return lambda argv: argv
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the 'self' variant covers it")
    from unprivileged import as_unprivileged, problem

    if problem():
        pytest.fail(f"every other unprivileged variant was left out: {problem()}",
                    pytrace=False)
    return lambda argv: as_unprivileged(["env", f"HOME={nobody_home}", *argv])


EMULATOR = """#!/bin/sh
for a in "$0" "$@"; do printf '[%s]\\n' "$a"; done
"""
# Runs the native build of probe in place of the wasm one, as a wasm runtime would run the
# module: the path (argv[1]) goes, the arguments after it stay.
NATIVE_RUNTIME = """#!/bin/sh
shift
exec "${0%/*}/probe.native" "$@"
"""


FIXTURES = ("probe.wasm", "probe.native", "probe.aarch64", "probe.riscv64", "execer",
            "hello.wasm", "vmspawn", "spawn.musl", "ownfilter", "probe-nochdir.wasm",
            "spawn.wasm", "hello.dyn.aarch64", "hello.dyn.riscv64", "probe.static",
            "nbody.wasm", "nbody.native")


@pytest.fixture
def box(fixtures):
    """A directory every user can use, with the fixture programs and an argv-printing emulator."""
    path = Path(tempfile.mkdtemp(prefix="wasmbinfmt-test-"))
    os.chmod(path, 0o777)
    for name in FIXTURES:
        shutil.copy(fixtures / name, path / name)
    (path / "emu.sh").write_text(EMULATOR)
    (path / "runtime.sh").write_text(NATIVE_RUNTIME)
    for name in (*FIXTURES, "emu.sh", "runtime.sh"):
        os.chmod(path / name, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
