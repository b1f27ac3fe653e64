"""Command line: `wasmbinfmt [OPTIONS] -- COMMAND...` and `list | which FILE... | check`.

Errors go to stderr as one line each, never as a traceback. Exit status of
the subcommands: 0 success; 1 `which` found a file no rule handles, or
`check` found errors; 2 bad usage, unreadable files or invalid rules. A
traced COMMAND's status is the command's own (see trace/launch.py); 125 means
wasmbinfmt could not trace it, 126/127 that it could not be run or found.
"""

from __future__ import annotations

import gc
import os
import sys
from types import SimpleNamespace as Namespace

from . import __version__
from .exec.files import Inspector, emulator_loop, loop_message, read_header
from .exec.match import Matcher
from .exec.rewrite import Fail, resolve_exec
from .rules.model import Rule, RuleError
from .rules.sources import (
    RuleSet, add_emulator_args, choose_emulators, collect, interpreter_problem,
    profile_choices, profile_names,
)
from .util.abcs import Callable

SUBCOMMANDS = ("list", "which", "check", "log", "compare", "cache")


class Option:
    """One option of the run form, for both argparse (help, errors, subcommands) and the
    quick parser that a plain `wasmbinfmt [OPTIONS] -- COMMAND` goes through."""

    def __init__(self, flags: tuple[str, ...], dest: str, action: str, help: str,
                 metavar: str | None = None, convert: Callable[[str], object] | None = None):
        # action: store, store_true, append, count
        self.flags, self.dest, self.action = flags, dest, action
        self.help, self.metavar, self.convert = help, metavar, convert

    def default(self) -> object:
        return {"append": [], "store_true": False, "store": None, "count": 0}[self.action]

    @property
    def takes_value(self) -> bool:
        return self.action not in ("store_true", "count")

    def add_to(self, group) -> None:
        extra = {"metavar": self.metavar} if self.takes_value else {}
        if self.convert is not None:
            extra["type"] = self.convert
        group.add_argument(*self.flags, dest=self.dest, action=self.action,
                           default=self.default(), help=self.help, **extra)


def _emulator_choice(value: str) -> tuple[str, list[str]]:
    import shlex  # not at the top: ~10 ms of every start (it imports re)

    name, _, command = value.partition("=")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise _argument_error(f"{value!r}: {e}") from None
    if not name or not argv:
        raise _argument_error(f"{value!r}: expected RULE=COMMAND [ARGS...]")
    return name, argv


def _argument_error(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


RULE_OPTIONS = (  # rule sources, highest precedence first; also for list, which, check
    Option(("--rule",), "rule", "append", metavar="LINE",
           help="a binfmt_misc registration line, e.g. ':name:E::ext::/bin/emu:'"),
    Option(("--rules",), "rules", "append", metavar="FILE",
           help="a rules file: rules.yaml, binfmt.d lines, a binfmt-support format or a "
                "/proc/sys/fs/binfmt_misc entry (told apart by content)"),
    Option(("--no-default-rules",), "no_default_rules", "store_true",
           help="leave out ~/.config/wasmbinfmt/rules.yaml and the packaged rules"),
    Option(("--system",), "system", "store_true",
           help="add this machine's binfmt-support and systemd binfmt.d rules"),
    Option(("--profile",), "profile", "store", metavar="NAME",
           help="the emulators profile NAME of a rules.yaml chooses (its 'profiles:' "
                "section); --emulator choices come on top"),
    Option(("--emulator-arg",), "emulator_args", "append", metavar="RULE=ARGS",
           convert=_emulator_choice,
           help="for this run, rule RULE's emulator also gets ARGS (quoted, e.g. "
                "\"wasm=-W fuel=1000000\" for the wasmtime CLI, 'wasm=--dir /data' for the "
                "built-in runner), before its own '--' if it has one"),
    Option(("--emulator",), "emulator", "append", metavar="RULE=COMMAND",
           convert=_emulator_choice,
           help="for this run, rule RULE runs COMMAND (with arguments: quote them, e.g. "
                "'wasm=wasmtime run --dir=/::/ --'), which gets the file's path and the "
                "program's arguments after them"),
)
RUN_OPTIONS = (
    Option(("-v", "--verbose"), "verbose", "count",
           help="log every rerouted exec, a line each: pid, rule, program, and the way "
                "it ran (launched, warm, or neither); -vv: the emulator's whole argv"),
    Option(("--log",), "exec_log", "store", metavar="FILE",
           help="write every rerouted exec, its exit status and duration, and a final "
                "summary to FILE as JSON lines (docs/log.md; read it with 'wasmbinfmt log "
                "FILE')"),
    Option(("--log-output",), "log_output", "store_true",
           help="with --log: pass each rerouted exec's stdout and stderr through pipes and "
                "log their digests (their first MiB kept in FILE.output/), for 'compare'"),
    Option(("--cold-runner",), "cold_runner", "store_true",
           help="start the built-in WASI runner at every exec of a module, rather than "
                "running it by the launcher or the warm runner of this run "
                "(docs/performance.md)"),
    Option(("--log-file",), "log_file", "store", metavar="FILE",
           help="write messages and the -v log to FILE instead of stderr (kept after "
                "COMMAND exits while its descendants run)"),
)


def _rule_options():
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("rule sources (highest precedence first)")
    for option in RULE_OPTIONS:
        option.add_to(group)
    return common


def parse_run_quickly(argv: list[str]) -> Namespace | None:
    """The run form, parsed without argparse (whose import is ~15 ms of a ~40 ms start).

    Takes exact option names only (`--opt VALUE`, `--opt=VALUE`, flags), then the
    command from `--` or the first word that is not an option, as argparse's
    REMAINDER would. Anything else (help, --version, abbreviations, errors) gives
    None, and argparse parses the line and explains.
    """
    by_flag = {flag: option for option in RULE_OPTIONS + RUN_OPTIONS for flag in option.flags}
    args = Namespace(**{option.dest: option.default() for option in by_flag.values()})
    i = 0
    while i < len(argv) and argv[i] != "--" and argv[i].startswith("-"):
        flag, has_value, value = argv[i].partition("=")
        if len(flag) > 2 and flag.strip("v") == "-":  # -vv: a count given twice
            args.verbose += len(flag) - 1
            i += 1
            continue
        option = by_flag.get(flag)
        if option is None or (has_value and not option.takes_value):
            return None
        if option.takes_value and not has_value:
            i += 1
            if i == len(argv) or argv[i].startswith("-"):  # argparse: a missing value
                return None
            value = argv[i]
        if option.convert is not None:
            try:
                value = option.convert(value)
            except Exception:  # argparse will say what is wrong with it
                return None
        if option.action == "append":
            getattr(args, option.dest).append(value)
        elif option.action == "count":
            setattr(args, option.dest, getattr(args, option.dest) + 1)
        else:
            setattr(args, option.dest, True if option.action == "store_true" else value)
        i += 1
    args.command = argv[i + 1:] if argv[i:i + 1] == ["--"] else argv[i:]
    return args if args.command else None


def build_run_parser():
    import argparse
    import textwrap

    parser = argparse.ArgumentParser(
        prog="wasmbinfmt", parents=[_rule_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="wasmbinfmt [OPTIONS] [--] COMMAND [ARGS...]\n"
              f"       wasmbinfmt {{{','.join(SUBCOMMANDS)}}} [OPTIONS] ...",
        description=textwrap.fill(
            "Run COMMAND and its whole process tree with every exec of a file that a rule "
            "matches (WebAssembly, other-architecture ELF, ...) rerouted to the rule's "
            "emulator, as binfmt_misc would, without root."),
        epilog=textwrap.fill(
            "subcommands: 'list' shows the rules, 'which FILE...' what would run each FILE, "
            "'check' validates the rule sources, 'log FILE' summarises a --log file, "
            "'compare --profile A --profile B -- COMMAND' runs COMMAND under each profile "
            "and reports what differs, 'cache' shows the cache of compiled modules "
            "('cache clear' removes it) (wasmbinfmt SUBCOMMAND --help). Exit "
            "status: COMMAND's own; 125 if it could not be traced, 126 not executable, "
            "127 not found, 2 invalid rules.") + ENVIRONMENT_HELP + _profiles_help())
    parser.add_argument("--version", action="version", version=f"wasmbinfmt {__version__}")
    _add_shell_and_man(parser)
    for option in RUN_OPTIONS:
        option.add_to(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="the command to run, with its arguments")
    return parser


ENVIRONMENT_HELP = """

environment:
  WASMBINFMT_RULES        rules files (absolute paths, ':'-separated) after --rules
  WASMBINFMT_PROFILE      a profile for every run (--profile wins)
  WASMBINFMT_CACHE        off: no cache of compiled modules and parsed rules
  WASMBINFMT_CACHE_DIR    the cache's directory (else $XDG_CACHE_HOME/wasmbinfmt, else
                          ~/.cache/wasmbinfmt; 'wasmbinfmt cache' shows it)
  WASMBINFMT_CACHE_MAX_MB the compiled modules' limit (else a quarter of the free space,
                          at most 16 GiB)
  WASMBINFMT_LAUNCHER     off: modules whose code is cached go to the warm runner, not
                          the launcher run in the caller's own exec (docs/performance.md)"""


def _profiles_help() -> str:
    """The profiles the rules files define, for --help."""
    try:
        from .rules.sources import profile_names

        names = profile_names()
    except Exception:  # noqa: BLE001 - help must show even with broken rules files
        return ""
    return f"\n\nprofiles (--profile NAME): {', '.join(names)}" if names else ""


def _add_shell_and_man(parser) -> None:
    """--completion SHELL and --man: what the shell and man need, made from the parsers
    (argcomplete, argparse-manpage), printed, and exit."""
    import argparse

    class Print(argparse.Action):
        def __call__(self, parser, namespace, value, option=None):
            print(completion_script(value) if option == "--completion" else manual(), end="")
            parser.exit()

    parser.add_argument("--completion", choices=COMPLETION_SHELLS, action=Print,
                        default=argparse.SUPPRESS,
                        help="print the completion code for SHELL: "
                             "eval \"$(wasmbinfmt --completion bash)\" (or zsh; fish: "
                             "wasmbinfmt --completion fish | source)")
    parser.add_argument("--man", nargs=0, action=Print, default=argparse.SUPPRESS,
                        help="print the manual page: wasmbinfmt --man | man -l -")


COMPLETION_SHELLS = ("bash", "zsh", "fish")


def completion_parser():
    """Every form of the command line in one parser, for the shell's completion: the
    subcommands, and the run form's options where no subcommand is given."""
    parser = build_parser(subcommand_required=False)
    _add_shell_and_man(parser)
    for option in RULE_OPTIONS + RUN_OPTIONS:
        option.add_to(parser)
    return parser


def complete() -> None:
    """Answer the shell (argcomplete's protocol: _ARGCOMPLETE in the environment)."""
    import argcomplete

    argcomplete.autocomplete(completion_parser())


def completion_script(shell: str) -> str:
    import argcomplete

    return argcomplete.shellcode(["wasmbinfmt"], shell=shell)


def manual() -> str:
    """wasmbinfmt(1), made by argparse-manpage from the parsers: the run form's options
    and text, then each subcommand's."""
    from argparse_manpage.manpage import Manpage

    parser = build_run_parser()
    sub = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    for name, subparser in _subparsers(build_parser()).items():
        sub.add_parser(name, parents=[subparser], add_help=False,
                       help=subparser.description, description=subparser.description)
    parser.prog, parser.man_short_description = "wasmbinfmt", (
        "run foreign executables as if native, without root")
    return str(Manpage(parser))


def _subparsers(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parse_run(argv: list[str]) -> Namespace:
    parser = build_run_parser()
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error(f"a COMMAND to run is required (or a subcommand: "
                     f"{', '.join(SUBCOMMANDS)})")
    return args


def build_parser(subcommand_required: bool = True):
    import argparse

    parser = argparse.ArgumentParser(
        prog="wasmbinfmt",
        description="Run foreign executables (WebAssembly, other-architecture ELF) under the "
                    "emulator that binfmt_misc-style rules name, without root.")
    parser.add_argument("--version", action="version", version=f"wasmbinfmt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                required=subcommand_required)
    common = _rule_options()
    listing = sub.add_parser("list", parents=[common],
                             help="show the rules in the order they are tried",
                             description="Show every rule in match order, with where it was "
                                         "defined.")
    listing.add_argument("-w", "--wide", action="store_true",
                         help="one line per rule, nothing shortened (wider than a terminal)")
    which = sub.add_parser("which", parents=[common],
                           help="show which rule and emulator argv would run FILE",
                           description="For each FILE, the rule that handles it and the exact "
                                       "argv the emulator would get (like update-binfmts "
                                       "--find). Exit 1 if some FILE matches no rule.")
    which.add_argument("files", nargs="+", metavar="FILE")
    sub.add_parser("check", parents=[common], help="validate every rule source",
                   description="Read every rule source, list every error and warning, and "
                               "exit 1 if there is an error.")
    log = sub.add_parser("log", help="summarise a log written with --log",
                         description="Runs, time and failures per rule, from a --log file. "
                                     "Exit 1 if a rerouted run failed.")
    log.add_argument("file", metavar="FILE")
    log.add_argument("--trace", metavar="OUT",
                     help="also write the run as a timeline to OUT, in Chrome's trace-event "
                          "JSON (a track per process, a slice per rerouted run), for "
                          "Perfetto's UI (ui.perfetto.dev) or chrome://tracing")
    compare = sub.add_parser(
        "compare", help="run COMMAND under several profiles and report what differs",
        description="Run COMMAND once per --profile (each with --log), then report side by "
                    "side the overall exit status and time of each run, a unified diff of "
                    "what the runs printed, and every rerouted invocation, matched across "
                    "runs by (cwd, argv) in order, whose exit status or time differs. Every "
                    "profile and option is checked before anything runs; progress is shown "
                    "while a profile runs. Exit 1 if anything differs.")
    compare.add_argument("--profile", action="append", default=[], required=True,
                         metavar="NAME", help="a profile to run under (give two or more)")
    compare.add_argument("--rule", action="append", default=[], metavar="LINE",
                         help="a binfmt_misc registration line, as for a run")
    compare.add_argument("--rules", action="append", default=[], metavar="FILE",
                         help="a rules file, as for a run")
    compare.add_argument("--emulator", action="append", default=[], metavar="RULE=COMMAND",
                         help="for every profile's run, rule RULE runs COMMAND, as for a run")
    compare.add_argument("--emulator-arg", action="append", default=[], metavar="RULE=ARGS",
                         help="for every profile's run, rule RULE's emulator also gets ARGS, "
                              "as for a run")
    compare.add_argument("--keep", metavar="DIR",
                         help="keep each run's output, log and work copy in DIR (else they "
                              "are removed)")
    compare.add_argument("--no-default-rules", action="store_true")
    compare.add_argument("--system", action="store_true")
    compare.add_argument("--workdir", metavar="DIR",
                         help="run each profile in its own copy of DIR (for commands that "
                              "write to their tree)")
    compare.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                         help="run N profiles at once (default: one after the other)")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.add_argument("--time-ratio", type=float, default=2.0, metavar="X",
                         help="durations differ when the longest is X times the shortest "
                              "(default 2) ...")
    compare.add_argument("--time-min", type=float, default=1.0, metavar="SECONDS",
                         help="... and longer by SECONDS (default 1)")
    compare.add_argument("run_command", nargs=argparse.REMAINDER, metavar="COMMAND")
    cache = sub.add_parser(
        "cache", help="where the cache of compiled modules and parsed rules is, what it "
                      "holds; clear it",
        description="Show the per-user cache (WASMBINFMT_CACHE_DIR, else "
                    "$XDG_CACHE_HOME/wasmbinfmt, else ~/.cache/wasmbinfmt): its folders, "
                    "their size, the compiled modules by compiler and the size limit "
                    "(WASMBINFMT_CACHE_MAX_MB); 'clear' removes it all.")
    cache.add_argument("action", nargs="?", choices=["show", "clear"], default="show")
    cache.add_argument("--list", action="store_true",
                       help="also list every compiled module: compiler, wasmtime build, "
                            "size, when last used")
    return parser


def _load(args: Namespace) -> RuleSet:
    ruleset = collect(inline=args.rule, files=args.rules, system=args.system,
                      defaults=not args.no_default_rules)
    # WASMBINFMT_PROFILE: one variable picks the emulators of a whole job (like cargo's
    # and CMake's runner variables); --profile wins over it.
    profile, where = args.profile, "--profile"
    if not profile and os.environ.get("WASMBINFMT_PROFILE"):
        profile, where = os.environ["WASMBINFMT_PROFILE"], "WASMBINFMT_PROFILE"
    if profile:
        try:
            choose_emulators(ruleset, profile_choices(profile, args.rules,
                                                      defaults=not args.no_default_rules),
                             source=f"{where} {profile}:")
        except RuleError as e:
            ruleset.errors.append(RuleError(e.reason, where, None, "NAME"))
    choose_emulators(ruleset, args.emulator)
    add_emulator_args(ruleset, args.emulator_args)
    return ruleset


def _fatal_errors(ruleset: RuleSet) -> bool:
    for problem in ruleset.errors:
        print(f"wasmbinfmt: {problem}", file=sys.stderr)
    for problem in ruleset.warnings:
        print(f"wasmbinfmt: warning: {problem} (ignored)", file=sys.stderr)
    return bool(ruleset.errors)


def _shell_words(words) -> str:
    """Words quoted as a shell needs them (shlex imported here: it imports re, ~10 ms)."""
    import shlex

    return shlex.join(words)


def _show_argv(argv) -> str:
    return _shell_words(os.fsdecode(a) for a in argv)


def _interpreter_text(rule: Rule) -> str:
    return _shell_words([rule.interpreter, *rule.args])


def _shorten(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


LIST_WIDTH = 80  # when stdout is not a terminal


def cmd_list(args: Namespace) -> int:
    ruleset = _load(args)
    if _fatal_errors(ruleset):
        return 2
    hidden_by = {id(r): by for r, by in ruleset.shadowed}
    entries = []
    for rule in ruleset.rules + [r for r, _ in ruleset.shadowed]:
        if id(rule) in hidden_by:
            status, why = "hidden", f"hidden by {hidden_by[id(rule)].origin}"
        elif not rule.enabled:
            status, why = "disabled", ""
        elif ruleset.why_not_here(rule):
            status, why = ruleset.why_not_here(rule)
        else:  # a rule of yours whose emulator is missing stays: its files fail with ENOENT
            problem = interpreter_problem(rule)
            status, why = ("not installed", f"not installed: {problem}; its files fail to "
                                            f"exec with ENOENT") if problem else ("enabled", "")
        env = " ".join(f"{k}={_shell_words([v])}" for k, v in rule.env)
        emulator = (env + " " if env else "") + _interpreter_text(rule)
        entries.append((rule, status, why, emulator))
    if args.wide:
        _print_table([("NAME", "TYPE", "MATCH", "EMULATOR", "FLAGS", "STATUS", "DEFINED AT")]
                     + [(rule.name, "magic" if rule.kind == "M" else "extension",
                         rule.describe_match(), emulator, rule.flag_string() or "-",
                         why or status, str(rule.origin))
                        for rule, status, why, emulator in entries])
        return 0
    # A block per rule, each line cut to the terminal's width: the emulator and where the
    # rule comes from are long, and get lines of their own.
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        width = LIST_WIDTH
    head = [("NAME", "MATCH", "FLAGS", "STATUS")] + [
        (rule.name, ("magic " if rule.kind == "M" else "extension ") + rule.describe_match(),
         rule.flag_string() or "-", status) for rule, status, _, _ in entries]
    widths = [min(max(len(row[i]) for row in head), cap) for i, cap in enumerate((20, 40, 5))]
    print(_cut(_row(head[0], widths), width))
    for row, (rule, _, why, emulator) in zip(head[1:], entries):
        print(_cut(_row(row, widths), width))
        if rule.wasm_imports:  # what tells it apart from a rule of the same magic
            print(_cut(f"    if    it imports from {', '.join(rule.wasm_imports)}", width))
        if rule.detector:
            print(_cut(f"    if    {rule.detector} accepts it", width))
        # Paths are cut on the left: their ends (the runner, rules.yaml:LINE) say the most.
        print(_cut_left(f"    runs  ", emulator, width))
        print(_cut_left(f"    from  ", str(rule.origin), width))
        if why:
            print(_cut(f"    {why}", width))
    profiles = profile_names(args.rules, defaults=not args.no_default_rules)
    if profiles:
        print(_cut(f"profiles (--profile NAME): {', '.join(profiles)}", width))
    return 0


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join([_shorten(c, w).ljust(w) for c, w in zip(cells, widths)]
                     + [cells[-1]]).rstrip()


def _cut(line: str, width: int) -> str:
    return _shorten(line, width)


def _cut_left(label: str, text: str, width: int) -> str:
    """`label` then `text`, whose start goes where the line is too long for `width`."""
    room = width - len(label)
    return label + (text if len(text) <= room else "…" + text[len(text) - room + 1:])


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())


def cmd_which(args: Namespace) -> int:
    ruleset = _load(args)
    if _fatal_errors(ruleset):
        return 2
    # The files named are looked at whether executable or not (a warning says so); the
    # interpreters after them must be, as for the kernel.
    inspect = Inspector(Matcher(ruleset.active()),
                        lambda path, first: first or os.access(path, os.X_OK))
    status = 0
    for name in args.files:
        try:
            read_header(name)
        except OSError as e:
            print(f"wasmbinfmt: {name}: {e.strerror}", file=sys.stderr)
            status = 2
            continue
        first_is_executable = os.access(name, os.X_OK)
        verdict = resolve_exec(os.fsencode(name), inspect)
        if verdict is None:
            print(f"{name}: no rule (runs natively)")
            for rule in _would_run(ruleset, name):
                print(f"  rule {rule.name!r} ({rule.origin}) would run it, but "
                      f"{ruleset.why_not_here(rule)[1]}")
            status = max(status, 1)
            continue
        if isinstance(verdict, Fail):
            print(f"{name}: exec would fail: {os.strerror(verdict.errno)}")
            status = max(status, 1)
            continue
        chain = " → ".join(f"{r.name} ({r.origin})" for r in verdict.rules)
        print(f"{name}: {chain}")
        for key, value in verdict.env:
            print(f"  env {os.fsdecode(key)}={os.fsdecode(value)}")
        print(f"  {_show_argv(verdict.argv.build([os.fsencode(name)]))}")
        for rule in verdict.rules:
            problem = interpreter_problem(rule)
            if problem:
                print(f"wasmbinfmt: rule {rule.name!r}: emulator missing: {problem}",
                      file=sys.stderr)
        if not first_is_executable:
            print(f"wasmbinfmt: {name} is not executable: exec would fail with EACCES",
                  file=sys.stderr)
    return status


def _would_run(ruleset: RuleSet, name: str) -> list[Rule]:
    """The packaged rules left out for want of their emulator that match the file `name`."""
    left_out = [rule for rule, _ in ruleset.not_installed()]
    if not left_out:
        return []
    return list(Matcher(left_out).candidates(os.fsencode(name), read_header(name)))


def cmd_check(args: Namespace) -> int:
    ruleset = _load(args)
    for problem in ruleset.errors:
        print(f"error: {problem}")
    warnings = list(ruleset.warnings)
    matcher = Matcher(ruleset.active())
    for rule in ruleset.active():
        problem = interpreter_problem(rule)
        if problem:
            warnings.append(f"{rule.origin}: rule {rule.name!r}: emulator missing: {problem}")
        elif loop := emulator_loop(matcher, rule):
            warnings.append(f"{rule.origin}: rule {rule.name!r}: "
                            f"{loop_message(rule.interpreter, loop)}")
    for problem in warnings:
        print(f"warning: {problem}")
    for rule, by in ruleset.shadowed:
        print(f"note: {rule.origin}: rule {rule.name!r} is hidden by the one at {by.origin}")
    print(f"{len(ruleset.rules)} rules, {len(ruleset.errors)} errors, {len(warnings)} warnings")
    return 1 if ruleset.errors else 0


def _mistyped_subcommand(name: str) -> bool:
    """A COMMAND that is no program but looks like a subcommand: say so (and True)."""
    from .rules.sources import find_command

    if "/" in name or find_command(name, os.environ.get("PATH", os.defpath)):
        return False
    import difflib

    close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
    if not close:
        return False
    print(f"wasmbinfmt: {name}: no such command; did you mean 'wasmbinfmt {close[0]}'? "
          f"('wasmbinfmt -- {name}' runs a program of that name)", file=sys.stderr)
    return True


def cmd_run(args: Namespace) -> int:
    from .trace.arch import host_arch
    from .trace.launch import run_traced

    ruleset = _load(args)
    if _fatal_errors(ruleset):
        return 2
    if not args.separated and _mistyped_subcommand(args.command[0]):
        return 127
    if args.log_output and not args.exec_log:
        print("wasmbinfmt: --log-output records into the --log FILE: give one", file=sys.stderr)
        return 2
    arch = host_arch()
    # Opened here, where errors can still stop the run, and kept by the tracer (which
    # keeps none of the caller's other descriptors): a name such as /dev/stdout is the
    # caller's stream, not the tracer's /dev/null.
    logs = {}
    for name, path, truncate in (("messages", args.log_file, False),
                                 ("execs", args.exec_log, True)):
        if path:
            try:
                logs[name] = _log_stream(path, truncate)
            except OSError as e:
                print(f"wasmbinfmt: cannot write {path}: {e.strerror}", file=sys.stderr)
                return 2

    exec_log = None
    if args.exec_log:
        from .report.execlog import ExecLog

        exec_log = ExecLog(logs["execs"])
    if args.log_output and exec_log.path is None:  # the recorders open the log by its path
        print(f"wasmbinfmt: --log-output records into the --log FILE by its name, and "
              f"{args.exec_log} is not a file that has one (a pipe, a terminal, a "
              f"removed file)", file=sys.stderr)
        return 2

    def start_tracer(command_pid: int) -> None:
        from .trace.tracer import Tracer  # here, in the tracer: the command never needs it

        log = logs.get("messages", sys.stderr)
        Tracer(ruleset.active(), arch, command_pid, log, verbose=args.verbose,
               log_is_stderr=log is sys.stderr, exec_log=exec_log,
               not_installed=ruleset.not_installed() if args.verbose else (),
               warm=not args.cold_runner,
               capture=exec_log.path if args.log_output else None).run()

    run_traced([os.fsencode(word) for word in args.command], start_tracer,
               None if args.verbose or args.exec_log else _native_judge(ruleset.active()),
               [stream.fileno() for stream in logs.values()])


def _log_stream(path: str, truncate: bool):
    """`path` opened to append lines to (others append to the exec log too: O_APPEND),
    emptied first if `truncate`; on a descriptor above 2, which the command's stdio keeps
    free, and closed when the command is exec'd."""
    import fcntl

    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_TRUNC if truncate else 0), 0o666)
    if fd <= 2:
        fd, closed = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
        os.close(closed)
    return open(fd, "a", buffering=1)


def _native_judge(rules: list[Rule]) -> Callable[[bytes], bool]:
    """Whether exec'ing a file runs it natively, judged in our own process as the tracer
    judges a tracee's exec (-v and --log leave the command's first exec to the tracer,
    which says and records what it saw)."""
    inspector = Inspector(Matcher(rules),
                          lambda path, first: os.access(path, os.X_OK, effective_ids=True))
    return lambda path: resolve_exec(path, inspector) is None


def cmd_log(args: Namespace) -> int:
    from .report.execlog import summarize, trace

    try:
        with open(args.file, encoding="utf-8") as f:
            lines = f.readlines()
        text, all_passed = summarize(lines)
    except (OSError, ValueError) as e:
        print(f"wasmbinfmt: {args.file}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    print(text)
    if args.trace:
        import json

        try:
            with open(args.trace, "w", encoding="utf-8") as out:
                json.dump(trace(lines), out)
        except OSError as e:
            print(f"wasmbinfmt: {args.trace}: {e.strerror}", file=sys.stderr)
            return 2
        print(f"timeline written to {args.trace}: open it in https://ui.perfetto.dev "
              f"(Open trace file) or chrome://tracing (Load)")
    return 0 if all_passed else 1


def cmd_cache(args: Namespace) -> int:
    from .report.cache_report import clear, report
    from .util.cache import cache_dir

    if args.action == "clear":
        print(f"wasmbinfmt: {clear(cache_dir())}")
        return 0
    for line in report(cache_dir(), args.list):
        print(line)
    return 0


def cmd_compare(args: Namespace) -> int:
    from .report.compare import compare

    command = args.run_command[1:] if args.run_command[:1] == ["--"] else args.run_command
    if not command:
        print("wasmbinfmt compare: a COMMAND to run is required", file=sys.stderr)
        return 2
    if args.workdir and not os.path.isdir(args.workdir):
        print(f"wasmbinfmt compare: {args.workdir} is not a directory", file=sys.stderr)
        return 2
    # Everything is checked before anything runs: each profile, each rule source, each
    # emulator choice.
    check = Namespace(rule=args.rule, rules=args.rules, system=args.system,
                      no_default_rules=args.no_default_rules, profile=None, emulator=[],
                      emulator_args=[])
    try:
        check.emulator = [_emulator_choice(value) for value in args.emulator]
        check.emulator_args = [_emulator_choice(value) for value in args.emulator_arg]
    except Exception as e:  # noqa: BLE001 - argparse's error type, imported lazily
        print(f"wasmbinfmt compare: {e}", file=sys.stderr)
        return 2
    for profile in args.profile:
        check.profile = profile
        if _fatal_errors(_load(check)):
            return 2
    options = [*(f"--rule={line}" for line in args.rule),
               *(f"--rules={path}" for path in map(os.path.abspath, args.rules)),
               *(f"--emulator={value}" for value in args.emulator),
               *(f"--emulator-arg={value}" for value in args.emulator_arg),
               *(["--no-default-rules"] if args.no_default_rules else []),
               *(["--system"] if args.system else [])]
    workdir = os.path.abspath(args.workdir) if args.workdir else None
    return compare(args.profile, command, options, workdir, args.jobs, args.json,
                   args.time_ratio, args.time_min, args.keep)


COMMANDS = {"compare": cmd_compare, "list": cmd_list, "which": cmd_which, "check": cmd_check,
            "log": cmd_log, "cache": cmd_cache, "run": cmd_run}


def _as_subcommand(argv: list[str], start: int) -> Namespace | None:
    """`wasmbinfmt OPTIONS list ...`: the subcommand with those options, when they are its
    own; else None, and the user is told how to say either."""
    name, options = argv[start], argv[:start]
    args, unknown = build_parser().parse_known_args([name, *options, *argv[start + 1:]])
    if not unknown:
        return args
    print(f"wasmbinfmt: {name!r} is a subcommand, which does not take "
          f"{' '.join(unknown)}: write 'wasmbinfmt {name} [OPTIONS]', or "
          f"'wasmbinfmt {' '.join(options)} -- {name} ...' to run a program named {name}",
          file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete)
        complete()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        args = build_parser().parse_args(argv)
        command = args.command
    else:
        args = parse_run_quickly(argv) or _parse_run(argv)
        command = "run"
        start = len(argv) - len(args.command)  # where COMMAND starts
        args.separated = start > 0 and argv[start - 1] == "--"
        if not args.separated and args.command[0] in SUBCOMMANDS:
            args = _as_subcommand(argv, start)
            if args is None:
                return 2
            command = args.command
    if command != "run":
        gc.enable()  # off for the start (bin/wasmbinfmt); a run's tracer turns it on itself
    try:
        return COMMANDS[command](args)
    except RuleError as e:
        print(f"wasmbinfmt: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error worth a traceback.
        if sys.stdout is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
