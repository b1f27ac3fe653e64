"""``wasmbinfmt compare``: the same command under several emulator choices, side by side.

Each choice (a ``--profile``) runs COMMAND once under ``wasmbinfmt --profile
P --log FILE`` (in a copy of ``--workdir`` of its own when given), then the
logs are matched: a rerouted invocation of one run pairs with the one of
another run that has the same (cwd, argv), in the order they happened (a
copy's own path is written ``{workdir}`` so that copies compare equal).
Results differ when the overall exit statuses differ, an invocation is
missing from a run, its exit statuses differ, or its durations differ by
more than ``--time-ratio`` and ``--time-min`` seconds both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
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
                "--log", run.log, "--", *command]
        started = time.monotonic()
        with open(run.output, "wb") as output:
            run.status = subprocess.run(argv, cwd=run.cwd, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT).returncode
        run.duration = time.monotonic() - started
        _wait_for_summary(run.log)
        progress(run)
        return run
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


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
            durations = [r["duration"] for r in results if r["duration"] is not None]
            if len(durations) == len(results) and min(durations) >= 0 and \
                    max(durations) - min(durations) >= time_min and \
                    max(durations) >= time_ratio * max(min(durations), 1e-6):
                reasons.append("duration")
        if reasons:
            found.append({"cwd": key[0], "argv": list(key[1]), "occurrence": key[2],
                          "differs_in": reasons,
                          "results": {run.profile: r for run, r in zip(runs, results)}})
    return found


def report(runs: list[Run], found: list[dict]) -> str:
    out = [f"{'profile':20} {'exit':>5} {'seconds':>9} {'rerouted':>9}   output"]
    for run in runs:
        rerouted = _summary(run.log).get("rerouted", {})
        out.append(f"{run.profile:20} {run.status:5} {run.duration:9.3f} "
                   f"{sum(rerouted.values()):9}   {run.output}")
    if not found:
        out.append("no differences")
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
    return "\n".join(out)


def _summary(log: str) -> dict:
    with open(log, encoding="utf-8") as f:
        lines = f.read().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return last if last.get("event") == "summary" else {}


def compare(profiles: list[str], command: list[str], rule_options: list[str],
            workdir: str | None, jobs: int, as_json: bool, time_ratio: float,
            time_min: float) -> int:
    if len(profiles) < 2:
        print("wasmbinfmt compare: give at least two --profile", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="wasmbinfmt-compare-")

    def progress(run: Run) -> None:
        if not as_json:
            print(f"wasmbinfmt compare: {run.profile}: exit {run.status} in "
                  f"{run.duration:.3f}s", file=sys.stderr)
    runs = run_all(profiles, command, rule_options, workdir, jobs, scratch, progress)
    found = differences(runs, workdir, time_ratio, time_min)
    statuses_differ = len({run.status for run in runs}) > 1
    if as_json:
        print(json.dumps({
            "runs": [{"profile": r.profile, "status": r.status, "duration": r.duration,
                      "directory": r.directory, "log": r.log, "output": r.output}
                     for r in runs],
            "differences": found, "same": not found and not statuses_differ}, indent=1))
    else:
        print(report(runs, found))
        if statuses_differ:
            print("the runs' exit statuses differ")
    return 1 if found or statuses_differ else 0
