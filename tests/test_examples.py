"""The real third-party suites of examples/ (zlib, PCRE2), end to end: upstream sources
downloaded from Debian, built for wasm32-wasi, their own test commands run unmodified
under wasmbinfmt with the built-in runner. Needs apt's network access and deb-src
entries (the fetch script adds them when run as root, as in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # wasmbinfmt and wasmbinfmt-wasi, beside our Python
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PROFILE": "builtin"}
    return subprocess.run(["sh", str(ROOT / "examples" / name / "run.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1200)


@pytest.mark.example
def test_zlib_make_test(tmp_path):
    done = run_example("zlib", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "zlib: 2 of 2 test groups passed (static, 64-bit); make test" in done.stdout


@pytest.mark.example
def test_pcre2_configure_and_make_check(tmp_path):
    done = run_example("pcre2", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "checking whether we are cross compiling... no" in done.stdout
    assert "pcre2: as expected: FAIL=RunGrepTest PASS=RunTest PASS=pcre2posix_test " \
           "RunGrepTest tests differing: 132 133 150 ; make check" in done.stdout
