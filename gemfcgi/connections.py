"""
The connections a server holds, so that a stop can wait for them.

A graceful stop closes the listeners first, then waits here until every
connection has finished (or the drain timeout passes and the rest are
aborted): requests in flight are never cut short by a stop or a reload.
"""

from __future__ import annotations

import fcntl
import resource
import socket
import struct
import termios
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from gemfcgi.memorytrim import MemoryReturner
from gemfcgi.socketbuffer import socket_transport as _socket_of
from gemfcgi.socketbuffer import unsent_in_process as _buffered
from gemfcgi.textlog import LogLimiter, plural
from gemfcgi.tls import HalfClosingTLSProtocol

log = Logger()

# Seconds a drain waits for aborted connections to be lost (they are, a
# reactor turn after the abort) before it ends anyway.
ABORT_GRACE = 1.0
# Seconds between two lines about connections closed at the hard limit.
REFUSALS_EVERY = 10.0


class ConnectionTracker:
    def __init__(self) -> None:
        self.active: set[Any] = set()
        # Told of each connection that ends (the service's retired access logs).
        self.on_removed: Optional[Callable[[Any], None]] = None
        self._waiters: list[Deferred] = []
        self._refusals: Optional[LogLimiter] = None
        self._last_said = float("-inf")
        # Set while the server stops: how long a client that has sent
        # nothing may still take to begin its request.
        self.request_grace: Optional[float] = None
        # Told that a connection ended, to give its memory back soon.
        self.memory: Optional[MemoryReturner] = None

    def refuse(self, limit: int, clock: IReactorTime) -> None:
        """
        A connection beyond the hard limit is closed before any TLS work:
        the first of a spell is said at once, the rest in one line per
        ``REFUSALS_EVERY`` seconds while it lasts, so that shedding load is
        seen without a line per connection.
        """
        if self._refusals is None:
            self._refusals = LogLimiter(
                clock, limit=1, window=REFUSALS_EVERY, on_dropped=lambda count: self._say_refusals(count, limit)
            )
        if not self._refusals.allow()[0]:
            return
        if clock.seconds() - self._last_said < REFUSALS_EVERY:
            # The spell goes on past a window's summary: this one goes in
            # the next summary, not in a line of its own the same second.
            self._refusals.drop(1)
            return
        self._say_refusals(1, limit)

    def _say_refusals(self, count: int, limit: int) -> None:
        if self._refusals is not None:
            self._last_said = self._refusals.clock.seconds()
        log.warn(
            "{count} {connections} closed before TLS: {held} held, the hard limit is {limit} "
            "(--max-connections and the few let in to be told 41)",
            count=count,
            connections=plural(count, "connection"),
            held=len(self.active),
            limit=limit,
        )

    def __len__(self) -> int:
        return len(self.active)

    def add(self, connection: Any) -> None:
        self.active.add(connection)

    def remove(self, connection: Any) -> None:
        self.active.discard(connection)
        if self.on_removed is not None:
            self.on_removed(connection)
        if self.memory is not None:
            self.memory.soon()
        if not self.active:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(True)

    def drain(
        self,
        clock: IReactorTime,
        timeout: Optional[float],
        cut: Optional[Callable[[Any], bool]] = None,
    ) -> Deferred:
        """
        Fires with ``True`` once no connection is left, or ``False`` after
        ``timeout`` seconds, when the stragglers are closed (each passed
        to ``cut`` first, to say so; one for which it returns ``True`` has
        been answered and ends by itself) and gone: with a FIN behind what
        the kernel holds for them, or aborted where there is no socket to
        close. With no ``timeout``, it waits for them however long they take.

        An aborted connection is lost a reactor turn later, and what it
        held (a FastCGI request) is let go only then: firing after that,
        not at the abort, means whatever waits next does not find those
        requests still pending.
        """
        if not self.active:
            return succeed(True)
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        cut_short: list[bool] = []
        grace: list[Any] = []

        def release() -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.callback(False)

        def give_up() -> None:
            if waiter not in self._waiters:
                return
            cut_short.append(True)
            for connection in list(self.active):
                if cut is not None and cut(connection):
                    continue
                # A FIN, not a reset: what the kernel holds for the client
                # still reaches it (without close_notify, it can tell the
                # reply is not whole), as the process ends.
                if not close_in_order(connection.transport):
                    connection.transport.abortConnection()
            if waiter in self._waiters:
                # Only if a transport never reports its loss.
                grace.append(clock.callLater(ABORT_GRACE, release))

        timers = [] if timeout is None else [clock.callLater(timeout, give_up)]

        def done(result: bool) -> bool:
            for call in [*timers, *grace]:
                if call.active():
                    call.cancel()
            return result and not cut_short

        return waiter.addBoth(done)


def default_max_connections() -> int:
    """
    As many connections as the descriptor limit allows: each may hold a
    file or a FastCGI socket besides its own, those beyond it up to the hard
    limit (``hard_limit``) hold one while they are told ``41``, and some
    descriptors are kept for listeners, logs and spawned programs' pipes
    (64, or a quarter of a small limit). So ``2 * N + N / 8 + 8`` must fit
    in the limit less those: ``N`` is 8/17 of what is left.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    kept = min(64, soft // 4)
    return max(1, min(20000, (soft - kept - 8) * 8 // 17))


def hard_limit(max_connections: int) -> int:
    """Beyond the soft limit a few more are let in to be told ``41``."""
    return max_connections + max_connections // 8 + 8


class LimitedTLSFactory(TLSMemoryBIOFactory):
    """
    TLS for each connection, unless the hard limit is reached: then
    ``None`` closes the socket before any TLS work is done. Checking here,
    in the TLS factory itself, costs no extra protocol layer per connection.
    """

    noisy = False
    protocol = HalfClosingTLSProtocol

    def __init__(self, creator, wrapped, connections: ConnectionTracker, limit: int) -> None:
        super().__init__(creator, False, wrapped)
        self.connections = connections
        self.limit = limit

    def buildProtocol(self, addr):
        if len(self.connections) >= self.limit:
            self.connections.refuse(self.limit, self.wrappedFactory.clock)
            return None
        return super().buildProtocol(addr)


def socket_peer(transport: Any) -> Any:
    """The address of the socket's other end, under any PROXY header's account of the client."""
    connection = _socket_of(transport)
    return None if connection is None else connection.getPeer()


def socket_host(transport: Any) -> Any:
    """The address of the socket's own end, whatever a PROXY header says of the connection."""
    connection = _socket_of(transport)
    return None if connection is None else connection.getHost()


def unsent_bytes(transport: Any) -> Optional[int]:
    """
    Bytes written but not yet acknowledged by the peer: Twisted's buffer
    plus the kernel's send queue. ``None`` when it cannot be known (a
    transport that is not a socket). Lets the linger tell a client that is
    still reading the end of a reply from one that never closes.
    """
    tcp = _socket_of(transport)
    queued = _kernel_queue(tcp)
    return None if queued is None else _buffered(tcp) + queued


def kernel_queued_bytes(transport: Any) -> int:
    """
    What a reset destroys of what the kernel holds for the peer: TCP's
    send queue, sent or not, until acknowledged (0 if unknown). A unix
    socket's peer still reads what was queued for it after the close.
    """
    tcp = _socket_of(transport)
    if tcp is None or getattr(tcp.socket, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return 0
    return _kernel_queue(tcp) or 0


# Linux's state of a TCP socket that has no connection left (tcp_states.h):
# while this process still holds it, the peer reset it.
_TCP_CLOSE = 7
_TCP_INFO: Optional[int] = getattr(socket, "TCP_INFO", None)


def reset_by_peer(transport: Any) -> bool:
    """
    Whether the peer has reset the connection. The kernel's send queue then
    still counts what the peer had not acknowledged, which will never go:
    a client that closed before a late reply answers it with a reset, and
    by the queue alone it would pass for one that reads nothing.
    """
    tcp = _socket_of(transport)
    if tcp is None or _TCP_INFO is None:
        return False
    if getattr(tcp.socket, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return tcp.socket.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_CLOSE
    except (OSError, ValueError, IndexError):
        return False


def _kernel_queue(tcp: Any) -> Optional[int]:
    """The kernel's send queue of ``tcp`` (TIOCOUTQ), or ``None`` where there is none to ask."""
    if tcp is None:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(tcp.socket.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, ValueError, AttributeError):
        return None


def held_bytes(transport: Any) -> int:
    """
    Bytes written that never left the process: what Twisted's buffer still
    holds when the connection ends (reset, or cut by a timeout). The
    access line's byte count leaves them out: they never went out.

    Asked once the connection is lost, when Twisted has let go of the
    socket but not of the buffer: the transport holding one is looked for
    under TLS and PROXY protocol wrappers.
    """
    while transport is not None and not hasattr(transport, "dataBuffer"):
        transport = getattr(transport, "transport", None)
    return 0 if transport is None else _buffered(transport)


def close_once_sent(transport: Any) -> bool:
    """
    ``close_in_order`` if every byte written has left Twisted's buffer for
    the kernel, which delivers it before the FIN; False (and nothing done)
    otherwise.
    """
    tcp = _socket_of(transport)
    if tcp is None or _buffered(tcp):
        return False
    return close_in_order(transport)


def close_in_order(transport: Any) -> bool:
    """
    Close the connection's socket now, with a FIN, as a normal close does:
    not with the reset of ``abortConnection``, which can destroy what the
    peer's kernel holds for it unread. False when there is no socket to
    close (a transport that is not one).
    """
    tcp = _socket_of(transport)
    if tcp is None or not getattr(tcp, "connected", False):
        return False
    _discard_unread(tcp.socket)
    _drain_after_close(tcp)
    tcp.connectionLost(Failure(ConnectionDone()))
    return True


# Seconds a socket closed in order goes on being read (and what comes
# dropped), for the peer to finish reading what it was sent; and how many
# at most, beyond which they are closed at once (each holds a descriptor
# the connection limits no longer count).
DRAIN_AFTER_CLOSE = 10.0
MAX_DRAINING = 256
_draining: set = set()


def _drain_after_close(tcp: Any) -> None:
    """
    Send the FIN now, and keep the socket open, reading and dropping what
    the peer still sends, until it closes too or ``DRAIN_AFTER_CLOSE``
    passes. A socket closed at once answers what comes later (a client's
    close_notify sent after a cut reply began) with a reset, and a reset
    makes the client's kernel drop what it held for the client unread:
    3 MB of a FastCGI reply cut short, in a test.
    """
    reactor = getattr(tcp, "reactor", None)
    if reactor is None or len(_draining) >= MAX_DRAINING:
        return
    try:
        kept = tcp.socket.dup()
        kept.setblocking(False)
        tcp.socket.shutdown(socket.SHUT_WR)
    except OSError:
        return
    _ClosingSocket(kept, reactor)


@implementer(IReadDescriptor)
class _ClosingSocket:
    """A socket whose side has ended: read to its peer's end, then closed."""

    def __init__(self, sock: socket.socket, reactor: Any) -> None:
        self.sock = sock
        self.reactor = reactor
        self._timer = reactor.callLater(DRAIN_AFTER_CLOSE, self.close)
        reactor.addReader(self)
        _draining.add(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "closing"

    def doRead(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            return None
        except OSError:
            pass
        self.close()  # the peer's end (or its reset)
        return None

    def connectionLost(self, reason: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        self.reactor.removeReader(self)
        if self._timer.active():
            self._timer.cancel()
        _draining.discard(self)
        self.sock.close()


# How much of what the peer sent a close reads and drops first: 4 MiB.
_DISCARD_READS = 64


def _discard_unread(sock: Any) -> None:
    """
    Read and drop what the peer sent that was never read (a KeyUpdate or a
    close_notify that came while reading waited for a write, or bytes a
    client sent after its request): a socket closed with unread bytes
    ends in a reset, and the kernel drops what it still held for the peer.
    """
    for _ in range(_DISCARD_READS):
        try:
            if not sock.recv(65536):
                return
        except OSError:
            return  # nothing more waits (EAGAIN), or the connection is gone
