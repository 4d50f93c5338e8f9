"""How TCP listeners are prepared for the TLS transport."""

from __future__ import annotations

import select
import socket
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

from twisted.internet.address import IPv4Address

from gemfcgi.tlsport import TLSServerConnection, prepare_listener


class _Port:
    """The part of ``tcp.Port`` that ``prepare_listener`` touches: its socket."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", *self.socket.getsockname())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux copies the option")
def test_accepted_connections_have_nagle_off_without_a_call_each():
    port = _Port()
    with port.socket:
        prepare_listener(port)
        assert port.transport is TLSServerConnection
        with socket.create_connection(port.socket.getsockname()):
            accepted, _ = port.socket.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_the_port_number_every_connection_shares_is_noted_on_the_port():
    port = _Port()
    with port.socket:
        prepare_listener(port)
        with socket.create_connection(port.socket.getsockname()):
            accepted, _ = port.socket.accept()
            with accepted:
                assert port.local_port == accepted.getsockname()[1]


class _Listener:
    """What ``TLSServerConnection`` asks of its port: ``factory.tls.server_connection()``."""

    _realPortNumber = 0

    def __init__(self, context) -> None:
        self.factory = self
        self.tls = self
        self.context = context

    def server_connection(self):
        from OpenSSL import SSL

        connection = SSL.Connection(self.context, None)
        connection.set_accept_state()
        return connection


class _Reader:
    def __init__(self) -> None:
        self.received = bytearray()

    def makeConnection(self, transport) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        pass


class _Connected:
    """
    A ``TLSServerConnection`` on a real loopback socket, and a TLS client on
    memory BIOs whose bytes the test moves, in pieces of its choice.
    """

    def __init__(self, hello_first: bool = False) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from OpenSSL import SSL
        from twisted.internet.testing import MemoryReactor

        from gemfcgi.certificates import make_self_signed

        cert_pem, key_pem = make_self_signed(["localhost"])
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate(x509.load_pem_x509_certificate(cert_pem))
        context.use_privatekey(load_pem_private_key(key_pem, None))
        listening = socket.create_server(("127.0.0.1", 0))
        self.socket = socket.create_connection(listening.getsockname())
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # pieces leave as sent
        self.client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.client.set_connect_state()
        self.received = bytearray()
        self.client_done = False
        if hello_first:
            # As a real client does: the ClientHello leaves before the accept.
            with pytest.raises(SSL.WantReadError):
                self.client.do_handshake()
            self.socket.sendall(self.outgoing())
        self.accepted, address = listening.accept()
        listening.close()
        self.accepted.setblocking(False)
        self.socket.setblocking(False)
        listener = _Listener(context)
        listener.local_port = self.accepted.getsockname()[1]
        self.reader = _Reader()
        self.server = TLSServerConnection(self.accepted, self.reader, address, listener, 1, MemoryReactor())
        self.hello_answered = bool(select.select([self.socket], [], [], 0)[0])
        self.reader.makeConnection(self.server)
        for _ in range(500):
            self.client_pump()
            self.server.doRead()
            if self.client_done and not self.server._handshaking:
                break
        assert self.client_done and not self.server._handshaking

    def client_pump(self) -> None:
        """Move bytes both ways for the client, and let it read what came."""
        from OpenSSL import SSL

        try:
            self.client.bio_write(self.socket.recv(1 << 20, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass
        try:
            self.client.do_handshake()
            self.client_done = True
            while True:
                self.received += self.client.recv(65536)
        except SSL.WantReadError:
            pass
        self.socket.sendall(self.outgoing())
        select.select([self.socket, self.accepted], [], [], 0.01)  # let bytes arrive

    def outgoing(self) -> bytes:
        from OpenSSL import SSL

        out = b""
        while True:
            try:
                out += self.client.bio_read(65536)
            except SSL.WantReadError:
                return out

    def close(self) -> None:
        self.socket.close()
        self.accepted.close()


def _read_arrived(connected: _Connected, size: int) -> None:
    """Let the server read until ``size`` more bytes have come in from the socket."""
    got = 0
    while got < size:
        select.select([connected.accepted], [], [], 5)
        waiting = len(connected.accepted.recv(1 << 16, socket.MSG_PEEK))
        assert connected.server.doRead() is None
        got += waiting


@pytest.mark.parametrize("pieces", [1, 2, 7], ids=["one read", "two reads", "seven reads"])
def test_records_that_arrive_whole_split_or_together_all_reach_the_protocol(pieces):
    connected = _Connected()
    connected.client.send(b"gemini://localhost/")
    connected.client.send(b"two-records\r\n")
    wire = connected.outgoing()
    size = -(-len(wire) // pieces)
    for offset in range(0, len(wire), size):
        piece = wire[offset : offset + size]
        connected.socket.sendall(piece)
        _read_arrived(connected, len(piece))
    assert bytes(connected.reader.received) == b"gemini://localhost/two-records\r\n"
    connected.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_CORK is Linux's")
def test_a_bulk_write_reaches_a_real_peer_whole_and_leaves_the_socket_uncorked():
    connected = _Connected()
    server = connected.server
    body = bytes(range(256)) * 1024  # 256 KiB: sixteen records and more
    server.write(body)
    assert server._on_socket
    while len(connected.received) < len(body):
        connected.client_pump()
        if not server._nothing_buffered():
            server.doWrite()
    assert bytes(connected.received) == body
    assert connected.accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    connected.close()


def test_a_client_hello_waiting_at_accept_is_answered_before_the_reactor_turns():
    connected = _Connected(hello_first=True)
    assert connected.hello_answered  # the ServerHello was on its way before any doRead
    connected.client.send(b"gemini://localhost/\r\n")
    wire = connected.outgoing()
    connected.socket.sendall(wire)
    _read_arrived(connected, len(wire))
    assert bytes(connected.reader.received) == b"gemini://localhost/\r\n"
    connected.close()


def test_a_connection_accepted_before_its_hello_waits_for_it():
    connected = _Connected()
    assert not connected.hello_answered
    assert connected.server.connected and connected.server._ended is None
    connected.close()


# A ClientHello cut short: a handshake record whose message is incomplete.
CUT_HELLO = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"


@contextmanager
def accepted_with_bytes_waiting(waiting: bytes, listener: _Listener) -> Iterator[tuple]:
    """A ``TLSServerConnection`` accepted after ``waiting`` arrived: (server, its reactor, the client)."""
    from twisted.internet.testing import MemoryReactor

    listening = socket.create_server(("127.0.0.1", 0))
    with listening, socket.create_connection(listening.getsockname()) as client:
        client.sendall(waiting)
        accepted, address = listening.accept()
        with accepted:
            accepted.setblocking(False)
            listener.local_port = accepted.getsockname()[1]
            reader = _Reader()
            reactor = MemoryReactor()
            server = TLSServerConnection(accepted, reader, address, listener, 1, reactor)
            reader.makeConnection(server)
            yield server, reactor, client


def test_garbage_waiting_at_accept_ends_the_connection_through_the_reactor():
    from OpenSSL import SSL

    with accepted_with_bytes_waiting(CUT_HELLO, _Listener(SSL.Context(SSL.TLS_METHOD))) as (server, reactor, client):
        assert server in reactor.writers  # the end is handed to the reactor, not raised here
        assert server.doWrite() is not None
        client.settimeout(5)
        assert client.recv(1024)[:1] == b"\x15"  # a TLS alert record


def test_an_unexpected_error_in_the_read_at_accept_ends_that_connection_only():
    from twisted.logger import capturedLogs

    class Broken:
        def bio_write(self, data):
            raise RuntimeError("a bug below the transport")

    class BrokenListener(_Listener):
        def server_connection(self):
            return Broken()

    with capturedLogs() as logs, accepted_with_bytes_waiting(CUT_HELLO, BrokenListener(None)) as (
        server, reactor, _
    ):
        assert any("ClientHello at accept failed" in str(event.get("log_format")) for event in logs)
        assert server in reactor.writers
        assert server.doWrite() is not None  # the reactor ends it: connectionLost follows


def test_a_batch_of_writes_after_the_connection_is_gone_writes_nothing_and_raises_nothing():
    # A FastCGI read can arrive after the client's connection was lost
    # (the relay's backend read is on its way when the client resets).
    from twisted.internet import main
    from twisted.python.failure import Failure

    connected = _Connected()
    server = connected.server
    # What OpenSSL still holds for the socket (session tickets wait for the
    # reply's first bytes) when the connection is lost.
    server._tls.send(b"held back")
    server.connectionLost(Failure(main.CONNECTION_LOST))
    with server.writes_batched():
        server.write(b"20 text/gemini\r\nlate")
    connected.close()


def test_failures_inside_openssl_past_the_limit_are_counted_on_the_next_line_said(monkeypatch):
    from OpenSSL import SSL
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi import tls
    from gemfcgi.textlog import LogLimiter

    clock = Clock()
    monkeypatch.setattr(tls, "failures_here", LogLimiter(clock, limit=5, window=10.0))
    error = SSL.Error([("SSL routines", "", "internal error")])

    with capturedLogs() as logs:
        for attempt in range(8):
            if attempt == 7:
                clock.advance(10)
            tls.say_failed_here(("192.0.2.1", 4242), error)
    lines = [formatEvent(event) for event in logs if event.get("log_namespace") == "gemfcgi.tls"]
    said = ("TLS handshake with 192.0.2.1:4242 failed inside OpenSSL (internal error; a client "
            "certificate too large for a session ticket, over about 64 KB, is one cause)")
    assert lines == [said] * 5 + [said + " (2 more such failures not logged)"]


@pytest.mark.parametrize("size", [1000, 256 * 1024], ids=["on the BIOs", "OpenSSL on the socket"])
def test_what_is_written_after_the_peer_reset_is_counted_as_lost(size):
    # The access line counted every byte written after a failed send: a
    # file's producer wrote up to 4 MiB more in the same turn, all logged
    # as sent to a client that was gone.
    import struct
    import time

    connected = _Connected()
    server = connected.server
    server.write(b"20 text/gemini\r\n")
    for _ in range(100):
        connected.client_pump()
        if connected.received:
            break
    assert bytes(connected.received) == b"20 text/gemini\r\n" and server.bytes_lost == 0
    connected.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connected.socket.close()  # a reset
    time.sleep(0.05)
    assert not server.send_failed
    for _ in range(3):
        server.write(b"x" * size)
    assert server.send_failed
    assert server.bytes_lost == 3 * size  # the failing write's, and those after it
    connected.accepted.close()


def test_reading_waits_while_the_peer_leaves_what_was_sent_untaken():
    # A peer that reads nothing and sends KeyUpdates asking for an answer
    # had each one read and answered, the answers piling up in memory (2 MB
    # a second) for as long as it went on. Now it is not read from until
    # it takes what was sent.
    from OpenSSL import SSL

    connected = _Connected()
    server, reactor = connected.server, connected.server.reactor
    for _ in range(512):  # 8 MiB in writes that stay on the BIOs: more than the socket takes
        server.write(b"r" * (16 * 1024))
    assert not server._nothing_buffered() and server in reactor.readers
    connected.client.send(b"anything the peer sends")
    wire = connected.outgoing()
    connected.socket.sendall(wire)
    _read_arrived(connected, len(wire))
    assert server not in reactor.readers  # held
    while not server._nothing_buffered():
        try:
            connected.client.bio_write(connected.socket.recv(1 << 20))
        except BlockingIOError:
            pass
        try:
            while connected.client.recv(1 << 20):
                pass
        except SSL.WantReadError:
            pass
        server.doWrite()
    assert server in reactor.readers  # taken: read again
    connected.close()


def test_twisteds_tls_layer_reads_again_once_the_peer_has_taken_what_was_sent():
    # The same hold on the listeners that keep Twisted's TLS layer (unix
    # sockets, PROXY headers), looked at again on a timer; only beyond a
    # reply's own: every handshake flight waits in the buffer for the next
    # turn, and held there, a connection cost 0.1 s a flight.
    from twisted.internet.task import Clock

    from gemfcgi.tls import HELD_BEYOND, HELD_LOOK, HalfClosingTLSProtocol

    class SocketTransport:
        def __init__(self, unsent: int) -> None:
            self.socket = object()
            self.reactor = Clock()
            self.connected = True
            self.dataBuffer, self.offset, self._tempDataLen = b"x" * unsent, 0, 0
            self.reading = True

        def pauseProducing(self) -> None:
            self.reading = False

        def resumeProducing(self) -> None:
            self.reading = True

    def layer_over(below: SocketTransport) -> HalfClosingTLSProtocol:
        layer = HalfClosingTLSProtocol.__new__(HalfClosingTLSProtocol)
        layer.transport = below
        return layer

    flight = SocketTransport(40_000)  # a handshake flight, written this turn
    layer_over(flight)._hold_while_untaken()
    assert flight.reading and not flight.reactor.getDelayedCalls()
    below = SocketTransport(HELD_BEYOND + 1)
    layer_over(below)._hold_while_untaken()
    assert not below.reading
    below.reactor.advance(HELD_LOOK * 5)
    assert not below.reading  # still untaken
    below.offset = len(below.dataBuffer) - HELD_BEYOND // 4
    below.reactor.advance(HELD_LOOK)
    assert below.reading and not below.reactor.getDelayedCalls()
