"""Reading and patching WebAssembly binaries (pure: bytes in, values out).

Only what wasmbinfmt needs: the section layout, the initial memory image of
a module's active data segments, and the one patch the WASI runner applies
(exporting a global). Every reader raises WasmFormatError on malformed
input and never reads past the buffer, whatever the module claims.
"""

from __future__ import annotations

import struct
from collections import namedtuple  # not typing: ~15 ms, on the WASI runner's path

MAGIC = b"\0asm\x01\0\0\0"
EXPORT_SECTION = 7
GLOBAL_SECTION = 6
CODE_SECTION = 10
DATA_SECTION = 11
EXPORT_GLOBAL = 3
I32 = 0x7F
I32_CONST = 0x41
GLOBAL_GET = 0x23
END = 0x0B
I32_LOAD = 0x28
I32_STORE = 0x36
ALIGN_4 = 2  # memarg alignment exponent of a naturally aligned i32 access


class WasmFormatError(ValueError):
    pass


# start: the id byte; body: the first byte of the contents
Section = namedtuple("Section", "id start body end")


def read_uleb(data: bytes, pos: int, limit: int = 5) -> tuple[int, int]:
    """An unsigned LEB128 of at most `limit` bytes at `pos`: (value, next position)."""
    value = shift = 0
    for i in range(limit):
        if pos + i >= len(data):
            raise WasmFormatError("truncated number")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos + i + 1
    raise WasmFormatError("number too long")


def read_sleb32(data: bytes, pos: int) -> tuple[int, int]:
    value, end = read_uleb(data, pos)
    bits = 7 * (end - pos)
    if data[end - 1] & 0x40 and bits < 64:
        value -= 1 << bits
    return value, end


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data: bytes) -> list[Section]:
    if data[:8] != MAGIC:
        raise WasmFormatError("not a core WebAssembly module")
    found = []
    pos = 8
    while pos < len(data):
        size, body = read_uleb(data, pos + 1)
        end = body + size
        if end > len(data):
            raise WasmFormatError(f"section {data[pos]} runs past the end of the file")
        found.append(Section(data[pos], pos, body, end))
        pos = end
    return found


def section(found: list[Section], section_id: int) -> Section | None:
    return next((s for s in found if s.id == section_id), None)


def data_segments(data: bytes, found: list[Section]) -> list[tuple[int, bytes]]:
    """(address, bytes) of the active data segments of memory 0 with constant offsets."""
    data_section = section(found, DATA_SECTION)
    if data_section is None:
        return []
    count, pos = read_uleb(data, data_section.body)
    segments = []
    for _ in range(count):
        kind, pos = read_uleb(data, pos)
        if kind == 2:  # explicit memory index
            memory, pos = read_uleb(data, pos)
        else:
            memory = 0
        address = None
        if kind in (0, 2):
            if data[pos:pos + 1] == bytes([I32_CONST]):
                address, pos = read_sleb32(data, pos + 1)
            elif data[pos:pos + 1] == bytes([GLOBAL_GET]):  # relocatable (PIC): unknown here
                _, pos = read_uleb(data, pos + 1)
            if data[pos:pos + 1] != bytes([END]):
                raise WasmFormatError("data segment offset is not a constant expression")
            pos += 1
        elif kind != 1:
            raise WasmFormatError(f"unknown data segment kind {kind}")
        size, pos = read_uleb(data, pos)
        if pos + size > data_section.end:
            raise WasmFormatError("data segment runs past its section")
        if address is not None and memory == 0 and address >= 0:
            segments.append((address, data[pos:pos + size]))
        pos += size
    return segments


def first_global(data: bytes, found: list[Section]) -> tuple[bool, int | None] | None:
    """(mutable, initial i32 constant or None) of global 0 if it is an i32, else None.

    wasm-ld puts the C stack pointer (``__stack_pointer``) first."""
    global_section = section(found, GLOBAL_SECTION)
    if global_section is None:
        return None
    count, pos = read_uleb(data, global_section.body)
    if count == 0 or pos + 2 > global_section.end or data[pos] != I32:
        return None
    mutable = data[pos + 1] == 1
    initial = None
    if data[pos + 2:pos + 3] == bytes([I32_CONST]):
        initial, after = read_sleb32(data, pos + 3)
        if data[after:after + 1] != bytes([END]):
            initial = None
    return mutable, initial


def accesses_i32(data: bytes, found: list[Section], address: int, opcode: int) -> bool:
    """Whether the code has an aligned i32 load/store (`opcode`) with `address` as its
    constant offset, the way LLVM addresses a global variable (minimal or 5-byte
    padded LEB, as wasm-ld leaves relocated offsets)."""
    code = section(found, CODE_SECTION)
    if code is None:
        return False
    minimal = uleb(address)
    padded = bytes([(address >> (7 * i)) & 0x7F | 0x80 for i in range(4)]) + \
        bytes([(address >> 28) & 0x7F])
    for encoding in {minimal, padded}:
        if data.find(bytes([opcode, ALIGN_4]) + encoding, code.body, code.end) != -1:
            return True
    return False


def with_exported_global(data: bytes, found: list[Section], index: int, name: str) -> bytes:
    """`data` with one more export: global `index` under `name`."""
    exports = section(found, EXPORT_SECTION)
    encoded = name.encode()
    entry = uleb(len(encoded)) + encoded + bytes([EXPORT_GLOBAL]) + uleb(index)
    if exports is None:
        raise WasmFormatError("the module has no export section")
    count, pos = read_uleb(data, exports.body)
    contents = uleb(count + 1) + data[pos:exports.end] + entry
    return b"".join((data[:exports.start], bytes([EXPORT_SECTION]), uleb(len(contents)),
                     contents, data[exports.end:]))


def pointers_to_string(segments: list[tuple[int, bytes]], string: bytes,
                       most_copies: int = 16) -> list[int]:
    """Addresses of aligned 32-bit words in the data image whose value is the
    address of a copy of the NUL-terminated `string`; WasmFormatError when there
    are more than `most_copies` copies (linkers merge equal strings: a module
    full of them is not one to guess about, and the search would be quadratic)."""
    targets = set()
    needle = string + b"\0"
    for address, contents in segments:
        at = contents.find(needle)
        while at != -1:
            targets.add(address + at)
            if len(targets) > most_copies:
                raise WasmFormatError(f"more than {most_copies} copies of {string!r}")
            at = contents.find(needle, at + 1)
    found = []
    for target in targets:
        word = struct.pack("<I", target)
        for address, contents in segments:
            at = contents.find(word)
            while at != -1:
                if (address + at) % 4 == 0:
                    found.append(address + at)
                at = contents.find(word, at + 1)
    return sorted(found)
