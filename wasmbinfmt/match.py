"""Choosing the rule for a file, as binfmt_misc does (pure, called at every exec).

The kernel zero-fills its 256-byte buffer before reading the file, so a short
file compares as if padded with zero bytes; an extension rule compares what
follows the last ``.`` of the whole path string as passed to exec (not the
basename: ``./v1.2/prog`` has the "extension" ``2/prog``, which no rule can
match since extensions have no ``/``).
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

from .rules import HEADER_SIZE, Rule

_PADDING = bytes(HEADER_SIZE)


class Matcher:
    """Rules compiled for matching, in precedence order (first match wins). Disabled rules are dropped."""

    __slots__ = ("_tests", "rules")

    def __init__(self, rules: Iterable[Rule]):
        self.rules = [r for r in rules if r.enabled]
        # One tuple a rule: (rule, extension, start, end, expected, mask as int or None).
        tests = []
        for r in self.rules:
            if r.kind == "E":
                tests.append((r, os.fsencode(r.extension), 0, 0, b"", None))
            elif r.mask is None:
                tests.append((r, None, r.offset, r.offset + len(r.magic), r.magic, None))
            else:
                mask = int.from_bytes(r.mask, "big")
                want = int.from_bytes(r.magic, "big") & mask
                tests.append((r, None, r.offset, r.offset + len(r.magic), want, mask))
        self._tests = tests

    def candidates(self, path: bytes, header: bytes) -> Iterator[Rule]:
        """Every rule whose magic or extension matches, best first."""
        if len(header) < HEADER_SIZE:
            header = header + _PADDING[len(header):]
        dot = path.rfind(b".")
        extension = path[dot + 1:] if dot >= 0 else None
        for rule, ext, start, end, want, mask in self._tests:
            if ext is not None:
                if ext == extension:
                    yield rule
            elif mask is None:
                if header[start:end] == want:
                    yield rule
            elif int.from_bytes(header[start:end], "big") & mask == want:
                yield rule

    def match(self, path: bytes, header: bytes,
              confirm: Callable[[Rule], bool] | None = None) -> Rule | None:
        """The rule that handles the file, or None.

        A rule with a ``detector`` matches only if `confirm(rule)` says so (the
        caller runs the detector); without `confirm` such rules are passed over.
        """
        for rule in self.candidates(path, header):
            if rule.detector is None or (confirm is not None and confirm(rule)):
                return rule
        return None
