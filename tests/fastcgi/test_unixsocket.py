"""The unix endpoint that connects, and writes, in the turn that asks: on real sockets."""

from __future__ import annotations

import socket
import time

import pytest
from twisted.internet import error, main
from twisted.internet.defer import CancelledError
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from gemfcgi.fastcgi.unixsocket import UnixSocketEndpoint, UnixStreamConnection

REQUEST = b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00"


class Greeter(Protocol):
    """Writes its request as soon as it is connected, as the FastCGI client does."""

    def __init__(self, request: bytes = REQUEST) -> None:
        self.request = request
        self.lost = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def connectionLost(self, reason=None) -> None:
        self.lost = reason


@pytest.fixture
def reactor():
    # A reactor of its own, never run: whatever happens, happens before any turn.
    reactor = EPollReactor()
    yield reactor
    for selectable in reactor.removeAll():
        selectable.connectionLost(Failure(main.CONNECTION_DONE))
    reactor._poller.close()


def listening(path, backlog: int = 8) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(backlog)
    return server


def connected(reactor, protocol: Protocol) -> tuple[UnixStreamConnection, socket.socket]:
    """``protocol`` on one end of a socket pair; the other end, for the test."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    transport = UnixStreamConnection(ours, protocol, None, None, 0, reactor)
    protocol.makeConnection(transport)
    return transport, theirs


def results(deferred) -> list:
    seen: list = []
    deferred.addBoth(seen.append)
    return seen


def test_connects_and_sends_the_request_before_the_reactor_turns(reactor, tmp_path):
    server = listening(tmp_path / "app.sock")
    protocol = Greeter()
    connected = results(UnixSocketEndpoint(reactor, str(tmp_path / "app.sock")).connect(
        Factory.forProtocol(lambda: protocol)))
    assert connected == [protocol]
    assert isinstance(protocol.transport, UnixStreamConnection)
    accepted, _ = server.accept()
    accepted.settimeout(0)
    assert accepted.recv(4096) == REQUEST
    accepted.close()
    server.close()


def test_a_missing_socket_fails_with_the_os_error(reactor, tmp_path):
    failed = results(UnixSocketEndpoint(reactor, str(tmp_path / "none.sock")).connect(
        Factory.forProtocol(Greeter)))
    assert failed[0].check(error.ConnectError)
    assert "No such file or directory" in failed[0].getErrorMessage()
    assert str(tmp_path / "none.sock") in failed[0].getErrorMessage()


def test_a_socket_reached_through_its_directorys_descriptor_is_named_by_its_path(reactor, tmp_path):
    # A spawned program's socket is connected to as /proc/self/fd/N/...:
    # the log said that, where the path tells which program.
    import os

    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        failed = results(UnixSocketEndpoint(reactor, f"/proc/self/fd/{directory}/none.sock",
                                            shown=str(tmp_path / "none.sock")).connect(Factory.forProtocol(Greeter)))
    finally:
        os.close(directory)
    assert f"No such file or directory: {tmp_path / 'none.sock'}." in failed[0].getErrorMessage()


def test_a_socket_nobody_listens_on_is_refused(reactor, tmp_path):
    stale = listening(tmp_path / "stale.sock")
    stale.close()  # the file stays, the listener is gone
    failed = results(UnixSocketEndpoint(reactor, str(tmp_path / "stale.sock")).connect(
        Factory.forProtocol(Greeter)))
    assert failed[0].check(error.ConnectionRefusedError)


def filled(path) -> list[socket.socket]:
    """Connections that fill the accept queue of the socket at ``path``."""
    queued = []
    while True:
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.setblocking(False)
        try:
            waiting.connect(str(path))
        except BlockingIOError:
            waiting.close()
            return queued
        queued.append(waiting)


def turn_until(reactor, condition, timeout: float = 5.0) -> None:
    """Run the reactor's timers, in real time, until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
        reactor.runUntilCurrent()


@pytest.fixture
def busy(tmp_path):
    """A socket whose application accepts nothing: its backlog is full."""
    server = listening(tmp_path / "busy.sock", backlog=0)
    queued = filled(tmp_path / "busy.sock")
    yield server, queued
    for waiting in queued:
        waiting.close()
    server.close()


def test_a_full_backlog_waits_for_the_application_instead_of_failing(reactor, tmp_path, busy):
    server, queued = busy
    protocol = Greeter()
    pending = results(UnixSocketEndpoint(reactor, str(tmp_path / "busy.sock"), timeout=5).connect(
        Factory.forProtocol(lambda: protocol)))
    # Neither connected nor failed: it tries again while the timeout runs.
    assert pending == []
    deadline = time.monotonic() + 0.2
    turn_until(reactor, lambda: time.monotonic() > deadline)
    assert pending == []
    # The application catches up: it accepts one, and there is room.
    server.accept()[0].close()
    turn_until(reactor, lambda: pending)
    assert pending == [protocol]
    for _ in range(len(queued) + 1):
        accepted, _ = server.accept()
        accepted.settimeout(0)
        try:
            data = accepted.recv(4096)
        except BlockingIOError:
            continue
        finally:
            accepted.close()
        assert data == REQUEST
        break
    else:
        pytest.fail("the request never reached the application")


def test_a_backlog_full_for_the_whole_timeout_fails_with_a_timeout_that_says_so(
    reactor, tmp_path, busy
):
    path = str(tmp_path / "busy.sock")
    started = time.monotonic()
    pending = results(UnixSocketEndpoint(reactor, path, timeout=0.3).connect(
        Factory.forProtocol(Greeter)))
    turn_until(reactor, lambda: pending)
    assert time.monotonic() - started >= 0.3
    assert pending[0].check(error.TimeoutError)
    assert f"the backlog of {path} stayed full for 0.3 s" in pending[0].getErrorMessage()
    assert reactor.getDelayedCalls() == []


def test_running_out_of_descriptors_while_waiting_for_a_backlog_fails_the_connect(
    reactor, tmp_path, busy, monkeypatch
):
    import errno

    from gemfcgi.fastcgi import unixsocket

    pending = results(UnixSocketEndpoint(reactor, str(tmp_path / "busy.sock"), timeout=5).connect(
        Factory.forProtocol(Greeter)))

    def no_descriptor_left(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(unixsocket.socket, "socket", no_descriptor_left)
    turn_until(reactor, lambda: pending)
    assert pending[0].check(error.ConnectError)
    assert "Too many open files" in pending[0].getErrorMessage()
    assert reactor.getDelayedCalls() == []


def test_waiting_for_a_full_backlog_can_be_cancelled(reactor, tmp_path, busy):
    connecting = UnixSocketEndpoint(reactor, str(tmp_path / "busy.sock"), timeout=5).connect(
        Factory.forProtocol(Greeter))
    pending = results(connecting)
    connecting.cancel()
    assert pending[0].check(CancelledError)
    assert reactor.getDelayedCalls() == []


def test_a_memory_reactor_is_asked_the_usual_way(tmp_path):
    reactor = MemoryReactorClock()
    UnixSocketEndpoint(reactor, str(tmp_path / "app.sock"), timeout=7).connect(Factory.forProtocol(Greeter))
    address, _, timeout, _ = reactor.unixClients[0]
    assert (address, timeout) == (str(tmp_path / "app.sock"), 7)


def test_what_the_socket_does_not_take_is_queued_in_order(reactor):
    big = bytes(range(256)) * 40_000  # more than the socket buffers hold
    transport, theirs = connected(reactor, Greeter(big))
    transport.write(b"--the end--")
    received = bytearray()
    theirs.settimeout(0)
    while len(received) < len(big) + 11:
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            reactor.doIteration(0.1)
    assert bytes(received) == big + b"--the end--"
    theirs.close()


def test_closing_with_nothing_queued_ends_in_the_next_turn(reactor):
    protocol = Greeter(b"request")
    transport, theirs = connected(reactor, protocol)
    transport.loseConnection()
    assert protocol.lost is None  # not from inside the caller
    reactor.runUntilCurrent()
    assert protocol.lost.check(error.ConnectionDone)
    theirs.settimeout(5)
    assert theirs.recv(100) == b"request"
    assert theirs.recv(100) == b""  # then EOF
    theirs.close()


def test_a_write_to_a_peer_that_is_gone_ends_the_connection_from_the_reactor(reactor):
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.close()
    protocol = Greeter(b"request")  # its write fails: nobody reads any more
    transport = UnixStreamConnection(ours, protocol, None, None, 0, reactor)
    protocol.makeConnection(transport)
    assert protocol.lost is None  # not from inside write()
    for _ in range(10):
        reactor.doIteration(0.1)
        if protocol.lost is not None:
            break
    assert protocol.lost is not None  # ended, without an exception in the caller


class ClosesOnReply(Greeter):
    """Closes as soon as the reply arrives, as the relay does at END_REQUEST."""

    def dataReceived(self, data: bytes) -> None:
        self.reply = data
        self.transport.loseConnection()


def test_closing_from_the_reply_ends_the_connection_as_the_read_returns(reactor):
    protocol = ClosesOnReply(b"request")
    transport, theirs = connected(reactor, protocol)
    transport.startReading()
    theirs.settimeout(5)
    assert theirs.recv(100) == b"request"
    theirs.sendall(b"reply")
    for _ in range(10):
        reactor.doIteration(0.1)
        if protocol.lost is not None:
            break
    assert protocol.reply == b"reply"
    assert protocol.lost.check(error.ConnectionDone)
    assert reactor.getDelayedCalls() == []  # in the read's own turn, not a later one
    assert theirs.recv(100) == b""
    theirs.close()


def test_a_request_left_in_the_backlog_is_told_from_one_taken_by_an_application_now_gone(
    reactor, tmp_path
):
    # How a spawned program's end tells a request it never accepted from
    # one it took with it: the first still holds its bytes unread.
    server = listening(tmp_path / "app.sock")
    endpoint = UnixSocketEndpoint(reactor, str(tmp_path / "app.sock"))
    first, second = Greeter(), Greeter()
    results(endpoint.connect(Factory.forProtocol(lambda: first)))
    results(endpoint.connect(Factory.forProtocol(lambda: second)))
    assert first.transport.unread_by_peer() > 0
    assert second.transport.unread_by_peer() > 0
    accepted, _ = server.accept()
    accepted.close()  # taken, then gone with its process
    assert first.transport.unread_by_peer() == 0
    assert second.transport.unread_by_peer() > 0
    server.close()
