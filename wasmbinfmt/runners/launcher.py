"""Running a module in the exec'd process itself, once its Cranelift code is cached.

The warm runner (warm.py) serves a module exec from a host that forks a worker:
quick, but the worker is not the caller's exec, so its CPU time and memory never
reach the caller's parent (``time``, ``wait4``, a test driver's timing), and every
attribute execve keeps must be carried over by hand. ``wasmbinfmt-launch``
(launcher.c) is a small native program on wasmtime's C API, the library the
wasmtime package ships: the tracer rewrites the exec to it, so it *is* the
caller's exec, and it maps the module's compiled code from the cache and runs it
(docs/performance.md has the numbers: cheaper per exec than the warm runner).

It serves only what is simple to serve exactly: a module whose Cranelift code the
WASI runner has cached (a *ticket*, below, says where, by the file's identity),
under the default layout of directories, for a caller of our user in our root.
Anything else it meets (a cache elsewhere for this caller's environment, a
string that is not UTF-8, no current directory, a tight descriptor limit, a
reactor, an entry wasmtime refuses) it hands to the WASI runner by exec'ing it
with the same argv, before any of the module's code has run. Compiling the
module, Winch's code and the tiers stay the runner's (warm or cold).

Tickets: ``CACHE/launch/DEV-INO-SIZE-MTIME-CTIME`` holds the entry's name in
``modules/`` and where the module's libc keeps its current directory. The
identity is the module file's as the runner read it (unchanged while it was
read); a file rewritten since has another (its ctime at least).

The launcher is compiled from launcher.c with the machine's C compiler at the
first exec that can use it, into ``CACHE/launch/bin/`` (named by what it is
built from); without a compiler, every module exec goes as before.
"""

from __future__ import annotations

import os

from ..util import cache

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.c")
TICKETS = "launch"
TICKETS_MAX_BYTES = 1 << 20  # ~8,000 tickets; the least recently written go first
# What the cache's place depends on (util/cache.py): the launcher compares the caller's
# with the tracer's and hands anything else to the runner.
CACHE_ENVIRONMENT = ("WASMBINFMT_CACHE", "WASMBINFMT_CACHE_DIR", "XDG_CACHE_HOME", "HOME",
                     "TMPDIR")
# The runner's options the launcher knows (what the default rule, -v and the tracer pass).
KNOWN_OPTIONS = (b"--preserve-argv0", b"--verbose")
KNOWN_PREFIXES = (b"--ignored-signals=", b"--exec-log=")


def identity(st: os.stat_result) -> str:
    """A ticket's name: the module file's identity (cache.file_identity), in hex."""
    return "-".join(f"{n:x}" for n in cache.file_identity(st))


def write_ticket(directory: str, module: os.stat_result, entry: str, libc_cwd) -> None:
    """Say that the module file `module` (its stat, unchanged while it was read) runs from
    cache entry `entry` with `libc_cwd` (wasi_cwd.LibcCwd or None)."""
    tickets = os.path.join(directory, TICKETS)
    path = os.path.join(tickets, identity(module))
    spec = "-" if libc_cwd is None else \
        f"{'R' if libc_cwd.resolves_paths else 'G'}:{libc_cwd.address}"
    data = f"{os.path.basename(entry)}\n{spec}\n".encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data and cache.is_ours(path):
                return
    except OSError:
        pass
    cache.store_bytes(path, data)
    cache.trim(tickets, keep_since=0, limit=TICKETS_MAX_BYTES)


def read_ticket(directory: str, module: os.stat_result) -> tuple[str, str] | None:
    """(the cache entry, the libc cwd spec) for the module file `module`, if its entry is
    there and ours."""
    path = os.path.join(directory, TICKETS, identity(module))
    if not cache.is_ours(path):
        return None
    try:
        with open(path, "rb") as f:
            name, spec = f.read().decode().split("\n")[:2]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    entry = os.path.join(directory, "modules", name)
    if "/" in name or not name.endswith(".cwasm") or not cache.is_ours(entry):
        return None
    return entry, spec


def launcher_path(directory: str, library: str) -> str:
    """Where the launcher built from this source against this wasmtime library goes."""
    from _blake2 import blake2b  # hashlib would load OpenSSL first (~2 ms, every run)

    with open(SOURCE, "rb") as f:
        digest = blake2b(f.read(), digest_size=8)
    st = os.stat(library)
    digest.update(f"{library}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return os.path.join(directory, TICKETS, "bin", f"wasmbinfmt-launch-{digest.hexdigest()}")


def build(directory: str) -> str | None:
    """The launcher, compiled if it is not there yet; None where it cannot be (no C
    compiler, no wasmtime library, an unwritable cache, a mount that cannot exec)."""
    from . import capi

    try:
        library = capi.library_path()
        path = launcher_path(directory, library)
    except (OSError, capi.WasmtimeError):
        return None
    if cache.is_ours(path) and os.access(path, os.X_OK):
        return path
    import subprocess  # only to build it: ~6 ms of imports at every run's first module exec

    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        subprocess.run([compiler, "-O2", "-o", temporary, SOURCE, library,
                        f"-Wl,-rpath,{os.path.dirname(library)}"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=120)
        # It must start here: a noexec mount, or a library it cannot load, says no.
        run = subprocess.run([temporary], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, timeout=30)
        if run.returncode != 2 or b"not by hand" not in run.stderr:
            raise OSError("the launcher does not start")
        os.rename(temporary, path)
    except (OSError, subprocess.SubprocessError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return None
    return path


def environment_checks(env=os.environ) -> list[bytes]:
    """The launcher's CHECK words: the cache environment as `env` has it."""
    return [os.fsencode(f"{name}={env[name]}" if name in env else name)
            for name in CACHE_ENVIRONMENT]


def launcher_argv(launcher: str, ticket: tuple[str, str], checks: list[bytes],
                  runner: list[bytes], starts: int) -> list[bytes]:
    """The launcher's argv up to the caller's: `runner`, the WASI runner's words up to the
    module's arguments, of which the first `starts` start it."""
    entry, spec = ticket
    return [os.fsencode(launcher), os.fsencode(entry), spec.encode(),
            b"%d" % len(checks), *checks, b"%d" % starts, b"%d" % len(runner), *runner]


def module_of(runner_options: list[bytes]) -> bytes | None:
    """The module's path among the runner's options and module (what follows its start),
    when the launcher knows every option; else None."""
    for i, word in enumerate(runner_options):
        if word == b"--":
            return runner_options[i + 1] if i + 1 < len(runner_options) else None
        if word not in KNOWN_OPTIONS and not word.startswith(KNOWN_PREFIXES):
            return None
    return None
