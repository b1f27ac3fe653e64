"""wasmbinfmt-wasi: run a WASI command module like a native program (work in progress).

    wasmbinfmt-wasi [--preserve-argv0] [--dir HOST[::GUEST]]... [--no-cache] [--] MODULE [ARGS...]

The program's argv is ``MODULE ARGS...``; with ``--preserve-argv0`` (what a
rule with the P flag passes) it is ``ARGS...``: the kernel puts the caller's
argv[0] right after the module's path. Everything after MODULE belongs to the
program, options included. The environment and stdin/stdout/stderr are
inherited. Unless ``--dir`` names what to map, absolute paths see the host's
``/`` and relative ones the current directory, as far as the module's libc
allows: see wasi_cwd.py.

Exit status: the program's ``proc_exit`` code; 134 after a trap (as the
wasmtime CLI), with one line naming the module and the trap; 126 for a file
that is not a runnable WASI command (invalid, no ``_start``, or importing
what this runner does not provide, such as ``wali``); 127 for a module
that does not exist.

Compiled modules are cached (see wasmbinfmt/cache.py for where), keyed by
the module's content, wasmtime's version and the engine settings.
"""

from __future__ import annotations

import hashlib
import os
import sys

from .. import stdio
from . import wasi_cwd

EXIT_TRAP = 134  # what the wasmtime CLI exits with after a trap
EXIT_CANNOT_RUN = 126
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
USAGE = "usage: wasmbinfmt-wasi [--preserve-argv0] [--dir HOST[::GUEST]]... [--no-cache] [--] " \
        "MODULE [ARGS...]"


class Options:
    def __init__(self) -> None:
        self.preserve_argv0 = False
        self.dirs: list[tuple[str, str]] = []
        self.cache = True
        self.module = ""
        self.argv: list[str] = []


def parse_args(args: list[str]) -> Options:
    """Options up to the module's path; everything after it is the program's."""
    options = Options()
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg == "--preserve-argv0":
            options.preserve_argv0 = True
        elif arg == "--no-cache":
            options.cache = False
        elif arg == "--dir" or arg.startswith("--dir="):
            if arg == "--dir":
                if i == len(args):
                    raise ValueError("--dir needs HOST[::GUEST]")
                arg, i = args[i], i + 1
            else:
                arg = arg[len("--dir="):]
            host, _, guest = arg.partition("::")
            options.dirs.append((host, guest or host))
        else:
            raise ValueError(f"unknown option {arg!r}\n{USAGE}")
    if i == len(args):
        raise ValueError(f"no MODULE given\n{USAGE}")
    options.module = args[i]
    rest = args[i + 1:]
    options.argv = rest if options.preserve_argv0 else [options.module, *rest]
    if not options.argv:
        options.argv = [""]  # an empty argv, as Linux gives a program argv[0] = ""
    return options


def _fail(module: str, message: str, status: int) -> int:
    _complain(f"{module}: {message}")
    return status


def _complain(message: str) -> None:
    if sys.stderr is not None:  # None: started with fd 2 closed (print would pick stdout)
        print(f"wasmbinfmt-wasi: {message}", file=sys.stderr)


def load_module(engine, wasm: bytes, use_cache: bool):
    """Compile `wasm`, or load it compiled from the cache."""
    from wasmtime import Module

    if not use_cache:
        return Module(engine, wasm)
    from .. import cache

    directory = cache.cache_dir()
    if directory is None:
        return Module(engine, wasm)
    digest = hashlib.sha256(wasm).hexdigest()
    modules = os.path.join(directory, "modules")
    entry = os.path.join(modules, f"{digest}-{_wasmtime_build()}-{ENGINE_SETTINGS}.cwasm")
    if cache.is_ours(entry):
        try:
            module = Module.deserialize_file(engine, entry)
        except Exception:  # noqa: BLE001 - a damaged entry is rebuilt
            pass
        else:
            cache.touch(entry)
            return module
    module = Module(engine, wasm)
    cache.store_bytes(entry, module.serialize())
    cache.trim(modules, cache.size_limit(), keep=entry)
    return module


def _wasmtime_build() -> str:
    """Which wasmtime compiled an entry: its library's size and mtime (importlib.metadata's
    version lookup costs ~60 ms a start; wasmtime also refuses entries of another build)."""
    from wasmtime import _ffi

    st = os.stat(_ffi.dll._name)
    return f"{st.st_size:x}{st.st_mtime_ns:x}"


# Post-MVP features real toolchains emit (setjmp/longjmp through exception handling,
# SIMD, tail calls, ...): on, so that no module needs flags. Part of the cache key.
ENGINE_SETTINGS = "exceptions+tailcall+simd+v1"


def make_engine():
    from wasmtime import Config, Engine

    config = Config()
    config.wasm_exceptions = True
    config.wasm_tail_call = True
    config.wasm_simd = True
    config.wasm_bulk_memory = True
    config.wasm_multi_value = True
    config.wasm_reference_types = True
    return Engine(config)


def run(options: Options) -> int:
    closed = stdio.hold_closed()
    try:
        with open(options.module, "rb") as f:
            wasm = f.read()
    except OSError as e:
        return _fail(options.module, e.strerror, EXIT_CANNOT_RUN if e.errno != 2 else 127)
    from wasmtime import FuncType, Linker, Store, Trap, ValType, WasiConfig, WasmtimeError

    cwd = None if options.dirs else _current_directory()
    libc_cwd = None
    if cwd is not None:
        wasm, libc_cwd = wasi_cwd.prepare(wasm)
    engine = make_engine()
    try:
        module = load_module(engine, wasm, options.cache)
    except WasmtimeError as e:
        return _fail(options.module, f"not a valid WebAssembly module: {_first_line(e)}",
                     EXIT_CANNOT_RUN)
    for imported in module.imports:
        if imported.module not in WASI_MODULES:
            return _fail(options.module, f"imports {imported.module}::{imported.name}, which "
                         f"this WASI runner does not provide (route such modules to another "
                         f"emulator)", EXIT_CANNOT_RUN)
    if not any(export.name == "_start" for export in module.exports):
        return _fail(options.module, "not a WASI command (it exports no _start)",
                     EXIT_CANNOT_RUN)
    wasi = WasiConfig()
    wasi.argv = options.argv
    wasi.inherit_env()
    # A stream closed for us stays closed for the program (reads and writes fail).
    for fd, inherit in ((0, wasi.inherit_stdin), (1, wasi.inherit_stdout),
                        (2, wasi.inherit_stderr)):
        if fd not in closed:
            inherit()
    for host, guest in options.dirs or wasi_cwd.preopens(cwd or "/", libc_cwd):
        try:
            wasi.preopen_dir(host, guest)
        except WasmtimeError:
            if options.dirs:  # asked for by name; the default layout skips what it cannot open
                return _fail(options.module, f"cannot map directory {host}", EXIT_CANNOT_RUN)
    store = Store(engine)
    store.set_wasi(wasi)
    linker = Linker(engine)
    linker.define_wasi()
    # wasmtime refuses proc_exit(N) for N >= 126 (an error, exit 1); a native exit(N)
    # gives the caller N & 0xff, so exits are taken over.
    linker.allow_shadowing = True
    for name in WASI_MODULES:
        linker.define_func(name, "proc_exit", FuncType([ValType.i32()], []), _proc_exit)
    try:
        exports = linker.instantiate(store, module).exports(store)
        if libc_cwd is not None:
            wasi_cwd.seed(store, exports, libc_cwd, cwd)
        exports["_start"](store)
    except _ProcExit as e:
        return e.status
    except Trap as e:
        return _fail(options.module, f"trap: {_first_line(e)}", EXIT_TRAP)
    except WasmtimeError as e:
        return _fail(options.module, _first_line(e), EXIT_CANNOT_RUN)
    return 0


class _ProcExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _proc_exit(code: int) -> None:
    raise _ProcExit(code & 0xFF)  # wasmtime unwinds the guest and raises this from _start


def _current_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed, or unreadable above: leave paths to the root
        return None


def _first_line(error: Exception) -> str:
    """The line of a wasmtime error that says what happened (not the backtrace)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "wasm trap:" in line:
            return line[line.index("wasm trap:") + len("wasm trap:"):].strip()
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        _complain(str(e))
        return 2
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
