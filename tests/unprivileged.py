"""Running wasmbinfmt as a user without privileges, from tests that run as root in CI.

`nobody` must reach our Python, its venv and the checkout. Where one of them
sits below a directory others cannot enter (a clone in root's home, mode 700;
a per-user Python under ~/.pyenv), each unprivileged run gets a mount namespace
of its own in which that directory is an empty, enterable tmpfs holding the
very paths the tests need, bind-mounted at the same place: every path is the
same for root and for nobody, and nothing outside the namespace changes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
NEEDED = (ROOT, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)))
# The probe goes the way the tests go (env, then our Python), from a directory of nobody's.
PROBE = ["env", "HOME=/", sys.executable, "-c", "import wasmbinfmt, yaml"]


def closed_ancestor(path: str) -> tuple[str, str] | None:
    """(the highest directory above `path` that others may not enter, its entry toward
    `path`), or None when others can reach `path`."""
    parts = os.path.realpath(path).strip("/").split("/")
    for depth in range(len(parts) - 1):
        directory = "/" + "/".join(parts[:depth + 1])
        if not os.stat(directory).st_mode & 0o001:
            return directory, "/" + "/".join(parts[:depth + 2])
    return None


def _namespace() -> list[str]:
    """The command prefix that opens the closed directories for nobody, or []."""
    closed = {found for found in map(closed_ancestor, NEEDED) if found}
    if not closed:
        return []
    stage = tempfile.mkdtemp(prefix="wasmbinfmt-unprivileged-")
    atexit.register(shutil.rmtree, stage, True)
    script = []
    for i, (_, entry) in enumerate(sorted(closed)):
        os.mkdir(os.path.join(stage, str(i)))
        script.append(f'mount --bind "{entry}" "{stage}/{i}"')
    for directory in sorted({directory for directory, _ in closed}):
        script.append(f'mount -t tmpfs -o mode=755 wasmbinfmt-tests "{directory}"')
    for i, (_, entry) in enumerate(sorted(closed)):
        script.append(f'mkdir -p "{entry}" && mount --move "{stage}/{i}" "{entry}"')
    script.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            " && ".join(script), "sh"]


_prefix: list[str] | None = None
_problem: str | None = None


def problem() -> str | None:
    """Why nobody cannot run the tool here (checked once, the way the tests run it), or None."""
    global _prefix, _problem
    if _prefix is None:
        _prefix = _namespace()
        probe = subprocess.run(_prefix + NOBODY + PROBE, capture_output=True, text=True, cwd="/")
        if probe.returncode != 0:
            _problem = (f"the unprivileged user nobody cannot run {sys.executable} with "
                        f"wasmbinfmt: {probe.stderr.strip()[-300:]}. Make the checkout and "
                        f"the venv readable by other users, or make the venv from "
                        f"/usr/bin/python3")
    return _problem


def as_unprivileged(argv: list[str]) -> list[str]:
    """argv run as `nobody` when we are root; as is otherwise (we are unprivileged already)."""
    if os.geteuid() != 0:
        return argv
    if problem():
        pytest.fail(_problem, pytrace=False)
    return _prefix + NOBODY + argv
