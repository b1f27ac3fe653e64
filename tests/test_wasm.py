"""wasmbinfmt.runners.wasm (reading and patching binaries) and the runner's cwd logic (wasi_cwd)."""

from __future__ import annotations

import struct

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmbinfmt.exec import files
from wasmbinfmt.runners import wasm
from wasmbinfmt.runners import wasi_cwd
from wasmbinfmt.runners.wasi_cwd import LibcCwd

# A module shaped like a wasi-libc program: the stack pointer first, a "/" string
# at 1030 and a word at 2048 pointing at it, read and written the way LLVM does.
LIBC_LIKE = """
(module
  (memory (export "memory") 1)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "_start"))
  (func (export "getcwd") (result i32) (i32.load offset=2048 (i32.const 0)))
  {store}
  (data (i32.const 1024) "hello\\00/\\00")
  (data (i32.const 2048) "\\06\\04\\00\\00"){more}
)"""
STORE = '(func (export "chdir") (param i32) (i32.store offset=2048 (i32.const 0) (local.get 0)))'


def module(store: str = "", more: str = "") -> bytes:
    return wasmtime.wat2wasm(LIBC_LIKE.format(store=store, more=more))


def test_sections_and_their_bounds():
    data = module()
    found = wasm.sections(data)
    assert [s.id for s in found][:3] == [1, 3, 5]
    assert found[-1].end == len(data)
    with pytest.raises(wasm.WasmFormatError, match="not a core"):
        wasm.sections(b"\0asm\x0d\0\x01\0")
    with pytest.raises(wasm.WasmFormatError, match="past the end"):
        wasm.sections(data[:-1])
    with pytest.raises(wasm.WasmFormatError, match="too long"):
        wasm.sections(wasm.MAGIC + b"\x01\xff\xff\xff\xff\xff\x01")


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**32 - 1])
def test_leb_round_trip(value):
    assert wasm.read_uleb(wasm.uleb(value), 0) == (value, len(wasm.uleb(value)))


def test_signed_leb():
    assert wasm.read_sleb32(b"\x7f", 0) == (-1, 1)
    assert wasm.read_sleb32(b"\x80\x80\x04", 0) == (65536, 3)


def test_data_segments_active_passive_and_relocatable():
    data = wasmtime.wat2wasm("""(module (memory 1) (global $base i32 (i32.const 0))
        (data (i32.const 16) "ab") (data "passive") (data (global.get $base) "pic"))""")
    assert wasm.data_segments(data, wasm.sections(data)) == [(16, b"ab")]


def test_first_global_is_the_stack_pointer():
    data = module()
    assert wasm.first_global(data, wasm.sections(data)) == (True, 65536)
    immutable = wasmtime.wat2wasm("(module (global i32 (i32.const 5)))")
    assert wasm.first_global(immutable, wasm.sections(immutable)) == (False, 5)
    other = wasmtime.wat2wasm("(module (global (mut i64) (i64.const 5)))")
    assert wasm.first_global(other, wasm.sections(other)) is None


def test_a_data_image_reads_words_and_bytes_where_one_segment_holds_them():
    image = wasm.DataImage([(2048, struct.pack("<II", 1030, 7)), (1024, b"hello\0/\0")])
    assert image.word(2048) == 1030 and image.word(2052) == 7
    assert image.read(1030, 2) == b"/\0" and image.read(1031, 2) is None
    assert image.word(4096) is None and image.read(0, 1) is None


def test_constant_address_accesses_in_both_forms_and_padded():
    data = module(STORE)
    loads, stores = wasm.constant_address_accesses(data, wasm.sections(data))
    assert loads.get(2048) == 1 and stores == {2048}
    # i32.const ADDR; i32.load offset=0, and a store with the value in between
    data = wasmtime.wat2wasm(LIBC_LIKE.format(store="", more="").replace(
        "(i32.load offset=2048 (i32.const 0))", "(i32.load (i32.const 2048))"))
    loads, _ = wasm.constant_address_accesses(data, wasm.sections(data))
    assert loads.get(2048) == 1
    # wasm-ld leaves relocated offsets as 5-byte LEBs in unoptimised output.
    body = bytes([1, 0, 0x41, 0, wasm.I32_STORE, 2, 0x80, 0x90, 0x80, 0x80, 0x00, 0x0B])
    padded = wasm.MAGIC + bytes([wasm.CODE_SECTION]) + wasm.uleb(len(body)) + body
    assert wasm.constant_address_accesses(padded, wasm.sections(padded)) == ({}, {2048})


@pytest.mark.parametrize("value", [0, 63, 64, 127, 128, 8191, 8192, 2**31 - 1, -1, -64, -65])
def test_signed_leb_encoding_round_trips(value):
    assert wasm.read_sleb32(wasm.sleb(value), 0) == (value, len(wasm.sleb(value)))


def test_exporting_a_global_keeps_the_module_valid():
    data = wasm.with_exported_global(module(), wasm.sections(module()), 0, "sp")
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    exports = wasmtime.Instance(store, wasmtime.Module(engine, data), []).exports(store)
    assert exports["sp"].value(store) == 65536
    assert {"memory", "_start", "getcwd", "sp"} <= set(exports.keys())


# ---------------------------------------------------------------------------
# Finding wasi-libc's current directory

def test_a_read_and_written_pointer_to_slash_is_the_emulated_cwd():
    assert wasi_cwd.find_libc_cwd(module(STORE)) == LibcCwd(2048, True)


def test_a_pointer_only_read_is_getcwds_alone():
    assert wasi_cwd.find_libc_cwd(module()) == LibcCwd(2048, False)


OTHER = '(func (export "sep") (result i32) (i32.load offset=3000 (i32.const 0)))'
OTHER_DATA = '\n  (data (i32.const 3000) "\\06\\04\\00\\00")'
OTHER_WRITTEN = OTHER + ' (func (param i32) (i32.store offset=3000 (i32.const 0) (local.get 0)))'


def test_of_two_read_pointers_to_slash_the_written_one_is_the_cwd():
    assert wasi_cwd.find_libc_cwd(module(STORE + OTHER, OTHER_DATA)) == LibcCwd(2048, True)


def test_two_candidates_alike_are_ambiguous_and_left_alone():
    assert wasi_cwd.find_libc_cwd(module(STORE + OTHER_WRITTEN, OTHER_DATA)) is None
    assert wasi_cwd.find_libc_cwd(module(OTHER, OTHER_DATA)) is None  # both only read


def test_a_pointer_not_read_by_the_code_is_no_candidate():
    assert wasi_cwd.find_libc_cwd(module(STORE, OTHER_DATA)) == LibcCwd(2048, True)


def test_the_cwd_read_with_its_address_pushed_and_written_with_the_value_between():
    """CPython's form: i32.const ADDR; i32.load, and i32.const ADDR; VALUE; i32.store."""
    text = LIBC_LIKE.format(store='(func (export "chdir") (param i32) (i32.store '
                                  '(i32.const 2048) (local.get 0)))', more="").replace(
        "(i32.load offset=2048 (i32.const 0))", "(i32.load (i32.const 2048))")
    assert wasi_cwd.find_libc_cwd(wasmtime.wat2wasm(text)) == LibcCwd(2048, True)


def test_a_slash_at_the_tail_of_a_longer_string_among_thousands_of_them():
    """Linkers merge "/" into the tail of "abc/"; a module may hold many such strings."""
    many = "".join(f"dir{i}/\\00" for i in range(20000))
    text = LIBC_LIKE.format(store=STORE, more=f'\n  (data (i32.const 8192) "{many}")').replace(
        '(data (i32.const 1024) "hello\\00/\\00")', '(data (i32.const 1024) "xyz/\\00")'
    ).replace('"\\06\\04\\00\\00"', '"\\03\\04\\00\\00"')
    assert wasi_cwd.find_libc_cwd(wasmtime.wat2wasm(text)) == LibcCwd(2048, True)


def test_no_pointer_no_load_or_no_stack_pointer_is_left_alone():
    unread = module().replace(bytes([wasm.I32_LOAD, 2]) + wasm.uleb(2048),
                              bytes([wasm.I32_LOAD, 2]) + wasm.uleb(2052))
    assert wasi_cwd.find_libc_cwd(unread) is None
    no_stack = wasmtime.wat2wasm('(module (memory 1) (data (i32.const 8) "/\\00\\08\\00\\00\\00"))')
    assert wasi_cwd.find_libc_cwd(no_stack) is None
    assert wasi_cwd.find_libc_cwd(b"\0asm\1\0\0\0\x0b\x05") is None


def test_prepare_exports_the_stack_pointer_only_when_seeding():
    data, libc_cwd = wasi_cwd.prepare(module(STORE))
    assert libc_cwd == LibcCwd(2048, True)
    assert b"__wasmbinfmt_stack_pointer" in data
    plain = wasmtime.wat2wasm('(module (func (export "_start")))')
    assert wasi_cwd.prepare(plain) == (plain, None)


SEEDED = """
(module
  (import "env" "report" (func $report (param i32)))
  (memory (export "memory") 1)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "chdir") (param i32) (i32.store offset=2048 (i32.const 0) (local.get 0)))
  (func (export "_start") (local $p i32)
    (local.set $p (i32.load offset=2048 (i32.const 0)))
    (call $report (local.get $p))
    (call $report (global.get $sp))
    (block $done (loop $next
      (br_if $done (i32.eqz (i32.load8_u (local.get $p))))
      (call $report (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))))
  (data (i32.const 1024) "hello\\00/\\00")
  (data (i32.const 2048) "\\06\\04\\00\\00"))"""


def run_seeded(cwd: str) -> tuple[bool, list[int]]:
    from wasmbinfmt.runners import capi

    data, libc_cwd = wasi_cwd.prepare(wasmtime.wat2wasm(SEEDED))
    assert libc_cwd == LibcCwd(2048, True)
    engine = capi.Engine(())
    process = capi.WasiProcess(engine, [b"seeded"], [])
    reported: list[int] = []
    process.define_func_i32("env", "report", reported.append)
    process.instantiate(capi.Module.compile(engine, data))
    seeded = wasi_cwd.seed(process, libc_cwd, cwd)
    process.call("_start")
    return seeded, reported


def test_seeding_copies_the_cwd_below_the_stack_and_points_the_variable_at_it():
    seeded, (string, stack_pointer, *text) = run_seeded("/home/u/proj")
    assert seeded and string == stack_pointer  # the stack starts below the string
    assert string % 16 == 0 and 65536 - 32 <= string < 65536 - 12
    assert bytes(text) == b"/home/u/proj"


def test_a_cwd_too_long_is_not_seeded():
    seeded, (string, stack_pointer, *text) = run_seeded("/" + "x" * 5000)
    assert not seeded and (string, stack_pointer, bytes(text)) == (1030, 65536, b"/")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_modules_never_raise_anything_but_give_up(draw):
    data = bytearray(module(STORE))
    for _ in range(draw.draw(st.integers(1, 8))):
        at = draw.draw(st.integers(0, len(data) - 1))
        data[at] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(data)))
    result = wasi_cwd.find_libc_cwd(bytes(data[:cut]))
    assert result is None or isinstance(result, LibcCwd)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_the_magic(tail):
    result = wasi_cwd.find_libc_cwd(wasm.MAGIC + tail)
    assert result is None or isinstance(result, LibcCwd)


# ---------------------------------------------------------------------------
# The preopens of the default layout

def fake_fs(top_level, in_cwd):
    return dict(listdir=lambda path: list(top_level),
                isdir=lambda path: path != "/vmlinuz",
                lexists=lambda path: path.rsplit("/", 1)[1] in in_cwd)


def test_a_module_that_resolves_relative_paths_itself_gets_the_root():
    assert wasi_cwd.preopens("/home/u/p", LibcCwd(8, True)) == [("/", "/")]


def test_at_the_root_the_root_is_all():
    assert wasi_cwd.preopens("/", None) == [("/", "/")]


def test_otherwise_cwd_ancestors_and_the_top_level_directories_not_shadowed():
    layout = wasi_cwd.preopens("/home/u/p", LibcCwd(8, False),
                               **fake_fs(["usr", "tmp", "lib", "vmlinuz", "home"], {"lib"}))
    assert layout == [("/home/u/p", "."), ("/home/u", ".."), ("/home", "../.."), ("/", "../../.."),
                      ("/home", "/home"), ("/tmp", "/tmp"), ("/usr", "/usr")]


# ---------------------------------------------------------------------------
# The import modules, from the start of a file (the wasm-imports rule condition)

def wali_shaped(types: int = 80, module: str = "wali") -> bytes:
    """Like a real WALI program: many function types first, so that the imports sit
    hundreds of bytes in, beyond binfmt_misc's 256."""
    signatures = [f"(type (func (param {' '.join(['i32'] * (n % 9))} {' '.join(['i64'] * (n // 9))})))"
                  for n in range(types)]
    return wasmtime.wat2wasm(f"""(module {' '.join(signatures)}
        (import "{module}" "SYS_write" (func (param i32 i32 i32) (result i64)))
        (import "{module}" "SYS_exit" (func (param i32)))
        (import "env" "memory" (memory 1 2))
        (import "env" "table" (table 1 funcref))
        (import "env" "g" (global (mut i32)))
        (func (export "_start")))""")


def test_import_modules_past_a_large_type_section():
    data = wali_shaped()
    assert data.find(b"wali") > 500
    assert wasm.import_modules(data) == (frozenset({"wali", "env"}), True)


def test_no_import_section_is_a_complete_empty_answer():
    data = wasmtime.wat2wasm('(module (func (export "_start")))')
    assert wasm.import_modules(data) == (frozenset(), True)


def test_a_cut_import_section_gives_what_was_read_as_incomplete():
    data = wali_shaped()
    cut = data.find(b"SYS_exit")
    names, complete = wasm.import_modules(data[:cut])
    assert names == {"wali"} and not complete
    assert wasm.import_modules(data[:100]) == (frozenset(), False)  # still in the types
    assert wasm.import_modules(b"\0asm\x0d\0\x01\0") == (frozenset(), False)  # a component


def test_a_type_section_claiming_gigabytes_is_skipped_not_read():
    claim = wasm.MAGIC + bytes([wasm.TYPE_SECTION]) + wasm.uleb(3 << 30) + b"\0" * 64
    assert wasm.import_modules(claim) == (frozenset(), False)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_import_modules_on_damaged_modules_never_raises(draw):
    data = bytearray(wali_shaped(types=draw.draw(st.integers(0, 40))))
    for _ in range(draw.draw(st.integers(0, 8))):
        at = draw.draw(st.integers(0, len(data) - 1))
        data[at] = draw.draw(st.integers(0, 255))
    names, complete = wasm.import_modules(bytes(data[:draw.draw(st.integers(0, len(data)))]))
    assert isinstance(names, frozenset) and isinstance(complete, bool)


def _import_modules_peak_memory(data: bytes) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        wasm.import_modules(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# deadline: a guard against hangs (a second for at most 8 KiB), not a speed measurement.
@settings(max_examples=500, deadline=1000)
@given(st.one_of(
    st.binary(max_size=files.IMPORTS_READ_LIMIT),
    st.binary(max_size=files.IMPORTS_READ_LIMIT).map(lambda tail: wasm.MAGIC + tail),
    st.lists(st.sampled_from([bytes([wasm.TYPE_SECTION]), b"\x02", wasm.uleb(3 << 30),
                              wasm.uleb(127), b"\xff\xff\xff\xff\x0f", b"\x60\x00\x00",
                              b"\x04wali", b"\x00"]), max_size=40)
    .map(lambda parts: wasm.MAGIC + b"".join(parts))))
def test_import_modules_on_any_bytes_is_bounded(data):
    """Any file start a wasm-imports rule can read (IMPORTS_READ_LIMIT bytes): an answer,
    never an exception, and memory bounded by the input, whatever sizes it claims."""
    names, complete = wasm.import_modules(data)
    assert isinstance(names, frozenset) and isinstance(complete, bool)
    assert all(isinstance(name, str) for name in names)
    assert _import_modules_peak_memory(data) < 64 * 1024 + 4 * len(data)


def test_ambiguity_is_said_when_asked():
    doubts: list[str] = []
    assert wasi_cwd.find_libc_cwd(module(STORE + OTHER_WRITTEN, OTHER_DATA), doubts) is None
    assert doubts == ["2 words could be wasi-libc's current directory (0x800, 0xbb8); none is "
                      "seeded, so getcwd() gives / and relative paths resolve from the root of "
                      "the mapping"]
    assert wasi_cwd.find_libc_cwd(module(STORE), doubts) == LibcCwd(2048, True)
    assert len(doubts) == 1
