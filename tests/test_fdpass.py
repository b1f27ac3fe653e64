"""util/fdpass.py: messages and descriptors over a socket pair, without socket.py."""

from __future__ import annotations

import os

from wasmbinfmt.util import fdpass


def test_a_message_arrives_with_its_descriptors_in_order():
    ours, theirs = fdpass.seqpacket_pair()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        fdpass.send_fds(ours, b"request", [w1, w2])
        data, fds = fdpass.recv_fds(theirs, 1024, 5)
        assert data == b"request" and len(fds) == 2
        os.write(fds[0], b"one")
        os.write(fds[1], b"two")
        assert (os.read(r1, 10), os.read(r2, 10)) == (b"one", b"two")
        for fd in fds:
            os.close(fd)
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
        ours.close()
        theirs.close()


def test_messages_keep_their_boundaries_and_may_carry_no_descriptor():
    ours, theirs = fdpass.seqpacket_pair()
    fdpass.send_fds(ours, b"first", [])
    fdpass.send_fds(ours, b"second", [])
    assert fdpass.recv_fds(theirs, 1024, 5) == (b"first", [])
    assert fdpass.recv_fds(theirs, 1024, 5) == (b"second", [])
    ours.close()
    assert fdpass.recv_fds(theirs, 1024, 5) == (b"", [])  # the other end has closed
    theirs.close()


def test_the_pair_is_close_on_exec_as_pythons_sockets_are():
    ours, theirs = fdpass.seqpacket_pair()
    assert not os.get_inheritable(ours.fileno()) and not os.get_inheritable(theirs.fileno())
    ours.close()
    theirs.close()
