#!/usr/bin/env python3
"""The tracer's acceptance benchmark: a shell loop of 2,000 /bin/true, native vs traced.

Runs native, `wasmbinfmt --` and (when installed) `strace -f --seccomp-bpf -e trace=execve`
side by side, interleaved (A B C A B C ...) after a warm-up, both pinned to one CPU
(taskset -c 0) and unpinned, and prints medians, min/max and ratios to native.

    .venv/bin/python scripts/bench_exec_loop.py [--rounds 7] [--iterations 2000]

(Run it without PYTHONDONTWRITEBYTECODE: a start that recompiles modules is not a start
users see.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def wasmbinfmt_command() -> list[str]:
    """The installed console script beside this Python (a venv's), as users run it."""
    script = os.path.join(os.path.dirname(sys.executable), "wasmbinfmt")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "wasmbinfmt"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    loop = f"i=0; while [ $i -lt {args.iterations} ]; do /bin/true; i=$((i+1)); done"
    command = ["sh", "-c", loop]
    contenders = {
        "native": command,
        "wasmbinfmt": [*wasmbinfmt_command(), "--", *command],
    }
    if shutil.which("strace"):
        contenders["strace --seccomp-bpf"] = ["strace", "-f", "--seccomp-bpf", "-e",
                                              "trace=execve", "-o", "/dev/null", *command]
    print(f"{args.iterations} x /bin/true from a shell loop, {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':8} {'contender':22} {'median s':>9} {'min':>7} {'max':>7} {'x native':>9}")
    for pinned in (True, False):
        prefix = ["taskset", "-c", "0"] if pinned else []
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for name, argv in contenders.items():
            timed(prefix + argv)  # warm-up
        for _ in range(args.rounds):
            for name, argv in contenders.items():
                times[name].append(timed(prefix + argv))
        base = statistics.median(times["native"])
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"{'pinned' if pinned else 'unpinned':8} {name:22} {median:9.3f} "
                  f"{min(samples):7.3f} {max(samples):7.3f} {median / base:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
