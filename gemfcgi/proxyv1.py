"""
PROXY protocol listeners (``listen on ... proxy-v1``, ``--listen haproxy:...``).

Twisted's ``haproxy:`` wrapper reads the header, v1 or v2, but refuses the
shortest v1 header the specification allows, ``PROXY UNKNOWN\\r\\n`` (it
wants a space after ``UNKNOWN``), and drops such a connection without a
word. A balancer sends that header for a connection it cannot describe, so
here a thin layer below Twisted's spells it ``PROXY UNKNOWN \\r\\n``, which
Twisted reads as it should: the addresses of the connection itself.
"""

from __future__ import annotations

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.haproxy import proxyEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

BARE_UNKNOWN = b"PROXY UNKNOWN\r\n"
SPELLED_OUT = b"PROXY UNKNOWN \r\n"


class _BareUnknownProtocol(ProtocolWrapper):
    """Rewrites a bare ``PROXY UNKNOWN`` header, then steps aside."""

    def __init__(self, factory: WrappingFactory, wrapped) -> None:
        super().__init__(factory, wrapped)
        self._start = b""
        self._deciding = True

    def dataReceived(self, data: bytes) -> None:
        if not self._deciding:
            self.wrappedProtocol.dataReceived(data)
            return
        start = self._start + data
        if len(start) < len(BARE_UNKNOWN) and BARE_UNKNOWN.startswith(start):
            self._start = start  # maybe the bare header, still arriving
            return
        self._deciding = False
        self._start = b""
        if start.startswith(BARE_UNKNOWN):
            start = SPELLED_OUT + start[len(BARE_UNKNOWN):]
        self.wrappedProtocol.dataReceived(start)


class _BareUnknownFactory(WrappingFactory):
    protocol = _BareUnknownProtocol
    noisy = False


@implementer(IStreamServerEndpoint)
class _BareUnknownEndpoint:
    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        self._wrapped = wrapped

    def listen(self, factory):
        return self._wrapped.listen(_BareUnknownFactory(factory))


def proxy_header_endpoint(wrapped: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """``wrapped``, its connections read a PROXY header (v1 or v2) before anything else."""
    return proxyEndpoint(_BareUnknownEndpoint(wrapped))
