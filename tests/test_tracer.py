"""`wasmbinfmt -- COMMAND` with real processes: every test runs as the current user and as an
unprivileged one (`nobody`, when the tests run as root as in CI).

The corpus of exec situations compared with native runs and with the real
kernel's binfmt_misc is in test_transparency.py; here: rule chains and loops
against the kernel, status and signals, streams, load, huge argvs, real
emulators.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machines import FOREIGN, FOREIGN_ARCHES, debian_qemu_line, debian_qemu_yaml

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120

def wasmbinfmt(user, args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("capture_output", True)
    return subprocess.run(user([sys.executable, "-m", "wasmbinfmt", *args]), **kwargs)


def wasm_rule(box: Path, flags: str = "", interpreter: str | None = None) -> str:
    return f":probe:M::\\x00asm::{interpreter or box / 'emu.sh'}:{flags}"


def traced(user, rule: str, argv: list[str], **kwargs):
    return wasmbinfmt(user, ["--no-default-rules", "--rule", rule, "--", *argv], **kwargs)


# ---------------------------------------------------------------------------
# Rule chains and loops under the kernel's binfmt_misc and under wasmbinfmt

def driver_argv(box: Path, case: tuple) -> list[str]:
    mode, target, *args = case
    return [str(box / "execer"), mode, target.format(box=box), *args]


def test_a_rule_loop_gives_ELOOP_like_the_kernel(box, user, kernel_binfmt):
    loop = wasm_rule(box, interpreter=box / "probe.wasm")
    argv = driver_argv(box, ("execve", "./hello.wasm", "a0"))
    kernel = kernel_binfmt([loop], argv, as_user=user, cwd=box, timeout=TIMEOUT)
    ours = wasmbinfmt(user, ["-v", "--no-default-rules", "--rule", loop, "--", "sh", "-c",
                             f"{' '.join(argv)}; {' '.join(argv)}"], cwd=box)
    assert ours.stdout == b"errno=40\nerrno=40\n"
    assert kernel is None or kernel.stdout == b"errno=40\n"
    said = [line for line in ours.stderr.decode().splitlines() if "ELOOP" in line]
    assert len(said) == 1 and said[0].endswith(  # once a run
        f"./hello.wasm: rule 'probe': its emulator {box / 'probe.wasm'} is itself taken by "
        f"rule 'probe': a loop, so the exec fails with ELOOP, as under binfmt_misc (the kernel "
        f"looks an emulator up again)")


def test_chains_of_rules_match_the_kernel(box, user, kernel_binfmt):
    # probe.wasm runs under hello.wasm (a wasm "emulator"), which runs under emu.sh.
    first = f":first:E::xw::{box / 'hello.wasm'}:"
    second = wasm_rule(box)
    argv = driver_argv(box, ("execve", "./x.xw", "a0", "b"))
    (box / "x.xw").write_text("anything\n")
    os.chmod(box / "x.xw", 0o755)
    kernel = kernel_binfmt([second, first], argv, as_user=user, cwd=box, timeout=TIMEOUT)
    ours = wasmbinfmt(user, ["--no-default-rules", "--rule", first, "--rule", second, "--",
                             *argv], cwd=box)
    assert ours.stdout.decode().splitlines() == [
        f"[{box / 'emu.sh'}]", f"[{box / 'hello.wasm'}]", "[./x.xw]", "[b]"]
    assert kernel is None or kernel.stdout == ours.stdout


def test_a_tracee_in_a_mount_namespace_of_its_own_has_its_own_files_matched(box, user):
    """`unshare -rm` needs no privilege: inside, an absolute path may name another file than
    it does for the tracer, and the tree's view is the one that counts (as for the kernel)."""
    (box / "prog").write_bytes((box / "probe.native").read_bytes())
    os.chmod(box / "prog", 0o755)
    script = f'mount --bind {box}/probe.wasm {box}/prog && exec ./execer execve {box}/prog a0 b'
    ours = traced(user, wasm_rule(box), ["unshare", "-rm", "sh", "-c", script], cwd=box)
    assert (ours.returncode, ours.stderr) == (0, b"")
    assert ours.stdout.decode().splitlines() == [f"[{box}/emu.sh]", f"[{box}/prog]", "[b]"]


@pytest.mark.parametrize("follow", ["absolute symlink", "relative name"])
def test_a_chrooted_tracee_has_its_symlinks_followed_in_its_own_root(box, user, follow):
    """In a chroot (`unshare -r chroot`, no privilege needed), /usr/bin/tool -> /bin/real
    means the jail's /bin/real: the tracer must not follow it into its own root."""
    jail = box / "jail"
    for directory in ("bin", "usr/bin", "work"):
        (jail / directory).mkdir(parents=True)
    shutil.copy(box / "probe.static", jail / "bin" / "emu")
    (jail / "bin" / "real").write_bytes((box / "probe.wasm").read_bytes())
    os.symlink("/bin/real", jail / "usr" / "bin" / "tool")
    os.symlink("../bin/real", jail / "work" / "up")
    for path in (jail / "bin" / "emu", jail / "bin" / "real"):
        os.chmod(path, 0o755)
    rule = ":w:M::\\x00asm::/bin/emu:"
    if follow == "absolute symlink":
        command = ["unshare", "-r", "chroot", str(jail), "/usr/bin/tool", "x"]
        name = "/usr/bin/tool"
    else:  # chroot's command runs from the jail's / (chroot changes directory to it)
        command = ["unshare", "-r", "chroot", str(jail), "./work/up", "x"]
        name = "./work/up"
    done = wasmbinfmt(user, ["--no-default-rules", "--rule", rule, "--", *command], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[:3] == ["argc=3", "argv[0]=/bin/emu",
                                                     f"argv[1]={name}"]
    assert b"emulator missing" not in done.stderr  # it is there, in the jail


def test_missing_emulator_fails_with_ENOENT_and_is_reported_once(box, user):
    rule = wasm_rule(box, interpreter="/nonexistent/emulator")
    script = "./execer execve ./probe.wasm a; ./execer execve ./probe.wasm b; true"
    ours = traced(user, rule, ["sh", "-c", script], cwd=box)
    assert ours.stdout == b"errno=2\nerrno=2\n"
    assert ours.stderr.count(b"emulator missing") == 1
    assert b"'probe'" in ours.stderr


# ---------------------------------------------------------------------------
# The command's own status, signals and streams

@pytest.mark.parametrize("status", [0, 1, 2, 7, 126, 127, 128, 255])
def test_exit_status_is_the_commands(box, user, status):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    assert traced(user, rule, ["./probe.wasm", "exit", str(status)], cwd=box).returncode == status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGINT])
def test_death_by_signal_is_the_commands(user, sig):
    done = wasmbinfmt(user, ["--", "sh", "-c", f"ulimit -c 0; kill -{int(sig)} $$"])
    assert done.returncode == -sig


def test_stdin_stdout_stderr_pass_through(box, user):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    done = traced(user, rule, ["./probe.wasm", "cat"], cwd=box, input=b"line 1\nline 2\n")
    assert (done.stdout, done.stderr, done.returncode) == (b"line 1\nline 2\n", b"done\n", 0)


SHOW_CPUS = """
import os, sys
def cpus(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
print(cpus("self"))
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        if argv[1:3] == [b"-m", b"wasmbinfmt"] and os.stat(f"/proc/{pid}").st_uid == os.getuid():
            print(cpus(pid))
    except OSError:
        pass
"""


def test_the_tracer_keeps_to_one_cpu_and_the_tree_to_all(user):
    """The tracer pins itself for speed; the command's own CPUs must stay what they were."""
    native = subprocess.run([sys.executable, "-c", SHOW_CPUS], capture_output=True,
                            check=True).stdout.split()
    done = wasmbinfmt(user, ["--no-default-rules", "--", sys.executable, "-c", SHOW_CPUS])
    lines = done.stdout.split()
    assert done.returncode == 0 and lines[0] == native[0]
    if len(os.sched_getaffinity(0)) > 1:
        # The command execed over the first `python -m wasmbinfmt`: what is left is the
        # tracer (and maybe another test's), on one CPU each.
        assert lines[1:] and all(b"," not in cpus and b"-" not in cpus for cpus in lines[1:])


def test_the_tree_keeps_the_machines_speculation_mitigations(user):
    """Installing a seccomp filter turns on the speculative-store-bypass mitigation on
    kernels whose setting is "seccomp" (the default before 5.16), slowing the whole tree;
    the filter is installed with SPEC_ALLOW so a traced program has what a native one has."""
    show = ["sh", "-c", "grep -E '^(Speculation|Seccomp:)' /proc/self/status"]
    native = subprocess.run(user(show), capture_output=True, text=True, check=True).stdout
    done = wasmbinfmt(user, ["--no-default-rules", "--", *show], text=True)
    assert done.returncode == 0, done.stderr
    assert "Seccomp:\t2" in done.stdout  # filtered (as the kernel reports it)...
    assert [line for line in done.stdout.splitlines() if line.startswith("Speculation")] == \
        [line for line in native.splitlines() if line.startswith("Speculation")]  # ...alone


def test_command_not_found_and_not_executable(box, user):
    done = wasmbinfmt(user, ["--no-default-rules", "--", "./nothing-here"], cwd=box)
    assert done.returncode == 127 and b"nothing-here" in done.stderr
    done = wasmbinfmt(user, ["--no-default-rules", "--", str(box)])
    assert done.returncode == 126


def test_background_descendants_do_not_hold_the_caller_and_stay_traced(box, user):
    rule = wasm_rule(box)
    script = ("echo started; (sleep 1; ./probe.wasm from-background > bg.out) "
              "</dev/null >/dev/null 2>&1 &")
    start = time.monotonic()
    done = traced(user, rule, ["sh", "-c", script], cwd=box)
    assert done.stdout == b"started\n" and done.returncode == 0
    assert time.monotonic() - start < 5  # not waiting for the background job
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (box / "bg.out").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    assert (box / "bg.out").read_text().splitlines()[1:] == ["[./probe.wasm]",
                                                            "[from-background]"]


def test_twenty_deep_process_chain(box, user):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    # Each shell waits for the next one: 20 processes alive at once, the last runs the wasm.
    nest = 'if [ "$1" -gt 0 ]; then sh -c "$0" "$0" $(($1 - 1)); else ./probe.wasm deep; fi'
    done = traced(user, rule, ["sh", "-c", nest, nest, "20"], cwd=box)
    assert done.stdout.decode().splitlines()[-1] == "argv[1]=deep"


def test_a_thousand_rerouted_execs_from_a_shell_loop(box, user):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    loop = "i=0; while [ $i -lt 1000 ]; do ./probe.wasm count; i=$((i+1)); done"
    done = traced(user, rule, ["sh", "-c", loop], cwd=box)
    assert done.stdout.splitlines() == [b"argc=2"] * 1000


# ---------------------------------------------------------------------------
# Huge argvs: the new argv goes into a scratch area when the stack has no room

def test_a_100k_argument_exec_works_as_natively(box, user):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    native = subprocess.run(user([str(box / "execer"), "big-argv", "./probe.native",
                                  "100000", "count"]), cwd=box, capture_output=True)
    ours = traced(user, rule, ["./execer", "big-argv", "./probe.wasm", "100000", "count"],
                  cwd=box)
    assert native.stdout.splitlines()[0] == b"argc=100001"
    assert ours.stdout == b"argc=100001\n"


def test_too_big_an_argv_gives_E2BIG_as_natively(box, user):
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    word = "w" * 1000
    native = subprocess.run(user([str(box / "execer"), "big-argv", "./probe.native", "20000",
                                  word]), cwd=box, capture_output=True)
    ours = traced(user, rule, ["./execer", "big-argv", "./probe.wasm", "20000", word], cwd=box)
    assert native.stdout == ours.stdout == b"errno=7\n"


# ---------------------------------------------------------------------------
# The default rules (the built-in WASI runner)

def test_default_rules_run_wasm_with_the_builtin_runner(box, user):
    done = wasmbinfmt(user, ["--", "./probe.wasm", "a b", "--dir", "c"], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[2:] == ["argv[1]=a b", "argv[2]=--dir", "argv[3]=c"]
    done = wasmbinfmt(user, ["--", "./probe.wasm", "exit", "42"], cwd=box)
    assert done.returncode == 42


def test_verbose_logs_each_rerouted_exec(box, user, tmp_path):
    rule = wasm_rule(box)
    done = traced(user, rule, ["-v", "./probe.wasm", "x"], cwd=box)
    # "-v" after "--" belongs to the command: there is no command called that (127; 126 when
    # some PATH directory is unreadable to the user, as with execvp natively).
    assert done.returncode in (126, 127) and done.stderr.startswith(b"wasmbinfmt: -v: ")
    done = wasmbinfmt(user, ["-v", "--no-default-rules", "--rule", rule, "--",
                             "./probe.wasm", "x"], cwd=box)
    assert re.fullmatch(rb"wasmbinfmt: \[\d+\] probe \./probe\.wasm\n", done.stderr)
    done = wasmbinfmt(user, ["-vv", "--no-default-rules", "--rule", rule, "--",
                             "./probe.wasm", "x"], cwd=box)  # the emulator's whole argv
    assert b"rule probe: " + bytes(box / "emu.sh") + b" ./probe.wasm x" in done.stderr


def test_concurrent_runs_with_different_emulators_do_not_interfere(box, user):
    """--emulator is this run's choice only: two runs at once each get their own."""
    runs = {emulator: subprocess.Popen(
        user([sys.executable, "-m", "wasmbinfmt", "--emulator", f"wasm={box}/{emulator} --tag",
              "--", "sh", "-c", "for i in 1 2 3 4 5; do ./probe.wasm $i; done"]),
        cwd=box, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for emulator in ("emu.sh", "runtime.sh")}
    out = {name: run.communicate(timeout=TIMEOUT) for name, run in runs.items()}
    assert all(run.returncode == 0 for run in runs.values()), out
    # emu.sh prints its argv; runtime.sh runs the native probe with what follows the path.
    assert out["emu.sh"][0].decode().splitlines()[:3] == [f"[{box}/emu.sh]", "[--tag]",
                                                          "[./probe.wasm]"]
    assert out["emu.sh"][0].count(b"[--tag]") == 5
    assert out["runtime.sh"][0].count(b"argv[0]=./probe.wasm") == 0  # shifted: ran the probe
    assert out["runtime.sh"][0].count(b"argc=") == 5


# ---------------------------------------------------------------------------
# Foreign-architecture ELF through the real qemu-user

@pytest.mark.parametrize("arch", FOREIGN_ARCHES)
def test_the_machines_qemu_rules_run_foreign_elf_as_natively(box, user, arch):
    """--system: Debian's qemu binfmt.d lines, with their -binfmt-P interpreters (P)."""
    if not os.path.exists(f"/usr/lib/binfmt.d/qemu-{arch}.conf"):
        pytest.skip("Debian's qemu-user-binfmt is not installed")
    argv = ["./execer", "execve", f"./probe.{arch}", "my-name", "--help", "x y"]
    native = subprocess.run(user(["./execer", "execve", "./probe.native", "my-name", "--help",
                                  "x y"]), cwd=box, capture_output=True, timeout=TIMEOUT)
    ours = wasmbinfmt(user, ["--system", "--", *argv], cwd=box)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == native.stdout and b"argv[0]=my-name" in native.stdout
    alone = subprocess.run(user(argv), cwd=box, capture_output=True, timeout=TIMEOUT)
    assert alone.stdout == b"errno=8\n"  # ENOEXEC: the kernel has no rule for it here


@pytest.mark.parametrize("arch", FOREIGN_ARCHES)
def test_a_dynamic_foreign_program_gets_the_cross_sysroot_unless_the_caller_chose(
        box, user, arch):
    sysroot = f"/usr/{arch}-linux-gnu"
    loader = {"aarch64": "/lib/ld-linux-aarch64.so.1",
              "riscv64": "/lib/ld-linux-riscv64-lp64d.so.1"}[arch]
    if os.path.exists(loader) or not os.path.exists(sysroot + loader):
        pytest.fail(f"this test needs {sysroot} (Debian's cross libc, which .ci/run "
                    f"installs) and no {loader} on the machine")
    program = f"./hello.dyn.{arch}"
    alone = subprocess.run(user([f"qemu-{arch}", program]), cwd=box, capture_output=True,
                           timeout=TIMEOUT)
    assert alone.returncode == 255 and loader.encode() in alone.stderr  # qemu without help
    done = wasmbinfmt(user, ["-v", "--", "bash", "-c", f"exec -a my-name {program} x"],
                      cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello: argc=2\nargv[0]=my-name\nargv[1]=x\n"
    said = [line for line in done.stderr.decode().splitlines() if "QEMU_LD_PREFIX" in line]
    (line,) = said  # said once, naming the program (the path bash exec'd), the loader, the choice
    assert line.startswith(f"wasmbinfmt: rule {arch!r}: {loader}, the loader of ")
    assert line.endswith(f"hello.dyn.{arch}, is not on this machine: "
                         f"QEMU_LD_PREFIX={sysroot}, where the caller sets none")
    chosen = wasmbinfmt(user, ["--", "env", "QEMU_LD_PREFIX=/nonexistent", program], cwd=box)
    assert chosen.returncode == 255 and loader.encode() in chosen.stderr  # the caller's stands


# Debian 12's registration lines, as qemu-user-binfmt installs them (flags OP) and as
# qemu-user-static does (OPF); both name the interpreter ARCH-binfmt-P, a symlink to qemu
# whose name tells qemu that argv[1] is the program's path and argv[2] its argv[0].
@pytest.mark.parametrize("flags", ["OP", "OPF"], ids=["qemu-user-binfmt", "qemu-user-static"])
def test_debians_qemu_registrations_keep_the_binfmt_p_name_and_argv0(box, user, flags):
    qemu = shutil.which(f"qemu-{FOREIGN}")
    if qemu is None:
        pytest.fail("qemu-user is not installed (.ci/run installs it)")
    (box / "qemu-binfmt").mkdir()
    interpreter = box / "qemu-binfmt" / f"{FOREIGN}-binfmt-P"
    interpreter.symlink_to(qemu)
    os.chmod(box / "qemu-binfmt", 0o755)
    rule = debian_qemu_line(FOREIGN, str(interpreter), flags)
    done = wasmbinfmt(user, ["--no-default-rules", "--rule", rule, "--", "./execer", "execve",
                             f"./probe.{FOREIGN}", "my-name", "x"], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["argc=2", "argv[0]=my-name", "argv[1]=x"]


def test_a_rules_yaml_qemu_gets_argv0_through_its_option(box, user):
    qemu = shutil.which(f"qemu-{FOREIGN}")
    if qemu is None:
        pytest.fail("qemu-user is not installed (.ci/run installs it)")
    rules = box / "qemu.yaml"
    rules.write_text(debian_qemu_yaml(FOREIGN, qemu))  # static and static-pie programs
    done = wasmbinfmt(user, ["--no-default-rules", "--rules", str(rules), "--", "./execer",
                             "execve", f"./probe.{FOREIGN}", "my-name", "a"], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["argc=2", "argv[0]=my-name", "argv[1]=a"]


def test_wali_and_wasi_modules_in_one_tree_go_to_their_own_emulators(box, user, tmp_path):
    """WALI and WASI modules share their first 8 bytes: the wali rule reads the imports."""
    from test_wasm import wali_shaped

    (box / "w.wasm").write_bytes(wali_shaped())
    (box / "wali-runtime.sh").write_text('#!/bin/sh\necho "WALI runtime: $*"\n')
    for name in ("w.wasm", "wali-runtime.sh"):
        os.chmod(box / name, 0o755)
    rules = box / "rules.yaml"  # replaces the default wali rule (iwasm) by name
    rules.write_text(f"rules:\n  - {{name: wali, magic: '\\x00asm', wasm-imports: [wali], "
                     f"interpreter: {box}/wali-runtime.sh}}\n")
    done = wasmbinfmt(user, ["--rules", str(rules), "--", "sh", "-c",
                             "./w.wasm a; ./probe.wasm b; ./probe.native c"], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "WALI runtime: ./w.wasm a",
        "argc=2", "argv[0]=./probe.wasm", "argv[1]=b",
        "argc=2", "argv[0]=./probe.native", "argv[1]=c"]


@pytest.mark.parametrize("close", ["exec 0<&-", "exec 1>&-", "exec 0<&- 1>&- 2>&-"])
def test_descriptors_closed_for_wasmbinfmt_stay_closed_for_the_command(box, user, close):
    """The tracer's pipes once took the free numbers and became the command's stdio."""
    script = f'{close}; exec "$@"'
    native = subprocess.run(["sh", "-c", script, "sh", *user(["./probe.native", "cat"])],
                            cwd=box, capture_output=True, timeout=TIMEOUT)
    ours = subprocess.run(["sh", "-c", script, "sh", *user([sys.executable, "-m", "wasmbinfmt",
                                                             "--", "./probe.native", "cat"])],
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert (ours.returncode, ours.stdout, ours.stderr) == \
        (native.returncode, native.stdout, native.stderr)
    assert native.stderr == (b"" if "2>&-" in close else b"done\n")


def test_make_test_under_wasmbinfmt(box, user, fixtures):
    shutil.copytree(ROOT / "tests" / "make", box / "make")
    os.chmod(box / "make", 0o777)
    done = wasmbinfmt(user, ["--", "make", "-s", "-C", str(box / "make"), "test"])
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode().count("PASS") == 3


# ---------------------------------------------------------------------------
# Job control in an interactive shell, through a terminal

def _expect(fd: int, wanted: bytes, seen: bytearray, timeout: float = 30) -> None:
    import select
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"never saw {wanted!r} in {bytes(seen)!r}")
        try:
            seen += os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side is gone
            raise AssertionError(f"terminal closed before {wanted!r}: {bytes(seen)!r}")


def test_ctrl_z_and_fg_in_an_interactive_shell(box, user):
    import pty
    rule = wasm_rule(box, interpreter=box / "runtime.sh")
    argv = user([sys.executable, "-m", "wasmbinfmt", "--no-default-rules", "--rule", rule,
                 "--", "bash", "--norc", "--noprofile", "-i"])
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(box)
        os.execvpe(argv[0], argv, {**os.environ, "PS1": "PROMPT> ", "TERM": "dumb"})
    try:
        seen = bytearray()
        _expect(fd, b"PROMPT> ", seen)
        os.write(fd, b"sleep 2; ./probe.wasm count\n")
        time.sleep(0.5)
        os.write(fd, b"\x1a")  # Ctrl-Z
        _expect(fd, b"Stopped", seen)
        _expect(fd, b"PROMPT> ", seen)
        os.write(fd, b"fg\n")
        _expect(fd, b"argc=2", seen)  # the job went on, and its wasm exec was rerouted
        _expect(fd, b"PROMPT> ", seen)
        del seen[:]
        os.write(fd, b"sleep 60; echo not-interrupted\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")  # Ctrl-C reaches the foreground job, not the shell
        _expect(fd, b"PROMPT> ", seen, timeout=20)
        assert b"not-interrupted" not in seen.replace(b"echo not-interrupted", b"")
        os.write(fd, b"exit 5\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Foreign ELF with the packaged rules (qemu-user), and without its emulator

def test_foreign_elf_runs_under_the_packaged_rules_keeping_argv0(box, user):
    script = "; ".join(f"./probe.{arch} {arch}" for arch in FOREIGN_ARCHES)
    done = wasmbinfmt(user, ["--", "bash", "-c", f"{script}; exec -a my-name ./probe.{FOREIGN} c"],
                      cwd=box)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert [line for line in lines if line.startswith("argv[")] == [
        *(line for arch in FOREIGN_ARCHES for line in (f"argv[0]=./probe.{arch}",
                                                         f"argv[1]={arch}")),
        "argv[0]=my-name", "argv[1]=c"]


def test_qemu_variables_reach_qemu(box, user):
    done = wasmbinfmt(user, ["--", "env", "QEMU_STRACE=1", f"./probe.{FOREIGN}", "x"],
                      cwd=box)
    assert done.returncode == 0 and b"argv[1]=x" in done.stdout
    assert b" exit_group(0)" in done.stderr


def test_without_its_emulator_a_packaged_rule_leaves_the_exec_native(box, user):
    no_qemu = ["env", "PATH=/nonexistent"]
    argv = ["./execer", "execve", f"./probe.{FOREIGN}", f"./probe.{FOREIGN}", "x"]
    native = subprocess.run(user([*no_qemu, *argv]), cwd=box, capture_output=True,
                            timeout=TIMEOUT)
    ours = subprocess.run(user([*no_qemu, sys.executable, "-m", "wasmbinfmt", "--", *argv]),
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert native.stdout == ours.stdout == b"errno=8\n"  # ENOEXEC: no rule, as natively
    assert ours.stderr == b""


@pytest.mark.parametrize("options, argv0", [("--preserve-argv0 --", "my-name"),
                                            ("--", "./probe.wasm")])
def test_an_emulator_choice_of_our_runner_keeps_argv0_when_asked(box, user, options, argv0):
    done = wasmbinfmt(user, ["--emulator", f"wasm=wasmbinfmt-wasi {options}", "--", "./execer",
                             "execve", "./probe.wasm", "my-name", "x"], cwd=box)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[:3] == ["argc=2", f"argv[0]={argv0}", "argv[1]=x"]


# ---------------------------------------------------------------------------
# WALI modules with a WALI runtime, started as WALI's own binfmt wrapper starts it

# A stand-in for WAMR's iwasm built with WALI, reading the environment as the real pair
# does: the /tmp/wali_env.PID a WALI parent left first (WAMR), else --env-file; mapped by
# its size, so only a regular file carries anything (WALI's libc, initenv.c).
FAKE_IWASM = """#!/bin/sh
for a in "$0" "$@"; do printf '[%s]\\n' "$a"; done
for fd in 3 9; do echo "fd$fd=$(readlink /proc/self/fd/$fd)"; done
file=
for a in "$@"; do case $a in --env-file=*) file=${a#--env-file=};; esac; done
[ -r /tmp/wali_env.$$ ] && file=/tmp/wali_env.$$
echo "env-file:"
if [ -f "$file" ]; then
    head -c "$(stat -L -c %s "$file")" "$file" | grep '^WALI_'
fi
"""


@pytest.fixture
def wali_runtime(box):
    from test_wasm import wali_shaped

    (box / "bin").mkdir()
    (box / "tmp").mkdir()
    (box / "bin" / "iwasm").write_text(FAKE_IWASM)
    (box / "w.wasm").write_bytes(wali_shaped())
    for path in (box / "bin", box / "tmp", box / "bin" / "iwasm", box / "w.wasm"):
        os.chmod(path, 0o777 if path.name == "tmp" else 0o755)
    return ["env", f"PATH={box / 'bin'}:{os.environ['PATH']}", f"TMPDIR={box / 'tmp'}"]


def run_wali(user, wali_runtime, box, variables, argv):
    handed_before = {name for name in os.listdir("/tmp") if name.startswith("wali_env.")}
    done = subprocess.run(user([*wali_runtime, *variables, sys.executable, "-m", "wasmbinfmt",
                                "--", *argv]), cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert os.listdir(box / "tmp") == []  # the environment's file is gone
    assert {name for name in os.listdir("/tmp") if name.startswith("wali_env.")} <= handed_before
    return done.stdout.decode().splitlines()


def test_a_wali_module_gets_walis_options_and_its_environment_in_a_regular_file(
        box, user, wali_runtime):
    lines = run_wali(user, wali_runtime, box, ["WALI_TEST=mine"], ["./w.wasm", "a b"])
    assert lines[:7] == [
        f"[{box}/bin/iwasm]", "[--env-file=/dev/fd/9]", "[-v=0]", "[--stack-size=4194304]",
        "[--max-threads=100]", "[./w.wasm]", "[a b]"]
    assert lines[-2:] == ["env-file:", "WALI_TEST=mine"]


def test_the_environment_a_wali_program_hands_its_exec_is_taken_and_removed(box, user,
                                                                            wali_runtime):
    script = 'printf "WALI_TEST=handed\\n" > /tmp/wali_env.$$; exec ./w.wasm c'
    lines = run_wali(user, wali_runtime, box, ["WALI_TEST=own"], ["sh", "-c", script])
    assert lines[-2:] == ["env-file:", "WALI_TEST=handed"]


def test_walis_own_variable_names_the_environment_file_as_in_walis_wrapper(box, user,
                                                                         wali_runtime):
    (box / "mine.env").write_text("WALI_TEST=from-the-file\n")
    os.chmod(box / "mine.env", 0o644)
    lines = run_wali(user, wali_runtime, box, [f"WALI_ENVFILE={box / 'mine.env'}",
                                               "WALI_TEST=own"], ["./w.wasm"])
    assert f"[--env-file={box / 'mine.env'}]" in lines
    assert lines[-2:] == ["env-file:", "WALI_TEST=from-the-file"]
    assert (box / "mine.env").exists()  # the user's own file stays


def test_walis_environment_file_takes_no_descriptor_the_program_inherits(box, user,
                                                                         wali_runtime):
    (box / "held.txt").write_text("")
    lines = run_wali(user, wali_runtime, box, ["WALI_TEST=mine"],
                     ["sh", "-c", "exec ./w.wasm 3<held.txt 9<held.txt"])
    assert "[--env-file=/dev/fd/8]" in lines
    assert f"fd3={box}/held.txt" in lines and f"fd9={box}/held.txt" in lines
    assert lines[-2:] == ["env-file:", "WALI_TEST=mine"]


def test_verbose_names_the_rule_that_would_run_a_foreign_elf_once(box, user):
    no_qemu = ["env", "PATH=/nonexistent"]
    script = ["./execer", "execve", f"./probe.{FOREIGN}", f"./probe.{FOREIGN}"]
    done = subprocess.run(user([*no_qemu, sys.executable, "-m", "wasmbinfmt", "-v", "--",
                                "/bin/sh", "-c", " ".join(script) + "; " + " ".join(script)]),
                          cwd=box, capture_output=True, timeout=TIMEOUT)
    assert done.stdout == b"errno=8\nerrno=8\n"
    lines = [line for line in done.stderr.decode().splitlines() if "would run it" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"wasmbinfmt: ./probe.{FOREIGN}: rule '{FOREIGN}' (")
    assert lines[0].endswith(f"would run it, but not installed: command 'qemu-{FOREIGN}' not "
                             f"found in PATH; it runs natively")
