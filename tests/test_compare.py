"""One make run, every kind of foreign executable, and `wasmbinfmt compare` (issue 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from machines import E_MACHINE, FOREIGN_ARCHES
from test_wasm import wali_shaped

TIMEOUT = 300
# Both foreign architectures where the host is neither; one of them on aarch64 and riscv64.
MAKEFILE = "".join([
    "test:\n\t./probe.wasm wasm a; test $$? = 0\n\t./w.wasm wali b\n",
    *(f"\t./probe.{arch} {arch} c\n" for arch in FOREIGN_ARCHES),
    "\t./probe.native native e\n\t./probe.wasm exit 3; test $$? = 3\n"])


@pytest.fixture
def tree(fixtures, tmp_path):
    qemu = {arch: shutil.which(f"qemu-{arch}") for arch in FOREIGN_ARCHES}
    if not all(qemu.values()):
        pytest.fail("qemu-user is not installed (.ci/run installs it)")
    work = tmp_path / "tree"
    work.mkdir()
    for name in ("probe.wasm", *(f"probe.{arch}" for arch in FOREIGN_ARCHES), "probe.native"):
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
        + "".join(f"  - {{name: {arch}, magic: '{elf}\\x02\\x00{E_MACHINE[arch]}', "
                  f"mask: '{mask}', interpreter: {qemu[arch]}, flags: P, argv0-option: '-0'}}\n"
                  for arch in FOREIGN_ARCHES))
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
    for arch in FOREIGN_ARCHES:
        assert lines.count(f"argv[0]=./probe.{arch}") == 1 and f"argv[1]={arch}" in lines
    assert "argv[0]=./probe.native" in lines
    from test_execlog import events

    routed = [(e["argv"][0], e["rules"][0]) for e in events(log) if e["event"] == "exec"]
    assert routed == [("./probe.wasm", "wasm"), ("./w.wasm", "wali"),
                      *((f"./probe.{arch}", arch) for arch in FOREIGN_ARCHES),
                      ("./probe.wasm", "wasm")]


def test_compare_shows_what_the_wasmtime_cli_prints_otherwise(tree):
    """Every invocation exits alike, but the CLI cuts argv[0] to the file's name: the
    outputs differ, and compare says how."""
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "wasmtime-cli", "--workdir", work, "--jobs", "2", "--json", "--",
                      "make", "-s", cwd=work)
    assert done.returncode == 1, done.stdout.decode() + done.stderr.decode()
    result = json.loads(done.stdout)
    assert [run["status"] for run in result["runs"]] == [0, 0]
    diff = result["output_diff"].splitlines()
    assert diff[:2] == ["--- builtin", "+++ wasmtime-cli"]
    assert "-argv[0]=./probe.wasm" in diff and "+argv[0]=probe.wasm" in diff
    # Each invocation's own output, compared: the one printing its argv[0] differs (the
    # second prints nothing under both; the foreign ones are run alike).
    assert not result["same"]
    assert [(d["argv"], d["differs_in"]) for d in result["differences"]] == [
        (["./probe.wasm", "wasm", "a"], ["output"])]
    own = result["differences"][0]["output_diff"].splitlines()
    assert own[:2] == ["--- builtin", "+++ wasmtime-cli"]
    assert "-stdout: argv[0]=./probe.wasm" in own and "+stdout: argv[0]=probe.wasm" in own
    assert not any(line.startswith(("-stderr", "+stderr")) for line in own)


def test_compare_finds_no_difference_where_the_outputs_agree(tree, tmp_path):
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "wasmtime-cli", "--", "./probe.wasm", "exit", "3", cwd=work)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode().splitlines()[-1] == "no differences"


def test_compare_checks_every_profile_and_option_before_running(tree):
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "nope", "--", "touch", "ran", cwd=work)
    assert done.returncode == 2 and not (work / "ran").exists()
    assert b"no profile is named 'nope'" in done.stderr and b"Traceback" not in done.stderr
    done = wasmbinfmt("compare", "--emulator", "nosuch=x", "--profile", "builtin",
                      "--profile", "wasmtime-cli", "--", "touch", "ran", cwd=work)
    assert done.returncode == 2 and not (work / "ran").exists()
    assert b"no rule is named 'nosuch'" in done.stderr


def test_compare_takes_the_rule_options_of_a_run_and_cleans_up(tree, tmp_path):
    import tempfile

    work, rules = tree
    (work / "t.xw").write_text("")
    os.chmod(work / "t.xw", 0o755)
    options = ["--rule", ":w:E::xw::/bin/echo:", "--emulator", "w=/bin/echo other",
               "--profile", "builtin", "--profile", "wasmtime-cli"]
    before = set(os.listdir(tempfile.gettempdir()))
    done = wasmbinfmt("compare", *options, "--", "./t.xw", cwd=work)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before
            if n.startswith("wasmbinfmt-compare-")}
    assert left == set()
    kept = tmp_path / "kept"
    done = wasmbinfmt("compare", "--keep", kept, *options, "--", "./t.xw", cwd=work)
    assert done.returncode == 0 and sorted(p.name for p in kept.iterdir()) == [
        "0.jsonl", "0.jsonl.output", "0.out", "1.jsonl", "1.jsonl.output", "1.out"]
    assert sorted(p.suffix for p in (kept / "0.jsonl.output").iterdir()) == [
        ".stderr", ".stdout"]
    assert str(kept / "0.out").encode() in done.stdout
    assert (kept / "0.out").read_text() == (kept / "1.out").read_text() == "other ./t.xw\n"


def test_compare_shows_progress_while_a_profile_runs(tree):
    work, rules = tree
    done = wasmbinfmt("compare", "--profile", "builtin", "--profile", "wasmtime-cli", "--",
                      "sh", "-c", "./probe.wasm exit 0; sleep 2", cwd=work)
    assert done.returncode == 0, done.stderr
    assert b"wasmbinfmt compare: builtin: 1 done, running ./probe.wasm exit 0\n" in done.stderr


def test_compare_names_the_invocations_a_different_emulator_changes(tree):
    work, rules = tree
    done = wasmbinfmt("compare", "--rules", rules, "--profile", "builtin", "--profile",
                      "broken", "--", "make", "-s", cwd=work)
    assert done.returncode == 1
    report = done.stdout.decode()
    # make stops at the first failure: the rest of the broken run never happened.
    assert "5 invocation(s) differ:" in report
    assert "./probe.wasm wasm a   (in " + str(work) + "; exit status, output)" in report
    assert "    -stdout: argv[0]=./probe.wasm" in report
    assert "    builtin            0 in " in report and "    broken             7 in " in report
    assert report.count("; not run everywhere)") == 4 and "    broken             not run" in report
    assert "the runs' exit statuses differ" in report
    assert b"broken: exit 2" in done.stderr  # progress, as each run ends


def test_compare_needs_two_profiles_and_a_command(tree):
    work, _ = tree
    assert wasmbinfmt("compare", "--profile", "builtin", "--", "true", cwd=work).returncode == 2
    assert wasmbinfmt("compare", "--profile", "a", "--profile", "b", cwd=work).returncode == 2


def test_compare_diffs_an_invocations_output_as_any_user(box, user):
    from test_safety import wasmbinfmt as as_user

    done = as_user(user, ["compare", "--profile", "builtin", "--profile", "wasmtime-cli",
                          "--", "sh", "-c", "./probe.wasm x >/dev/null; ./probe.wasm exit 4"],
                   cwd=box)
    report = done.stdout.decode()
    assert done.returncode == 1, report + done.stderr.decode()
    assert "the runs printed different output" not in report  # the run's own output agrees
    assert "./probe.wasm x   (in " in report and "; output)" in report
    assert "    -stdout: argv[0]=./probe.wasm" in report
    assert "    +stdout: argv[0]=probe.wasm" in report
    assert "./probe.wasm exit 4" not in report
