"""Choosing the rule for a file, as binfmt_misc does (pure, called at every exec).

The kernel zero-fills its 256-byte buffer before reading the file, so a short
file compares as if padded with zero bytes; an extension rule compares what
follows the last ``.`` of the whole path string as passed to exec (not the
basename: ``./v1.2/prog`` has the "extension" ``2/prog``, which no rule can
match since extensions have no ``/``).
"""

from __future__ import annotations

import os

from ..util.abcs import Callable, Iterable, Iterator
from ..rules.model import HEADER_SIZE, Rule

_PADDING = bytes(HEADER_SIZE)


class Matcher:
    """Rules compiled for matching, in precedence order (first match wins). Disabled rules are dropped.

    Rules that read the same bytes (offset, length and mask) form one group:
    the header is read once for the group and the rules it matches are found
    by a dict lookup. Qemu's ELF rules differ only in their machine bytes, so
    twenty rules cost about as much as three. Precedence is kept by rule index.
    """

    __slots__ = ("rules", "_groups", "_extensions")

    def __init__(self, rules: Iterable[Rule]):
        self.rules = [r for r in rules if r.enabled]
        groups: dict[tuple, dict] = {}  # (start, end, mask) -> {expected value: [indexes]}
        extensions: dict[bytes, list[int]] = {}
        for index, r in enumerate(self.rules):
            if r.kind == "E":
                extensions.setdefault(os.fsencode(r.extension), []).append(index)
                continue
            end = r.offset + len(r.magic)
            if r.mask is None:
                key, want = (r.offset, end, None), r.magic
            else:
                mask = int.from_bytes(r.mask, "big")
                key, want = (r.offset, end, mask), int.from_bytes(r.magic, "big") & mask
            groups.setdefault(key, {}).setdefault(want, []).append(index)
        self._groups = tuple((start, end, mask, table)
                             for (start, end, mask), table in groups.items())
        self._extensions = extensions

    def _indexes(self, path: bytes, header: bytes) -> list[int]:
        if len(header) < HEADER_SIZE:
            header = header + _PADDING[len(header):]
        found: list[int] = []
        for start, end, mask, table in self._groups:
            if mask is None:
                hit = table.get(header[start:end])
            else:
                hit = table.get(int.from_bytes(header[start:end], "big") & mask)
            if hit:
                found += hit
        if self._extensions:
            dot = path.rfind(b".")
            if dot >= 0:
                found += self._extensions.get(path[dot + 1:], ())
        return found

    def candidates(self, path: bytes, header: bytes) -> Iterator[Rule]:
        """Every rule whose magic or extension matches, best first."""
        for index in sorted(self._indexes(path, header)):
            yield self.rules[index]

    def match(self, path: bytes, header: bytes,
              confirm: Callable[[Rule], bool] | None = None) -> Rule | None:
        """The rule that handles the file, or None.

        A conditional rule (a ``detector``, ``wasm_imports``) matches only if
        `confirm(rule)` says so (the caller reads the file or runs the detector);
        without `confirm` such rules are passed over.
        """
        found = self._indexes(path, header)
        if not found:
            return None
        for index in sorted(found):
            rule = self.rules[index]
            if not rule.conditional or (confirm is not None and confirm(rule)):
                return rule
        return None
