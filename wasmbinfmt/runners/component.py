"""How the wasm-component rule runs a WASI component: with the wasmtime CLI (the built-in
runner takes core modules only), given what the built-in runner gives a module.

    component.py WASMTIME [--ignored-signals=MASK] [--preserve-argv0] [--] COMPONENT [ARGS...]

A component's libc resolves paths as a module's does when it does not link ``chdir``
(wasi_cwd.py): relative paths against the preopen named ``.``, absolute ones against
the longest preopen name that prefixes them. The CLI's ``--dir=/::/ --dir=.::.`` serves
one kind of path only (``/abs/f``, or ``f``, never ``../f``), so the directories are laid
out here, at each exec, from the current directory: wasi_cwd.preopens. Also the
environment (``-S inherit-env``), the caller's argv[0] under P (``--argv0``), and a wasm
stack as deep as the process's stack limit allows (wasi.max_wasm_stack). Started as
``python -I -S -B component.py`` (wasi_start.py says why), then replaced by the CLI with
the exec's environment byte for byte and its signal dispositions (``--ignored-signals``,
from the tracer, as for the built-in runner: Python's start hides them).
"""

import os
import sys

if __name__ == "__main__":  # a plain script under -I -S: our package on the path first
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))

from wasmbinfmt.runners.wasi_cwd import preopens  # noqa: E402
from wasmbinfmt.runners.wasi import EXIT_CANNOT_RUN, current_directory, max_wasm_stack  # noqa: E402
from wasmbinfmt.util.procstate import exec_environment, execve_exactly, restore_signals  # noqa: E402

USAGE = ("usage: component.py WASMTIME [--ignored-signals=MASK] [--preserve-argv0] [--] "
         "COMPONENT [ARGS...]")
IGNORED_SIGNALS = "--ignored-signals="


def cli_argv(args: list[str], cwd: str | None, stack_limit: int) -> tuple[list[str], int]:
    """The wasmtime CLI's argv for our own argv, and the caller's ignored signals
    (ValueError: an argv we do not take)."""
    if not args:
        raise ValueError(USAGE)
    wasmtime, rest = args[0], args[1:]
    preserve_argv0, ignored = False, 0
    while rest and (rest[0] in ("--preserve-argv0", "--") or
                    rest[0].startswith(IGNORED_SIGNALS)):
        option, rest = rest[0], rest[1:]
        if option == "--":
            break
        if option.startswith(IGNORED_SIGNALS):
            try:
                ignored = int(option[len(IGNORED_SIGNALS):], 16)
            except ValueError:
                raise ValueError(f"--ignored-signals takes a hexadecimal mask, not "
                                 f"{option!r}") from None
        else:
            preserve_argv0 = True
    if not rest:
        raise ValueError(USAGE)
    component, program_args = rest[0], rest[1:]
    argv0 = component
    if preserve_argv0:
        argv0, program_args = (program_args[0], program_args[1:]) if program_args \
            else ("", [])
    layout = preopens(cwd, None) if cwd is not None else [("/", "/")]
    return [wasmtime, "run", "-S", "inherit-env", "-W",
            f"max-wasm-stack={max_wasm_stack(stack_limit)}",
            *(f"--dir={host}::{guest}" for host, guest in layout),
            "--argv0", argv0, "--", component, *program_args], ignored


def main() -> None:
    import resource

    try:
        argv, ignored = cli_argv(sys.argv[1:], current_directory(),
                                 resource.getrlimit(resource.RLIMIT_STACK)[0])
    except ValueError as e:
        print(f"wasmbinfmt: {e}", file=sys.stderr)
        os._exit(2)
    restore_signals(ignored)
    try:
        execve_exactly(argv[0], argv, exec_environment())
    except OSError as e:
        print(f"wasmbinfmt: cannot run the wasmtime CLI {argv[0]}: {e.strerror}",
              file=sys.stderr)
        os._exit(EXIT_CANNOT_RUN)


if __name__ == "__main__":
    main()
