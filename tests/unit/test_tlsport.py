"""How TCP listeners are prepared for the TLS transport."""

from __future__ import annotations

import socket
import sys

import pytest

from gemfcgi.tlsport import TLSServerConnection, prepare_listener


class _Port:
    """The part of ``tcp.Port`` that ``prepare_listener`` touches: its socket."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))


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
