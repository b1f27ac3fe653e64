"""The real third-party suites of examples/ (zlib, PCRE2, three crates' cargo tests), end
to end: upstream sources from Debian, built for wasm32-wasi, their own test commands run
unmodified under wasmbinfmt with the built-in runner and with the wasmtime CLI, and under
the proot -q baseline (and cargo's runner variable, for cargo); and the same projects
built natively, the reference. Needs apt's network access and deb-src entries (the fetch
script adds them when run as root, as in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = {"builtin": {"PROFILE": "builtin"}, "wasmtime-cli": {"PROFILE": "wasmtime-cli"},
           "proot": {"RUNNER": "proot"}, "native": {"RUNNER": "native"},
           "cargo-runner": {"RUNNER": "cargo-runner"}}  # examples/cargo only
SUITE_RUNNERS = [runner for runner in RUNNERS if runner != "cargo-runner"]


def run_example(name: str, runner: str, tmp_path: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # wasmbinfmt and wasmbinfmt-wasi, beside our Python
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **RUNNERS[runner]}
    env.pop("RUNNER" if "PROFILE" in RUNNERS[runner] else "PROFILE", None)
    return subprocess.run(["sh", str(ROOT / "examples" / name / "run.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1200)


@pytest.mark.example
@pytest.mark.parametrize("runner", SUITE_RUNNERS)
def test_zlib_make_test(tmp_path, runner):
    done = run_example("zlib", runner, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "zlib: 2 of 2 test groups passed (static, 64-bit); make test " in done.stdout
    assert done.stdout.rstrip().endswith(f" s, {runner}")
    row = (tmp_path / "result.md").read_text()
    assert row.startswith(f"| zlib `make test` | {runner} | 2 of 2 groups "
                          "(static, 64-bit: 3 runs each) | 0 | none expected | ")


# What each runner is held to (the script diffs the whole list; README.md says why).
PCRE2_SUMMARY = {
    "builtin": ("expected-results.txt", "RunGrepTest 148 of 151 (differing: 132 133 150)"),
    "proot": ("expected-results.txt", "RunGrepTest 148 of 151 (differing: 132 133 150)"),
    "wasmtime-cli": ("expected-results-wasmtime-cli.txt",
                     "RunGrepTest 142 of 151 (differing: 13 84 97 98 99 107 132 133 150)"),
    "native": ("expected-results-native.txt", "RunGrepTest 151 of 151 (differing: none)"),
}


@pytest.mark.example
@pytest.mark.parametrize("runner", SUITE_RUNNERS)
def test_pcre2_configure_and_make_check(tmp_path, runner):
    done = run_example("pcre2", runner, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "checking whether we are cross compiling... no" in done.stdout
    expected_list, grep_tests = PCRE2_SUMMARY[runner]
    assert (f"pcre2: as {expected_list} says: RunTest 21 files, pcre2posix_test 1 of 1, "
            f"{grep_tests}; make check ") in done.stdout
    assert done.stdout.rstrip().endswith(f" s, {runner}")



# Not proot -q: under it, cargo rebuilds semver and rustc cannot find the crate's own
# module files (src/backport.rs: E0583), so the suite cannot run there (examples/README.md).
@pytest.mark.example
@pytest.mark.parametrize("runner", [runner for runner in RUNNERS if runner != "proot"])
def test_cargo_test_of_three_crates(tmp_path, runner):
    done = run_example("cargo", runner, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cargo: 42 passed, 0 failed in 8 test binaries; cargo test " in done.stdout
    assert done.stdout.rstrip().endswith(f" s, {runner}")
    if runner != "native":  # the test binaries ran as wasm
        assert "target/wasm32-wasi/debug/deps/semver-" in done.stdout
