"""README.md's "Install it as a tool", run as written: each ```sh install``` block, from a
copy of this working tree, with a HOME of its own (pipx and pip fetch the dependencies
from PyPI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900


def install_blocks() -> list[str]:
    found, code = [], None
    for line in (ROOT / "README.md").read_text().splitlines():
        if code is None and line.strip() == "```sh install":
            code = []
        elif code is not None and line.startswith("```"):
            found.append("\n".join(code) + "\n")
            code = None
        elif code is not None:
            code.append(line)
    return found


def test_the_readme_shows_both_ways():
    blocks = install_blocks()
    assert len(blocks) == 2 and "pipx install ." in blocks[0] and "pip wheel" in blocks[1]


@pytest.mark.parametrize("index", [0, 1], ids=["pipx", "venv-from-a-wheel"])
def test_the_readme_install_works_as_written(index):
    if index == 0 and shutil.which("pipx") is None:
        pytest.fail("pipx is not installed (.ci/run installs Debian's)")
    work = Path(tempfile.mkdtemp(prefix="wasmbinfmt-install-"))
    try:
        tree = work / "clone"
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=ROOT, capture_output=True,
                               check=True).stdout.split(b"\0")
        for name in filter(None, files):
            source = ROOT / os.fsdecode(name)
            if source.is_file():
                (tree / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, tree / os.fsdecode(name))
        home = work / "home"
        home.mkdir()
        # Debian's Python and tools, as a user's shell has them.
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", install_blocks()[index]],
                              cwd=tree, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "\nHello from WebAssembly! I was run as examples/hello.wasm a b\n" in \
            "\n" + done.stdout, done.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
