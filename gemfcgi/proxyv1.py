"""
PROXY protocol listeners (``listen on ... proxy-v1``, ``--listen haproxy:...``).

Twisted's ``haproxy:`` wrapper reads the header, v1 or v2, but takes a v1
header on trust: ports that are not numbers raise inside it (an unhandled
error in the log), addresses are not checked at all (``999.1.1.1`` would be
logged and handed to FastCGI applications as the client), and the shortest
header the specification allows, ``PROXY UNKNOWN\\r\\n``, is refused without
a word. So a thin layer below Twisted's reads a v1 header first: a valid
one goes on (the bare ``UNKNOWN`` spelt ``PROXY UNKNOWN \\r\\n``, which
Twisted reads as the connection itself). A v2 header (binary, its addresses
fixed in size) goes to Twisted's reader as it came. Anything else, a TLS
handshake from a client that sends no header included, closes the
connection with one log line.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.haproxy import proxyEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from gemfcgi.textlog import LogLimiter, printable

log = Logger()

# Refused headers a listener says in a window; the rest are counted, in a
# line of their own when the window ends: anyone who reaches a PROXY
# listener can send garbage on every connection.
REFUSALS_SAID = 10
REFUSALS_WINDOW = 10.0

V1_START = b"PROXY "
MAX_V1_HEADER = 107  # CRLF included, as the specification bounds it
BARE_UNKNOWN = b"PROXY UNKNOWN\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
SPELLED_OUT = b"PROXY UNKNOWN \r\n"
_ADDRESSES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}
PREFIX = "haproxy:"


def split_proxied(description: str) -> tuple[bool, str]:
    """
    Whether a listener's endpoint string takes PROXY headers, and the endpoint
    under it. The prefix in any case, as Twisted looks endpoint types up.
    """
    if description[: len(PREFIX)].lower() == PREFIX:
        return True, description[len(PREFIX):]
    return False, description


def v1_problem(line: bytes) -> str | None:
    """What is wrong with a v1 header line (CRLF excluded); ``None`` if nothing."""
    words = line.split(b" ")
    if words[:2] == [b"PROXY", b"UNKNOWN"]:
        return None  # whatever follows is to be ignored
    if len(words) != 6 or words[1] not in _ADDRESSES:
        return "not PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT, nor PROXY UNKNOWN"
    family = _ADDRESSES[words[1]]
    for address in words[2:4]:
        try:
            if b"%" in address:
                # A zone names an interface of the balancer's, not an address.
                raise ValueError(address)
            family(address.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return f"invalid {words[1].decode()} address"
    for port in words[4:6]:
        if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            return "invalid port"
    return None


def v1_header(source, destination) -> bytes:
    """
    The v1 line that tells an upstream who the client is (a ``proxy`` block's
    ``proxy-v1``): ``PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT``, or
    ``PROXY UNKNOWN`` for what has no address (a client of a unix socket).
    Both addresses of a line are of one family: where the client's and the
    upstream's differ, the IPv4 one is written as its IPv4-mapped IPv6
    address (an IPv6 client relayed over IPv4 keeps its address that way,
    where ``UNKNOWN`` would have made the proxy the client).
    """
    try:
        client = ipaddress.ip_address(getattr(source, "host", None))
        upstream = ipaddress.ip_address(getattr(destination, "host", None))
    except ValueError:
        return BARE_UNKNOWN
    shown, to = str(client), str(upstream)
    if client.version != upstream.version:
        shown = shown if client.version == 6 else f"::ffff:{client}"
        to = to if upstream.version == 6 else f"::ffff:{upstream}"
    family = "TCP4" if client.version == upstream.version == 4 else "TCP6"
    return f"PROXY {family} {shown} {to} {source.port} {destination.port}\r\n".encode("ascii")


@implementer(IHalfCloseableProtocol)
class _V1HeaderProtocol(ProtocolWrapper):
    """
    Checks a v1 header before Twisted's reader sees it, then steps aside.

    Being the protocol on the socket, it is also where TCP's half-close
    arrives: it goes down to the first layer below that takes one (the TLS
    layer), past Twisted's PROXY reader, which takes none.
    """

    def readConnectionLost(self) -> None:
        below = None if self._deciding else self.wrappedProtocol
        # By class: a wrapper also provides whatever its transport does
        # (ProtocolWrapper.makeConnection), this very interface included.
        while below is not None and not IHalfCloseableProtocol.implementedBy(type(below)):
            below = getattr(below, "wrappedProtocol", None)
        if below is None:
            self.transport.loseConnection()
        else:
            below.readConnectionLost()

    def writeConnectionLost(self) -> None:
        pass

    def __init__(self, factory: WrappingFactory, wrapped) -> None:
        super().__init__(factory, wrapped)
        self._start = b""
        self._deciding = True

    def dataReceived(self, data: bytes) -> None:
        if not self._deciding:
            self.wrappedProtocol.dataReceived(data)
            return
        start = self._start + data
        if not start.startswith(V1_START) and not V1_START.startswith(start):
            if start.startswith(V2_SIGNATURE):
                self._pass_on(start)  # v2: Twisted's reader takes it
            elif V2_SIGNATURE.startswith(start):
                self._start = start  # perhaps v2, not yet known
            elif start[:1] == b"\x16":
                self._refuse(start[:16], "no PROXY header but a TLS handshake "
                             "(the client sends none: is this listener's proxy-v1 meant?)")
            else:
                self._refuse(start[:MAX_V1_HEADER], "not a PROXY header")
            return
        end = start.find(b"\r\n")
        if end < 0:
            if len(start) < MAX_V1_HEADER:
                self._start = start  # more of the header is on its way
                return
            self._refuse(start[:MAX_V1_HEADER], f"no CRLF within {MAX_V1_HEADER} bytes")
            return
        problem = v1_problem(start[:end])
        if problem is not None:
            self._refuse(start[:end], problem)
            return
        if start.startswith(BARE_UNKNOWN):
            start = SPELLED_OUT + start[len(BARE_UNKNOWN):]
        self._pass_on(start)

    def _pass_on(self, data: bytes) -> None:
        self._deciding = False
        self._start = b""
        self.wrappedProtocol.dataReceived(data)

    def _refuse(self, header: bytes, problem: str) -> None:
        self._deciding = False
        self._start = b""
        self.transport.loseConnection()
        if not self.factory.refusals.allow()[0]:
            return
        peer = self.transport.getPeer()
        log.warn(
            "{peer}: malformed PROXY header {header}: {problem}; connection closed",
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', 0)}",
            header=printable(header.decode("latin-1")),
            problem=problem,
        )


class _V1HeaderFactory(WrappingFactory):
    protocol = _V1HeaderProtocol
    noisy = False

    def __init__(self, wrappedFactory, clock: Optional[IReactorTime] = None) -> None:
        super().__init__(wrappedFactory)
        if clock is None:
            from twisted.internet import reactor as clock
        self.refusals = LogLimiter(clock, limit=REFUSALS_SAID, window=REFUSALS_WINDOW,
                                   on_dropped=self._say_dropped)

    def buildProtocol(self, addr):
        wrapped = self.wrappedFactory.buildProtocol(addr)
        # The TLS factory gives none past its hard limit, to close the
        # socket at once; Twisted's PROXY wrapper took none all the same,
        # and each such connection ended in tracebacks at its header.
        if wrapped is None or getattr(wrapped, "wrappedProtocol", wrapped) is None:
            return None
        return self.protocol(self, wrapped)

    def doStop(self) -> None:
        # The listener closes (a stop, or a retiring worker's): what the
        # window dropped is said now, its end may never come.
        self.refusals.say_dropped_now()
        super().doStop()

    def _say_dropped(self, count: int) -> None:
        log.warn("{what}", what=self.refusals.summary(count, "more malformed PROXY headers"))


@implementer(IStreamServerEndpoint)
class _V1HeaderEndpoint:
    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        self._wrapped = wrapped

    def listen(self, factory):
        return self._wrapped.listen(_V1HeaderFactory(factory))


def proxy_header_endpoint(wrapped: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """``wrapped``, its connections read a PROXY header (v1 or v2) before anything else."""
    return proxyEndpoint(_V1HeaderEndpoint(wrapped))
