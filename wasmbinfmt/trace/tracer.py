"""The event loop: every tracee stops only at execve/execveat; matching ones are rewritten.

One ``waitpid(-1, __WALL)`` loop handles every stop. The tracees are seized
with PTRACE_O_TRACESECCOMP (the filter in seccomp.py sends only exec here),
fork/vfork/clone following, TRACESYSGOOD and EXITKILL. Exec events are not
asked for (a seized tracee gets no SIGTRAP after exec, and one stop per exec
is what makes exec-heavy trees fast); a rewritten exec alone is resumed with
PTRACE_SYSCALL, to see its result and undo the rewrite if it failed.

A rewrite writes the new argv (and envp, when the rule adds variables) below
the tracee's stack pointer, past the red zone, reusing the caller's own
strings. When the stack mapping is too small for that (posix_spawn's child
stack, a huge argv) the tracee is made to mmap a scratch area first: its
exec is turned into an mmap, then stepped back to run the exec again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import _signal as signal  # the C module: signal.py adds enums, and enum costs ~4 ms a start
from array import array
from collections.abc import Callable
from io import TextIOBase

from ..execlog import ExecLog
from ..files import Inspector
from ..match import Matcher
from ..record import record
from ..rewrite import AT_FDCWD, Fail, Rewrite, exec_filename, resolve_exec
from ..rules import Rule
from ..sources import interpreter_problem
from . import kernel
from .arch import Arch
from .kernel import resume
from .kernel import (
    NT_PRSTATUS, PTRACE_CONT, PTRACE_EVENT_SECCOMP, PTRACE_EVENT_STOP, PTRACE_LISTEN,
    PTRACE_SYSCALL, WALL, IoVec,
)
from .paths import host_path
from .seccomp import PTRACE_TRACEME
from .tracee import (
    Memory, command_name, fd_is_cloexec, fs_credentials, stack_room, stat_field, tracer_of,
)

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
SYSCALL_STOP = signal.SIGTRAP | 0x80  # TRACESYSGOOD marks syscall stops
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argv string
LOGGED_ARGS, LOGGED_STRING = 4096, 4096  # --log keeps this much of a caller's argv
STACK_MARGIN = 256  # bytes kept free at the low end of a stack mapping
PROT_READ_WRITE = 0x3
MAP_PRIVATE_ANONYMOUS = 0x22

OPTIONS = (kernel.PTRACE_O_TRACESYSGOOD | kernel.PTRACE_O_TRACEFORK
           | kernel.PTRACE_O_TRACEVFORK | kernel.PTRACE_O_TRACECLONE
           | kernel.PTRACE_O_TRACESECCOMP | kernel.PTRACE_O_EXITKILL)


@record
class NewExec:
    """What a rewritten exec needs in the tracee's memory, placed once an address is known."""

    syscall: int
    strings: list[bytes]  # new strings; argv is strings[:n_head] + tail; the first is the path
    n_head: int
    tail: array  # the caller's own argv pointers that follow
    envp: int | None  # the caller's envp, kept as is, or None when rebuilt below
    env_kept: array  # with envp None: the caller's env pointers that stay
    env_added: int  # with envp None: how many of `strings` (at the end) are added variables

    def size(self) -> int:
        pointers = self.n_head + len(self.tail) + 1
        if self.envp is None:
            pointers += len(self.env_kept) + self.env_added + 1
        return pointers * 8 + sum(len(s) + 1 for s in self.strings)

    def layout(self, base: int) -> tuple[bytes, int, int, int]:
        """(bytes to write at `base`, path address, argv address, envp address)."""
        n_argv = self.n_head + len(self.tail) + 1
        n_env = len(self.env_kept) + self.env_added + 1 if self.envp is None else 0
        at = base + (n_argv + n_env) * 8
        addresses = []
        for s in self.strings:
            addresses.append(at)
            at += len(s) + 1
        argv = array("Q", addresses[:self.n_head])
        argv.extend(self.tail)
        argv.append(0)
        envp = self.envp
        pointers = argv
        if self.envp is None:
            envp = base + n_argv * 8
            pointers.extend(self.env_kept)
            pointers.extend(addresses[len(self.strings) - self.env_added:])
            pointers.append(0)
        blob = pointers.tobytes() + b"".join(s + b"\0" for s in self.strings)
        return blob, addresses[0], base, envp


class Pending:
    """A tracee between our rewrite of its exec and the exec's result."""

    def __init__(self, saved: bytes, phase: str, new_exec: NewExec | None = None,
                 mapping: tuple[int, int] | None = None):
        self.saved = saved  # its registers at the exec stop, to put back if the exec fails
        self.phase = phase  # "exec", "mmap", "reenter", "munmap-entry", "munmap-exit"
        self.new_exec = new_exec
        self.mapping = mapping  # (address, size) we made it mmap
        self.result = 0  # the failed exec's -errno, kept across the munmap


class Tracer:
    def __init__(self, rules: list[Rule], arch: Arch, root: int, log: TextIOBase | None = None,
                 verbose: bool = False, log_is_stderr: bool = True,
                 exec_log: ExecLog | None = None):
        self.matcher = Matcher(rules)
        self.arch = arch
        self.root = root
        self.log = log
        self.verbose = verbose
        self.log_is_stderr = log_is_stderr
        self.pending: dict[int, Pending] = {}
        self.memory = Memory()
        self.regs = arch.new_regs()
        self.regs_iov = IoVec(ctypes.addressof(self.regs), ctypes.sizeof(self.regs))
        self.regs_iov_address = ctypes.addressof(self.regs_iov)
        self.checked_rules: set[str] = set()
        self.inspector = Inspector(self.matcher, self._locate, self._executable, headers={})
        self.resolving = 0  # the tid whose exec the inspector is looking at
        self.privileged = os.geteuid() == 0
        self.own_groups = os.getgroups()
        self.exec_log = exec_log  # --log: JSON lines of the rerouted execs (execlog.py)
        self.exec_name = b""  # the name the exec at hand runs, as exec handlers see it

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve stops until no tracee is left.

        The common stops (fork/clone events, a new tracee's first stop, signals)
        are served inline: the loop runs a handful of times per process of the
        tree, so each attribute lookup it saves is measurable.
        """
        waitpid, resume = os.waitpid, kernel.resume
        on_exec, on_syscall, guarded = self._on_exec_stop, self._on_syscall_stop, self._guarded
        while True:
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                if self.exec_log is not None:
                    self.exec_log.close()
                return
            if status & 0xFF != 0x7F:  # exited or killed
                self._on_exit(tid, status)
                continue
            event = status >> 16
            sig = (status >> 8) & 0xFF
            if event == PTRACE_EVENT_SECCOMP:
                guarded(on_exec, tid)
            elif event == 0:
                if sig == SYSCALL_STOP:
                    guarded(on_syscall, tid)
                else:
                    resume(PTRACE_CONT, tid, sig)  # deliver the signal it stopped for
            elif event == PTRACE_EVENT_STOP and sig in STOP_SIGNALS:
                # A group-stop (job control): stay stopped until SIGCONT, as natively.
                resume(PTRACE_LISTEN, tid, 0)
            else:
                resume(PTRACE_CONT, tid, 0)  # fork, vfork, clone; a new tracee's first stop

    def _on_exit(self, tid: int, status: int) -> None:
        if self.pending:
            self.pending.pop(tid, None)
        if self.exec_log is not None:
            self.exec_log.exited(tid, status)
        if tid == self.root and self.log_is_stderr:
            # The command returned to its caller; stderr must not be held open by us for
            # descendants still running (`$(wasmbinfmt -- cmd 2>&1)` would wait for them).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            self.log = None

    def _guarded(self, handler: Callable[[int], None], tid: int) -> None:
        """Run a handler; if it fails, the tracee goes on natively rather than hang or die."""
        try:
            handler(tid)
        except ProcessLookupError:
            # ESRCH: killed while we served its stop (SIGKILL, or a sibling thread's exec);
            # its exit comes through waitpid like any other.
            self.pending.pop(tid, None)
        except Exception as e:  # noqa: BLE001 - the tree must never pay for our bug
            self._say(f"internal error at pid {tid} ({type(e).__name__}: {e}); "
                      f"its exec runs natively")
            self.pending.pop(tid, None)
            resume(PTRACE_CONT, tid)

    def _say(self, message: str) -> None:
        if self.log is not None:
            try:
                self.log.write(f"wasmbinfmt: {message}\n")
                self.log.flush()
            except OSError:  # an unwritable log must not stop the tree
                self.log = None

    # -- registers --------------------------------------------------------------------------

    def _get_regs(self, tid: int) -> None:
        kernel.get_regset(tid, NT_PRSTATUS, self.regs_iov_address)

    def _set_regs(self, tid: int, syscall: int | None = None) -> None:
        arch = self.arch
        if syscall is not None and arch.syscall_number_regset is None:
            arch.set_syscall_number(self.regs, syscall)
        kernel.set_regset(tid, NT_PRSTATUS, self.regs_iov_address)
        if syscall is not None and arch.syscall_number_regset is not None:
            number = ctypes.c_int(syscall)
            iov = IoVec(ctypes.addressof(number), ctypes.sizeof(number))
            kernel.set_regset(tid, arch.syscall_number_regset, ctypes.addressof(iov))

    def _restore(self, saved: bytes, result: int) -> None:
        ctypes.memmove(ctypes.addressof(self.regs), saved, len(saved))
        self.arch.set(self.regs, self.arch.result_register, result)

    # -- exec stops -------------------------------------------------------------------------

    def _on_exec_stop(self, tid: int) -> None:
        pending = self.pending.get(tid)
        if pending is not None and pending.phase == "reenter":
            pending.phase = "exec"  # the exec we prepared with an mmap, running again
            resume(PTRACE_SYSCALL, tid)
            return
        self._get_regs(tid)
        arch = self.arch
        number, a1, a2, a3, a4, a5, _ = arch.syscall_args(self.regs)
        if number == arch.execve:
            dirfd, path_at, argv_at, envp_at, flags = AT_FDCWD, a1, a2, a3, 0
        elif number == arch.execveat:
            dirfd = ctypes.c_int(a1 & 0xFFFFFFFF).value
            path_at, argv_at, envp_at, flags = a2, a3, a4, a5 & 0xFFFFFFFF
        else:
            if number == arch.ptrace:
                self._explain_ptrace(tid, a1, a2)
            resume(PTRACE_CONT, tid)
            return
        verdict = self._verdict(tid, dirfd, path_at, flags)
        if verdict is None:
            if self.exec_log is not None:
                self.exec_log.native_attempts += 1
            resume(PTRACE_CONT, tid)
        elif isinstance(verdict, Fail):
            if self.exec_log is not None:
                self.exec_log.refused(tid, self.exec_name, verdict.errno)
            self._fail(tid, verdict.errno)
        else:
            self._rewrite(tid, number, verdict, argv_at, envp_at)

    def _explain_ptrace(self, tid: int, request: int, target: int) -> None:
        """A process of the tree wants to become a tracer (the filter stops only those
        requests); the kernel refuses it with EPERM where the target is ours: say why."""
        ours = os.getpid()
        if request == PTRACE_TRACEME:
            what = "cannot be traced by its parent (PTRACE_TRACEME)"
        else:
            target = ctypes.c_int(target & 0xFFFFFFFF).value
            try:
                if tracer_of(target) != ours:
                    return  # outside the tree: the kernel decides, we have nothing to add
            except (OSError, ValueError):
                return
            what = f"cannot trace pid {target} ({command_name(target)})"
        self._say(f"{command_name(tid)} (pid {tid}) {what}: every process under wasmbinfmt "
                  f"is traced by wasmbinfmt (pid {ours}) and a process has only one tracer, "
                  f"so ptrace fails with EPERM. Run debuggers and tracers (gdb, strace) "
                  f"outside wasmbinfmt")

    def _verdict(self, tid: int, dirfd: int, path_at: int, flags: int):
        """What to do with this exec; None (run it natively) wherever the kernel will refuse it."""
        path = self.memory.read_string(tid, path_at) if path_at else None
        if path is None or flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW):
            return None  # EFAULT, ENAMETOOLONG, EINVAL: the kernel's to say
        if not path and not flags & AT_EMPTY_PATH:
            return None  # ENOENT
        relative = not path.startswith(b"/")
        if dirfd != AT_FDCWD and relative and dirfd < 0:
            return None  # EBADF
        name = self.exec_name = exec_filename(dirfd, path)
        self.resolving = tid
        # With an empty name the descriptor itself runs: there is no link to not follow.
        self.inspector.nofollow_first = bool(flags & AT_SYMLINK_NOFOLLOW and path)
        inaccessible = dirfd != AT_FDCWD and relative and fd_is_cloexec(tid, dirfd)
        return resolve_exec(name, self.inspector, inaccessible)

    def _locate(self, name: bytes) -> bytes:
        return host_path(self.resolving, name)

    def _executable(self, host: bytes, first: bool) -> bool:
        """Whether the tracee may exec the file (x bit, search permission, noexec mounts)."""
        tid = self.resolving
        if self.privileged:
            uid, gid, groups = fs_credentials(tid)
            if uid != 0:
                # Check as the tracee: its fsuid/fsgid/groups, for this check only.
                os.setgroups(groups)
                kernel.set_fs_ids(uid, gid)
                try:
                    return os.access(host, os.X_OK, effective_ids=True)
                finally:
                    kernel.set_fs_ids(0, os.getegid())
                    os.setgroups(self.own_groups)
        return os.access(host, os.X_OK, effective_ids=True)

    def _fail(self, tid: int, error: int) -> None:
        """Skip the exec; it returns -error, as the kernel's would."""
        self.arch.set(self.regs, self.arch.result_register, -error)
        self._set_regs(tid, syscall=-1)
        resume(PTRACE_CONT, tid)

    def _rewrite(self, tid: int, syscall: int, rewrite: Rewrite, argv_at: int,
                 envp_at: int) -> None:
        caller_argv = self.memory.read_pointers(tid, argv_at) if argv_at else array("Q")
        if caller_argv is None:
            resume(PTRACE_CONT, tid)  # EFAULT: the kernel's to say
            return
        strings = [item if isinstance(item, bytes) else self._caller_string(tid, caller_argv, item)
                   for item in rewrite.argv.head]
        if None in strings:
            resume(PTRACE_CONT, tid)  # an unreadable argv string: EFAULT, the kernel's to say
            return
        tail = caller_argv[rewrite.argv.skip:]
        if not caller_argv and rewrite.argv.skip == 0:
            strings.append(b"")  # the "" argv[0] Linux gives an empty argv
        env_kept, env_added, envp = array("Q"), 0, envp_at
        if rewrite.env:
            caller_env = self.memory.read_pointers(tid, envp_at) if envp_at else array("Q")
            if caller_env is None:
                resume(PTRACE_CONT, tid)
                return
            env_kept = self._env_without(tid, caller_env, {k for k, _ in rewrite.env})
            added = [k + b"=" + v for k, v in rewrite.env]
            strings += added
            env_added, envp = len(added), None
        new_exec = NewExec(syscall, strings, len(strings) - env_added, tail, envp, env_kept,
                           env_added)
        self._report(tid, rewrite, caller_argv)
        saved = bytes(self.regs)
        size = new_exec.size()
        stack = self.arch.stack(self.regs)
        base = self.arch.scratch_below_stack(self.regs, size)
        if stack - base + STACK_MARGIN <= stack_room(tid, stack):
            blob, path, argv, envp_new = new_exec.layout(base)
            if self.memory.write(tid, base, blob):
                self._point_exec_at(syscall, path, argv, envp_new)
                self._set_regs(tid)
                self.pending[tid] = Pending(saved, "exec")
                resume(PTRACE_SYSCALL, tid)
                return
        # No room on this stack: have the tracee map some memory first (mmap), then exec.
        length = (size + 4095) & ~4095
        for n, value in enumerate((0, length, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS,
                                   (1 << 64) - 1, 0), 1):
            self.arch.set_arg(self.regs, n, value)
        self._set_regs(tid, syscall=self.arch.mmap)
        self.pending[tid] = Pending(saved, "mmap", new_exec, (0, length))
        resume(PTRACE_SYSCALL, tid)

    def _point_exec_at(self, syscall: int, path: int, argv: int, envp: int) -> None:
        arch, regs = self.arch, self.regs
        if syscall == arch.execve:
            values = (path, argv, envp)
        else:  # execveat(AT_FDCWD, interpreter, argv, envp, 0)
            values = (AT_FDCWD, path, argv, envp, 0)
        for n, value in enumerate(values, 1):
            arch.set_arg(regs, n, value)

    def _exec_failed(self, tid: int, result: int) -> None:
        if self.exec_log is not None:
            self.exec_log.exec_failed(tid, -result)

    def _caller_string(self, tid: int, caller_argv: array, index: int) -> bytes | None:
        """The caller's argv[index], moved by an argv0-option rule ("" past the end)."""
        if index >= len(caller_argv):
            return b""
        return self.memory.read_string(tid, caller_argv[index], MAX_ARG_STRLEN)

    def _env_without(self, tid: int, env: array, keys: set[bytes]) -> array:
        """The caller's environment pointers, less the variables the rule sets."""
        prefixes = tuple(k + b"=" for k in keys)
        longest = max(map(len, prefixes))
        return array("Q", (p for p in env
                           if not self.memory.read(tid, p, longest).startswith(prefixes)))

    def _report(self, tid: int, rewrite: Rewrite, caller_argv: array) -> None:
        for rule in rewrite.rules:
            if rule.name in self.checked_rules:
                continue
            self.checked_rules.add(rule.name)
            problem = interpreter_problem(rule)
            if problem:
                self._say(f"rule {rule.name!r}: emulator missing: {problem}; "
                          f"its files fail to exec with ENOENT")
        if self.exec_log is not None:
            self._log_exec(tid, rewrite, caller_argv)
        if self.verbose:
            shown = [self.memory.read_string(tid, p, 256) or b"?" for p in caller_argv[:16]]
            argv = rewrite.argv.build(shown)
            more = " …" if len(caller_argv) > 16 else ""
            rules = " → ".join(r.name for r in rewrite.rules)
            self._say(f"[{tid}] rule {rules}: "
                      + " ".join(os.fsdecode(a) for a in argv) + more)

    def _log_exec(self, tid: int, rewrite: Rewrite, caller_argv: array) -> None:
        argv = [self.memory.read_string(tid, p, LOGGED_STRING) or b"?"
                for p in caller_argv[:LOGGED_ARGS]]
        try:
            cwd = os.readlink(f"/proc/{tid}/cwd".encode())
            ppid = stat_field(tid, 4)
        except (OSError, ValueError, IndexError):
            cwd, ppid = b"?", 0
        self.exec_log.exec(tid, ppid, cwd, self.exec_name, argv,
                           [rule.name for rule in rewrite.rules], rewrite.argv.build(argv))

    # -- syscall stops: the result of a rewritten exec ---------------------------------------

    def _on_syscall_stop(self, tid: int) -> None:
        pending = self.pending.get(tid)
        if pending is None:
            # A successful exec from a non-leader thread stops under the leader's id; the
            # thread's own entry is left behind with its old id.
            for stale in [t for t in self.pending if not os.path.exists(f"/proc/{t}")]:
                del self.pending[stale]
            resume(PTRACE_CONT, tid)
            return
        self._get_regs(tid)
        arch, regs = self.arch, self.regs
        result = arch.result(regs)
        if pending.phase == "exec":
            if result >= 0 or pending.mapping is None:
                del self.pending[tid]
                if result < 0:
                    self._exec_failed(tid, result)
                    self._restore(pending.saved, result)
                    self._set_regs(tid)
                resume(PTRACE_CONT, tid)
                return
            # Failed after we made it mmap: unmap first (stepping back to a munmap).
            pending.result, pending.phase = result, "munmap-entry"
            address, length = pending.mapping
            arch.rerun_syscall(regs, arch.munmap)
            arch.set_arg(regs, 1, address)
            arch.set_arg(regs, 2, length)
            self._set_regs(tid)
            resume(PTRACE_SYSCALL, tid)
        elif pending.phase == "mmap":
            if result < 0:
                del self.pending[tid]
                self._exec_failed(tid, -errno.ENOMEM)
                self._restore(pending.saved, -errno.ENOMEM)
                self._set_regs(tid)
                resume(PTRACE_CONT, tid)
                return
            length = pending.mapping[1]
            pending.mapping = (result, length)
            blob, path, argv, envp = pending.new_exec.layout(result)
            if not self.memory.write(tid, result, blob):
                raise OSError(errno.EFAULT, "cannot write the new argv into the tracee")
            ctypes.memmove(ctypes.addressof(regs), pending.saved, len(pending.saved))
            self._point_exec_at(pending.new_exec.syscall, path, argv, envp)
            arch.rerun_syscall(regs, pending.new_exec.syscall)
            self._set_regs(tid)
            pending.phase = "reenter"
            resume(PTRACE_CONT, tid)
        elif pending.phase == "munmap-entry":
            pending.phase = "munmap-exit"
            resume(PTRACE_SYSCALL, tid)
        else:  # munmap-exit: now the caller sees its exec fail, with its own registers
            del self.pending[tid]
            self._exec_failed(tid, pending.result)
            self._restore(pending.saved, pending.result)
            self._set_regs(tid)
            resume(PTRACE_CONT, tid)
