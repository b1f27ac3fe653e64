"""The real kernel as a test oracle for registration lines.

A helper process in a new user and mount namespace mounts its own
binfmt_misc instance (Linux >= 6.7 gives each user namespace one), registers
each line it is sent, reports the kernel's answer and removes the entry at
once. Nothing it registers is seen outside that namespace, and it needs no
root. The helper execs nothing after mounting, so its entries never run.
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


class KernelOracle:
    """register(line) -> ("ok", name, /proc entry text) or ("error", errno)."""

    def __init__(self):
        self._dir = tempfile.mkdtemp(prefix="wasmbinfmt-oracle-")
        script = 'mount -t binfmt_misc none "$1" && exec "$2" -c "$3" "$1"'
        self._proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             self._dir, sys.executable, _HELPER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._proc.stdout.readline().strip()
        if first != "READY":
            err = self._proc.stderr.read().strip()
            self.close()
            raise RuntimeError(f"cannot mount a private binfmt_misc: {err or first}")

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
    fd = os.open(os.path.join(mount, "register"), os.O_WRONLY)
    os.write(fd, bytes.fromhex(line))
    os.close(fd)
os.execvp(argv[0], argv)
"""


def run_with_binfmt(lines: list[str], argv: list[str], as_user=lambda argv: argv,
                    **kwargs) -> subprocess.CompletedProcess:
    """Run argv where the kernel's own binfmt_misc has `lines` registered (a private instance
    in a new user and mount namespace, as KernelOracle), to compare exec results with ours."""
    mount = tempfile.mkdtemp(prefix="wasmbinfmt-kernel-")
    os.chmod(mount, 0o755)
    try:
        script = 'mount -t binfmt_misc none "$1" && shift && exec "$@"'
        hexed = ",".join(os.fsencode(line).hex() for line in lines)
        return subprocess.run(as_user(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             mount, sys.executable, "-c", _REGISTER_THEN_EXEC, mount, hexed, *argv]),
            capture_output=True, **kwargs)
    finally:
        shutil.rmtree(mount, ignore_errors=True)
