"""The per-user cache, and parsed rules.yaml files kept in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from wasmbinfmt.util import cache
from wasmbinfmt.rules import loaders


def test_cache_dir_follows_the_environment():
    assert cache.cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/wasmbinfmt"
    assert cache.cache_dir({"HOME": "/home/u", "XDG_CACHE_HOME": "/x"}) == "/x/wasmbinfmt"
    assert cache.cache_dir({"XDG_CACHE_HOME": "/x", "WASMBINFMT_CACHE_DIR": "/c"}) == "/c"
    assert cache.cache_dir({"WASMBINFMT_CACHE_DIR": "/c", "WASMBINFMT_CACHE": "off"}) is None
    assert cache.cache_dir({"HOME": "relative"}) is None
    # A relative XDG_CACHE_HOME is invalid (XDG spec): never a cache in the current directory.
    assert cache.cache_dir({"HOME": "/home/u", "XDG_CACHE_HOME": "x"}) == "/home/u/.cache/wasmbinfmt"
    assert cache.cache_dir({"HOME": ".", "XDG_CACHE_HOME": "."}) is None


def test_an_entry_is_used_only_under_its_own_key(tmp_path):
    entry = cache.entry_path(str(tmp_path), "rules", "/etc/rules.yaml")
    cache.store(entry, ("k", 1), ["value"])
    assert cache.load(entry, ("k", 1)) == ["value"]
    assert cache.load(entry, ("k", 2)) is None
    assert os.stat(entry).st_mode & 0o777 == 0o600
    assert os.listdir(os.path.dirname(entry)) == [os.path.basename(entry)]  # no temporaries


@pytest.mark.parametrize("damage", ["truncated", "garbage", "group-writable", "symlink"])
def test_damaged_or_foreign_entries_are_misses(tmp_path, damage):
    entry = cache.entry_path(str(tmp_path), "rules", "/r.yaml")
    cache.store(entry, "key", "value")
    if damage == "truncated":
        data = open(entry, "rb").read()
        open(entry, "wb").write(data[:len(data) // 2])
    elif damage == "garbage":
        open(entry, "wb").write(b"\xffnot marshal data")
    elif damage == "group-writable":
        os.chmod(entry, 0o620)  # anyone in the group could plant rules of their own
    else:
        os.rename(entry, entry + ".real")
        os.symlink(entry + ".real", entry)
    assert cache.load(entry, "key") is None


def test_unwritable_cache_costs_nothing_but_speed(tmp_path):
    (tmp_path / "file").write_text("")
    entry = cache.entry_path(str(tmp_path / "file"), "rules", "/r.yaml")  # under a file
    cache.store(entry, "key", "value")
    assert cache.load(entry, "key") is None


RULES = """rules:
  - name: demo
    magic: 'DEMO'
    interpreter: /bin/echo
"""


@pytest.fixture
def counted_parses(monkeypatch, tmp_path):
    monkeypatch.setenv("WASMBINFMT_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = loaders._parse_yaml
    monkeypatch.setattr(loaders, "_parse_yaml", lambda text, path: calls.append(path)
                        or real(text, path))
    return calls


def test_a_rules_file_is_parsed_once_until_it_changes(tmp_path, counted_parses):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    first = loaders.load_file(str(path))
    second = loaders.load_file(str(path))
    assert first == second and [r.name for r in first[1]] == ["demo"]
    for parsed, cached in zip(first[1], second[1]):  # even what equality leaves out
        assert tuple(parsed) == tuple(cached) and type(cached.origin).__name__ == "Origin"
    assert len(counted_parses) == 1
    path.write_text(RULES.replace("demo", "other"))
    assert [r.name for r in loaders.load_file(str(path))[1]] == ["other"]
    assert len(counted_parses) == 2


def test_files_with_errors_are_parsed_every_time(tmp_path, counted_parses):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("magic", "magik"))
    for _ in range(2):
        _, rules, errors = loaders.load_file(str(path))
        assert errors and "magik" in str(errors[0]) and ":3:" in str(errors[0])
    assert len(counted_parses) == 2


def test_cache_off_parses_every_time(tmp_path, counted_parses, monkeypatch):
    monkeypatch.setenv("WASMBINFMT_CACHE", "off")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    loaders.load_file(str(path))
    loaders.load_file(str(path))
    assert len(counted_parses) == 2
    assert not (tmp_path / "cache").exists()


def test_a_cached_start_does_not_import_yaml(tmp_path):
    """What the cache is for: PyYAML's import is most of a start's cost."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    code = ("import sys; from wasmbinfmt.rules.loaders import load_file; "
            f"load_file({str(path)!r}); print('yaml' in sys.modules)")
    env = {**os.environ, "WASMBINFMT_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert runs == ["True", "False"]


def test_trim_removes_the_least_recently_used_first_and_never_what_the_run_used(tmp_path):
    for age, name in enumerate(["newest", "middle", "oldest"]):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (1e9 - age * 100, 1e9 - age * 100))
    cache.trim(str(tmp_path), keep_since=2e9, limit=2000)
    assert sorted(os.listdir(tmp_path)) == ["middle", "newest"]
    # The run started between the two: what it used stays, even over the limit.
    cache.trim(str(tmp_path), keep_since=1e9 - 50, limit=0)
    assert os.listdir(tmp_path) == ["newest"]


def test_trim_clears_temporaries_whose_writer_is_gone(tmp_path):
    (tmp_path / "a.cwasm.123.tmp").write_bytes(b"old")
    os.utime(tmp_path / "a.cwasm.123.tmp", (1e9, 1e9))
    (tmp_path / "b.cwasm.456.tmp").write_bytes(b"being written")
    cache.trim(str(tmp_path), keep_since=time.time(), limit=1 << 20)
    assert os.listdir(tmp_path) == ["b.cwasm.456.tmp"]
    cache.trim(str(tmp_path / "missing"), keep_since=0, limit=0)  # nothing to do, no error


class Disk:
    def __init__(self, free: int) -> None:
        self.f_bavail, self.f_frsize = free, 1


@pytest.mark.parametrize("free,held,limit", [
    (100 << 30, 0, 16 << 30),  # at most 16 GiB
    (8 << 30, 2 << 30, (10 << 30) // 4),  # a quarter of the free space and the folder's own
    (287 << 20, 0, (287 << 20) // 4),  # a nearly full disk: a small cache, not a full disk
])
def test_the_default_size_limit_follows_the_free_disk(monkeypatch, free, held, limit):
    monkeypatch.setattr(cache.os, "statvfs", lambda path: Disk(free))
    assert cache.size_limit("/somewhere", held, {}) == limit
    assert cache.size_limit("/somewhere", held, {"WASMBINFMT_CACHE_MAX_MB": "3"}) == 3 << 20
    assert cache.size_limit("/somewhere", held, {"WASMBINFMT_CACHE_MAX_MB": "lots"}) == limit


def test_trim_uses_the_default_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.os, "statvfs", lambda path: Disk(4000))  # a quarter: 1,000
    for age, name in enumerate(["newest", "middle", "oldest"]):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (1e9 - age * 100, 1e9 - age * 100))
    cache.trim(str(tmp_path), keep_since=2e9, env={})  # (4,000 free + 3,000 held) / 4
    assert os.listdir(tmp_path) == ["newest"]


def test_without_a_writable_home_the_cache_is_private_and_temporary(tmp_path):
    os.chmod(tmp_path, 0o755)
    env = {"HOME": "/nonexistent", "TMPDIR": str(tmp_path)}
    private = str(tmp_path / f"wasmbinfmt-cache-{os.geteuid()}")
    assert cache.usable_dir(env) == private
    assert os.stat(private).st_mode & 0o777 == 0o700
    assert cache.usable_dir({"TMPDIR": str(tmp_path), "HOME": "relative"}) == private
    home = tmp_path / "home"
    home.mkdir()
    assert cache.usable_dir({"HOME": str(home)}) == str(home / ".cache" / "wasmbinfmt")
    assert cache.usable_dir({**env, "WASMBINFMT_CACHE": "off"}) is None


def test_a_temporary_cache_directory_others_can_enter_is_not_used(tmp_path):
    os.chmod(tmp_path, 0o755)
    private = tmp_path / f"wasmbinfmt-cache-{os.geteuid()}"
    private.mkdir(mode=0o755)
    os.chmod(private, 0o755)
    assert cache.usable_dir({"HOME": "/nonexistent", "TMPDIR": str(tmp_path)}) is None
    private.rmdir()
    private.symlink_to(tmp_path)
    assert cache.usable_dir({"HOME": "/nonexistent", "TMPDIR": str(tmp_path)}) is None
