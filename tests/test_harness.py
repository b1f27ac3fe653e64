"""The test harness itself: where the unprivileged user cannot run the tool, one failure says
why (not one per unprivileged test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

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
