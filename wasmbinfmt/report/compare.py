"""``wasmbinfmt compare``: the same command under several emulator choices, side by side.

Each choice (a ``--profile``) runs COMMAND once under ``wasmbinfmt --profile
P --log FILE`` (in a copy of ``--workdir`` of its own when given), then the
logs are matched: a rerouted invocation of one run pairs with the one of
another run that has the same (cwd, argv), in the order they happened (a
copy's own path is written ``{workdir}`` so that copies compare equal).
Results differ when the overall exit statuses differ, what the runs printed
(stdout and stderr, together, as the command left them) differs (shown as a
unified diff), an invocation is missing from a run, its exit statuses
differ, what it printed differs (each run logs each invocation's stdout and
stderr with --log-output: digests compared, a diff of the kept bytes shown),
or its durations differ by more than ``--time-ratio`` and ``--time-min``
seconds both. While a profile runs, its progress (invocations
done, the one running) is shown on stderr. The runs' files go in a temporary
directory, removed at the end unless ``--keep DIR`` names one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

WORKDIR_MARK = "{workdir}"


class Run:
    """One choice's run: its command line, where it ran, what it logged."""

    def __init__(self, profile: str, directory: str, cwd: str, log: str, output: str) -> None:
        self.profile = profile
        self.directory = directory  # its copy of --workdir (or the cwd)
        self.cwd = cwd  # where COMMAND ran: in the copy, where we are in the original
        self.log = log
        self.output = output  # COMMAND's stdout and stderr
        self.status: int | None = None
        self.duration = 0.0

    def invocations(self, workdir: str | None) -> dict[tuple[str, tuple[str, ...], int], dict]:
        """(cwd, argv, occurrence) -> {"status", "duration"} of each rerouted exec."""
        started: dict[int, dict] = {}
        seen: dict[tuple[str, tuple[str, ...]], int] = {}
        found: dict[tuple[str, tuple[str, ...], int], dict] = {}

        def plain(text: str) -> str:
            return text.replace(self.directory, WORKDIR_MARK) if workdir else text
        with open(self.log, encoding="utf-8") as f:
            for line in f:
                event = json.loads(line)
                if event["event"] == "exec":
                    key = (plain(event["cwd"]), tuple(plain(a) for a in event["argv"]))
                    seen[key] = seen.get(key, 0) + 1
                    started[event["pid"]] = {"key": (*key, seen[key]), "status": None,
                                             "duration": None, "rule": event["rules"][0]}
                    found[(*key, seen[key])] = started[event["pid"]]
                elif event["event"] == "output" and event["pid"] in started:
                    started[event["pid"]]["output"] = {
                        name: event[name] for name in ("stdout", "stderr") if name in event}
                elif event["event"] == "exit" and event["pid"] in started:
                    entry = started.pop(event["pid"])
                    entry["status"], entry["duration"] = event["status"], event["duration"]
                elif event["event"] == "exec-failed" and event["pid"] in started:
                    started.pop(event["pid"])["status"] = f"exec failed: {event['error']}"
        return found


def run_all(profiles: list[str], command: list[str], rule_options: list[str],
            workdir: str | None, jobs: int, scratch: str, progress) -> list[Run]:
    runs = []
    here = os.getcwd()
    inside = os.path.relpath(here, workdir) if workdir else ""
    for i, profile in enumerate(profiles):
        directory = cwd = here
        if workdir:
            directory = os.path.join(scratch, f"{i}-{profile}")
            shutil.copytree(workdir, directory, symlinks=True)
            cwd = directory if inside.startswith("..") else os.path.join(directory, inside)
        runs.append(Run(profile, directory, cwd, os.path.join(scratch, f"{i}.jsonl"),
                        os.path.join(scratch, f"{i}.out")))

    def one(run: Run) -> Run:
        argv = [sys.executable, "-m", "wasmbinfmt", *rule_options, "--profile", run.profile,
                "--log", run.log, "--log-output", "--", *command]
        started = time.monotonic()
        with open(run.output, "wb") as output:
            process = subprocess.Popen(argv, cwd=run.cwd, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT)
            while True:
                try:
                    run.status = process.wait(timeout=PROGRESS_EVERY)
                    break
                except subprocess.TimeoutExpired:
                    progress(run, _so_far(run.log))
        run.duration = time.monotonic() - started
        _wait_for_summary(run.log)
        progress(run, None)
        return run
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


PROGRESS_EVERY = 1.0  # seconds between progress lines of a running profile


def _so_far(log: str) -> tuple[int, str]:
    """(rerouted invocations ended, the command line of the last one started) in a log
    being written."""
    done, current = 0, ""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith('{"event": "exit"'):
                    done += 1
                elif line.startswith('{"event": "exec"'):
                    try:
                        current = " ".join(json.loads(line)["argv"])
                    except ValueError:  # a line being written
                        pass
    except OSError:
        pass
    return done, current


def _wait_for_summary(log: str, patience: float = 10.0) -> None:
    """The tracer writes the summary when the last traced process ends, which can be a
    moment after the command itself returned."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            with open(log, "rb") as f:
                lines = f.read().splitlines()
            if lines and b'"event": "summary"' in lines[-1]:
                return
        except OSError:
            pass
        time.sleep(0.02)


def differences(runs: list[Run], workdir: str | None, time_ratio: float,
                time_min: float) -> list[dict]:
    """Every invocation that is not the same in all runs, in the first run's order."""
    tables = [run.invocations(workdir) for run in runs]
    keys = list(tables[0])
    for table in tables[1:]:
        keys += [key for key in table if key not in keys]
    found = []
    for key in keys:
        results = [table.get(key) for table in tables]
        reasons = []
        if any(r is None for r in results):
            reasons.append("not run everywhere")
        else:
            if len({str(r["status"]) for r in results}) > 1:
                reasons.append("exit status")
            diff = _invocation_output_diff(runs, results, workdir)
            if diff:
                reasons.append("output")
            durations = [r["duration"] for r in results if r["duration"] is not None]
            if len(durations) == len(results) and min(durations) >= 0 and \
                    max(durations) - min(durations) >= time_min and \
                    max(durations) >= time_ratio * max(min(durations), 1e-6):
                reasons.append("duration")
        if reasons:
            found.append({"cwd": key[0], "argv": list(key[1]), "occurrence": key[2],
                          "differs_in": reasons,
                          "results": {run.profile: r for run, r in zip(runs, results)},
                          **({"output_diff": diff} if "output" in reasons else {})})
    return found


def _invocation_output_diff(runs: list[Run], results: list[dict],
                            workdir: str | None) -> str | None:
    """A unified diff of what one invocation printed (stdout, then stderr) in the first run
    against each run where it printed otherwise, or None: digests first, bytes if they
    differ (a copy's own path written as in `invocations`)."""
    outputs = [r.get("output") for r in results]
    if None in outputs:
        return None  # not recorded (an invocation that never finished)

    def digests(output: dict) -> tuple:
        return tuple(output.get(name, {}).get("blake2b") for name in ("stdout", "stderr"))
    if len({digests(output) for output in outputs}) == 1:
        return None

    def text(run: Run, output: dict) -> list[str]:
        lines = []
        for name in ("stdout", "stderr"):
            if name not in output:
                continue
            try:
                with open(output[name]["file"], encoding="utf-8",
                          errors="backslashreplace") as f:
                    content = f.read()
            except OSError:
                content = f"({name} not kept)\n"
            if workdir:
                content = content.replace(run.directory, WORKDIR_MARK)
            lines += [f"{name}: {line}" for line in content.splitlines(keepends=True)]
        return lines
    return _unified(runs, [text(run, output) for run, output in zip(runs, outputs)])


def _unified(runs: list[Run], texts: list[list[str]]) -> str | None:
    """The first text against each other one, for the runs' profiles; None if all agree."""
    import difflib

    diffs = []
    for run, text in zip(runs[1:], texts[1:]):
        diff = list(difflib.unified_diff(texts[0], text, fromfile=runs[0].profile,
                                         tofile=run.profile))
        if diff:
            if len(diff) > DIFF_LINES:
                diff = diff[:DIFF_LINES] + [f"... {len(diff) - DIFF_LINES} more lines\n"]
            diffs.append("".join(line if line.endswith("\n") else line + "\n"
                                 for line in diff))
    return "".join(diffs) or None


def output_difference(runs: list[Run], workdir: str | None) -> str | None:
    """A unified diff of the first run's output against each run that printed otherwise
    (a copy's own path written as in `invocations`), or None."""
    def text(run: Run) -> list[str]:
        with open(run.output, encoding="utf-8", errors="backslashreplace") as f:
            content = f.read()
        if workdir:
            content = content.replace(run.directory, WORKDIR_MARK)
        return content.splitlines(keepends=True)
    return _unified(runs, [text(run) for run in runs])


DIFF_LINES = 60


def report(runs: list[Run], found: list[dict], output_diff: str | None,
           kept: bool) -> str:
    out = [f"{'profile':20} {'exit':>5} {'seconds':>9} {'rerouted':>9}"
           + ("   output" if kept else "")]
    for run in runs:
        rerouted = _summary(run.log).get("rerouted", {})
        out.append(f"{run.profile:20} {run.status:5} {run.duration:9.3f} "
                   f"{sum(rerouted.values()):9}" + (f"   {run.output}" if kept else ""))
    if output_diff:
        out.append("the runs printed different output:")
        out.append(output_diff.rstrip("\n"))
    if not found:
        out.append("no invocation differs" if output_diff else "no differences")
        return "\n".join(out)
    out.append(f"{len(found)} invocation(s) differ:")
    for item in found:
        out.append(f"  {' '.join(item['argv'])}   (in {item['cwd']}; "
                   f"{', '.join(item['differs_in'])})")
        for profile, result in item["results"].items():
            if result is None:
                out.append(f"    {profile:18} not run")
            else:
                duration = "" if result["duration"] is None else f" in {result['duration']:.3f}s"
                out.append(f"    {profile:18} {result['status']}{duration}")
        if "output_diff" in item:
            out += ["    " + line for line in item["output_diff"].rstrip("\n").splitlines()]
    return "\n".join(out)


def _summary(log: str) -> dict:
    with open(log, encoding="utf-8") as f:
        lines = f.read().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return last if last.get("event") == "summary" else {}


def compare(profiles: list[str], command: list[str], rule_options: list[str],
            workdir: str | None, jobs: int, as_json: bool, time_ratio: float,
            time_min: float, keep: str | None = None) -> int:
    if len(profiles) < 2:
        print("wasmbinfmt compare: give at least two --profile", file=sys.stderr)
        return 2
    if keep:
        os.makedirs(keep, exist_ok=True)
        scratch = keep
    else:
        scratch = tempfile.mkdtemp(prefix="wasmbinfmt-compare-")
    lock = threading.Lock()
    interactive = sys.stderr is not None and sys.stderr.isatty()
    printed: dict[str, float] = {}

    def progress(run: Run, so_far: tuple[int, str] | None) -> None:
        if as_json or sys.stderr is None:
            return
        with lock:
            if so_far is None:
                line = f"wasmbinfmt compare: {run.profile}: exit {run.status} in " \
                       f"{run.duration:.3f}s"
                print(("\r\033[K" if interactive else "") + line, file=sys.stderr)
            else:
                now = time.monotonic()
                if not interactive and now - printed.get(run.profile, now - 60) < 10:
                    return  # a log, not a terminal: a line every 10 s at most
                printed[run.profile] = now
                line = f"wasmbinfmt compare: {run.profile}: {so_far[0]} done, running " \
                       f"{so_far[1][:60]}"
                print(("\r\033[K" + line) if interactive else line, file=sys.stderr,
                      end="" if interactive else "\n", flush=True)
    try:
        runs = run_all(profiles, command, rule_options, workdir, jobs, scratch, progress)
        found = differences(runs, workdir, time_ratio, time_min)
        output_diff = output_difference(runs, workdir)
        statuses_differ = len({run.status for run in runs}) > 1
        if as_json:
            print(json.dumps({
                "runs": [{"profile": r.profile, "status": r.status, "duration": r.duration,
                          **({"directory": r.directory, "log": r.log, "output": r.output}
                             if keep else {})}
                         for r in runs],
                "differences": found, "output_diff": output_diff,
                "same": not found and not statuses_differ and not output_diff}, indent=1))
        else:
            print(report(runs, found, output_diff, bool(keep)))
            if statuses_differ:
                print("the runs' exit statuses differ")
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if found or statuses_differ or output_diff else 0
