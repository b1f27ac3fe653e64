#!/usr/bin/env python3
"""The wasm side's speed targets (issue 18), measured side by side in one run: MET / NOT MET.

    .venv/bin/python scripts/bench_targets.py [--rounds 5] [--loop 200]

Targets, each against its peer, rounds interleaved after a warm-up, medians:
  warm exec     a shell loop of N ./hello.wasm under `wasmbinfmt --`   <= 1.2x the same
                loop running the wasmtime CLI binary (`wasmtime run hello.wasm`); proot -q
                with an ELF wrapper exec'ing the CLI, and `wasmbinfmt --cold-runner` (a
                runner started at every exec), are shown beside them
  start-up      `wasmbinfmt -- /bin/true`, also with PYTHONDONTWRITEBYTECODE=1   <= 20 ms
  file writes   a module writing 10 MB in 4 KiB writes to a new file (the runner started
                directly, as the CLI)   <= 1.1x the CLI; and the way a suite runs it: a loop
                of 5 such execs under `wasmbinfmt --` (the warm runner) against the same
                loop of the CLI
  cold compile  the first run of a large module (generated: thousands of functions) with
                an empty cache   <= 1.0x the CLI's run with its cache off (-C cache=n);
                the runner's Cranelift and the CLI's Winch beside them
  compute       nbody, 20,000,000 steps, warm cache   <= 1.05x the CLI
The whole suites (zlib, PCRE2) are examples/table.sh's. Needs clang with wasi-libc (the
fixtures), cc and proot for the proot column (left out, and said, when missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wasi_runner import (  # noqa: E402
    BIN, BUILD, ROOT, build_fixtures, timed, wasmtime_binary,
)

WASMBINFMT = os.path.join(BIN, "wasmbinfmt")
RUNNER = [os.path.join(BIN, "python3"), "-I", "-S", "-B",
          os.path.join(ROOT, "wasmbinfmt", "runners", "wasi_start.py")]  # as the rule starts it
FUNCTIONS = 25000  # in the generated module: a few MB of wasm


def big_module(work: str) -> str:
    """A module with FUNCTIONS distinct functions and a table calling each once."""
    source = os.path.join(work, "big.c")
    with open(source, "w") as f:
        for i in range(FUNCTIONS):
            f.write(f"__attribute__((noinline)) static unsigned f{i}(unsigned x) {{ "
                    f"for (int k = 0; k < {i % 7 + 2}; k++) x = x * {2 * i + 3}u + "
                    f"(x >> {i % 13 + 1}) ^ {i}u; return x; }}\n")
        f.write("static unsigned (*const table[])(unsigned) = {"
                + ", ".join(f"f{i}" for i in range(FUNCTIONS)) + "};\n")
        f.write('#include <stdio.h>\nint main(void) { unsigned x = 1; '
                'for (unsigned i = 0; i < sizeof table / sizeof *table; i++) x = table[i](x); '
                'printf("%u\\n", x); return 0; }\n')
    module = os.path.join(work, "big.wasm")
    subprocess.run(["clang", "--target=wasm32-wasi", "--sysroot=/usr", "-O1", "-o", module,
                    source], check=True)
    return module


def proot_wrapper(work: str, cli: str) -> str | None:
    if not (shutil.which("proot") and shutil.which("cc")):
        return None
    emulator = os.path.join(work, "wasmtime-run")
    with open(emulator, "w") as f:
        f.write(f'#!/bin/sh\nexec {cli} run "$@"\n')
    os.chmod(emulator, 0o755)
    wrapper = os.path.join(work, "proot-wasm-wrapper")
    subprocess.run(["cc", "-O2", f'-DEMULATOR="{emulator}"', "-o", wrapper,
                    os.path.join(ROOT, "scripts", "bench", "proot-wasm-wrapper.c")], check=True)
    return wrapper


def measure(contenders: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each contender: (argv, env), interleaved after a warm-up."""
    for argv, env in contenders.values():
        timed(argv, env() if callable(env) else env)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (argv, env) in contenders.items():
            samples[name].append(timed(argv, env() if callable(env) else env))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", type=int, default=200, help="hello.wasm runs in the loop")
    args = parser.parse_args()
    build_fixtures()
    cli = wasmtime_binary()
    work = tempfile.mkdtemp(prefix="bench-targets-")
    results = []  # (target, ours, peer, ratio or value, goal, met)
    try:
        os.chdir(work)
        shutil.copy(os.path.join(BUILD, "hello.wasm"), "hello.wasm")
        warm = {**os.environ, "WASMBINFMT_CACHE_DIR": os.path.join(work, "warm")}
        loop = f"for i in $(seq {args.loop}); do ./hello.wasm; done"
        cli_loop = f"for i in $(seq {args.loop}); do {cli} run hello.wasm; done"
        contenders = {"wasmbinfmt": ([WASMBINFMT, "--", "sh", "-c", loop], warm),
                      "wasmtime CLI": (["sh", "-c", cli_loop], None),
                      "--cold-runner": ([WASMBINFMT, "--cold-runner", "--", "sh", "-c", loop],
                                        warm)}
        wrapper = proot_wrapper(work, cli)
        if wrapper:
            contenders["proot -q"] = (["proot", "-q", wrapper, "sh", "-c", loop], None)
        else:
            print("bench: no proot or cc: the proot column is left out", file=sys.stderr)
        times = measure(contenders, args.rounds)
        ratio = times["wasmbinfmt"] / times["wasmtime CLI"]
        peers = ", ".join(f"{name} {value:.2f} s" for name, value in times.items()
                          if name != "wasmbinfmt")
        results.append((f"warm exec: {args.loop} hello.wasm", f"{times['wasmbinfmt']:.2f} s",
                        peers, f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2))

        starts = measure({
            "plain": ([WASMBINFMT, "--", "/bin/true"], warm),
            "PYTHONDONTWRITEBYTECODE=1": ([WASMBINFMT, "--", "/bin/true"],
                                          {**warm, "PYTHONDONTWRITEBYTECODE": "1"}),
            "/bin/true": (["/bin/true"], None),
            "python": ([os.path.join(BIN, "python3"), "-c", "pass"], None),
        }, args.rounds * 20)  # each sample is short: many, for a steady median
        beside = (f"/bin/true alone {starts.pop('/bin/true') * 1000:.1f} ms, our Python "
                  f"(-c pass) {starts.pop('python') * 1000:.1f} ms")
        for name, value in starts.items():
            results.append((f"start-up ({name})", f"{value * 1000:.1f} ms", beside, "",
                            "<= 20 ms", value <= 0.020))

        spew = [os.path.join(BUILD, "probe.wasm"), "spew", "100000", "out.txt"]
        writes = measure({"runner": ([*RUNNER, *spew], warm),
                          "CLI": ([cli, "run", "--dir=.", *spew], None)}, args.rounds)
        ratio = writes["runner"] / writes["CLI"]
        results.append(("file writes: 10 MB", f"{writes['runner']:.3f} s",
                        f"CLI {writes['CLI']:.3f} s", f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1))
        shutil.copy(os.path.join(BUILD, "probe.wasm"), "probe.wasm")
        spews = "for i in 1 2 3 4 5; do {} spew 100000 out.txt; done"
        writes = measure({"warm": ([WASMBINFMT, "--", "sh", "-c", spews.format("./probe.wasm")],
                                   warm),
                          "CLI": (["sh", "-c", spews.format(f"{cli} run --dir=. probe.wasm")],
                                  None)}, args.rounds)
        ratio = writes["warm"] / writes["CLI"]
        results.append(("file writes: 5 x 10 MB, warm", f"{writes['warm']:.3f} s",
                        f"CLI {writes['CLI']:.3f} s", f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1))

        big = big_module(work)
        size = os.path.getsize(big) / 1e6
        cold_runs = iter(range(1 << 30))

        def cold() -> dict[str, str]:
            return {**os.environ,
                    "WASMBINFMT_CACHE_DIR": os.path.join(work, f"cold{next(cold_runs)}")}
        # The CLI's cache off: each of its runs is a first run with its cache empty.
        # The runner's default compiles a first run of this much code with Winch; its
        # Cranelift (what every later run gets) and the CLI's Winch are shown beside it.
        compiles = measure({"runner": ([*RUNNER, big], cold),
                            "CLI": ([cli, "run", "-C", "cache=n", big], None),
                            "runner, Cranelift": ([*RUNNER, "--compiler=cranelift", big], cold),
                            "CLI, Winch": ([cli, "run", "-C", "cache=n", "-C", "compiler=winch",
                                            big], None)}, args.rounds)
        ratio = compiles["runner"] / compiles["CLI"]
        peers = ", ".join(f"{name} {value:.3f} s" for name, value in compiles.items()
                          if name != "runner")
        results.append((f"cold compile: {size:.1f} MB module", f"{compiles['runner']:.3f} s",
                        peers, f"{ratio:.2f}x", "<= 1.0x", ratio <= 1.0))

        nbody = [os.path.join(BUILD, "nbody.wasm"), "20000000"]
        computes = measure({"runner": ([*RUNNER, *nbody], warm),
                            "CLI": ([cli, "run", *nbody], None)}, max(3, args.rounds // 2))
        ratio = computes["runner"] / computes["CLI"]
        results.append(("compute: nbody 20M steps", f"{computes['runner']:.3f} s",
                        f"CLI {computes['CLI']:.3f} s", f"{ratio:.2f}x", "<= 1.05x",
                        ratio <= 1.05))
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs, {args.rounds} rounds, medians")
    print(f"{'target':34} {'wasmbinfmt':>11}  {'ratio':>6}  {'goal':9} {'':7}  peers")
    for target, ours, peer, ratio, goal, met in results:
        print(f"{target:34} {ours:>11}  {ratio:>6}  {goal:9} {'MET' if met else 'NOT MET':7}  "
              f"{peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
