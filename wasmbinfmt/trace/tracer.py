"""The event loop: every tracee stops only at execve/execveat; matching ones are rewritten.

One ``waitpid(-1, __WALL)`` loop handles every stop. The tracees are seized
with PTRACE_O_TRACESECCOMP (the filter in seccomp.py sends only exec here),
fork/vfork/clone following, TRACESYSGOOD and EXITKILL. Exec events are not
asked for (a seized tracee gets no SIGTRAP after exec, and one stop per exec
is what makes exec-heavy trees fast); a rewritten exec alone is resumed with
PTRACE_SYSCALL, to see its result and undo the rewrite if it failed.

A rewrite writes the new argv (and envp, when the rule adds variables),
reusing the caller's own strings, where spaces.py says the tracee may write:
below its stack pointer, past the red zone, when that memory is its own;
otherwise in a scratch area of its address space, which the tracee is made
to mmap first (its exec is turned into an mmap, then stepped back to run the
exec again) and which later execs of that address space reuse.

Stops that are not ours are given what the kernel gives without a tracer: a
traced program's own seccomp filter returning RET_TRACE gets ENOSYS.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
import _signal as signal  # the C module: signal.py adds enums, and enum costs ~4 ms a start
from io import TextIOBase

from ..util.abcs import Callable
from ..report.execlog import ExecLog
from ..exec.files import Inspector, elf_loader, ld_prefix_for, loop_message
from ..exec.match import Matcher
from ..util.record import record
from ..exec.rewrite import AT_FDCWD, Fail, Rewrite, exec_filename, resolve_exec
from ..util import cache
from ..util.procstate import PYTHON_IGNORES_MASK
from ..rules.model import Rule
from ..rules.sources import builtin_runner_args, component_runner_args, interpreter_problem
from . import kernel
from .arch import Arch
from .kernel import resume
from .kernel import (
    NT_PRSTATUS, PTRACE_CONT, PTRACE_EVENT_CLONE, PTRACE_EVENT_FORK, PTRACE_EVENT_SECCOMP,
    PTRACE_EVENT_STOP, PTRACE_EVENT_VFORK, PTRACE_LISTEN, PTRACE_SYSCALL, WALL, IoVec,
)
from .seccomp import FILTER_DATA, PTRACE_TRACEME
from .spaces import COOKIE_SIZE, STACK_MARGIN, Area, Spaces, area_size
from .tracee import (
    PAGE, Memory, children, command_name, fd_is_cloexec, fs_credentials, ignored_signals,
    root_identity, stack_mapping, stat_field, status_fields, tracee_path, tracer_of,
)

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
SYSCALL_STOP = signal.SIGTRAP | 0x80  # TRACESYSGOOD marks syscall stops
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argv string
# -vv's and the exec log's names of the ways a module exec skips the runner's start.
FAST_PATHS = {"warm": "warm runner", "launched": "launcher"}
LOGGED_ARGS, LOGGED_STRING = 4096, 4096  # --log keeps this much of a caller's argv
PROT_READ_WRITE = 0x3
MAP_PRIVATE_ANONYMOUS = 0x22
CLONE_VM = 0x100
CLONE_EVENTS = frozenset({PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE})


@record
class NewExec:
    """What a rewritten exec needs in the tracee's memory, placed once an address is known."""

    syscall: int
    strings: list[bytes]  # new strings; argv is strings[:n_head] + tail; the first is the path
    n_head: int
    tail: list[int]  # the caller's own argv pointers that follow
    envp: int | None  # the caller's envp, kept as is, or None when rebuilt below
    env_kept: list[int]  # with envp None: the caller's env pointers that stay
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
        argv = addresses[:self.n_head]
        argv.extend(self.tail)
        argv.append(0)
        envp = self.envp
        pointers = argv
        if self.envp is None:
            envp = base + n_argv * 8
            pointers.extend(self.env_kept)
            pointers.extend(addresses[len(self.strings) - self.env_added:])
            pointers.append(0)
        blob = (struct.pack(f"{len(pointers)}Q", *pointers)
                + b"".join(s + b"\0" for s in self.strings))
        return blob, addresses[0], base, envp


QEMU_LD_PREFIX = b"QEMU_LD_PREFIX"


class Pending:
    """A tracee between our rewrite of its exec and the exec's result."""

    def __init__(self, saved: bytes, phase: str, new_exec: NewExec | None = None,
                 area: Area | None = None, length: int = 0, handoff=None):
        self.saved = saved  # its registers at the exec stop, to put back if the exec fails
        self.phase = phase  # "exec", "mmap" (making a scratch area), "reenter"
        self.new_exec = new_exec
        self.area = area  # the scratch area holding the new argv
        self.length = length  # of the area being mapped
        self.handoff = handoff  # for the warm runner, once the exec has succeeded


class Tracer:
    def __init__(self, rules: list[Rule], arch: Arch, root: int, log: TextIOBase | None = None,
                 verbose: bool = False, log_is_stderr: bool = True,
                 exec_log: ExecLog | None = None,
                 not_installed: list[tuple[Rule, str]] = (), warm: bool = False,
                 capture: str | None = None):
        self.matcher = Matcher(rules)
        # -v: the packaged rules left out for want of their emulator, to say which would
        # have run a file that runs natively (once per rule).
        self.not_installed = Matcher([rule for rule, _ in not_installed])
        self.not_installed_why = {rule.name: why for rule, why in not_installed}
        self.arch = arch
        self.root = root
        self.log = log
        self.verbose = verbose
        self.log_is_stderr = log_is_stderr
        self.pending: dict[int, Pending] = {}
        self.spaces = Spaces(root)
        self.parked: set[int] = set()  # new tracees held until their clone event is seen
        self.memory = Memory()
        self.regs = arch.new_regs()
        self.regs_iov = IoVec(ctypes.addressof(self.regs), ctypes.sizeof(self.regs))
        self.regs_iov_address = ctypes.addressof(self.regs_iov)
        self.checked_rules: set[str] = set()
        self.loops_said: set[str] = set()  # -v: rules whose loop was named (once each)
        # (rule name, loader): the sysroot ld_prefix_for chose, once per run.
        self.ld_prefixes: dict[tuple[str, bytes], str | None] = {}
        self.inspector = Inspector(self.matcher, self._executable, self._locate, headers={})
        self.own_root = root_identity("self")
        self.resolving = 0  # the tid whose exec the inspector is looking at
        self.resolving_in_our_root: bool | None = None  # its root is ours (found once)
        self.privileged = os.geteuid() == 0
        self.own_groups = os.getgroups()
        self.exec_log = exec_log  # --log: JSON lines of the rerouted execs (execlog.py)
        # The built-in runner's option to add its `code` events to that log (a regular
        # file's: the runners open it by path).
        self.code_log_option = None if exec_log is None or exec_log.path is None else \
            b"--exec-log=" + os.fsencode(exec_log.path)
        self.exec_name = b""  # the name the exec at hand runs, as exec handlers see it
        # How the built-in runner starts: it is told what its Python's start hides.
        self.builtin_runner = [os.fsencode(sys.executable),
                               *map(os.fsencode, builtin_runner_args())]
        self.component_runner = [os.fsencode(sys.executable),
                                 *map(os.fsencode, component_runner_args())]
        self.bytecode_compiled = False  # before the runner's first start, or at the end
        # Hand module execs to the warm runner, which takes the caller's stdio with
        # pidfd_getfd (Linux 5.6): without it, the runner starts at every exec.
        self.warm_wanted = warm and capture is None and kernel.pidfd_getfd_works()
        if warm and capture is None and not self.warm_wanted and verbose:
            self._say("this kernel lacks pidfd_getfd (Linux 5.6): the built-in runner "
                      "starts at every module exec, as with --cold-runner")
        # --log-output: every rerouted exec runs under report/capture.py, which logs here.
        self.capture = None if capture is None else [
            os.fsencode(sys.executable), b"-I", b"-S", b"-B",
            os.fsencode(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
                __file__))), "report", "capture.py")), os.fsencode(capture)]
        self.warm = None  # the WarmRunner, made at the first such exec
        # The cache of compiled modules ("": none; None: not looked for yet), which the
        # launcher (runners/launcher.py) reads; the lock by which the run holds it
        # (tiers.hold_run); the environment that cache depends on; the launcher's path
        # (None: not built yet, "": cannot be).
        self.module_cache: str | None = None
        self.run_lock: int | None = None
        self.launch_checks: list[bytes] = []
        self.launcher_path: str | None = "" if os.environ.get(
            "WASMBINFMT_LAUNCHER", "").lower() in ("off", "0", "no") else None
        self.warm_clients: dict[int, int] = {}  # the WarmRunner's clients (handoff.py)
        # Processes running capture.py, which passes on every signal but the one it cannot
        # catch: a SIGSTOP for one stops its emulator too.
        self.capturing: set[int] = set()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve stops until no tracee is left.

        The common stops (fork/clone events, a new tracee's first stop, signals)
        are served inline: the loop runs a handful of times per process of the
        tree, so each attribute lookup it saves is measurable.
        """
        waitpid, resume = os.waitpid, kernel.resume
        on_exec, on_syscall, guarded = self._on_exec_stop, self._on_syscall_stop, self._guarded
        on_clone, known = self._on_clone, self.spaces.of.__contains__
        clients, capturing = self.warm_clients, self.capturing
        while True:
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                if self.run_lock is not None:  # the run is over for its compiles too
                    os.close(self.run_lock)
                if self.exec_log is not None:
                    self.exec_log.close()
                if sys.dont_write_bytecode:
                    # Nobody writes our bytecode (PYTHONDONTWRITEBYTECODE, as container
                    # images set it), so each start would compile every module: once the
                    # tree has gone, nothing waits for this.
                    self._compile_bytecode()
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
                    if clients and tid in clients:
                        self.warm.forward(tid, sig)
                    elif sig == signal.SIGSTOP and tid in capturing:
                        for child in children(tid):
                            try:
                                os.kill(child, sig)
                            except OSError:
                                pass  # it has just ended
                    resume(PTRACE_CONT, tid, sig)  # deliver the signal it stopped for
            elif event in CLONE_EVENTS:
                guarded(on_clone, tid, event)
            elif event == PTRACE_EVENT_STOP and sig in STOP_SIGNALS:
                # A group-stop (job control): stay stopped until SIGCONT, as natively.
                resume(PTRACE_LISTEN, tid, 0)
            elif not known(tid):
                # A new tracee's first stop, before its parent's clone event: it waits for
                # that event, which says whether it shares the parent's memory.
                self.parked.add(tid)
            else:
                resume(PTRACE_CONT, tid, 0)

    def _compile_bytecode(self) -> None:
        """The package's bytecode where missing or stale (runners/bytecode.py), once."""
        if not self.bytecode_compiled:
            from ..runners.bytecode import compile_stale

            compile_stale()
            self.bytecode_compiled = True

    def _on_exit(self, tid: int, status: int) -> None:
        if self.pending:
            pending = self.pending.pop(tid, None)
            if pending is not None and pending.handoff is not None:
                pending.handoff.close()
        if self.warm_clients and tid in self.warm_clients:
            self.warm.exited(tid)
        self.capturing.discard(tid)
        self.spaces.left(tid)
        if self.parked:
            # A parent killed before its clone event was reported never reports it: its
            # children go on, taken as sharing memory with anyone.
            self.parked.discard(tid)
            for child in self.parked:
                self.spaces.unknown(child)
                resume(PTRACE_CONT, child)
            self.parked.clear()
        if self.exec_log is not None:
            self.exec_log.exited(tid, status)
        if tid == self.root and self.log_is_stderr:
            # The command returned to its caller; stderr must not be held open by us for
            # descendants still running (`$(wasmbinfmt -- cmd 2>&1)` would wait for them).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            self.log = None

    def _guarded(self, handler: Callable[..., None], tid: int, *args) -> None:
        """Run a handler; if it fails, the tracee goes on natively rather than hang or die."""
        try:
            handler(tid, *args)
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
        """A line of ours in the log: on a line of its own where the log is a file the
        tree writes too (its last byte is looked at), as it cannot be on a terminal or a
        pipe (--log-file is for that)."""
        if self.log is not None:
            try:
                self.log.write(f"{self._fresh_line()}wasmbinfmt: {message}\n")
                self.log.flush()
            except OSError:  # an unwritable log must not stop the tree
                self.log = None

    def _fresh_line(self) -> str:
        try:
            fd = self.log.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not st.st_size:
                return ""
            # The log's descriptor is write-only, as a redirection opens it: read the file
            # through another.
            reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                return "\n" if os.pread(reader, 1, st.st_size - 1) != b"\n" else ""
            finally:
                os.close(reader)
        except (OSError, ValueError, AttributeError):
            return ""  # not a file, or not one we may read

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

    # -- clone events -----------------------------------------------------------------------

    def _on_clone(self, tid: int, event: int) -> None:
        """`tid` made a new tracee: note whether the child shares its memory."""
        child = kernel.event_message(tid)
        self._get_regs(tid)
        arch = self.arch
        number, flags = arch.syscall_args(self.regs)[:2]
        if number == arch.clone3:
            flags = int.from_bytes(self.memory.read(tid, flags, 8).ljust(8, b"\0"), "little")
        elif number != arch.clone:  # fork, vfork
            flags = CLONE_VM if event == PTRACE_EVENT_VFORK else 0
        vfork_stack = arch.stack(self.regs) if event == PTRACE_EVENT_VFORK else None
        self.spaces.cloned(tid, child, bool(flags & CLONE_VM), vfork_stack)
        if child in self.parked:
            self.parked.discard(child)
            resume(PTRACE_CONT, child)
        resume(PTRACE_CONT, tid)

    def _same_memory(self, tid: int, other: int) -> bool:
        return kernel.same_memory(self.arch.kcmp, tid, other)

    # -- exec stops -------------------------------------------------------------------------

    def _on_exec_stop(self, tid: int) -> None:
        pending = self.pending.get(tid)
        if pending is not None and pending.phase == "reenter":
            pending.phase = "exec"  # the exec we prepared with an mmap, running again
            resume(PTRACE_SYSCALL, tid)
            return
        self._get_regs(tid)
        if kernel.event_message(tid) != FILTER_DATA:
            self._fail(tid, errno.ENOSYS)  # the program's own filter: no tracer for it
            return
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
        self.exec_name = b""
        verdict = self._verdict(tid, dirfd, path_at, flags)
        if verdict is None:
            if self.exec_log is not None:
                self.exec_log.native_attempts += 1
            if self.verbose and self.not_installed_why and self.exec_name:
                self._explain_native(tid)
            resume(PTRACE_CONT, tid)
        elif isinstance(verdict, Fail):
            if self.exec_log is not None:
                self.exec_log.refused(tid, self.exec_name, verdict.errno)
            if self.verbose and verdict.rules and verdict.rules[0].name not in self.loops_said:
                first = verdict.rules[0]
                self.loops_said.add(first.name)
                self._say(f"[{tid}] {os.fsdecode(self.exec_name)}: rule {first.name!r}: "
                          f"{loop_message(first.interpreter, verdict.rules[1:])}")
            self._fail(tid, verdict.errno)
        else:
            self._rewrite(tid, number, verdict, argv_at, envp_at)

    def _explain_native(self, tid: int) -> None:
        """-v: a file that runs natively, which a packaged rule would run if its emulator
        were installed: say so, once per rule."""
        from ..exec.files import read_header

        try:
            header = read_header(tracee_path(tid, self.exec_name, self._in_our_root))
        except OSError:
            return
        rule = next(self.not_installed.candidates(self.exec_name, header), None)
        if rule is not None and rule.name in self.not_installed_why:
            why = self.not_installed_why.pop(rule.name)
            self._say(f"{os.fsdecode(self.exec_name)}: rule {rule.name!r} ({rule.origin}) "
                      f"would run it, but {why}; it runs natively")

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
        self.resolving, self.resolving_in_our_root = tid, None
        # With an empty name the descriptor itself runs: there is no link to not follow.
        self.inspector.nofollow_first = bool(flags & AT_SYMLINK_NOFOLLOW and path)
        inaccessible = dirfd != AT_FDCWD and relative and fd_is_cloexec(tid, dirfd)
        return resolve_exec(name, self.inspector, inaccessible)

    def _locate(self, name: bytes, follow: bool = True) -> bytes:
        return tracee_path(self.resolving, name, self._in_our_root, follow)

    def _in_our_root(self) -> bool:
        """Whether the exec at hand's tracee has our root and mount namespace: looked at
        once an exec, however many files its chain and -v look at."""
        if self.resolving_in_our_root is None:
            self.resolving_in_our_root = root_identity(self.resolving) == self.own_root
        return self.resolving_in_our_root

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
        caller_argv = self.memory.read_pointers(tid, argv_at) if argv_at else []
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
        handoff = ignored = None  # ignored: the caller's, of those Python's start changes
        fast = None  # "warm" or "launched": the way a module exec skips the runner's start
        runner = len(self.builtin_runner)
        if strings[:runner] == self.builtin_runner:
            self._module_cache()
            if self.verbose:
                strings.insert(runner, b"--verbose")
            if self.code_log_option is not None:
                strings.insert(runner, self.code_log_option)
            launched = self._launched(tid, strings, runner) if self.warm_wanted else None
            if launched is not None:
                strings, fast = launched, "launched"
            elif self.warm_wanted:
                handoff = self._handoff(tid, strings[runner:], tail, envp_at, rewrite.env)
                fast = "warm" if handoff is not None else None
            if fast is None:  # the runner starts itself
                self._compile_bytecode()
                ignored = ignored_signals(tid) & PYTHON_IGNORES_MASK
                if ignored:  # after --verbose
                    strings.insert(runner + bool(self.verbose),
                                   b"--ignored-signals=%x" % ignored)
        elif strings[:len(self.component_runner)] == self.component_runner:
            ignored = ignored_signals(tid) & PYTHON_IGNORES_MASK
            if ignored:  # after the wasmtime CLI's path
                strings.insert(len(self.component_runner) + 1,
                               b"--ignored-signals=%x" % ignored)
        if self.capture is not None:
            if ignored is None:
                ignored = ignored_signals(tid) & PYTHON_IGNORES_MASK
            strings[:0] = [*self.capture, b"--ignored-signals=%x" % ignored, b"--"]
        if rewrite.sysroot_for is not None:
            rewrite = self._with_ld_prefix(tid, rewrite, envp_at)
        env_kept, env_added, envp = [], 0, envp_at
        if handoff is not None:  # the client instead, with an empty environment
            strings, tail, envp = handoff.client_argv(), [], None
        elif rewrite.env:
            caller_env = self.memory.read_pointers(tid, envp_at) if envp_at else []
            if caller_env is None:
                resume(PTRACE_CONT, tid)
                return
            env_kept = self._env_without(tid, caller_env, {k for k, _ in rewrite.env})
            added = [k + b"=" + v for k, v in rewrite.env]
            strings += added
            env_added, envp = len(added), None
        new_exec = NewExec(syscall, strings, len(strings) - env_added, tail, envp, env_kept,
                           env_added)
        self._report(tid, rewrite, caller_argv, fast)
        saved = bytes(self.regs)
        size = new_exec.size()
        spaces, arch = self.spaces, self.arch
        stack = arch.stack(self.regs)
        base = arch.scratch_below_stack(self.regs, size)
        mapping = stack_mapping(tid, stack)
        if (spaces.below_stack_allowed(tid, spaces.sharers(tid, self._same_memory), stack,
                                       mapping)
                and base - STACK_MARGIN >= mapping[0]
                and self._place(tid, new_exec, base)):
            self._set_regs(tid)
            self.pending[tid] = Pending(saved, "exec", handoff=handoff)
            resume(PTRACE_SYSCALL, tid)
            return
        area = spaces.free_area(tid, size)
        while area is not None:
            if (self.memory.read(tid, area.address, COOKIE_SIZE) == area.cookie
                    and self._place(tid, new_exec, area.address + COOKIE_SIZE)):
                self._set_regs(tid)
                area.user = tid
                self.pending[tid] = Pending(saved, "exec", area=area, handoff=handoff)
                resume(PTRACE_SYSCALL, tid)
                return
            spaces.forget(tid, area)  # replaced since (an exec we did not see)
            area = spaces.free_area(tid, size)
        # No area yet: have the tracee map one first (mmap), then exec.
        length = area_size(size, PAGE)
        for n, value in enumerate((0, length, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS,
                                   (1 << 64) - 1, 0), 1):
            arch.set_arg(self.regs, n, value)
        self._set_regs(tid, syscall=arch.mmap)
        self.pending[tid] = Pending(saved, "mmap", new_exec, length=length, handoff=handoff)
        resume(PTRACE_SYSCALL, tid)

    def _module_cache(self) -> str:
        """The cache of compiled modules ("": none), found at the run's first module exec,
        when the run starts to hold it: a compile an earlier run left waits while this run
        goes on (tiers.hold_run)."""
        if self.module_cache is None:
            from ..runners import tiers

            self.module_cache = cache.usable_dir() or ""
            if self.module_cache:
                self.run_lock = tiers.hold_run(self.module_cache)  # closed when we exit
        return self.module_cache

    def _launched(self, tid: int, strings: list[bytes], runner: int) -> list[bytes] | None:
        """The launcher's argv up to the caller's (runners/launcher.py), where it can serve
        this module exec: its Cranelift code cached, a caller of our user in our root."""
        from ..runners import launcher

        module = launcher.module_of(strings[runner:])
        if module is None or module.startswith((b"/dev/fd/", b"/proc/")):
            return None  # a descriptor's name: the warm runner reads it in the caller's table
        if not self.launch_checks:
            self.launch_checks = launcher.environment_checks()
        if not self._module_cache() or self.launcher_path == "":
            return None
        try:
            st = os.stat(self._locate(module))
            status = status_fields(tid)
            uid, ignored = status[b"Uid"].split(), int(status[b"SigIgn"], 16)
        except (OSError, KeyError, ValueError):
            return None
        ours = b"%d" % os.geteuid()
        if uid[1] != ours or uid[3] != ours or not self._in_our_root():
            return None  # the cache and the launcher are ours to run
        ticket = launcher.read_ticket(self.module_cache, st)
        if ticket is None:
            return None
        if self.launcher_path is None:
            self.launcher_path = launcher.build(self.module_cache) or ""
            if not self.launcher_path:
                if self.verbose:
                    self._say("the module launcher could not be built and run here (it "
                              "needs a C compiler, `cc` or $CC, and a cache directory that "
                              "allows exec): module execs go to the warm runner")
                return None
        words = list(strings)
        ignored &= PYTHON_IGNORES_MASK
        if ignored:  # for the runner it hands over to, after --verbose
            words.insert(runner + bool(self.verbose), b"--ignored-signals=%x" % ignored)
        return launcher.launcher_argv(self.launcher_path, ticket, self.launch_checks, words,
                                      runner)

    def _handoff(self, tid: int, runner_argv: list[bytes], tail: list[int], envp_at: int,
                 added_env: list[tuple[bytes, bytes]]):
        if self.warm is None:
            from .handoff import WarmRunner

            self.warm = WarmRunner(self.root, self.warm_clients)
        return self.warm.handoff(tid, self.memory, runner_argv, tail, envp_at, added_env)

    def _place(self, tid: int, new_exec: NewExec, base: int, prefix: bytes = b"") -> bool:
        """Write the new argv at `base` (after `prefix`, written just before it) and point
        the exec's arguments in self.regs at it."""
        blob, path, argv, envp = new_exec.layout(base)
        if not self.memory.write(tid, base - len(prefix), prefix + blob):
            return False
        self._point_exec_at(new_exec.syscall, path, argv, envp)
        return True

    def _point_exec_at(self, syscall: int, path: int, argv: int, envp: int) -> None:
        arch, regs = self.arch, self.regs
        if syscall == arch.execve:
            values = (path, argv, envp)
        else:  # execveat(AT_FDCWD, interpreter, argv, envp, 0)
            values = (AT_FDCWD, path, argv, envp, 0)
        for n, value in enumerate(values, 1):
            arch.set_arg(regs, n, value)

    def _caller_string(self, tid: int, caller_argv: list[int], index: int) -> bytes | None:
        """The caller's argv[index], moved by an argv0-option rule ("" past the end)."""
        if index >= len(caller_argv):
            return b""
        return self.memory.read_string(tid, caller_argv[index], MAX_ARG_STRLEN)

    def _with_ld_prefix(self, tid: int, rewrite: Rewrite, envp_at: int) -> Rewrite:
        """QEMU_LD_PREFIX for qemu, for a dynamically linked program whose loader this
        machine lacks and one of the rule's sysroots has (ld_prefix_for), unless the
        caller set one."""
        rule, name = rewrite.sysroot_for
        loader = elf_loader(tracee_path(tid, name, self._in_our_root))
        if loader is None:
            return rewrite  # static (or unreadable: qemu will say)
        key = (rule.name, loader)
        if key not in self.ld_prefixes:
            self.ld_prefixes[key] = prefix = ld_prefix_for(loader, rule.ld_prefixes)
            if self.verbose:
                found = (f"QEMU_LD_PREFIX={prefix}, where the caller sets none" if prefix
                         else "none of its ld-prefix sysroots has it either")
                self._say(f"rule {rule.name!r}: {os.fsdecode(loader)}, the loader of "
                          f"{os.fsdecode(name)}, is not on this machine: {found}"
                          if not os.path.exists(loader) else
                          f"rule {rule.name!r}: {os.fsdecode(loader)} is on this machine: "
                          f"no QEMU_LD_PREFIX")
        prefix = self.ld_prefixes[key]
        if prefix is None:
            return rewrite
        caller_env = self.memory.read_pointers(tid, envp_at) if envp_at else []
        if caller_env is None or len(self._env_without(tid, caller_env, {QEMU_LD_PREFIX})) \
                < len(caller_env):
            return rewrite  # the caller's choice stands (or an EFAULT for the kernel)
        return rewrite._replace(env=(*rewrite.env, (QEMU_LD_PREFIX, os.fsencode(prefix))))

    def _env_without(self, tid: int, env: list[int], keys: set[bytes]) -> list[int]:
        """The caller's environment pointers, less the variables the rule sets."""
        prefixes = tuple(k + b"=" for k in keys)
        longest = max(map(len, prefixes))
        return [p for p in env if not self.memory.read(tid, p, longest).startswith(prefixes)]

    def _report(self, tid: int, rewrite: Rewrite, caller_argv: list[int],
                fast: str | None) -> None:
        for rule in rewrite.rules:
            if rule.name in self.checked_rules:
                continue
            self.checked_rules.add(rule.name)
            problem = interpreter_problem(rule)
            if problem and rule.interpreter.startswith("/") and not self._in_our_root():
                try:  # a tracee with a root of its own has the emulator there, or not
                    os.stat(self._locate(os.fsencode(rule.interpreter)))
                    problem = None
                except OSError:
                    pass
            if problem:
                self._say(f"rule {rule.name!r}: emulator missing: {problem}; "
                          f"its files fail to exec with ENOENT")
        if self.exec_log is not None:
            self._log_exec(tid, rewrite, caller_argv, FAST_PATHS.get(fast, "started"))
        if self.verbose >= 2:  # the emulator's whole argv
            shown = [self.memory.read_string(tid, p, 256) or b"?" for p in caller_argv[:16]]
            argv = rewrite.argv.build(shown)
            more = " …" if len(caller_argv) > 16 else ""
            rules = " → ".join(r.name for r in rewrite.rules)
            self._say(f"[{tid}] rule {rules}: "
                      + " ".join(os.fsdecode(a) for a in argv) + more
                      + (f" ({FAST_PATHS[fast]})" if fast else ""))
        elif self.verbose:  # short: the rule and the program
            self._say(f"[{tid}] {' → '.join(r.name for r in rewrite.rules)} "
                      f"{os.fsdecode(self.exec_name)}" + (f" ({fast})" if fast else ""))

    def _log_exec(self, tid: int, rewrite: Rewrite, caller_argv: list[int], way: str) -> None:
        argv = [self.memory.read_string(tid, p, LOGGED_STRING) or b"?"
                for p in caller_argv[:LOGGED_ARGS]]
        try:
            cwd = os.readlink(f"/proc/{tid}/cwd".encode())
            ppid = stat_field(tid, 4)
        except (OSError, ValueError, IndexError):
            cwd, ppid = b"?", 0
        self.exec_log.exec(tid, ppid, cwd, self.exec_name, argv,
                           [rule.name for rule in rewrite.rules], rewrite.argv.build(argv), way)

    # -- syscall stops: the result of a rewritten exec ---------------------------------------

    def _on_syscall_stop(self, tid: int) -> None:
        pending = self.pending.get(tid)
        if pending is None:
            # A successful exec from a non-leader thread stops under the leader's id; the
            # thread's own entry is left behind with its old id: its exec is done.
            for stale in [t for t in self.pending if not os.path.exists(f"/proc/{t}")]:
                pending = self.pending.pop(stale)
                handoff = pending.handoff
                if handoff is not None and handoff.process != tid:
                    pending.handoff = None  # another process's, which died meanwhile
                    handoff.close()
                self._exec_done(tid, pending, 0)
                self.spaces.left(stale)
            self.spaces.exec_succeeded(tid)
            resume(PTRACE_CONT, tid)
            return
        self._get_regs(tid)
        arch, regs = self.arch, self.regs
        result = arch.result(regs)
        if pending.phase == "exec":
            del self.pending[tid]
            self._exec_done(tid, pending, result)
            if result < 0:
                self._restore(pending.saved, result)
                self._set_regs(tid)
            resume(PTRACE_CONT, tid)
        else:  # mmap: the scratch area is there; write the argv and run the exec again
            area = Area(result, pending.length) if result >= 0 else None
            ctypes.memmove(ctypes.addressof(regs), pending.saved, len(pending.saved))
            if area is not None:
                self.spaces.add_area(tid, area)
            # The write fails where a sibling thread's exec has just replaced the memory
            # (this thread is being killed): its exec fails, for no one to see.
            if area is None or not self._place(tid, pending.new_exec, result + COOKIE_SIZE,
                                               area.cookie):
                del self.pending[tid]
                self._exec_done(tid, pending, -errno.ENOMEM)
                self._restore(pending.saved, -errno.ENOMEM)
                self._set_regs(tid)
                resume(PTRACE_CONT, tid)
                return
            area.user = tid
            pending.area = area
            arch.rerun_syscall(regs, pending.new_exec.syscall)
            self._set_regs(tid)
            pending.phase = "reenter"
            resume(PTRACE_CONT, tid)

    def _exec_done(self, tid: int, pending: Pending, result: int) -> None:
        """A rewritten exec's result: `tid` runs its new program, or goes on in the old one."""
        if pending.area is not None:
            pending.area.user = 0
        if pending.handoff is not None:
            if result >= 0:
                self.warm.hand_over(tid, pending.handoff)
            else:
                pending.handoff.close()
        if result >= 0:
            self.spaces.exec_succeeded(tid)
            if self.capture is not None:
                self.capturing.add(tid)
        elif self.exec_log is not None:
            self.exec_log.exec_failed(tid, -result)
