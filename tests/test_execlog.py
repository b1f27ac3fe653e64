"""--log: the JSON lines of rerouted execs, written by the tracer; `wasmbinfmt log`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wasmbinfmt.report.execlog import ExecLog, summarize
from test_tracer import TIMEOUT, wasmbinfmt


def events(path):
    """The log once complete: the tracer writes the summary when the last traced process
    is gone, which can be a moment after the command returned to us."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = [json.loads(line) for line in open(path)]
        if got and got[-1]["event"] == "summary" or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def test_each_rerouted_exec_its_end_and_a_summary_are_logged(box, user, tmp_path):
    log = box / "run.jsonl"
    script = "./probe.wasm exit 3; ./probe.wasm a 'b c'; ./probe.native x; ./missing.wasm; true"
    done = wasmbinfmt(user, ["--log", str(log), "--", "sh", "-c", script], cwd=box)
    assert done.returncode == 0, done.stderr
    got = [e for e in events(log) if e["event"] != "code"]  # code events: tested below
    kinds = [e["event"] for e in got]
    assert kinds == ["exec", "exit", "exec", "exit", "summary"]
    first, first_end, second, second_end, summary = got
    assert (first["path"], first["argv"], first["rules"], first["cwd"]) == (
        "./probe.wasm", ["./probe.wasm", "exit", "3"], ["wasm"], str(box))
    assert first["emulator"][5:] == ["--preserve-argv0", "--", "./probe.wasm", "./probe.wasm",
                                     "exit", "3"]
    assert first["emulator"][0] == sys.executable
    assert os.path.basename(first["emulator"][4]) == "wasi_start.py"
    assert (first_end["pid"], first_end["status"]) == (first["pid"], 3)
    assert second["argv"] == ["./probe.wasm", "a", "b c"] and second_end["status"] == 0
    assert first["ppid"] == second["ppid"] != first["pid"]
    assert 0 < first_end["duration"] < 60
    assert summary["rerouted"] == {"wasm": 2} and summary["exited_nonzero"] == 1
    assert summary["unfinished"] == 0 and summary["native_attempts"] >= 3
    # The first run of the module compiled it: the second exec is the launcher's.
    assert (first["way"], second["way"]) == ("warm runner", "launcher")


def test_the_log_says_how_each_module_exec_ran(box, user):
    log = box / "run.jsonl"
    for options in (["--cold-runner"], ["WASMBINFMT_LAUNCHER=off"]):
        env = dict(os.environ)
        env.update(option.split("=", 1) for option in options if "=" in option)
        done = wasmbinfmt(user, ["--log", str(log), *[o for o in options if "=" not in o], "--",
                                 "sh", "-c", "./probe.wasm x; ./probe.wasm y"], cwd=box, env=env)
        assert done.returncode == 0, done.stderr
        ways = [e["way"] for e in events(log) if e["event"] == "exec"]
        assert ways == (["started"] * 2 if options == ["--cold-runner"] else
                        ["warm runner"] * 2), ways
        summary = subprocess.run([sys.executable, "-m", "wasmbinfmt", "log", str(log)],
                                 capture_output=True, text=True).stdout
        assert ("ran by: " in summary) == (options != ["--cold-runner"]), summary
        assert "ran by: warm runner 2\n" in summary or options == ["--cold-runner"], summary


def code_events(got: list[dict], module: str) -> list[tuple]:
    return [(e["source"], e["compiler"], e.get("background", False)) for e in got
            if e["event"] == "code" and e["module"].endswith(module)]


def test_the_log_says_how_each_module_got_its_code(box, user, tmp_path):
    """Compiled (by which compiler, how long), from the cache, or kept in memory by the
    warm runner; Cranelift's compile in the background while the run lasts; by every
    runner; and the summary and the timeline show them."""
    from test_wasi_runner import big_module

    quick, _ = big_module(box)
    busy, _ = big_module(box, spin=4_000_000_000)  # ~1 s on Winch's code
    for path in (quick, busy):
        path.chmod(0o755)
    log = box / "run.jsonl"
    env = {**os.environ, "WASMBINFMT_CACHE_DIR": str(box / "cache")}
    script = ("./big.wasm; ./big.wasm; ./big.wasm; ./big4000000000.wasm; "
              "for i in $(seq 600); do ls cache/modules | grep -q winch || break; sleep 0.1; done; "
              "./big4000000000.wasm; ./probe.wasm x; ./probe.wasm y; true")
    done = wasmbinfmt(user, ["--log", str(log), "--", "sh", "-c", script], cwd=box, env=env)
    assert done.returncode == 0, done.stderr
    got = events(log)
    # The first run compiles in the worker, the host loads what it left, then keeps it.
    assert code_events(got, "/big.wasm") == [("compiled", "winch", False),
                                             ("cache", "winch", False),
                                             ("memory", "winch", False)]
    # Cranelift's compile, while the run goes on: the run compiled the module (its first).
    assert code_events(got, "/big4000000000.wasm") == [
        ("compiled", "winch", False), ("compiled", "cranelift", True),
        ("cache", "cranelift", False)]
    # The launcher's run: the tracer says where its code came from.
    assert code_events(got, "probe.wasm") == [("compiled", "cranelift", False),
                                              ("cache", "cranelift", False)]
    runs = {e["pid"]: e for e in got if e["event"] == "exec"}
    for e in got:
        if e["event"] == "code" and not e.get("background"):
            assert runs[e["pid"]]["path"] == e["module"]
            assert (e["source"] == "compiled") == (0 < e.get("seconds", 0) < 60)
    summary = summarize(open(log))[0]
    assert re.search(r"^code: compiled 1 by cranelift \(\d+\.\d\ds\), compiled 2 by winch "
                     r"\(\d+\.\d\ds\), from the cache 3, kept in memory 1, Cranelift in the "
                     r"background 1 \(\d+\.\d\ds\)$", summary, re.M), summary
    assert "more than once" not in summary
    # big.wasm's three runs and big4000000000.wasm's first.
    assert re.search(r"^  runs on Winch's code: 4 \(\d+\.\d\ds\);", summary, re.M), summary
    # The timeline: a slice per compile in its run, the background compiler's own track,
    # a mark where the code came from the cache or from memory.
    from wasmbinfmt.report.execlog import trace

    result = trace(log.read_text().splitlines())
    check_trace_events(result)
    compiles = [e for e in result["traceEvents"] if e["ph"] == "X" and e["cat"] == "code"]
    assert sorted(e["name"] for e in compiles) == ["compile (cranelift)", "compile (cranelift)",
                                                   "compile (winch)", "compile (winch)"]
    tracks = {e["pid"]: e["args"]["name"] for e in result["traceEvents"] if e["ph"] == "M"}
    (background,) = [e for e in compiles if e["pid"] not in runs]
    assert tracks[background["pid"]] == f"background compiler ({background['pid']})"
    slices = {e["pid"]: e for e in result["traceEvents"] if e["ph"] == "X" and e["cat"] == "wasm"}
    for e in compiles:
        if e is not background:  # inside its run's slice
            run_slice = slices[e["pid"]]
            assert run_slice["ts"] <= e["ts"] and e["ts"] + e["dur"] <= run_slice["ts"] + \
                run_slice["dur"] + 1000
    marks = sorted(e["name"] for e in result["traceEvents"] if e["ph"] == "i")
    assert marks == ["code from the cache (cranelift)", "code from the cache (cranelift)",
                     "code from the cache (winch)", "code kept in memory (winch)"]
    # Cold, with no warm runner to keep it: compiled, or from the cache as the warm run left it.
    done = wasmbinfmt(user, ["--cold-runner", "--log", str(log), "--", "sh", "-c",
                             "./big.wasm; ./probe.wasm; rm -r cache; ./probe.wasm"],
                      cwd=box, env=env)
    assert done.returncode == 0, done.stderr
    got = events(log)
    assert code_events(got, "big.wasm") + code_events(got, "probe.wasm") == [
        ("cache", "winch", False), ("cache", "cranelift", False),
        ("compiled", "cranelift", False)]


def test_logs_named_by_the_callers_stdio_reach_it_and_runners_never_write_their_own(box, user):
    """--log /dev/stderr: a runner opening that name would open its own stderr, the
    program's; the tracer, its /dev/null. The file behind it gets every event; a pipe, the
    tracer's (the runners cannot open it)."""
    tool = f"{sys.executable} -m wasmbinfmt"
    script = (f"{tool} --log /dev/stderr -- sh -c './probe.wasm x 2> err.txt' 2> log.txt; "
              f"{tool} --log /dev/stdout -- sh -c './probe.wasm y > out.txt' | cat > piped.txt; "
              f"{tool} -v --log-file /dev/stdout -- sh -c './probe.wasm z >/dev/null' | cat "
              f"> said.txt")
    done = subprocess.run(user(["sh", "-c", script]), cwd=box, capture_output=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert (box / "err.txt").read_bytes() == b""
    assert "argv[1]=y\n" in (box / "out.txt").read_text()
    assert "event" not in (box / "out.txt").read_text()
    logged = [json.loads(line) for line in open(box / "log.txt")]
    assert [e["event"] for e in logged] == ["exec", "code", "exit", "summary"]
    assert logged[1]["name"]  # the runner's (the tracer's, for the launcher, has none)
    piped = [json.loads(line)["event"] for line in open(box / "piped.txt")]
    assert piped == ["exec", "code", "exit", "summary"]  # launched: the tracer's own event
    assert re.fullmatch(r"wasmbinfmt: \[\d+\] wasm \./probe\.wasm \(launched\)\n",
                        (box / "said.txt").read_text())


def test_a_code_event_to_a_log_that_cannot_be_written_is_lost_alone(tmp_path):
    from wasmbinfmt.report.execlog import append

    append(str(tmp_path / "missing" / "run.jsonl"), "code", pid=1)  # no error
    log = tmp_path / "run.jsonl"
    log.write_text("")
    append(str(log), "code", pid=1, source="cache")
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["source"] == "cache" and json.loads(line)["event"] == "code"


def test_the_summary_tells_a_module_compiled_again_by_a_cache_too_small():
    lines = [exec_event(10, 100.0, ["./a.wasm"]),
             event("code", 101.0, pid=10, module="./a.wasm", name="n1", compiler="winch",
                   source="compiled", seconds=1.0),
             event("exit", 101.5, pid=10, status=0, duration=1.5),
             exec_event(11, 102.0, ["./a.wasm"]),
             event("code", 103.0, pid=11, module="./a.wasm", name="n1", compiler="winch",
                   source="compiled", seconds=1.0),
             event("exit", 103.5, pid=11, status=0, duration=1.5)]
    text, _ = summarize(lines)
    assert "code: compiled 2 by winch (2.00s)\n  1 module(s) compiled more than once: the " \
           "cache of compiled modules may be too small for this suite" in text, text


def test_the_summary_counts_the_runs_on_winchs_code():
    """Each run whose module ran Winch's code (from a compile, the cache or memory), by its
    code event in the run's pid and time; not the background compiler's."""
    lines = [exec_event(10, 100.0, ["./x.aarch64"], "aarch64"),
             exec_event(10, 100.5, ["./a.wasm"]),  # x.aarch64 exec'd it: the same pid
             event("code", 100.6, pid=10, module="./a.wasm", name="a", compiler="winch",
                   source="compiled", seconds=0.1),
             event("exit", 101.5, pid=10, status=0, duration=1.0),
             exec_event(11, 102.0, ["./a.wasm"]),
             event("code", 102.1, pid=11, module="./a.wasm", name="a", compiler="winch",
                   source="memory"),
             event("exit", 102.25, pid=11, status=0, duration=0.25),
             event("code", 103.0, pid=99, module="./a.wasm", name="a", compiler="cranelift",
                   source="compiled", seconds=3.0, background=True),
             exec_event(12, 104.0, ["./a.wasm"]),
             event("code", 104.1, pid=12, module="./a.wasm", name="a", compiler="cranelift",
                   source="cache"),
             event("exit", 104.5, pid=12, status=0, duration=0.5)]
    text, _ = summarize(lines)
    assert "\n  runs on Winch's code: 2 (1.25s); Cranelift's code comes once a module's " \
           "runs pay for it" in text, text
    text, _ = summarize(lines[:1] + lines[-3:])
    assert "code: from the cache 1\n" in text and "Winch" not in text, text


def test_a_failed_rerouted_exec_is_logged_with_its_errno(box, user):
    log = box / "run.jsonl"
    rule = f":probe:M::\\x00asm::{box}/no-such-emulator:"
    done = wasmbinfmt(user, ["--log", str(log), "--no-default-rules", "--rule", rule, "--",
                             "./probe.wasm"], cwd=box)
    assert done.returncode == 127
    exec_event, failed, summary = events(log)
    assert (failed["event"], failed["errno"], failed["pid"]) == ("exec-failed", 2,
                                                                 exec_event["pid"])
    assert summary["failed"] == 1


def test_an_unwritable_log_stops_nothing_but_the_start(box, user, tmp_path):
    done = wasmbinfmt(user, ["--log", "/proc/no/such/dir/log", "--", "true"])
    assert done.returncode == 2 and b"cannot write /proc/no/such/dir/log" in done.stderr


def test_verbose_lines_start_a_line_of_their_own_in_a_file_the_tree_writes_too(box, user):
    """configure's "checking ... " is mid-line when it runs a module: ours goes below it."""
    out = box / "out.log"
    script = f'printf "checking... "; ./probe.wasm x >/dev/null; echo yes'
    with open(out, "wb") as f:
        done = subprocess.run(user([sys.executable, "-m", "wasmbinfmt", "-v", "--", "sh", "-c",
                                    script]), cwd=box, stdout=f, stderr=f, timeout=120)
    assert done.returncode == 0
    assert re.fullmatch(r"checking\.\.\. \nwasmbinfmt: \[\d+\] wasm \./probe\.wasm "
                        r"\(warm\)\nyes\n", out.read_text()), out.read_text()


def test_the_log_file_for_messages_works_too(box, user):
    """--log-file used to be closed with the tracer's other inherited descriptors."""
    messages = box / "messages.log"
    done = wasmbinfmt(user, ["-v", "--log-file", str(messages), "--", "./probe.wasm", "x"],
                      cwd=box)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"wasmbinfmt: \[\d+\] wasm \./probe\.wasm \(warm\)\n",
                        messages.read_text())


def test_summarize_lists_runs_per_rule_and_failures():
    stream = io.StringIO()
    stream.close = lambda: None
    log = ExecLog(stream)
    log.exec(10, 1, b"/w", b"./a.wasm", [b"./a.wasm", b"\xff"], ["wasm"], [b"rt", b"./a.wasm"])
    log.exec(11, 1, b"/w", b"./b.wasm", [b"./b.wasm"], ["wasm"], [b"rt", b"./b.wasm"])
    log.exited(10, 0)
    log.exited(11, 2 << 8)
    log.exec(12, 1, b"/w", b"./c", [b"./c"], ["qemu"], [b"qemu", b"./c"])
    log.exec_failed(12, 2)
    log.close()
    lines = stream.getvalue().splitlines()
    assert json.loads(lines[0])["argv"] == ["./a.wasm", "\udcff"]  # bytes kept, JSON valid
    text, passed = summarize(lines)
    assert not passed
    assert "wasm                      2" in text
    assert "exit 2 after" in text and "[wasm] in /w: ./b.wasm" in text
    assert "exec failed (No such file or directory): ./c" in text
    assert summarize(lines[:2])[0].endswith("no summary: the run was cut short")


def event(kind, time, **fields):
    return json.dumps({"event": kind, "time": time, **fields})


def exec_event(pid, time, argv, rule="wasm"):
    return event("exec", time, pid=pid, ppid=1, cwd="/w", path=argv[0], argv=argv,
                 rules=[rule], emulator=["rt", *argv])


def test_a_run_that_execs_another_rerouted_file_counts_both_rules():
    lines = [exec_event(10, 100.0, ["./a.wasm"], "wasm"),
             exec_event(10, 100.5, ["./b.aarch64"], "aarch64"),  # same pid: a.wasm exec'd it
             event("exit", 101.5, pid=10, status=0, duration=1.0)]
    text, passed = summarize(lines)
    assert passed
    assert "aarch64                   1     1.000    1.000" in text
    assert "wasm                      1     0.500    0.500" in text


def check_trace_events(trace: dict) -> None:
    """What Chrome's trace-event format asks of what we write (the JSON Object Format)."""
    assert set(trace) == {"traceEvents", "displayTimeUnit"}
    for event in trace["traceEvents"]:
        assert event["ph"] in ("X", "i", "M") and isinstance(event["name"], str)
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        if event["ph"] == "X":
            assert isinstance(event["ts"], int) and event["ts"] >= 0 and event["dur"] >= 1
        if event["ph"] == "i":
            assert event["s"] in ("g", "p", "t") and isinstance(event["ts"], int)
        if event["ph"] == "M":
            assert event["name"] == "process_name" and event["args"]["name"]
    json.dumps(trace)


def test_the_trace_has_a_track_per_process_and_a_slice_per_run():
    from wasmbinfmt.report.execlog import trace

    lines = [exec_event(10, 100.0, ["./a.wasm", "x"]),
             exec_event(10, 100.5, ["./b.aarch64"], "aarch64"),  # the same pid execs again
             exec_event(11, 100.2, ["/t/c.wasm"]),
             event("exit", 101.5, pid=10, status=0, duration=1.0),
             event("refused", 101.6, pid=12, path="./loop.wasm", errno=40,
                   error="Too many levels of symbolic links"),
             event("summary", 102.0, rerouted={}, native_attempts=0, failed=0,
                   exited_nonzero=0, unfinished=1, duration=2.0)]
    result = trace(lines)
    check_trace_events(result)
    slices = [(e["pid"], e["name"], e["ts"], e["dur"], e["args"]["status"])
              for e in result["traceEvents"] if e["ph"] == "X"]
    assert sorted(slices) == [(10, "aarch64: b.aarch64", 500000, 1000000, 0),
                              (10, "wasm: a.wasm", 0, 500000, "exec'd again"),
                              (11, "wasm: c.wasm", 200000, 1800000, "unfinished")]
    tracks = {e["pid"]: e["args"]["name"] for e in result["traceEvents"] if e["ph"] == "M"}
    assert tracks == {10: "a.wasm (10)", 11: "c.wasm (11)"}
    (failed,) = [e for e in result["traceEvents"] if e["ph"] == "i"]
    assert (failed["pid"], failed["ts"]) == (12, 1600000)


def test_log_writes_a_trace_of_a_real_run_and_says_where_to_open_it(box, tmp_path):
    log, out = tmp_path / "run.jsonl", tmp_path / "run.trace.json"
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--log", str(log), "--", "sh",
                           "-c", "./probe.wasm a > /dev/null & ./probe.wasm b >/dev/null; wait"],
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    events(log)  # complete
    shown = subprocess.run([sys.executable, "-m", "wasmbinfmt", "log", str(log), "--trace",
                            str(out)], capture_output=True, text=True, timeout=TIMEOUT)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1] == (
        f"timeline written to {out}: open it in https://ui.perfetto.dev (Open trace file) or "
        f"chrome://tracing (Load)")
    result = json.loads(out.read_text())
    check_trace_events(result)
    runs = [e for e in result["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["args"]["argv"][1] for e in runs) == ["a", "b"]
    assert len({e["pid"] for e in runs}) == 2  # a track each


# Fetched from npm at test time, pinned: a trace viewer and the library that drives the
# browser (Debian's chromium, which .ci/run installs).
BROWSER_PACKAGES = ("speedscope@1.25.0", "playwright-core@1.60.0")  # Node 18: Debian 12


def test_a_real_browser_draws_the_trace_a_track_per_process(box, tmp_path):
    import http.server
    import threading

    if not (shutil.which("node") and shutil.which("npm") and os.path.exists("/usr/bin/chromium")):
        pytest.fail("needs node, npm and Debian's chromium (.ci/run installs them)")
    log = tmp_path / "run.jsonl"
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--log", str(log), "--", "sh",
                           "-c", "./probe.wasm a > /dev/null & ./probe.wasm b >/dev/null; wait"],
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    events(log)
    npm = tmp_path / "npm"
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm),
                                "--cache", str(tmp_path / "npm-cache"), *BROWSER_PACKAGES],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    site = npm / "node_modules" / "speedscope" / "dist" / "release"
    written = subprocess.run([sys.executable, "-m", "wasmbinfmt", "log", str(log), "--trace",
                              str(site / "run.trace.json")], capture_output=True, timeout=60)
    assert written.returncode == 0, written.stderr

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        shot = tmp_path / "trace.png"
        shown = subprocess.run(
            ["node", str(Path(__file__).parent / "browser" / "render_trace.js"),
             str(npm / "node_modules" / "playwright-core"),
             f"{base}/index.html#profileURL={base}/run.trace.json", str(shot)],
            capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    assert shown.returncode == 0, shown.stderr[-2000:]
    page = json.loads(shown.stdout.splitlines()[-1])
    assert page["errors"] == []
    assert re.search(r"probe\.wasm \(\d+\) \(pid \d+, tid \d+\) \(1/2\)", page["text"]), page
    assert shot.stat().st_size > 5000  # a drawn page, not an empty one


def test_death_by_a_signal_is_named_and_the_slowest_runs_are_listed():
    lines = [exec_event(10 + i, 100.0, [f"./p{i}.wasm"]) for i in range(7)]
    lines += [event("exit", 101, pid=10 + i, status=0, duration=float(i)) for i in range(6)]
    lines.append(event("exit", 101, pid=16, status=-9, duration=0.25))
    text, passed = summarize(lines)
    assert not passed
    assert "killed by SIGKILL after 0.250s [wasm] in /w: ./p6.wasm" in text
    slowest = text.split("slowest runs:\n")[1].splitlines()[:5]
    assert [line.split()[-1] for line in slowest] == [f"./p{i}.wasm" for i in (5, 4, 3, 2, 1)]
    assert "exit -9" not in text


def test_wasmbinfmt_log_reads_a_file(tmp_path):
    log = tmp_path / "l.jsonl"
    log.write_text('{"event": "summary", "time": 1, "rerouted": {}, "native_attempts": 1, '
                   '"failed": 0, "exited_nonzero": 0, "unfinished": 0, "duration": 0.5}\n')
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "log", str(log)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "native exec attempts: 1" in done.stdout
    log.write_text("not json\n")
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "log", str(log)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and "line 1 is not JSON" in done.stderr


def test_log_output_records_what_each_rerouted_exec_printed(box, user):
    """--log-output: every byte still reaches the caller, status and signal are kept, and
    each invocation's streams are logged (digest, length, the bytes kept)."""
    import hashlib

    log = box / "run.jsonl"
    script = ("./probe.wasm a b; ./probe.wasm trap; echo status $?; "
              "./probe.wasm spin >/dev/null & pid=$!; sleep 1; kill -TERM $pid; wait $pid; "
              "echo status $?; ./probe.wasm count >&-; echo status $?")
    done = wasmbinfmt(user, ["--log", str(log), "--log-output", "--", "sh", "-c", script],
                      cwd=box)
    assert done.stdout.decode().splitlines() == [
        "argc=3", "argv[0]=./probe.wasm", "argv[1]=a", "argv[2]=b", "status 134",
        "status 143", "status 0"], done.stderr
    assert b"trap: wasm `unreachable`" in done.stderr
    outputs = [e for e in events(log) if e["event"] == "output"]
    assert len(outputs) == 4  # the killed one too: the signal went on to its emulator
    first = outputs[0]
    printed = b"argc=3\nargv[0]=./probe.wasm\nargv[1]=a\nargv[2]=b\n"
    assert first["stdout"]["bytes"] == len(printed) and first["stderr"]["bytes"] == 0
    assert first["stdout"]["blake2b"] == hashlib.blake2b(printed, digest_size=32).hexdigest()
    assert open(first["stdout"]["file"], "rb").read() == printed
    assert outputs[1]["stderr"]["bytes"] > 0 and "stdout" not in outputs[3]


def test_log_output_lets_a_closed_reader_end_the_program_as_natively(box, user):
    """`| head`: the emulator's next write meets the closed reader (here SIGPIPE, as the
    native program), not a recorder draining it for ever."""
    script = ('./probe.{} spew 1000000000 | head -c 10; echo " ${{PIPESTATUS[*]}}"; '
              "./probe.{} spew 100000 2>&1 | head -c 10; echo")
    native = subprocess.run(user(["bash", "-c", script.format("native", "native")]),
                            cwd=box, capture_output=True, timeout=TIMEOUT)
    log = box / "run.jsonl"
    done = wasmbinfmt(user, ["--log", str(log), "--log-output", "--", "bash", "-c",
                             script.format("wasm", "wasm")], cwd=box)
    assert native.stdout.splitlines()[0].endswith(b" 141 0") and len(native.stdout) == 28
    assert (done.returncode, done.stdout) == (0, native.stdout), done.stderr
    assert len([e for e in events(log) if e["event"] == "output"]) == 2


def test_log_output_changes_nothing_a_signal_does(box, user):
    """The caller's ignored SIGINT stays ignored; SIGSTOP (which no handler sees) stops the
    emulator too (t: a stop of a traced process), SIGCONT goes on to it; SIGKILL (which no
    one can pass on) kills it too, no emulator left running."""
    ready = "until grep -q ready r 2>/dev/null; do sleep 0.02; done; rm r; "
    script = ("sh -c 'trap \"\" INT; exec ./probe.wasm spin' >r & pid=$!; " + ready +
              "kill -INT $pid; sleep 0.3; kill -TERM $pid; wait $pid; echo int, term: $?; "
              "./probe.wasm spin >r & pid=$!; " + ready +
              "kill -STOP $pid; sleep 0.3; echo stopped: $(ps -o stat= --ppid $pid | tr t T | cut -c1); "
              "kill -CONT $pid; sleep 0.3; echo going on: $(ps -o stat= --ppid $pid | cut -c1); "
              "kill -KILL $pid; wait $pid; echo killed: $?; sleep 0.3; "
              "echo left: $(ps -eo args | grep -c '^[^ ]*python3* -I .* spin$')")
    log = box / "run.jsonl"
    done = wasmbinfmt(user, ["--log", str(log), "--log-output", "--", "bash", "-c", script],
                      cwd=box)
    assert done.stdout.decode().splitlines() == [
        "int, term: 143", "stopped: T", "going on: R", "killed: 137", "left: 0"], done.stderr


def test_log_output_needs_a_log(box):
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--log-output", "--", "true"],
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 2 and b"--log-output records into the --log FILE" in done.stderr


def test_log_output_needs_a_log_the_recorders_can_open_by_its_path(box, user):
    """The recorders append to the log by path: a pipe (/dev/stdout of `| cat`) has none,
    a regular file has, whatever name it was given (`>>`: the program's writes and the
    log's share it), unless it was removed."""
    tool = f"{sys.executable} -m wasmbinfmt --log /dev/stdout --log-output --"
    script = (f"{tool} ./probe.wasm piped | cat > piped.txt; echo piped $? >> said.txt; "
              f"{tool} ./probe.wasm filed >> filed.txt; echo filed $? >> said.txt; "
              f"exec 3>> gone.txt; rm gone.txt; {tool} ./probe.wasm gone >&3; "
              f"echo gone $? >> said.txt")
    done = subprocess.run(user(["bash", "-o", "pipefail", "-c", script]), cwd=box,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (box / "said.txt").read_text() == "piped 2\nfiled 0\ngone 2\n", done.stderr
    assert done.stderr == 2 * (
        "wasmbinfmt: --log-output records into the --log FILE by its name, and /dev/stdout "
        "is not a file that has one (a pipe, a terminal, a removed file)\n")
    assert (box / "piped.txt").read_text() == ""  # refused before the program ran
    filed = (box / "filed.txt").read_text().splitlines(keepends=True)
    printed = "".join(line for line in filed if not line.startswith("{"))
    assert printed == "argc=2\nargv[0]=./probe.wasm\nargv[1]=filed\n"
    (output,) = [json.loads(line) for line in filed if '"output"' in line]
    assert output["stdout"]["bytes"] == len(printed)
