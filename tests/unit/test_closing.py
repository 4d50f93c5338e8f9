"""Closing a connection in order: a FIN now, and what the peer sends after it read and dropped."""

from __future__ import annotations

import select
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


class _TCP:
    """A transport as far as ``reset_by_peer`` looks: one that holds its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname(), timeout=5)
        server, _ = listening.accept()
    return server, client


def test_a_peer_that_closed_before_the_reply_and_reset_it_is_told_from_one_that_reads_nothing():
    server, client = _tcp_pair()
    idle_server, idle_client = _tcp_pair()
    try:
        client.close()  # a FIN: maybe a half-close, so the reply is sent
        assert not connections.reset_by_peer(_TCP(server))
        server.send(b"the reply")  # its kernel answers with a reset
        idle_server.send(b"the reply")  # this one holds it, unread
        for _ in range(100):
            if connections.reset_by_peer(_TCP(server)):
                break
            select.select([], [], [], 0.01)
        assert connections.reset_by_peer(_TCP(server))
        assert not connections.reset_by_peer(_TCP(idle_server))
    finally:
        for sock in (server, idle_server, idle_client):
            sock.close()


def test_a_unix_socket_is_never_said_to_be_reset(pair):
    server, client = pair
    client.close()
    assert not connections.reset_by_peer(_TCP(server))


def test_a_socket_closed_meanwhile_is_not_said_to_be_reset():
    # The linger may look at a connection whose socket Twisted has closed
    # in the same turn: getsockopt then fails, and it is no reset to act on.
    server, client = _tcp_pair()
    client.close()
    server.close()
    assert not connections.reset_by_peer(_TCP(server))
