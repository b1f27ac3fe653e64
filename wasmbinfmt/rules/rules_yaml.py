"""rules.yaml: our rule format, with line numbers in every error.

    rules:
      - name: wasm                       # structured form
        magic: '\\x00asm\\x01\\x00\\x00\\x00'  # \\xHH escapes, as in binfmt_misc
        interpreter: wasmtime            # no '/': looked up in PATH when loaded
        args: [run, --]                  # our extension: after the interpreter
        env: {WASMTIME_BACKTRACE_DETAILS: "1"}   # our extension: emulator only
        flags: P
      - binfmt: ':qemu-aarch64:M::\\x7fELF...:\\xff...:/usr/bin/qemu-aarch64:P'
        args: ['-0']                     # extensions apply to the binfmt form too
        enabled: false

The YAML is read as a node tree (not plain data) so that every error can name
the line of the key or value at fault; duplicate keys are errors, not silently
merged as PyYAML would.
"""

from __future__ import annotations

import yaml

from .model import (
    Loaded, Origin, Rule, RuleError, decode_escapes, make_rule, parse_flags, parse_registration,
)

_STRUCTURED_KEYS = {"name", "magic", "mask", "offset", "extension", "interpreter", "flags",
                    "args", "env", "enabled", "detector", "wasm-imports", "argv0-option",
                    "native-on", "ld-prefix"}
_BINFMT_KEYS = {"binfmt", "args", "env", "enabled", "detector", "wasm-imports",
                "argv0-option", "native-on", "ld-prefix"}
_TOP_KEYS = {"rules", "profiles"}


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Doc:
    """Typed access to YAML nodes; errors carry the source and line."""

    def __init__(self, source: str):
        self.source = source
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, reason: str, key: str | None = None) -> RuleError:
        return RuleError(reason, self.source, _line(node), key)

    def mapping(self, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, tuple]:
        """{key: (key_node, value_node)}; unknown or repeated keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, tuple] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, "a key")
            if not isinstance(key, str):
                raise self.error(key_node, f"keys must be strings, not {key!r}")
            if key in out:
                raise self.error(key_node, f"key given twice (first on line "
                                           f"{_line(out[key][0])})", key)
            if key not in allowed:
                raise self.error(key_node, f"unknown key; {what} takes: "
                                           f"{', '.join(sorted(allowed))}", key)
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node, what: str, key: str | None = None):
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value", key)
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            raise self.error(node, f"bad value: {e}", key) from None

    def string(self, node: yaml.Node, key: str) -> str:
        value = self.scalar(node, f"'{key}'", key)
        if isinstance(value, bool) or value is None:
            raise self.error(node, f"must be a string, but YAML reads {node.value!r} as "
                                   f"{value}: put it in quotes", key)
        return str(value)

    def byte_string(self, node: yaml.Node, key: str) -> bytes:
        """magic/mask: binfmt ``\\xHH`` escapes; YAML's own escapes work too (U+0000..U+00FF)."""
        text = self.string(node, key)
        wide = [c for c in text if ord(c) > 0xFF]
        if wide:
            raise self.error(node, f"character {wide[0]!r} is not a byte; write bytes as \\xHH",
                             key)
        try:
            return _latin1_decode(text, key)
        except RuleError as e:
            raise self.error(node, e.reason, key) from None

    def string_list(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "must be a list of strings", key)
        return tuple(self.string(item, key) for item in node.value)

    def string_map(self, node: yaml.Node, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "must be a mapping of names to strings", key)
        items = []
        seen = set()
        for k, v in node.value:
            name = self.string(k, key)
            if not name or "=" in name or "\0" in name:
                raise self.error(k, f"{name!r} is not a valid variable name", key)
            if name in seen:
                raise self.error(k, f"variable {name!r} given twice", key)
            seen.add(name)
            items.append((name, self.string(v, key)))
        return tuple(items)

    def boolean(self, node: yaml.Node, key: str) -> bool:
        value = self.scalar(node, f"'{key}'", key)
        if not isinstance(value, bool):
            raise self.error(node, "must be true or false", key)
        return value


def _latin1_decode(text: str, key: str) -> bytes:
    """Characters U+0080..U+00FF (from YAML's own "\\xHH") are the bytes 0x80..0xFF."""
    out = bytearray()
    plain = []
    for c in text:
        if ord(c) < 0x80:
            plain.append(c)
        else:
            out += decode_escapes("".join(plain), key)
            plain = []
            out.append(ord(c))
    out += decode_escapes("".join(plain), key)
    return bytes(out)


def _checked(doc: _Doc, keys: dict, rule: Rule) -> Rule:
    """Checks across keys, once the rule is whole."""
    if rule.argv0_option is not None and not rule.preserve_argv0:
        raise doc.error(keys["argv0-option"][1], "passes the argv[0] that the P flag keeps: "
                                                 "give the rule flags: P", "argv0-option")
    return rule


def _rule(doc: _Doc, node: yaml.Node) -> Rule:
    keys = doc.mapping(node, "a rule", _STRUCTURED_KEYS | _BINFMT_KEYS)
    origin = Origin(doc.source, _line(node), "yaml")
    extra = {}
    if "args" in keys:
        extra["args"] = doc.string_list(keys["args"][1], "args")
    if "env" in keys:
        extra["env"] = doc.string_map(keys["env"][1], "env")
    if "enabled" in keys:
        extra["enabled"] = doc.boolean(keys["enabled"][1], "enabled")
    if "detector" in keys:
        extra["detector"] = doc.string(keys["detector"][1], "detector")
    if "argv0-option" in keys:
        extra["argv0_option"] = doc.string(keys["argv0-option"][1], "argv0-option")
        if not extra["argv0_option"]:
            raise doc.error(keys["argv0-option"][1], "empty: name the emulator's option that "
                                                     "takes argv[0] (qemu: -0)", "argv0-option")
    if "wasm-imports" in keys:
        value = keys["wasm-imports"][1]
        extra["wasm_imports"] = doc.string_list(value, "wasm-imports")
        if not extra["wasm_imports"] or not all(extra["wasm_imports"]):
            raise doc.error(value, "a list of the import module names that select the rule "
                                   "(e.g. [wali]), none empty", "wasm-imports")
    if "native-on" in keys:
        value = keys["native-on"][1]
        extra["native_on"] = doc.string_list(value, "native-on")
        if not all(extra["native_on"]):
            raise doc.error(value, "a list of machine names as uname -m gives them (e.g. "
                                   "[aarch64]), none empty", "native-on")
    if "ld-prefix" in keys:
        value = keys["ld-prefix"][1]
        extra["ld_prefixes"] = doc.string_list(value, "ld-prefix")
        if not all(path.startswith("/") for path in extra["ld_prefixes"]):
            raise doc.error(value, "a list of absolute paths of sysroots (e.g. "
                                   "[/usr/aarch64-linux-gnu])", "ld-prefix")

    if "binfmt" in keys:
        mixed = sorted(set(keys) - _BINFMT_KEYS)
        if mixed:
            raise doc.error(keys[mixed[0]][0], "cannot be combined with 'binfmt'; the line "
                                               "already says it", mixed[0])
        value_node = keys["binfmt"][1]
        try:
            rule = parse_registration(doc.string(value_node, "binfmt"), origin)
        except RuleError as e:
            raise RuleError(e.reason, doc.source, _line(value_node),
                            f"binfmt: {e.field}" if e.field else "binfmt") from None
        return _checked(doc, keys, rule._replace(**extra))

    def need(key: str) -> str:
        if key not in keys:
            raise doc.error(node, f"a rule needs '{key}' (or a 'binfmt' line)", key)
        return doc.string(keys[key][1], key)

    def where(key: str) -> yaml.Node:
        return keys[key][1] if key in keys else node

    name, interpreter = need("name"), need("interpreter")
    fields = dict(name=name, interpreter=interpreter, origin=origin, **extra)
    try:
        if "flags" in keys:
            fields["flags"] = parse_flags(doc.string(keys["flags"][1], "flags"))
        if ("magic" in keys) == ("extension" in keys):
            raise RuleError("give exactly one of 'magic' and 'extension'", field="magic")
        if "extension" in keys:
            stray = sorted({"offset", "mask"} & set(keys))
            if stray:
                raise RuleError("only magic rules take it", field=stray[0])
            return _checked(doc, keys, make_rule(kind="E", extension=need("extension"), **fields))
        offset = 0
        if "offset" in keys:
            offset = doc.scalar(keys["offset"][1], "'offset'", "offset")
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise RuleError("must be a whole number >= 0", field="offset")
        magic = doc.byte_string(keys["magic"][1], "magic")
        mask = doc.byte_string(keys["mask"][1], "mask") if "mask" in keys else None
        return _checked(doc, keys,
                        make_rule(kind="M", offset=offset, magic=magic, mask=mask, **fields))
    except RuleError as e:
        if e.source:
            raise
        raise doc.error(where(e.field or ""), e.reason, e.field) from None


def parse_rules_yaml(text: str, source: str) -> Loaded:
    """Rules from a rules.yaml text, in the order written (the first listed wins)."""
    doc = _Doc(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        return [], [RuleError(f"not valid YAML: {problem}", source,
                              mark.line + 1 if mark else None)]
    if root is None:
        return [], []
    try:
        top = doc.mapping(root, "the file", _TOP_KEYS)
        profile_errors = _profiles(doc, top["profiles"][1])[1] if "profiles" in top else []
        if "rules" not in top:
            return [], profile_errors
        items = top["rules"][1]
        if not isinstance(items, yaml.SequenceNode):
            raise doc.error(items, "'rules' must be a list", "rules")
    except RuleError as e:
        return [], [e]
    rules, errors, names = [], [], {}
    for item in items.value:
        try:
            rule = _rule(doc, item)
        except RuleError as e:
            errors.append(e)
            continue
        if rule.name in names:
            errors.append(doc.error(item, f"rule name {rule.name!r} is already used on line "
                                          f"{names[rule.name]}", "name"))
            continue
        names[rule.name] = _line(item)
        rules.append(rule)
    return rules, profile_errors + errors


Profiles = dict[str, list[tuple[str, list[str]]]]  # profile -> [(rule, emulator argv)]


def _profiles(doc: _Doc, node: yaml.Node) -> tuple[Profiles, list[RuleError]]:
    """``profiles: {NAME: {RULE: [COMMAND, ARGS...]}}``: emulator choices by name."""
    profiles: Profiles = {}
    errors: list[RuleError] = []
    if not isinstance(node, yaml.MappingNode):
        return {}, [doc.error(node, "'profiles' must map profile names to {rule: command}",
                              "profiles")]
    for name_node, choices_node in node.value:
        try:
            name = doc.string(name_node, "profiles")
            if not isinstance(choices_node, yaml.MappingNode):
                raise doc.error(choices_node, f"profile {name!r} must map rule names to "
                                              f"commands, e.g. {{wasm: [wasmtime, run, --]}}",
                                "profiles")
            choices = []
            for rule_node, command_node in choices_node.value:
                rule = doc.string(rule_node, "profiles")
                command = list(doc.string_list(command_node, f"profiles: {name}: {rule}"))
                if not command or not command[0]:
                    raise doc.error(command_node, "the command is empty",
                                    f"profiles: {name}: {rule}")
                choices.append((rule, command))
            if name in profiles:
                raise doc.error(name_node, f"profile {name!r} is given twice", "profiles")
            profiles[name] = choices
        except RuleError as e:
            errors.append(e)
    return profiles, errors


def parse_profiles(text: str, source: str) -> Profiles:
    """The profiles of a rules.yaml text (its errors are reported with its rules)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "profiles":
            return _profiles(_Doc(source), value)[0]
    return {}
