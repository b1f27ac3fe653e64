"""wasmbinfmt-wasi, run directly (first slice of the built-in runner: issue 4)."""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

RUNNER = [sys.executable, "-m", "wasmbinfmt.runners.wasi"]
# Modules that must be refused or trap, written here as text.
WAT = {
    "trap": '(module (memory (export "memory") 1) (func $inner unreachable) '
            '(func (export "_start") call $inner))',
    "no-start": '(module (memory (export "memory") 1) (func (export "main")))',
    # Post-MVP features real toolchains emit, with no flag: exception handling (as
    # setjmp/longjmp in C), tail calls, SIMD, bulk memory. Exits 7 if all of them work.
    "features": """(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (tag $longjmp (param i32))
      (func $jump (param i32) (throw $longjmp (local.get 0)))
      (func $tail (param i32) (result i32) (return_call $lane (local.get 0)))
      (func $lane (param i32) (result i32)
        (i32x4.extract_lane 2 (i32x4.add (i32x4.splat (local.get 0)) (v128.const i32x4 0 0 2 0))))
      (func (export "_start")
        (memory.fill (i32.const 0) (i32.const 5) (i32.const 16))
        (block $caught (result i32)
          (try_table (catch $longjmp $caught) (call $jump (i32.load8_u (i32.const 3))))
          (unreachable))
        (call $tail)
        (call $exit)))""",
    "wali": '(module (import "wali" "SYS_write" (func (param i32))) '
            '(memory (export "memory") 1) (func (export "_start")))',
}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WASMBINFMT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(RUNNER + [str(a) for a in args], capture_output=True, timeout=60,
                          **kwargs)


def module(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(WAT[name]))
    return path


def test_help_and_version_answer_and_exit_0():
    from importlib.metadata import version

    from wasmbinfmt import __version__

    done = run(["--help"])
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.startswith(b"usage: wasmbinfmt-wasi ") and b"docs/wasi.md" in done.stdout
    done = run(["--version"])
    assert (done.returncode, done.stdout.decode()) == (
        0, f"wasmbinfmt-wasi {__version__} (wasmtime {version('wasmtime')})\n")
    done = run(["--bogus", "m.wasm"])
    assert done.returncode == 2 and b"unknown option '--bogus'" in done.stderr


def test_argv_reaches_the_program_options_included(fixtures, cache_dir):
    done = run([fixtures / "probe.wasm", "--help", "--dir", "x y"])
    assert done.stdout.decode().splitlines() == [
        "argc=4", f"argv[0]={fixtures / 'probe.wasm'}", "argv[1]=--help", "argv[2]=--dir",
        "argv[3]=x y"]


def test_preserve_argv0_takes_the_callers_argv0(fixtures, cache_dir):
    done = run(["--preserve-argv0", "--", fixtures / "probe.wasm", "my-name", "a"])
    assert done.stdout.decode().splitlines() == ["argc=2", "argv[0]=my-name", "argv[1]=a"]


def test_exit_status_environment_and_stdin(fixtures, cache_dir):
    assert run([fixtures / "probe.wasm", "exit", "42"]).returncode == 42
    env = {**os.environ, "WASMBINFMT_TEST_VALUE": "v=1"}
    assert run([fixtures / "probe.wasm", "env", "WASMBINFMT_TEST_VALUE"],
               env=env).stdout == b"v=1\n"
    done = run([fixtures / "probe.wasm", "cat"], input=b"x\n" * 100000)
    assert done.stdout == b"x\n" * 100000 and done.stderr == b"done\n"


def test_post_mvp_features_run_without_flags(tmp_path, cache_dir):
    done = run([module(tmp_path, "features")])
    assert done.returncode == 7, done.stderr


def test_dir_maps_exactly_what_it_names(fixtures, cache_dir, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("mapped\n")
    probe = fixtures / "probe.wasm"
    done = run(["--dir", f"{tmp_path}/data::/data", probe, "read", "/data/f.txt"])
    assert done.stdout == b"mapped\n"
    done = run([f"--dir={tmp_path}/data::/data", probe, "read", "/etc/passwd"])
    assert done.returncode == 1 and done.stdout.startswith(b"fopen /etc/passwd: ")
    done = run(["--dir", str(tmp_path / "data"), probe, "read", f"{tmp_path}/data/f.txt"])
    assert done.stdout == b"mapped\n"  # HOST alone: mapped under its own name
    done = run(["--dir", str(tmp_path / "missing"), probe, "cwd"])
    assert done.returncode == 126 and b"cannot map directory" in done.stderr


def test_the_runner_imports_neither_the_tracer_nor_yaml_nor_the_wasmtime_package(fixtures,
                                                                                  cache_dir):
    """A lean start: the wasmtime package's import alone costs ~80 ms (see capi.py)."""
    code = ("import os, sys, runpy; sys.argv = ['wasmbinfmt-wasi', sys.argv[1]]\n"
            "def leave(status): raise SystemExit(status)\n"
            "os._exit = leave  # the runner leaves with os._exit; stay to look\n"
            "try: runpy.run_module('wasmbinfmt.runners.wasi', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('yaml', 'ptrace', 'typing', "
            "'wasmtime', 'wasmbinfmt.trace', 'wasmbinfmt.rules'))))")
    done = subprocess.run([sys.executable, "-c", code, str(fixtures / "hello.wasm")],
                          capture_output=True, timeout=60)
    assert done.stdout.decode().splitlines()[-1] == "[]", done.stderr


def test_programs_recurse_as_deep_as_natively(fixtures, cache_dir):
    """wasmtime's default wasm stack (512 KiB) traps where a native program's 8 MiB
    stack does not (pcre2's own test suite recurses that deep): the runner sizes it from the
    process's stack limit, as the kernel sizes a native program's."""
    native = subprocess.run([fixtures / "probe.native", "recurse", "100000"], capture_output=True)
    assert native.stdout == b"depth 100000\n"
    assert run([fixtures / "probe.wasm", "recurse", "100000"]).stdout == native.stdout
    small = run([fixtures / "probe.wasm", "recurse", "100000"],
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, -1)))
    assert small.returncode == 134 and b"call stack exhausted" in small.stderr


@pytest.mark.parametrize("limit,size", [
    (8 << 20, 7 << 20), (-1, 63 << 20), (1 << 40, 63 << 20), (1 << 20, 512 << 10),
    (16 << 20, 15 << 20)])
def test_the_wasm_stack_follows_the_stack_limit(limit, size):
    from wasmbinfmt.runners.wasi import max_wasm_stack

    assert max_wasm_stack(limit) == size


def test_a_trap_exits_134_naming_module_reason_and_the_wasm_backtrace(tmp_path, cache_dir):
    import re

    path = module(tmp_path, "trap")
    done = run([path])
    assert done.returncode == 134
    lines = done.stderr.decode().splitlines()
    assert lines[:2] == [f"wasmbinfmt-wasi: {path}: trap: wasm `unreachable` instruction "
                         f"executed", "wasm backtrace:"]
    assert re.fullmatch(r" +0: +0x[0-9a-f]+ - inner", lines[2])  # the name section's name
    assert re.fullmatch(r" +1: +0x[0-9a-f]+ - <wasm function 1>", lines[3])
    assert len(lines) == 4


@pytest.mark.parametrize("name,message", [
    ("no-start", "not a WASI command or reactor (it exports neither _start nor _initialize)"),
    ("wali", "imports wali::SYS_write, which this WASI runner does not provide"),
])
def test_modules_it_cannot_run_exit_126_with_the_reason(tmp_path, cache_dir, name, message):
    done = run([module(tmp_path, name)])
    assert done.returncode == 126 and message in done.stderr.decode()
    assert len(done.stderr.decode().splitlines()) == 1


def test_a_reactor_is_initialised_and_left_as_under_the_wasmtime_cli(fixtures, cache_dir):
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    reactor = fixtures / "reactor.wasm"
    cli = subprocess.run([runnable_binary(), "run", str(reactor)], capture_output=True,
                         timeout=60)
    ours = run([reactor])
    assert (ours.returncode, ours.stdout) == (cli.returncode, cli.stdout) == (0,
                                                                              b"initialized\n")


def test_invalid_and_missing_files(tmp_path, cache_dir):
    (tmp_path / "bad.wasm").write_bytes(b"\0asm\1\0\0\0garbage")
    done = run([tmp_path / "bad.wasm"])
    assert done.returncode == 126 and b"not a valid WebAssembly module" in done.stderr
    assert b"(at offset 0x" in done.stderr  # where and why, on the one line
    assert len(done.stderr.splitlines()) == 1
    assert run([tmp_path / "missing.wasm"]).returncode == 127


def test_compiled_modules_are_cached_and_damaged_entries_rebuilt(fixtures, cache_dir):
    assert run([fixtures / "hello.wasm"]).returncode == 0
    entries = list((cache_dir / "modules").iterdir())
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600
    entries[0].write_bytes(b"damaged")
    done = run([fixtures / "hello.wasm"])
    assert done.returncode == 0 and done.stdout.startswith(b"hello")
    assert entries[0].stat().st_size > 1000  # rebuilt


def test_a_cache_carried_elsewhere_serves_and_another_wasmtimes_entry_does_not(
        fixtures, cache_dir, tmp_path, monkeypatch):
    """A cache copied to another directory (as a CI cache step restores one) is used: its
    entry is read, nothing compiled. An entry's name carries wasmtime's version; one made by
    another wasmtime (the CLI's, 49) under our name is refused by wasmtime and compiled
    again."""
    import hashlib
    import shutil

    from wasmbinfmt.runners import capi
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    assert run([fixtures / "hello.wasm"]).returncode == 0
    carried = tmp_path / "carried"
    shutil.copytree(cache_dir, carried)
    monkeypatch.setenv("WASMBINFMT_CACHE_DIR", str(carried))
    (entry,) = (carried / "modules").iterdir()
    assert f"-{capi.installed_version(capi.library_path())}-" in entry.name
    digest = hashlib.sha256(entry.read_bytes()).digest()
    os.utime(entry, (1e9, 1e9))
    assert run([fixtures / "hello.wasm"]).returncode == 0
    assert list((carried / "modules").iterdir()) == [entry]
    assert entry.stat().st_mtime > 1e9 and hashlib.sha256(entry.read_bytes()).digest() == digest
    cli = runnable_binary()
    subprocess.run([cli, "compile", "-o", entry, fixtures / "hello.wasm"], check=True)
    another = hashlib.sha256(entry.read_bytes()).digest()
    done = run([fixtures / "hello.wasm"])
    assert done.returncode == 0 and done.stdout.startswith(b"hello")
    assert another != digest
    assert hashlib.sha256(entry.read_bytes()).digest() == digest  # ours again: compiled


def test_a_hit_refreshes_the_entry_and_the_folder_stays_under_its_limit(fixtures, cache_dir,
                                                                         tmp_path):
    assert run([fixtures / "hello.wasm"]).returncode == 0
    (hello,) = (cache_dir / "modules").iterdir()
    os.utime(hello, (1e9, 1e9))
    assert run([fixtures / "hello.wasm"]).returncode == 0
    assert hello.stat().st_mtime > 1e9
    # With no room at all, the entry just added stays and the older one goes.
    env = {**os.environ, "WASMBINFMT_CACHE_MAX_MB": "0"}
    os.utime(hello, (1e9, 1e9))
    assert run([fixtures / "probe.wasm"], env=env).returncode == 0
    assert [p.name for p in (cache_dir / "modules").iterdir()] != [hello.name]
    assert len(list((cache_dir / "modules").iterdir())) == 1


def test_eight_concurrent_first_runs_all_succeed_and_leave_one_valid_entry(tmp_path, cache_dir,
                                                                          fixtures):
    module = tmp_path / "fresh.wasm"
    # Never cached: unique bytes (a custom section) on a real program.
    name = os.urandom(8).hex().encode()
    module.write_bytes(fixtures.joinpath("probe.wasm").read_bytes() +
                       b"\0" + bytes([len(name) + 1, len(name)]) + name)
    runs = [subprocess.Popen(RUNNER + [str(module), "spew", "1000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for _ in range(8)]
    results = [(p.communicate(timeout=120), p.returncode) for p in runs]
    expected = b"".join(b"%09d %s\n" % (i, (b"abcdefghijklmnopqrstuvwxyz" * 4)[:89])
                        for i in range(1000))
    assert all(code == 0 and out == expected and err == b"" for (out, err), code in results)
    entries = list((cache_dir / "modules").iterdir())
    assert len(entries) == 1 and not entries[0].name.endswith(".tmp")
    done = run([module, "spew", "1"])  # the entry is valid: it loads and runs
    assert done.returncode == 0 and done.stdout == expected[:100]


BIG_FUNCTIONS = 4000
BIG_ROUNDS = 72  # ~5 MiB of code in all: over wasi.WINCH_FIRST_RUN_CODE


def big_module(tmp_path: Path, exceptions: bool = False, spin: int = 0,
               functions_count: int = BIG_FUNCTIONS) -> tuple[Path, int]:
    """A module with much code (a chain of distinct functions, as a test binary has) that
    exits with what the chain computes; with `exceptions`, it also throws and catches (which
    Winch cannot compile); with `spin`, it first counts to that many (a run that takes
    time). The path and the exit status it must give."""
    path = tmp_path / ("big-exceptions.wasm" if exceptions else f"big{spin or ''}.wasm")
    data, status = _big_module(exceptions, spin, functions_count)
    path.write_bytes(data)
    return path, status


@functools.lru_cache(maxsize=None)
def _big_module(exceptions: bool, spin: int, functions_count: int) -> tuple[bytes, int]:
    functions, x = [], 1
    for i in range(functions_count):
        rounds = " ".join(f"i32.const {2 * i + 3 + r} i32.mul local.get 0 i32.const "
                          f"{i % 13 + 1} i32.shr_u i32.xor i32.const {i} i32.add local.set 0 "
                          f"local.get 0" for r in range(BIG_ROUNDS))
        functions.append(f"(func $f{i} (param i32) (result i32) local.get 0 {rounds})")
        for r in range(BIG_ROUNDS):
            x = ((x * (2 * i + 3 + r) & 0xFFFFFFFF) ^ (x >> (i % 13 + 1))) + i & 0xFFFFFFFF
    calls = " ".join(f"call $f{i}" for i in range(functions_count))
    thrown = """(block $caught (result i32)
          (try_table (catch $thrown $caught) (throw $thrown (i32.const 0))) (unreachable))
        drop""" if exceptions else ""
    text = f"""(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      {"(tag $thrown (param i32))" if exceptions else ""}
      {" ".join(functions)}
      (func (export "_start") (local $i i32) {thrown}
        (block $counted (loop $count
          local.get $i i32.const {spin} i32.ge_u br_if $counted
          local.get $i i32.const 1 i32.add local.set $i br $count))
        i32.const 1 {calls} i32.const 255 i32.and call $exit))"""
    return wasmtime.wat2wasm(text), x & 0xFF


def compiled_by(cache_dir: Path) -> list[str]:
    """The compilers of the cache's compiled entries, sorted."""
    return sorted(p.name.rsplit("-", 1)[1].split("+")[0]
                  for p in (cache_dir / "modules").iterdir() if p.name.endswith(".cwasm"))


def usage_record(cache_dir: Path) -> tuple[Path, tuple]:
    """The one usage record of the cache (runners/tiers.py): its path and (runs on Winch's
    code, their CPU seconds, Winch's compile's CPU seconds)."""
    import marshal

    (path,) = (cache_dir / "modules").glob("*.usage")
    return path, tuple(marshal.loads(path.read_bytes())[1])


def test_much_code_runs_on_winchs_code_until_cranelifts_pays(tmp_path, cache_dir):
    """A first run compiles with Winch; each run on Winch's code adds its CPU time to the
    module's usage record, and a run compiles Cranelift's code first once the time lost on
    Winch's reaches Cranelift's price (tiers.py): this module runs in milliseconds, so its
    record is made to say so; Winch's code and the record then go, and later runs load
    Cranelift's."""
    import marshal

    from wasmbinfmt.runners import tiers, wasi, wasm

    path, status = big_module(tmp_path)
    data = path.read_bytes()
    code = wasm.section(wasm.sections(data), wasm.CODE_SECTION)
    assert code.end - code.body >= wasi.WINCH_FIRST_RUN_CODE
    for runs in (1, 2):
        done = run([path])
        assert (done.returncode, done.stderr) == (status, b"")
        assert compiled_by(cache_dir) == ["winch"]
        record_path, record = usage_record(cache_dir)
        assert record[0] == runs and record[1] > 0 and record[2] > 0
        assert not tiers.compile_before_run(record, code.end - code.body)
    name = record_path.name[:-len(".usage")]
    lost = tiers.price(record, 0) / tiers.SAVED_SHARE
    record_path.write_bytes(marshal.dumps((name, (2, lost, record[2]))))
    assert run([path]).returncode == status
    assert compiled_by(cache_dir) == ["cranelift"]
    assert not list((cache_dir / "modules").glob("*.usage"))
    cranelift = next((cache_dir / "modules").iterdir())
    os.utime(cranelift, (1e9, 1e9))
    assert run([path]).returncode == status
    assert cranelift.stat().st_mtime > 1e9  # loaded from the cache: nothing compiled


def test_a_module_winch_cannot_compile_gets_cranelift_on_its_first_run(tmp_path, cache_dir):
    path, status = big_module(tmp_path, exceptions=True)
    done = run([path])
    assert (done.returncode, done.stderr) == (status, b"")
    assert compiled_by(cache_dir) == ["cranelift"]


def test_little_code_gets_cranelift_at_once_and_without_a_cache_too(fixtures, tmp_path,
                                                                    cache_dir):
    assert run([fixtures / "probe.wasm", "exit", "3"]).returncode == 3
    assert compiled_by(cache_dir) == ["cranelift"]
    path, status = big_module(tmp_path)
    assert run(["--no-cache", path]).returncode == status
    assert compiled_by(cache_dir) == ["cranelift"]  # nothing added


@pytest.mark.parametrize("choice,first,second", [
    ("cranelift", ["cranelift"], ["cranelift"]),
    ("winch", ["winch"], ["winch"]),
])
def test_the_compiler_option_holds_on_every_run(tmp_path, cache_dir, choice, first, second):
    path, status = big_module(tmp_path)
    assert run([f"--compiler={choice}", path]).returncode == status
    assert compiled_by(cache_dir) == first
    assert run([f"--compiler={choice}", path]).returncode == status
    assert compiled_by(cache_dir) == second


@pytest.mark.parametrize("choice,code,cranelift_due,expected", [
    ("auto", 0, False, ("cranelift",)),
    ("auto", (9 << 19) - 1, False, ("cranelift",)),
    ("auto", 9 << 19, False, ("winch", "cranelift")),
    ("auto", 50 << 20, False, ("winch", "cranelift")),
    ("auto", 50 << 20, True, ("cranelift",)),  # lost what Cranelift costs
    ("cranelift", 50 << 20, False, ("cranelift",)),
    ("winch", 0, False, ("winch", "cranelift")),
    ("winch", 50 << 20, True, ("winch", "cranelift")),
])
def test_which_compilers_a_module_gets(choice, code, cranelift_due, expected):
    from wasmbinfmt.runners.wasi import WINCH_FIRST_RUN_CODE, compilers_for

    assert WINCH_FIRST_RUN_CODE == 9 << 19
    assert compilers_for(choice, code, cranelift_due) == expected


@pytest.mark.parametrize("name", ["trap", "features"])
def test_winchs_code_traps_and_exits_as_cranelifts(tmp_path, cache_dir, name):
    path = module(tmp_path, name)
    runs = [run([f"--compiler={choice}", path]) for choice in ("cranelift", "winch")]
    assert [(r.returncode, r.stdout, r.stderr) for r in runs][0] == \
        [(r.returncode, r.stdout, r.stderr) for r in runs][1]
    assert runs[0].returncode == (134 if name == "trap" else 7)


def test_winchs_code_recurses_as_deep_as_natively(fixtures, cache_dir):
    done = run(["--compiler=winch", fixtures / "probe.wasm", "recurse", "100000"])
    assert done.stdout == b"depth 100000\n"


def test_usage_errors(cache_dir):
    done = run(["--bogus", "x.wasm"])
    assert done.returncode == 2 and b"unknown option '--bogus'" in done.stderr
    done = run(["--compiler=llvm", "x.wasm"])
    assert done.returncode == 2 and b"--compiler takes one of auto, cranelift, winch" in \
        done.stderr
    assert run([]).returncode == 2


def test_the_most_useful_preopens_are_kept_in_their_order():
    from wasmbinfmt.runners.wasi_cwd import most_useful

    mapped = [("/a/b", "."), ("/a", ".."), ("/", "../.."), ("/bin", "/bin"), ("/dev", "/dev"),
              ("/tmp", "/tmp"), ("/usr", "/usr")]
    assert most_useful(mapped, 3) == [("/a/b", "."), ("/a", ".."), ("/dev", "/dev")]
    assert most_useful(mapped, 2) == [("/a/b", "."), ("/dev", "/dev")]
    assert most_useful(mapped, 0) == []
    assert most_useful(mapped, 99) == mapped


def test_a_directory_without_a_usable_path_is_mapped_by_descriptor(tmp_path, monkeypatch):
    from wasmbinfmt.runners.wasi_cwd import preopens_by_descriptor

    (tmp_path / "a" / "tmp").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    mapped, held = preopens_by_descriptor(listdir=lambda _: ["tmp", "usr"],
                                          isdir=lambda _: True)
    try:
        depth = len(tmp_path.parts)  # "a" and every ancestor up to "/", at most 9
        guests = [guest for _, guest in mapped]
        assert guests[0] == "." and guests[1] == ".."
        assert guests[-1] == "/usr" and "/tmp" not in guests  # shadowed by ./tmp
        assert len(held) == min(depth + 1, 9) == len(guests) - 1
        assert os.path.samefile(mapped[0][0], tmp_path / "a")
        assert os.path.samefile(mapped[1][0], tmp_path)
    finally:
        for fd in held:
            os.close(fd)


def test_the_runners_bytecode_is_written_where_missing_or_stale(tmp_path):
    from wasmbinfmt.runners.bytecode import compile_stale, stale_sources

    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")
    assert sorted(stale_sources(str(tmp_path))) == [str(tmp_path / "a.py"),
                                                    str(tmp_path / "sub" / "b.py")]
    compile_stale(str(tmp_path))
    assert stale_sources(str(tmp_path)) == []
    os.utime(tmp_path / "a.py", (2e9, 2e9))  # changed since
    assert stale_sources(str(tmp_path)) == [str(tmp_path / "a.py")]


def test_verbose_says_once_when_the_cwd_cannot_be_told(tmp_path, cache_dir):
    from test_wasm import OTHER_DATA, OTHER_WRITTEN, STORE
    from test_wasm import module as libc_like

    path = tmp_path / "ambiguous.wasm"
    path.write_bytes(libc_like(STORE + OTHER_WRITTEN, OTHER_DATA))
    first = run(["--verbose", path], cwd=tmp_path)
    assert first.returncode == 0
    assert first.stderr.decode().splitlines() == [
        f"wasmbinfmt-wasi: {path}: 2 words could be wasi-libc's current directory (0x800, "
        f"0xbb8); none is seeded, so getcwd() gives / and relative paths resolve from the "
        f"root of the mapping"]
    again = run(["--verbose", path], cwd=tmp_path)
    assert (again.returncode, again.stderr) == (0, b"")  # the answer came from the cache
    assert run([path], cwd=tmp_path / "..").stderr == b""
