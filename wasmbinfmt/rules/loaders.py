"""Reading rules from their file formats.

Every loader returns ``(rules, errors)``: a bad line or entry becomes one
RuleError (file, line, field) and the rest of the source is still read, so
`wasmbinfmt check` can list every problem at once.

Formats:
- registration lines (systemd ``binfmt.d`` files, ``--rule``): one rule a line;
- Debian binfmt-support files (``/usr/share/binfmts/<name>``): ``key value`` lines;
- ``/proc/sys/fs/binfmt_misc/<name>`` as the kernel prints an entry;
- ``rules.yaml``, our own format (see docs/rules.md).
"""

from __future__ import annotations

import os
import stat

from .. import __version__
from .model import (
    Loaded, Origin, Rule, RuleError, Spelling, decode_escapes, make_rule, parse_flags,
    parse_offset, parse_registration,
)


def read_text(path: str) -> str:
    """A rules file as text; bytes that are not UTF-8 survive (paths are bytes to the kernel).
    Refused (RuleError) when another user could change it: see untrusted_writers."""
    try:
        # newline="": a line ends at \n only, as for systemd and binfmt-support; a \r stays.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            writers = untrusted_writers(os.fstat(f.fileno()))
            if writers:
                raise RuleError(f"refused: {writers}. A rules file chooses the programs that run "
                                f"your executables, so only you or root may be able to change it",
                                source=path)
            return f.read()
    except OSError as e:
        raise RuleError(f"cannot read: {e.strerror}", source=path) from None


def untrusted_writers(st: os.stat_result) -> str | None:
    """Who, besides us and root, could change a file (as sudo asks of sudoers): its owner if
    it is someone else, every user if it is world-writable, its group if group-writable
    (unless that group is its owner's personal group). None when nobody else can."""
    mode = st.st_mode & 0o7777
    if st.st_uid not in (os.geteuid(), 0):
        return f"it belongs to another user (uid {st.st_uid})"
    if mode & stat.S_IWOTH:
        return f"every user may write it (mode {mode:04o}; chmod o-w)"
    if mode & stat.S_IWGRP and not _personal_group(st.st_uid, st.st_gid):
        return f"group {st.st_gid} may write it (mode {mode:04o}; chmod g-w)"
    return None


def _personal_group(uid: int, gid: int) -> bool:
    """Whether `gid` is the user private group of `uid` (Debian's default: same name, the
    user's primary group, no other members), whose write bit lets nobody else in."""
    import grp  # only for group-writable files
    import pwd

    try:
        owner, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return (owner.pw_gid == gid and group.gr_name == owner.pw_name
            and set(group.gr_mem) <= {owner.pw_name})


# ---------------------------------------------------------------------------
# Registration lines (systemd binfmt.d).


def parse_binfmt_lines(text: str, source: str) -> Loaded:
    """Rules from registration lines, in the order they are written (registration order).

    As systemd-binfmt reads them: each line is stripped of surrounding white
    space; empty lines and lines starting with ``#`` or ``;`` are comments.
    """
    rules, errors = [], []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        try:
            rules.append(parse_registration(line, Origin(source, number, "binfmt")))
        except RuleError as e:
            errors.append(e.located(source, number))
    return rules, errors


# ---------------------------------------------------------------------------
# Debian binfmt-support.

_SUPPORT_KEYS = ("package", "interpreter", "magic", "offset", "mask", "extension", "detector",
                 "credentials", "preserve", "fix_binary")
_SUPPORT_FLAGS = {"preserve": "P", "credentials": "C", "fix_binary": "F"}


def parse_binfmt_support(text: str, name: str, source: str) -> Loaded:
    """One rule from a binfmt-support format file; its name is the file's name."""
    values: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        key, value = key.strip(), value.strip()
        if key not in _SUPPORT_KEYS:
            return [], [RuleError(f"unknown key {key!r}; binfmt-support knows "
                                  f"{', '.join(_SUPPORT_KEYS)}", source, number, key)]
        if key in values:
            return [], [RuleError(f"{key!r} given twice (first on line {values[key][1]})",
                                  source, number, key)]
        values[key] = (value, number)

    def line_of(key: str) -> int | None:
        return values[key][1] if key in values else None

    try:
        if "interpreter" not in values:
            raise RuleError("no 'interpreter' line", field="interpreter")
        if ("magic" in values) == ("extension" in values):
            raise RuleError("give exactly one of 'magic' and 'extension'", field="magic")
        flags = set()
        for key, flag in _SUPPORT_FLAGS.items():
            answer = values.get(key, ("no", 0))[0]
            if answer not in ("yes", "no"):
                raise RuleError(f"{key} must be 'yes' or 'no', not {answer!r}", field=key)
            if answer == "yes":
                flags.add(flag)
        common = dict(name=name, interpreter=values["interpreter"][0], flags=frozenset(flags),
                      detector=values.get("detector", (None, 0))[0] or None,
                      origin=Origin(source, None, "binfmt-support"))
        if "magic" in values:
            offset_text = values.get("offset", ("0", 0))[0]
            mask_text = values.get("mask", ("", 0))[0]
            rule = make_rule(kind="M", offset=parse_offset(offset_text) if offset_text else 0,
                             magic=decode_escapes(values["magic"][0], "magic"),
                             mask=decode_escapes(mask_text, "mask") if mask_text else None,
                             **common)
        else:
            rule = make_rule(kind="E", extension=values["extension"][0], **common)
    except RuleError as e:
        return [], [RuleError(e.reason, source, line_of(e.field or ""), e.field)]
    return [rule], []


# ---------------------------------------------------------------------------
# /proc/sys/fs/binfmt_misc/<name>.


def parse_proc_entry(text: str, name: str, source: str) -> Loaded:
    """One rule from a kernel entry as /proc prints it (enabled|disabled, interpreter, flags, ...)."""
    lines = text.removesuffix("\n").split("\n")
    fields: dict[str, tuple[str, int]] = {}
    try:
        if not lines or lines[0] not in ("enabled", "disabled"):
            raise RuleError("the first line must be 'enabled' or 'disabled'", source, 1, "status")
        for number, line in enumerate(lines[1:], 2):
            key, sep, value = line.partition(" ")
            key = key.rstrip(":")
            known = key in ("interpreter", "flags", "offset", "magic", "mask", "extension")
            if not known or (not sep and key != "flags"):
                raise RuleError(f"unexpected line {line!r}", source, number, key or "line")
            fields[key] = (value, number)

        def get(key: str) -> str:
            if key not in fields:
                raise RuleError(f"no '{key}' line", source, None, key)
            return fields[key][0]

        def hex_field(key: str) -> bytes:
            try:
                return bytes.fromhex(get(key))
            except ValueError:
                raise RuleError("not hexadecimal", source, fields[key][1], key) from None

        common = dict(name=name, interpreter=get("interpreter"), enabled=lines[0] == "enabled",
                      origin=Origin(source, None, "proc"))
        flags = parse_flags(get("flags"))
        if "extension" in fields:
            ext = get("extension")
            if not ext.startswith("."):
                raise RuleError("the extension must start with '.'", source,
                                fields["extension"][1], "extension")
            return [make_rule(kind="E", extension=ext[1:], flags=flags, **common)], []
        mask = hex_field("mask") if "mask" in fields else None
        return [make_rule(kind="M", offset=parse_offset(get("offset")), magic=hex_field("magic"),
                          mask=mask, flags=flags, **common)], []
    except RuleError as e:
        return [], [e.located(source, None)]


# ---------------------------------------------------------------------------
# Telling formats apart by content.

def sniff_format(text: str) -> str:
    """'yaml', 'proc', 'binfmt-support' or 'binfmt', from the first meaningful line."""
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("enabled", "disabled"):
            return "proc"
        # (String tests, not regular expressions: `re` would add ~10 ms to every start.)
        if line.startswith(("---", "%YAML")) or _is_mapping_key(line):
            return "yaml"
        if line.split(None, 1)[0] in _SUPPORT_KEYS:
            return "binfmt-support"
        return "binfmt"
    return "binfmt"  # empty or only comments: no rules in any format


def _is_mapping_key(line: str) -> bool:
    """`word:` alone or before a space: a YAML mapping (rules.yaml, maybe misspelt), never a
    binfmt line, whose fields follow the delimiter without a space."""
    key, colon, rest = line.partition(":")
    return bool(colon) and (not rest or rest[0] in " \t") and key.replace("_", "a").replace(
        "-", "a").isalnum() and key[0].isalpha()


def load_file(path: str) -> tuple[str, list[Rule], list[RuleError]]:
    """A rules file of any format, told apart by content: (format, rules, errors)."""
    try:
        text = read_text(path)
    except RuleError as e:
        return "unreadable", [], [e]
    kind = sniff_format(text)
    name = os.path.basename(path)
    if kind == "yaml":
        return (kind, *_parse_yaml_cached(text, path))
    if kind == "proc":
        return (kind, *parse_proc_entry(text, name, path))
    if kind == "binfmt-support":
        return (kind, *parse_binfmt_support(text, name, path))
    return (kind, *parse_binfmt_lines(text, path))


def _parse_yaml_cached(text: str, path: str) -> Loaded:
    """parse_rules_yaml, through the cache: importing PyYAML alone costs more than the rest
    of a start of `wasmbinfmt -- CMD`, and rules files seldom change."""
    from ..util import cache

    directory = cache.usable_dir()
    if directory is None:
        return _parse_yaml(text, path)
    here = os.path.dirname(os.path.abspath(__file__))
    # The parse depends on the text, the path (named in errors) and our parser's code.
    code = tuple((st.st_mtime_ns, st.st_size) for st in
                 (os.stat(os.path.join(here, name)) for name in ("rules_yaml.py", "model.py")))
    key = (__version__, path, text, code)
    entry = cache.entry_path(directory, "rules", os.path.abspath(path))
    stored = cache.load(entry, key)
    if stored is not None:
        return [_rule_from_plain(fields) for fields in stored], []
    rules, errors = _parse_yaml(text, path)
    if not errors:  # errors are not kept: they are re-reported in full
        cache.store(entry, key, [_rule_to_plain(rule) for rule in rules])
    return rules, errors


def _rule_to_plain(rule: Rule) -> tuple:
    """A Rule as data marshal can store (its origin and spelling as plain tuples)."""
    return (*rule[:-2], tuple(rule.origin) if rule.origin else None,
            tuple(rule.spelling) if rule.spelling else None)


def _rule_from_plain(fields: tuple) -> Rule:
    *value, origin, spelling = fields
    return Rule(*value, Origin(*origin) if origin else None,
                Spelling(*spelling) if spelling else None)


def _parse_yaml(text: str, path: str) -> Loaded:
    from .rules_yaml import parse_rules_yaml  # PyYAML only when a YAML file is parsed

    return parse_rules_yaml(text, path)
