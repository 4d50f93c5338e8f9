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

    def startListening(self) -> None:
        """
        Serve the socket as it came: it listens already, with the mode and
        backlog its owner gave it. Twisted's port would make it readable
        and writable by every user (0666) and listen again with a backlog
        of 50, whatever ``mode=`` and ``backlog=`` asked.
        """
        if self._preexistingSocket is None:
            super().startListening()
            return
        skt, self._preexistingSocket = self._preexistingSocket, None
        tcp._reservedFD.reserve()
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

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
    names = {value: name for name, value in FAMILIES.items()}
    return names.get(address_family, f"family {address_family}")


def inherited(reactor, endpoint: AdoptedStreamServerEndpoint) -> AdoptedStreamServerEndpoint:
    """
    ``endpoint`` (a socket passed by systemd or a parent) as gemfcgi adopts
    it: a unix socket keeps its path and stays usable for whoever passed
    it, through ``AdoptedUnixEndpoint``, as TCP ones do in Twisted.
    """
    if endpoint.addressFamily == socket.AF_UNIX and not isinstance(endpoint, AdoptedUnixEndpoint):
        return AdoptedUnixEndpoint(reactor, endpoint.fileno, socket.AF_UNIX)
    return endpoint


def inherited_socket_problem(fd: int, family: int) -> str | None:
    """
    Why the socket passed on ``fd`` cannot be listened on as ``family``;
    ``None`` if it can. Adopted as it is, a connected socket (what a systemd
    socket unit with ``Accept=yes`` passes) makes every accept fail at once,
    in a loop; one of another family gives every client a made-up address.
    """
    try:
        probe = socket.fromfd(fd, family, socket.SOCK_STREAM)  # a duplicate
    except OSError as error:
        return f"descriptor {fd}: {error.strerror}"
    with probe:
        if probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
            return (f"descriptor {fd} is not a stream socket (a systemd socket unit "
                    "gives one for ListenStream=)")
        # Linux says both; elsewhere, the socket is taken on trust.
        if hasattr(socket, "SO_DOMAIN"):
            actual = probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
            if actual != family:
                return (f"descriptor {fd} is a socket of domain {family_name(actual)}, not "
                        f"{family_name(family)}: write domain={family_name(actual)}")
        if hasattr(socket, "SO_ACCEPTCONN"):
            if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                try:
                    probe.getpeername()
                except OSError:
                    return f"descriptor {fd} is not a listening socket (no listen() on it)"
                return (f"descriptor {fd} is not a listening socket but a connection (a systemd "
                        "socket unit with Accept=yes passes each connection: gemfcgi needs "
                        "Accept=no)")
    return None
