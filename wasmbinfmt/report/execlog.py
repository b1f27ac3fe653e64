"""The exec log (``wasmbinfmt --log FILE -- COMMAND``): JSON lines, and their summary.

The schema, with an example, is in docs/log.md: ``exec``, ``exit``,
``exec-failed`` and ``refused`` events as they happen, then a ``summary``.
"""

from __future__ import annotations

import os
import time
from io import TextIOBase

from ..util.abcs import Iterable


def _text(value: bytes) -> str:
    return os.fsdecode(value)


class ExecLog:
    """Writes the events as they happen; `close` adds the summary."""

    def __init__(self, stream: TextIOBase) -> None:
        import json  # here, not at the top: the tracer imports this module whether logging or not

        self.dumps = json.dumps
        self.stream = stream
        self.started = time.monotonic()
        self.open: dict[int, tuple[float, str]] = {}  # pid -> (start, first rule)
        self.rerouted: dict[str, int] = {}
        self.native_attempts = 0
        self.failed = 0
        self.exited_nonzero = 0

    def _write(self, event: str, **fields) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(self.dumps({"event": event, "time": round(time.time(), 6),
                                          **fields}) + "\n")
            self.stream.flush()
        except OSError:  # a full disk must not stop the tree: the log ends here
            self.stream = None

    def exec(self, pid: int, ppid: int, cwd: bytes, path: bytes, argv: list[bytes],
             rules: list[str], emulator: list[bytes], way: str = "started") -> None:
        self.open[pid] = (time.monotonic(), rules[0])
        self.rerouted[rules[0]] = self.rerouted.get(rules[0], 0) + 1
        self._write("exec", pid=pid, ppid=ppid, cwd=_text(cwd), path=_text(path),
                    argv=[_text(a) for a in argv], rules=rules,
                    emulator=[_text(a) for a in emulator], way=way)

    def exec_failed(self, pid: int, error: int) -> None:
        if self.open.pop(pid, None) is not None:
            self.failed += 1
            self._write("exec-failed", pid=pid, errno=error, error=os.strerror(error))

    def refused(self, pid: int, path: bytes, error: int) -> None:
        self.failed += 1
        self._write("refused", pid=pid, path=_text(path), errno=error, error=os.strerror(error))

    def exited(self, pid: int, wait_status: int) -> None:
        started = self.open.pop(pid, None)
        if started is None:
            return
        status = os.waitstatus_to_exitcode(wait_status)
        self.exited_nonzero += status != 0
        self._write("exit", pid=pid, status=status,
                    duration=round(time.monotonic() - started[0], 6))

    def close(self) -> None:
        self._write("summary", rerouted=self.rerouted, native_attempts=self.native_attempts,
                    failed=self.failed, exited_nonzero=self.exited_nonzero,
                    unfinished=len(self.open), duration=round(time.monotonic() - self.started, 6))
        if self.stream is not None:
            self.stream.close()


SLOWEST = 5  # runs listed by `wasmbinfmt log`


def _ending(status: int) -> str:
    """How a run ended, from its exit code (os.waitstatus_to_exitcode: -N for signal N)."""
    if status >= 0:
        return f"exit {status}"
    import signal

    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"killed by {name}"


def read_runs(lines: Iterable[str]):
    """The log's runs, paired: (finished [(exec event, its end: an exit event, or the next
    exec of that pid, status None)], still running {pid: exec event}, failed exec events,
    the summary event or None). ValueError: a line that is not JSON."""
    import json

    execs: dict[int, dict] = {}
    finished: list[tuple[dict, dict]] = []
    failed: list[dict] = []
    summary = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
        kind = event.get("event")
        if kind == "exec":
            earlier = execs.pop(event["pid"], None)
            if earlier is not None:  # it exec'd again: that run ended there, as a native one
                finished.append((earlier, {"status": None, "time": event["time"], "duration":
                                           round(event["time"] - earlier["time"], 6)}))
            execs[event["pid"]] = event
        elif kind == "exit" and event["pid"] in execs:
            finished.append((execs.pop(event["pid"]), event))
        elif kind in ("exec-failed", "refused"):
            event["started"] = execs.pop(event["pid"], {})
            failed.append(event)
        elif kind == "summary":
            summary = event
    return finished, execs, failed, summary


def summarize(lines: Iterable[str]) -> tuple[str, bool]:
    """A readable summary of a log (and whether every rerouted run succeeded)."""
    finished, _, failed, summary = read_runs(lines)
    failures = [f"  exec failed ({event['error']}): "
                f"{' '.join(event['started'].get('argv') or [event.get('path', '?')])}"
                for event in failed]
    per_rule: dict[str, list[float]] = {}
    ways: dict[str, int] = {}
    for started, ended in finished:
        per_rule.setdefault(started["rules"][0], []).append(ended["duration"])
        way = started.get("way", "started")
        ways[way] = ways.get(way, 0) + 1
        if ended["status"] not in (0, None):
            failures.append(f"  {_ending(ended['status'])} after {ended['duration']:.3f}s "
                            f"[{started['rules'][0]}] in {started['cwd']}: "
                            f"{' '.join(started['argv'])}")
    out = [f"{'rule':20} {'runs':>6} {'total s':>9} {'max s':>8}"]
    for rule, durations in sorted(per_rule.items()):
        out.append(f"{rule:20} {len(durations):6} {sum(durations):9.3f} {max(durations):8.3f}")
    if set(ways) - {"started"}:  # the built-in runner's modules: how they ran
        out.append("ran by: " + ", ".join(f"{way} {n}" for way, n in sorted(ways.items())))
    slowest = sorted(finished, key=lambda run: -run[1]["duration"])[:SLOWEST]
    if slowest:
        out.append("slowest runs:")
        out += [f"  {ended['duration']:8.3f}s [{started['rules'][0]}] in {started['cwd']}: "
                f"{' '.join(started['argv'])}" for started, ended in slowest]
    if summary is not None:
        out.append(f"native exec attempts: {summary['native_attempts']}, "
                   f"failed execs: {summary['failed']}, "
                   f"unfinished: {summary['unfinished']}, whole run: {summary['duration']:.3f}s")
    else:
        out.append("no summary: the run was cut short")
    if failures:
        out.append("failures:")
        out += failures
    return "\n".join(out), not failures


def trace(lines: Iterable[str]) -> dict:
    """The log in Chrome's trace-event format (Perfetto's UI and chrome://tracing open it):
    a track per process, a slice per rerouted run named by its rule and program (its
    argv, cwd and status in its arguments), instant events for execs that failed."""
    import os

    finished, running, failed, summary = read_runs(lines)
    times = [start["time"] for start, _ in finished] + [e["time"] for e in running.values()]
    times += [event["time"] for event in failed]
    origin = min(times, default=0.0)
    end = summary["time"] if summary else max(
        [e["time"] for _, e in finished] + times, default=origin)

    def micro(seconds: float) -> int:
        return round((seconds - origin) * 1e6)

    events, named = [], set()
    runs = [(start, ended) for start, ended in finished] + [
        (start, {"status": "unfinished", "time": end}) for start in running.values()]
    for start, ended in runs:
        pid = start["pid"]
        program = os.path.basename(start["argv"][0]) if start["argv"] else start["path"]
        if pid not in named:
            named.add(pid)
            events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": pid,
                           "args": {"name": f"{program} ({pid})"}})
        events.append({
            "ph": "X", "name": f"{start['rules'][0]}: {program}", "cat": start["rules"][0],
            "pid": pid, "tid": pid, "ts": micro(start["time"]),
            "dur": max(1, micro(ended["time"]) - micro(start["time"])),
            "args": {"argv": start["argv"], "cwd": start["cwd"], "rules": start["rules"],
                     "way": start.get("way", "started"),
                     "status": "exec'd again" if ended["status"] is None
                     else ended["status"]}})
    for event in failed:
        events.append({"ph": "i", "s": "p", "name": f"exec failed: {event['error']}",
                       "pid": event["pid"], "tid": event["pid"], "ts": micro(event["time"]),
                       "args": {"path": event.get("path", ""), "errno": event["errno"]}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
