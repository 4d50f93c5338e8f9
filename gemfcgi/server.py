"""
The Gemini protocol: one connection, one request, one response.

Shaped like gmid's bufferevents: ``client_read`` is the one place request
bytes are consumed, ``client_write`` the one place response bytes leave.
Handlers never touch the transport: they call ``send_header``,
``client_write`` and ``finish``, and register themselves with ``stream`` as
the push producer that the transport pauses when the client reads slowly.

Every complete response ends with a TLS close_notify, the only sign a Gemini
client has that it got the whole body; one cut short (``cut``) ends without.
Every wait has a timer: the handshake, the request line, and the linger
after close_notify, after which a silent peer whose kernel holds the whole
reply is closed with a FIN (a reset could destroy what it has not read
yet), and one that stopped reading is aborted. Nothing outlives its
timeouts.
"""

from __future__ import annotations

import enum
import inspect
import ipaddress
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gemfcgi import accesslog
from gemfcgi.connections import (
    ConnectionTracker,
    close_in_order,
    close_once_sent,
    default_max_connections,
    held_bytes,
    kernel_queued_bytes,
    socket_host,
    socket_peer,
    reset_by_peer,
    unsent_bytes,
)
from gemfcgi.deadlines import OneTimeout, deadlines_for
from gemfcgi.gemini import status
from gemfcgi.gemini.hosts import ipv4_unmapped
from gemfcgi.gemini.request import (
    DEFAULT_PORT,
    MAX_REQUEST_BYTES,
    UNLOGGED_PATH,
    Request,
    RequestError,
    logged_iri,
    parse_request_line,
    unlogged_iri,
)
from gemfcgi.gemini.status import InvalidHeader, response_header
from gemfcgi.routing import PathSettings, Routes, VirtualHost
from gemfcgi.textlog import log_field, printable
from gemfcgi.tls import TLSFacts
from gemfcgi.upstream import OWN_ENDS, blocks_behind

log = Logger()
# The access line's META for a request whose connection ended before any
# header went out (the client left, or the connection broke).
CLIENT_GONE = "connection closed before the reply"
# How many times a paused reply looks whether its client read, in an idle timeout.
IDLE_LOOKS = 8
# How often a reply cut short looks whether what was written before has
# left for the kernel, so that the FIN follows it.
CUT_CHECK_PERIOD = 0.25


@dataclass
class Timeouts:
    """Seconds; every one of them bounds how long a connection can hold resources."""

    handshake: float = 10.0
    request: float = 10.0
    linger: float = 2.0
    idle: float = 60.0
    # For a FastCGI application or a proxied server: to begin its reply, and
    # the longest pause in its body while the client reads.
    backend: float = 60.0


@dataclass
class Site:
    """
    One configuration, as connections see it.

    A reload builds a new ``Site``; connections keep the one they started
    with, so requests in flight finish with their own configuration.
    ``handlers`` maps a kind of work to the callable that starts it; the
    service fills in the ones that need more than the routing table
    (FastCGI backends).
    """

    routes: Routes
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = field(default_factory=default_max_connections)
    chroot: Optional[str] = None
    handlers: dict[str, Callable[..., None]] = field(default_factory=dict)
    # The service serving it: its access log takes this site's requests.
    service: Any = None


class State(enum.Enum):
    HANDSHAKE = "handshake"
    REQUEST = "request"
    RESPONDING = "responding"
    CLOSING = "closing"
    CLOSED = "closed"


@implementer(IHandshakeListener, IPushProducer, IHalfCloseableProtocol)
class GeminiProtocol(OneTimeout, Protocol):
    """One Gemini connection, inside the TLS layer."""

    # The proxy blocks (their ids) a relayed request went through in this
    # process, this connection's included: the loop check's memory.
    relayed_through: frozenset[int] = frozenset()
    # While the server stops: when the request timeout would have ended a
    # client hurried by ``hurry_the_request``.
    _request_due: Optional[float] = None

    def __init__(self, site: Site, clock: IReactorTime) -> None:
        self.site = site
        self.clock = clock
        self.state = State.HANDSHAKE
        self.tls: Optional[TLSFacts] = None
        # The client's address, noted when the handshake completes.
        self.peer: Any = None
        self.request: Optional[Request] = None
        self.vhost: Optional[VirtualHost] = None
        self.settings: Optional[PathSettings] = None
        self._buffer = b""
        self._deadlines = deadlines_for(clock)
        self._producer: Optional[IPushProducer] = None
        self._header_sent = False
        self.record = accesslog.AccessRecord()
        self.factory: Optional[GeminiFactory] = None
        self.busy = False
        self._last_unsent: Optional[int] = None
        self._unsent_when_paused: Optional[int] = None
        self._looked_at = self._read_at = 0.0
        self._stalled_for = 0.0
        self._lost_in_kernel = 0

    # -- Twisted's edges -------------------------------------------------

    def connectionMade(self) -> None:
        self.record.started = self.clock.seconds()
        self._arm(self.site.timeouts.handshake, self._handshake_timed_out)
        if self.factory is not None:
            self.factory.connections.add(self)

    def _note_peer(self) -> None:
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None)
        if host is not None and (plain := ipv4_unmapped(host)) != host:
            # In the log and REMOTE_ADDR too.
            host = plain
            peer = IPv4Address("TCP", host, peer.port)
        elif host is not None and ":" in host and "%" not in host:
            host, peer = _compressed_ipv6(host, peer)
        self.peer = peer
        if host is None:
            # A unix socket's client has no address (nor usually a name).
            name = getattr(peer, "name", None)
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            host = f"unix:{name}" if name else "unix"
        # As one field of the access line: a unix client's socket name, or
        # a PROXY header's unix address, may hold a space or a quote.
        self.record.client_ip = log_field(host)
        self.record.client_port = getattr(peer, "port", 0)

    def readConnectionLost(self) -> None:
        """
        The client has ended its side (TLS close_notify, or TCP's FIN):
        after a whole request line its reply still goes out, as Gemini has
        nothing more to read; before one, there is nothing to answer, and
        the connection ends as the client ended its side: with a
        close_notify (RFC 8446 6.1), then a FIN.
        """
        if self.state not in (State.RESPONDING, State.CLOSING):
            # The request timer stays, should the close never complete.
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def handshakeCompleted(self) -> None:
        # Behind a PROXY protocol listener the header has been read by now
        # (it precedes TLS), so the peer is the real client from here on.
        self._note_peer()
        self.tls = TLSFacts(self.transport.getHandle())
        self.state = State.REQUEST
        if self.busy:
            self.respond(status.SERVER_UNAVAILABLE, "server busy, try again later")
            return
        self._arm(self.site.timeouts.request, self._request_timed_out)
        if self.factory is not None and self.factory.connections.request_grace is not None:
            # The handshake ended while the server stops.
            self.hurry_the_request(self.factory.connections.request_grace)

    def dataReceived(self, data: bytes) -> None:
        if self.state is not State.REQUEST:
            # Bytes after the request line are ignored: Gemini has no
            # request body and no pipelining.
            return
        self._buffer += data
        self.client_read()

    def connectionLost(self, reason: Failure = None) -> None:
        previous = self.state
        self.state = State.CLOSED
        self._disarm()
        self.stopProducing()
        if previous is State.RESPONDING and self.record.status == 0 and not self.record.meta:
            # No header went out: the access line says why it has no status.
            self.record.meta = CLIENT_GONE
        try:
            if previous in (State.RESPONDING, State.CLOSING):
                self._log_access()
        finally:
            # Whatever failed above, the connection no longer counts: a
            # leaked one would end in 41 for everyone at the limit.
            if self.factory is not None:
                self.factory.connections.remove(self)

    # -- client_read: the request line -----------------------------------

    def client_read(self) -> None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if b"\n" in self._buffer:
                self._refuse_line("request line must end with CRLF")
            elif b"\r" in self._buffer[:-1]:
                self._refuse_line("bare CR in request line")
            elif len(self._buffer) > MAX_REQUEST_BYTES + (self._buffer.endswith(b"\r")):
                # Only a URL of 1024 bytes whose CR is here may still end well.
                self._refuse_line("request line longer than 1024 bytes")
            return
        line, self._buffer = self._buffer[:end], b""
        self.record.request_bytes = end + 2
        self._disarm()
        self.state = State.RESPONDING
        try:
            request = parse_request_line(line)
        except RequestError as error:
            self._note_raw_url(line)
            self.respond(error.code, error.meta)
            return
        self.request = request
        self.record.url = printable(logged_iri(request, self.listener_port))
        self.record.host = (self.tls.server_name if self.tls else None) or request.host
        self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        tls = self.tls
        if tls is not None and tls.malformed_name:
            self.respond(status.BAD_REQUEST, "malformed TLS server name")
            return
        if tls is not None and tls.server_name is not None and tls.server_name != request.host:
            if not tls.name_may_be_an_earlier_ones:
                self._refuse_unrouted(request, "host does not match the TLS server name")
                return
            self.record.host = request.host
        vhost = self.site.routes.select(request.host)
        if vhost is None:
            self._refuse_unrouted(request, "host not served here")
            return
        expected = self.listener_port
        port = DEFAULT_PORT if request.port is None else request.port
        if expected is not None and port != expected:
            self._log_as(request, vhost.settings_for(request.path).log)
            self.respond(status.PROXY_REQUEST_REFUSED, "port not served here")
            return
        self.vhost = vhost
        proxied = vhost.proxy_for(request.host, port) if vhost.proxies else None
        self.settings = settings = proxied or vhost.settings_for(request.path)
        self._log_as(request, settings.log)
        if proxied is not None:
            block = id(proxied.proxy)
            behind = (blocks_behind(socket_peer(self.transport), socket_host(self.transport))
                      if OWN_ENDS else frozenset())
            if block in behind:
                # Relayed here by this very process through this very block,
                # to be relayed again: a loop that would take a connection
                # per turn until none is left.
                log.warn("{client} {url}: a proxy block of this server relayed the request to "
                         "this server, where the same block would relay it again: answered 43 "
                         "(a proxy loop)", client=self.record.client, url=self.record.url)
                self.respond(status.PROXY_ERROR, "proxy loop: relayed to this server itself")
                return
            self.relayed_through = behind | {block}
        if settings.require_client_ca is not None:
            self._run("client_ca", request, settings)
            return
        self.handle(request, settings)

    def _refuse_unrouted(self, request: Request, meta: str) -> None:
        """``53`` for a request no server takes, kept out of the log if the TLS name's server logs nothing."""
        if self._quiet_server_name() is not None:
            self._log_as(request, False)
        self.respond(status.PROXY_REQUEST_REFUSED, meta)

    def _log_as(self, request: Request, logged: bool) -> None:
        """
        Under ``log off``, no access line, and warnings name the request by
        its host alone (``unlogged_iri``): its path and query stay out.
        """
        self.record.enabled = logged
        if not logged:
            self.record.url = printable(unlogged_iri(request, self.listener_port))

    def handle(self, request: Request, settings: PathSettings) -> None:
        """Start the handler for an accepted request (after any certificate check)."""
        if settings.proxy is not None:
            self._run("proxy", request, settings)
        elif settings.block is not None:
            self._run("block", request, settings)
        elif settings.fastcgi is not None:
            self._run("fastcgi", request, settings)
        else:
            self._run("static", request, settings)

    def _run(self, handler: str, request: Request, settings: PathSettings) -> None:
        """
        Call a handler; should it fail, its request gets ``40`` (or, with the
        header already out, a cut connection, since close_notify would pass
        a partial body off as whole) and the failure is logged with the
        request, rather than the client being left with nothing.
        """
        try:
            result = self.site.handlers[handler](self, request, settings)
        except Exception:
            self._handler_failed(Failure(), handler)
            return
        if result is None:
            return
        # A handler of one's own may be asynchronous (a coroutine, a
        # Deferred): its failure is this request's too, not an unhandled
        # error in the log with the client left waiting.
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            result.addErrback(self._handler_failed, handler)

    def _handler_failed(self, failure: Failure, handler: str) -> None:
        log.failure(
            "{client} {url}: the {handler} handler failed",
            failure=failure,
            client=self.record.client,
            url=self.record.url,
            handler=handler,
        )
        if self.state is not State.RESPONDING:
            return  # the client left meanwhile, or the reply had ended
        if not self._header_sent:
            self.respond(status.TEMPORARY_FAILURE, "internal error")
        else:
            self.cut()

    @property
    def listener_port(self) -> Optional[int]:
        """
        The port a URL must name: the socket's (behind a PROXY header, the
        port the client connected to at the balancer).
        """
        known = getattr(self.transport, "local_port", None)
        if known is not None:
            return known
        return getattr(self.transport.getHost(), "port", None)

    # -- client_write: the response --------------------------------------

    def send_header(self, code: int, meta: str = "", body: bytes = b"") -> bool:
        """
        Write the response header, and the start of the body if the caller
        has it already (one TLS record and one write for a whole small
        reply); ``False`` if it was not sent.

        An invalid header from a handler becomes ``40`` here, the one place
        that can still answer correctly.
        """
        if self._header_sent or self.state is not State.RESPONDING:
            return False
        try:
            header = response_header(code, meta)
        except InvalidHeader as error:
            log.warn(
                "{client} {url}: refusing invalid header {code} {meta!r}: {error}",
                client=self.record.client,
                url=self.record.url,
                code=code,
                # A META may be built from the path and query (%p, %q).
                meta=meta if self.record.enabled else "... (log off)",
                error=error,
            )
            code, meta = status.TEMPORARY_FAILURE, "internal error"
            header = response_header(code, meta)
        self._header_sent = True
        self.record.status = code
        self.record.meta = status.sent_meta(code, meta)
        self.client_write(header + body if code // 10 == 2 else header)
        return True

    def client_write(self, data: bytes) -> None:
        if self.state is State.RESPONDING:
            self.record.bytes_sent += len(data)
            self.transport.write(data)
            if self._producer is not None and getattr(self.transport, "send_failed", False):
                # The peer is gone (a reset): the reactor ends the connection
                # on its next turn, and until then the body would be read
                # for nothing, a file's up to 4 MiB a turn.
                self._producer.pauseProducing()

    def batched(self) -> ContextManager[None]:
        """
        Writes made inside leave together (one TLS send) when the transport
        can batch them; for handlers woken by something other than the
        client, such as a FastCGI reply.
        """
        batch = getattr(self.transport, "writes_batched", None)
        return batch() if batch is not None else nullcontext()

    def stream(self, producer: IPushProducer) -> None:
        """
        Let ``producer`` write the body; the transport pauses it when full.

        The protocol stands between them: a client that stops reading keeps
        the producer paused, and one paused for the idle timeout is cut.
        """
        self._producer = producer
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        # The transport resumes a producer only once its buffer is empty,
        # which behind a large kernel send buffer can take minutes for a
        # client that reads slowly but steadily: what is unsent is noted,
        # and the client counts as reading while it goes down.
        self._unsent_when_paused = unsent_bytes(self.transport)
        self._looked_at = self._read_at = self.clock.seconds()
        self._arm(self.site.timeouts.idle / IDLE_LOOKS, self._paused_check)
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._disarm()
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    def finish(self) -> None:
        """
        End the response: flush, close_notify, and a linger for the peer's.

        The linger only counts once every byte has left: a client still
        reading the end of a large reply is not cut while it makes progress.
        """
        if self.state is not State.RESPONDING:
            return
        if self._producer is not None:
            self._producer = None
            self.transport.unregisterProducer()
        self.state = State.CLOSING
        self.record.finished = self.clock.seconds()
        self._last_unsent = None
        self._stalled_for = 0.0
        self._arm(self.site.timeouts.linger, self._linger_check)
        self.transport.loseConnection()

    def cut(self) -> None:
        """
        End a response that is not whole, without the close_notify that
        ``finish`` sends. Gemini has no length field, so that close_notify
        is what tells a client a response is complete; a body cut short must
        not pass for one that ended. Whatever streams it is stopped.

        What was written before still reaches the client, then a FIN: a
        reset would destroy what the client's kernel holds for it unread.
        A client that reads none of it for the idle timeout is reset.
        """
        if self.state is not State.RESPONDING:
            return
        self.state = State.CLOSING
        self.record.finished = self.clock.seconds()
        self._disarm()
        self._let_the_producer_go()
        self._last_unsent = None
        self._stalled_for = 0.0
        # Looked at on a later turn: a cut made while a read's writes are
        # batched has bytes the TLS layer sends only when the batch ends.
        self._arm(0, self._cut_check)

    def _cut_check(self) -> None:
        unsent = unsent_bytes(self.transport)
        # The FIN once the peer has taken every byte, as at a linger's end:
        # sent behind bytes still in the kernel, it let the socket hold them
        # past the idle timeout of a client that reads none of them.
        if (unsent == 0 and close_in_order(self.transport)) or \
                (unsent is None and close_once_sent(self.transport)):
            return
        if self._gone_with_a_reset(unsent):
            return
        if self._still_reading(unsent, CUT_CHECK_PERIOD):
            self._arm(CUT_CHECK_PERIOD, self._cut_check)
            return
        self._reset_at_the_end(unsent)

    def _let_the_producer_go(self) -> None:
        """Unregister and stop what writes the body, if anything does."""
        producer, self._producer = self._producer, None
        if producer is not None:
            self.transport.unregisterProducer()
            producer.stopProducing()

    def answer_the_stop(self) -> bool:
        """
        The server stops, its drain timeout is over, and this request has
        no header yet, or its request line has not all come: it gets ``41``
        rather than a bare cut, and whatever was producing its reply (a
        FastCGI or proxy relay) lets its backend go. The connection then
        ends by itself, with a FIN as soon as the reply is in the kernel.
        False if a header is out already.
        """
        if self.state is State.REQUEST:
            # Its request line is not whole yet (or has not begun): it is
            # told why none will be read, as a request timeout tells it.
            self._note_raw_url(self._buffer)
        elif self.state is State.RESPONDING and not self._header_sent:
            self._let_the_producer_go()
        else:
            return False
        self.respond(status.SERVER_UNAVAILABLE, "server is stopping")
        if close_once_sent(self.transport):
            self._disarm()
        return True

    def hurry_the_request(self, grace: float) -> None:
        """
        The server stops: a client that has sent nothing of its request
        yet has ``grace`` seconds to begin it, then gets ``41``, where the
        request timeout would hold the stop up for as long. One whose
        request line has begun keeps the whole request timeout. A
        handshake not done has ``grace`` seconds to end, and then as long
        again to begin the request.
        """
        if self.state is State.HANDSHAKE:
            left = self._deadlines.left(self)
            if left is not None and left > grace:
                self._arm(grace, self._handshake_timed_out)
            return
        if self.state is not State.REQUEST or self._buffer or self._on_timeout is None:
            return
        left = self._deadlines.left(self)
        if left is None or left <= grace:
            return
        self._request_due = self.clock.seconds() + left
        self._arm(grace, self._stop_wait_over)

    def _stop_wait_over(self) -> None:
        if self._buffer and self._request_due is not None:
            self._arm(max(self._request_due - self.clock.seconds(), 0), self._request_timed_out)
            return
        self.answer_the_stop()

    def _linger_check(self) -> None:
        linger = self.site.timeouts.linger
        unsent = unsent_bytes(self.transport)
        if unsent == 0 and close_in_order(self.transport):
            # Every byte has reached the peer's kernel, not necessarily the
            # peer: one that reads in bursts (a proxy whose own client is
            # slow) may not have read it yet, and a reset would destroy
            # what it has not read. So the connection ends with a FIN.
            return
        if self._gone_with_a_reset(unsent):
            return
        if self._still_reading(unsent, linger):
            self._arm(linger, self._linger_check)
            return
        self._reset_at_the_end(unsent)

    def _gone_with_a_reset(self, unsent: Optional[int]) -> bool:
        """
        End at once a connection whose peer reset it with bytes unsent (a
        client that closed before its reply came): they never reach it, and
        the kernel's queue, which still counts them, would keep it to the
        idle timeout as a client that reads nothing.
        """
        if not unsent or not reset_by_peer(self.transport):
            return False
        self._reset()
        return True

    def _reset_at_the_end(self, unsent: Optional[int]) -> None:
        """
        Reset a connection whose response is over (finished or cut). With
        bytes of it still unread for the idle timeout, that is a client
        that read nothing, said as one whose reply was paused is, and the
        access line's duration runs to the reset, not to when the reply
        was handed over: a reply that fitted in the kernel's buffers looked
        delivered in a few milliseconds.
        """
        if unsent:
            self.record.finished = None
            self._idle_timed_out()
        else:
            self._reset()

    def _still_reading(self, unsent: Optional[int], period: float) -> bool:
        """
        Whether bytes are still unsent and the client took some of them
        within the idle timeout; called every ``period`` seconds while the
        connection ends.
        """
        if not unsent:
            return False
        if self._last_unsent is None or unsent < self._last_unsent:
            self._stalled_for = 0.0
        else:
            self._stalled_for += period
        self._last_unsent = unsent
        return self._stalled_for < self.site.timeouts.idle

    def respond(self, code: int, meta: str = "") -> None:
        """A header-only response, then close."""
        if self.state in (State.REQUEST, State.HANDSHAKE):
            self.state = State.RESPONDING
        self.send_header(code, meta)
        self.finish()

    # -- timers ------------------------------------------------------------

    def _handshake_timed_out(self) -> None:
        self.transport.abortConnection()

    def _paused_check(self) -> None:
        """
        Paused: cut the client once it has read nothing for the idle
        timeout, looking several times in it. Less unsent counts as a read
        made by the look before: right after a pause the kernel still moves
        bytes into the client's receive buffer, and a client that reads
        nothing would otherwise gain a period.
        """
        now = self.clock.seconds()
        before, unsent = self._unsent_when_paused, unsent_bytes(self.transport)
        if before is not None and unsent is not None and unsent < before:
            self._unsent_when_paused = unsent
            self._read_at = self._looked_at
        self._looked_at = now
        idle = self.site.timeouts.idle
        left = idle - (now - self._read_at)
        if left > 0:
            self._arm(min(idle / IDLE_LOOKS, left), self._paused_check)
            return
        self._idle_timed_out()

    def _idle_timed_out(self) -> None:
        log.info(
            "{client} {url}: client read nothing for {idle:.0f} s; closing",
            client=self.record.client,
            url=self.record.url,
            idle=self.site.timeouts.idle,
        )
        self._reset()

    def _reset(self) -> None:
        """
        Reset a client that stopped reading. The reset destroys what the
        kernel still held for it too, which the access line then does not
        count as sent.
        """
        self._lost_in_kernel = kernel_queued_bytes(self.transport)
        self.transport.abortConnection()

    def _request_timed_out(self) -> None:
        self._note_raw_url(self._buffer)
        self.respond(status.BAD_REQUEST, "request timeout")

    def _refuse_line(self, meta: str) -> None:
        """A request line that cannot be read: 59, with what came of it in the log."""
        self._note_raw_url(re.split(rb"[\r\n]", self._buffer, maxsplit=1)[0])
        self.respond(status.BAD_REQUEST, meta)

    def _note_raw_url(self, data: bytes) -> None:
        """A request line that did not parse, as the log shows it."""
        quiet = self._quiet_server_name()
        if quiet is not None:
            self.record.enabled = False
            self.record.url = printable(f"gemini://{quiet}{UNLOGGED_PATH}")
            return
        # Bytes that are not UTF-8 are shown as what they are (\xff).
        self.record.url = log_field(data[:MAX_REQUEST_BYTES].decode("utf-8", "surrogateescape"))

    def _quiet_server_name(self) -> Optional[str]:
        """
        The TLS server name, if the server it names logs nothing at its own
        level (``log off``): a request that server refuses before any routing
        (``59``, a request timeout, ``53``) is kept out of the log as its
        routed requests are.
        """
        name = self.tls.server_name if self.tls is not None else None
        if not name:
            return None
        vhost = self.site.routes.select(name)
        return name if vhost is not None and vhost.server.options.log is False else None

    def _log_access(self) -> None:
        if not self.record.enabled:
            return
        # Written but still in the process as the connection ends, or in
        # the kernel when a reset (``_reset``) destroyed it: the reply went
        # out without them, and the size field counts what left.
        lost = held_bytes(self.transport) + self._lost_in_kernel + \
            getattr(self.transport, "bytes_lost", 0)
        self.record.bytes_sent = max(0, self.record.bytes_sent - lost)
        if self.tls is not None and self.tls.client_certificate is not None:
            self.record.common_name = self.tls.client_certificate.common_name or "-"
        accesslog.emit(self.record, self.clock.seconds(), self.site.service, self.site)


def _compressed_ipv6(host: str, peer: Any) -> tuple[str, Any]:
    """
    An IPv6 client's address in its usual short form: a PROXY v2 header's
    comes spelt out in full (``2001:db8:0:0:0:0:0:1``), and an IPv4 client's
    mapped one (``0:0:0:0:0:ffff:c000:207``) is the IPv4 address it is.
    """
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host, peer
    if address.ipv4_mapped is not None:
        mapped = str(address.ipv4_mapped)
        return mapped, IPv4Address("TCP", mapped, peer.port)
    compressed = address.compressed
    if compressed == host:
        return host, peer
    return compressed, IPv6Address("TCP", compressed, peer.port)


class GeminiFactory(Factory):
    """
    Builds ``GeminiProtocol``s for the current ``Site``.

    ``site`` may be replaced at any time (a reload); existing connections
    keep the ``Site`` they were built with.
    """

    noisy = False

    def __init__(
        self,
        site: Site,
        clock: Optional[IReactorTime] = None,
        connections: Optional[ConnectionTracker] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.site = site
        self.clock = clock
        self.connections = connections if connections is not None else ConnectionTracker()
        # Set when this factory sits directly on a TCP port (``gemfcgi.tlsport``):
        # the connection creator its transports use, and the hard limit.
        self.tls: Any = None
        self.limit: Optional[int] = None

    def buildProtocol(self, addr) -> Optional[GeminiProtocol]:
        if self.limit is not None and len(self.connections) >= self.limit:
            self.connections.refuse(self.limit, self.clock)
            return None
        protocol = GeminiProtocol(self.site, self.clock)
        protocol.factory = self
        protocol.busy = len(self.connections) >= self.site.max_connections
        return protocol
