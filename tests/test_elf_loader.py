"""An ELF program's loader (PT_INTERP) and the sysroot qemu gets for it (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmbinfmt.exec.files import elf_loader, ld_prefix_for, loader_in

PT_LOAD, PT_INTERP = 1, 3


def elf(wide: bool, little: bool, segments: list[tuple[int, bytes]]) -> bytes:
    """An ELF file whose program headers are `segments` (type, contents)."""
    order = "<" if little else ">"
    header_size, entry_size = (64, 56) if wide else (52, 32)
    data_at = header_size + entry_size * len(segments)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1 if little else 2, 1]) + bytes(9)
    if wide:
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, 183, 1, 0, header_size, 0, 0,
                                     header_size, entry_size, len(segments), 0, 0, 0)
    else:
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 2, 40, 1, 0, header_size, 0, 0,
                                     header_size, entry_size, len(segments), 0, 0, 0)
    table, contents = b"", b""
    for kind, content in segments:
        offset = data_at + len(contents)
        if wide:
            table += struct.pack(order + "IIQQQQQQ", kind, 4, offset, 0, 0, len(content),
                                 len(content), 1)
        else:
            table += struct.pack(order + "IIIIIIII", kind, offset, 0, 0, len(content),
                                 len(content), 4, 1)
        contents += content
    return header + table + contents


def loader(data: bytes):
    return loader_in(lambda offset, size: data[offset:offset + size])


@pytest.mark.parametrize("wide", [True, False], ids=["64-bit", "32-bit"])
@pytest.mark.parametrize("little", [True, False], ids=["LE", "BE"])
def test_pt_interp_is_read_in_every_class_and_byte_order(wide, little):
    data = elf(wide, little, [(PT_LOAD, b""), (PT_INTERP, b"/lib/ld-linux-x.so.1\0")])
    assert loader(data) == b"/lib/ld-linux-x.so.1"
    assert loader(elf(wide, little, [(PT_LOAD, b"")])) is None  # static


@pytest.mark.parametrize("data", [b"", b"\0asm\x01\0\0\0", b"#!/bin/sh\n"])
def test_what_is_not_elf_has_no_loader(data):
    assert loader(data) is None


@pytest.mark.parametrize("interp", [b"/lib/ld.so", b"", b"\0"])
def test_a_malformed_pt_interp_is_an_error(interp):
    """No terminating NUL, or too short to name anything: the kernel refuses such a file."""
    with pytest.raises((ValueError, struct.error)):
        loader(elf(True, True, [(PT_INTERP, interp)]))


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_loader_none_or_an_error_only(tail):
    try:
        loader(elf(True, True, [(PT_INTERP, b"/l\0")])[:64] + tail)
    except (ValueError, struct.error):
        pass


def test_the_real_programs_loaders(fixtures):
    assert elf_loader(fixtures / "hello.dyn.aarch64") == b"/lib/ld-linux-aarch64.so.1"
    assert elf_loader(fixtures / "hello.dyn.riscv64") == b"/lib/ld-linux-riscv64-lp64d.so.1"
    assert elf_loader(fixtures / "hello.aarch64") is None  # static
    assert elf_loader(fixtures / "hello.wasm") is None
    assert elf_loader(fixtures / "missing") is None


def test_a_sysroot_only_where_the_machine_lacks_the_loader_and_the_sysroot_has_it():
    files = {b"/usr/a-linux-gnu/sys-root/lib/ld-a.so.1", b"/usr/b-linux-gnu/lib/ld-b.so.1",
             b"/lib/ld-native.so.2", b"/usr/n/lib/ld-native.so.2"}
    prefixes = ("/usr/a-linux-gnu", "/usr/a-linux-gnu/sys-root/")
    assert ld_prefix_for(b"/lib/ld-a.so.1", prefixes, files.__contains__) \
        == "/usr/a-linux-gnu/sys-root/"
    assert ld_prefix_for(b"/lib/ld-b.so.1", prefixes, files.__contains__) is None
    assert ld_prefix_for(b"/lib/ld-native.so.2", ("/usr/n",), files.__contains__) is None
    assert ld_prefix_for(b"lib/ld-a.so.1", prefixes, files.__contains__) is None
