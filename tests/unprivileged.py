"""Running wasmbinfmt as a user without privileges, from tests that run as root in CI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def as_unprivileged(argv: list[str]) -> list[str]:
    """argv run as `nobody` when we are root; as is otherwise (we are unprivileged already)."""
    if os.geteuid() != 0:
        return argv
    probe = subprocess.run(NOBODY + [sys.executable, "-c", "import wasmbinfmt, yaml"],
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip("nobody cannot run this Python with wasmbinfmt (the checkout and its venv "
                    f"must be readable by other users): {probe.stderr.strip()[-300:]}")
    return NOBODY + argv
