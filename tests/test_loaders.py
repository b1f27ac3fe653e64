"""Rule file formats: binfmt.d, binfmt-support, /proc entries, rules.yaml."""

from __future__ import annotations

import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmbinfmt.rules.loaders import (
    load_file, parse_binfmt_lines, parse_binfmt_support, parse_proc_entry, read_text,
    sniff_format, untrusted_writers,
)
from wasmbinfmt.rules.model import RuleError
from wasmbinfmt.rules.rules_yaml import parse_rules_yaml


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------------------
# binfmt.d lines


def test_binfmt_lines_skip_comments_and_strip_like_systemd():
    text = "# comment\n; also a comment\n\n   :a:E::x::/bin/a:  \n:b:E::y::/bin/b:\n"
    rules, errors = parse_binfmt_lines(text, "f.conf")
    assert not errors
    assert [r.name for r in rules] == ["a", "b"]
    assert [str(r.origin) for r in rules] == ["f.conf:4", "f.conf:5"]


def test_binfmt_lines_report_every_bad_line_and_keep_the_good():
    text = ":a:E::x::/bin/a:\n:bad:Q::x::/bin/a:\n:c:E::z::/bin/c:\n:d:M::\\xZZ::/x:\n"
    rules, errors = parse_binfmt_lines(text, "/etc/binfmt.d/f.conf")
    assert [r.name for r in rules] == ["a", "c"]
    assert [str(e) for e in errors] == [
        "/etc/binfmt.d/f.conf:2: field 'type': the type must be M or E followed by the "
        "delimiter ':'",
        "/etc/binfmt.d/f.conf:4: field 'magic': '\\x' at byte 7 of the line is not followed "
        "by two hex digits",
    ]


# ---------------------------------------------------------------------------
# binfmt-support

QEMU_AARCH64 = """\
package qemu-user-binfmt
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
magic \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00
offset 0
mask \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff
credentials no
fix_binary no
preserve yes
"""


def test_binfmt_support_qemu_format():
    (rule,), errors = parse_binfmt_support(QEMU_AARCH64, "qemu-aarch64", "/usr/share/binfmts/x")
    assert not errors
    assert rule.name == "qemu-aarch64" and rule.kind == "M"
    assert rule.magic[:4] == b"\x7fELF" and rule.magic[18] == 0xB7 and len(rule.mask) == 20
    assert rule.flags == frozenset("P")
    assert rule.origin.format == "binfmt-support"


def test_binfmt_support_flags_detector_and_extension():
    text = ("package foo\ninterpreter /usr/bin/foo\nextension foo\ndetector /usr/bin/isfoo\n"
            "credentials yes\nfix_binary yes\n")
    (rule,), errors = parse_binfmt_support(text, "foo", "foo")
    assert not errors
    assert (rule.kind, rule.extension, rule.detector) == ("E", "foo", "/usr/bin/isfoo")
    assert rule.flags == frozenset("COF")


@pytest.mark.parametrize("text,line,field", [
    ("package p\ninterpreter /x\nmagic ab\ncolour blue\n", 4, "colour"),
    ("package p\ninterpreter /x\nmagic ab\nmagic cd\n", 4, "magic"),
    ("package p\nmagic ab\n", None, "interpreter"),
    ("package p\ninterpreter /x\n", None, "magic"),
    ("package p\ninterpreter /x\nmagic ab\nextension e\n", 3, "magic"),
    ("package p\ninterpreter /x\nmagic ab\npreserve maybe\n", 4, "preserve"),
    ("package p\ninterpreter /x\nmagic ab\nmask \\xff\n", 4, "mask"),
    ("package p\ninterpreter /x\nmagic \\x4\n", 3, "magic"),
    ("package p\ninterpreter /x\nmagic ab\noffset 255\n", 4, "offset"),
    ("package p\ninterpreter /x\nextension a/b\n", None, "magic"),
])
def test_binfmt_support_errors_name_line_and_field(text, line, field):
    rules, (error,) = parse_binfmt_support(text, "p", "/usr/share/binfmts/p")
    assert rules == []
    assert (error.source, error.line, error.field) == ("/usr/share/binfmts/p", line, field)


# ---------------------------------------------------------------------------
# /proc entries


def test_proc_entry_magic_and_extension():
    text = ("enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: POC\noffset 0\n"
            "magic 7f454c46\nmask ffffffff\n")
    (rule,), errors = parse_proc_entry(text, "qemu", "/proc/sys/fs/binfmt_misc/qemu")
    assert not errors
    assert (rule.magic, rule.mask, rule.flags, rule.enabled) == (
        b"\x7fELF", b"\xff" * 4, frozenset("POC"), True)
    (rule,), _ = parse_proc_entry("disabled\ninterpreter /x\nflags: \nextension .wasm\n", "w", "p")
    assert (rule.kind, rule.extension, rule.enabled) == ("E", "wasm", False)


@pytest.mark.parametrize("text,field", [
    ("", "status"),
    ("on\ninterpreter /x\nflags: \nextension .a\n", "status"),
    ("enabled\ninterpreter /x\nflags: \nmagic zz\noffset 0\n", "magic"),
    ("enabled\ninterpreter /x\nflags: \nextension a\n", "extension"),
    ("enabled\ninterpreter /x\nflags: Z\nextension .a\n", "flags"),
    ("enabled\nflags: \nextension .a\n", "interpreter"),
    ("enabled\ninterpreter /x\nflags: \nsize 3\n", "size"),
])
def test_proc_entry_errors(text, field):
    rules, (error,) = parse_proc_entry(text, "n", "/proc/x")
    assert rules == [] and error.field == field and error.source == "/proc/x"


# ---------------------------------------------------------------------------
# Format detection


@pytest.mark.parametrize("text,kind", [
    ("rules:\n  - binfmt: ':a:E::x::/x:'\n", "yaml"),
    ("# my rules\n---\nrules: []\n", "yaml"),
    ("enabled\ninterpreter /x\n", "proc"),
    ("package foo\ninterpreter /x\n", "binfmt-support"),
    ("# c\n:a:E::x::/x:\n", "binfmt"),
    ("", "binfmt"),
    ("rule:\n  - name: x\n", "yaml"),  # misspelt: reported as an unknown key, below
    ("profile: {}\n", "yaml"),
    ("xnamexExxoutxx/bin/emux\n", "binfmt"),  # a letter as the delimiter
    ("a:b:c\n", "binfmt"),
])
def test_sniff_format(text, kind):
    assert sniff_format(text) == kind


def test_load_file_reads_every_format(tmp_path):
    cases = {
        "rules.yaml": ("rules:\n  - binfmt: ':y:E::y::/y:'\n", "yaml"),
        "x.conf": (":c:E::c::/c:\n", "binfmt"),
        "qemu-aarch64": (QEMU_AARCH64, "binfmt-support"),
        "entry": ("enabled\ninterpreter /p\nflags: \nextension .p\n", "proc"),
    }
    for name, (text, kind) in cases.items():
        got_kind, rules, errors = load_file(write(tmp_path / name, text))
        assert (got_kind, len(rules), errors) == (kind, 1, [])
    kind, rules, (error,) = load_file(str(tmp_path / "missing"))
    assert rules == [] and "cannot read" in str(error) and str(tmp_path) in str(error)


# ---------------------------------------------------------------------------
# rules.yaml

GOOD_YAML = r"""
rules:
  - name: wasm
    magic: '\x00asm\x01\x00\x00\x00'
    interpreter: /usr/bin/wasmtime
    args: [run, --]
    env: {A: "1", B: two}
    flags: P
  - name: masked
    magic: "\x7fELF"
    mask: '\xff\xff\xff\xff'
    offset: 4
    interpreter: /x
  - name: ext
    extension: lua
    interpreter: lua
    enabled: false
  - binfmt: ':qemu:M::\x7fELF::/usr/bin/qemu-aarch64:P'
    args: ['-0']
    env: {QEMU_LD_PREFIX: /usr/aarch64-linux-gnu}
"""


def test_rules_yaml_structured_and_binfmt_forms():
    rules, errors = parse_rules_yaml(GOOD_YAML, "r.yaml")
    assert errors == []
    wasm, masked, ext, qemu = rules
    assert (wasm.magic, wasm.args, wasm.env, wasm.flags) == (
        b"\0asm\x01\0\0\0", ("run", "--"), (("A", "1"), ("B", "two")), frozenset("P"))
    assert (masked.magic, masked.mask, masked.offset) == (b"\x7fELF", b"\xff" * 4, 4)
    assert (ext.kind, ext.extension, ext.enabled) == ("E", "lua", False)
    assert (qemu.name, qemu.args, qemu.preserve_argv0) == ("qemu", ("-0",), True)
    assert [r.origin.line for r in rules] == [3, 9, 14, 18]


@pytest.mark.parametrize("body,line,field,reason", [
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    colour: red\n",
     5, "colour", "unknown key"),
    ("rules:\n  - name: a\n    magic: ab\n    magic: cd\n    interpreter: /x\n",
     4, "magic", "given twice"),
    ("rules:\n  - magic: ab\n    interpreter: /x\n", 2, "name", "needs 'name'"),
    ("rules:\n  - name: a\n    magic: ab\n", 2, "interpreter", "needs 'interpreter'"),
    ("rules:\n  - name: a\n    interpreter: /x\n", 2, "magic", "exactly one of"),
    ("rules:\n  - name: a\n    magic: ab\n    extension: e\n    interpreter: /x\n",
     3, "magic", "exactly one of"),
    ("rules:\n  - name: a\n    extension: e\n    offset: 2\n    interpreter: /x\n",
     4, "offset", "only magic rules"),
    ("rules:\n  - name: a\n    magic: 'a\\x4'\n    interpreter: /x\n", 3, "magic", "two hex"),
    ("rules:\n  - name: a\n    magic: ab\n    mask: '\\xff'\n    interpreter: /x\n",
     4, "mask", "the mask is 1 bytes"),
    ("rules:\n  - name: a\n    magic: ab\n    offset: -1\n    interpreter: /x\n",
     4, "offset", "whole number"),
    ("rules:\n  - name: a\n    magic: ab\n    offset: 255\n    interpreter: /x\n",
     4, "offset", "goes past"),
    ("rules:\n  - name: a\n    magic: ab\n    offset: two\n    interpreter: /x\n",
     4, "offset", "whole number"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    flags: PQ\n",
     5, "flags", "unknown flag"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    args: -v\n",
     5, "args", "list of strings"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    args: [[1]]\n",
     5, "args", "single value"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    env: [A]\n",
     5, "env", "mapping"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    env: {'A=B': c}\n",
     5, "env", "not a valid variable name"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    enabled: maybe\n",
     5, "enabled", "true or false"),
    ("rules:\n  - name: off\n    magic: ab\n    interpreter: /x\n", 2, "name",
     "YAML reads 'off' as False: put it in quotes"),
    ("rules:\n  - name: a/b\n    magic: ab\n    interpreter: /x\n", 2, "name", "contains '/'"),
    ("rules:\n  - name: a\n    magic: 'é€'\n    interpreter: /x\n", 3, "magic", "not a byte"),
    ("rules:\n  - name: a\n    magic: ''\n    interpreter: /x\n", 3, "magic", "empty"),
    ("rules:\n  - binfmt: ':a:M::ab::/x:Z'\n", 2, "binfmt: flags", "unknown flag"),
    ("rules:\n  - binfmt: ':a:M::ab::/x:'\n    magic: cd\n", 3, "magic", "combined"),
    ("rules:\n  - binfmt: ':a:M::ab::/x:'\n  - binfmt: ':a:E::c::/y:'\n", 3, "name",
     "already used on line 2"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    wasm-imports: []\n",
     5, "wasm-imports", "a list of the import module names"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    wasm-imports: ['']\n",
     5, "wasm-imports", "none empty"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    wasm-imports: wali\n",
     5, "wasm-imports", "list of strings"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    argv0-option: -0\n",
     5, "argv0-option", "give the rule flags: P"),
    ("rules:\n  - binfmt: ':a:M::ab::/x:'\n    argv0-option: ''\n",
     3, "argv0-option", "empty"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    ld-prefix: [usr/x]\n",
     5, "ld-prefix", "absolute paths"),
    ("rules:\n  - name: a\n    magic: ab\n    interpreter: /x\n    ld-prefix: /usr/x\n",
     5, "ld-prefix", "list of strings"),
    ("profiles: [a]\n", 1, "profiles", "must map profile names"),
    ("profiles:\n  p: [wasmtime]\n", 2, "profiles", "profile 'p' must map rule names"),
    ("profiles:\n  p: {wasm: wasmtime}\n", 2, "profiles: p: wasm", "list of strings"),
    ("profiles:\n  p:\n    wasm: []\n", 3, "profiles: p: wasm", "the command is empty"),
    ("rules: {a: 1}\n", 1, "rules", "must be a list"),
    ("colour: red\n", 1, "colour", "unknown key"),
    ("rules:\n  - [a]\n", 2, None, "must be a mapping"),
    ("rules:\n  - name: a\n   bad indent: x\n", 3, None, "not valid YAML"),
])
def test_rules_yaml_errors_name_line_and_key(body, line, field, reason):
    rules, errors = parse_rules_yaml(body, "/home/u/.config/wasmbinfmt/rules.yaml")
    assert len(errors) == 1, errors
    (error,) = errors
    assert (error.source, error.line, error.field) == (
        "/home/u/.config/wasmbinfmt/rules.yaml", line, field)
    assert reason in str(error)
    assert str(error).startswith(f"/home/u/.config/wasmbinfmt/rules.yaml:{line}: ")


def test_rules_yaml_wasm_imports_in_both_forms():
    body = ("rules:\n  - {name: wali, magic: '\\x00asm', interpreter: /iwasm, "
            "wasm-imports: [wali, wali_ext]}\n"
            "  - {binfmt: ':w2:M::\\x00asm::/iwasm:', wasm-imports: [wali]}\n")
    rules, errors = parse_rules_yaml(body, "r.yaml")
    assert errors == [] and [r.wasm_imports for r in rules] == [("wali", "wali_ext"), ("wali",)]
    assert all(r.conditional for r in rules)


def test_rules_yaml_ld_prefix_in_both_forms():
    body = ("rules:\n  - {name: a, magic: x, interpreter: /q, ld-prefix: [/usr/a, /usr/a/s]}\n"
            "  - {binfmt: ':b:M::y::/q:', ld-prefix: [/usr/b]}\n")
    rules, errors = parse_rules_yaml(body, "r.yaml")
    assert errors == [] and [r.ld_prefixes for r in rules] == [("/usr/a", "/usr/a/s"),
                                                               ("/usr/b",)]


def test_rules_yaml_keeps_good_rules_beside_bad_ones():
    body = ("rules:\n  - binfmt: ':a:E::a::/a:'\n  - binfmt: ':b:Q::b::/b:'\n"
            "  - binfmt: ':c:E::c::/c:'\n")
    rules, errors = parse_rules_yaml(body, "r.yaml")
    assert [r.name for r in rules] == ["a", "c"] and [e.line for e in errors] == [3]


def test_rules_yaml_empty_and_yaml_escapes():
    assert parse_rules_yaml("", "r") == ([], [])
    assert parse_rules_yaml("rules: []\n", "r") == ([], [])
    (rule,), _ = parse_rules_yaml('rules:\n  - {name: a, magic: "\\xff\\x00", '
                                  'interpreter: /x}\n', "r")
    assert rule.magic == b"\xff\x00"


# ---------------------------------------------------------------------------
# No loader lets anything but a RuleError out, whatever the input.

yaml_like = st.lists(st.sampled_from([
    "rules:", "  - name: a", "    magic: 'ab'", "    interpreter: /x", "    args: [a, b]",
    "    env: {A: b}", "  - binfmt: ':a:E::x::/x:'", "    enabled: yes", "    offset: 3",
    "    mask: '\\xff'", "  -", "- x", "rules: [1, 2]", "  - {}", "&a x", "*a", "!!python/none",
    "    extension: e", ": :", "{", "'", "\t", "    flags: PZ"]), max_size=12).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), yaml_like))
def test_loaders_never_raise(text):
    for loaded in (parse_binfmt_lines(text, "f"), parse_binfmt_support(text, "n", "f"),
                   parse_proc_entry(text, "n", "f"), parse_rules_yaml(text, "f")):
        rules, errors = loaded
        assert all(isinstance(e, RuleError) and e.source == "f" for e in errors)
        assert all(r.origin is not None for r in rules)


file_bytes = st.one_of(st.binary(max_size=300), yaml_like.map(os.fsencode),
                       st.lists(st.sampled_from([
                           b":a:M::\\x00asm::/x:", b":b:E::e::/y:PF", b"package x",
                           b"interpreter /x", b"magic \\x7fELF", b"enabled", b"flags: PO",
                           b"offset 3", b"\xff\xfe", b"#", b";"]), max_size=10).map(b"\n".join))


@settings(max_examples=200, deadline=None)
@given(file_bytes)
def test_files_of_any_bytes_in_every_place_give_located_errors_only(data):
    """Whatever bytes a rules file holds, wherever it is found (--rules, binfmt.d,
    binfmt-support), loading gives rules and errors that name the file and a line in it."""
    import tempfile

    from wasmbinfmt.rules.sources import load_binfmt_d, load_binfmt_support, load_source_file

    with tempfile.TemporaryDirectory() as root:
        for directory in ("etc/binfmt.d", "usr/share/binfmts"):
            os.makedirs(os.path.join(root, directory))
        paths = [os.path.join(root, "etc/binfmt.d/x.conf"),
                 os.path.join(root, "usr/share/binfmts/x"), os.path.join(root, "rules")]
        for path in paths:
            with open(path, "wb") as f:
                f.write(data)
        lines = data.count(b"\n") + 1
        for (rules, errors), path in zip((load_binfmt_d(root), load_binfmt_support(root),
                                          load_source_file(paths[2])), paths):
            for e in errors:
                assert isinstance(e, RuleError) and e.source == path
                assert e.line is None or 1 <= e.line <= lines, (e, lines)
                assert str(e).startswith(path)
            assert all(r.origin.source == path for r in rules)


# ---------------------------------------------------------------------------
# Rules files that others could change are refused.

def stat_of(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 10, 0, 0, 0))


ME = os.geteuid()


@pytest.mark.parametrize("uid,gid,mode,who", [
    (ME, 0, 0o644, None),
    (0, 0, 0o644, None),
    (0, 0, 0o664, None),  # group root: root's personal group
    (ME, 0, 0o666, "every user may write it (mode 0666; chmod o-w)"),
    (0, 0, 0o602, "every user may write it (mode 0602; chmod o-w)"),
    (0, 65534, 0o664, "group 65534 may write it (mode 0664; chmod g-w)"),  # nogroup
    (0, 0, 0o1646, "every user may write it (mode 1646; chmod o-w)"),
    (4242, 0, 0o644, "it belongs to another user (uid 4242)"),
])
def test_untrusted_writers(uid, gid, mode, who):
    if ME == 4242:
        pytest.skip("the test's other user is us")
    assert untrusted_writers(stat_of(uid, gid, mode)) == who


def test_read_text_refuses_a_world_writable_file_and_says_how_to_fix_it(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, "rules: []\n")
    os.chmod(path, 0o646)
    with pytest.raises(RuleError) as refused:
        read_text(str(path))
    assert str(refused.value).startswith(f"{path}: refused: every user may write it (mode 0646")
    os.chmod(path, 0o644)
    assert read_text(str(path)) == "rules: []\n"
