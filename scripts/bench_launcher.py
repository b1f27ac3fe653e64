#!/usr/bin/env python3
"""The launcher (runners/launcher.py) against the other ways to run a module, side by side
in one run (issue 28, item 8).

    .venv/bin/python scripts/bench_launcher.py [--rounds 5] [--loop 200] [--steps 2000000]

Measures, rounds interleaved, medians:
  exec loop   a shell loop of N hello runs: native; under `wasmbinfmt --` with the
              launcher (the default, once a first run has cached the code), with the warm
              runner only (WASMBINFMT_LAUNCHER=off) and with --cold-runner; the wasmtime CLI
  accounting  what a parent's wait4 sees of one nbody run (user CPU, max RSS): GNU time is
              that parent, inside the tree for the runs under wasmbinfmt
Needs the test fixtures (scripts/build-fixtures.sh), cc and /usr/bin/time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tests", "fixtures", "build")
WASMBINFMT = [sys.executable, "-m", "wasmbinfmt"]
WARM_ONLY = {"WASMBINFMT_LAUNCHER": "off"}


def cli() -> str:
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    return runnable_binary()


def timed(argv: list[str], cwd: str, env: dict | None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True,
                   env=None if env is None else {**os.environ, **env})
    return time.perf_counter() - start


def usage(argv: list[str], cwd: str, env: dict | None) -> str:
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=None if env is None else {**os.environ, **env})
    user, rss = done.stderr.split()[-2:]
    return f"user {float(user):.2f} s, max RSS {int(rss) // 1024} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2000000)
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-launcher-")
    for name in ("hello", "nbody"):
        subprocess.run(["cp", os.path.join(BUILD, f"{name}.wasm"),
                        os.path.join(BUILD, f"{name}.native"), work], check=True)
    wasmtime = cli()

    def loop(command: str) -> list[str]:
        return ["sh", "-c", f"for i in $(seq {options.loop}); do {command} a >/dev/null; done"]

    loops = {
        "native": (loop("./hello.native"), None),
        "launcher": ([*WASMBINFMT, "--", *loop("./hello.wasm")], None),
        "warm runner": ([*WASMBINFMT, "--", *loop("./hello.wasm")], WARM_ONLY),
        "cold runner": ([*WASMBINFMT, "--cold-runner", "--", *loop("./hello.wasm")], None),
        "wasmtime CLI": (loop(f"{wasmtime} run hello.wasm"), None),
    }
    for argv, env in loops.values():  # warm-up: caches filled, the launcher built
        timed(argv, work, env)
    timed([*WASMBINFMT, "--", "./nbody.wasm", "10"], work, None)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(options.rounds):
        for name, (argv, env) in loops.items():
            times[name].append(timed(argv, work, env))
    print(f"{options.loop} x hello, median of {options.rounds} rounds:")
    peer = statistics.median(times["wasmtime CLI"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16} {median:6.3f} s  {median / options.loop * 1000:5.2f} ms/exec  "
              f"{median / peer:4.2f}x the CLI")
    steps = str(options.steps)
    timing = ["/usr/bin/time", "-f", "%U %M"]
    print(f"one nbody {steps} run, as its parent's wait4 sees it:")
    for name, (argv, env) in {
        "native": ([*timing, "./nbody.native", steps], None),
        "launcher": ([*WASMBINFMT, "--", *timing, "./nbody.wasm", steps], None),
        "warm runner": ([*WASMBINFMT, "--", *timing, "./nbody.wasm", steps], WARM_ONLY),
        "cold runner": ([*WASMBINFMT, "--cold-runner", "--", *timing, "./nbody.wasm", steps],
                        None),
        "wasmtime CLI": ([*timing, wasmtime, "run", "nbody.wasm", steps], None),
    }.items():
        print(f"  {name:16} {usage(argv, work, env)}")
    subprocess.run(["rm", "-rf", work], check=True)


if __name__ == "__main__":
    main()
