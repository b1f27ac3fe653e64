"""Transparency: the same exec situations natively, under the kernel's binfmt_misc and under
wasmbinfmt, compared by exit status, stdout and stderr (the target prints the argv it got, the
driver prints errno when its exec fails).

CORPUS is one table of exec situations over a staged directory (see `stage`), whose program
`prog` is either a native program or a wasm module:
- with a native `prog` and the default rules (nothing matches), each situation must give
  what it gives natively;
- with a wasm `prog` and a rule that sends wasm to an argv-printing emulator, it must give
  what the real kernel gives with the same rule registered in a private binfmt_misc
  (kernel_oracle.py), with and without the P flag.
Every comparison runs as the current user and as `nobody`. Where we cannot be the kernel,
KNOWN_DIFFERENCES says so and the test checks the difference is exactly the documented one
(docs/security.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


TIMEOUT = 120
LONG_SHEBANG = "/." * 150  # pads an interpreter path past the kernel's 256-byte buffer


class Situation:
    """A driver argv (str items are formatted with {box}; bytes are taken as they are), the
    PATH it runs with, and whether it only makes sense for a native program."""

    def __init__(self, *argv: str | bytes, path: str = "{box}:/usr/bin:/bin",
                 native_only: bool = False):
        self.argv = argv
        self.path = path
        self.native_only = native_only

    def command(self, box: Path) -> list[bytes]:
        return [a if isinstance(a, bytes) else os.fsencode(a.format(box=box)) for a in self.argv]


def execer(mode: str, target: str | bytes, *args: str | bytes, **kwargs) -> Situation:
    return Situation("{box}/execer", mode, target, *args, **kwargs)


CORPUS = {
    # -- how the path is written
    "relative path": execer("execve", "./prog", "a0", "a1", "x y"),
    "absolute path": execer("execve", "{box}/prog", "a0", "--help"),
    "bare name, no slash": execer("execve", "prog", "a0", "b"),
    "dot-dot in the path": execer("execve", "dir/../prog", "a0"),
    "doubled slashes and dots": execer("execve", ".//.//prog", "a0"),
    "via /proc/self/cwd": execer("execve", "/proc/self/cwd/prog", "a0"),
    "non-UTF-8 name": execer("execve", b"./\xff\xfe-link", b"a\xff0", b"\xc3("),
    "trailing slash": execer("execve", "./prog/", "a0"),
    "ENOTDIR in the path": execer("execve", "./prog/x", "a0"),
    "missing file": execer("execve", "./missing", "a0"),
    "empty path": execer("execve", "", "a0"),
    "a directory": execer("execve", "./dir", "a0"),
    "no exec bit": execer("execve", "./noexec", "a0"),
    "exec bit but unreadable": execer("execve", "./unreadable", "a0"),
    "directory without search permission": execer("execve", "./locked/prog", "a0"),
    "name longer than NAME_MAX": execer("execve", "./" + "n" * 300, "a0"),
    "path longer than PATH_MAX": execer("execve", "./" + "dir/../" * 700 + "prog", "a0"),
    # -- symbolic links
    "symlink": execer("execve", "./link", "a0"),
    "chain of symlinks": execer("execve", "./chain1", "a0"),
    "dangling symlink": execer("execve", "./dangling", "a0"),
    "symlink loop": execer("execve", "./loop1", "a0"),
    "symlink to a directory": execer("execve", "./dirlink", "a0"),
    "symlinked directory in the path": execer("execve", "./dirlink/../prog", "a0"),
    # -- PATH lookup (glibc execvp)
    "PATH lookup": execer("execvp", "prog", "p", "1"),
    "PATH with a missing directory first": execer("execvp", "prog", "p",
                                                  path="/nonexistent:{box}:/usr/bin:/bin"),
    "PATH with an empty entry (the cwd)": execer("execvp", "prog", "p", path=":/usr/bin:/bin"),
    "PATH lookup, not found": execer("execvp", "no-such-program", "p"),
    "PATH: not executable first, executable later": execer(
        "execvp", "tool", "t", path="{box}/path-a:{box}/path-b:/usr/bin:/bin"),
    "PATH: only a non-executable one": execer("execvp", "tool", "t",
                                              path="{box}/path-a:/usr/bin:/bin"),
    "execvp with a slash skips PATH": execer("execvp", "./prog", "p"),
    "execvp runs a script without #! through sh": execer("execvp", "./text", "t0", "x"),
    "execvp of an empty executable file": execer("execvp", "./empty", "e0"),
    "execve of a script without #!": execer("execve", "./text", "t0"),
    "execve of an empty executable file": execer("execve", "./empty", "e0"),
    # -- other ways to start a program
    "posix_spawn": execer("posix_spawn", "./prog", "a0", "s"),
    "posix_spawnp": execer("posix_spawnp", "prog", "a0", "s"),
    "vfork": execer("vfork", "./prog", "a0", "v"),
    "exec from a second thread": execer("thread", "./prog", "a0", "t"),
    "exec while four other threads spin": execer("threads", "./prog", "a0", "t"),
    "re-exec through /proc/self/exe": execer("execve", "/proc/self/exe", "execer", "execve",
                                             "./prog", "a0", "again"),
    "exec through /proc/self/fd": Situation(
        "sh", "-c", 'exec 7<./prog && exec "$0" execve /proc/self/fd/7 a0 b', "{box}/execer"),
    "shell exec": Situation("sh", "-c", 'exec ./prog "$@"', "a0", "x", "y"),
    # -- argv and environment
    "empty argv": execer("execve", "./prog"),
    "NULL argv": execer("null-argv", "./prog"),
    "NULL envp": execer("null-envp", "./prog", "a0"),
    "empty strings in argv": execer("execve", "./prog", "", "", "x"),
    "100,000 arguments": execer("big-argv", "./prog", "100000", "count"),
    "too many arguments (E2BIG)": execer("big-argv", "./prog", "20000", "w" * 1000),
    "one 100 KiB argument": execer("long-arg", "./prog", str(100 * 1024)),
    "one argument over 128 KiB (E2BIG)": execer("long-arg", "./prog", str(128 * 1024 + 1)),
    "1,000 extra variables": execer("big-env", "./prog", "1000", "100"),
    "too big an environment (E2BIG)": execer("big-env", "./prog", "20000", "1000"),
    # -- bad pointers
    "bad path pointer": execer("efault-path", "-", "a0"),
    "bad argv pointer": execer("efault-argv", "./prog"),
    "bad envp pointer": execer("efault-envp", "./prog", "a0"),
    "bad pointer inside argv": execer("efault-argv-item", "./prog"),
    "registers after a failed exec": execer("execve-regs", "./missing", "a0"),
    # -- execveat, every flag with every kind of descriptor
    "execveat AT_FDCWD": execer("execveat:cwd:-", "./prog", "a0", "b"),
    "execveat dirfd": execer("execveat:dir:-", "{box}/prog", "a0", "b"),
    "execveat dirfd, nofollow on a file": execer("execveat:dir:n", "{box}/prog", "a0"),
    "execveat nofollow on a symlink (ELOOP)": execer("execveat:cwd:n", "./link", "a0"),
    "execveat nofollow on a dangling symlink": execer("execveat:cwd:n", "./dangling", "a0"),
    "execveat dirfd, empty-path flag, a name": execer("execveat:dir:e", "{box}/prog", "a0"),
    "fexecve": execer("execveat:fd:e", "./prog", "a0", "b"),
    "fexecve, nofollow too": execer("execveat:fd:en", "./prog", "a0"),
    "fexecve of a symlink's target": execer("execveat:fd:e", "./link", "a0"),
    "fexecve close-on-exec": execer("execveat:fd-cloexec:e", "./prog", "a0"),
    "fexecve O_PATH": execer("execveat:fd-opath:e", "./prog", "a0"),
    "fexecve without the empty-path flag": execer("execveat:fd:-", "./prog", "a0"),
    "fexecve of a script": execer("execveat:fd:e", "./s-args", "s0", "y"),
    "fexecve of a script, close-on-exec": execer("execveat:fd-cloexec:e", "./s-args", "s0"),
    "execveat bad dirfd, relative name": execer("execveat:bad:-", "./prog", "a0"),
    "execveat bad dirfd, absolute name": execer("execveat:bad:-", "{box}/prog", "a0"),
    "execveat dirfd not a directory": execer("execveat:file:-", "./prog", "a0"),
    "execveat AT_FDCWD, empty name, empty-path flag": execer("execveat:cwd:e", "", "a0"),
    "execveat AT_FDCWD, empty name, both flags": execer("execveat:cwd:en", "", "a0"),
    "execveat AT_FDCWD, a name, both flags": execer("execveat:cwd:en", "./prog", "a0"),
    "fexecve O_PATH, nofollow too": execer("execveat:fd-opath:en", "./prog", "a0"),
    "fexecve O_PATH of a symlink's target": execer("execveat:fd-opath:e", "./link", "a0"),
    "execveat undefined flag": execer("execveat:cwd:x", "./prog", "a0"),
    "execveat all flags on a bad dirfd": execer("execveat:bad:enx", "./prog", "a0"),
    # -- scripts
    "script with an argument": execer("execve", "./s-args", "s0", "y"),
    "script with no newline": execer("execve", "./s-nonl", "s0"),
    "script with trailing spaces": execer("execve", "./s-trailing", "s0"),
    "script with two interpreter words": execer("execve", "./s-two", "s0", "z"),
    "script with tabs": execer("execve", "./s-tab", "s0"),
    "script run by a script": execer("execve", "./s-nested", "s0", "n"),
    "four nested scripts": execer("execve", "./depth4", "d0"),
    "five nested scripts (too deep)": execer("execve", "./depth5", "d0"),
    "script whose interpreter is missing": execer("execve", "./s-missing", "s0"),
    "script whose interpreter is a directory": execer("execve", "./s-dir", "s0"),
    "script whose interpreter has no exec bit": execer("execve", "./s-noexec", "s0"),
    "script with CRLF line ends": execer("execve", "./s-crlf", "s0"),
    "script with a shebang over 256 bytes": execer("execve", "./s-long", "s0"),
    "script with an empty shebang": execer("execve", "./s-empty", "s0"),
    "script with a relative interpreter": execer("execve", "./s-relative", "s0"),
    "shell script": execer("execve", "./s-sh", "s0", "1", "2"),
    "script without exec bit": execer("execve", "./s-noexec-script", "s0"),
    "script through PATH": execer("execvp", "s-args", "s0"),
    # -- other kinds of files
    "FIFO with exec bits": execer("execve", "./fifo", "a0"),
    "character device": execer("execve", "/dev/null", "a0"),
    "file open for writing (ETXTBSY)": execer("write-open", "./busy", "a0"),
    "truncated program": execer("execve", "./truncated", "a0"),
    "64 GiB sparse program": execer("execve", "./huge", "a0", "h"),
    "setuid program": Situation("{box}/suid-id", native_only=True),
}

# Where wasmbinfmt cannot give what the reference gives, by (situation, variant, user): what
# it gives instead, from the reference's (stdout, stderr, status), the box and the rule's
# flags. Each is explained in docs/security.md.
KNOWN_DIFFERENCES = {
    # NO_NEW_PRIVS (required to install the seccomp filter unprivileged) makes the kernel
    # ignore setuid bits, as under any seccomp sandbox: the program runs with the caller's ids.
    ("setuid program", "native", "nobody"): lambda reference, box, flags: (
        reference[0].replace(b" euid=0(root)", b""), *reference[1:]),
    # The kernel reads the header of a file its caller may exec but not read; the tracer,
    # with the caller's rights, cannot: the exec goes on unmatched and fails as an unknown
    # format does natively.
    ("exec bit but unreadable", "wasm", "nobody"): lambda reference, box, flags: (
        b"errno=8\n", b"", 99),
    # A matched exec runs the emulator, not the file: the kernel refuses a file open for
    # writing (ETXTBSY); the tracer cannot see other processes' open descriptors. (As
    # nobody the driver cannot open the box's files for writing: EACCES both ways.)
    ("file open for writing (ETXTBSY)", "wasm", "self"): lambda reference, box, flags: (
        f"[{box}/emu.sh]\n[./busy]\n".encode() + (b"[a0]\n" if "P" in flags else b""),
        b"", 0),
}


def stage(box: Path, program: Path) -> None:
    """Everything CORPUS names, in `box`, around `program` (copied to box/prog)."""
    def put(name: str, data: bytes | str, mode: int = 0o755) -> None:
        path = box / name
        path.write_bytes(data if isinstance(data, bytes) else data.format(box=box).encode())
        os.chmod(path, mode)

    put("prog", program.read_bytes())
    put("busy", program.read_bytes())
    put("noexec", program.read_bytes(), 0o644)
    put("unreadable", program.read_bytes(), 0o711)
    put("truncated", program.read_bytes()[:64])
    put("huge", program.read_bytes())
    os.truncate(box / "huge", 64 << 30)
    put("text", 'echo plain "$0" "$@"\n')
    put("empty", b"")
    for name in ("dir", "path-a", "path-b", "locked"):
        (box / name).mkdir()
    put("path-a/tool", program.read_bytes(), 0o644)
    put("path-b/tool", program.read_bytes())
    put("locked/prog", program.read_bytes())
    os.chmod(box / "locked", 0o600)
    links = {"link": "prog", "chain1": "chain2", "chain2": "chain3", "chain3": "prog",
             "dangling": "missing", "loop1": "loop2", "loop2": "loop1", "dirlink": "dir"}
    for name, to in links.items():
        (box / name).symlink_to(to)
    os.symlink(b"prog", bytes(box) + b"/\xff\xfe-link")
    put("s-args", "#!{box}/prog -x\n")
    put("s-nonl", "#! {box}/prog")
    put("s-trailing", "#!{box}/prog -x   \n")
    put("s-two", "#!{box}/prog a b\n")
    put("s-tab", "#!\t{box}/prog\targ\t\n")
    put("s-nested", "#!{box}/s-args -n\n")
    put("depth1", "#!{box}/prog\n")
    for depth in range(2, 6):
        put(f"depth{depth}", f"#!{{box}}/depth{depth - 1}\n")
    put("s-missing", "#!/nonexistent/interpreter\n")
    put("s-dir", "#!{box}/dir\n")
    put("s-noexec", "#!{box}/noexec\n")
    put("s-crlf", "#!{box}/prog\r\n")
    put("s-long", "#!{box}" + LONG_SHEBANG + "/prog\n")
    put("s-empty", "#!\n")
    put("s-relative", "#!prog\n")
    put("s-sh", '#! /bin/sh\necho sh "$0" "$@"\n')
    put("s-noexec-script", "#!{box}/prog\n", 0o644)
    os.mkfifo(box / "fifo")
    os.chmod(box / "fifo", 0o755)
    shutil.copy("/usr/bin/id", box / "suid-id")
    os.chmod(box / "suid-id", 0o4755)


def run(user, argv: list[bytes], box: Path, situation: Situation, **kwargs):
    env = {**os.environ, "PATH": situation.path.format(box=box)}
    return subprocess.run(user(argv), cwd=box, env=env, capture_output=True, timeout=TIMEOUT,
                          **kwargs)


def wasmbinfmt(*options: str) -> list[bytes]:
    return [os.fsencode(sys.executable), b"-m", b"wasmbinfmt", *map(os.fsencode, options), b"--"]


def outcome(done) -> tuple[bytes, bytes, int]:
    return done.stdout, done.stderr, done.returncode


def expect(name: str, variant: str, user, reference: tuple[bytes, bytes, int], box: Path,
           flags: str = "") -> tuple[bytes, bytes, int]:
    """What wasmbinfmt must give: the reference, or its documented difference."""
    who = "nobody" if user(["x"]) != ["x"] else "self"
    difference = KNOWN_DIFFERENCES.get((name, variant, who))
    return reference if difference is None else difference(reference, box, flags)


@pytest.mark.parametrize("name", CORPUS)
def test_unmatched_execs_are_as_native(box, user, name):
    """Default rules, a native program: wasmbinfmt must be invisible."""
    situation = CORPUS[name]
    stage(box, box / "probe.native")
    command = situation.command(box)
    native = outcome(run(user, command, box, situation))
    ours = outcome(run(user, wasmbinfmt() + command, box, situation))
    assert ours == expect(name, "native", user, native, box)


@pytest.mark.parametrize("name", [n for n, s in CORPUS.items() if not s.native_only])
@pytest.mark.parametrize("flags", ["", "P"])
def test_matched_execs_are_as_under_the_kernels_binfmt_misc(box, user, name, flags,
                                                           kernel_binfmt):
    """Where the kernel cannot serve as the oracle, wasmbinfmt still runs the situation
    (it must end, within the timeout) and the summary says what was not compared."""
    situation = CORPUS[name]
    stage(box, box / "probe.wasm")
    rule = f":probe:M::\\x00asm::{box / 'emu.sh'}:{flags}"
    command = situation.command(box)
    env = {**os.environ, "PATH": situation.path.format(box=box)}
    kernel = kernel_binfmt([rule], command, as_user=user, cwd=box, env=env, timeout=TIMEOUT)
    ours = outcome(run(user, wasmbinfmt("--no-default-rules", "--rule", rule) + command, box,
                       situation))
    if kernel is not None:
        assert ours == expect(name, "wasm", user, outcome(kernel), box, flags)
