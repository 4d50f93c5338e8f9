"""
TLS read and written by OpenSSL on the socket itself, for TCP listeners.

Twisted's TLS layer (``TLSMemoryBIOProtocol``) sits between the socket and
the protocol and copies every byte through memory BIOs, in Python, with a
protocol wrapper and interface declarations built per connection. For a
server whose every connection is one short TLS exchange, that layer costs
more CPU than OpenSSL's own handshake work. Here the socket is handed to
OpenSSL (``SSL_set_fd``) and the reactor only tells it when to read or
write: ``TLSServerConnection`` is the TCP transport, with the Gemini
protocol directly on top of it.

It is used for plain TCP listeners (``tcp:``, ``tcp6:``, sockets from
systemd or a parent process); listeners that need something between the
socket and TLS (a PROXY protocol header) or are not TCP keep Twisted's
layer. Both give the protocol the same transport surface: ``write``,
``loseConnection`` (after a close_notify, wait for the peer's),
``abortConnection``, ``getHandle`` (the ``SSL.Connection``), producers, and
``handshakeCompleted`` on the protocol.
"""

from __future__ import annotations

from typing import Any, Optional

from OpenSSL import SSL
from twisted.internet import main, tcp
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger

from gemfcgi.eagerwrite import EagerWriteMixin

log = Logger()


class TLSServerConnection(EagerWriteMixin, tcp.Server):
    """An accepted TCP connection whose bytes OpenSSL reads and writes."""

    def __init__(self, sock, protocol, client, server, sessionno, reactor) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        # OpenSSL sends each handshake flight and record with its own send():
        # with Nagle's algorithm, the second small segment would wait for the
        # peer's delayed ACK (40 ms) on every connection.
        self.setTcpNoDelay(True)
        self._tls: SSL.Connection = server.factory.tls.server_connection(sock)
        self._handshaking = True
        self._shutting_down = False
        self._ended: Optional[Exception] = None
        self._host = None

    def getHandle(self) -> SSL.Connection:
        return self._tls

    def getHost(self):
        # The local address never changes; asked for by routing, FastCGI
        # parameters and block messages, it would cost a getsockname() each.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def logPrefix(self) -> str:
        return "TLS"

    # -- reading -----------------------------------------------------------

    def doRead(self) -> Optional[Any]:
        if self._handshaking:
            result = self._continue_handshake()
            if self._handshaking or result is not None:
                return result
        tls = self._tls
        protocol = self.protocol
        while True:
            try:
                data = tls.recv(65536)
            except SSL.WantReadError:
                return None
            except SSL.ZeroReturnError:
                # The peer's close_notify: the end we wait for after ours.
                return main.CONNECTION_DONE
            except SSL.WantWriteError:
                self.startWriting()
                return None
            except SSL.Error:
                return main.CONNECTION_LOST
            if not self.disconnecting:
                protocol.dataReceived(data)

    def _continue_handshake(self) -> Optional[Any]:
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            return None
        except SSL.WantWriteError:
            self.startWriting()
            return None
        except SSL.Error:
            return main.CONNECTION_LOST
        self._handshaking = False
        if IHandshakeListener.providedBy(self.protocol):
            self.protocol.handshakeCompleted()
        return None

    # -- writing -----------------------------------------------------------

    def _may_write_now(self) -> bool:
        return not self._handshaking

    def loseConnection(self) -> None:
        """
        With nothing queued, send close_notify now and keep reading for the
        peer's, rather than a round of write interest first.
        """
        if (
            self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._handshaking
            and self.producer is None
            and self._nothing_buffered()
        ):
            self.disconnecting = True
            ended = self._postLoseConnection()
            if ended is not None:
                # Closed or failed already: the reactor ends the connection
                # from doWrite, outside the caller's stack.
                self._ended = ended
                self.startWriting()
            return
        super().loseConnection()

    def doWrite(self) -> Optional[Any]:
        if self._ended is not None:
            return self._ended
        if self._handshaking:
            self.stopWriting()
            return self.doRead()
        return super().doWrite()

    def writeSomeData(self, data) -> Any:
        """
        Write records until the socket is full. OpenSSL (in partial-write
        mode) returns after each 16 KiB record; one record per reactor turn
        would make a large file cost a turn every 16 KiB.
        """
        if self._handshaking:
            return 0
        view = memoryview(data)
        written = 0
        while written < len(view):
            try:
                written += self._tls.send(view[written:])
            except (SSL.WantWriteError, SSL.WantReadError):
                break
            except SSL.Error:
                return main.CONNECTION_LOST if written == 0 else written
        return written

    # -- closing -----------------------------------------------------------

    def _postLoseConnection(self) -> Optional[Any]:
        """Everything is written: send close_notify, then wait for the peer's."""
        if self._handshaking:
            return main.CONNECTION_DONE
        self._shutting_down = True
        try:
            peer_closed_too = self._tls.shutdown()
        except SSL.Error:
            return main.CONNECTION_LOST
        if peer_closed_too:
            return main.CONNECTION_DONE
        self.stopWriting()
        self.startReading()
        return None

    def _closeWriteConnection(self) -> None:
        # Half-close would cut the TLS stream short; closing waits for the peer.
        pass
