"""A per-user cache of what is slow to rebuild and cheap to check: parsed rules files
(marshal entries, here) and compiled wasm modules (files of the WASI runner's).

Entries live in ``$WASMBINFMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/wasmbinfmt``,
else ``~/.cache/wasmbinfmt``; ``WASMBINFMT_CACHE=off`` turns the cache off.
An entry is ``(key, value)`` in marshal's format (plain data only, and the
cheapest to load): it is used only when its key equals the one asked for (the
caller puts everything the value depends on in the key), and only when it
belongs to us and nobody else may write it. Anything unreadable or stale is
rebuilt and replaced; writes go to a temporary name first, so a concurrent
reader never sees half an entry. Where that directory cannot be written (no home, a
read-only one), ``$TMPDIR/wasmbinfmt-cache-UID`` is used (a 0700 directory of ours, or
nothing): a start without a cache costs ~20 ms more.

Compiled modules are large: their folder is kept under a size limit by removing the
least recently used entries (a hit refreshes an entry's mtime) whenever one is added,
never one the current run has used (a suite larger than the limit would otherwise evict
its own modules and compile them again at every run). The limit is
``$WASMBINFMT_CACHE_MAX_MB``, else a quarter of what the cache's file system has free
(counting what the folder holds), at most 16 GiB: a test suite's compiled modules take
hundreds of MB to GBs (24 Go test binaries: ~0.7 GB), ccache's default is 5 GB and
sccache's 10 GB, and a nearly full disk gets a small cache rather than a full disk.
"""

from __future__ import annotations

import marshal
import os
import stat
import time
import zlib

from .abcs import Mapping
from .userdirs import user_dir


def cache_dir(env: Mapping[str, str] = os.environ) -> str | None:
    """The cache directory, or None when caching is off."""
    if env.get("WASMBINFMT_CACHE", "").lower() in ("off", "0", "no"):
        return None
    if env.get("WASMBINFMT_CACHE_DIR", "").startswith("/"):
        return env["WASMBINFMT_CACHE_DIR"]  # a relative one is ignored, as XDG's are
    base = user_dir(env, "XDG_CACHE_HOME", ".cache")
    return None if base is None else os.path.join(base, "wasmbinfmt")


def usable_dir(env: Mapping[str, str] = os.environ) -> str | None:
    """cache_dir() where we may write it; else (HOME unset, unwritable or relative) a private
    directory of ours in the temporary directory; None when caching is off or neither works."""
    if env.get("WASMBINFMT_CACHE", "").lower() in ("off", "0", "no"):
        return None
    wanted = cache_dir(env)
    # The home (or the directory above XDG_CACHE_HOME) must exist: a missing HOME such as
    # /nonexistent is not made, even where we could.
    if wanted is not None and os.path.isdir(os.path.dirname(os.path.dirname(wanted))):
        existing = wanted
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if os.access(existing, os.W_OK):
            return wanted
    return private_temporary_dir(env)


def private_temporary_dir(env: Mapping[str, str] = os.environ) -> str | None:
    """$TMPDIR/wasmbinfmt-cache-UID (or /tmp's), made 0700; None unless it is a directory of
    ours that no one else may enter (another user could have made it first)."""
    base = env.get("TMPDIR", "")
    path = os.path.join(base if base.startswith("/") else "/tmp",
                        f"wasmbinfmt-cache-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return path
    return None


def entry_path(directory: str, kind: str, name: str) -> str:
    """Where the entry for `name` (a file path, say) goes; keys tell colliding names apart."""
    return os.path.join(directory, kind, "%08x.marshal" % zlib.crc32(os.fsencode(name)))


def file_identity(st: os.stat_result) -> tuple:
    """What tells a file's versions apart without reading it: a rewrite changes its ctime
    at least, a replacement its inode."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def is_ours(path: str) -> bool:
    """Whether `path` is a regular file (not a symlink) of ours that nobody else may write."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def load(path: str, key: object) -> object | None:
    """The value stored at `path` under `key`, or None."""
    if not is_ours(path):
        return None
    try:
        with open(path, "rb") as f:
            stored_key, value = marshal.load(f)
    except Exception:  # noqa: BLE001 - a damaged entry is only a miss
        return None
    return value if stored_key == key else None


def store(path: str, key: object, value: object) -> None:
    """Store `value` (plain data: tuples, lists, str, bytes, ...) under `key` at `path`."""
    try:
        data = marshal.dumps((key, value))
    except ValueError:
        return
    store_bytes(path, data)


def store_bytes(path: str, data: bytes) -> None:
    """Write `data` at `path` atomically; silently skipped when impossible, or when the
    process may not write a file that large (RLIMIT_FSIZE: the program's limit, which
    would end the runner with SIGXFSZ)."""
    import resource  # a C module, nothing to pay for

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if 0 <= limit < len(data):
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


LARGEST_DEFAULT_LIMIT = 16 << 30
DEFAULT_SHARE_OF_DISK = 4  # the default limit: 1/4 of the free space and the folder's own
STALE_TEMPORARY = 3600  # seconds: a temporary file this old lost its writer


def size_limit(directory: str, held: int = 0, env: Mapping[str, str] = os.environ) -> int:
    """Bytes the folder of large entries `directory` may hold, which holds `held` now."""
    try:
        return max(0, int(env["WASMBINFMT_CACHE_MAX_MB"])) << 20
    except (KeyError, ValueError):
        pass
    try:
        disk = os.statvfs(directory)
    except OSError:
        return 0
    return min(LARGEST_DEFAULT_LIMIT, (disk.f_bavail * disk.f_frsize + held) //
               DEFAULT_SHARE_OF_DISK)


def touch(path: str) -> None:
    """Mark an entry as just used (its mtime orders eviction)."""
    try:
        os.utime(path)
    except OSError:
        pass


def trim(directory: str, keep_since: float, limit: int | None = None,
         env: Mapping[str, str] = os.environ) -> None:
    """Remove the least recently used files of `directory` until what is left fits in
    `limit` bytes (None: size_limit()), never one used since `keep_since` (the run's start,
    on the epoch's clock); temporary files whose writer is gone go first. Entries another
    process is removing, or reading (an open or mapped file outlives its name), are no
    concern."""
    now = time.time()
    entries = []
    try:
        with os.scandir(directory) as listing:
            for entry in listing:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.endswith(".tmp"):
                    if now - st.st_mtime > STALE_TEMPORARY:
                        _remove(entry.path)
                    continue
                entries.append((st.st_mtime, st.st_size, entry.path))
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    if limit is None:
        limit = size_limit(directory, total, env)
    for used, size, path in sorted(entries):
        if total <= limit or used >= keep_since:
            break
        _remove(path)
        total -= size


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
