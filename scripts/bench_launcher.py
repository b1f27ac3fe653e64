#!/usr/bin/env python3
"""An in-process launcher against today's paths (issue 28, item 8), side by side in one run.

    .venv/bin/python scripts/bench_launcher.py [--rounds 5] [--loop 200] [--steps 2000000]

Builds scripts/bench/launcher.c (cc, against the wasmtime wheel's library) and measures,
rounds interleaved, medians:
  exec loop   a shell loop of N hello runs: native; the launcher on precompiled code, alone
              and under `wasmbinfmt --` (the seccomp filter only: no rule matches it); the
              wasmtime CLI; the warm runner (`wasmbinfmt -- ... ./hello.wasm`)
  accounting  what a parent's wait4 sees of one nbody run (user CPU, max RSS), by GNU
              time: native, the launcher, the CLI, the warm runner, the cold runner
Needs the test fixtures (scripts/build-fixtures.sh) and /usr/bin/time.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tests", "fixtures", "build")


def library_dir() -> str:
    import wasmtime

    (found,) = glob.glob(os.path.join(os.path.dirname(wasmtime.__file__), "linux-*",
                                      "_libwasmtime.so"))
    return os.path.dirname(found)


def precompile(module: str, target: str) -> None:
    import wasmtime

    engine = wasmtime.Engine()  # the C API's default config, as the launcher's engine
    with open(module, "rb") as f:
        compiled = wasmtime.Module(engine, f.read()).serialize()
    with open(target, "wb") as f:
        f.write(compiled)


def cli() -> str:
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    return runnable_binary()


def timed(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def usage(argv: list[str], cwd: str) -> str:
    done = subprocess.run(["/usr/bin/time", "-f", "%U %M", *argv], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    user, rss = done.stderr.split()[-2:]
    return f"user {float(user):.2f} s, max RSS {int(rss) // 1024} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2000000)
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-launcher-")
    lib = library_dir()
    subprocess.run(["cc", "-O2", "-o", os.path.join(work, "launch"),
                    os.path.join(ROOT, "scripts", "bench", "launcher.c"), f"-L{lib}",
                    "-l:_libwasmtime.so", f"-Wl,-rpath,{lib}"], check=True)
    for name in ("hello", "nbody"):
        subprocess.run(["cp", os.path.join(BUILD, f"{name}.wasm"),
                        os.path.join(BUILD, f"{name}.native"), work], check=True)
        precompile(os.path.join(work, f"{name}.wasm"), os.path.join(work, f"{name}.cwasm"))
    wasmbinfmt = [sys.executable, "-m", "wasmbinfmt"]
    wasmtime = cli()

    def loop(command: str) -> list[str]:
        return ["sh", "-c", f"for i in $(seq {options.loop}); do {command} a >/dev/null; done"]

    loops = {
        "native": loop("./hello.native"),
        "launcher": loop("./launch hello.cwasm hello"),
        "launcher under wasmbinfmt": [*wasmbinfmt, "--", *loop("./launch hello.cwasm hello")],
        "wasmtime CLI": loop(f"{wasmtime} run hello.wasm"),
        "warm runner": [*wasmbinfmt, "--", *loop("./hello.wasm")],
    }
    for argv in loops.values():  # warm-up: caches filled
        timed(argv, work)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(options.rounds):
        for name, argv in loops.items():
            times[name].append(timed(argv, work))
    print(f"{options.loop} x hello, median of {options.rounds} rounds:")
    peer = statistics.median(times["wasmtime CLI"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:28} {median:6.3f} s  {median / options.loop * 1000:5.2f} ms/exec  "
              f"{median / peer:4.2f}x the CLI")
    steps = str(options.steps)
    print(f"one nbody {steps} run, as its parent's wait4 sees it:")
    for name, argv in {
        "native": ["./nbody.native", steps],
        "launcher": ["./launch", "nbody.cwasm", "nbody", steps],
        "wasmtime CLI": [wasmtime, "run", "nbody.wasm", steps],
        "warm runner": [*wasmbinfmt, "--", "sh", "-c", f"./nbody.wasm {steps}; :"],
        "cold runner": [*wasmbinfmt, "--cold-runner", "--", "./nbody.wasm", steps],
    }.items():
        print(f"  {name:28} {usage(argv, work)}")
    subprocess.run(["rm", "-rf", work], check=True)


if __name__ == "__main__":
    main()
