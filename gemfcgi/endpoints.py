"""
``adopted:fd=N:family=INET6``: a listening socket inherited from a parent.

Worker processes serve on sockets their parent opened (so several share one
port, and privileges can be dropped before any request is read); this
endpoint string lets them name such a socket like any other Twisted
endpoint, so the service opens every listener the same way.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp, unix
from twisted.internet.defer import fail, succeed
from twisted.internet.error import AlreadyListened
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}


@implementer(IPlugin, IStreamServerEndpointStringParser)
class AdoptedSocketParser:
    prefix = "adopted"

    def parseStreamServer(self, reactor, fd: str, family: str = "INET6", **unused):
        if family not in FAMILIES:
            raise ValueError(f"adopted: family must be one of {', '.join(FAMILIES)}")
        if family == "UNIX":
            return AdoptedUnixEndpoint(reactor, int(fd), socket.AF_UNIX)
        return AdoptedStreamServerEndpoint(reactor, int(fd), FAMILIES[family])


class _AdoptedUnixPort(unix.Port):
    """
    A unix socket shared with the process that bound it: closing this copy
    neither removes its path nor shuts the socket down. Twisted's adopted
    unix port does both (its TCP one neither), so a worker generation that
    stops, at every reload, would take the socket away from the next one
    and from clients.
    """

    _shouldShutdown = False

    def connectionLost(self, reason) -> None:
        tcp.Port.connectionLost(self, reason)


class AdoptedUnixEndpoint(AdoptedStreamServerEndpoint):
    """``AdoptedStreamServerEndpoint`` for a unix socket, with ``_AdoptedUnixPort``."""

    def listen(self, factory):
        if self._used:
            return fail(AlreadyListened())
        self._used = True
        try:
            self._setNonBlocking(self.fileno)
            port = _AdoptedUnixPort._fromListeningDescriptor(self.reactor, self.fileno, factory)
            port.startListening()
            self._close(self.fileno)  # the port holds a duplicate
        except BaseException:
            return fail()
        return succeed(port)


def family_name(address_family: int) -> str:
    return {value: name for name, value in FAMILIES.items()}[address_family]
