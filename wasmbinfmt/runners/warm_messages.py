"""The messages between the tracer (trace/handoff.py) and the warm runner's host
(runners/warm.py). A module of their own: the tracer imports these, and only the host,
forked from it, imports the runner (wasmtime's bindings and all), while the tracer goes
on with the exec."""

from __future__ import annotations

import marshal

MAX_MESSAGE = 1 << 16  # a request: the argv and environment (larger ones run cold)
MAX_FDS = 5  # client pidfd, status pipe, stdin, stdout, stderr


def encode_request(client: int, argv: list[bytes], env: list[bytes], state: tuple,
                   std: int) -> bytes:
    """A request; `state` is (ignored signals, blocked signals, umask, process group,
    no_new_privs) and
    `std` has bit n set when descriptor n is among the message's."""
    return marshal.dumps(("run", client, argv, env, state, std))


def fits(client: int, argv: list[bytes], env: list[bytes], state: tuple) -> bool:
    """Whether the request for this exec fits in one message: what decides is its encoding,
    which adds a few bytes to each string (many short ones add up), not their lengths."""
    return len(encode_request(client, argv, env, state, 7)) <= MAX_MESSAGE


def encode_signal(client: int, sig: int) -> bytes:
    return marshal.dumps(("signal", client, sig))


def decode(data: bytes) -> tuple:
    """("run", client, argv, env, state, std) or ("signal", client, sig); ValueError for a
    message that is not one of them (cut short: it did not fit)."""
    try:
        message = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as e:
        raise ValueError(f"not a message: {e}") from None
    if not (isinstance(message, tuple) and message and message[0] in ("run", "signal")):
        raise ValueError("not a message")
    return message
