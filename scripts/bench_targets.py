#!/usr/bin/env python3
"""The wasm side's speed targets (issue 18), measured side by side in one run: MET / NOT MET.

    .venv/bin/python scripts/bench_targets.py [--rounds 5] [--loop 200] [--suite-rounds 3]
                                              [--only TARGET,...]

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
Big real suites (issue 27), each from empty module caches, its phases in a row, every
phase against the peer's phase of the same rank (< 1.0x: faster), rounds interleaved,
medians per rank:
  go            examples/go: `go test -short` of 24 standard packages for wasip1, 3 phases,
                against Go's own go_wasip1_wasm_exec running the wasmtime CLI
  avr-libc      examples/avr-libc: make -j2 of avr-libc by gcc's tools as wasm, 3 builds,
                on a machine kept busy (two busy loops beside), against the same Makefile
                calling `wasmtime run`
  cargo         examples/cargo: `cargo test` of 13 crates (22 test binaries), 3 phases,
                against cargo's runner variable with the wasmtime CLI
The whole suites (zlib, PCRE2) are examples/table.sh's. Needs clang with wasi-libc (the
fixtures), cc and proot for the proot column (left out, and said, when missing); the
suites need what their run.sh says.
"""

from __future__ import annotations

import argparse
import os
import re
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


# What each suite's run.sh says of a phase: "go: phase 2: ...; go test 6.02 s, builtin".
PHASE_LINE = re.compile(r"^[a-z-]+: (?:phase|build) (\d+): .* ([0-9.]+) s, \S+$", re.M)
SUITES = {  # name: (example, our environment, the peer's, the peer's name, ranks, busy)
    "go": ("go", {"PROFILE": "builtin"}, {"RUNNER": "go-wrapper"},
           "Go's go_wasip1_wasm_exec + CLI", (1, 2, 3), False),
    "avr-libc": ("avr-libc", {"PROFILE": "builtin"}, {"RUNNER": "wasmtime-run"},
                 "Makefile calling wasmtime run", (1, 2, 3), True),
    "cargo": ("cargo", {"PROFILE": "builtin", "PHASES": "3"},
              {"RUNNER": "cargo-runner", "PHASES": "3"}, "cargo's runner variable + CLI",
              (1, 2, 3), False),
}
BUSY_LOOPS = 2  # "a machine kept busy": as many busy loops as this machine has CPUs


def suite_phases(example: str, env: dict[str, str], work: str) -> list[float]:
    """The seconds of each phase of one run of examples/EXAMPLE/run.sh, from empty caches."""
    done = subprocess.run(["sh", os.path.join(ROOT, "examples", example, "run.sh"), work],
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: examples/{example} failed under {env}:\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return [float(seconds) for _, seconds in PHASE_LINE.findall(done.stdout)]


def measure_suite(name: str, rounds: int, work: str) -> list[tuple]:
    """Result rows: each phase's median against the peer's phase of the same rank."""
    example, ours, peer, peer_name, ranks, busy = SUITES[name]
    samples: dict[str, list[list[float]]] = {"ours": [], "peer": []}
    for round_ in range(rounds):
        for side, env in (("ours", ours), ("peer", peer)):
            load = [subprocess.Popen(["sh", "-c", "while :; do :; done"])
                    for _ in range(BUSY_LOOPS if busy else 0)]
            try:
                samples[side].append(suite_phases(example, env,
                                                  os.path.join(work, f"{name}-{side}-{round_}")))
            finally:
                for process in load:
                    process.kill()
                    process.wait()
    rows = []
    for rank in ranks:
        ours_s = statistics.median(phases[rank - 1] for phases in samples["ours"])
        peer_s = statistics.median(phases[rank - 1] for phases in samples["peer"])
        ratio = ours_s / peer_s
        label = "build" if name == "avr-libc" else "phase"
        rows.append((f"{name}{', busy' if busy else ''}: {label} {rank}", f"{ours_s:.2f} s",
                     f"{peer_name} {peer_s:.2f} s", f"{ratio:.2f}x", "< 1.0x", ratio < 1.0))
    return rows


def warm_targets(args, cli: str, work: str, warm: dict[str, str], wanted) -> list[tuple]:
    """The rows of the wasm side's small targets (issue 18) that `wanted(name)` asks for."""
    results = []
    if wanted('warm'):
        loop = f"for i in $(seq {args.loop}); do ./hello.wasm; done"
        cli_loop = f"for i in $(seq {args.loop}); do {cli} run hello.wasm; done"
        contenders = {"wasmbinfmt": ([WASMBINFMT, "--", "sh", "-c", loop], warm),
                      "wasmtime CLI": (["sh", "-c", cli_loop], None),
                      "warm runner, no launcher": ([WASMBINFMT, "--", "sh", "-c", loop],
                                                   {**warm, "WASMBINFMT_LAUNCHER": "off"}),
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

    if wanted('start-up'):
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

    if wanted('writes'):
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

    if wanted('compile'):
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

    if wanted('compute'):
        nbody = [os.path.join(BUILD, "nbody.wasm"), "20000000"]
        computes = measure({"runner": ([*RUNNER, *nbody], warm),
                            "CLI": ([cli, "run", *nbody], None)}, max(3, args.rounds // 2))
        ratio = computes["runner"] / computes["CLI"]
        results.append(("compute: nbody 20M steps", f"{computes['runner']:.3f} s",
                        f"CLI {computes['CLI']:.3f} s", f"{ratio:.2f}x", "<= 1.05x",
                        ratio <= 1.05))

    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", type=int, default=200, help="hello.wasm runs in the loop")
    parser.add_argument("--suite-rounds", type=int, default=3,
                        help="runs of each big suite under each contender")
    parser.add_argument("--only", default="",
                        help="comma-separated targets: warm, start-up, writes, compile, "
                             f"compute, {', '.join(SUITES)} (default: all)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    def wanted(target: str) -> bool:
        return not only or target in only
    build_fixtures()
    cli = wasmtime_binary()
    work = tempfile.mkdtemp(prefix="bench-targets-")
    results = []  # (target, ours, peer, ratio or value, goal, met)
    try:
        os.chdir(work)
        for name in SUITES:
            if wanted(name):
                results += measure_suite(name, args.suite_rounds, work)
        shutil.copy(os.path.join(BUILD, "hello.wasm"), "hello.wasm")
        warm = {**os.environ, "WASMBINFMT_CACHE_DIR": os.path.join(work, "warm")}
        results += warm_targets(args, cli, work, warm, wanted)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs, {args.rounds} rounds ({args.suite_rounds} for the suites), "
          f"medians")
    print(f"{'target':34} {'wasmbinfmt':>11}  {'ratio':>6}  {'goal':9} {'':7}  peers")
    for target, ours, peer, ratio, goal, met in results:
        print(f"{target:34} {ours:>11}  {ratio:>6}  {goal:9} {'MET' if met else 'NOT MET':7}  "
              f"{peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
