"""
The service tree: listeners with TLS, the current configuration, reload.

``makeService`` is the public entry point for twistd and for Twisted
programs that embed gemfcgi; it returns an ``IService`` that opens its
listeners when started.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import select
import signal
import socket
import weakref
from dataclasses import dataclass, replace
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Collection, Iterator, Mapping, Optional, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints, tcp
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.interfaces import IListeningPort, IReactorCore, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure

from gemfcgi.accesslog import AccessLogWriter
from gemfcgi.certificates import CertificateError, KeyPair, load_key_pair
from gemfcgi.connections import ConnectionTracker, LimitedTLSFactory, hard_limit
from gemfcgi.config import model
from gemfcgi.config.errors import ConfigError
from gemfcgi.config.paths import anchor_paths
from gemfcgi.endpoints import inherited, inherited_socket_problem
from gemfcgi.fastcgi.client import FastCGITimeouts
from gemfcgi.gemini.hosts import ipv4_unmapped
from gemfcgi.handlers.block import serve_block
from gemfcgi.handlers.fastcgi import install_fastcgi, reconfigure_fastcgi, serve_without_backends
from gemfcgi.handlers.proxy import build_upstreams, serve_proxy
from gemfcgi.handlers.clientca import authority_files, load_authorities, require_client_ca
from gemfcgi.handlers.static import forget_roots, serve_static
from gemfcgi.memorytrim import MemoryReturner, libc_malloc_trim
from gemfcgi.privileges import Identity, host_path
from gemfcgi.pagecache import PageCache
from gemfcgi.proxyv1 import PREFIX as HAPROXY_PREFIX, proxy_header_endpoint, split_proxied
from gemfcgi.routing import Routes
from gemfcgi.server import GeminiFactory, Site, Timeouts
from gemfcgi.textlog import plural, printable
from gemfcgi.tls import CertificateStore, ServerTLS
from gemfcgi.upstream import UpstreamTimeouts
from gemfcgi.tlsport import prepare_listener

log = Logger()

LISTEN_BACKLOG = 1024
# Rounds of accepts a closing listener gives its queue (see accept_waiting):
# Twisted's port takes up to 20 more per round than the round before.
ACCEPT_ROUNDS_AT_CLOSE = 64
# Session ticket keys are replaced this often (seconds); OpenSSL's tickets
# live two hours, so a client resumes within a period and rarely across one.
TICKET_KEY_LIFETIME = 12 * 3600.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class StartError(ValueError):
    """What keeps a service from starting (or a reload from applying); nothing it opened stays open."""


class ListenError(StartError):
    """
    A listen endpoint string that cannot be used, with what to do about it;
    ``origin`` is the ``listen on`` line that asked for it, if one did.
    """

    origin: Optional[model.Origin] = None


class AccessLogError(StartError):
    """The access file cannot be opened."""


def listen_port(listen: model.Listen) -> int:
    """A ``listen on`` port as a number (gmid also takes service names)."""
    if isinstance(listen.port, int):
        return listen.port
    try:
        return socket.getservbyname(listen.port, "tcp")
    except OSError:
        raise ListenError(f'unknown service "{listen.port}" (not a port number, '
                          "nor a name in /etc/services)") from None


@dataclass(frozen=True)
class _Socket:
    """One socket a ``listen on`` line asks for."""

    proxied: bool
    family: int
    address: str
    port: int

    @property
    def description(self) -> str:
        prefix = HAPROXY_PREFIX if self.proxied else ""
        kind = "tcp6" if self.family == socket.AF_INET6 else "tcp"
        return (f"{prefix}{kind}:{self.port}:interface={_escape(self.address)}"
                f":backlog={LISTEN_BACKLOG}")

    def covered_by(self) -> list["_Socket"]:
        """
        The wildcard sockets that would take this one's connections, and
        whose bind makes this one's fail (Linux refuses a specific address
        on a port a wildcard holds): ``::``, which is dual-stack, then, for
        IPv4, ``0.0.0.0``.
        """
        wildcards = [_Socket(self.proxied, socket.AF_INET6, "::", self.port)]
        if self.family == socket.AF_INET:
            wildcards.append(_Socket(self.proxied, socket.AF_INET, "0.0.0.0", self.port))
        return [wildcard for wildcard in wildcards if wildcard != self]


def proxy_v1_disagreements(config: model.Config) -> list[tuple[model.Listen, model.Listen, str]]:
    """
    ``listen on`` lines that need one socket, or a socket and the wildcard
    that takes its connections, with and without ``proxy-v1``: each later
    line with the earlier one and the socket, once per later line.
    """
    found: list[tuple[model.Listen, model.Listen, str]] = []
    # By (family, address, port): the first socket's proxy-v1, line and
    # description, and the same for the specific sockets a wildcard would
    # take (where the socket taking both is the one being read).
    owned: dict[tuple, tuple[bool, model.Listen, str]] = {}
    under: dict[tuple, tuple[bool, model.Listen, None]] = {}
    for server in config.servers:
        for listen in server.listens:
            try:
                entries = _sockets(listen)
            except ListenError:
                continue  # said with its line by the check
            said = False
            for entry in entries:
                key = (entry.family, entry.address, entry.port)
                wildcards = [(w.family, w.address, w.port) for w in entry.covered_by()]
                candidates = [owned.get(key), under.get(key), *(owned.get(w) for w in wildcards)]
                clash = next((c for c in candidates if c is not None and c[0] != entry.proxied), None)
                if clash is not None and not said:
                    # An earlier wildcard's socket takes this address's connections.
                    found.append((listen, clash[1], clash[2] or entry.description))
                    said = True
                owned.setdefault(key, (entry.proxied, listen, entry.description))
                for wildcard in wildcards:
                    under.setdefault(wildcard, (entry.proxied, listen, None))
    return found


def _sockets(listen: model.Listen) -> list[_Socket]:
    port = listen_port(listen)
    if listen.address == "*":
        return [_Socket(listen.proxy_v1, socket.AF_INET6, "::", port)]
    try:
        found = socket.getaddrinfo(listen.address, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as problem:  # UnicodeError: a name IDNA cannot encode
        reason = getattr(problem, "strerror", None) or str(problem)
        raise ListenError(f'cannot resolve "{listen.address}": {reason}') from None
    sockets: list[_Socket] = []
    for family, _, _, _, sockaddr in found:
        entry = _Socket(listen.proxy_v1, family, sockaddr[0], port)
        if entry not in sockets:
            sockets.append(entry)
    return sockets


def listen_descriptions(listen: model.Listen) -> list[str]:
    """
    Twisted server endpoint strings for a ``listen on`` line.

    ``*`` is one dual-stack IPv6 socket; a name is resolved now, as gmid
    does when it parses the file, into one socket per address. A
    ``proxy-v1`` listener reads the PROXY header with Twisted's ``haproxy:``
    wrapper, below TLS, so the client's real address is what the server sees.
    Raises ``ListenError`` for a service or a name that does not resolve.
    """
    return [entry.description for entry in _sockets(listen)]


def listen_failed(
    description: str, failure: Failure, origin: Optional[model.Origin] = None
) -> ListenError:
    """
    Why ``description`` (asked for at ``origin``) could not be listened on,
    in one line ("Address already in use").
    """
    # A unix socket's error comes from its lock file, whose name says nothing to the user.
    cause = getattr(failure.value, "socketError", None) or failure.value
    reason = getattr(cause, "strerror", None) or failure.getErrorMessage()
    problem = ListenError(f"{as_written(description)}: {reason}")
    problem.origin = origin
    return problem


def proxy_v1_switched(description: str, open_now: Collection[str]) -> bool:
    """
    Whether ``description`` is a socket already open with the other
    ``proxy-v1`` setting: the new one cannot be opened beside it, and a
    reload cannot close the old one first.
    """
    proxied, bare = split_proxied(description)
    twin = bare if proxied else HAPROXY_PREFIX + description
    return twin in open_now


def opening_failed(problem: ListenError, listener: "Listener", open_now: Collection[str]) -> ListenError:
    """
    ``problem`` at the line that asked for the socket, saying a restart is
    needed if a ``proxy-v1`` switch caused it.
    """
    if proxy_v1_switched(listener.description, open_now):
        problem = ListenError(f"{problem} (switching proxy-v1 on a listener's address and port "
                              "needs a restart: a reload opens its new sockets before it closes "
                              "the old ones)")
    elif wildcard_switched(listener.description, open_now):
        problem = ListenError(f"{problem} (moving a port between * and a specific address needs "
                              "a restart: a reload opens its new sockets before it closes the "
                              "old ones)")
    problem.origin = listener.origin
    return problem


_WILDCARDS = ("::", "0.0.0.0", "")


def wildcard_switched(description: str, open_now: Collection[str]) -> bool:
    """
    Whether ``description`` and a socket already open share a TCP port,
    one of them on every address and the other on one: Linux refuses the
    second bind, and a reload cannot close the old one first.
    """
    port, interface = _port_and_interface(description)
    if port is None:
        return False
    for other in open_now:
        other_port, other_interface = _port_and_interface(other)
        if other_port == port and (interface in _WILDCARDS) != (other_interface in _WILDCARDS):
            return True
    return False


def _port_and_interface(description: str) -> tuple[Optional[str], str]:
    """A ``tcp:``/``tcp6:`` endpoint string's port and interface (``None``: another kind)."""
    fields = endpoint_fields(split_proxied(description)[1])
    if fields[0].lower() not in ("tcp", "tcp6") or len(fields) < 2:
        return None, ""
    named = dict(field.split("=", 1) for field in fields[2:] if "=" in field)
    return fields[1], named.get("interface", "")


def with_backlog(description: str) -> str:
    """
    ``description`` with the backlog ``listen on`` sockets get, if it is a
    ``tcp:``, ``tcp6:`` or ``unix:`` one that names none: Twisted's default
    of 50 overflows under a burst of new connections (64 at once).
    """
    _, inner = split_proxied(description)
    fields = endpoint_fields(inner)
    if fields[0].lower() not in ("tcp", "tcp6", "unix") or any(
        field.startswith("backlog=") for field in fields[1:]
    ):
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def as_written(description: str) -> str:
    """``description`` as said in an error: without the backlog ``with_backlog`` adds."""
    return description.removesuffix(f":backlog={LISTEN_BACKLOG}")


def endpoint_fields(description: str) -> list[str]:
    """
    An endpoint string's fields as Twisted reads them: split at each colon
    that no backslash escapes (``unix:/run/a\\:b`` is one path, and
    ``unix:/run/a\\\\:backlog=5`` a path ending in a backslash, then a backlog).
    """
    fields, field, escaped = [], [], False
    for character in description:
        if escaped:
            field.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append("".join(field))
            field = []
        else:
            field.append(character)
    fields.append("".join(field))
    return fields


def server_endpoint(reactor, description: str) -> IStreamServerEndpoint:
    """
    ``serverFromString`` with errors a user can act on; a ``haproxy:``
    listener also takes the bare ``PROXY UNKNOWN`` header (``gemfcgi.proxyv1``).
    """
    proxied, inner_description = split_proxied(description)
    shown = as_written(description)
    # Endpoint types in any case: Twisted's own table has them in lower
    # case only ("TCP:1965" was an unknown type 'tcp').
    kind = inner_description.split(":", 1)[0].lower()
    inner_description = kind + inner_description[len(kind):]
    if kind in ("ssl", "tls"):
        # Its TLS would sit where gemfcgi's own goes, and offer no
        # certificate per server.
        raise ListenError(
            f"{shown}: gemfcgi does TLS itself, with each server's certificate: "
            "listen on a tcp: endpoint (same port and options, without the certificate ones)"
        )
    if kind == "stdio":
        raise ListenError(f"{shown}: not a listening socket: listen on a tcp: or unix: endpoint")
    try:
        inner = endpoints.serverFromString(reactor, inner_description)
    except (IndexError, KeyError) as error:
        if kind == "systemd":
            raise ListenError(f"{shown}: no such socket was passed by systemd "
                              f"({_what_systemd_passed()})") from error
        raise ListenError(f"{shown}: {error!r}") from error
    except AttributeError as error:
        # systemd:domain=X looks X up as socket.AF_X.
        raise ListenError(f"{shown}: unknown domain (INET, INET6 or UNIX)") from error
    except TypeError as error:
        # An option the endpoint does not take, passed on as a keyword.
        unknown = re.search(r"unexpected keyword argument '([^']*)'", str(error))
        what = f"unknown option {unknown.group(1)!r}" if unknown else str(error)
        if "multiple values for argument" in what:
            # interface=::1 read as more fields; a shell takes \: for ':'.
            what = ("a colon inside an option's value is written \\: (interface=\\:\\:1), and "
                    "the string quoted in a shell ('tcp6:1965:interface=\\:\\:1')")
        raise ListenError(f"{shown}: {what}") from error
    except ValueError as error:
        # int() of a port or an option: "invalid literal for int() with base 10: 'abc'"
        # (base 8 for a mode).
        number = re.fullmatch(r"invalid literal for int\(\) with base \d+: (.*)", str(error))
        what = f"{number.group(1)} is not a number" if number else str(error)
        raise ListenError(f"{shown}: {what}") from error
    if isinstance(inner, endpoints.AdoptedStreamServerEndpoint):
        inner = inherited(reactor, inner)
        problem = inherited_socket_problem(inner.fileno, inner.addressFamily)
        if problem is not None:
            raise ListenError(f"{shown}: {problem}")
    return proxy_header_endpoint(inner) if proxied else inner


def _what_systemd_passed(passed: Any = None) -> str:
    """
    What systemd passed, to set beside an endpoint that found nothing.
    ``passed`` is a ``ListenFDs``: by default the one Twisted's endpoints
    read, which took LISTEN_FDS and LISTEN_PID out of the environment.
    """
    if passed is None:
        passed = getattr(getattr(endpoints, "_SystemdParser", None), "_sddaemon", None)
    sockets = passed.inheritedDescriptors() if passed is not None else []
    names = list(passed.inheritedNamedDescriptors()) if passed is not None else []
    if not sockets:
        return ("not socket-activated, or LISTEN_FDNAMES missing: systemd-socket-activate "
                "needs --fdname=NAME")
    return f"{len(sockets)} passed, named {', '.join(names)}; index= counts from 0"


def addresses_of(name: str) -> set[str]:
    """The addresses ``name`` resolves to here; none if it does not."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except OSError:
        return set()


def servers_listening_on(
    config: model.Config, address, resolve: Callable[[str], set[str]] = addresses_of
) -> list[int]:
    """
    The servers whose ``listen on`` lines name ``address`` (a bound
    socket's), their names looked up with ``resolve``.
    """
    matching: list[int] = []
    for index, _ in listens_on(config, address, resolve):
        if not matching or matching[-1] != index:  # in order: a server's lines come together
            matching.append(index)
    return matching


def listens_on(
    config: model.Config, address, resolve: Callable[[str], set[str]] = addresses_of
) -> list[tuple[int, model.Listen]]:
    """Each server's ``listen on`` lines that name ``address`` (a bound socket's), with its index."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return []
    host = ipv4_unmapped(host)
    found = []
    for index, server in enumerate(config.servers):
        for listen in server.listens:
            try:
                if listen_port(listen) != port:
                    continue
            except ListenError:
                continue  # a service no socket can have (the check names its line)
            if listen.address == "*" or host in resolve(listen.address) | {listen.address}:
                found.append((index, listen))
    return found


@dataclass
class Listener:
    """
    One socket to open, the servers whose certificates it offers, and the
    first ``listen on`` line asking for it (none for the command line's).
    """

    description: str
    servers: list[int]
    origin: Optional[model.Origin] = None


def plan_listeners(config: model.Config, listen: Optional[Sequence[str]]) -> list[Listener]:
    """
    Which sockets to open. Explicit endpoint strings (the command line, or
    socket activation) serve every server; otherwise the ``listen on`` lines.
    """
    everyone = list(range(len(config.servers)))
    if listen:
        return [Listener(description, everyone) for description in listen]
    planned: dict[_Socket, list[int]] = {}
    origins: dict[_Socket, Optional[model.Origin]] = {}
    for index, server in enumerate(config.servers):
        for item in server.listens or [model.Listen()]:
            for entry in _sockets(item):
                planned.setdefault(entry, []).append(index)
                origins.setdefault(entry, item.origin or server.origin)
    # gmid binds with SO_REUSEPORT, so `listen on *` in one server and
    # `listen on 127.0.0.1` on the same port in another both open. Here
    # the wildcard socket serves both (every server answers on every
    # socket of this process; only the default certificate differs), and
    # a second process still finds the port busy.
    for entry in list(planned):
        for wildcard in entry.covered_by():
            if wildcard in planned:
                servers = planned[wildcard]
                servers.extend(i for i in planned.pop(entry) if i not in servers)
                break
    return [Listener(entry.description, servers, origins[entry]) for entry, servers in planned.items()]


def load_key_pairs(config: model.Config) -> list[KeyPair]:
    """
    Each server's pair, in order. Servers that name the same files (a
    wildcard certificate for many hosts) get the one pair, read once,
    and share its TLS context (``CertificateStore``).
    """
    pairs = []
    loaded: dict[tuple[str, str, Optional[str]], KeyPair] = {}
    for server in config.servers:
        if server.cert is None or server.key is None:
            raise CertificateError(f"server {server.name!r} has no cert or key")
        files = (server.cert, server.key, server.ocsp)
        if files not in loaded:
            loaded[files] = load_key_pair(*files)
        pairs.append(loaded[files])
    return pairs


def key_files(config: model.Config) -> dict[str, bytes]:
    """
    What every server's certificate, key and OCSP files hold, read once and
    checked as pairs: a prefork parent's workers (those it restarts too)
    serve these until the next reload, not what the files hold when each
    starts: a worker restarted after a certificate was renewed, unreloaded,
    served another identity than its siblings, and one started between a
    renewal's two files failed on a key that did not match.
    """
    files: dict[str, bytes] = {}
    for pair in load_key_pairs(config):
        files.update(pair.files)
    # The CA files of require client ca, and the client pairs proxy blocks
    # present upstream, are read by workers as they start too.
    files.update(authority_files(_client_ca_paths(config)))
    for server in config.servers:
        for proxy in server.proxies:
            if proxy.cert is not None and proxy.key is not None:
                files.update(load_key_pair(proxy.cert, proxy.key).files)
    return files


def _client_ca_paths(config: model.Config) -> Iterator[str]:
    for server in config.servers:
        for options in [server.options, *(location.options for location in server.locations),
                        *server.proxies]:
            if options.require_client_ca is not None:
                yield options.require_client_ca


def build_site(
    config: model.Config,
    timeouts: Optional[Timeouts] = None,
    max_connections: Optional[int] = None,
) -> Site:
    """The routing table and the handlers that do not need running services."""
    routes = Routes(config)
    forget_roots()
    site = Site(routes=routes, timeouts=timeouts or Timeouts())
    if max_connections is not None:
        site.max_connections = max_connections
    site.handlers["static"] = partial(serve_static, mime=routes.mime, pages=PageCache())
    site.handlers["block"] = serve_block
    # Until the service (install_fastcgi) gives it backends.
    site.handlers["fastcgi"] = serve_without_backends
    authorities = load_authorities(_client_ca_paths(config))
    site.handlers["client_ca"] = partial(require_client_ca, authorities=authorities)
    site.handlers["proxy"] = partial(
        serve_proxy,
        upstreams=build_upstreams(config),
        timeouts=UpstreamTimeouts(reply=site.timeouts.backend),
    )
    return site


def build_certificates(config: model.Config, routes: Routes) -> CertificateStore:
    """Every server's context, built before anything is swapped in."""
    index_of = {id(vhost): i for i, vhost in enumerate(routes.hosts)}

    def choose(host: str) -> Optional[int]:
        vhost = routes.select(host)
        return None if vhost is None else index_of[id(vhost)]

    return CertificateStore(load_key_pairs(config), choose, config.protocols)


def listening_place(address: Any) -> str:
    """Where a socket listens, as its log line says: ``host:port``, ``[v6]:port`` or a path."""
    host = getattr(address, "host", None)
    if host is None:
        name = getattr(address, "name", address)  # a unix socket's path, as bytes
        return os.fsdecode(name) if isinstance(name, bytes) else str(name)
    if ":" in host:
        return f"[{host}]:{address.port}"
    return f"{host}:{address.port}"


class ListenerService(Service):
    """
    One listening socket, with TLS. Unlike Twisted's endpoint service it
    keeps the port it got, so embedding code and tests can ask which one it
    is, and a socket that cannot be opened fails ``startService`` at once.

    A TCP port gets ``TLSServerConnection`` transports (the transport is
    the TLS layer, the Gemini protocol directly on top); any other port, and one
    that reads a PROXY header first, gets Twisted's TLS layer around the
    Gemini factory. Either way a connection beyond the hard limit is closed
    before any TLS work.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        gemini: GeminiFactory,
        tls: ServerTLS,
        limit: int,
        on_listening: Optional[Callable[[IListeningPort], None]] = None,
        origin: Optional[model.Origin] = None,
    ) -> None:
        self.on_listening = on_listening
        self.origin = origin
        self.description = description
        self.endpoint = endpoint
        self.gemini = gemini
        self.tls = tls
        self.limit = limit
        self.port: Optional[IListeningPort] = None

    def _layered(self) -> Factory:
        return LimitedTLSFactory(self.tls, self.gemini, self.gemini.connections, self.limit)

    def startService(self) -> None:
        super().startService()
        proxied, _ = split_proxied(self.description)
        factory = self._layered() if proxied else self.gemini
        failures = []
        ports: list[Any] = []
        listening = self.endpoint.listen(factory)
        listening.addCallbacks(ports.append, failures.append)
        if failures:
            raise listen_failed(self.description, failures[0], self.origin)
        # What listen() gives is there at once (every endpoint used here
        # listens synchronously); one that answers later serves nothing.
        port = ports[0] if ports else None
        refusal = self._refusal(port, factory)
        if refusal is not None:
            if IListeningPort.providedBy(port):
                port.stopListening()
            problem = ListenError(f"{self.description}: {refusal}")
            problem.origin = self.origin
            raise problem
        self._listening(port)
        if proxied:
            # Its endpoint wraps the factory in the PROXY header reader.
            return
        # listen() on these endpoints is synchronous: nothing was accepted
        # yet, so the port can still be told how to treat connections.
        if type(port) is tcp.Port:
            self.gemini.tls = self.tls
            self.gemini.limit = self.limit
            prepare_listener(port)
        else:
            port.factory = self._layered()

    def _refusal(self, port: Any, factory: Factory) -> Optional[str]:
        """Why ``port`` cannot serve Gemini connections; ``None`` if it can."""
        if not IListeningPort.providedBy(port):
            # stdio: and the like serve one stream, not connections.
            return "not a listening socket: listen on a tcp: or unix: endpoint"
        if split_proxied(self.description)[0]:
            return None  # the PROXY header reader wraps the factory
        if getattr(port, "factory", factory) is not factory:
            # An endpoint that puts a protocol of its own (its TLS) between
            # the socket and gemfcgi's: every connection would fail.
            return ("this endpoint wraps connections in a protocol of its own; gemfcgi does "
                    "TLS itself: listen on a tcp: or unix: endpoint")
        return None

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info("listening on {where} ({description})", where=listening_place(port.getHost()),
                 description=self.description)
        if self.on_listening is not None:
            self.on_listening(port)

    def stopService(self) -> Deferred:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        accept_waiting(port)
        return maybeDeferred(port.stopListening)


def accept_waiting(port: Any) -> None:
    """
    Accept the connections the kernel has queued on ``port``, before it is
    closed: closing a listening socket resets them, though each client
    connected while the server still listened (a busy reactor had not come
    to them yet). Accepted now, they are served as the requests in flight
    are. Only those already queued are taken: one more round of accepts
    whenever the socket is still readable after the last, a bounded number
    of times, so a flood cannot hold the stop up.
    """
    if not isinstance(port, tcp.Port) or port.socket is None or not port.connected:
        return
    readable = select.poll()
    readable.register(port.fileno(), select.POLLIN)
    for _ in range(ACCEPT_ROUNDS_AT_CLOSE):
        if not readable.poll(0):
            return
        port.doRead()


class GemfcgiService(MultiService):
    """
    A gemfcgi server: its listeners, the configuration they serve, reload
    and graceful stop.

    A reload builds the new ``Site`` and certificates completely before it
    swaps them in; listeners that are no longer wanted stop accepting,
    new ones open. A stop closes the listeners, then lets the connections
    in flight finish (up to ``drain_timeout``) before anything else stops.
    A ``drain_timeout`` of ``None`` sets no limit but the requests' own
    timers: a prefork worker retired by a reload stops so
    (``limit_the_drain`` sets one later, should the server stop meanwhile).
    """

    def __init__(
        self,
        config: model.Config,
        listen: Optional[Sequence[str]] = None,
        timeouts: Optional[Timeouts] = None,
        reactor: Optional[IReactorCore] = None,
        drain_timeout: Optional[float] = 30.0,
        max_connections: Optional[int] = None,
        fastcgi_timeouts: Optional[FastCGITimeouts] = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.listen = list(listen) if listen else None
        self.timeouts = timeouts or Timeouts()
        self.drain_timeout = drain_timeout
        # Set by makeService: a reload is checked as the start was (twistd
        # checks a file itself, with the chroot its workers will have).
        self.checks_reloads = False
        # Where relative paths of a configuration built in Python lead: the
        # directory makeService was called in, not the one twistd's
        # --rundir moves to afterwards.
        self.base_dir: Optional[str] = None
        self.connections = ConnectionTracker()
        self.memory = MemoryReturner(reactor, libc_malloc_trim())
        self.listeners: dict[str, ListenerService] = {}
        self._tls: dict[str, ServerTLS] = {}
        self._factories: dict[str, GeminiFactory] = {}
        self._rotation: Optional[LoopingCall] = None
        # What privilegedStartService opened (the access file, in a tuple),
        # for startService; a stop still draining, which a start must await.
        self._opened: Optional[tuple[Optional[AccessLogWriter]]] = None
        self._stopping: Optional[Deferred] = None
        self.max_connections = max_connections
        self.config = config
        self.site = build_site(config, self.timeouts, max_connections)
        self.site.service = self
        # Backends first, so spawned apps start before the first request.
        if fastcgi_timeouts is None:
            fastcgi_timeouts = FastCGITimeouts(reply=self.timeouts.backend)
        self.fastcgi = install_fastcgi(self.site, config, reactor, fastcgi_timeouts)
        self.fastcgi.setServiceParent(self)
        # gemfcgi's own handlers for the running configuration: any other in
        # ``site.handlers`` is the program's, and a reload keeps it. Read
        # only; a program's wrapper calls through it to follow reloads.
        self.own_handlers: Mapping[str, Callable[..., Any]] = MappingProxyType(dict(self.site.handlers))
        self._install(config, self.site, build_certificates(config, self.site.routes))
        self.access_log: Optional[AccessLogWriter] = None
        # Writers of configurations a reload replaced, kept while requests
        # that began under them are still in flight.
        self._retired_logs: list[AccessLogWriter] = []
        # Who the workers of ``twistd gemfcgi`` become once started: their
        # chroot (the configuration's, or its user's home, as gmid does),
        # where start-up, as root, opens the access file, and the user
        # given a file made then, to reopen it at SIGUSR1. Anywhere else
        # paths are read as written.
        self.becomes: Optional[Identity] = None
        self.chrooted = False
        self._restore_signals: list[Callable[[], None]] = []

    def rotate_ticket_keys(self) -> None:
        """New session ticket keys for every listener (tickets stay valid one period)."""
        store = self.store.renewed()
        for tls in self._tls.values():
            tls.update(store, tls.default_index)
        self.store = store

    def _install(self, config: model.Config, site: Site, store: CertificateStore) -> None:
        planned = plan_listeners(config, self.listen)
        self._commit_listeners(planned, config, site, store, self._open_listeners(planned, site, store))

    def _open_listeners(
        self, planned: list[Listener], site: Site, store: CertificateStore
    ) -> dict[str, ListenerService]:
        """
        The listeners ``planned`` adds, each already listening if this
        service runs. If one cannot be opened, those opened here are closed
        again and ``ListenError`` is raised: the running ones never notice.
        """
        added: dict[str, ListenerService] = {}
        try:
            for listener in planned:
                description = listener.description
                if description in self.listeners or description in added:
                    continue
                on_listening = (
                    (lambda port, d=description: self._answer_on(d, port, self.config))
                    if self.listen
                    else None
                )
                service = ListenerService(
                    description,
                    server_endpoint(self.reactor, description),
                    GeminiFactory(site, self.reactor, self.connections),
                    ServerTLS(store, listener.servers[0]),
                    hard_limit(site.max_connections),
                    on_listening,
                    listener.origin,
                )
                added[description] = service
                # Opens the socket when this service runs.
                service.setServiceParent(self)
        except ListenError as problem:
            _close(added)
            raise opening_failed(problem, listener, self.listeners) from None
        except Exception:
            _close(added)
            raise
        return added

    def _commit_listeners(
        self,
        planned: list[Listener],
        config: model.Config,
        site: Site,
        store: CertificateStore,
        added: dict[str, ListenerService],
    ) -> None:
        """Serve ``site`` on every planned listener; close the ones no longer planned."""
        self.store = store
        wanted = {listener.description: listener for listener in planned}
        for description, listener in wanted.items():
            if description in added:
                service = added[description]
                self.listeners[description] = service
                self._factories[description] = service.gemini
                self._tls[description] = service.tls
            else:
                self._factories[description].site = site
                self._tls[description].update(store, listener.servers[0])
            port = self.listeners[description].port
            if self.listen and port is not None:
                # A new one was opened before this configuration was current.
                self._answer_on(description, port, config)
        for description in list(self.listeners):
            if description not in wanted:
                service = self.listeners.pop(description)
                del self._tls[description]
                del self._factories[description]
                service.disownServiceParent()

    def _answer_on(self, description: str, port: IListeningPort, config: model.Config) -> None:
        """
        A socket given on the command line (or by systemd) offers the
        certificate of the first server whose ``listen on`` lines name it
        to clients whose SNI names no server. Every server answers on it,
        as on the sockets opened from ``listen on`` lines.
        """
        if description not in self._factories:
            return  # opened by a reload not yet committed, which answers for it
        matching = servers_listening_on(config, port.getHost())
        if matching:
            self._tls[description].update(self.store, matching[0])

    def reload(self, config: model.Config) -> None:
        """
        Serve ``config`` for new connections. Raises (and changes nothing)
        if its certificates or listeners cannot be used, and, for a service
        made by ``makeService``, ``ConfigError`` where ``makeService`` would.
        A reload during a stop is refused (``RuntimeError``), as ``Reloader``
        refuses one: what it would start (a spawned program, a listener)
        would only be stopped again.
        """
        if self._stopping is not None:
            raise RuntimeError("this gemfcgi service is stopping: a reload now would start what the "
                               "stop has to end")
        _check_config_type(config)
        if self.checks_reloads:
            check_embedded(config, self.base_dir or os.getcwd())
        site = build_site(config, self.timeouts, self.max_connections)
        site.service = self
        store = build_certificates(config, site.routes)
        # Each step that can fail leaves what runs as it was: the access
        # file and new sockets are opened first and closed again if the
        # backends cannot be.
        planned = plan_listeners(config, self.listen)
        access_log = self._new_access_log(config, site) if self.running else None
        try:
            added = self._open_listeners(planned, site, store)
        except Exception:
            if access_log is not None:
                access_log.close()
            raise
        try:
            reconfigure_fastcgi(site, config, self.fastcgi)
        except Exception:
            _close(added)
            if access_log is not None:
                access_log.close()
            raise
        programs = self._programs_handlers()
        self.own_handlers = MappingProxyType(dict(site.handlers))
        site.handlers.update(programs)
        self._commit_listeners(planned, config, site, store, added)
        self.config, self.site = config, site
        if self.running:
            self._use_access_log(access_log)
            # What the reload read and parsed is garbage now.
            self.memory.now()

    def _programs_handlers(self) -> dict[str, Callable[..., Any]]:
        """
        The handlers a program put in ``site.handlers`` in place of
        gemfcgi's or beside them, which a new ``Site`` takes over: a
        handler that guards a capsule must not give way to gemfcgi's own
        at a certificate renewal's reload.
        """
        return {kind: handler for kind, handler in self.site.handlers.items()
                if self.own_handlers.get(kind) is not handler}

    def _new_access_log(self, config: model.Config, site: Site) -> Optional[AccessLogWriter]:
        """A writer for ``config``'s access file and syslog; ``AccessLogError`` if the file cannot be opened."""
        settings = config.log
        if settings.access is None and not settings.syslog:
            return None
        path = settings.access
        becomes = self.becomes
        chroot = becomes.chroot if becomes is not None else None
        if path is not None and chroot and not self.chrooted:
            # As the worker inside will open it again (SIGUSR1).
            path = host_path(chroot, path)
        owner = (becomes.uid, becomes.gid) if becomes is not None else None
        try:
            return AccessLogWriter(settings, path, service=self, site=site, owner=owner, reactor=self.reactor)
        except OSError as error:
            where = f"{settings.access_origin}: " if settings.access_origin is not None else ""
            raise AccessLogError(f"{where}log access {settings.access}: {error.strerror or error}") from None

    def _use_access_log(self, writer: Optional[AccessLogWriter]) -> None:
        """
        Write the access lines of new requests with ``writer`` (``None``:
        nowhere but the text log) from now on; the writer before goes on
        with the requests begun under it.
        """
        retired, self.access_log = self.access_log, writer
        if writer is not None:
            globalLogPublisher.addObserver(writer)
        if retired is not None:
            self._retired_logs.append(retired)
            self.connections.on_removed = self._connection_ended
            self._close_retired_logs()

    def _connection_ended(self, connection: Any) -> None:
        # Only the end of a request begun under a retired configuration
        # can let its writer go: the others cost one look each.
        site = getattr(connection, "site", None)
        if any(writer.site is site for writer in self._retired_logs):
            self._close_retired_logs()

    def _close_retired_logs(self) -> None:
        """Close each retired writer whose configuration has no request left in flight."""
        in_use = {id(getattr(connection, "site", None)) for connection in self.connections.active}
        for writer in [w for w in self._retired_logs if id(w.site) not in in_use]:
            self._retired_logs.remove(writer)
            globalLogPublisher.removeObserver(writer)
            writer.close()
        if not self._retired_logs:
            self.connections.on_removed = None

    def _close_access_log(self) -> None:
        writers, self._retired_logs = self._retired_logs, []
        if self.access_log is not None:
            writers.append(self.access_log)
        for writer in writers:
            globalLogPublisher.removeObserver(writer)
            writer.close()
        self.connections.on_removed = None
        self.access_log = None

    def entered_chroot(self, chroot: Optional[str]) -> None:
        """After a chroot, the access file is reopened by its path inside it."""
        self.chrooted = True
        self.site.chroot = chroot
        if self.access_log is not None and self.access_log.path is not None and chroot:
            self.access_log.path = self.config.log.access

    def reopen_access_log(self) -> None:
        """SIGUSR1: reopen the access file after it was rotated."""
        writer = self.access_log
        for retired in self._retired_logs:
            if retired.path is not None:
                retired.reopen()
        if writer is not None and writer.path is not None and writer.reopen():
            # Named: several services of one program each reopen their own.
            log.info("access log reopened: {path}", path=printable(writer.path))

    def report_clients(self) -> None:
        """
        SIGUSR2: how many clients are connected, as gmid says it, and on
        which sockets: a program may run several services.
        """
        places = ", ".join(listening_place(port.getHost()) for port in self.ports)
        if not self.running:
            places = "listeners closed: stopping"  # or retiring, a worker of an older generation
        log.info("{count} connected clients{on}", count=len(self.connections),
                 on=f" ({places})" if places else "")

    def privilegedStartService(self) -> None:
        """
        twistd calls this before it gives up its privileges (``--uid``,
        ``--gid``): the access file and the sockets are opened now, as
        Twisted's own servers bind theirs, so a port below 1024 or a
        directory only root may write can be used; ``startService`` does
        the rest.
        """
        if self.running or self._opened is not None:
            return
        self._refuse_while_stopping()
        self._opened = (self._open(),)
        # Its children's turn (a Reloader takes SIGHUP here, before any
        # program is spawned); the listeners' is a no-op, _open did theirs.
        MultiService.privilegedStartService(self)

    def _refuse_while_stopping(self) -> None:
        if self._stopping is not None:
            raise RuntimeError("this gemfcgi service is still stopping: start it again once the "
                               "Deferred of its stopService() has fired")

    def _open(self) -> Optional[AccessLogWriter]:
        """
        The access file and the listening sockets: if one cannot be opened
        (a port in use), those already open are closed and ``ListenError``
        (``AccessLogError``) is raised before any FastCGI application is
        spawned, so that nothing is left running after the failed start.
        """
        access_log = None
        listeners = list(self.listeners.values())
        try:
            access_log = self._new_access_log(self.config, self.site)
            for listener in listeners:
                listener.startService()
        except Exception:
            # AccessLogError, ListenError, or anything unforeseen: nothing stays open.
            for listener in listeners:
                if listener.running:
                    listener.stopService()
            if access_log is not None:
                access_log.close()
            raise
        return access_log

    def startService(self) -> None:
        """
        Open what ``privilegedStartService`` has not (``_open``), then start
        the FastCGI backends. Started already, it does nothing (a running
        parent and the program both starting it); while a stop still
        drains, it refuses: that stop would end what the start began.
        """
        if self.running:
            return
        self._refuse_while_stopping()
        opened, self._opened = self._opened, None
        Service.startService(self)
        if opened is not None:
            access_log = opened[0]
        else:
            try:
                access_log = self._open()
            except Exception:
                Service.stopService(self)
                raise
        self._rotation = LoopingCall(self.rotate_ticket_keys)
        self._rotation.clock = self.reactor
        self._rotation.start(TICKET_KEY_LIFETIME, now=False)
        self._use_access_log(access_log)
        if hasattr(signal, "SIGUSR1"):
            self._restore_signals = [
                on_signal(signal.SIGUSR1, self.reopen_access_log, self.reactor),
                on_signal(signal.SIGUSR2, self.report_clients, self.reactor),
            ]
        answer_repeated_stops(self.reactor)
        for service in self:
            if not service.running:
                service.startService()
        # Loading the configuration and its certificates left free memory behind.
        self.connections.memory = self.memory
        self.memory.now()

    def stopService(self) -> Deferred:
        if self._stopping is not None:
            # A stop already under way (a program's own, then its process's
            # shutdown through the parent service): this caller waits for
            # that one, which stops the spawned programs last.
            waiting: Deferred = Deferred()

            def tell(result: Any) -> Any:
                # The first caller keeps its result; this one gets the same.
                (waiting.errback if isinstance(result, Failure) else waiting.callback)(result)
                return result

            self._stopping.addBoth(tell)
            return waiting
        opened, self._opened = self._opened, None
        if opened is not None and opened[0] is not None:
            opened[0].close()  # opened by privilegedStartService, never started
        if self._rotation is not None and self._rotation.running:
            self._rotation.stop()
        self.connections.memory = None
        self.memory.stop()
        # From the start of the stop, not once the connections have drained
        # and the backends stop in turn: a program that crashed meanwhile
        # was started again, to be stopped at once.
        self.fastcgi.stop_restarting()
        listeners = list(self.listeners.values())
        others = [s for s in self if s not in listeners]
        self.running = 0

        def stop_all(services) -> Deferred:
            return gatherResults([maybeDeferred(s.stopService) for s in services if s.running])

        stopping = stop_all(listeners)
        stopping.addCallback(lambda _: self._drain())
        stopping.addCallback(lambda _: stop_all(reversed(others)))
        stopping.addBoth(lambda result: (self._close_access_log(), result)[1])
        # The handler stays until the very end: a log rotation's SIGUSR1
        # during the drain must reopen the file, not (by default) end the
        # process while it finishes requests.
        stopping.addBoth(lambda result: (self._restore_signal_handlers(), result)[1])
        if not stopping.called:
            self._stopping = stopping
            stopping.addBoth(lambda result: (setattr(self, "_stopping", None), result)[1])
        return stopping

    def _restore_signal_handlers(self) -> None:
        restore, self._restore_signals = self._restore_signals, []
        for undo in restore:
            undo()

    def _drain(self) -> Deferred:
        """
        Wait for the connections in flight, up to the drain timeout, and
        say what is waited for as the wait begins: each FastCGI backend
        logs its requests now (its own drain, when it stops after this,
        then finds them gone), and a request cut by the timeout says so.
        """
        if self.drain_timeout is None:
            if self.connections:
                log.info("retiring: waiting for {count} {connections} to finish",
                         count=len(self.connections), connections=plural(len(self.connections), "connection"))
            return self.connections.drain(self.reactor, None)
        if self.connections:
            log.info(
                "stopping: waiting up to {timeout:g} s for {count} {connections} to finish",
                timeout=self.drain_timeout,
                count=len(self.connections),
                connections=plural(len(self.connections), "connection"),
            )
            self.fastcgi.drain(self.drain_timeout)
        # A client that has sent nothing yet is not waited for as long as
        # its request timeout. (A retiring worker, above, waits: it stops
        # nothing that a client would see.)
        self.connections.request_grace = STOP_REQUEST_GRACE
        for connection in list(self.connections.active):
            hurry = getattr(connection, "hurry_the_request", None)
            if hurry is not None:
                hurry(STOP_REQUEST_GRACE)
        return self.connections.drain(
            self.reactor, self.drain_timeout, partial(_cut_by_drain, timeout=self.drain_timeout)
        )

    def limit_the_drain(self, timeout: float) -> None:
        """
        A stop while the service drains without a limit (a retired worker):
        the connections still open get ``timeout`` seconds more.
        """
        if self.drain_timeout is not None:
            return
        self.drain_timeout = timeout
        if not self.running and self.connections:
            self._drain()

    @property
    def ports(self) -> list[IListeningPort]:
        """The listening ports once started (for tests and embedding code)."""
        return [service.port for service in self.listeners.values() if service.port is not None]


DRAIN_CUT = "cut by the drain timeout"
# Seconds a stop waits for a client that has sent nothing of its request
# to begin it: one that connected as the stop began sends it at once.
STOP_REQUEST_GRACE = 2.0


def _cut_by_drain(connection: Any, timeout: float) -> bool:
    """
    A connection still open when the drain timeout ends a stop: one line
    naming the request. One that has had no header yet is answered ``41``
    and ends by itself (``True``); one cut in its body is closed (a FIN
    after what the kernel holds), and the access line's meta says why it has
    no status if it had none.
    """
    record = connection.record
    answer = getattr(connection, "answer_the_stop", None)
    if not record.url:
        # No request yet: one whose handshake is done is told 41 rather
        # than dropped without a word. If its request line had begun (the
        # answer notes what came of it), that request was cut.
        answered = answer is not None and answer()
        if answered and record.url:
            _say_cut(record, timeout, ": answered 41, its request line had not all come")
        return answered
    handed_over = getattr(connection.transport, "_nothing_buffered", None)
    if record.finished is not None and handed_over is not None and handed_over():
        # Its whole reply, close_notify too, is with the kernel already: the
        # FIN that closes it comes after, and nothing of the reply is cut.
        return False
    answered = answer is not None and answer()
    _say_cut(record, timeout, ": answered 41, no reply had begun" if answered else "")
    if not answered and record.status == 0:
        record.meta = DRAIN_CUT
    return answered


def _say_cut(record: Any, timeout: float, how: str) -> None:
    log.warn("{client} {url}: {cut} ({timeout:g} s) as the server stops{how}",
             client=record.client, url=record.url, cut=DRAIN_CUT, timeout=timeout, how=how)


class _SignalShare:
    """
    The one handler gemfcgi installs for a signal, shared by every service
    that wants it, and the handler that was there before it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.previous = signal.getsignal(signum)
        self.actions: list[tuple[Callable[[], None], Any]] = []
        signal.signal(signum, self.handle)

    def handle(self, number: int, frame: Any) -> None:
        # The handler from before first: what it queues for the reactor
        # (twistd's rotation of its ``--logfile`` at SIGUSR1) comes before
        # the actions, so the lines they log go to the new file.
        # SIG_DFL and SIG_IGN are numbers, and None a handler set outside
        # Python: none of them is ours to call.
        try:
            if callable(self.previous):
                self.previous(number, frame)
        finally:
            for action, reactor in list(self.actions):
                reactor.callFromThread(action)

    def remove(self, entry: tuple[Callable[[], None], Any]) -> None:
        if entry in self.actions:
            self.actions.remove(entry)
        if not self.actions and _signal_shares.get(self.signum) is self:
            del _signal_shares[self.signum]
            # Unless another handler replaced ours since: that one stays.
            if signal.getsignal(self.signum) == self.handle:
                signal.signal(self.signum, self.previous if self.previous is not None else signal.SIG_DFL)


_signal_shares: dict[int, _SignalShare] = {}


def on_signal(signum: int, action: Callable[[], None], reactor) -> Callable[[], None]:
    """
    Run ``action`` in the reactor's thread when ``signum`` arrives, after
    the handler that was there before: twistd rotates its ``--logfile`` on
    SIGUSR1, and an embedding program may have a use of its own for it, so
    taking the signal over would silently end theirs.

    Returns what undoes it. Services that ask for the same signal share one
    handler, so they may stop in any order: once the last has, the handler
    from before is back (unless another has replaced ours since).
    """
    share = _signal_shares.get(signum)
    if share is None or signal.getsignal(signum) != share.handle:
        try:
            share = _signal_shares[signum] = _SignalShare(signum)
        except ValueError:
            # Started outside the main thread (a reactor run in a thread of
            # its own), where Python sets no handler: the rest still serves.
            log.warn("{signal} is not answered: gemfcgi was started outside the main thread, "
                     "where no signal handler can be set", signal=signal.Signals(signum).name)
            return lambda: None
    entry = (action, reactor)
    share.actions.append(entry)
    return partial(share.remove, entry)


# The reactors whose shutdown answers a second TERM or INT.
_answering_repeated_stops: "weakref.WeakSet[Any]" = weakref.WeakSet()


def answer_repeated_stops(reactor: Any) -> None:
    """
    Once ``reactor``'s shutdown has begun, a second TERM or INT (a Ctrl-C
    pressed twice, a ``kill`` sent again) is answered with a line saying
    what goes on: the reactor's own handler would ask a stopping reactor to
    stop again, and log that failure as a critical traceback. The requests
    in flight still finish within the drain timeout. A handler that is not
    the reactor's (a program's own, a prefork worker's) stays.
    """
    if reactor in _answering_repeated_stops or not hasattr(reactor, "addSystemEventTrigger"):
        return
    _answering_repeated_stops.add(reactor)
    reactor.addSystemEventTrigger("before", "shutdown", _answer_stop_signals_of, reactor)


def _answer_stop_signals_of(reactor: Any) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        if getattr(signal.getsignal(signum), "__self__", None) is reactor:
            signal.signal(signum, _already_stopping)


def _already_stopping(signum: int, frame: object) -> None:
    log.info(
        "received {signal} again: already stopping, once the requests in flight have"
        " finished (SIGKILL ends at once)",
        signal=signal.Signals(signum).name,
    )


def _close(listeners: dict[str, ListenerService]) -> None:
    """Undo ``_open_listeners``: each leaves its parent, closing its socket."""
    for service in listeners.values():
        service.disownServiceParent()


def makeService(
    config: model.Config,
    listen: Optional[Sequence[str]] = None,
    timeouts: Optional[Timeouts] = None,
    reactor: Optional[IReactorCore] = None,
    max_connections: Optional[int] = None,
    drain_timeout: Optional[float] = 30.0,
    fastcgi_timeouts: Optional[FastCGITimeouts] = None,
) -> GemfcgiService:
    """
    The public entry point: a started-on-demand ``IService`` serving ``config``.

    ``listen`` overrides the configuration's ``listen on`` lines with Twisted
    server endpoint strings (without TLS: gemfcgi adds it).

    ``config`` is checked as ``twistd gemfcgi`` checks it before it serves
    (``gemfcgi.check``): what would fail later, or quietly answer every
    request with ``51`` (a root that is not a directory), raises
    ``ConfigError`` here, every problem as ``FILE:LINE: message``; warnings
    are logged. ``user``, ``chroot`` and ``prefork`` are not applied in a
    program of one's own: they are said to be ignored, in the log.
    """
    if listen is not None and not isinstance(listen, (str, bytes)):
        # A generator is read once, here; each string gets the backlog a
        # --listen one gets.
        listen = list(listen)
    _check_arguments(config, listen, timeouts, max_connections, drain_timeout, fastcgi_timeouts)
    if listen is not None:
        listen = [with_backlog(description) for description in listen]
    base = os.getcwd()
    check_embedded(config, base)
    service = GemfcgiService(
        config,
        listen=listen,
        timeouts=timeouts,
        reactor=reactor,
        drain_timeout=drain_timeout,
        max_connections=max_connections,
        fastcgi_timeouts=fastcgi_timeouts,
    )
    service.checks_reloads = True
    service.base_dir = base
    return service


def _check_arguments(config, listen, timeouts, max_connections, drain_timeout, fastcgi_timeouts) -> None:
    """What twistd's options refuse, refused here too, and the types that would fail later."""
    _check_config_type(config)
    if listen is not None and not isinstance(listen, (str, bytes)):
        for description in listen:
            if not isinstance(description, str):
                raise TypeError(f"listen takes endpoint strings, not {description!r}")
    if isinstance(listen, (str, bytes)):
        raise TypeError(f"listen takes a list of endpoint strings, not one: listen=[{listen!r}]")
    if listen is not None and not listen:
        # Taken for None, it would listen on every address (an empty
        # setting of the program's own must not open the server to all).
        raise ValueError("listen is empty: give endpoint strings, or None for the "
                         "configuration's listen on lines")
    if timeouts is not None and not isinstance(timeouts, Timeouts):
        raise TypeError(f"timeouts must be a gemfcgi.server.Timeouts, not {type(timeouts).__name__}")
    if fastcgi_timeouts is not None and not isinstance(fastcgi_timeouts, FastCGITimeouts):
        raise TypeError("fastcgi_timeouts must be a gemfcgi.fastcgi.client.FastCGITimeouts, "
                        f"not {type(fastcgi_timeouts).__name__}")
    if max_connections is not None and (not isinstance(max_connections, int)
                                        or isinstance(max_connections, bool) or max_connections < 1):
        raise ValueError(f"max_connections must be a whole number, at least 1, not {max_connections!r}")
    if drain_timeout is not None and not (_seconds(drain_timeout) and 0 <= drain_timeout < math.inf):
        raise ValueError(f"drain_timeout must be 0 or more seconds, or None for no limit, "
                         f"not {drain_timeout!r}")
    for name, given in (("timeouts", timeouts), ("fastcgi_timeouts", fastcgi_timeouts)):
        for field in dataclasses.fields(given) if given is not None else ():
            seconds = getattr(given, field.name)
            if not (_seconds(seconds) and 0 < seconds < math.inf):
                # As twistd's --request-timeout and the like refuse it: a
                # string failed every connection, nan turned the timer off.
                raise ValueError(f"{name}.{field.name} takes a number of seconds above 0, not {seconds!r}")


def _check_config_type(config: Any) -> None:
    """``TypeError`` for what is no ``Config``; ``load_config``'s pair given whole is the usual one."""
    if not isinstance(config, model.Config):
        hint = ": load_config returns (config, warnings), give its first item" if isinstance(config, tuple) else ""
        raise TypeError(f"config must be a gemfcgi.config.model.Config, not {type(config).__name__}{hint}")


def _seconds(value: Any) -> bool:
    """Whether ``value`` is a number of seconds the reactor's timers take (10**400 is none: a float overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def check_embedded(config: model.Config, base: str) -> None:
    """
    ``makeService``'s check of ``config``, for a start and for each
    ``reload``: ``ConfigError`` for what would fail, warnings in the log.
    Its relative paths are anchored at ``base`` first.
    """
    # Imported here: the check reads this module's listener planning.
    from gemfcgi.check import check_config, not_applied_in_one_process
    from gemfcgi.config.built import as_served, built_problems
    from gemfcgi.config.checks import shadow_warnings

    # What the parser would have refused, before anything reads the values.
    refused = built_problems(config)
    if refused:
        raise ConfigError(refused)
    anchor_paths(as_served(config), base)
    # Checked as it is served: without a chroot, so roots and the access
    # file are where they are written.
    errors, warnings = check_config(replace(config, user=None, chroot=None))
    if errors:
        raise ConfigError(errors, warnings)
    # A configuration built in Python met no parser, which warns of these.
    shadowed = shadow_warnings(config) if config.source is None else []
    for diagnostic in [*shadowed, *warnings, *not_applied_in_one_process(config)]:
        log.warn("{diagnostic}", diagnostic=str(diagnostic))
