"""The guides' examples (docs/guides/*.md), run as written: every block fenced
```sh guide``` runs with bash -e -o pipefail in a directory of its own, with our venv's
commands first in PATH; a block marked `unprivileged` runs as nobody when we are root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

GUIDES = Path(__file__).resolve().parent.parent / "docs" / "guides"
TIMEOUT = 900


def blocks(path: Path) -> list[tuple[str, str]]:
    """(the fence's words after 'sh guide', the code) of each guide block."""
    found, code, words = [], None, ""
    for line in path.read_text().splitlines():
        if code is None and line.startswith("```sh guide"):
            code, words = [], line[len("```sh guide"):].strip()
        elif code is not None and line.startswith("```"):
            found.append((words, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    return found


CASES = [(path.stem, i, words, code) for path in sorted(GUIDES.glob("*.md"))
         for i, (words, code) in enumerate(blocks(path))]


def test_every_guide_has_an_example_that_runs():
    assert {stem for stem, *_ in CASES} == {path.stem for path in GUIDES.glob("*.md")}
    assert {"test-driver", "cargo", "cmake", "autoconf", "ci-without-root",
            "compare"} <= {stem for stem, *_ in CASES}


@pytest.mark.parametrize("guide, index, words, code", CASES,
                         ids=[f"{stem}-{i}" for stem, i, *_ in CASES])
def test_the_guides_example_runs_as_written(guide, index, words, code):
    work = tempfile.mkdtemp(prefix=f"wasmbinfmt-guide-{guide}-")
    try:
        os.chmod(work, 0o777)
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
        # Debian's tools, as the guides say (not a per-user rustup or pyenv first)
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
               "HOME": work}
        if words == "unprivileged" and os.geteuid() == 0:
            from unprivileged import as_unprivileged

            argv = as_unprivileged(["env", f"HOME={work}", *argv])
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, f"{guide}: exit {done.returncode}\n{done.stdout[-3000:]}" \
                                     f"\n{done.stderr[-3000:]}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
