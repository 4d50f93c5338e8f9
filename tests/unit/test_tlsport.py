"""How TCP listeners are prepared for the TLS transport."""

from __future__ import annotations

import socket
import sys

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_CORK is Linux's")
def test_a_bulk_write_reaches_a_real_peer_whole_and_leaves_the_socket_uncorked():
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
    client_socket = socket.create_connection(listening.getsockname())
    accepted, address = listening.accept()
    listening.close()
    accepted.setblocking(False)
    client_socket.setblocking(False)
    listener = _Listener(context)
    listener.local_port = accepted.getsockname()[1]
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), client_socket)
    client.set_connect_state()
    server = TLSServerConnection(accepted, _Reader(), address, listener, 1, MemoryReactor())
    server.protocol.makeConnection(server)

    def pump_client(received: bytearray) -> None:
        try:
            if received is None:
                client.do_handshake()
            else:
                while True:
                    received += client.recv(65536)
        except SSL.WantReadError:
            pass

    while server._handshaking:
        pump_client(None)
        server.doRead()
    pump_client(None)

    body = bytes(range(256)) * 1024  # 256 KiB: sixteen records and more
    server.write(body)
    assert server._on_socket
    received = bytearray()
    while len(received) < len(body):
        pump_client(received)
        if not server._nothing_buffered():
            server.doWrite()
    assert bytes(received) == body
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    client_socket.close()
    accepted.close()
