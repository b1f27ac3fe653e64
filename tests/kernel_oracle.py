"""The real kernel as a test oracle for registration lines and execs.

A helper process in a new user and mount namespace mounts its own
binfmt_misc instance (Linux >= 6.7 gives each user namespace one), registers
each line it is sent, reports the kernel's answer and removes the entry at
once. Nothing it registers is seen outside that namespace, and it needs no
root. The helper execs nothing after mounting, so its entries never run.

Where the kernel cannot serve (older than 6.7, as Debian 12's 6.1; no user
namespaces), both raise OracleUnavailable with the reason: the tests then check
the tool against the values they expect and the session's summary says, once per
reason, which comparisons with the kernel were not made (conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

_HELPER = r"""
import os, sys
mount = sys.argv[1]
def write(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
print("READY", flush=True)
for request in sys.stdin:
    line = bytes.fromhex(request.strip())
    try:
        write(os.path.join(mount, "register"), line)
    except OSError as e:
        print("ERR", e.errno, flush=True)
        continue
    names = [n for n in os.listdir(mount) if n not in ("register", "status")]
    name = names[0]
    with open(os.path.join(mount, name), "rb") as f:
        entry = f.read()
    write(os.path.join(mount, name), b"-1")
    print("OK", os.fsencode(name).hex(), entry.hex(), flush=True)
"""


class OracleUnavailable(Exception):
    """This kernel cannot give a private binfmt_misc here; the reason is the message."""


# Comparisons with the kernel that this kernel could not serve: reason -> the tests that
# ran without them (conftest.py's terminal summary lists them, once per reason).
NOT_COMPARED: dict[str, list[str]] = {}


def not_compared(problem: OracleUnavailable) -> None:
    """Note that the running test could not compare with the kernel, and why."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    tests = NOT_COMPARED.setdefault(str(problem), [])
    if test not in tests:
        tests.append(test)


# What the oracle mounts: test_harness.py names a file system that does not exist, to make
# the mount fail on purpose as it does on kernels older than 6.7.
FSTYPE = os.environ.get("WASMBINFMT_TEST_ORACLE_FSTYPE", "binfmt_misc")
_MARK = "wasmbinfmt-kernel-oracle:"


def _unavailable(stderr: str, mount_point: str) -> OracleUnavailable:
    """The reason, the same for every test that meets it (the mount point is not in it)."""
    stderr = stderr.replace(mount_point, "MOUNT-POINT")
    words = " ".join(line for line in stderr.splitlines() if line.strip()).split()
    return OracleUnavailable(" ".join(words)[-300:] or "no reason given")


class KernelOracle:
    """register(line) -> ("ok", name, /proc entry text) or ("error", errno)."""

    def __init__(self, fstype: str = FSTYPE):
        self._dir = tempfile.mkdtemp(prefix="wasmbinfmt-oracle-")
        script = 'mount -t "$4" none "$1" && exec "$2" -c "$3" "$1"'
        self._proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             self._dir, sys.executable, _HELPER, fstype],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._proc.stdout.readline().strip()
        if first != "READY":
            err = self._proc.stderr.read().strip()
            self.close()
            raise _unavailable(f"{_MARK} cannot mount {fstype}: {err or first}", self._dir)

    def register(self, line: str | bytes):
        self._proc.stdin.write(os.fsencode(line).hex() + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().split()
        if answer[0] == "ERR":
            return ("error", int(answer[1]))
        return ("ok", os.fsdecode(bytes.fromhex(answer[1])),
                bytes.fromhex(answer[2]).decode("utf-8", "surrogateescape"))

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        for stream in (self._proc.stdout, self._proc.stderr):
            stream.close()
        shutil.rmtree(self._dir, ignore_errors=True)


_REGISTER_THEN_EXEC = r"""
import os, sys
mount, lines, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
for line in filter(None, lines.split(",")):
    try:
        fd = os.open(os.path.join(mount, "register"), os.O_WRONLY)
        os.write(fd, bytes.fromhex(line))
        os.close(fd)
    except OSError as e:
        print("%s cannot register %r: %s" % (MARK, bytes.fromhex(line), e), file=sys.stderr)
        sys.exit(125)
os.execvp(argv[0], argv)
""".replace("MARK", repr(_MARK))


def run_with_binfmt(lines: list[str], argv: list[str], as_user=lambda argv: argv,
                    fstype: str = FSTYPE, **kwargs) -> subprocess.CompletedProcess:
    """Run argv where the kernel's own binfmt_misc has `lines` registered (a private instance
    in a new user and mount namespace, as KernelOracle), to compare exec results with ours.
    OracleUnavailable where the kernel cannot give one."""
    mount = tempfile.mkdtemp(prefix="wasmbinfmt-kernel-")
    os.chmod(mount, 0o755)
    try:
        script = (f'mount -t "$2" none "$1" || {{ echo "{_MARK} cannot mount $2" >&2; '
                  f'exit 125; }}; shift 2; exec "$@"')
        hexed = ",".join(os.fsencode(line).hex() for line in lines)
        done = subprocess.run(as_user(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             mount, fstype, sys.executable, "-c", _REGISTER_THEN_EXEC, mount, hexed, *argv]),
            capture_output=True, **kwargs)
    finally:
        shutil.rmtree(mount, ignore_errors=True)
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode == 125 and _MARK in stderr or (done.returncode != 0 and
                                                      stderr.startswith("unshare: ")):
        raise _unavailable(stderr, mount)
    return done
