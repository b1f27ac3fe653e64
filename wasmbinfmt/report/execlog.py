"""The exec log (``wasmbinfmt --log FILE -- COMMAND``): JSON lines, and their summary.

The schema, with an example, is in docs/log.md: ``exec``, ``exit``,
``exec-failed`` and ``refused`` events as they happen, then a ``summary``. Other
processes add theirs to the file (``append``): the recorder its ``output`` events, the
built-in runner its ``code`` events.
"""

from __future__ import annotations

import os
import time
from io import TextIOBase

from ..util.abcs import Iterable


def _text(value: bytes) -> str:
    return os.fsdecode(value)


def append(path: str, event: str, **fields) -> None:
    """One event added to the log at `path` by a process other than the tracer (one
    write, at the end: O_APPEND). A log that cannot be written loses it, nothing else."""
    import json

    line = json.dumps({"event": event, "time": round(time.time(), 6), **fields}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _regular_file_path(stream) -> str | None:
    """Where other processes can open the regular file `stream` writes to: the path it
    has now (not the name it was opened by: /dev/stderr, opened by a runner, is the
    runner's own); None for anything else (a pipe, a terminal, a file removed since)."""
    import stat

    try:
        opened = os.fstat(stream.fileno())
        path = os.readlink(f"/proc/self/fd/{stream.fileno()}")
        named = os.stat(path)
    except OSError:
        return None
    same = (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
    return path if stat.S_ISREG(opened.st_mode) and same else None


class ExecLog:
    """Writes the events as they happen; `close` adds the summary."""

    def __init__(self, stream: TextIOBase) -> None:
        import json  # here, not at the top: the tracer imports this module whether logging or not

        self.dumps = json.dumps
        self.stream = stream
        self.path = _regular_file_path(stream)  # where the runners add their `code` events
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
        if way == "launcher":  # it runs Cranelift's code from the cache, and says nothing
            self._write("code", pid=pid, module=_text(path), compiler="cranelift",
                        source="cache")

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


class Runs:
    """What a log holds, paired: `finished` [(exec event, its end: an exit event, or the
    next exec of that pid, status None)], `running` {pid: exec event} (no end seen),
    `failed` exec events, `code` events (how modules got their code), the `summary` event
    or None."""

    def __init__(self) -> None:
        self.finished: list[tuple[dict, dict]] = []
        self.running: dict[int, dict] = {}
        self.failed: list[dict] = []
        self.code: list[dict] = []
        self.summary: dict | None = None


def read_runs(lines: Iterable[str]) -> Runs:
    """The log's events as Runs. ValueError: a line that is not JSON."""
    import json

    runs = Runs()
    execs = runs.running
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
                runs.finished.append((earlier, {"status": None, "time": event["time"],
                                                "duration": round(event["time"]
                                                                  - earlier["time"], 6)}))
            execs[event["pid"]] = event
        elif kind == "exit" and event["pid"] in execs:
            runs.finished.append((execs.pop(event["pid"]), event))
        elif kind in ("exec-failed", "refused"):
            event["started"] = execs.pop(event["pid"], {})
            runs.failed.append(event)
        elif kind == "code":
            runs.code.append(event)
        elif kind == "summary":
            runs.summary = event
    return runs


def _code_summary(code: list[dict], finished: list[tuple[dict, dict]]) -> list[str]:
    """How the built-in runner's modules got their code: compiled (per compiler, and the
    time), from the cache, kept in memory; the runs on Winch's code (a run again that is
    slower than the CLI's is often one); and the modules compiled more than once with one
    compiler, which a cache too small for the suite does."""
    if not code:
        return []
    compiled: dict[str, list[float]] = {}
    sources: dict[str, int] = {}
    background: list[float] = []
    per_module: dict[tuple[str, str], int] = {}
    for event in code:
        if event["source"] != "compiled":
            sources[event["source"]] = sources.get(event["source"], 0) + 1
            continue
        if event.get("background"):
            background.append(event.get("seconds", 0.0))
        else:
            compiled.setdefault(event["compiler"], []).append(event.get("seconds", 0.0))
        if event.get("name"):
            module = (event["name"], event["compiler"])
            per_module[module] = per_module.get(module, 0) + 1
    parts = [f"compiled {len(times)} by {compiler} ({sum(times):.2f}s)"
             for compiler, times in sorted(compiled.items())]
    parts += [f"{'from the cache' if source == 'cache' else 'kept in memory'} {n}"
              for source, n in sorted(sources.items())]
    if background:
        parts.append(f"Cranelift in the background {len(background)} "
                     f"({sum(background):.2f}s)")
    out = ["code: " + ", ".join(parts)]
    again = sum(1 for n in per_module.values() if n > 1)
    if again:
        out.append(f"  {again} module(s) compiled more than once: the cache of compiled "
                   f"modules may be too small for this suite (WASMBINFMT_CACHE_MAX_MB, "
                   f"docs/wasi.md)")
    on_winch = _runs_on_winch(code, finished)
    if on_winch:
        out.append(f"  runs on Winch's code: {len(on_winch)} ({sum(on_winch):.2f}s); "
                   f"Cranelift's code comes once a module's runs pay for it (docs/wasi.md, "
                   f"\"Which compiler\")")
    return out


def _runs_on_winch(code: list[dict], finished: list[tuple[dict, dict]]) -> list[float]:
    """The durations of the finished runs whose module ran Winch's code (its code event:
    the run's pid, within the run's time)."""
    winch: dict[int, list[float]] = {}
    for event in code:
        if event["compiler"] == "winch" and not event.get("background"):
            winch.setdefault(event["pid"], []).append(event["time"])
    return [ended["duration"] for started, ended in finished
            if any(started["time"] <= when <= ended["time"]
                   for when in winch.get(started["pid"], ()))]


def summarize(lines: Iterable[str]) -> tuple[str, bool]:
    """A readable summary of a log (and whether every rerouted run succeeded)."""
    runs = read_runs(lines)
    finished, failed, summary = runs.finished, runs.failed, runs.summary
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
    out += _code_summary(runs.code, finished)
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
    argv, cwd and status in its arguments), in it a slice per compile and a mark where
    its code came from the cache or from memory; a track for the background compiles;
    instant events for execs that failed."""
    runs = read_runs(lines)
    finished, running, failed, summary = runs.finished, runs.running, runs.failed, runs.summary
    times = [start["time"] for start, _ in finished] + [e["time"] for e in running.values()]
    times += [event["time"] for event in failed]
    times += [event["time"] - event.get("seconds", 0.0) for event in runs.code]
    origin = min(times, default=0.0)
    end = summary["time"] if summary else max(
        [e["time"] for _, e in finished] + times, default=origin)

    def micro(seconds: float) -> int:
        return round((seconds - origin) * 1e6)

    events, named = [], set()

    def track(pid: int, name: str) -> None:
        if pid not in named:
            named.add(pid)
            events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": pid,
                           "args": {"name": name}})
    spans = [(start, ended) for start, ended in finished] + [
        (start, {"status": "unfinished", "time": end}) for start in running.values()]
    for start, ended in spans:
        pid = start["pid"]
        program = os.path.basename(start["argv"][0]) if start["argv"] else start["path"]
        track(pid, f"{program} ({pid})")
        events.append({
            "ph": "X", "name": f"{start['rules'][0]}: {program}", "cat": start["rules"][0],
            "pid": pid, "tid": pid, "ts": micro(start["time"]),
            "dur": max(1, micro(ended["time"]) - micro(start["time"])),
            "args": {"argv": start["argv"], "cwd": start["cwd"], "rules": start["rules"],
                     "way": start.get("way", "started"),
                     "status": "exec'd again" if ended["status"] is None
                     else ended["status"]}})
    for event in runs.code:
        pid, compiler = event["pid"], event["compiler"]
        args = {"module": event["module"], "compiler": compiler, "source": event["source"]}
        if event["source"] == "compiled":
            if event.get("background"):
                track(pid, f"background compiler ({pid})")
            seconds = event.get("seconds", 0.0)
            events.append({"ph": "X", "name": f"compile ({compiler})", "cat": "code",
                           "pid": pid, "tid": pid, "ts": micro(event["time"] - seconds),
                           "dur": max(1, round(seconds * 1e6)), "args": args})
        else:
            where = "from the cache" if event["source"] == "cache" else "kept in memory"
            events.append({"ph": "i", "s": "t", "name": f"code {where} ({compiler})",
                           "cat": "code", "pid": pid, "tid": pid, "ts": micro(event["time"]),
                           "args": args})
    for event in failed:
        events.append({"ph": "i", "s": "p", "name": f"exec failed: {event['error']}",
                       "pid": event["pid"], "tid": event["pid"], "ts": micro(event["time"]),
                       "args": {"path": event.get("path", ""), "errno": event["errno"]}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
