"""Registration lines: every check the kernel makes, checked against the kernel itself."""

from __future__ import annotations

import errno
import glob

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_oracle import OracleUnavailable, not_compared
from wasmbinfmt.rules.loaders import parse_proc_entry
from wasmbinfmt.rules.model import (
    MAX_LINE_BYTES, Rule, RuleError, format_registration, make_rule, parse_registration,
)

# (line, field at fault, the kernel check it fails)
INVALID = [
    (":a:M::ab::/x", "interpreter", "the flags field's delimiter is required"),
    (":a:E::b::c", "line", "count < 11"),
    (":a:E::" + "e" * (MAX_LINE_BYTES - 10) + "::/x:", "line", "count > 1920"),
    ("::M::abc::/bin/x:", "name", "empty name"),
    (":.:M::abc::/bin/x:", "name", "name '.'"),
    (":..:M::abc::/bin/x:", "name", "name '..'"),
    (":a/b:M::abc::/bin/x:", "name", "'/' in name"),
    (":abcdefghijk", "type", "no type field"),
    (":a:X::abc::/bin/x:", "type", "type not M or E"),
    (":a:m::abc::/bin/x:", "type", "type is case-sensitive"),
    (":a:MM::abc::/bin/x:", "type", "type is one character"),
    (":a::0:abc::/bin/x:", "type", "empty type"),
    (":a:M:x:abc::/bin/x:", "offset", "kstrtoint: not a number"),
    (":a:M:-1:abc::/bin/x:", "offset", "offset < 0"),
    (":a:M:0x10:abc::/bin/x:", "offset", "kstrtoint base 10: no 0x"),
    (":a:M: 1:abc::/bin/x:", "offset", "kstrtoint: no leading space"),
    (":a:M:1 :abc::/bin/x:", "offset", "kstrtoint: no trailing space"),
    (":a:M:+:abc::/bin/x:", "offset", "kstrtoint: a sign alone"),
    (":a:M:--1:abc::/bin/x:", "offset", "kstrtoint: two signs"),
    (":a:M:99999999999:abc::/bin/x:", "offset", "kstrtoint: ERANGE"),
    (":a:M:254:abc::/bin/x:", "offset", "offset + size > BINPRM_BUF_SIZE"),
    (":a:M:256:a::/bin/x:", "offset", "offset + size > BINPRM_BUF_SIZE"),
    (":a:M:::/bin/x:", "magic", "empty magic"),
    (":a:M::\\x4::/bin/x:", "magic", "scanarg: one hex digit"),
    (":a:M::\\xzz::/bin/x:", "magic", "scanarg: not hex"),
    (":a:M::abc\\x::/bin/x:", "magic", "scanarg: \\x at the end"),
    (":a:M::\\x41\\x4::/bin/x:", "magic", "scanarg: second escape incomplete"),
    (":a:M::\\\\x4g::/bin/x:", "magic", "scanarg: a backslash before \\x does not escape it"),
    (":a:M::" + "\\x00" * 257 + "::/bin/x:", "magic", "size > BINPRM_BUF_SIZE"),
    (":a:M::abc:\\xgg:/bin/x:", "mask", "scanarg in the mask"),
    (":a:M::abc:\\xff:/bin/x:", "mask", "mask shorter than magic"),
    (":a:M::abc:\\xff\\xff\\xff\\xff:/bin/x:", "mask", "mask longer than magic"),
    (":a:M::abc:\\x00\\x00:/bin/x:", "mask", "mask shorter than magic"),
    (":a:M::abc:::", "interpreter", "empty interpreter"),
    (":a:M::abcdef", "interpreter", "the line ends after the magic"),
    (":a:M::abcdefg:", "interpreter", "the line ends after the mask"),
    (":a:E::::/bin/x:", "magic", "empty extension"),
    (":a:E::a/b::/bin/x:", "magic", "'/' in the extension"),
    (":a:E::abc:::", "interpreter", "empty interpreter"),
    (":a:E::abc::/bin/x", "interpreter", "the flags field's delimiter is required"),
    (":a:M::abc::/bin/x:Q", "flags", "unknown flag"),
    (":a:M::abc::/bin/x:p", "flags", "flags are case-sensitive"),
    (":a:M::abc::/bin/x:PQ", "flags", "unknown flag after a good one"),
    (":a:M::abc::/bin/x:P:", "flags", "an eighth field"),
    (":a:M::abc::/bin/x:P ", "flags", "trailing space"),
    ("|a|M||ab||/x|C|", "flags", "an eighth field, other delimiter"),
    (":a:E::abc::/bin/x:X", "flags", "unknown flag on an E rule"),
]

# (line, what the rule must be)
VALID = [
    (":a:M::abc::/bin/x:", dict(kind="M", magic=b"abc", mask=None, offset=0)),
    (":a:E::abc::/bin/x:", dict(kind="E", extension="abc")),
    (":a:M:+3:abc::/bin/x:", dict(offset=3)),
    (":a:M:-0:abc::/bin/x:", dict(offset=0)),
    (":a:M:007:abc::/bin/x:", dict(offset=7)),
    (":a:M:253:abc::/bin/x:", dict(offset=253)),
    (":a:M:1\n:abc::/bin/x:", dict(offset=1)),  # kstrtoint takes one trailing newline
    (":a:M::a\\x3ab::/bin/x:PPOC", dict(magic=b"a:b", flags=frozenset("POC"))),
    (":a:M::abc::/bin/x:C", dict(flags=frozenset("OC"))),
    (":a:M::abc::/bin/sh:F", dict(flags=frozenset("F"))),  # F opens it: it must exist
    (":a:M::a\\\\b::/bin/x:", dict(magic=b"a\\\\b")),  # both backslashes literal
    (":a:M::\\\\\\x41::/bin/x:", dict(magic=b"\\\\A")),
    (":a:M::x\\y::/bin/x:", dict(magic=b"x\\y")),
    (":a:M::abc\\::/bin/x:", dict(magic=b"abc\\")),
    (":a:E:junk:ext:junk:/bin/x:", dict(extension="ext")),
    (":a:E::\\x41::/x:", dict(extension="\\x41")),  # no escapes in extensions
    (":a:E::.tar::/x:", dict(extension=".tar")),
    (",a,M,,\\x00\\xff,\\xff\\x0f,/bin/x:y,P", dict(magic=b"\0\xff", mask=b"\xff\x0f",
                                                    interpreter="/bin/x:y")),
    (":my name:E::x::/x:", dict(name="my name")),
    (":a:M::" + "\\xab" * 256 + "::/x:", dict(magic=b"\xab" * 256)),
    (":a:E::" + "e" * (MAX_LINE_BYTES - 11) + "::/x:", dict(kind="E")),
    (":a:M::\\x7fELF::relative/emu:", dict(interpreter="relative/emu")),
    ("xaxMxx\\x78xx/emux", dict(magic=b"x")),  # the delimiter escaped inside the magic
    (":é:M::A::/x:", dict(name="é")),
]


@pytest.mark.parametrize("line,field,why", INVALID, ids=[w for _, _, w in INVALID])
def test_invalid_line_names_the_field(line, field, why):
    with pytest.raises(RuleError) as caught:
        parse_registration(line)
    assert caught.value.field == field
    assert f"field '{field}'" in str(caught.value)


def test_there_are_at_least_40_invalid_lines():
    assert len(INVALID) >= 40


@pytest.mark.parametrize("line,field,why", INVALID, ids=[w for _, _, w in INVALID])
def test_kernel_rejects_the_invalid_lines_too(kernel, line, field, why):
    if isinstance(kernel, OracleUnavailable):
        return not_compared(kernel)  # ours: test_invalid_line
    assert kernel.register(line) == ("error", errno.EINVAL)


@pytest.mark.parametrize("line,expected", VALID, ids=range(len(VALID)))
def test_valid_line(line, expected):
    rule = parse_registration(line)
    for key, value in expected.items():
        assert getattr(rule, key) == value, key


@pytest.mark.parametrize("line,expected", VALID, ids=range(len(VALID)))
def test_kernel_reads_valid_lines_as_we_do(kernel, line, expected):
    if isinstance(kernel, OracleUnavailable):
        return not_compared(kernel)  # ours: test_valid_line
    answer = kernel.register(line)
    assert answer[0] == "ok", answer
    (from_kernel,), errors = parse_proc_entry(answer[2], answer[1], "kernel")
    assert not errors
    assert from_kernel == parse_registration(line)


@pytest.mark.parametrize("line,expected", VALID, ids=range(len(VALID)))
def test_valid_line_formats_back_byte_identical(line, expected):
    rule = parse_registration(line)
    assert format_registration(rule) == line.rstrip("\n")
    assert parse_registration(format_registration(rule)) == rule


def test_kernel_opens_the_interpreter_of_F_rules_at_registration(kernel):
    # Why wasmbinfmt checks F interpreters when rules are loaded (sources.py).
    if isinstance(kernel, OracleUnavailable):
        return not_compared(kernel)
    assert kernel.register(":a:M::abc::/nonexistent/emu:F") == ("error", errno.ENOENT)


def test_nul_byte_is_refused():
    # The kernel would cut some fields at the NUL and not others; we refuse the line.
    with pytest.raises(RuleError) as caught:
        parse_registration(":a:M::ab\0c::/bin/x:")
    assert caught.value.field == "line"


def test_format_changes_delimiter_when_a_field_contains_it():
    rule = make_rule(name="a", kind="M", magic=b"\0asm", interpreter="/opt/x:y/run")
    line = format_registration(rule)
    assert line == ",a,M,,\\x00asm,,/opt/x:y/run,"
    assert parse_registration(line) == rule


def test_format_of_a_changed_rule_does_not_reuse_stale_spelling():
    rule = parse_registration(":a:M:4:\\x41BC:\\xff\\xff\\xff:/bin/x:PO")
    changed = rule._replace(magic=b"XY\x01", offset=0, flags=frozenset("F"))
    assert format_registration(changed) == ":a:M::XY\\x01:\\xff\\xff\\xff:/bin/x:F"


def test_rules_with_our_extensions_cannot_be_written_as_lines():
    rule = make_rule(name="a", kind="E", extension="x", interpreter="/x", args=("-v",))
    with pytest.raises(RuleError):
        format_registration(rule)


DEBIAN_QEMU_CONFS = sorted(glob.glob("/usr/lib/binfmt.d/qemu-*.conf"))


def test_debian_qemu_configs_parse_and_format_back_byte_identical():
    if len(DEBIAN_QEMU_CONFS) < 10:
        pytest.skip("Debian's qemu-user-binfmt is not installed")
    lines = 0
    for path in DEBIAN_QEMU_CONFS:
        with open(path) as f:
            for line in f.read().splitlines():
                if line.strip() and line[0] not in "#;":
                    rule = parse_registration(line)
                    assert format_registration(rule) == line, path
                    assert rule.preserve_argv0 and rule.interpreter.endswith("-binfmt-P")
                    lines += 1
    assert lines >= 20


# ---------------------------------------------------------------------------
# Properties.

_TOKENS = ["a", "b", "M", "E", "P", "O", "C", "F", "x", "\\x41", "\\xff", "\\x4", "\\", "\\\\",
           "/", ".", "..", "0", "7", "25", "-", "+", " ", "\n", "é", "\\x3a", "/bin/x"]


@st.composite
def line_like(draw):
    """Text shaped like registration lines, often valid, often subtly not."""
    delimiter = draw(st.sampled_from([":", ":", ":", ",", "|", "x", "0", "\\", "é"]))
    fields = [draw(st.sampled_from(["a", "qemu", ".", "", "a/b", "x"])),
              draw(st.sampled_from(["M", "E", "", "MM", "X"])),
              draw(st.sampled_from(["", "0", "3", "-0", "+1", "300", "x"]))]
    for _ in range(4):
        fields.append("".join(draw(st.lists(st.sampled_from(_TOKENS + [delimiter]),
                                            max_size=6))))
    fields = fields[:draw(st.integers(1, 7))]
    text = delimiter + delimiter.join(fields)
    return text.rstrip("\n") if draw(st.booleans()) else text


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), line_like()))
def test_parser_raises_only_rule_error(text):
    try:
        rule = parse_registration(text)
    except RuleError as e:
        assert str(e)
        return
    assert isinstance(rule, Rule)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_parser_raises_only_rule_error_on_bytes(data):
    try:
        parse_registration(data)
    except RuleError:
        pass


@settings(max_examples=400, deadline=None)
@given(line_like())
def test_a_parsed_line_formats_back_byte_identical(text):
    try:
        rule = parse_registration(text)
    except RuleError:
        return
    if text.startswith("\\"):
        return  # a backslash delimiter cannot be written back with escapes; we use ':'
    assert format_registration(rule) == text.removesuffix("\n")


magic_rules = st.builds(
    lambda name, magic, use_mask, mask_seed, offset, interp, flags: make_rule(
        name=name, kind="M", magic=magic,
        mask=bytes(m for m, _ in zip(mask_seed * len(magic), magic)) if use_mask and mask_seed
        else None,
        offset=min(offset, 256 - len(magic)), interpreter=interp, flags=frozenset(flags)),
    st.text("abcxyz-_:,|.é0123456789", min_size=1, max_size=12).filter(
        lambda n: n not in (".", "..")),
    st.binary(min_size=1, max_size=40), st.booleans(), st.binary(min_size=1, max_size=1),
    st.integers(0, 255), st.text("/abcé:,| ", min_size=1, max_size=20),
    st.sets(st.sampled_from("POCF")))
ext_rules = st.builds(
    lambda name, ext, interp, flags: make_rule(name=name, kind="E", extension=ext,
                                               interpreter=interp, flags=frozenset(flags)),
    st.text("abc-_.é", min_size=1, max_size=8).filter(lambda n: n not in (".", "..")),
    st.text("abcxyz:,.\\", min_size=1, max_size=8), st.text("/abc:,", min_size=1, max_size=20),
    st.sets(st.sampled_from("POCF")))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(magic_rules, ext_rules))
def test_parse_of_format_is_the_rule(rule):
    try:
        line = format_registration(rule)
    except RuleError:
        # Only when every candidate delimiter appears in the rule's plain fields.
        return
    assert parse_registration(line) == rule


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line_like())
def test_kernel_accepts_exactly_what_we_accept(kernel, text):
    if isinstance(kernel, OracleUnavailable):
        return not_compared(kernel)
    try:
        ours = parse_registration(text)
    except RuleError:
        ours = None
    answer = kernel.register(text)
    if ours is None:
        assert answer == ("error", errno.EINVAL), text
    elif "F" in ours.flags and answer == ("error", errno.ENOENT):
        pass  # F: the kernel opens the interpreter at once; ours is loaded, not opened
    else:
        assert answer[0] == "ok", (text, answer)
        if "\n" in ours.interpreter + ours.extension:
            return  # /proc prints one field a line: a newline inside one cannot be read back
        (from_kernel,), _ = parse_proc_entry(answer[2], answer[1], "kernel")
        assert from_kernel == ours
