"""
Unix-socket connections to FastCGI applications, in the turn that asks.

``connect()`` to a listening unix socket finishes at once: it succeeds, fails
(no such file, refused), or reports a full backlog. So this endpoint
connects synchronously, puts the socket in a transport and hands it to the
protocol, which writes the request before the reactor runs again; Twisted's
``UNIXClientEndpoint`` would go through a connector, a Deferred chain and a
reactor turn for the same result.

A full backlog (EAGAIN) means the application is busy, not gone. The kernel
offers nothing to wait on (the socket never becomes writable for it), and
Twisted's connector fails at once; so the connect is tried again on a timer,
2 ms later at first, then twice as long each time up to 50 ms, until it
connects, fails otherwise, or the endpoint's timeout has passed. The
Deferred can be cancelled meanwhile, as the relay does at its own connect
timeout.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import termios
from typing import Any, Optional

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

    def unread_by_peer(self) -> int:
        """
        Bytes written that the other end has not read (``SIOCOUTQ``). Once
        the application's process is gone, this is what a connection still
        waiting in its listening socket's backlog holds, never accepted: an
        accepted one went with the process, and its bytes with it.
        """
        try:
            return struct.unpack("i", fcntl.ioctl(self.socket.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):  # closed meanwhile
            return 0

    # Whether the application read the whole request before it closed: a
    # unix socket closed with bytes unread resets its peer (Linux), one
    # closed with none read is an end of file. (What the kernel held for
    # it is gone by then: the send queue cannot say.)
    request_taken = False

    def doRead(self):
        # FastCGI passes no file descriptors: a plain recv(), without the
        # recvmsg() and ancillary-data handling of Twisted's unix transport.
        self._reading = True
        try:
            result = tcp.Connection.doRead(self)
        finally:
            self._reading = False
        if result is main.CONNECTION_DONE:
            self.request_taken = True  # the application's end of file
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


# Linux spells the socket's ioctl as the terminal's.
_SIOCOUTQ = termios.TIOCOUTQ

_ERRORS = {errno.ECONNREFUSED: error.ConnectionRefusedError}

# Seconds between connects to a full backlog: short first (a busy
# application accepts within milliseconds), never more than the cap.
FIRST_RETRY = 0.002
MAX_RETRY = 0.05


@implementer(IStreamClientEndpoint)
class UnixSocketEndpoint:
    """A unix socket path, connected synchronously; see the module's doc."""

    def __init__(self, reactor, path: str, timeout: float = 30, shown: Optional[str] = None) -> None:
        """``shown`` names the socket in messages where ``path`` says less (``/proc/self/fd/N/...``)."""
        self.reactor = reactor
        self.path = path
        self.shown = shown or path
        self.timeout = timeout
        self._address = UNIXAddress(path)

    def _slow(self) -> IStreamClientEndpoint:
        return endpoints.UNIXClientEndpoint(self.reactor, self.path, self.timeout)

    def connect(self, factory: IProtocolFactory) -> Deferred:
        if not isinstance(self.reactor, PosixReactorBase):
            # The transport below needs a reactor of file descriptors; any
            # other (a test's memory reactor) is asked the usual way.
            return self._slow().connect(factory)
        connected = self._connect_now(factory)
        if connected is not None:
            return connected
        return _BacklogWait(self, factory).deferred

    def _connect_now(self, factory: IProtocolFactory) -> Optional[Deferred]:
        """One synchronous connect: its outcome, or ``None`` if the backlog is full."""
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        except OSError as problem:  # out of descriptors: a failed connect, here too
            return fail(error.ConnectError(string=f"{problem.strerror}: {self.shown}"))
        try:
            sock.connect(self.path)
        except BlockingIOError:
            sock.close()
            return None
        except OSError as problem:
            sock.close()
            kind = _ERRORS.get(problem.errno, error.ConnectError)
            return fail(kind(string=f"{problem.strerror}: {self.shown}"))
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


class BacklogFull(error.TimeoutError):
    """A connect timeout that says why, without Twisted's generic words before it."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "the backlog stayed full"


class _BacklogWait:
    """Connects to a full backlog, tried again on a growing delay; see the module's doc."""

    def __init__(self, endpoint: UnixSocketEndpoint, factory: IProtocolFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        reactor = endpoint.reactor
        self.deadline = reactor.seconds() + endpoint.timeout
        self.delay = FIRST_RETRY
        self.deferred: Deferred = Deferred(self._cancel)
        self._call: Any = reactor.callLater(self.delay, self._retry)

    def _retry(self) -> None:
        self._call = None
        connected = self.endpoint._connect_now(self.factory)
        if connected is not None:
            connected.chainDeferred(self.deferred)
            return
        reactor = self.endpoint.reactor
        left = self.deadline - reactor.seconds()
        if left <= 0:
            self.deferred.errback(BacklogFull(string=(
                f"the backlog of {self.endpoint.shown} stayed full for "
                f"{self.endpoint.timeout:g} s"
            )))
            return
        self.delay = min(self.delay * 2, MAX_RETRY)
        self._call = reactor.callLater(min(self.delay, left), self._retry)

    def _cancel(self, deferred: Deferred) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
