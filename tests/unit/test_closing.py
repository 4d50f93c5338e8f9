"""Closing a connection in order: a FIN now, and what the peer sends after it read and dropped."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.task import Clock

from gemfcgi import connections
from gemfcgi.connections import DRAIN_AFTER_CLOSE, MAX_DRAINING, close_in_order


class _Reactor(Clock):
    """A clock that also keeps the read descriptors given to it."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set = set()

    def addReader(self, reader) -> None:
        self.readers.add(reader)

    def removeReader(self, reader) -> None:
        self.readers.discard(reader)


class _Connection:
    """What ``close_in_order`` asks of a socket's transport."""

    def __init__(self, sock: socket.socket, reactor: _Reactor) -> None:
        self.socket = sock
        self.reactor = reactor
        self.connected = True
        self.lost = False

    def connectionLost(self, reason) -> None:
        self.connected, self.lost = False, True
        self.socket.close()


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(5)
    yield server, client
    client.close()
    for closing in list(connections._draining):
        closing.close()


def test_the_peer_gets_its_fin_and_what_it_sends_later_is_dropped_until_it_closes(pair):
    server, client = pair
    reactor = _Reactor()
    connection = _Connection(server, reactor)
    server.send(b"the reply")
    assert close_in_order(connection)
    assert connection.lost
    # The FIN came after the reply, though the transport has let go of its socket.
    assert client.recv(100) == b"the reply" and client.recv(100) == b""
    [closing] = reactor.readers
    # A close_notify sent after it is read, not answered with a reset.
    client.send(b"close_notify")
    closing.doRead()
    assert reactor.readers == {closing} and closing.sock.fileno() != -1
    client.shutdown(socket.SHUT_WR)
    closing.doRead()
    assert reactor.readers == set() and closing.sock.fileno() == -1
    assert not reactor.getDelayedCalls()


def test_a_peer_that_never_closes_is_let_go_after_the_drain(pair):
    server, _ = pair
    reactor = _Reactor()
    assert close_in_order(_Connection(server, reactor))
    [closing] = reactor.readers
    reactor.advance(DRAIN_AFTER_CLOSE)
    assert reactor.readers == set() and closing.sock.fileno() == -1


def test_beyond_the_most_drained_at_once_a_socket_closes_at_once(pair, monkeypatch):
    server, client = pair
    monkeypatch.setattr(connections, "_draining", set(range(MAX_DRAINING)))
    reactor = _Reactor()
    assert close_in_order(_Connection(server, reactor))
    assert reactor.readers == set()
    assert client.recv(100) == b""
