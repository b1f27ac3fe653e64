"""The rule model and the binfmt_misc registration line.

A rule says which files an emulator runs: a magic rule (type ``M``) compares
bytes at an offset of the file's first 256 bytes, under an optional mask; an
extension rule (type ``E``) compares what follows the last ``.`` of the path as
passed to exec. Parsing makes every check Linux's ``fs/binfmt_misc.c`` makes
when a line is written to ``/proc/sys/fs/binfmt_misc/register``, so a line we
accept is a line the kernel accepts, and the reverse.

Everything here is pure: no file system, no environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

# The kernel reads this many bytes of a file before choosing a format (BINPRM_BUF_SIZE).
HEADER_SIZE = 256
# Bounds on a registration line, in bytes, as the kernel checks them.
MIN_LINE_BYTES = 11
MAX_LINE_BYTES = 1920
# The flags binfmt_misc knows, in the order /proc prints them.
KNOWN_FLAGS = "POCF"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Origin:
    """Where a rule was defined, for messages and `wasmbinfmt list`."""

    source: str  # a file path, or a label such as "--rule"
    line: int | None = None
    format: str = "binfmt"  # binfmt | binfmt-support | proc | yaml

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


class RuleError(Exception):
    """A rule or rule source is invalid. Names the source, line and field."""

    def __init__(self, reason: str, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.reason = reason
        self.source = source
        self.line = line
        self.field = field
        super().__init__(str(self))

    def located(self, source: str, line: int | None) -> "RuleError":
        """The same error, placed in a source (keeps a more precise place already set)."""
        return RuleError(self.reason, self.source or source,
                         self.line if self.line is not None else line, self.field)

    def __str__(self) -> str:
        where = self.source or "<rule>"
        if self.line is not None:
            where += f":{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.reason}"


@dataclass(frozen=True)
class Spelling:
    """How a parsed line wrote its fields, so formatting gives the same bytes back.

    Only used where it still spells the rule's current value.
    """

    delimiter: str = ":"
    offset: str = ""
    magic: str = ""
    mask: str = ""
    flags: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # "M" (magic) or "E" (extension)
    interpreter: str
    offset: int = 0
    magic: bytes = b""  # M rules
    mask: bytes | None = None  # M rules; None compares every bit
    extension: str = ""  # E rules, without the dot
    flags: frozenset[str] = frozenset()
    # Extensions binfmt_misc lacks.
    args: tuple[str, ...] = ()  # placed after the interpreter, before the binary's path
    env: tuple[tuple[str, str], ...] = ()  # set for the emulator only
    enabled: bool = True
    detector: str | None = None  # Debian binfmt-support: a program that must accept the file
    origin: Origin | None = field(default=None, compare=False)
    spelling: Spelling | None = field(default=None, compare=False, repr=False)

    @property
    def preserve_argv0(self) -> bool:
        return "P" in self.flags

    def describe_match(self) -> str:
        """A short human form of what the rule matches."""
        if self.kind == "E":
            return "." + self.extension
        text = f"@{self.offset} {self.magic.hex()}"
        if self.mask is not None:
            text += f" & {self.mask.hex()}"
        return text

    def flag_string(self) -> str:
        return "".join(f for f in KNOWN_FLAGS if f in self.flags)


# ---------------------------------------------------------------------------
# Field checks shared by every source format.


def check_name(name: str) -> None:
    if not name:
        raise RuleError("the name is empty", field="name")
    if name in (".", ".."):
        raise RuleError(f"the name cannot be {name!r}", field="name")
    if "/" in name:
        raise RuleError(f"the name {name!r} contains '/'", field="name")


def parse_offset(text: str) -> int:
    """The offset field as the kernel reads it (kstrtoint, base 10, >= 0)."""
    digits = text[:-1] if text.endswith("\n") else text
    sign = ""
    if digits[:1] in "+-" and digits:
        sign, digits = digits[0], digits[1:]
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise RuleError(f"{text!r} is not a decimal number", field="offset")
    value = int(digits)
    if sign == "-" and value != 0:
        raise RuleError(f"{text!r} is negative", field="offset")
    if value > 2**31 - 1:
        raise RuleError(f"{text!r} is out of range", field="offset")
    return value


def decode_escapes(text: str, field_name: str) -> bytes:
    """Decode a magic or mask field: ``\\xHH`` is one byte; other characters stand for themselves.

    Mirrors the kernel's two passes: every ``\\x`` must be followed by two hex
    digits (scanarg), and a backslash followed by anything but ``x`` is kept
    together with the character after it, both literal (string_unescape), so
    ``\\\\x41`` is five bytes, not a backslash and an ``A``.
    """
    for i, c in enumerate(text):
        if c == "\\" and text[i + 1:i + 2] == "x":
            pair = text[i + 2:i + 4]
            if len(pair) < 2 or not (pair[0] in _HEX_DIGITS and pair[1] in _HEX_DIGITS):
                raise RuleError(f"'\\x' at character {i + 1} is not followed by two hex digits",
                                field=field_name)
    raw = os.fsencode(text)
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C and i + 1 < n:  # backslash with something after it
            if raw[i + 1] == 0x78:  # "x": validated above, two hex digits follow
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
            else:
                out += raw[i:i + 2]
                i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


def check_magic(offset: int, magic: bytes, mask: bytes | None) -> None:
    if not magic:
        raise RuleError("the magic is empty", field="magic")
    if mask is not None and len(mask) != len(magic):
        raise RuleError(f"the mask is {len(mask)} bytes but the magic is {len(magic)}",
                        field="mask")
    if len(magic) > HEADER_SIZE:
        raise RuleError(f"the magic is {len(magic)} bytes; at most {HEADER_SIZE} are read",
                        field="magic")
    if offset + len(magic) > HEADER_SIZE:
        raise RuleError(f"offset {offset} + magic {len(magic)} bytes goes past the "
                        f"{HEADER_SIZE} bytes the kernel reads", field="offset")


def check_extension(extension: str) -> None:
    if not extension:
        raise RuleError("the extension is empty", field="magic")
    if "/" in extension:
        raise RuleError(f"the extension {extension!r} contains '/'", field="magic")


def check_interpreter(interpreter: str) -> None:
    if not interpreter:
        raise RuleError("the interpreter is empty", field="interpreter")
    if "\0" in interpreter:
        raise RuleError("the interpreter contains a NUL byte", field="interpreter")


def parse_flags(text: str) -> frozenset[str]:
    """Flags from P, O, C, F in any order and number; C implies O (as in the kernel)."""
    body = text[:-1] if text.endswith("\n") else text
    unknown = sorted(set(body) - set(KNOWN_FLAGS))
    if unknown:
        raise RuleError(f"unknown flag(s) {''.join(unknown)!r}; only P, O, C, F exist",
                        field="flags")
    flags = set(body)
    if "C" in flags:
        flags.add("O")
    return frozenset(flags)


def make_rule(*, name: str, kind: str, interpreter: str, offset: int = 0, magic: bytes = b"",
              mask: bytes | None = None, extension: str = "", flags: frozenset[str] = frozenset(),
              **extra) -> Rule:
    """Build a rule, making the kernel's checks on fields given as values."""
    check_name(name)
    if kind == "M":
        check_magic(offset, magic, mask)
    elif kind == "E":
        check_extension(extension)
    else:
        raise RuleError(f"the type is {kind!r}; it must be M (magic) or E (extension)",
                        field="type")
    check_interpreter(interpreter)
    bad = set(flags) - set(KNOWN_FLAGS)
    if bad:
        raise RuleError(f"unknown flag(s) {''.join(sorted(bad))!r}", field="flags")
    if "C" in flags:
        flags = frozenset(flags) | {"O"}
    return Rule(name=name, kind=kind, interpreter=interpreter, offset=offset, magic=magic,
                mask=mask, extension=extension, flags=frozenset(flags), **extra)


# ---------------------------------------------------------------------------
# Registration lines.


class _Cursor:
    """Walks a line the way create_entry does: padded with 8 delimiters at the end."""

    def __init__(self, line: str, delimiter: str):
        self.text = line + delimiter * 8
        self.end = len(line)
        self.pos = 1
        self.delimiter = delimiter

    def plain_field(self) -> str:
        """Up to the next delimiter (strchr), which is consumed."""
        stop = self.text.find(self.delimiter, self.pos)
        value = self.text[self.pos:stop]
        self.pos = stop + 1
        return value

    def escaped_field(self, name: str) -> str:
        """Up to the next delimiter, skipping over ``\\xHH`` (scanarg)."""
        text, i = self.text, self.pos
        while True:
            if i >= len(text):
                raise RuleError("the line ends inside an escape", field=name)
            c = text[i]
            i += 1
            if c == self.delimiter:
                break
            if c == "\\" and text[i:i + 1] == "x":
                pair = text[i + 1:i + 3]
                if len(pair) < 2 or not (pair[0] in _HEX_DIGITS and pair[1] in _HEX_DIGITS):
                    raise RuleError(f"'\\x' at character {i} is not followed by two hex digits",
                                    field=name)
                i += 3
        value = text[self.pos:i - 1]
        self.pos = i
        return value

    def past_end(self) -> bool:
        return self.pos > self.end


def parse_registration(line: str, origin: Origin | None = None) -> Rule:
    """Parse one ``:name:type:offset:magic:mask:interpreter:flags`` line.

    `line` is the text written to the register file, without the newline that
    ``echo`` and systemd-binfmt add (a final ``\\n`` is tolerated, as by the
    kernel). Raises RuleError naming the field; the caller adds file and line.
    """
    if line.endswith("\n"):
        line = line[:-1]
    size = len(os.fsencode(line))
    if size < MIN_LINE_BYTES or size > MAX_LINE_BYTES:
        raise RuleError(f"the line is {size} bytes; binfmt_misc takes {MIN_LINE_BYTES} to "
                        f"{MAX_LINE_BYTES}", field="line")
    if "\0" in line:
        raise RuleError("the line contains a NUL byte", field="line")
    delimiter = line[0]
    cur = _Cursor(line, delimiter)

    name = cur.plain_field()
    check_name(name)
    kind = cur.text[cur.pos]
    if kind not in "ME" or cur.text[cur.pos + 1] != delimiter:
        raise RuleError(f"the type must be M or E followed by {delimiter!r}", field="type")
    cur.pos += 2
    if cur.past_end():
        raise RuleError("the line ends after the type", field="offset")

    offset, magic, mask, extension = 0, b"", None, ""
    if kind == "M":
        offset_text = cur.plain_field()
        if offset_text:
            offset = parse_offset(offset_text)
        magic_text = cur.escaped_field("magic")
        if not magic_text:
            raise RuleError("the magic is empty", field="magic")
        mask_text = cur.escaped_field("mask")
        magic = decode_escapes(magic_text, "magic")
        mask = decode_escapes(mask_text, "mask") if mask_text else None
        check_magic(offset, magic, mask)
    else:
        offset_text = cur.plain_field()  # ignored by the kernel for E rules
        extension = magic_text = cur.plain_field()
        check_extension(extension)
        mask_text = cur.plain_field()  # ignored too
    interpreter = cur.plain_field()
    if cur.past_end():
        raise RuleError("the interpreter must be followed by the delimiter and the flags "
                        "field (which may be empty)", field="interpreter")
    check_interpreter(interpreter)
    flags_text = line[cur.pos:]
    flags = parse_flags(flags_text)
    return Rule(name=name, kind=kind, interpreter=interpreter, offset=offset, magic=magic,
                mask=mask, extension=extension, flags=flags, origin=origin,
                spelling=Spelling(delimiter, offset_text, magic_text, mask_text, flags_text))


def escape_bytes(data: bytes, delimiter: str) -> str:
    """Canonical field text: printable ASCII as itself, the rest (and ``\\`` and the delimiter) as ``\\xHH``."""
    out = []
    for b in data:
        c = chr(b)
        if 0x21 <= b <= 0x7E and c not in ("\\", delimiter):
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _pick_delimiter(rule: Rule, preferred: str) -> str:
    """A delimiter that appears in none of the rule's plain fields."""
    plain = [rule.name, rule.interpreter, rule.extension]
    for candidate in (preferred, ":", ",", ";", "|", "!", "#", "%", "@", "~"):
        # A backslash delimiter would leave no way to write a \xHH escape.
        if candidate != "\\" and not any(candidate in p for p in plain):
            return candidate
    raise RuleError("no delimiter character fits this rule", field="name")


def format_registration(rule: Rule) -> str:
    """The registration line for `rule`; a parsed line comes back byte for byte."""
    if rule.args or rule.env or rule.detector or not rule.enabled:
        raise RuleError(f"rule {rule.name!r} uses args, env, enabled or detector, which a "
                        "binfmt_misc line cannot express", field="line")
    sp = rule.spelling or Spelling()
    d = _pick_delimiter(rule, sp.delimiter)
    same_spelling = d == sp.delimiter and rule.spelling is not None

    def spelled(text: str, decoded, canonical: str) -> str:
        try:
            return text if same_spelling and decoded(text) else canonical
        except RuleError:
            return canonical

    if rule.kind == "M":
        offset = spelled(sp.offset, lambda t: (parse_offset(t) if t else 0) == rule.offset,
                         str(rule.offset) if rule.offset else "")
        magic = spelled(sp.magic, lambda t: decode_escapes(t, "magic") == rule.magic,
                        escape_bytes(rule.magic, d))
        mask_canonical = "" if rule.mask is None else escape_bytes(rule.mask, d)
        mask = spelled(sp.mask, lambda t: (decode_escapes(t, "mask") if t else None) == rule.mask,
                       mask_canonical)
    else:
        # The kernel skips these two fields for E rules; keep whatever text they had.
        offset = sp.offset if same_spelling else ""
        magic = rule.extension
        mask = sp.mask if same_spelling else ""
    flags = spelled(sp.flags, lambda t: parse_flags(t) == rule.flags, rule.flag_string())
    return d + d.join([rule.name, rule.kind, offset, magic, mask, rule.interpreter, flags])


def with_origin(rule: Rule, origin: Origin) -> Rule:
    return replace(rule, origin=origin)
