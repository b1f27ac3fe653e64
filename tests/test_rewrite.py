"""The emulator's exec as the kernel builds it: argv, #! lines, chains, depth (pure)."""

from __future__ import annotations

import errno

import pytest

from wasmbinfmt.exec.rewrite import (
    MAX_REWRITES, Argv, Fail, FileKind, Rewrite, parse_shebang, resolve_exec,
)
from wasmbinfmt.rules.model import parse_registration


def rule(line, **changes):
    return parse_registration(line)._replace(**changes)


def world(files: dict[bytes, FileKind]):
    """An inspect callback over a dict of files (missing: not ours to handle)."""
    return lambda name, first: files.get(name)


def run(path, caller_argv, files, **kw):
    verdict = resolve_exec(path, world(files), **kw)
    assert isinstance(verdict, Rewrite), verdict
    return verdict.path, verdict.argv.build(caller_argv)


WASM = rule(":w:M::\\x00asm::/usr/bin/emu:")
WASM_P = rule(":w:M::\\x00asm::/usr/bin/wasmtime:P", args=("run", "--"),
              env=(("WASMTIME_LOG", "info"),))


def test_the_first_rule_with_sysroots_is_named_with_the_file_it_ran():
    qemu = rule(":q:M::\\x7fELF::/usr/bin/qemu-q:", ld_prefixes=("/usr/q-linux-gnu",))
    verdict = resolve_exec(b"./prog", world({b"./prog": FileKind(qemu)}))
    assert verdict.sysroot_for == (qemu, b"./prog")
    verdict = resolve_exec(b"./m.wasm", world({b"./m.wasm": FileKind(WASM)}))
    assert verdict.sysroot_for is None


def test_without_P_argv0_is_dropped():
    assert run(b"./prog.wasm", [b"prog", b"--help", b"x y"], {b"./prog.wasm": FileKind(WASM)}) \
        == (b"/usr/bin/emu", [b"/usr/bin/emu", b"./prog.wasm", b"--help", b"x y"])


def test_with_P_argv0_is_kept_and_args_go_before_the_path():
    verdict = resolve_exec(b"sub/p.wasm", world({b"sub/p.wasm": FileKind(WASM_P)}))
    assert verdict.argv.build([b"custom0", b"a"]) == [
        b"/usr/bin/wasmtime", b"run", b"--", b"sub/p.wasm", b"custom0", b"a"]
    assert verdict.env == ((b"WASMTIME_LOG", b"info"),)
    assert verdict.rules == (WASM_P,)


def test_empty_argv_gets_the_kernels_empty_argv0():
    files = {b"p": FileKind(rule(":w:M::\\x00asm::/emu:P"))}
    assert run(b"p", [], files)[1] == [b"/emu", b"p", b""]
    files = {b"p": FileKind(rule(":w:M::\\x00asm::/emu:"))}
    assert run(b"p", [], files)[1] == [b"/emu", b"p"]


QEMU = rule(":qemu:M::\\x7fELF::/usr/bin/qemu-aarch64:P", args=("-cpu", "max"),
            argv0_option="-0")


def test_argv0_option_moves_argv0_before_the_path_as_qemu_wants_it():
    assert run(b"./prog", [b"my-name", b"a"], {b"./prog": FileKind(QEMU)}) == (
        b"/usr/bin/qemu-aarch64",
        [b"/usr/bin/qemu-aarch64", b"-cpu", b"max", b"-0", b"my-name", b"./prog", b"a"])
    # An empty argv: the "" Linux gives it.
    assert run(b"./prog", [], {b"./prog": FileKind(QEMU)})[1] == [
        b"/usr/bin/qemu-aarch64", b"-cpu", b"max", b"-0", b"", b"./prog"]


def test_argv0_option_in_a_chain_takes_the_previous_interpreters_name():
    """A #! script run by a foreign interpreter: qemu is told the script's #! name."""
    files = {b"./s": FileKind(script=(b"/x/foreign-sh", None)),
             b"/x/foreign-sh": FileKind(QEMU)}
    assert run(b"./s", [b"s", b"a"], files)[1] == [
        b"/usr/bin/qemu-aarch64", b"-cpu", b"max", b"-0", b"/x/foreign-sh", b"/x/foreign-sh",
        b"./s", b"a"]


def test_argv_only_ever_changes_at_the_front():
    argv = Argv().remove_arg_zero().push_front(b"i", b"p").remove_arg_zero().push_front(b"j")
    assert argv == Argv((b"j", b"p"), 1)
    assert argv.build([b"a0", b"a1"]) == [b"j", b"p", b"a1"]


def test_nothing_matching_is_left_alone():
    assert resolve_exec(b"/bin/true", world({})) is None
    script = FileKind(script=(b"/bin/sh", None))
    assert resolve_exec(b"./s", world({b"./s": script})) is None


def test_script_whose_interpreter_is_a_foreign_binary():
    files = {b"./t.lua": FileKind(script=(b"/opt/lua.wasm", b"-x")),
             b"/opt/lua.wasm": FileKind(WASM)}
    assert run(b"./t.lua", [b"t.lua", b"a"], files) == (
        b"/usr/bin/emu", [b"/usr/bin/emu", b"/opt/lua.wasm", b"-x", b"./t.lua", b"a"])


def test_an_emulator_that_is_a_script_is_left_to_the_kernel():
    files = {b"p.wasm": FileKind(rule(":w:M::\\x00asm::/emu.sh:")),
             b"/emu.sh": FileKind(script=(b"/bin/sh", None))}
    assert run(b"p.wasm", [b"p"], files) == (b"/emu.sh", [b"/emu.sh", b"p.wasm"])


def test_rules_chain_through_emulators():
    files = {b"p.wasm": FileKind(rule(":w:M::\\x00asm::/emu.aarch64:")),
             b"/emu.aarch64": FileKind(rule(":a:M::\\x7fELF::/usr/bin/qemu-aarch64:P"))}
    verdict = resolve_exec(b"p.wasm", world(files))
    assert verdict.path == b"/usr/bin/qemu-aarch64"
    assert verdict.argv.build([b"p", b"1"]) == [
        b"/usr/bin/qemu-aarch64", b"/emu.aarch64", b"/emu.aarch64", b"p.wasm", b"1"]
    assert [r.name for r in verdict.rules] == ["w", "a"]


def test_a_rule_loop_gives_ELOOP():
    loop = rule(":w:M::\\x00asm::/loop.wasm:")
    files = {b"p.wasm": FileKind(loop), b"/loop.wasm": FileKind(loop)}
    # the rules applied before the depth ran out: what -v and check name
    assert resolve_exec(b"p.wasm", world(files)) == Fail(errno.ELOOP, (loop,) * MAX_REWRITES)


def chain_of_scripts(n: int, last: FileKind | None) -> dict:
    files = {b"s%d" % i: FileKind(script=(b"s%d" % (i - 1), None)) for i in range(1, n + 1)}
    files[b"s0"] = last
    return files


@pytest.mark.parametrize("scripts", range(MAX_REWRITES + 2))
def test_depth_limit_counts_scripts_and_rules_like_the_kernel(scripts):
    # s<scripts> -> ... -> s1 -> s0, a wasm file whose emulator is native: scripts + 1 rewrites.
    files = chain_of_scripts(scripts, FileKind(WASM))
    verdict = resolve_exec(b"s%d" % scripts, world(files))
    if scripts + 1 <= MAX_REWRITES:
        assert isinstance(verdict, Rewrite) and verdict.path == b"/usr/bin/emu"
    elif scripts == MAX_REWRITES:
        assert verdict == Fail(errno.ELOOP)  # the rule is one rewrite too many
    else:
        assert verdict is None  # the scripts alone are too deep: the kernel says ELOOP itself


def test_a_too_deep_chain_of_scripts_alone_is_the_kernels_to_refuse():
    files = chain_of_scripts(MAX_REWRITES + 3, FileKind(script=(b"/bin/sh", None)))
    assert resolve_exec(b"s%d" % (MAX_REWRITES + 3), world(files)) is None


def test_close_on_exec_descriptor_gives_ENOENT():
    files = {b"/dev/fd/3": FileKind(WASM)}
    assert resolve_exec(b"/dev/fd/3", world(files), path_inaccessible=True) == Fail(errno.ENOENT)
    assert resolve_exec(b"/dev/fd/4", world(files), path_inaccessible=True) is None


def test_first_flag_is_given_to_inspect():
    seen = []
    resolve_exec(b"a", lambda name, first: seen.append((name, first)) or (
        FileKind(script=(b"b", None)) if name == b"a" else None))
    assert seen == [(b"a", True), (b"b", False)]


# ---------------------------------------------------------------------------
# #! lines, as fs/binfmt_script.c reads them (tests/test_tracer.py runs the same lines through
# the real kernel).

SHEBANGS = [
    (b"#!/bin/sh\n", (b"/bin/sh", None)),
    (b"#! /bin/sh  \n", (b"/bin/sh", None)),
    (b"#!/bin/sh -e\n", (b"/bin/sh", b"-e")),
    (b"#!/usr/bin/env python3 -u -B\n", (b"/usr/bin/env", b"python3 -u -B")),
    (b"#!\t/bin/sh\t-x\t \n", (b"/bin/sh", b"-x")),
    (b"#!/bin/sh", (b"/bin/sh", None)),  # no newline, short file: NUL ends the name
    (b"#!/bin/sh\x00junk\n", (b"/bin/sh", None)),
    (b"#!/bin/sh -x\x00y\n", (b"/bin/sh", b"-x")),
    (b"#!/bin/sh\r\n", (b"/bin/sh\r", None)),
    (b"#!\n", None),
    (b"#!   \n", None),
    (b"#!", (b"", None)),  # an empty name: the kernel then fails to open ""
    (b"# !/bin/sh\n", None),
    (b"\x7fELF", None),
    (b"#!/" + b"a" * 300, None),  # no terminator within 256 bytes: truncated
    (b"#!/" + b"a" * 200 + b" " + b"b" * 100, (b"/" + b"a" * 200, b"b" * 51)),  # byte 255 is where the kernel ends the string
    (b"#!" + b" " * 300, None),
    (b"#!/x " + b" " * 300 + b"\n", (b"/x", None)),
]


@pytest.mark.parametrize("header,expected", SHEBANGS)
def test_shebang_lines(header, expected):
    assert parse_shebang(header) == expected
