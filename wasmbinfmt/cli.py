"""Command line: `wasmbinfmt list | which FILE... | check`.

Errors go to stderr as one line each, never as a traceback. Exit status:
0 success; 1 `which` found a file no rule handles, or `check` found errors;
2 bad usage, unreadable files or invalid rules.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys

from . import __version__
from .match import Matcher
from .rewrite import plan_exec
from .rules import HEADER_SIZE, Rule, RuleError
from .sources import RuleSet, collect, interpreter_problem

DETECTOR_TIMEOUT = 10  # seconds a binfmt-support detector may take


def _rule_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("rule sources (highest precedence first)")
    group.add_argument("--rule", action="append", default=[], metavar="LINE",
                       help="a binfmt_misc registration line, e.g. ':name:E::ext::/bin/emu:'")
    group.add_argument("--rules", action="append", default=[], metavar="FILE",
                       help="a rules file: rules.yaml, binfmt.d lines, a binfmt-support "
                            "format or a /proc/sys/fs/binfmt_misc entry (told apart by content)")
    group.add_argument("--no-default-rules", action="store_true",
                       help="leave out ~/.config/wasmbinfmt/rules.yaml and the packaged rules")
    group.add_argument("--system", action="store_true",
                       help="add this machine's binfmt-support and systemd binfmt.d rules")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wasmbinfmt",
        description="Run foreign executables (WebAssembly, other-architecture ELF) under the "
                    "emulator that binfmt_misc-style rules name, without root.")
    parser.add_argument("--version", action="version", version=f"wasmbinfmt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _rule_options()
    listing = sub.add_parser("list", parents=[common],
                             help="show the rules in the order they are tried",
                             description="Show every rule in match order, with where it was "
                                         "defined.")
    listing.add_argument("-w", "--wide", action="store_true",
                         help="do not shorten long magics and emulator command lines")
    which = sub.add_parser("which", parents=[common],
                           help="show which rule and emulator argv would run FILE",
                           description="For each FILE, the rule that handles it and the exact "
                                       "argv the emulator would get (like update-binfmts "
                                       "--find). Exit 1 if some FILE matches no rule.")
    which.add_argument("files", nargs="+", metavar="FILE")
    sub.add_parser("check", parents=[common], help="validate every rule source",
                   description="Read every rule source, list every error and warning, and "
                               "exit 1 if there is an error.")
    return parser


def _load(args: argparse.Namespace) -> RuleSet:
    return collect(inline=args.rule, files=args.rules, system=args.system,
                   defaults=not args.no_default_rules)


def _fatal_errors(ruleset: RuleSet) -> bool:
    for problem in ruleset.errors:
        print(f"wasmbinfmt: {problem}", file=sys.stderr)
    for problem in ruleset.warnings:
        print(f"wasmbinfmt: warning: {problem} (ignored)", file=sys.stderr)
    return bool(ruleset.errors)


def _show_argv(argv) -> str:
    return shlex.join(os.fsdecode(a) for a in argv)


def _interpreter_text(rule: Rule) -> str:
    return shlex.join([rule.interpreter, *rule.args])


def _shorten(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    ruleset = _load(args)
    if _fatal_errors(ruleset):
        return 2
    rows = [("NAME", "TYPE", "MATCH", "EMULATOR", "FLAGS", "STATUS", "DEFINED AT")]
    hidden_by = {id(r): by for r, by in ruleset.shadowed}
    for rule in ruleset.rules + [r for r, _ in ruleset.shadowed]:
        if id(rule) in hidden_by:
            status = f"hidden by {hidden_by[id(rule)].origin}"
        elif not rule.enabled:
            status = "disabled"
        else:
            problem = interpreter_problem(rule)
            status = f"MISSING: {problem}" if problem else "enabled"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in rule.env)
        emulator = (env + " " if env else "") + _interpreter_text(rule)
        shorten = (lambda text: text) if args.wide else _shorten
        rows.append((rule.name, "magic" if rule.kind == "M" else "extension",
                     shorten(rule.describe_match()), shorten(emulator),
                     rule.flag_string() or "-", status, str(rule.origin)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())
    return 0


def read_header(path: str) -> bytes:
    """The first 256 bytes of a regular file; never opens anything else (a FIFO would block)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(0, "not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.pread(fd, HEADER_SIZE, 0)
    finally:
        os.close(fd)


def run_detector(rule: Rule, path: str) -> bool:
    """A binfmt-support detector accepts the file by exiting 0."""
    try:
        done = subprocess.run([rule.detector, path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, timeout=DETECTOR_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"wasmbinfmt: detector of rule {rule.name!r} failed: {e}", file=sys.stderr)
        return False
    return done.returncode == 0


def cmd_which(args: argparse.Namespace) -> int:
    ruleset = _load(args)
    if _fatal_errors(ruleset):
        return 2
    matcher = Matcher(ruleset.rules)
    status = 0
    for name in args.files:
        try:
            header = read_header(name)
        except OSError as e:
            print(f"wasmbinfmt: {name}: {e.strerror}", file=sys.stderr)
            status = 2
            continue
        rule = matcher.match(os.fsencode(name), header,
                             confirm=lambda r, name=name: run_detector(r, name))
        if rule is None:
            print(f"{name}: no rule (runs natively)")
            status = max(status, 1)
            continue
        plan = plan_exec(rule, os.fsencode(name), [os.fsencode(name)])
        print(f"{name}: {rule.name} ({rule.origin})")
        for key, value in plan.env:
            print(f"  env {os.fsdecode(key)}={os.fsdecode(value)}")
        print(f"  {_show_argv(plan.argv)}")
        problem = interpreter_problem(rule)
        if problem:
            print(f"wasmbinfmt: rule {rule.name!r}: emulator missing: {problem}",
                  file=sys.stderr)
        if not os.access(name, os.X_OK):
            print(f"wasmbinfmt: {name} is not executable: exec would fail with EACCES",
                  file=sys.stderr)
    return status


def cmd_check(args: argparse.Namespace) -> int:
    ruleset = _load(args)
    for problem in ruleset.errors:
        print(f"error: {problem}")
    for problem in ruleset.warnings:
        print(f"warning: {problem}")
    for rule in ruleset.active():
        problem = interpreter_problem(rule)
        if problem:
            print(f"warning: {rule.origin}: rule {rule.name!r}: emulator missing: {problem}")
    for rule, by in ruleset.shadowed:
        print(f"note: {rule.origin}: rule {rule.name!r} is hidden by the one at {by.origin}")
    print(f"{len(ruleset.rules)} rules, {len(ruleset.errors)} errors, "
          f"{len(ruleset.warnings)} warnings")
    return 1 if ruleset.errors else 0


COMMANDS = {"list": cmd_list, "which": cmd_which, "check": cmd_check}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RuleError as e:
        print(f"wasmbinfmt: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
