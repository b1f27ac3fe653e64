#!/usr/bin/env python3
"""How long choosing a rule takes: the tracer does it at every exec.

Times Matcher.match over 20 rules (Debian's qemu rules with masks, wasm rules,
extension rules) for files that match the first rule, the last rule, or none
(the common case: a native program). Prints microseconds per call.

    python3 scripts/bench_match.py [--rules 20] [--calls 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wasmbinfmt.exec.match import Matcher  # noqa: E402
from wasmbinfmt.rules.model import make_rule  # noqa: E402

ELF_MASK = bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff")


def elf_rule(name: str, machine: int, bits: int = 2) -> object:
    magic = bytes([0x7F, 0x45, 0x4C, 0x46, bits, 1, 1]) + bytes(9) + bytes([2, 0, machine, 0])
    return make_rule(name=name, kind="M", magic=magic, mask=ELF_MASK, interpreter=f"/q/{name}")


def rule_set(count: int) -> list:
    rules = [make_rule(name="wasm", kind="M", magic=b"\0asm\x01\0\0\0", interpreter="/w"),
             make_rule(name="component", kind="M", magic=b"\0asm\x0d\0\x01\0", interpreter="/w")]
    rules += [make_rule(name=f"ext{i}", kind="E", extension=f"x{i}", interpreter="/e")
              for i in range(3)]
    machine = 0x10
    while len(rules) < count:
        rules.append(elf_rule(f"elf{machine:x}", machine))
        machine += 1
    return rules[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    rules = rule_set(args.rules)
    matcher = Matcher(rules)
    native_elf = bytes([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1]) + bytes(9) + bytes([3, 0, 0x3E, 0]) \
        + bytes(236)
    last = rules[-1]
    cases = {
        "native ELF, no rule matches": (b"/usr/bin/true", native_elf),
        "first rule (wasm)": (b"./prog.wasm", b"\0asm\x01\0\0\0" + bytes(248)),
        f"last rule ({last.name})": (b"./prog", last.magic + bytes(256 - len(last.magic))),
        "short file (40 bytes), no match": (b"./script.sh", b"#!/bin/sh\n" + bytes(30)),
    }
    print(f"Matcher.match with {len(rules)} rules, {args.calls} calls each "
          f"(python {sys.version.split()[0]})")
    for label, (path, header) in cases.items():
        assert (matcher.match(path, header) is not None) == ("no" not in label), label
        best = min(timeit.repeat(lambda: matcher.match(path, header), number=args.calls,
                                 repeat=5))
        print(f"  {label:34s} {best / args.calls * 1e6:6.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
