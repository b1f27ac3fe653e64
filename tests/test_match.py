"""Matching files to rules, and exec plans: kernel semantics as pure functions."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmbinfmt.exec.match import Matcher
from wasmbinfmt.exec.rewrite import AT_FDCWD, exec_filename
from wasmbinfmt.rules.model import make_rule, parse_registration

WASM = b"\0asm\x01\0\0\0" + bytes(100)
AARCH64 = bytes.fromhex("7f454c4602010100000000000000000002 00b700".replace(" ", ""))


def rule(line, **changes):
    return parse_registration(line)._replace(**changes)


def test_magic_offset_and_mask():
    m = Matcher([
        rule(":qemu:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
             "\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff"
             "\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/q:P"),
        rule(":at4:M:4:\\x01\\x00:\\x0f\\xff:/at4:"),
    ])
    assert m.match(b"x", AARCH64).name == "qemu"
    # e_type 3 (ET_DYN) is let through by mask 0xfe; byte 7 (OS ABI) is ignored.
    pie = bytearray(AARCH64)
    pie[16], pie[7] = 3, 9
    assert m.match(b"x", bytes(pie)).name == "qemu"
    pie[18] = 0x3E  # x86_64
    assert m.match(b"x", bytes(pie)) is None
    assert m.match(b"x", b"\0asm\xf1\0").name == "at4"  # masked high nibble


def test_short_file_is_zero_padded_like_the_kernel():
    # Checked against the kernel: a 2-byte file "ZQ" matches magic ZQ\0\0.
    m = Matcher([rule(":z:M::ZQ\\x00\\x00::/z:"), rule(":far:M:200:\\x00::/far:")])
    assert m.match(b"f", b"ZQ").name == "z"
    assert m.match(b"f", b"").name == "far"


def test_extension_compares_the_whole_path_after_the_last_dot():
    m = Matcher([rule(":lua:E::lua::/lua:"), rule(":two:E::2::/two:")])
    assert m.match(b"./script.lua", b"").name == "lua"
    assert m.match(b"/dev/fd/3/x.lua", b"").name == "lua"
    assert m.match(b"lua", b"") is None  # no dot
    assert m.match(b"./x.LUA", b"") is None  # case-sensitive
    assert m.match(b"./v1.lua/prog", b"") is None  # not the basename's extension ...
    assert m.match(b"./v1.2/prog", b"") is None  # "2/prog" is no extension any rule can have
    assert m.match(b"./v1.2", b"").name == "two"


def test_first_listed_wins_and_disabled_rules_are_skipped():
    a = rule(":a:M::\\x00asm::/a:")
    b = rule(":b:M::\\x00asm\\x01::/b:")
    assert Matcher([a, b]).match(b"x", WASM) is a
    assert Matcher([b, a]).match(b"x", WASM) is b
    assert Matcher([a._replace(enabled=False), b]).match(b"x", WASM) is b
    assert [r.name for r in Matcher([a, b]).candidates(b"x", WASM)] == ["a", "b"]


def test_detector_must_confirm():
    wali = make_rule(name="wali", kind="M", magic=b"\0asm", interpreter="/iwasm",
                     detector="/bin/is-wali")
    wasi = make_rule(name="wasi", kind="M", magic=b"\0asm", interpreter="/wasmtime")
    m = Matcher([wali, wasi])
    assert m.match(b"x", WASM) is wasi  # no way to run the detector: passed over
    assert m.match(b"x", WASM, confirm=lambda r: True) is wali
    assert m.match(b"x", WASM, confirm=lambda r: False) is wasi


def test_wasm_imports_rules_are_conditional_like_detectors():
    wali = make_rule(name="wali", kind="M", magic=b"\0asm", interpreter="/iwasm",
                     wasm_imports=("wali",))
    wasi = make_rule(name="wasi", kind="M", magic=b"\0asm", interpreter="/wasmtime")
    m = Matcher([wali, wasi])
    assert m.match(b"x", WASM) is wasi
    assert m.match(b"x", WASM, confirm=lambda r: r.name == "wali") is wali


def reference_match(rules, path, header):
    """The kernel's search_binfmt_handler, written plainly: the first enabled rule that matches."""
    buf = header[:256].ljust(256, b"\0")
    dot = path.rfind(b".")
    for r in rules:
        if not r.enabled:
            continue
        if r.kind == "E":
            if dot >= 0 and path[dot + 1:] == r.extension.encode():
                return r
            continue
        mask = r.mask or b"\xff" * len(r.magic)
        if all((buf[r.offset + j] ^ r.magic[j]) & mask[j] == 0 for j in range(len(r.magic))):
            return r
    return None


small_bytes = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x & 0x3 for x in b))
random_rules = st.lists(st.one_of(
    st.builds(lambda m, mask, off, on: make_rule(
        name="m", kind="M", magic=m, mask=(mask * 3)[:len(m)] if mask else None, offset=off,
        interpreter="/m", enabled=on),
        small_bytes, st.one_of(st.none(), st.binary(min_size=3, max_size=3)), st.integers(0, 3),
        st.booleans()),
    st.builds(lambda e: make_rule(name="e", kind="E", extension=e, interpreter="/e"),
              st.sampled_from(["a", "b", "wasm"]))), max_size=12)


@settings(max_examples=500, deadline=None)
@given(random_rules, st.binary(max_size=8).map(lambda b: bytes(x & 0x3 for x in b)),
       st.sampled_from([b"x", b"x.a", b"d.b/x", b"p.wasm", b".b"]))
def test_grouped_matcher_equals_the_kernels_linear_search(rules, header, path):
    assert Matcher(rules).match(path, header) is reference_match(rules, path, header)


@pytest.mark.parametrize("dirfd,name,expected", [
    (AT_FDCWD, b"rel/prog", b"rel/prog"),
    (AT_FDCWD, b"/abs/prog", b"/abs/prog"),
    (5, b"/abs/prog", b"/abs/prog"),
    (5, b"rel/prog", b"/dev/fd/5/rel/prog"),
    (7, b"", b"/dev/fd/7"),
])
def test_exec_filename(dirfd, name, expected):
    assert exec_filename(dirfd, name) == expected
