"""Reading and patching WebAssembly binaries (pure: bytes in, values out).

Only what wasmbinfmt needs: the section layout, the initial memory image of
a module's active data segments, and the one patch the WASI runner applies
(exporting a global). Every reader raises WasmFormatError on malformed
input and never reads past the buffer, whatever the module claims.
"""

from __future__ import annotations

import struct

from ..util.record import record

MAGIC = b"\0asm\x01\0\0\0"
CUSTOM_SECTION = 0
TYPE_SECTION = 1
IMPORT_SECTION = 2
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


@record
class Section:
    id: int
    start: int  # the id byte
    body: int  # the first byte of the contents
    end: int


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


class DataImage:
    """The initial contents of memory 0, as its active data segments give them."""

    def __init__(self, segments: list[tuple[int, bytes]]) -> None:
        self.segments = sorted(segments)
        self.starts = [address for address, _ in self.segments]

    def read(self, address: int, length: int) -> bytes | None:
        """`length` bytes at `address`, or None where no one segment holds them."""
        from bisect import bisect_right

        i = bisect_right(self.starts, address) - 1
        if i < 0:
            return None
        start, contents = self.segments[i]
        if address + length > start + len(contents):
            return None
        return contents[address - start:address - start + length]

    def word(self, address: int) -> int | None:
        data = self.read(address, 4)
        return None if data is None else struct.unpack("<I", data)[0]


_LEB = rb"((?:[\x80-\xff]{0,4})[\x00-\x7f])"  # minimal or padded, as wasm-ld leaves them


def _leb_value(encoded: bytes, signed: bool) -> int:
    value = 0
    for i, byte in enumerate(encoded):
        value |= (byte & 0x7F) << (7 * i)
    if signed and encoded[-1] & 0x40:
        value -= 1 << (7 * len(encoded))
    return value


def constant_address_accesses(data: bytes, found: list[Section]) -> tuple[dict, set]:
    """One pass over the code: (how often each constant address is read by an aligned
    i32.load, the constant addresses an aligned i32.store writes as its offset).

    The two ways LLVM reads a global at a fixed address: ``i32.const 0; i32.load
    offset=ADDR`` and ``i32.const ADDR; i32.load offset=0``. (A store of the second
    kind has the value between the two: see constant_uses.)"""
    import re  # here: only modules that are looked into pay for it (~5 ms)

    code = section(found, CODE_SECTION)
    if code is None:
        return {}, set()
    body = data[code.body:code.end]
    loads: dict[int, int] = {}
    for match in re.finditer(rb"\x28\x02" + _LEB, body):
        address = _leb_value(match.group(1), False)
        loads[address] = loads.get(address, 0) + 1
    for match in re.finditer(rb"\x41" + _LEB + rb"\x28\x02\x00", body):
        address = _leb_value(match.group(1), True)
        loads[address] = loads.get(address, 0) + 1
    stores = {_leb_value(match.group(1), False)
              for match in re.finditer(rb"\x36\x02" + _LEB, body)}
    return loads, stores


def constant_uses(data: bytes, found: list[Section], address: int, then: bytes = b"") -> int:
    """How often the code pushes `address` with i32.const (minimal or padded LEB), with
    the bytes `then` right after it."""
    code = section(found, CODE_SECTION)
    if code is None or address < 0:
        return 0
    padded = bytes([(address >> (7 * i)) & 0x7F | 0x80 for i in range(4)]) + \
        bytes([(address >> 28) & 0x7F])
    body = data[code.body:code.end]
    return sum(body.count(bytes([I32_CONST]) + encoding + then)
               for encoding in {sleb(address), padded})


def sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def import_modules(prefix: bytes) -> tuple[frozenset[str], bool]:
    """The module names a core module imports from, found in `prefix` (the start of
    the file), and whether that is all of them (False: the import section runs past
    the prefix, or the prefix is not a valid start of a module).

    Sections before the imports (custom sections, types) are skipped by their
    size without being read, so only the import section itself must fit.
    """
    names: set[str] = set()
    if prefix[:8] != MAGIC:
        return frozenset(), False
    pos = 8
    try:
        while pos < len(prefix):
            section_id = prefix[pos]
            size, body = read_uleb(prefix, pos + 1)
            if section_id == IMPORT_SECTION:
                end = body + size
                count, pos = read_uleb(prefix, body)
                for _ in range(count):
                    module, pos = _name(prefix, pos)
                    names.add(module)
                    _, pos = _name(prefix, pos)
                    pos = _skip_import_description(prefix, pos)
                return frozenset(names), pos == end
            if section_id not in (CUSTOM_SECTION, TYPE_SECTION):
                return frozenset(), True  # past where imports would be: there are none
            pos = body + size
    except (WasmFormatError, IndexError):
        pass
    return frozenset(names), False


def _name(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = read_uleb(data, pos)
    if pos + length > len(data):
        raise WasmFormatError("name runs past the data")
    return data[pos:pos + length].decode("utf-8", "replace"), pos + length


def _limits(data: bytes, pos: int) -> int:
    flags, pos = read_uleb(data, pos)
    _, pos = read_uleb(data, pos, 10)
    if flags & 1:
        _, pos = read_uleb(data, pos, 10)
    return pos


def _skip_import_description(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    if kind == 0:  # function: a type index
        return read_uleb(data, pos)[1]
    if kind == 1:  # table: reference type, limits
        return _limits(data, _skip_value_type(data, pos))
    if kind == 2:  # memory: limits
        return _limits(data, pos)
    if kind == 3:  # global: value type, mutability
        return _skip_value_type(data, pos) + 1
    if kind == 4:  # tag: attribute, type index
        return read_uleb(data, pos + 1)[1]
    raise WasmFormatError(f"unknown import kind {kind}")


def _skip_value_type(data: bytes, pos: int) -> int:
    if data[pos] in (0x63, 0x64):  # (ref null? heaptype): a signed LEB heap type follows
        return read_sleb32(data, pos + 1)[1]
    return pos + 1
