"""The warm WASI runner (runners/warm.py, trace/handoff.py): a module exec handed to the run's
host behaves as the runner started in the caller's pid (--cold-runner) and as a native
program: statuses, output, state, signals, job control, the terminal; and nothing outlives
the run. Every test runs as the current user and as an unprivileged one.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_safety import TIMEOUT, wasmbinfmt

WARM = b" (warm)\n"  # how -v ends the line of an exec handed to the warm runner
LAUNCHED = b" (launched)\n"  # and of one the launcher runs (runners/launcher.py)


@pytest.fixture(autouse=True)
def warm_runner_only(monkeypatch):
    """Module execs go to the warm runner, not to the launcher, which would take those
    whose code is cached (its own tests: the corpus below, and test_launcher.py)."""
    monkeypatch.setenv("WASMBINFMT_LAUNCHER", "off")

# Each line is run warm and cold, and must give the same status, stdout and stderr.
CORPUS = [
    "./probe.wasm a 'b c' ''",
    "./hello.wasm",
    *[f"./probe.wasm exit {n}" for n in (0, 1, 2, 125, 126, 127, 128, 200, 255, 256, 511)],
    "./probe.wasm trap",
    "./probe.wasm env HOME; X=1 ./probe.wasm env X; env -i ./probe.wasm env PATH",
    "./probe.wasm cwd; cd /tmp && $OLDPWD/probe.wasm cwd",
    "umask 077; ./probe.wasm write f hi; stat -c %a f; ./probe.wasm read f",
    "printf 'line 1\\nline 2\\n' | ./probe.wasm cat",
    "./probe.wasm cat </dev/null; ./probe.wasm cat <&-; echo $?",
    "./probe.wasm count >&-; echo status $?; ./probe.wasm trap 2>&-; echo status $?",
    "(./hello.wasm; ./probe.wasm x; ./hello.wasm) > out; cat out",
    "ulimit -s 16384; ./probe.wasm recurse 100000",
    "ulimit -s 1024; ./probe.wasm recurse 100000 2>&1 | head -c 40; echo",
    NO_CODE_TO_CACHE := "./missing.wasm; echo $?; printf '\\0asm\\1\\0\\0\\0junk' > bad.wasm; "
    "chmod +x bad.wasm; ./bad.wasm; echo $?",
    "for i in 1 2 3 4 5 6 7 8; do ./probe.wasm exit $i & p=\"$p $!\"; done; "
    "for i in $p; do wait $i; echo $?; done; "
    "for i in 1 2 3; do ./probe.wasm x$i >o$i & done; wait; cat o1 o2 o3",
    "./probe.wasm $(printf '\\377'); echo $?",
    "cp probe.wasm m.wasm; for i in 1 2 3; do ./m.wasm $i; done; cp hello.wasm m.wasm; "
    "./m.wasm; ./m.wasm; cp probe.wasm m.wasm; ./m.wasm again",
]


def run(user, box, script: str, *options: str) -> subprocess.CompletedProcess:
    return wasmbinfmt(user, ["-v", *options, "--", "bash", "-c", script], cwd=box)


def without_log(stderr: bytes) -> bytes:
    return b"".join(line for line in stderr.splitlines(keepends=True)
                    if not line.startswith(b"wasmbinfmt: ["))


@pytest.mark.parametrize("way", ["warm", "launched"])
@pytest.mark.parametrize("script", CORPUS)
def test_a_warm_exec_gives_what_the_cold_runner_gives(box, user, script, way, monkeypatch):
    """The warm runner, and the launcher once a first run has cached the modules' code."""
    if way == "launched":
        monkeypatch.delenv("WASMBINFMT_LAUNCHER")
        run(user, box, script)
    fast = run(user, box, script)
    cold = run(user, box, script, "--cold-runner")
    assert (WARM if way == "warm" else LAUNCHED) in fast.stderr or (
        way == "launched" and script == NO_CODE_TO_CACHE and WARM in fast.stderr)
    assert WARM not in cold.stderr and LAUNCHED not in cold.stderr
    assert (fast.returncode, fast.stdout, without_log(fast.stderr)) == (
        cold.returncode, cold.stdout, without_log(cold.stderr))


@pytest.mark.parametrize("prefix", ["setsid -w", "unshare -U -r", "prlimit --nofile=32:32"])
def test_a_caller_the_host_cannot_stand_in_for_starts_the_runner_itself(box, user, prefix):
    """Another session, namespace or a tight descriptor limit: the cold way, same result."""
    done = run(user, box, f"{prefix} ./probe.wasm cwd")
    assert done.returncode == 0 and done.stdout == f"{box}\n".encode(), done.stderr
    assert b"] wasm ./probe.wasm\n" in done.stderr and WARM not in done.stderr


def session_processes(sid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid:
                found.append(f"{entry} {stat[stat.index('(') + 1:stat.rindex(')')]}")
    return found


def run_in_own_session(user, box, script: str) -> tuple[subprocess.CompletedProcess, list]:
    """The run, and the processes of its session still there 10 s after it returned."""
    process = subprocess.Popen(user([sys.executable, "-m", "wasmbinfmt", "-v", "--", "bash",
                                     "-c", script]), cwd=box, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    deadline = time.monotonic() + 10
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return done, session_processes(process.pid)


def test_any_argv_and_environment_the_kernel_takes_runs_and_the_host_stands(box, user):
    """Many short strings: a request carries each with a few bytes more than its length, so
    argv or environment under one message's size can make a request over it. Such an exec
    runs (the cold way), and the host, and the module it runs beside it, go on. So does
    one whose request fits but which a spare could not take."""
    script = ("mkfifo f; ./probe.wasm wait <f >beside & exec 3>f; "
              "./probe.wasm count $(seq 10000); echo $?; "
              "env $(seq -f 'V%05g=abcdefghijk' 3000) ./probe.wasm env V03000; echo $?; "
              "for i in 1 2 3; do env $(seq -f 'V%05g=abcdefghijk' 2400) "
              "./probe.wasm env V02400; done; "
              "./probe.wasm count 1 2; exec 3>&-; wait $!; echo beside $? $(cat beside)")
    done = run(user, box, script)
    assert done.stdout.decode().splitlines() == [
        "argc=10002", "0", "abcdefghijk", "0", *["abcdefghijk"] * 3, "argc=4",
        "beside 0 ready eof"], done.stderr
    # Warm: the module beside, the 2400 variables (a request that fits; the third time
    # the spare has the module, but not room for them), and the last exec.
    assert done.stderr.count(WARM) == 5


@pytest.mark.parametrize("entries", [
    ["A=1", "NOEQUALS", "A=2", "B=", "C=x=y", "LC_CTYPE=C", "PYTHONPATH=/nowhere"], []])
def test_the_environment_arrives_as_the_exec_gave_it(box, user, entries):
    """Byte for byte, in order, a name given twice twice, under either runner, but an entry
    without "=", which WASI cannot carry. Nothing is added or changed: a runner started for
    the exec is a Python, whose start coerces a C locale (LC_CTYPE=C.UTF-8 in its
    os.environ, set or replaced)."""
    native = subprocess.run(user([str(box / "execer"), "env-exactly", "./probe.native",
                                  *entries]), cwd=box, capture_output=True)
    assert (native.returncode, native.stdout) == (0, "".join(f"{e}\n" for e in entries).encode())
    expected = "".join(f"{e}\n" for e in entries if "=" in e).encode()
    for options, warm in (((), True), (("--cold-runner",), False)):
        done = wasmbinfmt(user, ["-v", *options, "--", "./execer", "env-exactly", "./probe.wasm",
                                 *entries], cwd=box)
        assert (done.returncode, done.stdout, WARM in done.stderr) == (0, expected, warm), \
            done.stderr


@pytest.mark.parametrize("how", ["execveat:fd:e", "execveat:fd-opath:e", "/proc/self/fd/7",
                                 "/dev/fd/7"])
def test_a_module_named_by_a_descriptor_is_read_from_the_callers(box, user, how):
    """fexecve, execveat(fd, "", AT_EMPTY_PATH) or a path through /proc/self/fd or /dev/fd:
    the runner is told a path naming the caller's descriptor, 7 here (at a run's first
    module exec the host's own 7 is a status pipe), which the warm runner reads from the
    caller's table, as the runner started in the caller's pid does."""
    run_it = (f"./execer {how} ./probe.wasm probe count" if how.startswith("execveat")
              else f"exec 7<probe.wasm; ./execer execve {how} probe count")
    script = f"exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null; {run_it}; echo $?; " \
             "./probe.wasm exit 3; echo $?"
    for options, warm in (((), 2), (("--cold-runner",), 0)):
        done = run(user, box, script, *options)
        assert (done.stdout, done.stderr.count(WARM)) == (b"argc=2\n0\n3\n", warm), \
            done.stderr


@pytest.mark.parametrize("mode", ["thread", "threads"])
def test_a_module_exec_from_any_thread_is_served(box, user, mode):
    """A thread other than the main one (its exec stops under the main thread's id, its own
    gone) or the main one while others run: served warm, status as natively."""
    native = subprocess.run(user([str(box / "execer"), mode, "./probe.native", "p", "exit",
                                  "9"]), cwd=box, capture_output=True, timeout=TIMEOUT)
    assert native.returncode == 9, native.stderr
    for options, warm in (((), 1), (("--cold-runner",), 0)):
        done = run(user, box, f"./execer {mode} ./probe.wasm p exit 9; echo $?", *options)
        assert (done.stdout, done.stderr.count(WARM)) == (b"9\n", warm), done.stderr


def test_the_module_has_the_callers_oom_score_adjustment_io_priority_no_new_privs(box, user):
    """execve keeps them (choom, ionice, setpriv): so does the warm worker; every process
    writing to spin.out (the caller's, and the worker running the module) has the caller's
    I/O class."""
    script = ("./probe.wasm read /proc/self/oom_score_adj; ./probe.wasm read /proc/self/status "
              "NoNewPrivs; ./probe.wasm spin >spin.out & "
              "until grep -q ready spin.out 2>/dev/null; do sleep 0.02; done; "
              "for d in /proc/[0-9]*; do [ \"$(readlink $d/fd/1)\" = $PWD/spin.out ] && "
              "ionice -p ${d#/proc/}; done 2>/dev/null | sort | uniq -c; kill $!")
    for options, warm in (((), 3), (("--cold-runner",), 0)):
        done = wasmbinfmt(user, ["-v", *options, "--", "choom", "-n", "900", "--", "ionice",
                                 "-c", "3", "setpriv", "--no-new-privs", "bash", "-c", script],
                          cwd=box)
        assert done.stdout.split() == [b"900", b"NoNewPrivs:", b"1", b"2" if warm else b"1",
                                       b"idle"], done.stderr
        assert done.stderr.count(WARM) == warm


def test_the_host_keeps_a_bounded_number_of_module_bytes(box, user):
    """Forty distinct 2 MiB modules, each run once (each compiled by its worker, so the host
    never loads its code): the host's memory grows by a bounded number of their bytes, not
    by all of them (it is inherited by every worker forked)."""
    hello = (box / "hello.wasm").read_bytes()
    payload = 2 << 20
    for n in range(40):  # a custom section: id 0, size, name, payload
        name = f"pad{n:02}".encode()
        body = bytes([len(name)]) + name + bytes([n]) * payload
        size, leb = len(body), bytearray()
        while True:
            leb.append(size & 0x7F | (0x80 if size >> 7 else 0))
            size >>= 7
            if not size:
                break
        path = box / f"m{n:02}.wasm"
        path.write_bytes(hello + b"\0" + bytes(leb) + body)
        path.chmod(0o755)
    script = ("sid=$(cut -d' ' -f6 /proc/$$/stat); "
              "host_anon() { for d in /proc/[0-9]*; do "
              "grep -qx wasmbinfmt-wasi $d/comm 2>/dev/null || continue; "
              "set -- $(sed 's/.*) //' $d/stat); [ \"$4\" = \"$sid\" ] || continue; "
              "grep -qx wasmbinfmt-wasi /proc/$2/comm 2>/dev/null && continue; "
              "awk '/RssAnon/ { print $2 }' $d/status; done; }; "
              "./m00.wasm >/dev/null; echo $(host_anon); "
              "for m in m*.wasm; do ./$m >/dev/null || echo failed $m; done; echo $(host_anon)")
    done = run(user, box, script)
    first, last = map(int, done.stdout.split())  # KiB
    assert done.stderr.count(WARM) == 41, done.stderr
    assert last - first < 48 << 10, (first, last)


@pytest.mark.parametrize("served", ["fork", "spare"])
def test_a_signal_sent_at_once_meets_the_callers_dispositions(box, user, served):
    """A caller ignoring SIGTERM execs a module and is sent SIGTERM at once, while the
    worker is still being made (a new file each time: a fork; the same: the spare): ignored,
    as natively, never the host's default."""
    module = "p$i.wasm" if served == "fork" else "probe.wasm"
    script = ("trap '' TERM; for i in $(seq 30); do cp probe.wasm p$i.wasm; "
              f"./{module} exit 0 & kill -TERM $!; wait $!; echo $?; done | sort | uniq -c")
    done = run(user, box, script)
    assert done.stdout.split() == [b"30", b"0"], done.stderr
    assert done.stderr.count(WARM) == 30


def test_under_a_hard_descriptor_limit_a_module_opens_as_many_files_as_under_the_cli(box, user):
    """ulimit -n 64, soft and hard: what the runner holds (preopens, wasmtime's own) costs
    the program no more descriptors than the wasmtime CLI's do (natively: 60)."""
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    script = "ulimit -n 64; {} openmany /dev/null"
    cli = subprocess.run(user(["bash", "-c", script.format(f"{runnable_binary()} run --dir=/ "
                                                           "probe.wasm")]),
                         cwd=box, capture_output=True, timeout=TIMEOUT)
    assert cli.stdout.startswith(b"opened "), cli.stderr
    for options in ((), ("--cold-runner",)):
        done = run(user, box, script.format("./probe.wasm"), *options)
        assert done.stdout.startswith(b"opened "), done.stderr
        assert int(done.stdout.split()[1]) >= int(cli.stdout.split()[1])


# What runs before a module's exec so that a worker forked for it serves it, or the spare
# (a worker forked ahead, which has the module ready once the host has had it).
SERVED_BY = {"fork": "", "spare": "./probe.wasm x >/dev/null; ./probe.wasm x >/dev/null; "}


@pytest.fixture(params=sorted(SERVED_BY))
def served_by(request) -> str:
    return SERVED_BY[request.param]


def test_a_spare_forked_before_the_exec_serves_a_module_the_host_has_ready(box, user):
    """The worker's pid (the module reads its /proc/self/status) against its client's:
    forked after it for the first exec of a module, before it once the spare has it."""
    script = ("export WASMBINFMT_CACHE_DIR=$PWD/cache; for i in 1 2 3 4; do "
              "./probe.wasm read /proc/self/status Pid: & c=$!; wait; echo $c; done")
    done = run(user, box, script)
    workers, clients = [], []
    for line in done.stdout.decode().splitlines():
        if line.startswith("Pid:"):
            workers.append(int(line.split()[1]))
        else:
            clients.append(int(line))
    assert len(workers) == len(clients) == 4, done.stderr
    assert workers[0] > clients[0]  # compiled in a worker forked for it
    assert workers[3] < clients[3]  # the spare


# (Not SIGINT: a shell without job control starts background jobs with it ignored.)
@pytest.mark.parametrize("sig, status", [("TERM", 143), ("USR1", 138), ("KILL", 137),
                                         ("HUP", 129)])
def test_a_signal_to_the_module_ends_it_and_leaves_nothing_behind(box, user, sig, status,
                                                                   served_by):
    script = (f"{served_by}./probe.wasm spin & pid=$!; sleep 1; kill -{sig} $pid; wait $pid; "
              f"echo status $?")
    done, left = run_in_own_session(user, box, script)
    assert done.stdout == f"ready\nstatus {status}\n".encode(), done.stderr
    assert WARM in done.stderr and left == []


def test_timeout_ends_a_module_as_natively(box, user, served_by):
    done, left = run_in_own_session(user, box,
                                    f"{served_by}timeout 1 ./probe.wasm spin; echo status $?")
    assert done.stdout == b"ready\nstatus 124\n" and WARM in done.stderr and left == []


def test_the_hosts_death_fails_its_execs_with_126_and_later_ones_run_cold(box, user):
    """A module whose host is killed ends with 126 and a message; an exec at that moment
    may too (its request went to the dying host); later ones start the runner."""
    script = ("./probe.wasm spin & pid=$!; sleep 1; pkill -KILL -s 0 -x wasmbinfmt-wasi; "
              "wait $pid; echo status $?; ./probe.wasm cwd >/dev/null; sleep 0.5; "
              "./probe.wasm cwd")
    done, left = run_in_own_session(user, box, script)
    assert done.stdout == f"ready\nstatus 126\n{box}\n".encode(), done.stderr
    assert b"wasmbinfmt: the warm WASI runner has stopped\n" in done.stderr and left == []
    assert not done.stderr.endswith(WARM + b"\n")


GROUP_STATES = ("g=$(ps -o pgid= $pid | tr -d ' '); ps -eo pgid=,stat=,comm= | "
                "awk -v g=$g '$1 == g && $3 !~ /^(bash|ps|awk|tr|sort)$/ "
                "{print substr($2, 1, 1), $3}' | sort; echo -")


def test_stop_and_continue_reach_the_module(box, user, served_by):
    """SIGSTOP to the module's pid stops the client and the worker; SIGCONT resumes both."""
    script = (f"{served_by}./probe.wasm spin & pid=$!; sleep 1; kill -STOP $pid; sleep 0.5; "
              f"{GROUP_STATES}; kill -CONT $pid; sleep 0.5; {GROUP_STATES}; kill $pid; "
              f"wait $pid; echo status $?")
    done, left = run_in_own_session(user, box, script)
    # (A stopped tracee shows "t", tracing stop: any program's does, under wasmbinfmt.)
    blocks = done.stdout.decode().replace("t ", "T ").split("-\n")
    assert [sorted(block.splitlines()) for block in blocks] == [
        ["T sh", "T wasmbinfmt-wasi", "ready"], ["R wasmbinfmt-wasi", "S sh"], ["status 143"]
    ], done.stderr
    assert WARM in done.stderr and left == []


def test_a_background_module_reading_the_terminal_stops_as_natively(box, user):
    script = "{m} wait & sleep 2; jobs; kill -KILL %1; wait 2>/dev/null; echo end"
    outputs = []
    for module in ("./probe.native", "./probe.wasm"):
        status, output = in_terminal(user, box, ["bash", "-m", "-c", script.format(m=module)])
        outputs.append((status, output.replace(b"probe.native", b"probe.wasm")))
    assert outputs[0] == outputs[1]
    assert b"Stopped" in outputs[1][1] and outputs[1][1].endswith(b"end\r\n")


def in_terminal(user, box, command: list[str], keys: list[tuple[float | bytes, bytes]] = (),
                options: tuple[str, ...] = ()) -> tuple[int, bytes]:
    """Run `wasmbinfmt OPTIONS -- COMMAND` on a new terminal, typing `keys`, each once
    its `when` has come: a pause (seconds after the key before), or the bytes to wait for
    in what is printed after the key before (a slow machine, such as an emulated one,
    takes longer than any pause to start a program); its wait status and what it
    printed."""
    pid, master = pty.fork()
    if pid == 0:
        os.chdir(box)
        argv = user([sys.executable, "-m", "wasmbinfmt", *options, "--", *command])
        os.execvp(argv[0], argv)
    output = b""
    keys = list(keys)
    deadline = time.monotonic() + TIMEOUT
    since, typed_at = 0, time.monotonic()  # where the output after the last key starts

    def due(when: float | bytes) -> bool:
        if isinstance(when, bytes):
            return when in output[since:]
        return time.monotonic() >= typed_at + when
    while time.monotonic() < deadline:
        if keys and due(keys[0][0]):
            when, key = keys.pop(0)
            os.write(master, key)
            since = output.index(when, since) + len(when) if isinstance(when, bytes) \
                else len(output)
            typed_at = time.monotonic()
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last user has closed it
                chunk = b""
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return status, output


def test_ctrl_c_in_a_terminal_ends_the_module_and_its_shell(box, user, served_by):
    status, output = in_terminal(user, box,
                                 ["sh", "-c", f"{served_by}./probe.wasm spin; echo after"],
                                 [(b"ready", b"\x03")])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT, (status, output)
    assert b"ready" in output and b"after" not in output


# A line typed to `cat`, Ctrl-Z, `jobs`, `fg`, another line, Ctrl-D: each key once the
# output says the one before has been taken.
TERMINAL_SCRIPT = ("stty -echo; echo ready; {m} cat; echo stopped $?; jobs; "
                   "fg %1 >/dev/null; echo status $?")
TERMINAL_KEYS = [(b"ready\r\n", b"one\n"), (b"one\r\n", b"\x1a"), (b"stopped 148", b"two\n"),
                 (b"two\r\n", b"\x04")]


def test_a_module_reads_the_terminal_and_ctrl_z_and_fg_work_as_natively(box, user):
    """Typed lines reach the module; Ctrl-Z stops its job (the shell goes on: `jobs` says
    Stopped), `fg` gives it the terminal again; the same as for a native program."""
    outputs = []
    for module in ("./probe.native", "./probe.wasm"):
        status, output = in_terminal(user, box, terminal_session(module), TERMINAL_KEYS)
        outputs.append((status, output.replace(b"probe.native", b"probe.wasm")))
    assert outputs[0] == outputs[1]
    check_terminal_session(outputs[1][1])


def terminal_session(module: str) -> list[str]:
    return ["bash", "-m", "-c", TERMINAL_SCRIPT.format(m=module)]


def check_terminal_session(output: bytes) -> None:
    text = output.replace(b"\r\n", b"\n")
    assert text.startswith(b"ready\none\n") and b"Stopped" in text, text
    assert b"stopped 148\n" in text and text.endswith(b"two\ndone\nstatus 0\n"), text


ENTRIES = "entries() { ls cache/modules | grep -o -e '-cranelift+' -e '-winch+' | sort; }; "


def test_a_long_run_on_winchs_code_has_cranelifts_compiled_alongside(box, user):
    """A module run in milliseconds keeps Winch's code, its runs counted in its usage record
    (tiers.py); one whose run spends more than Cranelift's price over the runs to come, in
    the run that compiled it, has Cranelift's compiled while it runs, by the run's compiler
    (a process of its own, not the worker: the host has no thread to lose), which then
    removes Winch's entry and the record; a later run takes Cranelift's (its entry is
    read: its time refreshed). Each run is warm."""
    from test_wasi_runner import big_module

    quick, status = big_module(box)
    busy, busy_status = big_module(box, spin=4_000_000_000)  # ~1 s on Winch's code
    for path in (quick, busy):
        path.chmod(0o755)
    script = ("export WASMBINFMT_CACHE_DIR=$PWD/cache; " + ENTRIES +
              "./big.wasm; ./big.wasm; echo $? $(entries) $(ls cache/modules/*.usage | wc -l); "
              "rm -r cache; ./big4000000000.wasm; echo $?; "
              "for i in $(seq 600); do entries | grep -q winch || break; sleep 0.1; done; "
              "echo $(entries) $(ls cache/modules | grep -c usage); "
              "touch -d @1000000000 cache/modules/*-cranelift+*; "
              "./big4000000000.wasm; echo $? $(stat -c %Y cache/modules/*-cranelift+*)")
    done = run(user, box, script)
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 4, done.stderr
    assert lines[0] == f"{status} -winch+ 1"
    assert lines[1:3] == [str(busy_status), "-cranelift+ 0"]
    final_status, mtime = lines[3].split()
    assert final_status == str(busy_status) and int(mtime) > 1000000000
    assert done.stderr.count(WARM) == 4


def paying_module(box, user) -> tuple[dict, Path, str]:
    """A module with Winch's code cached whose record says Cranelift's pays (not due before
    a run: a run starts on Winch's code): the environment naming the cache, the cache, the
    module's name there."""
    import marshal

    from test_wasi_runner import big_module
    from wasmbinfmt.runners import tiers

    path, status = big_module(box, spin=4_000_000_000, functions_count=16000)  # ~20 MiB
    path.chmod(0o755)
    cache = box / "cache"
    env = {**os.environ, "WASMBINFMT_CACHE_DIR": str(cache)}
    first = wasmbinfmt(user, ["--cold-runner", "--", str(path)], cwd=box, env=env)
    assert first.returncode == status, first.stderr
    (record,) = cache.glob("modules/*.usage")
    name, (runs, lost, winch_compile) = marshal.loads(record.read_bytes())
    paying = (1, tiers.price((1, 0, winch_compile), 0) / 2, winch_compile)
    assert tiers.cranelift_pays(paying, 0) and not tiers.compile_before_run(paying, 0)
    record.write_bytes(marshal.dumps((name, paying)))
    return env, cache, name


def compiles_while_it_runs(box, user, env: dict, before: str) -> int:
    """The number of compiles the run's compiler has under way half a second into the
    module's exec, in a run of `before` then the module (killed then, which ends the
    run)."""
    go, started = box / "go", box / "started"
    go.unlink(missing_ok=True)
    started.unlink(missing_ok=True)
    process = subprocess.Popen(
        user([sys.executable, "-m", "wasmbinfmt", "--", "bash", "-c",
              f"{before}./big4000000000.wasm & touch {started}; "
              f"until [ -e {go} ]; do sleep 0.05; done; kill $!"]),
        cwd=box, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        compiler = _compilers(env["WASMBINFMT_CACHE_DIR"], 1)[0]
        deadline = time.monotonic() + TIMEOUT
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        compiles = len(_children(compiler))
    finally:
        go.touch()
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    return compiles


def _compilers(cache: str, at_least: int) -> list[str]:
    """The compiler processes of the runs with this cache, once there are `at_least`: the
    compiler first, then the child it compiles in."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [pid for pid in map(str, _pids()) if _comm(pid) == "wasmbinfmt-tier"
                 and f"WASMBINFMT_CACHE_DIR={cache}".encode() in _environ(pid)]
        found.sort(key=lambda pid: str(_parent_or_none(pid)) in found)
        if len(found) >= at_least or time.monotonic() > deadline:
            assert len(found) >= at_least, found
            return found
        time.sleep(0.02)


def test_a_module_the_run_runs_again_has_its_compile_at_once(box, user):
    """Its record says Cranelift's code pays; the run runs it a second time: that code would
    serve the run's next execs, so the compile starts during the run."""
    env, cache, name = paying_module(box, user)
    assert compiles_while_it_runs(box, user, env, "./big4000000000.wasm >/dev/null; ") == 1
    compiler = _compilers(env["WASMBINFMT_CACHE_DIR"], 1)[0]  # finishing, the run over
    _wait_for_its_end(compiler)
    assert compiled_entries(cache, name) == ["cranelift"]


# A Cranelift compile of paying_module's ~20 MiB at the lowest priority takes minutes in
# the emulated arm64 machine (scripts/aarch64-vm.sh): what waits for one to end waits this
# long before it fails.
COMPILE_WAIT = 5 * TIMEOUT


def _wait_for_its_end(compiler: str) -> None:
    deadline = time.monotonic() + COMPILE_WAIT
    while os.path.exists(f"/proc/{compiler}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{compiler}"), "the compiler is still there"


def compile_left_under_way(box, user) -> tuple[dict, Path, str, str, str]:
    """A run that ends with Cranelift's compile left to do (its module's record says it
    pays; the run kills the module once the compiler has started, and runs it once: the
    compile is kept for after the run): the environment naming the cache, the cache, the
    module's name there, and the compiler's pid and its compile's, under way."""
    env, cache, name = paying_module(box, user)
    # The run runs the module once: the compile waits for the run's end (the compiler has
    # no child while the run lasts).
    assert compiles_while_it_runs(box, user, env, "") == 0
    compiler, compile = _compilers(str(cache), 2)  # the run over: the compile has begun
    assert str(_parent(compile)) == compiler
    # A session of its own (setsid): no terminal or group of the run's reaches it.
    assert _session(compiler) == _session(compile) == int(compiler)
    return env, cache, name, compiler, compile


def compiled_entries(cache: Path, name: str) -> list[str]:
    """The compilers whose code for module `name` the cache holds."""
    return sorted(p.name.rsplit("-", 1)[1].split("+")[0]
                  for p in cache.glob(f"modules/{name}-*.cwasm"))


def test_a_compile_under_way_when_the_run_ends_finishes_after_it(box, user):
    """The compiler (and the child it compiles in) goes on in a session of its own,
    holding none of the run's descriptors (the run returns at once), at once at the lowest
    priority, makes the entry whole, and leaves."""
    env, cache, name, compiler, compile = compile_left_under_way(box, user)
    for pid in (compiler, compile):
        held = _open_files(pid)
        # (/proc files: the compiler writes its autogroup's nice value and lowers its
        # compile's threads.)
        assert all(target == "/dev/null" or target.startswith(
            ("socket:", "pipe:", "anon_inode:", str(box), f"/proc/{compiler}/",
             f"/proc/{compile}/")) for target in held), held
    # The compile under way goes on at the lowest priority, all its threads and, where the
    # kernel has autogroups, its session's group (else it takes a session's share).
    deadline = time.monotonic() + TIMEOUT
    while (_priority(compile), _priority(compiler)) != (LOWEST, LOWEST) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    assert _priority(compile) == _priority(compiler) == LOWEST
    assert not list(cache.glob("modules/*-cranelift+*"))  # at once, not after the compile
    _wait_for_its_end(compiler)
    assert compiled_entries(cache, name) == ["cranelift"]


def test_a_compile_left_by_an_ended_run_never_runs_during_the_next(box, user):
    """Another run starts (it execs a module with the same cache) while the compile an
    ended run left is under way: the compile is given up at once (its child killed), and
    made again once no run holds the cache."""
    env, cache, name, compiler, compile = compile_left_under_way(box, user)
    started = box / "started"
    process = subprocess.Popen(user([sys.executable, "-m", "wasmbinfmt", "--", "sh", "-c",
                                     f"./probe.wasm x >/dev/null; touch {started}; sleep 3"]),
                               cwd=box, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    while os.path.exists(f"/proc/{compile}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{compile}")
    assert os.path.exists(f"/proc/{compiler}") and process.poll() is None  # still running
    assert _children(compiler) == [] and compiled_entries(cache, name) == ["winch"]
    from wasmbinfmt.runners import tiers

    # The compiler keeps the module's compile lock: a run's compiler given it waits.
    assert tiers.being_compiled(str(cache / "modules"), name)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    _wait_for_its_end(compiler)
    assert compiled_entries(cache, name) == ["cranelift"]


def _priority(pid: str) -> tuple:
    """The nice values of a process's threads, and of its autogroup where the kernel has them."""
    threads = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{thread}/stat").read_text()
        except OSError:
            continue
        threads.add(int(stat.rsplit(")", 1)[1].split()[16]))
    group = (Path(f"/proc/{pid}/autogroup").read_text().split()[-1]
             if os.path.exists("/proc/self/autogroup") else "19")
    return tuple(sorted(threads)), int(group)


LOWEST = ((19,), 19)


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _open_files(pid: str) -> list[str]:
    """What the process's descriptors name, but those it closes while they are looked at
    (its compile opens and closes files)."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return held


def _environ(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _children(pid: str) -> list[int]:
    return [child for child in _pids() if _parent_or_none(child) == int(pid)]


def _parent_or_none(pid) -> int | None:
    try:
        return _parent(pid)
    except OSError:
        return None


def _parent(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _session(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[3])


@pytest.mark.parametrize("options", [(), ("--cold-runner",)])
def test_a_module_keeps_to_one_of_its_callers_cpus_and_the_caller_to_all(box, user, options):
    """wasmtime's WASI hands each file operation to a thread of its own: the module's
    process keeps to one CPU, one the caller may use, so each hand-off is a switch there."""
    cpus = sorted(os.sched_getaffinity(0))
    script = (f"taskset -c {cpus[-1]} ./probe.wasm read /proc/self/status Cpus_allowed_list; "
              f"./probe.wasm read /proc/self/status Cpus_allowed_list; "
              f"grep Cpus_allowed_list /proc/$$/status")
    done = run(user, box, script, *options)
    lines = [line.split(b":")[1].strip().decode() for line in done.stdout.splitlines()]
    assert len(lines) == 3, done.stderr
    assert lines[0] == str(cpus[-1])
    assert lines[1].isdigit() and int(lines[1]) in cpus
    native = subprocess.run(["grep", "Cpus_allowed_list", "/proc/self/status"],
                            capture_output=True).stdout.split(b":")[1].strip().decode()
    assert lines[2] == native  # the shell that ran them: as natively


@pytest.mark.parametrize("options", [(), ("--cold-runner",)])
def test_a_module_runs_without_wakeup_preemption_and_a_caller_s_policy_stays(box, user, options):
    """wasmtime's WASI wakes the module's thread at the end of each file operation: run
    SCHED_BATCH (3), it lets the helper thread go back to its pool first (procstate.py).
    A policy the caller chose (SCHED_IDLE, 5) is kept, and the caller's own is untouched."""
    if not os.path.exists("/proc/self/sched"):
        pytest.fail("this kernel has no /proc/PID/sched (CONFIG_SCHED_DEBUG): the test "
                    "reads the module's policy there")
    script = ("./probe.wasm read /proc/self/sched policy; "
              "chrt -i 0 ./probe.wasm read /proc/self/sched policy; "
              "grep policy /proc/$$/sched")
    done = run(user, box, script, *options)
    policies = [line.split(b":")[1].strip() for line in done.stdout.splitlines()]
    assert policies == [b"3", b"5", b"0"], done.stdout + done.stderr


# Refuses pidfd_getfd (ENOSYS, as a kernel before 5.6 does) to what it execs.
WITHOUT_PIDFD_GETFD = """
import errno, os, sys
from wasmbinfmt.trace import kernel
from wasmbinfmt.trace.arch import host_arch
from wasmbinfmt.trace.seccomp import Insn, ARCH_OFFSET, NR_OFFSET
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
arch = host_arch()
program = [Insn(BPF_LD_W_ABS, NR_OFFSET),
           Insn(BPF_JEQ_K, kernel.SYS_PIDFD_GETFD, jt=0, jf=1),
           Insn(BPF_RET_K, 0x00050000 | errno.ENOSYS),  # SECCOMP_RET_ERRNO
           Insn(BPF_RET_K, 0x7FFF0000)]  # SECCOMP_RET_ALLOW
kernel.install_seccomp_filter(kernel.pack_filter(program), arch.seccomp)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_without_pidfd_getfd_the_runner_starts_at_every_exec_and_v_says_why(box, user):
    """Linux before 5.6 (Ubuntu 20.04's 5.4): no warm runner, but every module runs."""
    done = subprocess.run(user([sys.executable, "-c", WITHOUT_PIDFD_GETFD, sys.executable,
                                "-m", "wasmbinfmt", "-v", "--", "sh", "-c",
                                "./probe.wasm exit 3; echo $?"]),
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0 and done.stdout == b"3\n", done.stderr
    assert b"this kernel lacks pidfd_getfd (Linux 5.6): the built-in runner starts at " \
           b"every module exec" in done.stderr
    assert WARM not in done.stderr
