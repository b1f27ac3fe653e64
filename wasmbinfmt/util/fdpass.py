"""Messages with descriptors over a unix socket pair, on the C module `_socket`.

socket.py offers the same (socketpair, send_fds, recv_fds), but importing it
costs ~4 ms (it imports enum and selectors): the tracer would pay it at the
first module exec of every run, on that exec's path, and so would the warm
runner's host.
"""

from __future__ import annotations

import _socket
import struct

Socket = _socket.socket
_FD_SIZE = struct.calcsize("i")


def seqpacket_pair() -> tuple[Socket, Socket]:
    """Two connected sockets that keep message boundaries (close-on-exec, as Python's are)."""
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)


def send_fds(sock: Socket, data: bytes, fds: list[int]) -> None:
    """One message, `fds` passed along with it (SCM_RIGHTS)."""
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                  struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sock.sendmsg([data], ancillary)


def recv_fds(sock: Socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """One message of at most `size` bytes, and the descriptors that came with it (at most
    `max_fds`). An empty message: the other end has closed."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * _FD_SIZE))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _FD_SIZE
            fds += struct.unpack(f"{whole // _FD_SIZE}i", payload[:whole])
    return data, fds
