"""The tracer's half of the warm WASI runner (runners/warm.py has the design).

An exec the built-in runner's rule reroutes becomes ``/bin/sh -c CLIENT``:
the caller's pid, with its descriptors, signal dispositions and mask, waits
on a pipe for the module's status, then exits with it or dies by its
signal, so its parent sees what a native exec would give. Once that exec
has succeeded, the host gets the request with the client's standard
descriptors as the exec left them.

Only a caller that the host can stand in for goes this way: the same
credentials and capabilities, session, namespaces, root directory, cgroup
and seccomp filters as the host (else its worker would differ from the
process the module would be natively), and an argv and environment that fit
in one message. Every other exec starts the runner itself, as before.
"""

from __future__ import annotations

import os
import resource
import select

from ..runners import warm_messages
from ..util import fdpass
from . import kernel
from .tracee import Memory, status_fields

CLIENT_SHELL = b"/bin/sh"
# The status arrives as "N" (exit N) or "-S" (killed by signal S). No status (the host
# died): 126, as for any exec the runner cannot carry out. The pipe replaces stdin (the
# worker has its own): `read <file` would save stdin at fd 10 first, past a low limit.
CLIENT = ("exec </proc/{tracer}/fd/{pipe}; read s; case $s in [0-9]*) exit $s;; -[0-9]*) "
          "kill $s $$; exit $((128-$s));; esac; "
          "echo 'wasmbinfmt: the warm WASI runner has stopped' >&2; exit 126")
SAME_AS_HOST = (b"Uid", b"Gid", b"Groups", b"CapInh", b"CapPrm", b"CapEff", b"CapBnd",
                b"CapAmb", b"NSsid")
NAMESPACES = ("mnt", "pid", "user", "net", "ipc", "uts", "cgroup")
MAX_ARG_STRLEN = 32 * 4096
# Below this soft RLIMIT_NOFILE the runner starts itself, where its every descriptor is
# counted (wasi.fit_descriptors) and the client could lack one for its pipe.
FEWEST_DESCRIPTORS = 64


def _context(pid: int | str) -> tuple:
    """What, besides /proc/PID/status, must be the host's for its worker to stand in."""
    root = os.stat(f"/proc/{pid}/root")
    with open(f"/proc/{pid}/cgroup", "rb") as f:
        cgroup = f.read()
    return (tuple(os.readlink(f"/proc/{pid}/ns/{ns}") for ns in NAMESPACES),
            (root.st_dev, root.st_ino), cgroup)


class Handoff:
    """One exec on its way to the host: the runner's argv, the environment, the state exec
    keeps, and the pipe its status comes back on."""

    def __init__(self, argv: list[bytes], env: list[bytes], state: tuple, process: int) -> None:
        self.argv, self.env, self.state = argv, env, state
        self.process = process  # the caller's thread group: its pid once the exec succeeds
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)

    def client_argv(self) -> list[bytes]:
        script = CLIENT.format(tracer=os.getpid(), pipe=self.read_end)
        return [CLIENT_SHELL, b"-c", script.encode()]

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)
        self.read_end = self.write_end = -1


class WarmRunner:
    def __init__(self, tree: int, clients: dict[int, int]) -> None:
        self.tree = tree  # the traced command: the host takes its CPUs
        self.channel: fdpass.Socket | None = None
        self.usable = os.access(CLIENT_SHELL, os.X_OK)
        own = status_fields("self")
        self.reference = {key: own.get(key) for key in SAME_AS_HOST}
        # Ours is the one filter the tree has beyond the host's (which are ours too).
        self.filters = int(own.get(b"Seccomp_filters", b"0")) + 1
        self.context = _context("self")
        self.clients = clients  # pid: its pipe's read end, which it opens by path

    def handoff(self, tid: int, memory: Memory, runner_argv: list[bytes], tail: list[int],
                envp_at: int, added_env: list[tuple[bytes, bytes]]) -> Handoff | None:
        """The hand-off of this exec, or None where the runner must start itself."""
        if not self.usable:
            return None
        try:
            status = status_fields(tid)
            if (any(status.get(key) != value for key, value in self.reference.items())
                    or int(status.get(b"Seccomp_filters", b"-1")) != self.filters
                    or _context(tid) != self.context):
                return None
            state = (int(status[b"SigIgn"], 16), int(status[b"SigBlk"], 16),
                     int(status[b"Umask"], 8), int(status[b"NSpgid"]),
                     status.get(b"NoNewPrivs") == b"1")
            process = int(status[b"Tgid"])
            soft = resource.prlimit(tid, resource.RLIMIT_NOFILE)[0]
            if 0 <= soft < FEWEST_DESCRIPTORS:  # RLIM_INFINITY is -1
                return None
        except (OSError, KeyError, ValueError):
            return None
        argv = list(runner_argv)
        for pointer in tail:
            arg = memory.read_string(tid, pointer, MAX_ARG_STRLEN)
            if arg is None:
                return None  # EFAULT: the kernel's to say, through the runner's own exec
            argv.append(arg)
        env = []
        pointers = memory.read_pointers(tid, envp_at) if envp_at else []
        if pointers is None:
            return None
        replaced = tuple(key + b"=" for key, _ in added_env)
        for pointer in pointers:
            entry = memory.read_string(tid, pointer, MAX_ARG_STRLEN)
            if entry is None:
                return None
            if not (replaced and entry.startswith(replaced)):
                env.append(entry)
        env += [key + b"=" + value for key, value in added_env]
        if not warm_messages.fits(tid, argv, env, state):
            return None  # more than one message carries: the runner started for it runs it
        if self.channel is None:
            if not self._start_host():
                return None
        elif self.host_gone.poll(0):  # its end closed: the host has died
            self.usable = False
            return None
        return Handoff(argv, env, state, process)

    def hand_over(self, tid: int, handoff: Handoff) -> None:
        """The client's exec succeeded: send the request, with its standard descriptors."""
        fds, std = [], 0
        pidfd = -1
        try:
            pidfd = os.pidfd_open(tid)
            for n in (0, 1, 2):
                fd = kernel.pidfd_getfd(pidfd, n)
                if fd is not None:
                    fds.append(fd)
                    std |= 1 << n
            fdpass.send_fds(self.channel, warm_messages.encode_request(
                tid, handoff.argv, handoff.env, handoff.state, std),
                [pidfd, handoff.write_end, *fds])
        except OSError:
            # No host to take it: the client reads no status and says so (126).
            self.usable = False
        finally:
            for fd in (pidfd, *fds):
                if fd >= 0:
                    os.close(fd)
            os.close(handoff.write_end)
            handoff.write_end = -1
        self.clients[tid] = handoff.read_end

    def forward(self, tid: int, sig: int) -> None:
        """A signal delivered to a client is the module's too (unless the client sent it
        itself, dying by the module's signal)."""
        try:
            code, sender = kernel.signal_sender(tid)
        except OSError:
            return
        if code <= 0 and sender == tid:
            return
        try:
            self.channel.send(warm_messages.encode_signal(tid, sig))
        except OSError:
            pass

    def exited(self, tid: int) -> None:
        os.close(self.clients.pop(tid))

    def _start_host(self) -> bool:
        """Start the host, in the tracer's session (the command's), its parent leaving at
        once: it must outlive no one and be no one's child to wait for."""
        ours, theirs = fdpass.seqpacket_pair()
        try:
            middle = os.fork()
        except OSError:
            self.usable = False
            return False
        if middle == 0:
            try:
                try:  # the tree's CPUs, not the one the tracer keeps to, from the start
                    os.sched_setaffinity(0, os.sched_getaffinity(self.tree))
                except OSError:
                    pass
                if os.fork() == 0:
                    ours.close()
                    # Here, in the host: the runner's imports (~2 ms) run while the
                    # tracer goes on with the exec.
                    from ..runners import warm

                    warm.serve(theirs.detach())
            finally:
                os._exit(0)
        theirs.close()
        os.waitpid(middle, 0)
        self.channel = ours
        self.host_gone = select.poll()
        self.host_gone.register(ours, select.POLLIN)  # the host sends nothing: EOF
        return True
