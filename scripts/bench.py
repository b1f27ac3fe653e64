#!/usr/bin/env python3
"""wasmbinfmt's benchmark suite: the same workloads, side by side, under each contender.

    .venv/bin/python scripts/bench.py --write     # regenerates docs/performance.md's table

Workloads: a shell loop of 2,000 /bin/true (exec-heavy); dd with 1-byte blocks
(syscall-heavy); find /usr (metadata-heavy); 2,000 fork+wait and 2,000 thread
create+join (scripts/bench/loops.c); 500 runs of hello.wasm from a shell loop;
`make -j2 check` over 200 small C programs built for wasm32-wasi; start-up
(`wasmbinfmt -- /bin/true`); and 10,000 processes in one run (per-process cost
along the run, tracer peak RSS).

Contenders: native (for wasm workloads: the emulator, wasmbinfmt-wasi, called
directly), `wasmbinfmt --`, proot (for wasm workloads `proot -q` with an ELF
wrapper, scripts/bench/proot-wasm-wrapper.c, since proot -q takes only an ELF
emulator and gives it QEMU options), and `strace -f --seccomp-bpf -e
trace=execve -o /dev/null`, the kernel-side cost of exec-only tracing with a
tracer written in C. And "seccomp filter alone" (scripts/bench/seccomp-only.c):
an allow-everything filter and no tracer, the kernel's own price for a
seccomp-filtered tree, the floor of any design that stops only at exec.
dd and find are also timed from inside the tree (`date` before and after), which
leaves every contender's start-up out.

Rounds are interleaved (A B C D A B C D ...) after a warm-up round; medians,
min and max, ratios to native. A contender whose warm-up took over 20 s (proot
on dd) is measured by that one run. Everything runs twice: pinned to one CPU
(taskset -c 0: the tracer and the tree share it) and unpinned (--pin to
choose). The tracer's peak RSS comes from wait4() on it: this script makes
itself a child subreaper, so the tracer (a grandchild of wasmbinfmt) is
reparented to it.

Run without PYTHONDONTWRITEBYTECODE: a start that recompiles modules is not a
start users see. Needs cc; clang with wasi-libc for the make workload; proot
and strace for their columns (missing tools leave their columns out, and say so).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(ROOT, "scripts", "bench")
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- bench.py: begin -->", "<!-- bench.py: end -->"
BIN = os.path.dirname(sys.executable)  # the venv's bin: wasmbinfmt, wasmbinfmt-wasi
WASMBINFMT = os.path.join(BIN, "wasmbinfmt")
RUNNER = os.path.join(BIN, "wasmbinfmt-wasi")
STRACE = ["strace", "-f", "--seccomp-bpf", "-e", "trace=execve", "-o", "/dev/null"]
PR_SET_CHILD_SUBREAPER = 36
SLOW = 20  # seconds: a contender this slow on a workload is run once (its warm-up)

GOALS = {  # workload: (what, limit) -- checked in goals() below
    "dd": "<= 1.05x native, timed inside the tree",
    "find": "<= 1.05x native, timed inside the tree",
    "exec loop": "<= 1.25x pinned, <= 1.5x unpinned",
    "hello.wasm": "<= 1.10x the emulator called directly",
    "start-up": "<= 40 ms median",
    "10,000 processes": "flat per-process cost, tracer RSS < 60 MB",
}


class Workload:
    """`native` runs it without us; `traced` is what runs under wasmbinfmt (they differ
    for wasm: ./hello.wasm traced, `wasmbinfmt-wasi hello.wasm` natively). `units`
    counts what the loop repeats, for per-unit costs."""

    def __init__(self, name: str, native: list[str], traced: list[str] | None = None,
                 units: int = 0, unit: str = "", wasm: bool = False, rounds: int = 0,
                 inside: bool = False):
        self.name, self.native, self.traced = name, native, traced or native
        self.units, self.unit, self.wasm, self.rounds = units, unit, wasm, rounds
        if inside:  # also timed from inside the tree: the contender's start-up left out
            self.native, self.traced = timed_inside(self.native), timed_inside(self.traced)
        self.inside = inside


def timed_inside(argv: list[str]) -> list[str]:
    return ["sh", "-c", 'date +%s.%N; "$@" >/dev/null; date +%s.%N', "sh", *argv]


def shell_loop(count: int, body: str) -> list[str]:
    return ["sh", "-c", f"i=0; while [ $i -lt {count} ]; do {body}; i=$((i+1)); done"]


def build(work: str, scale: float, log) -> list[Workload]:
    def n(count: int) -> int:
        return max(1, int(count * scale))

    loops = os.path.join(work, "loops")
    subprocess.run(["cc", "-O2", "-o", loops, os.path.join(SOURCES, "loops.c"), "-lpthread"],
                   check=True)
    hello = os.path.join(work, "hello.wasm")
    shutil.copy(os.path.join(ROOT, "examples", "hello.wasm"), hello)
    os.chmod(hello, 0o755)
    workloads = [
        Workload("exec loop", shell_loop(n(2000), "/bin/true"), units=n(2000),
                 unit="process"),
        Workload("dd", ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={n(2_000_000)}",
                        "status=none"], inside=True),
        Workload("find", ["find", "/usr", "-name", "x"], inside=True),
        Workload("fork+wait", [loops, "fork", str(n(2000))], units=n(2000), unit="fork"),
        Workload("thread create+join", [loops, "thread", str(n(2000))], units=n(2000),
                 unit="thread"),
        Workload("hello.wasm", shell_loop(n(500), f"{RUNNER} {hello} >/dev/null"),
                 shell_loop(n(500), f"{hello} >/dev/null"), units=n(500), unit="run",
                 wasm=True, rounds=3),
    ]
    suite = make_suite(work, n(200), log)
    if suite:
        workloads.append(Workload("make -j2 check", ["make", "-s", "-C", suite, "-j2",
                                                      f"RUN={RUNNER}", "check"],
                                  ["make", "-s", "-C", suite, "-j2", "check"],
                                  units=n(200), unit="test", wasm=True, rounds=3))
    return workloads


MAKEFILE = """\
# {count} small programs built for wasm32-wasi, each run as a test: RUN= runs them as
# executables (under wasmbinfmt), RUN=wasmbinfmt-wasi through the emulator directly.
RUN ?=
TESTS := $(patsubst %.c,%,$(wildcard t*.c))
all: $(TESTS:=.wasm)
%.wasm: %.c
\tclang --target=wasm32-wasi --sysroot=/usr -Os -o $@ $<
check: $(TESTS:=.run)
%.run: %.wasm
\t$(RUN) ./$< | cmp -s - $*.expected
.PHONY: check %.run
"""


def make_suite(work: str, count: int, log) -> str | None:
    if not shutil.which("clang") or not os.path.exists("/usr/include/wasm32-wasi"):
        log("make -j2 check: left out (needs clang and wasi-libc)")
        return None
    suite = os.path.join(work, "suite")
    os.mkdir(suite)
    for i in range(count):
        with open(os.path.join(suite, f"t{i:03}.c"), "w") as f:
            f.write(f'#include <stdio.h>\nint main(void) {{\n    long sum = 0;\n'
                    f'    for (long k = 0; k <= {i}; k++) sum += k * k;\n'
                    f'    printf("t{i:03} %ld\\n", sum);\n    return 0;\n}}\n')
        with open(os.path.join(suite, f"t{i:03}.expected"), "w") as f:
            f.write(f"t{i:03} {sum(k * k for k in range(i + 1))}\n")
    with open(os.path.join(suite, "Makefile"), "w") as f:
        f.write(MAKEFILE.format(count=count))
    subprocess.run(["make", "-s", "-C", suite, "-j2", "all"], check=True)
    return suite


class Contender:
    def __init__(self, name: str, argv):
        self.name, self.argv = name, argv  # argv(workload) -> list[str]


def contenders(work: str, log) -> list[Contender]:
    found = [Contender("native", lambda w: w.native),
             Contender("wasmbinfmt", lambda w: [WASMBINFMT, "--", *w.traced])]
    if shutil.which("proot"):
        wrapper = os.path.join(work, "proot-wasm-wrapper")
        subprocess.run(["cc", "-O2", f'-DEMULATOR="{RUNNER}"', "-o", wrapper,
                        os.path.join(SOURCES, "proot-wasm-wrapper.c")], check=True)
        found.append(Contender(
            "proot", lambda w: ["proot", "-q", wrapper, *w.traced] if w.wasm
            else ["proot", *w.native]))
    else:
        log("proot: not installed, left out")
    seccomp_only = os.path.join(work, "seccomp-only")
    subprocess.run(["cc", "-O2", "-o", seccomp_only, os.path.join(SOURCES, "seccomp-only.c")],
                   check=True)
    found.append(Contender("seccomp filter alone", lambda w: [seccomp_only, *w.native]))
    if shutil.which("strace"):
        found.append(Contender("strace --seccomp-bpf", lambda w: [*STRACE, *w.native]))
    else:
        log("strace: not installed, left out")
    return found


class Sample:
    def __init__(self, seconds: float, tracer_rss_kb: int = 0, output: bytes = b""):
        self.seconds, self.tracer_rss_kb, self.output = seconds, tracer_rss_kb, output

    def inside(self) -> "Sample":
        """The time between the two `date` lines of a timed_inside() command."""
        start, end = map(float, self.output.split())
        return Sample(end - start)


def run(argv: list[str], env: dict, keep_output: bool = False) -> Sample:
    """Run argv to its end and every process it left to theirs (the tracer, reparented to
    us); the time is the command's, the RSS the largest of those left behind."""
    stdout = subprocess.PIPE if keep_output else subprocess.DEVNULL
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                   stderr=errors, env=env)
        output = process.stdout.read() if keep_output else b""
        _, status, _ = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        rss = 0
        while True:
            try:
                _, _, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            rss = max(rss, usage.ru_maxrss)
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"bench: {' '.join(argv)}: exit {process.returncode}\n"
                             f"{errors.read().decode(errors='replace')}")
    if keep_output:
        process.stdout.close()
    return Sample(seconds, rss, output)


def measure(workloads, rivals, pin: bool, rounds: int, env, log) -> dict:
    """{(workload, contender): [Sample]} for one pinning."""
    prefix = ["taskset", "-c", "0"] if pin else []
    results = {}
    for workload in workloads:
        wanted = workload.rounds or rounds
        measured = []

        def record(contender: Contender, sample: Sample) -> None:
            results.setdefault((workload.name, contender.name), []).append(sample)
            if workload.inside:
                results.setdefault((f"{workload.name} (inside)", contender.name), []).append(
                    sample.inside())

        for contender in rivals:  # warm-up: caches, the runner's compiled modules
            warm_up = run(prefix + contender.argv(workload), env, workload.inside)
            if warm_up.seconds > SLOW:  # proot on dd: minutes a run; once is enough
                record(contender, warm_up)
            else:
                measured.append(contender)
        for _ in range(wanted):
            for contender in measured:
                record(contender, run(prefix + contender.argv(workload), env, workload.inside))
        log(f"{'pinned' if pin else 'unpinned'}: {workload.name}: done")
    startup = Workload("start-up", ["/bin/true"])
    for contender in rivals:
        run(prefix + contender.argv(startup), env)
    for _ in range(rounds * 8):
        for contender in rivals:
            results.setdefault(("start-up", contender.name), []).append(
                run(prefix + contender.argv(startup), env))
    return results


def scale_run(count: int, pin: bool, env) -> dict:
    """10,000 processes in one traced run: the time of each thousand, and the tracer's RSS."""
    prefix = ["taskset", "-c", "0"] if pin else []
    step = max(1, count // 10)
    loop = shell_loop(count, f"/bin/true; [ $((i % {step})) = 0 ] && date +%s.%N")
    found = {}
    for name, argv in (("native", loop), ("wasmbinfmt", [WASMBINFMT, "--", *loop])):
        sample = run(prefix + argv, env, keep_output=True)
        marks = [float(line) for line in sample.output.split()]
        blocks = [(b - a) / step * 1e6 for a, b in zip(marks, marks[1:])]
        found[name] = (sample, blocks)
    return found


def median(samples) -> float:
    return statistics.median(s.seconds for s in samples)


def table(results: dict, workloads_names: list[str], rival_names: list[str], label: str):
    lines = []
    for workload in workloads_names:
        base = median(results[(workload, "native")])
        for name in rival_names:
            samples = results[(workload, name)]
            times = [s.seconds for s in samples]
            scale, fmt = (1000, "{:9.1f}") if workload == "start-up" else (1, "{:9.3f}")
            lines.append(f"{label:8} {workload:20} {name:21} "
                         + " ".join(fmt.format(t * scale) for t in
                                    (statistics.median(times), min(times), max(times)))
                         + f" {median(samples) / base:7.2f}x")
    return lines


def per_unit(results: dict, workloads, rival_names) -> list[str]:
    """Extra cost per process, fork, thread, run or test, in µs, from the loops: the median
    difference to native, less the contender's own start-up difference, over the count."""
    lines = []
    for workload in workloads:
        if not workload.units:
            continue
        base = median(results[(workload.name, "native")])
        costs = []
        for name in rival_names[1:]:
            extra = median(results[(workload.name, name)]) - base - start_up_extra(results, name)
            costs.append(f"{name} {extra / workload.units * 1e6:7.0f}")
        lines.append(f"  {workload.name:20} per {workload.unit:8} " + "   ".join(costs))
    return lines


def start_up_extra(results: dict, name: str) -> float:
    """What the contender adds to starting /bin/true: paid once per run, not per unit."""
    return median(results[("start-up", name)]) - median(results[("start-up", "native")])


def goals(results_by_pin: dict, scale_by_pin: dict) -> list[str]:
    verdicts = []

    def verdict(name: str, met: bool, detail: str) -> None:
        verdicts.append(f"{'MET    ' if met else 'NOT MET'} {name}: {detail} "
                        f"(goal {GOALS[name]})")

    for pin, results in results_by_pin.items():
        label = "pinned" if pin else "unpinned"
        for name in ("dd", "find"):
            inside = f"{name} (inside)"
            ratio, floor = (median(results[(inside, who)]) / median(results[(inside, "native")])
                            for who in ("wasmbinfmt", "seccomp filter alone"))
            verdict(name, ratio <= 1.05, f"{label} {ratio:.3f}x (a seccomp filter alone, no "
                                         f"tracer: {floor:.3f}x)")
        ratio = median(results[("exec loop", "wasmbinfmt")]) / median(results[("exec loop", "native")])
        verdict("exec loop", ratio <= (1.25 if pin else 1.5), f"{label} {ratio:.2f}x")
        ratio = median(results[("hello.wasm", "wasmbinfmt")]) / median(results[("hello.wasm", "native")])
        verdict("hello.wasm", ratio <= 1.10, f"{label} {ratio:.3f}x")
        start = median(results[("start-up", "wasmbinfmt")]) * 1000
        verdict("start-up", start <= 40, f"{label} {start:.1f} ms")
    for pin, found in scale_by_pin.items():
        sample, blocks = found["wasmbinfmt"]
        _, native_blocks = found["native"]
        third = max(1, len(blocks) // 3)
        first, last = statistics.median(blocks[:third]), statistics.median(blocks[-third:])
        rss_mb = sample.tracer_rss_kb / 1024
        verdict("10,000 processes", last <= 1.2 * first and rss_mb < 60,
                f"{'pinned' if pin else 'unpinned'} µs per process, first third {first:.0f}, "
                f"last third {last:.0f} (native {statistics.median(native_blocks):.0f}); "
                f"tracer peak RSS {rss_mb:.1f} MB")
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per workload (3 for the wasm ones; start-up: 8x)")
    parser.add_argument("--pin", choices=("both", "yes", "no"), default="both")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every loop's count (e.g. 0.05 for a quick try)")
    parser.add_argument("--write", action="store_true",
                        help="replace the generated part of docs/performance.md")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        log("warning: PYTHONDONTWRITEBYTECODE is set: every start recompiles wasmbinfmt")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("bench: cannot become a child subreaper (needed for the tracer RSS)")
    pins = {"both": (True, False), "yes": (True,), "no": (False,)}[args.pin]
    with tempfile.TemporaryDirectory(prefix="wasmbinfmt-bench-") as work:
        # No user rules; the user's cache of compiled modules is kept (warm after round 0).
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "config"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        workloads = build(work, args.scale, log)
        rivals = contenders(work, log)
        started = time.time()
        results_by_pin, scale_by_pin = {}, {}
        for pin in pins:
            results_by_pin[pin] = measure(workloads, rivals, pin, args.rounds, env, log)
            scale_by_pin[pin] = scale_run(max(10, int(10_000 * args.scale)), pin, env)
    names = list(dict.fromkeys(name for results in results_by_pin.values()
                               for name, _ in results))
    rival_names = [c.name for c in rivals]
    lines = [f"{'':8} {'workload':20} {'contender':21} {'median':>9} {'min':>9} {'max':>9}"
             f" {'x native':>8}   (seconds; start-up in ms)"]
    for pin, results in results_by_pin.items():
        lines += table(results, names, rival_names, "pinned" if pin else "unpinned")
    lines.append("")
    lines.append("extra cost over native, µs per unit (median difference, start-up subtracted):")
    for pin, results in results_by_pin.items():
        lines.append(f" {'pinned' if pin else 'unpinned'}:")
        lines += per_unit(results, workloads, rival_names)
    lines.append("")
    lines += goals(results_by_pin, scale_by_pin)
    header = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Linux "
              f"{platform.release()}, Python {platform.python_version()}; "
              f"{args.rounds} rounds (wasm workloads 3, start-up {args.rounds * 8}), "
              f"scale {args.scale}; {time.time() - started:.0f} s in all")
    text = "\n".join([header, "", *lines])
    print(text)
    if args.write:
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        before, _, rest = doc.partition(BEGIN)
        _, _, after = rest.partition(END)
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(f"{before}{BEGIN}\n```\n{text}\n```\n{END}{after}")
        log(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
