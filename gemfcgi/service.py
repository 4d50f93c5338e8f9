"""
The service tree: listeners with TLS, the current configuration, reload.

``makeService`` is the public entry point for twistd and for Twisted
programs that embed gemfcgi; it returns an ``IService`` that opens its
listeners when started.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet import endpoints
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from gemfcgi.certificates import KeyPair, load_key_pair
from gemfcgi.config import model
from gemfcgi.handlers.block import serve_block
from gemfcgi.handlers.static import serve_static
from gemfcgi.routing import Routes
from gemfcgi.server import GeminiFactory, Site, Timeouts
from gemfcgi.tls import ServerTLS

log = Logger()

LISTEN_BACKLOG = 1024


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def listen_descriptions(listen: model.Listen) -> list[str]:
    """
    Twisted server endpoint strings for a ``listen on`` line.

    ``*`` is one dual-stack IPv6 socket; a name is resolved now, as gmid
    does when it parses the file, into one socket per address.
    """
    port = listen.port if isinstance(listen.port, int) else socket.getservbyname(listen.port, "tcp")
    if listen.address == "*":
        return [f"tcp6:{port}:interface=\\:\\::backlog={LISTEN_BACKLOG}"]
    addresses: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(
        listen.address, port, type=socket.SOCK_STREAM
    ):
        entry = (family, sockaddr[0])
        if entry not in addresses:
            addresses.append(entry)
    return [
        f"{'tcp6' if family == socket.AF_INET6 else 'tcp'}:{port}"
        f":interface={_escape(address)}:backlog={LISTEN_BACKLOG}"
        for family, address in addresses
    ]


@dataclass
class Listener:
    """One socket to open, and the servers whose certificates it offers."""

    description: str
    servers: list[int]


def plan_listeners(config: model.Config, listen: Optional[Sequence[str]]) -> list[Listener]:
    """
    Which sockets to open. Explicit endpoint strings (the command line, or
    socket activation) serve every server; otherwise the ``listen on`` lines.
    """
    everyone = list(range(len(config.servers)))
    if listen:
        return [Listener(description, everyone) for description in listen]
    planned: dict[str, Listener] = {}
    for index, server in enumerate(config.servers):
        for item in server.listens or [model.Listen()]:
            for description in listen_descriptions(item):
                planned.setdefault(description, Listener(description, [])).servers.append(index)
    return list(planned.values())


def load_key_pairs(config: model.Config) -> list[KeyPair]:
    pairs = []
    for server in config.servers:
        if server.cert is None or server.key is None:
            raise ValueError(f"server {server.name!r} has no cert or key")
        pairs.append(load_key_pair(server.cert, server.key))
    return pairs


def build_site(config: model.Config, timeouts: Optional[Timeouts] = None) -> Site:
    routes = Routes(config)
    site = Site(routes=routes, timeouts=timeouts or Timeouts())
    site.handlers["static"] = partial(serve_static, mime=routes.mime)
    site.handlers["block"] = serve_block
    return site


class ListenerService(Service):
    """
    One listening socket. Unlike Twisted's endpoint service it keeps the
    port it got, so embedding code and tests can ask which one it is, and a
    socket that cannot be opened fails ``startService`` at once.
    """

    def __init__(self, description: str, endpoint: IStreamServerEndpoint, factory: Factory):
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: Optional[IListeningPort] = None

    def startService(self) -> None:
        super().startService()
        failures = []
        listening = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        where = f"[{host}]:{address.port}" if host and ":" in host else (
            f"{host}:{address.port}" if host else str(getattr(address, "name", address))
        )
        log.info("listening on {where} ({description})", where=where, description=self.description)

    def stopService(self) -> Deferred:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


class GemfcgiService(MultiService):
    """
    A gemfcgi server: its listeners and the configuration they serve.

    The factories share one ``GeminiFactory`` per listener whose ``site`` is
    replaced on reload; TLS creators are rebuilt with the new certificates.
    """

    def __init__(
        self,
        config: model.Config,
        listen: Optional[Sequence[str]] = None,
        timeouts: Optional[Timeouts] = None,
        reactor: Optional[IReactorCore] = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.timeouts = timeouts or Timeouts()
        self.site = build_site(config, self.timeouts)
        pairs = load_key_pairs(config)
        self.factories: list[GeminiFactory] = []
        self.listeners: list[ListenerService] = []
        for listener in plan_listeners(config, listen):
            factory = GeminiFactory(self.site, reactor)
            tls = self._tls_for(listener, pairs)
            endpoint = endpoints.serverFromString(reactor, listener.description)
            service = ListenerService(
                listener.description, endpoint, TLSMemoryBIOFactory(tls, False, factory)
            )
            service.setServiceParent(self)
            self.factories.append(factory)
            self.listeners.append(service)

    def _tls_for(self, listener: Listener, pairs: list[KeyPair]) -> ServerTLS:
        routes = self.site.routes
        index_of = {id(vhost): i for i, vhost in enumerate(routes.hosts)}

        def choose(host: str) -> Optional[int]:
            vhost = routes.select(host)
            return None if vhost is None else index_of[id(vhost)]

        return ServerTLS(
            default=pairs[listener.servers[0]],
            by_server=dict(enumerate(pairs)),
            choose=choose,
            protocols=self.config.protocols,
        )

    @property
    def ports(self) -> list[IListeningPort]:
        """The listening ports once started (for tests and embedding code)."""
        return [service.port for service in self.listeners if service.port is not None]


def makeService(
    config: model.Config,
    listen: Optional[Sequence[str]] = None,
    timeouts: Optional[Timeouts] = None,
    reactor: Optional[IReactorCore] = None,
) -> GemfcgiService:
    """
    The public entry point: a started-on-demand ``IService`` serving ``config``.

    ``listen`` overrides the configuration's ``listen on`` lines with Twisted
    server endpoint strings (without TLS: gemfcgi adds it).
    """
    return GemfcgiService(config, listen=listen, timeouts=timeouts, reactor=reactor)
