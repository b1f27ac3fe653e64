"""The built-in WASI runner makes a module behave like a native program (issue 4).

Every case runs the wasm builds of tests/fixtures/src/portable/probe.c made
with Debian's wasi-libc and with zig's, with and without chdir linked in,
two ways: directly (``wasmbinfmt-wasi ./probe.wasm ARGS``) and as
``./probe.wasm ARGS`` under ``wasmbinfmt --`` with the default rules; as
root and as ``nobody``. The oracle for paths is the native build of the
same program; for everything else it is the wasmtime CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from wasmbinfmt.runners.wasmtime_cli import runnable_binary

TIMEOUT = 120
WASMTIME_CLI = runnable_binary()  # the CLI itself, not pip's Python wrapper around it
BUILDS = ["probe.wasm", "probe.zig.wasm", "probe-nochdir.wasm", "probe-nochdir.zig.wasm"]
WITH_CHDIR = ["probe.wasm", "probe.zig.wasm"]


@pytest.fixture
def tree(fixtures):
    """root/top.txt, root/work/{f.txt, sub/g.txt, the builds}: cwd is root/work."""
    root = Path(tempfile.mkdtemp(prefix="wasmbinfmt-wasi-"))
    work = root / "work"
    (work / "sub").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (work / "f.txt").write_text("in work\n")
    (work / "sub" / "g.txt").write_text("in sub\n")
    for name in [*BUILDS, "probe.native"]:
        shutil.copy(fixtures / name, work / name)
    for path in (root, work, work / "sub"):
        os.chmod(path, 0o777)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["direct", "traced"])
def way(request, user, tmp_path):
    """A function running a build (a name in the cwd) with args, as the user under test."""
    config = tmp_path / "no-config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("WASMBINFMT_RULES", "WASMBINFMT_CACHE_DIR", "XDG_CACHE_HOME")}
    env["XDG_CONFIG_HOME"] = str(config)
    if request.param == "direct":
        prefix = [sys.executable, "-m", "wasmbinfmt.runners.wasi"]
    else:
        prefix = [sys.executable, "-m", "wasmbinfmt", "--"]

    class Way:
        def argv(self, build, args):
            return user([*prefix, f"./{build}", *args])

        def __call__(self, build, args, *, cwd, extra_env=None, **kwargs):
            return subprocess.run(self.argv(build, args), cwd=cwd,
                                  env={**env, **(extra_env or {})}, capture_output=True,
                                  timeout=TIMEOUT, **kwargs)
    Way.env = env
    return Way()


def native(user, args, *, cwd, **kwargs):
    return subprocess.run(user(["./probe.native", *args]), cwd=cwd, capture_output=True,
                          timeout=TIMEOUT, **kwargs)


def wasmtime_cli(user, build, args, *, cwd, **kwargs):
    return subprocess.run(user([WASMTIME_CLI, "run", "-S", "inherit-env", "--dir", "/::/", "--",
                                f"./{build}", *args]),
                          cwd=cwd, capture_output=True, timeout=TIMEOUT, **kwargs)


def expand(args, root):
    return [a.replace("{root}", str(root)) for a in args]


# ---------------------------------------------------------------------------
# Paths: the native build is the oracle

PATH_CASES = {
    "getcwd": ["cwd"],
    "relative": ["read", "f.txt"],
    "dot-relative": ["read", "./f.txt"],
    "into a subdirectory": ["read", "sub/g.txt"],
    "parent": ["read", "../top.txt"],
    "absolute": ["read", "{root}/top.txt"],
    "absolute into the cwd": ["read", "{root}/work/sub/g.txt"],
    "missing": ["read", "missing.txt"],
    "system file": ["read", "/etc/debian_version"],
    "list the cwd": ["list", "."],
    "list a subdirectory": ["list", "sub"],
    "list the parent": ["list", ".."],
    "list by absolute path": ["list", "{root}/work/sub"],
    "chdir into a subdirectory": ["chdir", "sub", "g.txt"],
    "chdir by absolute path": ["chdir", "{root}", "top.txt"],
}


@pytest.mark.parametrize("build,case", [
    (build, case) for build in BUILDS for case in PATH_CASES
    if build in WITH_CHDIR or PATH_CASES[case][0] != "chdir"])
def test_paths_resolve_as_natively(tree, way, user, build, case):
    args = expand(PATH_CASES[case], tree)
    expected = native(user, args, cwd=tree / "work")
    got = way(build, args, cwd=tree / "work")
    assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout), got.stderr


@pytest.mark.parametrize("build", WITH_CHDIR)
def test_chdir_to_the_parent_reaches_it_but_getcwd_keeps_the_dots(tree, way, build):
    """wasi-libc's chdir does not normalise: getcwd() says "/x/work/.." where Linux says "/x"."""
    done = way(build, ["chdir", "..", "top.txt"], cwd=tree / "work")
    assert done.stdout.decode().splitlines() == [f"{tree}/work/..", "top"]


@pytest.mark.parametrize("build", BUILDS)
def test_files_written_by_relative_and_absolute_path_land_where_natively(tree, way, build):
    work = tree / "work"
    assert way(build, ["write", "new.txt", "relative"], cwd=work).returncode == 0
    assert way(build, ["write", f"{tree}/abs.txt", "absolute"], cwd=work).returncode == 0
    assert way(build, ["write", "../up.txt", "parent"], cwd=work).returncode == 0
    assert (work / "new.txt").read_text() == "relative\n"
    assert (tree / "abs.txt").read_text() == "absolute\n"
    assert (tree / "up.txt").read_text() == "parent\n"


@pytest.mark.parametrize("build", BUILDS)
def test_a_large_file_the_program_writes_itself_is_as_natively(tree, way, user, build):
    """2 MB through fopen'ed stdio: every buffered write reaches the file, in order."""
    work = tree / "work"
    assert native(user, ["spew", "20000", "native.out"], cwd=work).returncode == 0
    done = way(build, ["spew", "20000", "wasm.out"], cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "wasm.out").read_bytes() == (work / "native.out").read_bytes()
    assert (work / "wasm.out").stat().st_size == 20000 * 100


# ---------------------------------------------------------------------------
# Everything else: the wasmtime CLI is the oracle

OTHER_CASES = {
    "option-like arguments": (["--help", "--dir", "/::/", "a b", "", "-"], {}),
    "environment": (["env", "WASMBINFMT_TEST_VALUE"], {"env": {"WASMBINFMT_TEST_VALUE": "v=1 ü"}}),
    "unset variable": (["env", "WASMBINFMT_TEST_UNSET"], {}),
    "stdin from a pipe": (["cat"], {"input": bytes(range(256)) * 4096}),
    "large output to a pipe": (["spew", "100000"], {}),
    "exit 0": (["exit", "0"], {}),
    "exit 3": (["exit", "3"], {}),
    "exit 125": (["exit", "125"], {}),
    "clock": (["clock", "{now}"], {}),
    "random": (["random"], {}),
}


@pytest.mark.parametrize("build", ["probe.wasm", "probe.zig.wasm"])
@pytest.mark.parametrize("case", OTHER_CASES)
def test_the_same_as_under_the_wasmtime_cli(tree, way, user, build, case):
    args, options = OTHER_CASES[case]
    args = [a.replace("{now}", str(int(time.time()))) for a in args]
    extra_env = options.get("env")
    env = {**os.environ, **(extra_env or {})}
    expected = wasmtime_cli(user, build, args, cwd=tree / "work", env=env,
                            input=options.get("input"))
    got = way(build, args, cwd=tree / "work", extra_env=extra_env, input=options.get("input"))
    assert got.returncode == expected.returncode
    if case == "option-like arguments":  # the CLI cuts argv[0] to the file's name
        assert got.stdout.splitlines()[1] == f"argv[0]=./{build}".encode()
        assert expected.stdout.splitlines()[1] == f"argv[0]={build}".encode()
        got.stdout = expected.stdout = b"\n".join(got.stdout.splitlines()[2:])
    assert got.stdout == expected.stdout and got.stderr == expected.stderr
    if case == "large output to a pipe":
        assert len(got.stdout) == 100000 * 100


@pytest.mark.parametrize("status", ["126", "127", "255", "256", "-1"])
def test_exit_statuses_the_wasmtime_cli_refuses_reach_the_caller_as_natively(tree, way, user,
                                                                              status):
    """wasmtime turns proc_exit(N >= 126) into an error and exit 1; Linux gives N & 0xff."""
    expected = native(user, ["exit", status], cwd=tree / "work")
    got = way("probe.wasm", ["exit", status], cwd=tree / "work")
    assert (got.returncode, got.stderr) == (expected.returncode, b"")


@pytest.mark.parametrize("build", ["probe.wasm", "probe.zig.wasm"])
def test_a_trap_exits_as_under_the_wasmtime_cli_with_its_backtrace(tree, way, user, build):
    import re

    expected = wasmtime_cli(user, build, ["trap"], cwd=tree / "work")
    got = way(build, ["trap"], cwd=tree / "work")
    assert got.returncode == expected.returncode == 134
    lines = got.stderr.decode().splitlines()
    assert lines[:2] == [f"wasmbinfmt-wasi: ./{build}: trap: wasm `unreachable` instruction "
                         f"executed", "wasm backtrace:"]
    assert len(lines) > 3 and all(re.fullmatch(r" +\d+: +0x[0-9a-f]+ - \S.*", line)
                                  for line in lines[2:])
    assert "unreachable" in expected.stderr.decode()


# ---------------------------------------------------------------------------
# Closed descriptors and terminals

CLOSED = {
    "stdin closed": ("cat", "exec 0<&-"),
    "stdout closed": ("argv", "exec 1>&-"),
    "stderr closed": ("trap", "exec 2>&-"),
    "all closed": ("cat", "exec 0<&- 1>&- 2>&-"),
}


@pytest.mark.parametrize("case", CLOSED)
def test_closed_standard_descriptors_stay_closed_for_the_program(tree, way, case):
    """Nothing of the runner's (the module, a mapped cache entry, an error line) may land
    on a descriptor the program was started without."""
    what, close = CLOSED[case]
    wrapped = subprocess.run(  # the shell closes them, then execs the runner
        ["sh", "-c", f'{close}; exec "$@"', "sh", *way.argv("probe.wasm", [what])],
        cwd=tree / "work", env=way.env, capture_output=True, timeout=TIMEOUT)
    if what == "cat":  # stdin reads EOF at once, as natively; "done" only if stderr is open
        assert wrapped.returncode == 0 and wrapped.stdout == b""
        assert wrapped.stderr == (b"" if "2>&-" in close else b"done\n")
    elif what == "argv":
        assert wrapped.returncode == 0 and wrapped.stdout == b""
    else:
        assert wrapped.returncode == 134 and wrapped.stdout == wrapped.stderr == b""


@pytest.mark.parametrize("build", ["probe.wasm", "probe.zig.wasm"])
def test_a_terminal_is_inherited_as_natively(tree, way, build):
    """Input typed at a terminal reaches the program line by line, output goes back."""
    import pty

    argv = way.argv(build, ["cat"])
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdio is the terminal
        os.chdir(tree / "work")
        os.execvpe(argv[0], argv, way.env)
    os.write(fd, b"typed\n\x04")
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's last user is gone
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert output.replace(b"\r\n", b"\n") == b"typed\ntyped\ndone\n"  # echo, program, stderr
