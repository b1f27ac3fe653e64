"""The built-in runner's bytecode, written by the tracer rather than by the runner.

The runner starts with -B: it runs inside the program's limits, and a
bytecode file written there can be cut short (``ulimit -f``: CPython renames
a short write into place, and every later start fails on the truncated
file). So the tracer, under the caller's own limits, compiles what is
missing or older than its source before the first exec it sends to the
runner, once per change; the runner only reads. Where Python writes no
bytecode at all (PYTHONDONTWRITEBYTECODE, which container images often set),
the tracer also compiles it once its tree has gone, or every start of
``wasmbinfmt`` would compile each of its modules (~20 ms).
"""

from __future__ import annotations

import os
import sys

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stale_sources(package: str = PACKAGE) -> list[str]:
    # importlib.util.cache_from_source's naming, without its import (~3 ms)
    tag = sys.implementation.cache_tag
    stale = []
    for directory, _, names in os.walk(package):
        for name in names:
            if not name.endswith(".py"):
                continue
            source = os.path.join(directory, name)
            compiled = os.path.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            try:
                if os.stat(compiled).st_mtime >= os.stat(source).st_mtime:
                    continue
            except OSError:
                pass
            stale.append(source)
    return stale


def compile_stale(package: str = PACKAGE) -> None:
    """Compile the package's modules whose bytecode is missing or stale (where writable)."""
    stale = stale_sources(package)
    if not stale:
        return
    import py_compile

    for source in stale:
        try:
            py_compile.compile(source, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # read-only, or not ours to fix: the runner compiles it in memory
