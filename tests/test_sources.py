"""Where rules come from, and the order they end up in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wasmbinfmt.rules.sources import (
    binfmt_d_files, collect, default_rules_file, load_system, user_rules_file,
)
from wasmbinfmt.rules.model import RuleError
from test_loaders import QEMU_AARCH64, write


# The packaged rules, in order: wasm, then foreign ELF for qemu-user.
PACKAGED_NAMES = ["wali", "wasm", "wasm-component", "aarch64", "arm", "riscv64", "ppc64le",
                  "s390x", "mips64el", "loongarch64", "x86_64", "i386"]


def isolated_env(tmp_path, **extra):
    """An environment with an empty config home and PATH, unless given."""
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PATH": str(tmp_path / "bin")}
    env.update(extra)
    return env


def names(ruleset):
    return [r.name for r in ruleset.rules]


def test_systemd_precedence_and_name_order(tmp_path):
    root = tmp_path / "root"
    write(root / "usr/lib/binfmt.d/b.conf", ":b-usr:E::b::/b:\n")
    write(root / "usr/lib/binfmt.d/a.conf", ":a-usr:E::a::/a:\n")
    write(root / "etc/binfmt.d/b.conf", ":b-etc:E::b::/b:\n")  # hides /usr/lib's b.conf
    write(root / "run/binfmt.d/c.conf", ":c-run:E::c::/c:\n")
    write(root / "usr/local/lib/binfmt.d/c.conf", ":c-local:E::c::/c:\n")
    write(root / "etc/binfmt.d/README", ":ignored:E::x::/x:\n")  # not *.conf
    files = binfmt_d_files(("/etc/binfmt.d", "/run/binfmt.d", "/usr/local/lib/binfmt.d",
                            "/usr/lib/binfmt.d"), str(root))
    assert [os.path.relpath(f, root) for f in files] == [
        "usr/lib/binfmt.d/a.conf", "etc/binfmt.d/b.conf", "run/binfmt.d/c.conf"]
    rules, errors = load_system(str(root))
    # Registered a, b, c in that order: the kernel tries the last registered first.
    assert [r.name for r in rules] == ["c-run", "b-etc", "a-usr"] and errors == []


def test_system_binfmt_support_after_binfmt_d_and_duplicates(tmp_path):
    root = tmp_path / "root"
    write(root / "usr/lib/binfmt.d/qemu-aarch64.conf",
          ":qemu-aarch64:M::\\x7fELF::/usr/bin/qemu-aarch64:P\n")
    write(root / "usr/lib/binfmt.d/twice.conf", ":dup:E::d::/first:\n:dup:E::d::/second:\n")
    write(root / "usr/share/binfmts/qemu-aarch64", QEMU_AARCH64)  # same name: refused
    write(root / "usr/share/binfmts/jar", "package j\ninterpreter /usr/bin/jexec\nmagic PK\n")
    rules, errors = load_system(str(root))
    # Registered: qemu-aarch64.conf, twice.conf (name order), then binfmt-support's jar.
    assert [r.name for r in rules] == ["jar", "dup", "qemu-aarch64"]
    assert rules[2].interpreter == "/usr/bin/qemu-aarch64"  # binfmt.d registered first
    assert rules[1].interpreter == "/first"
    assert len(errors) == 1 and "EEXIST" in str(errors[0]) and "twice.conf:2" in str(errors[0])


def test_precedence_inline_files_env_user_default(tmp_path):
    first = write(tmp_path / "first.yaml", "rules:\n  - binfmt: ':one:E::x::/from-first:'\n")
    second = write(tmp_path / "second.conf", ":two:E::x::/from-second:\n")
    from_env = write(tmp_path / "env.yaml", "rules:\n  - binfmt: ':three:E::x::/env:'\n")
    env = isolated_env(tmp_path, WASMBINFMT_RULES=from_env)
    write(user_rules_file(env), "rules:\n  - binfmt: ':four:E::x::/user:'\n")
    ruleset = collect(inline=[":zero:E::x::/inline:"], files=[first, second], env=env)
    assert ruleset.errors == []
    assert names(ruleset)[:5] == ["zero", "one", "two", "three", "four"]
    assert names(ruleset)[5:] == PACKAGED_NAMES  # the packaged default


def test_same_name_higher_source_hides_lower(tmp_path):
    mine = write(tmp_path / "mine.yaml",
                 "rules:\n  - binfmt: ':wasm:M::\\x00asm::/my/runner:'\n    enabled: false\n")
    ruleset = collect(files=[mine], env=isolated_env(tmp_path))
    wasm = ruleset.rules[0]
    assert (wasm.name, wasm.enabled, wasm.interpreter) == ("wasm", False, "/my/runner")
    hidden, by = ruleset.shadowed[0]
    assert hidden.origin.source == default_rules_file() and by is wasm
    assert "wasm" not in [r.name for r in ruleset.active()]


def test_binfmt_lines_file_keeps_kernel_order(tmp_path):
    conf = write(tmp_path / "mine.conf", ":early:E::x::/early:\n:late:E::x::/late:\n")
    ruleset = collect(files=[conf], defaults=False, env=isolated_env(tmp_path))
    assert names(ruleset) == ["late", "early"]


def test_duplicate_name_in_a_user_binfmt_file_is_an_error(tmp_path):
    conf = write(tmp_path / "mine.conf", ":a:E::x::/one:\n:a:E::y::/two:\n")
    ruleset = collect(files=[conf], defaults=False, env=isolated_env(tmp_path))
    assert len(ruleset.errors) == 1 and "mine.conf:2" in str(ruleset.errors[0])


def test_no_default_rules_and_nothing_from_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "rules.yaml", "rules:\n  - binfmt: ':cwd:E::x::/cwd:'\n")
    write(tmp_path / "wasmbinfmt" / "rules.yaml", "rules:\n  - binfmt: ':cwd2:E::x::/cwd:'\n")
    monkeypatch.chdir(tmp_path)
    assert names(collect(env=isolated_env(tmp_path))) == PACKAGED_NAMES
    assert names(collect(defaults=False, env=isolated_env(tmp_path))) == []
    # Relative XDG_CONFIG_HOME or HOME would point into the current directory: ignored.
    write(tmp_path / ".config" / "wasmbinfmt" / "rules.yaml", "rules:\n  - binfmt: ':cwd3:E::x::/c:'\n")
    for relative in ({"XDG_CONFIG_HOME": "."}, {"XDG_CONFIG_HOME": "", "HOME": "."},
                     {"XDG_CONFIG_HOME": ".config", "HOME": "."}):
        env = isolated_env(tmp_path, **relative)
        assert names(collect(env=env)) == PACKAGED_NAMES, relative


def test_the_user_rules_file_is_found_only_through_absolute_paths():
    assert user_rules_file({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == "/x/wasmbinfmt/rules.yaml"
    assert user_rules_file({"XDG_CONFIG_HOME": "x", "HOME": "/h"}) == \
        "/h/.config/wasmbinfmt/rules.yaml"
    assert user_rules_file({"HOME": "h"}) is None


def test_a_rules_file_others_can_change_is_refused_naming_it(tmp_path):
    """As sudo refuses a sudoers file others can write: the run stops before the command."""
    rules = tmp_path / "rules.conf"
    write(rules, ":x:E::xx::/bin/echo:\n")
    os.chmod(rules, 0o666)
    done = subprocess.run([sys.executable, "-m", "wasmbinfmt", "--rules", str(rules), "--",
                           "echo", "ran"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"wasmbinfmt: {rules}: refused: every user may write it "
                                  "(mode 0666; chmod o-w).")


def test_yaml_interpreter_looked_up_in_path_binfmt_line_kept_as_path(tmp_path):
    emu = write(tmp_path / "bin" / "myemu", "#!/bin/sh\n")
    os.chmod(emu, 0o755)
    yaml_file = write(tmp_path / "r.yaml", "rules:\n  - {name: y, extension: y, "
                                           "interpreter: myemu}\n"
                                           "  - {name: z, extension: z, interpreter: nothere}\n"
                                           "  - binfmt: ':b:E::b::myemu:'\n")
    ruleset = collect(inline=[":k:E::k::myemu:"], files=[yaml_file], defaults=False,
                      env=isolated_env(tmp_path))
    k, y, z, b = ruleset.rules
    assert y.interpreter == emu and b.interpreter == emu  # all of rules.yaml
    assert z.interpreter == "nothere"  # reported as missing, not dropped
    assert k.interpreter == "myemu"  # the kernel's meaning: relative to the exec'ing process


def test_commands_are_also_found_beside_our_own_python(tmp_path):
    """An unactivated venv: PATH lacks its bin, yet the commands it holds are found."""
    beside = os.path.join(os.path.dirname(sys.executable), "wasmbinfmt")
    if not os.access(beside, os.X_OK):
        pytest.skip("wasmbinfmt is not installed (with its scripts) beside this Python")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - name: w\n    extension: w\n    interpreter: wasmbinfmt\n")
    (rule,) = collect(files=[str(rules_file)], env=isolated_env(tmp_path),
                      defaults=False).rules
    assert rule.interpreter == beside


def test_wasmtime_is_the_binary_the_wheel_ships_not_pips_wrapper(tmp_path):
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - {name: cli, extension: w, interpreter: wasmtime}\n")
    env = isolated_env(tmp_path, PATH=os.path.dirname(sys.executable))  # pip's wrapper
    (rule,) = collect(files=[str(rules_file)], env=env, defaults=False).rules
    assert rule.interpreter == runnable_binary() != None  # noqa: E711


def test_components_go_to_the_wasmtime_cli_through_our_layout_of_directories(tmp_path):
    from wasmbinfmt.runners.wasmtime_cli import runnable_binary

    rules = collect(env=isolated_env(tmp_path)).rules
    (component,) = [r for r in rules if r.name == "wasm-component"]
    start = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "wasmbinfmt", "runners", "component.py")
    assert component.interpreter == sys.executable
    assert component.args == ("-I", "-S", "-B", start, runnable_binary(), "--preserve-argv0",
                              "--")


def test_the_builtin_runner_is_our_python_started_isolated(tmp_path):
    (wasm,) = [r for r in collect(env=isolated_env(tmp_path)).rules if r.name == "wasm"]
    start = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "wasmbinfmt", "runners", "wasi_start.py")
    assert wasm.interpreter == sys.executable
    assert wasm.args == ("-I", "-S", "-B", start, "--preserve-argv0", "--")


def test_flag_F_makes_the_interpreter_absolute_at_load_keeps_its_name_and_needs_it(
        tmp_path, monkeypatch):
    real = write(tmp_path / "bin" / "real-emu", "#!/bin/sh\n")
    os.chmod(real, 0o755)
    os.symlink(real, tmp_path / "bin" / "link-emu")
    monkeypatch.chdir(tmp_path)
    ruleset = collect(inline=[":f:E::f::bin/link-emu:F", ":g:E::g::/nonexistent:F"],
                      defaults=False, env=isolated_env(tmp_path))
    # the symlink's name stays: Debian's qemu-user-static reads -binfmt-P in it
    assert [r.interpreter for r in ruleset.rules] == [str(tmp_path / "bin" / "link-emu")]
    assert len(ruleset.errors) == 1 and "--rule #2" in str(ruleset.errors[0])


def test_system_errors_are_warnings(tmp_path):
    root = tmp_path / "root"
    write(root / "usr/lib/binfmt.d/bad.conf", ":bad:Q::x::/x:\n:ok:E::x::/x:\n")
    ruleset = collect(system=True, defaults=False, root=str(root), env=isolated_env(tmp_path))
    assert names(ruleset) == ["ok"] and ruleset.errors == [] and len(ruleset.warnings) == 1


def test_inline_rule_errors_name_the_option(tmp_path):
    ruleset = collect(inline=[":a:E::x::/x:", ":b:E::x/y::/x:"], defaults=False,
                      env=isolated_env(tmp_path))
    assert [str(e) for e in ruleset.errors] == [
        "--rule #2: field 'magic': the extension 'x/y' contains '/'"]


def test_an_emulator_chosen_for_the_run_replaces_the_rules_own(tmp_path):
    from wasmbinfmt.rules.sources import choose_emulators

    env = isolated_env(tmp_path)
    ruleset = collect(env=env)
    choose_emulators(ruleset, [("wasm", ["/opt/rt", "run", "--"])], env)
    (wasm,) = [r for r in ruleset.rules if r.name == "wasm"]
    assert (wasm.interpreter, wasm.args, wasm.preserve_argv0) == ("/opt/rt", ("run", "--"), False)
    assert wasm.magic == b"\0asm\x01\0\0\0" and wasm.origin.source == "--emulator wasm=/opt/rt run --"
    assert names(ruleset) == PACKAGED_NAMES and ruleset.errors == []


def test_choosing_an_emulator_for_an_unknown_rule_is_an_error_naming_the_rules(tmp_path):
    from wasmbinfmt.rules.sources import choose_emulators

    ruleset = collect(env=isolated_env(tmp_path))
    choose_emulators(ruleset, [("wsam", ["x"])])
    (error,) = ruleset.errors
    assert f"no rule is named 'wsam' (rules: {', '.join(PACKAGED_NAMES)})" in str(error)


def test_profiles_come_from_the_first_rules_file_that_names_them(tmp_path):
    from wasmbinfmt.rules.sources import profile_choices

    mine = write(tmp_path / "mine.yaml", "profiles:\n  wasmtime-cli: {wasm: [my-wasmtime, --]}\n"
                                         "  other: {wali: [my-iwasm], wasm: [rt, run]}\n")
    env = isolated_env(tmp_path)
    assert profile_choices("wasmtime-cli", [mine], env) == [("wasm", ["my-wasmtime", "--"])]
    assert profile_choices("other", [mine], env) == [("wali", ["my-iwasm"]),
                                                     ("wasm", ["rt", "run"])]
    assert profile_choices("builtin", [mine], env) == []  # the packaged one
    with pytest.raises(RuleError, match="no profile is named 'x' "
                                        r"\(profiles: wasmtime-cli, other, builtin\)"):
        profile_choices("x", [mine], env)
