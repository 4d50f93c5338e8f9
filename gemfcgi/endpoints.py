"""
``adopted:fd=N:family=INET6``: a listening socket inherited from a parent.

Worker processes serve on sockets their parent opened (so several share one
port, and privileges can be dropped before any request is read); this
endpoint string lets them name such a socket like any other Twisted
endpoint, so the service opens every listener the same way.
"""

from __future__ import annotations

import socket

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
        return AdoptedStreamServerEndpoint(reactor, int(fd), FAMILIES[family])


def family_name(address_family: int) -> str:
    return {value: name for name, value in FAMILIES.items()}[address_family]
