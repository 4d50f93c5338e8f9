"""
Unix-socket connections to FastCGI applications, in the turn that asks.

``connect()`` to a listening unix socket finishes at once: it succeeds, fails
(no such file, refused), or reports a full backlog. So this endpoint
connects synchronously, puts the socket in a transport and hands it to the
protocol, which writes the request before the reactor runs again; Twisted's
``UNIXClientEndpoint`` would go through a connector, a Deferred chain and a
reactor turn for the same result. Only a full backlog takes that long way,
so that the connect timeout applies while the application catches up.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import endpoints, error, main, tcp, unix
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure
from zope.interface import implementer

from gemfcgi.eagerwrite import EagerWriteMixin


class UnixStreamConnection(EagerWriteMixin, unix.Server):
    """A connected unix socket whose writes go out at once when they can."""

    _reading = False
    _done_in_read = False
    # The socket is this process's alone (close-on-exec): close() ends it,
    # without a shutdown() first.
    _shouldShutdown = False

    def logPrefix(self) -> str:
        return "FastCGI"

    def doRead(self):
        # FastCGI passes no file descriptors: a plain recv(), without the
        # recvmsg() and ancillary-data handling of Twisted's unix transport.
        self._reading = True
        try:
            result = tcp.Connection.doRead(self)
        finally:
            self._reading = False
        if result is None and self._done_in_read:
            # Closed by what the read delivered (the reply's end): the
            # reactor ends the connection as this read returns.
            return main.CONNECTION_DONE
        return result

    def loseConnection(self) -> None:
        """
        With nothing left to send (a request whose reply has ended), close
        without asking for write interest first: as the current read
        returns, or else in the next turn.
        """
        if (
            self.connected
            and not self.disconnecting
            and self.producer is None
            and self._nothing_buffered()
        ):
            self.disconnecting = True
            self.stopReading()
            self.stopWriting()
            if self._reading:
                self._done_in_read = True
            else:
                self.reactor.callLater(0, self.connectionLost, Failure(main.CONNECTION_DONE))
            return
        super().loseConnection()


_ERRORS = {errno.ECONNREFUSED: error.ConnectionRefusedError}


@implementer(IStreamClientEndpoint)
class UnixSocketEndpoint:
    """A unix socket path, connected synchronously; see the module's doc."""

    def __init__(self, reactor, path: str, timeout: float = 30) -> None:
        self.reactor = reactor
        self.path = path
        self.timeout = timeout
        self._address = UNIXAddress(path)

    def _slow(self) -> IStreamClientEndpoint:
        return endpoints.UNIXClientEndpoint(self.reactor, self.path, self.timeout)

    def connect(self, factory: IProtocolFactory) -> Deferred:
        if not isinstance(self.reactor, PosixReactorBase):
            # The transport below needs a reactor of file descriptors; any
            # other (a test's memory reactor) is asked the usual way.
            return self._slow().connect(factory)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except BlockingIOError:
            sock.close()
            return self._slow().connect(factory)
        except OSError as problem:
            sock.close()
            kind = _ERRORS.get(problem.errno, error.ConnectError)
            return fail(kind(string=f"{problem.strerror}: {self.path}"))
        try:
            protocol = factory.buildProtocol(self._address)
        except BaseException:
            sock.close()
            return fail()
        if protocol is None:
            sock.close()
            return fail(error.ConnectError(string="the factory built no protocol"))
        transport = UnixStreamConnection(sock, protocol, self.path, None, 0, self.reactor)
        protocol.makeConnection(transport)
        return succeed(protocol)
