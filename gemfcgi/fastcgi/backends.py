"""
FastCGI backends as Twisted client endpoints, opened one way for all kinds.

``open_backend`` turns a configured address into a ``Backend``: a name for
log lines (``unix:/run/app.sock``, ``tcp:127.0.0.1:9000``, ``spawn:php-cgi``),
an endpoint that opens one connection per request, and a count of the
requests in flight, which graceful stops wait on.

* ``fastcgi socket "/path"``: a unix endpoint that connects in the same turn.
* ``fastcgi socket tcp "host" port N``: IP literals get a plain TCP endpoint;
  names get a ``HostnameEndpoint``, which resolves them off the reactor
  thread on every connect (gmid blocks its event loop in ``getaddrinfo``).
* ``fastcgi endpoint "STRING"``: any ``clientFromString`` description.
* ``fastcgi spawn "program args"``: a ``SpawnedApp`` that gemfcgi runs and
  supervises, reached through its unix socket.

``FastCGIBackends`` holds one ``Backend`` per distinct address and is the
``IService`` whose children are the spawned applications: starting it starts
them, and stopping it waits for each backend's requests (up to the drain
timeout) before it terminates the application behind it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any, Iterator, Optional

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from gemfcgi.config import model
from gemfcgi.config.values import port_number
from gemfcgi.fastcgi.client import FastCGITimeouts
from gemfcgi.fastcgi.spawn import SpawnedApp
from gemfcgi.fastcgi.unixsocket import UnixSocketEndpoint
from gemfcgi.textlog import LogLimiter, plural, printable

log = Logger()

# What of a long STDERR record is logged: its start, and its end, where a
# traceback says what went wrong.
STDERR_HEAD_CHARS = 1000
STDERR_TAIL_CHARS = 3000


class Backend:
    """One FastCGI application as gemfcgi sees it: where it is, what is in flight."""

    def __init__(
        self,
        name: str,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        app: Optional[SpawnedApp] = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.clock = clock
        self.app = app
        self._relays: set[Any] = set()
        self._idle: list[Deferred] = []
        self._stderr = LogLimiter(clock, on_dropped=self._stderr_dropped)
        if app is not None:
            app.on_failed_start = self.app_failed
            app.untaken_requests = self.untaken_since

    @property
    def pending(self) -> int:
        """Requests in flight."""
        return len(self._relays)

    def connect(self, protocol: Protocol) -> Deferred:
        """A new connection for one request; fires with ``protocol`` once connected."""
        return maybeDeferred(self.endpoint.connect, _OneShotFactory(protocol))

    def begin(self, relay: Any) -> None:
        self._relays.add(relay)

    def end(self, relay: Any) -> None:
        self._relays.discard(relay)
        if not self._relays:
            waiting, self._idle = self._idle, []
            for waiter in waiting:
                waiter.callback(None)

    def app_failed(self, why: str) -> None:
        """
        The spawned application died as it started: the requests still
        waiting for a header would wait for a run that may never come, so
        they are answered now (each with ``42`` and a log line).
        """
        for relay in list(self._relays):
            relay.backend_failed(why)

    def untaken_since(self, when: float) -> int:
        """Requests connected before ``when`` still waiting, unread, in the application's backlog."""
        return sum(relay.untaken_since(when) for relay in self._relays)

    def given_up(self, protocol: Any) -> None:
        """
        A request's connection is closed before its reply ended: if it was
        still unread in a spawned program's backlog, the program will take
        it all the same, and answer no one (``SpawnedApp.given_up_queued``).
        """
        if self.app is not None and protocol.request_unread():
            self.app.given_up_queued()

    def answered(self) -> None:
        """
        The application read a request, or sent something back on one: the
        spawned program behind it, if any, runs and takes requests, however
        its run ends (a crash on one request's input is no failed start).
        """
        if self.app is not None:
            self.app.answered()

    def idle(self) -> Deferred:
        """Fires when no request is in flight (at once if none is)."""
        if self.pending == 0:
            return succeed(None)
        waiter: Deferred = Deferred(lambda d: self._idle.remove(d))
        self._idle.append(waiter)
        return waiter

    def log_stderr(self, where: str, data: bytes) -> None:
        """An application's STDERR record, logged with the request, rate-limited."""
        if not data.rstrip(b"\r\n"):
            # The empty record that ends the stream (flup sends one), or a
            # bare line break: nothing to read, and no share of the budget.
            return
        allowed, _ = self._stderr.allow()
        if not allowed:
            return  # counted in _stderr_dropped
        # A record may hold several lines (the log indents the ones after
        # the first); any other control character is escaped.
        text = printable(data.decode("utf-8", "replace").rstrip("\r\n"), keep="\n\t")
        if len(text) > STDERR_HEAD_CHARS + STDERR_TAIL_CHARS:
            left_out = len(text) - STDERR_HEAD_CHARS - STDERR_TAIL_CHARS
            text = (f"{text[:STDERR_HEAD_CHARS]}\n[... {left_out} characters left out ...]\n"
                    f"{text[-STDERR_TAIL_CHARS:]}")
        log.warn(
            "{where}: FastCGI backend {backend} stderr: {text}",
            where=where,
            backend=self.name,
            text=text,
        )

    def _stderr_dropped(self, count: int) -> None:
        log.warn(
            "FastCGI backend {backend}: {summary}",
            backend=self.name,
            summary=self._stderr.summary(count, "stderr records"),
        )

    def __repr__(self) -> str:
        return f"<Backend {self.name} pending={self.pending}>"


class _OneShotFactory(Factory):
    """``connectProtocol``'s factory, without a log line per request."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr) -> Protocol:
        return self._protocol


def _escape(value: str) -> str:
    """Escape a value for a Twisted endpoint description."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def backend_name(address: model.FastCGIAddress) -> str:
    """How log lines name a backend."""
    if isinstance(address, model.FastCGISocket):
        return address.name or f"unix:{address.path}"
    if isinstance(address, model.FastCGITCP):
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"tcp:{host}:{address.port}"
    if isinstance(address, model.FastCGISpawn):
        return f"spawn:{address.command}"
    return address.description


def address_key(address: model.FastCGIAddress) -> tuple:
    """A hashable identity for an address (the model's dataclasses are mutable)."""
    return (type(address).__name__, *dataclasses.astuple(address))


def fastcgi_addresses(config: model.Config) -> Iterator[model.FastCGIAddress]:
    """Every backend address a configuration names, servers and locations alike."""
    for server in config.servers:
        for options in [server.options, *(location.options for location in server.locations)]:
            fastcgi = options.fastcgi
            if fastcgi is not None and not fastcgi.off and fastcgi.address is not None:
                yield fastcgi.address


def open_backend(
    address: model.FastCGIAddress,
    reactor,
    timeouts: Optional[FastCGITimeouts] = None,
) -> Backend:
    """
    A ``Backend`` for any configured address; nothing is connected yet.

    A spawned application is created here but not started: it is a service,
    started by its parent (``FastCGIBackends``).
    """
    timeouts = timeouts or FastCGITimeouts()
    name = backend_name(address)
    connect_timeout = max(1, round(timeouts.connect))
    if isinstance(address, model.FastCGISocket):
        return Backend(name, UnixSocketEndpoint(reactor, address.path, connect_timeout), reactor)
    if isinstance(address, model.FastCGITCP):
        port = port_number(address.port)
        try:
            literal = ipaddress.ip_address(address.host)
        except ValueError:
            endpoint = endpoints.HostnameEndpoint(
                reactor, address.host, port, timeout=connect_timeout
            )
        else:
            # Twisted's TCP client takes IPv6 literals too; no resolver involved.
            endpoint = endpoints.clientFromString(
                reactor,
                f"tcp:host={_escape(str(literal))}:port={port}:timeout={connect_timeout}",
            )
        return Backend(name, endpoint, reactor)
    if isinstance(address, model.FastCGISpawn):
        app = SpawnedApp(name, address.command, reactor, kill_timeout=timeouts.kill)
        return Backend(name, app.endpoint(connect_timeout), reactor, app=app)
    if isinstance(address, model.FastCGIEndpoint):
        endpoint = endpoints.clientFromString(reactor, address.description)
        if isinstance(endpoint, endpoints.UNIXClientEndpoint) and not endpoint._checkPID:
            # The socket ``fastcgi socket`` would name, connected the same
            # way: a full backlog is waited for, and said in its own words,
            # for the string's timeout up to the connect timeout (Twisted's
            # default is 30 s; the relay gives up at the connect timeout).
            wait = endpoint._timeout
            wait = connect_timeout if wait <= 0 else min(wait, connect_timeout)
            endpoint = UnixSocketEndpoint(reactor, os.fsdecode(endpoint._path), wait)
        return Backend(name, endpoint, reactor)
    raise TypeError(f"not a FastCGI address: {address!r}")


class FastCGIBackends(MultiService):
    """
    Every backend of a configuration, one per distinct address.

    Its children are the spawned applications, so they start and stop with
    it. Stopping waits for each backend to finish its requests in flight
    (up to ``timeouts.drain``) and only then stops the application behind it.
    """

    def __init__(self, reactor, timeouts: Optional[FastCGITimeouts] = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.timeouts = timeouts or FastCGITimeouts()
        self.backends: dict[tuple, Backend] = {}
        # Spawned applications no longer configured, finishing their
        # requests before they stop; a reload that names one again takes
        # it back, still running, rather than starting a second.
        self._retiring: dict[tuple, tuple[Backend, Deferred]] = {}
        # The stops of retired applications still under way (SIGTERM sent,
        # not yet ended): the server's own stop waits for them too.
        self._stopping: set[Deferred] = set()
        # Per request, the address is the same configuration object each
        # time: looked up by identity, it needs no key built field by field.
        self._by_identity: dict[int, tuple[model.FastCGIAddress, Backend]] = {}
        # The addresses of the configuration last given to ``configure``
        # (``None`` before): a request for another one came on a connection
        # the configuration before a reload still serves.
        self._wanted: Optional[set[tuple]] = None

    def configure(self, config: model.Config) -> None:
        """
        Hold the backends ``config`` names; also for a reload.

        Backends whose address is still configured are kept, spawned
        applications included; new ones are opened (and started, if this
        service runs); the others are retired once their requests are done.
        Every new backend is opened before anything changes, so a bad
        address raises with the old configuration still in place.
        """
        self._by_identity.clear()
        wanted = {address_key(a): a for a in fastcgi_addresses(config)}
        self._wanted = set(wanted)
        opened = {
            key: open_backend(address, self.reactor, self.timeouts)
            for key, address in wanted.items()
            if key not in self.backends and key not in self._retiring
        }
        for key in [key for key in self.backends if key not in wanted]:
            self._retire(key, self.backends.pop(key))
        for backend in self.backends.values():
            if backend.app is not None:
                backend.app.retry_now()
        for key in [key for key in self._retiring if key in wanted]:
            self.backends[key] = self._take_back(key)
        for key, backend in opened.items():
            self._add(key, backend)

    def backend_for(self, address: model.FastCGIAddress) -> Backend:
        """
        The backend for ``address``, opened on first use.

        A request served by the configuration before a reload (its
        connection was accepted then) may name an address the running one
        does not: it goes to the retiring backend, whose program still
        runs until its last request ends, or else to one opened for it,
        whose program is stopped as soon as its requests end. Neither is
        kept for the running configuration, nor called back from its
        retirement.
        """
        known = self._by_identity.get(id(address))
        if known is not None and known[0] is address:
            return known[1]
        key = address_key(address)
        wanted = self._wanted is None or key in self._wanted
        backend = self.backends.get(key)
        if backend is None and key in self._retiring:
            return self._retiring[key][0]
        if backend is None:
            backend = self._add(key, open_backend(address, self.reactor, self.timeouts))
            if not wanted:
                if backend.app is not None:
                    log.info("FastCGI backend {backend}: started for a request of the configuration "
                             "before the reload, and stopped once its requests end",
                             backend=backend.name)
                # Retired once the request that asked for it has begun.
                self.reactor.callLater(0, self._retire_unwanted, key, backend)
        if wanted:
            # Not one of another configuration: it would outlive its retirement.
            self._by_identity[id(address)] = (address, backend)
        return backend

    def _retire_unwanted(self, key: tuple, backend: Backend) -> None:
        if self.backends.get(key) is backend and self._wanted is not None and key not in self._wanted:
            self._retire(key, self.backends.pop(key))

    def _add(self, key: tuple, backend: Backend) -> Backend:
        if backend.app is not None:
            backend.app.setServiceParent(self)
        self.backends[key] = backend
        return backend

    def _retire(self, key: tuple, backend: Backend) -> None:
        """
        A backend no longer configured: its application stops after its
        last request, unless a reload names it again first. A reload does
        not interrupt requests: they are waited for however long their own
        timers let them run; a stop of the server bounds the wait.
        """
        app = backend.app
        if app is None:
            return
        if not self.running:
            app.disownServiceParent()
            return
        waiting = self._drain_one(backend, None)
        self._retiring[key] = (backend, waiting)

        def drained(_) -> None:
            # Only this retirement's own wait: one taken back (and perhaps
            # retired again since) was cancelled, or is another's.
            if key in self._retiring and self._retiring[key][1] is waiting:
                del self._retiring[key]
                stopping = app.disownServiceParent()
                if isinstance(stopping, Deferred) and not stopping.called:
                    self._stopping.add(stopping)
                    stopping.addBoth(lambda result: self._stopping.discard(stopping) or result)

        waiting.addCallback(drained)

    def _take_back(self, key: tuple) -> Backend:
        """A retiring backend configured again: it stays, its drain is called off."""
        backend, waiting = self._retiring.pop(key)
        waiting.cancel()
        return backend

    def _all(self) -> list[Backend]:
        return [*self.backends.values(), *(backend for backend, _ in self._retiring.values())]

    @property
    def pending(self) -> int:
        """Requests in flight on all backends, retiring ones included."""
        return sum(backend.pending for backend in self._all())

    def stop_restarting(self) -> None:
        """
        The server stops: a spawned program that ends from now on (it
        crashes, or systemd signals the whole cgroup) is not started again
        while the requests drain.
        """
        for backend in self._all():
            if backend.app is not None and backend.app.running:
                backend.app.stop_restarting()

    def drain(self, timeout: Optional[float] = None) -> Deferred:
        """Fires when every backend is idle, or after ``timeout`` seconds whatever remains."""
        timeout = self.timeouts.drain if timeout is None else timeout
        waits = [self._drain_one(backend, timeout) for backend in self._all()]
        return DeferredList(waits).addCallback(lambda _: None)

    def _drain_one(self, backend: Backend, timeout: Optional[float]) -> Deferred:
        """``backend`` idle; after ``timeout`` seconds (``None``: no limit) whatever remains."""
        waiting = backend.idle()
        if waiting.called:
            return waiting
        log.info(
            "FastCGI backend {backend}: waiting{up_to} for {pending} {requests} to finish",
            backend=backend.name,
            up_to="" if timeout is None else f" up to {timeout:g} s",
            pending=backend.pending,
            requests=plural(backend.pending, "request"),
        )

        def gave_up(failure):
            if failure.check(CancelledError):
                return None  # called off: the backend is configured again
            log.warn(
                "FastCGI backend {backend}: drain timeout after {timeout:g} s, "
                "{pending} {requests} still pending",
                backend=backend.name,
                timeout=timeout,
                pending=backend.pending,
                requests=plural(backend.pending, "request"),
            )

        if timeout is not None:
            waiting.addTimeout(timeout, self.reactor)
        return waiting.addErrback(gave_up)

    def stopService(self) -> Deferred:
        Service.stopService(self)
        stops = []
        self.stop_restarting()
        for backend in self._all():
            app = backend.app
            drained = self._drain_one(backend, self.timeouts.drain)
            if app is not None and app.running:
                drained.addCallback(lambda _, app=app: app.stopService())
            stops.append(drained)
        stops.extend(self._stopping)
        return DeferredList(stops).addCallback(lambda _: None)
