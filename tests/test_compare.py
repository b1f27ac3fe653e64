"""One make run, every kind of foreign executable, and `wasmbinfmt compare` (issue 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from test_wasm import wali_shaped

TIMEOUT = 300
MAKEFILE = """\
test:
\t./probe.wasm wasm a; test $$? = 0
\t./w.wasm wali b
\t./probe.aarch64 aarch64 c
\t./probe.riscv64 riscv64 d
\t./probe.native native e
\t./probe.wasm exit 3; test $$? = 3
"""


@pytest.fixture
def tree(fixtures, tmp_path):
    qemu = {arch: shutil.which(f"qemu-{arch}") for arch in ("aarch64", "riscv64")}
    if not all(qemu.values()):
        pytest.skip("qemu-user is not installed")
    work = tmp_path / "tree"
    work.mkdir()
    for name in ("probe.wasm", "probe.aarch64", "probe.riscv64", "probe.native"):
        shutil.copy(fixtures / name, work / name)
    (work / "w.wasm").write_bytes(wali_shaped())
    (work / "Makefile").write_text(MAKEFILE)
    runtime = tmp_path / "wali-runtime.sh"  # a stand-in: no WALI runtime is packaged here
    runtime.write_text('#!/bin/sh\necho "WALI runtime: $*"\n')
    for path in [*work.iterdir(), runtime]:
        os.chmod(path, 0o755)
    elf = "\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
    mask = ("\\xff" * 7 + "\\x00" + "\\xff" * 8 + "\\xfe\\xff\\xff\\xff")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "profiles:\n"
        "  broken: {wasm: [/bin/sh, -c, 'exit 7', sh]}\n"
        "rules:\n"
        f"  - {{name: wali, magic: '\\x00asm', wasm-imports: [wali], interpreter: {runtime}}}\n"
        f"  - {{name: aarch64, magic: '{elf}\\x02\\x00\\xb7\\x00', mask: '{mask}', "
        f"interpreter: {qemu['aarch64']}, flags: P, argv0-option: '-0'}}\n"
        f"  - {{name: riscv64, magic: '{elf}\\x02\\x00\\xf3\\x00', mask: '{mask}', "
        f"interpreter: {qemu['riscv64']}, flags: P, argv0-option: '-0'}}\n")
    return work, rules


def wasmbinfmt(*args, cwd):
    return subprocess.run([sys.executable, "-m", "wasmbinfmt", *map(str, args)], cwd=cwd,
                          capture_output=True, timeout=TIMEOUT)


def test_one_make_run_sends_each_kind_to_its_own_emulator(tree, tmp_path):
    work, rules = tree
    log = tmp_path / "make.jsonl"
    done = wasmbinfmt("--rules", rules, "--log", log, "--", "make", "-s", cwd=work)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[:2] == ["argc=3", "argv[0]=./probe.wasm"]
    assert "WALI runtime: ./w.wasm wali b" in lines
    assert lines.count("argv[0]=./probe.aarch64") == 1 and "argv[1]=riscv64" in lines
    assert "argv[0]=./probe.native" in lines
    from test_execlog import events

    routed = [(e["argv"][0], e["rules"][0]) for e in events(log) if e["event"] == "exec"]
    assert routed == [("./probe.wasm", "wasm"), ("./w.wasm", "wali"),
                      ("./probe.aarch64", "aarch64"), ("./probe.riscv64", "riscv64"),
                      ("./probe.wasm", "wasm")]


def test_compare_finds_no_difference_between_the_builtin_runner_and_the_wasmtime_cli(tree):
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "wasmtime-cli", "--workdir", work, "--jobs", "2", "--json", "--",
                      "make", "-s", cwd=work)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["same"] and result["differences"] == []
    assert [run["status"] for run in result["runs"]] == [0, 0]


def test_compare_names_the_invocations_a_different_emulator_changes(tree):
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "broken", "--", "make", "-s", cwd=work)
    assert done.returncode == 1
    report = done.stdout.decode()
    # make stops at the first failure: the rest of the broken run never happened.
    assert "5 invocation(s) differ:" in report
    assert "./probe.wasm wasm a   (in " + str(work) + "; exit status)" in report
    assert "    builtin            0 in " in report and "    broken             7 in " in report
    assert report.count("; not run everywhere)") == 4 and "    broken             not run" in report
    assert "the runs' exit statuses differ" in report
    assert b"broken: exit 2" in done.stderr  # progress, as each run ends


def test_compare_needs_two_profiles_and_a_command(tree):
    work, _ = tree
    assert wasmbinfmt("compare", "--profile", "builtin", "--", "true", cwd=work).returncode == 2
    assert wasmbinfmt("compare", "--profile", "a", "--profile", "b", cwd=work).returncode == 2
