"""runners/component.py: the wasmtime CLI's argv for a component, laid out like a module's."""

from __future__ import annotations

import pytest

from wasmbinfmt.runners.component import cli_argv
from wasmbinfmt.runners.wasi import max_wasm_stack
from wasmbinfmt.runners.wasi_cwd import preopens

STACK = 8 << 20


def dirs(cwd):
    return [f"--dir={host}::{guest}" for host, guest in preopens(cwd, None)]


def test_the_directories_are_the_ones_a_module_without_chdir_gets():
    argv, ignored = cli_argv(["/cli", "--", "c.wasm", "a"], "/tmp/x/y", STACK)
    assert argv == ["/cli", "run", "-S", "inherit-env", "-W",
                    f"max-wasm-stack={max_wasm_stack(STACK)}", *dirs("/tmp/x/y"),
                    "--argv0", "c.wasm", "--", "c.wasm", "a"]
    assert "--dir=/tmp/x/y::." in argv and "--dir=/tmp/x::.." in argv
    assert "--dir=/tmp::../.." in argv and "--dir=/usr::/usr" in argv
    assert ignored == 0


def test_under_p_the_callers_argv0_is_the_programs():
    argv, _ = cli_argv(["/cli", "--preserve-argv0", "--", "./c.wasm", "my-name", "-x"], "/",
                       STACK)
    assert argv[-5:] == ["--argv0", "my-name", "--", "./c.wasm", "-x"]
    assert argv[6:-5] == ["--dir=/::/"]  # from /, one directory serves every path
    argv, _ = cli_argv(["/cli", "--preserve-argv0", "--", "./c.wasm"], "/", STACK)
    assert argv[-4:] == ["--argv0", "", "--", "./c.wasm"]  # an empty argv, as Linux gives


def test_without_a_usable_current_directory_the_root_is_mapped():
    argv, _ = cli_argv(["/cli", "c.wasm"], None, STACK)
    assert argv[6:-4] == ["--dir=/::/"]


def test_the_callers_ignored_signals_are_read_and_options_after_the_component_are_its_own():
    argv, ignored = cli_argv(["/cli", "--ignored-signals=1000", "--preserve-argv0", "--",
                              "c.wasm", "n", "--preserve-argv0"], "/", STACK)
    assert ignored == 0x1000 and argv[-2:] == ["c.wasm", "--preserve-argv0"]


@pytest.mark.parametrize("args", [[], ["/cli"], ["/cli", "--"], ["/cli", "--ignored-signals=x",
                                                                 "c.wasm"]])
def test_an_argv_it_does_not_take_is_refused(args):
    with pytest.raises(ValueError):
        cli_argv(args, "/", STACK)
