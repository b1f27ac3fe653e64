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

from ..util.record import record

# The kernel reads this many bytes of a file before choosing a format (BINPRM_BUF_SIZE).
HEADER_SIZE = 256
# Bounds on a registration line, in bytes, as the kernel checks them.
MIN_LINE_BYTES = 11
MAX_LINE_BYTES = 1920
# The flags binfmt_misc knows, in the order /proc prints them.
KNOWN_FLAGS = "POCF"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


# Value types are records (named tuples, see record.py), not dataclasses: importing
# dataclasses (and the inspect module it pulls in) costs more than everything else
# `wasmbinfmt -- CMD` does at start.
@record
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


@record
class Spelling:
    """How a parsed line wrote its fields, so formatting gives the same bytes back.

    Only used where it still spells the rule's current value.
    """

    delimiter: str = ":"
    offset: str = ""
    magic: str = ""
    mask: str = ""
    flags: str = ""


@record
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
    # A core wasm module matches only if it imports from one of these modules (its import
    # section, beyond binfmt_misc's 256 bytes, is read: wasm.import_modules).
    wasm_imports: tuple[str, ...] = ()
    # With P: the emulator takes argv[0] as this option (qemu-user: -0) before the path,
    # rather than after it (the kernel's P, which only a -binfmt-P emulator reads).
    argv0_option: str | None = None
    # Machines (uname -m) that run these files themselves: there the rule is left out.
    native_on: tuple[str, ...] = ()
    # Where a dynamically linked program's libraries may be (qemu-user's -L sysroots): for
    # a program whose loader (PT_INTERP) this machine lacks, the first that has it becomes
    # QEMU_LD_PREFIX, unless the caller set one.
    ld_prefixes: tuple[str, ...] = ()
    origin: Origin | None = None  # where it was written: not part of its value
    spelling: Spelling | None = None  # how it was written: not part of its value

    @property
    def conditional(self) -> bool:
        """Whether the magic is not enough: a detector or the wasm imports must agree."""
        return self.detector is not None or bool(self.wasm_imports)

    def _value(self) -> tuple:
        return self[:-2]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self._value() == other._value()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._value())

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


def decode_escapes(text: str | bytes, field_name: str) -> bytes:
    """Decode a magic or mask field: ``\\xHH`` is one byte; other bytes stand for themselves.

    Mirrors the kernel's two passes: every ``\\x`` must be followed by two hex
    digits (scanarg), and a backslash followed by anything but ``x`` is kept
    together with the byte after it, both literal (string_unescape), so
    ``\\\\x41`` is five bytes, not a backslash and an ``A``.
    """
    raw = _encode(text, field_name)
    for i in range(len(raw) - 1):
        if raw[i] == 0x5C and raw[i + 1] == 0x78 and not _two_hex_digits(raw, i + 2):
            raise RuleError(f"'\\x' at byte {i + 1} is not followed by two hex digits",
                            field=field_name)
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


def _encode(text: str | bytes, field_name: str) -> bytes:
    """Text to the bytes the kernel would see (UTF-8; undecodable bytes kept as they were)."""
    try:
        return os.fsencode(text)
    except UnicodeError:
        raise RuleError("contains characters that are not valid text", field=field_name) \
            from None


def _two_hex_digits(raw: bytes, at: int) -> bool:
    return len(raw) >= at + 2 and raw[at] in _HEX_DIGITS and raw[at + 1] in _HEX_DIGITS


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


# What a loader gives: the rules it read and the errors it found.
Loaded = tuple[list[Rule], list[RuleError]]


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
    """Walks a line's bytes the way create_entry does: padded with 8 delimiters at the end."""

    def __init__(self, line: bytes):
        self.delimiter = line[:1]
        self.text = line + self.delimiter * 8
        self.end = len(line)
        self.pos = 1

    def plain_field(self) -> bytes:
        """Up to the next delimiter (strchr), which is consumed."""
        stop = self.text.find(self.delimiter, self.pos)
        value = self.text[self.pos:stop]
        self.pos = stop + 1
        return value

    def escaped_field(self, name: str) -> bytes:
        """Up to the next delimiter, skipping over ``\\xHH`` (scanarg)."""
        text, i, d = self.text, self.pos, self.delimiter[0]
        while True:
            if i >= len(text):
                raise RuleError("the line ends inside an escape", field=name)
            c = text[i]
            i += 1
            if c == d:
                break
            if c == 0x5C and text[i:i + 1] == b"x":
                if not _two_hex_digits(text, i + 1):
                    raise RuleError(f"'\\x' at byte {i} of the line is not followed by two "
                                    "hex digits", field=name)
                i += 3
        value = text[self.pos:i - 1]
        self.pos = i
        return value

    def past_end(self) -> bool:
        return self.pos > self.end


def parse_registration(line: str | bytes, origin: Origin | None = None) -> Rule:
    """Parse one ``:name:type:offset:magic:mask:interpreter:flags`` line.

    `line` is what is written to the register file, without the newline that
    ``echo`` and systemd-binfmt add (a final ``\\n`` is tolerated, as by the
    kernel). Like the kernel, the parser works on bytes: the delimiter is the
    first byte. Raises RuleError naming the field; the caller adds file and line.
    """
    raw = _encode(line, "line")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if len(raw) < MIN_LINE_BYTES or len(raw) > MAX_LINE_BYTES:
        raise RuleError(f"the line is {len(raw)} bytes; binfmt_misc takes {MIN_LINE_BYTES} to "
                        f"{MAX_LINE_BYTES}", field="line")
    if b"\0" in raw:
        # The kernel would stop reading some fields at a NUL and not others.
        raise RuleError("the line contains a NUL byte", field="line")
    cur = _Cursor(raw)
    delimiter = cur.delimiter

    name = os.fsdecode(cur.plain_field())
    check_name(name)
    kind = cur.text[cur.pos:cur.pos + 1]
    if kind not in (b"M", b"E") or cur.text[cur.pos + 1:cur.pos + 2] != delimiter:
        raise RuleError(f"the type must be M or E followed by the delimiter "
                        f"{os.fsdecode(delimiter)!r}", field="type")
    cur.pos += 2
    if cur.past_end():
        raise RuleError("the line ends after the type", field="offset")

    offset, magic, mask, extension = 0, b"", None, ""
    if kind == b"M":
        offset_text = cur.plain_field()
        if offset_text:
            offset = parse_offset(os.fsdecode(offset_text))
        magic_text = cur.escaped_field("magic")
        if not magic_text:
            raise RuleError("the magic is empty", field="magic")
        mask_text = cur.escaped_field("mask")
        magic = decode_escapes(magic_text, "magic")
        mask = decode_escapes(mask_text, "mask") if mask_text else None
        check_magic(offset, magic, mask)
    else:
        offset_text = cur.plain_field()  # ignored by the kernel for E rules
        magic_text = cur.plain_field()
        extension = os.fsdecode(magic_text)
        check_extension(extension)
        mask_text = cur.plain_field()  # ignored too
    interpreter = os.fsdecode(cur.plain_field())
    if cur.past_end():
        raise RuleError("the interpreter must be followed by the delimiter and the flags "
                        "field (which may be empty)", field="interpreter")
    check_interpreter(interpreter)
    flags_text = os.fsdecode(raw[cur.pos:])
    flags = parse_flags(flags_text)
    spelling = Spelling(*map(os.fsdecode, (delimiter, offset_text, magic_text, mask_text)),
                        flags_text)
    return Rule(name=name, kind=kind.decode(), interpreter=interpreter, offset=offset,
                magic=magic, mask=mask, extension=extension, flags=flags, origin=origin,
                spelling=spelling)


def escape_bytes(data: bytes, delimiter: bytes) -> bytes:
    """Canonical field text: printable ASCII as itself, the rest (and ``\\`` and the delimiter) as ``\\xHH``."""
    out = bytearray()
    for b in data:
        if 0x21 <= b <= 0x7E and b != 0x5C and b != delimiter[0]:
            out.append(b)
        else:
            out += b"\\x%02x" % b
    return bytes(out)


def _pick_delimiter(plain_fields: list[bytes], preferred: bytes) -> bytes:
    """A one-byte delimiter found in none of the rule's plain fields."""
    for candidate in (preferred, b":", b",", b";", b"|", b"!", b"#", b"%", b"@", b"~"):
        # A backslash delimiter would leave no way to write a \xHH escape.
        if len(candidate) == 1 and candidate != b"\\" and \
                not any(candidate in field for field in plain_fields):
            return candidate
    raise RuleError("no delimiter character fits this rule", field="name")


def format_registration(rule: Rule) -> str:
    """The registration line for `rule`; a parsed line comes back byte for byte."""
    if rule.args or rule.env or rule.conditional or rule.argv0_option or not rule.enabled:
        raise RuleError(f"rule {rule.name!r} uses args, env, enabled, detector, wasm-imports or "
                        "argv0-option, which a binfmt_misc line cannot express", field="line")
    sp = rule.spelling or Spelling()
    name, interpreter, extension = map(os.fsencode, (rule.name, rule.interpreter, rule.extension))
    d = _pick_delimiter([name, interpreter, extension], os.fsencode(sp.delimiter))
    same_spelling = rule.spelling is not None and d == os.fsencode(sp.delimiter)

    def spelled(text: str, fits, canonical: bytes) -> bytes:
        if same_spelling:
            try:
                if fits(text):
                    return os.fsencode(text)
            except RuleError:
                pass
        return canonical

    if rule.kind == "M":
        offset = spelled(sp.offset, lambda t: (parse_offset(t) if t else 0) == rule.offset,
                         b"%d" % rule.offset if rule.offset else b"")
        magic = spelled(sp.magic, lambda t: decode_escapes(t, "magic") == rule.magic,
                        escape_bytes(rule.magic, d))
        mask = spelled(sp.mask, lambda t: (decode_escapes(t, "mask") if t else None) == rule.mask,
                       b"" if rule.mask is None else escape_bytes(rule.mask, d))
    else:
        # The kernel skips these two fields for E rules; keep whatever text they had.
        offset = os.fsencode(sp.offset) if same_spelling else b""
        magic = extension
        mask = os.fsencode(sp.mask) if same_spelling else b""
    flags = spelled(sp.flags, lambda t: parse_flags(t) == rule.flags, rule.flag_string().encode())
    kind = rule.kind.encode()
    return os.fsdecode(d + d.join([name, kind, offset, magic, mask, interpreter, flags]))

