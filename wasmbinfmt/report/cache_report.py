"""`wasmbinfmt cache`: where the per-user cache is, what it holds, and `clear`.

The cache (util/cache.py) holds compiled modules (modules/: NAME.cwasm, the code one
compiler made of one module's content for one wasmtime build, and NAME.usage, the runs a
module made on Winch's code), parsed rules files (rules/), what a module's libc does with
its current directory (cwd/), and a private copy of the wasmtime CLI where the wheel's
is not ours to make executable (bin/).
"""

from __future__ import annotations

import os
import shutil
import time

from ..util import cache

# What each folder holds, as `wasmbinfmt cache` says it.
FOLDERS = {"modules": "compiled modules", "rules": "parsed rules files",
           "cwd": "modules' current-directory analyses", "bin": "the wasmtime CLI's copy",
           "launch": "module files the launcher can run (its tickets)"}


def _files(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as listing:
            return [entry for entry in listing if entry.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):9.1f} MB"


def module_entries(directory: str) -> list[tuple[str, str, str, int, float]]:
    """(module digest, compiler, wasmtime build, size, last used) per compiled module,
    the most recently used first."""
    rows = []
    for entry in _files(os.path.join(directory, "modules")):
        if not entry.name.endswith(".cwasm"):
            continue
        # NAME-BUILD-COMPILER+FEATURES.cwasm, NAME being a digest (and -seeded), BUILD the
        # wasmtime version and its library's size: wasi.entry_path.
        stem, st = entry.name[:-len(".cwasm")], entry.stat(follow_symlinks=False)
        name, _, settings = stem.rpartition("-")
        digest, _, build = name.rpartition("-")
        digest, _, version = digest.rpartition("-")
        rows.append((digest, settings.split("+")[0], f"{version}-{build}", st.st_size,
                     st.st_mtime))
    return sorted(rows, key=lambda row: -row[4])


def report(directory: str | None, listing: bool, env=os.environ) -> list[str]:
    if directory is None:
        return ["the cache is off (WASMBINFMT_CACHE=off)"]
    lines = [f"{directory}"]
    total = 0
    modules = module_entries(directory)
    for folder, what in FOLDERS.items():
        files = _files(os.path.join(directory, folder))
        size = sum(entry.stat(follow_symlinks=False).st_size for entry in files)
        total += size
        detail = f"{len(files)} files"
        if folder == "modules":
            compilers: dict[str, int] = {}
            for _, compiler, _, _, _ in modules:
                compilers[compiler] = compilers.get(compiler, 0) + 1
            limit = cache.size_limit(os.path.join(directory, folder), size, env)
            detail = (f"{len(modules)} compiled ("
                      + ", ".join(f"{n} by {c}" for c, n in sorted(compilers.items()))
                      + f"), limit {limit >> 20} MB")
        lines.append(f"  {folder + '/':9}{_megabytes(size)}  {what}: {detail}")
    lines.append(f"  {'total':9}{_megabytes(total)}")
    if listing:
        now = time.time()
        lines.append("compiled modules, most recently used first:")
        for digest, compiler, build, size, used in modules:
            lines.append(f"  {digest[:16]}  {compiler:9} wasmtime {build:18} "
                         f"{_megabytes(size)}  used {_ago(now - used)}")
    return lines


def _ago(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{int(seconds // length)} {unit} ago"
    return "just now"


def clear(directory: str | None) -> str:
    """Remove the whole cache; what was removed, said."""
    if directory is None or not os.path.isdir(directory):
        return "nothing to clear"
    size = sum(entry.stat(follow_symlinks=False).st_size
               for folder in os.listdir(directory)
               for entry in _files(os.path.join(directory, folder)))
    shutil.rmtree(directory)
    return f"removed {directory} ({size / (1 << 20):.1f} MB)"
