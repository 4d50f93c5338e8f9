"""
The FastCGI side of one Gemini request.

Shaped like gmid's ``fcgi.c`` on bufferevents, with what it lacks added:
``FastCGIClientProtocol`` is the backend connection, a thin layer that feeds
bytes to the pure ``RecordDecoder`` and hands each record to one small
handler; ``Relay`` pairs it with the Gemini connection: STDOUT goes out
through ``client_write``, and the Gemini transport's backpressure comes back
as ``pauseProducing`` on the backend transport, so a response of any size
costs a bounded amount of memory however slowly the client reads.

Every way a backend can fail ends in ``Relay._fail``, the one place that
decides what the client sees (``reply_for``) and writes the log line naming
the client, the URL and the backend. The client always gets a header; a
reply that ends whole ends with a TLS close_notify, and one the backend
broke off after its header is cut without one, so that the client can tell
the two apart (as the Gemini specification intends). Every wait (connect,
first header, body) has a timer.

One connection per request, request id 1, no FCGI_KEEP_CONN: the backend
closes when it is done, and nothing is shared between requests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol as TypingProtocol

from twisted.internet import error as twisted_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gemfcgi.deadlines import deadlines_for
from gemfcgi.fastcgi.records import (
    EndRequest,
    FastCGIProtocolError,
    ProtocolStatus,
    Record,
    RecordDecoder,
    RecordType,
    encode_abort,
)
from gemfcgi.fastcgi.reply import ReplyHeader, ReplyHeaderReader
from gemfcgi.gemini import status
from gemfcgi.pacedrelay import UNSHOWN_REPLY, PacedRelay, twisted_connect_timeout
from gemfcgi.textlog import printable

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol

log = Logger()

REQUEST_ID = 1
# How long a backend is read after a reply without a body has gone out, for
# its STDERR records and END_REQUEST (see ``Relay._read_the_rest``).
TAIL_TIMEOUT = 5.0
# Of the body of an application's own 42 (fcgiwrap's 502 page), what is
# logged as its reason.
REASON_MAX_BYTES = 300
# Seconds past the connect timeout at which a relay gives up a connect
# itself: every endpoint has that timeout of its own, and says more.
CONNECT_BACKSTOP = 0.5
# A backend's STDERR is read no faster than this, per second: each record
# counts its bytes and its 8-byte header and padding, so that a stream of
# tiny records (some 50,000 a second at most: 1.4 s of CPU in 8 s, where
# reading them all took 7.2 s) cannot keep the process busy for the whole
# reply timeout, while an application that logs a line per record is not
# held back. Beyond it, the backend is not read until the second is over
# (its STDOUT waits too).
STDERR_PACE = 1024 * 1024
STDERR_RECORD_WEIGHT = 20
STDERR_PACE_WINDOW = 1.0


@dataclass(frozen=True)
class FastCGITimeouts:
    """
    Seconds; each bounds how long a request or a stop can wait on a backend.

    ``connect``: to open the backend connection. ``reply``: from connecting
    to a complete header, and between body records while the client is
    reading (a backend that stalls mid-body must not hold the client for
    ever). ``drain``: how long stopping waits for requests in flight.
    ``kill``: between SIGTERM and SIGKILL for a spawned application.
    """

    connect: float = 5.0
    reply: float = 60.0
    drain: float = 30.0
    kill: float = 5.0


class Fault(enum.Enum):
    """What went wrong with a backend, as the log line names it."""

    CONNECT = "cannot connect"
    CONNECT_TIMEOUT = "connect timeout"
    REPLY_TIMEOUT = "reply timeout"
    BAD_REPLY = "bad reply"
    PROTOCOL = "protocol error"
    OVERLOADED = "overloaded"
    REFUSED = "request refused"
    FAILED = "request failed"
    TRUNCATED = "reply truncated"
    APP_FAILED = "application failed to start"
    APP_ERROR = "the application answered"


# Faults whose detail quotes what the application sent (``UNSHOWN_REPLY``).
QUOTES_THE_REPLY = frozenset({Fault.BAD_REPLY, Fault.APP_ERROR})


def reply_for(fault: Fault) -> tuple[int, str]:
    """The header a client gets for ``fault`` when no header was sent yet."""
    if fault is Fault.OVERLOADED:
        return status.SERVER_UNAVAILABLE, "server unavailable"
    return status.CGI_ERROR, "CGI error"


class Backend(TypingProtocol):
    """What the relay needs of a backend (``gemfcgi.fastcgi.backends.Backend``)."""

    name: str
    pending: int

    def connect(self, protocol: Protocol) -> Deferred: ...

    def begin(self, relay: "Relay") -> None: ...

    def end(self, relay: "Relay") -> None: ...

    def answered(self) -> None: ...

    def log_stderr(self, where: str, data: bytes) -> None: ...


def _record_name(record_type: int) -> str:
    try:
        return RecordType(record_type).name
    except ValueError:
        return str(record_type)


def _status_name(protocol_status: int) -> str:
    try:
        return ProtocolStatus(protocol_status).name
    except ValueError:
        return str(protocol_status)


class FastCGIClientProtocol(Protocol):
    """
    One backend connection: the request out, records in, events to the relay.

    The record handlers are a table, as in gmid; anything not in it, and any
    record for another request, is a protocol error.
    """

    def __init__(self, relay: "Relay", request: bytes) -> None:
        # Let go of (None) once the connection ends, or once the relay ends
        # before it is made: Twisted's TCP client connection is a reference
        # cycle (connector, transport, the endpoint's factory and Deferred)
        # left to the garbage collector, and holding the relay from it would
        # keep the client's connection too, until a full collection.
        self.relay: Optional[Relay] = relay
        self._request = request
        self._decoder = RecordDecoder()
        # END_REQUEST came: records after it are the backend's fault, not
        # the leftovers of a client that went away.
        self.ended = False
        self._heard = False

    def connectionMade(self) -> None:
        if self.relay is not None and self.relay.backend_connected(self):
            self.transport.write(self._request)
        else:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.relay is None:
            return
        if not self._heard:
            # Whatever it says, the program runs and took this request: a
            # crash later in it is a fault of the request, not a failed start.
            self._heard = True
            self.relay.backend.answered()
        if self.relay.finished:
            # The client went away (or the reply ended) while this read was
            # on its way: nothing is left to relay it to.
            return
        with self.relay.client.batched():
            try:
                records = self._decoder.feed(data)
            except FastCGIProtocolError as failure:
                self._dispatch(failure.records)
                self.relay.protocol_error(str(failure))
                return
            self._dispatch(records)

    def request_unread(self) -> bool:
        """
        Whether the application has yet to read any of the request (a unix
        connection it never accepted; other transports cannot say: no).
        """
        unread = getattr(self.transport, "unread_by_peer", None)
        return unread is not None and unread() > 0

    def connectionLost(self, reason: Failure = None) -> None:
        relay, self.relay = self.relay, None  # no event follows
        if relay is None:
            return
        if not self._heard and getattr(self.transport, "request_taken", False):
            # It read the request and went without a word: it ran, and
            # crashed on this request's input; no failed start.
            self._heard = True
            relay.backend.answered()
        reset = reason is not None and not reason.check(twisted_error.ConnectionDone)
        relay.backend_closed(self._decoder.buffered, reset)

    def _dispatch(self, records: list[Record]) -> None:
        # STDOUT records that follow one another are relayed as one write:
        # a backend that sends a byte per record must not make the client a
        # TLS record of each.
        stdout: list[bytes] = []
        for index, record in enumerate(records):
            if (record.type == RecordType.STDOUT and record.request_id == REQUEST_ID
                    and not self.relay.finished):
                stdout.append(record.content)
                continue
            if stdout:
                # (``join`` of one item gives that item back, copying nothing.)
                self._on_stdout(b"".join(stdout))
                stdout = []
            if self.relay.finished:
                if self.ended:
                    self.relay.ignored_after_end(len(records) - index)
                return
            if record.request_id != REQUEST_ID:
                self.relay.protocol_error(
                    f"request id mismatch: expected {REQUEST_ID}, got {record.request_id} "
                    f"(record type {_record_name(record.type)}, length {len(record.content)})"
                )
                return
            handler = self._HANDLERS.get(record.type)
            if handler is None:
                self.relay.protocol_error(
                    f"unexpected record type {_record_name(record.type)} "
                    f"(length {len(record.content)})"
                )
                return
            handler(self, record.content)
        if stdout:
            self._on_stdout(b"".join(stdout))

    def _on_stdout(self, content: bytes) -> None:
        self.relay.on_stdout(content)

    def _on_stderr(self, content: bytes) -> None:
        self.relay.on_stderr(content)

    def _on_end_request(self, content: bytes) -> None:
        self.ended = True
        try:
            end = EndRequest.decode(content)
        except FastCGIProtocolError as failure:
            self.relay.protocol_error(str(failure))
            return
        self.relay.on_end_request(end)

    # Plain functions, not bound methods kept on the instance: those would
    # make each connection a reference cycle for the garbage collector.
    _HANDLERS: dict[int, Callable[["FastCGIClientProtocol", bytes], None]] = {
        RecordType.STDOUT: _on_stdout,
        RecordType.STDERR: _on_stderr,
        RecordType.END_REQUEST: _on_end_request,
    }


class Relay(PacedRelay):
    """
    One request from connect to the last byte, and the producer the Gemini
    transport pauses when the client reads slowly.

    It is registered with ``client.stream`` before the backend is even
    connected, so a client that goes away at any moment reaches
    ``stopProducing``: the backend gets ABORT_REQUEST and its connection is
    closed. A pause that arrives before the backend connects is remembered.
    """

    BAD_REPLY = Fault.BAD_REPLY
    REPLY_TIMEOUT = Fault.REPLY_TIMEOUT

    def __init__(
        self,
        client: "GeminiProtocol",
        backend: Backend,
        request: bytes,
        timeouts: FastCGITimeouts,
        clock: IReactorTime,
    ) -> None:
        self.client = client
        self.backend = backend
        self.timeouts = timeouts
        self.clock = clock
        self.finished = False
        self._request = request
        self._reader: Optional[ReplyHeaderReader] = ReplyHeaderReader()
        self._protocol: Optional[FastCGIClientProtocol] = None
        # The protocol handed to the backend's connect, until it connects.
        self._unconnected: Optional[FastCGIClientProtocol] = None
        self._connecting: Optional[Deferred] = None
        self._paused = False
        # The client has its whole reply; the backend is still read (below).
        self._tail = False
        # An application's own 42 (CGI 5xx): its META and the start of the
        # body, which says why (fcgiwrap: "Cannot get script name, ...").
        self._app_error: Optional[tuple[str, bytearray]] = None
        self._deadlines = deadlines_for(clock)
        # STDERR's pace: what the current second has taken, since when, and
        # the call that reads the backend again once a flood held it.
        self._stderr_spent = 0
        self._stderr_since = 0.0
        self._stderr_release: Optional[IDelayedCall] = None
        self._stderr_holds = 0
        self._connect_started = 0.0

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        self._connect_started = self.clock.seconds()
        self.backend.begin(self)
        self.client.stream(self)
        self._unconnected = FastCGIClientProtocol(self, self._request)
        connecting = self.backend.connect(self._unconnected)
        if not (self.finished or connecting.called):
            # A unix socket connects in the call; only a connect still under
            # way (TCP, a full backlog) needs its own timer.
            self._connecting = connecting
            # A backstop: the endpoint's own timeout (the same) says more.
            self._arm(self.timeouts.connect + CONNECT_BACKSTOP, self._connect_timed_out)
        connecting.addErrback(self._connect_failed)

    def backend_connected(self, protocol: FastCGIClientProtocol) -> bool:
        """The connection is open; ``False`` if the request is already over."""
        if self.finished:
            return False
        self._connecting = None
        self._unconnected = None
        self._protocol = protocol
        if self._paused:
            protocol.transport.pauseProducing()
        self._arm(self.timeouts.reply, self._reply_timed_out)
        return True

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self.finished or failure.check(CancelledError):
            return
        if failure.check(twisted_error.TimeoutError):
            # Twisted's TCP connect timeout in the timer's words; another
            # (an endpoint string's own, a full backlog) in its own.
            said = self._not_connected() if twisted_connect_timeout(failure) else failure.getErrorMessage()
            self._fail(Fault.CONNECT_TIMEOUT, said)
        else:
            self._fail(Fault.CONNECT, failure.getErrorMessage())

    def _connect_timed_out(self) -> None:
        self._fail(Fault.CONNECT_TIMEOUT, self._not_connected())

    def _not_connected(self) -> str:
        waited = round(self.clock.seconds() - self._connect_started, 1)
        return f"not connected after {waited:g} s"

    def untaken_since(self, when: float) -> bool:
        """
        Whether this request, connected before ``when``, still waits unread
        in the application's backlog (asked as a spawned program's run has
        ended: see ``SpawnedApp``).
        """
        if self._protocol is None or self._reader is None or self._connect_started >= when:
            return False
        return self._protocol.request_unread()

    def backend_failed(self, why: str) -> None:
        """The application died as it started; a request it has not begun to answer ends now."""
        if self._reader is not None:
            self._fail(Fault.APP_FAILED, why)

    # -- records from the backend -----------------------------------------

    def on_stdout(self, data: bytes) -> None:
        if self._tail:
            # The body of a reply that has none: dropped, as in gmid.
            if self._app_error is not None:
                reason = self._app_error[1]
                reason += data[: REASON_MAX_BYTES - len(reason)]
            return
        self.reply_data(data)

    def _relay_header(self, reply: ReplyHeader) -> None:
        if not reply.sends_body:
            # Only 2x replies have a body (gmid does the same): the rest is dropped.
            self.client.send_header(reply.code, reply.meta)
            if reply.code == status.CGI_ERROR:
                self._app_error = (reply.meta, bytearray(reply.body[:REASON_MAX_BYTES]))
            self._read_the_rest()
            return
        self.client.send_header(reply.code, reply.meta, reply.body)
        if self._paused:
            self._disarm()
        else:
            # The body's wait starts now (the same timer, reset).
            self._arm(self.timeouts.reply, self._reply_timed_out)

    def _read_the_rest(self) -> None:
        """
        The client's reply is whole and ends now; the backend is read on,
        for up to ``TAIL_TIMEOUT`` seconds, until its END_REQUEST. Apps
        often say why they refused a request after saying so: flup sends
        what the application wrote to ``wsgi.errors`` once its reply is
        out. Its STDERR records and a failing appStatus are logged as for
        any reply; the END_REQUEST also shows a spawned program works.
        """
        self._tail = True
        self.client.finish()
        if self._paused and self._protocol is not None:
            self._paused = False
            if not self._held:
                self._protocol.transport.resumeProducing()
        self._arm(TAIL_TIMEOUT, self._end_tail)

    def _end_tail(self) -> None:
        """The backend is read to its end: an application's own 42 is logged with its reason."""
        if self.finished:
            return
        if self._app_error is not None:
            meta, body = self._app_error
            reason = " ".join(body.decode("utf-8", "replace").split())  # on one line
            detail = f"{status.CGI_ERROR} {meta}" + (f": {printable(reason)}" if reason else "")
            self._log_fault(Fault.APP_ERROR, detail)
        self._close()

    def ignored_after_end(self, count: int) -> None:
        """Records a backend sent after its END_REQUEST: the reply was whole, and they are dropped."""
        self._log_fault(Fault.PROTOCOL, f"{count} record(s) after END_REQUEST ignored", "; after its reply")

    def on_stderr(self, data: bytes) -> None:
        self.backend.log_stderr(f"{self.client.record.client} {self.client.record.url}", data)
        now = self.clock.seconds()
        if now - self._stderr_since >= STDERR_PACE_WINDOW:
            self._stderr_since, self._stderr_spent = now, 0
        self._stderr_spent += len(data) + STDERR_RECORD_WEIGHT
        if self._stderr_spent > STDERR_PACE and not self._held and self._protocol is not None:
            self._held = True
            self._stderr_holds += 1
            self._protocol.transport.pauseProducing()
            self._stderr_release = self.clock.callLater(
                self._stderr_since + STDERR_PACE_WINDOW - now, self._release_stderr)

    def _timeout_note(self) -> str:
        if not self._stderr_holds:
            return ""
        return (f" (its STDERR came faster than {STDERR_PACE // (1024 * 1024)} MB/s, and was read "
                f"no faster for {self._stderr_holds} s of it)")

    def _release_stderr(self) -> None:
        """The second is over: the backend is read again, unless its client holds it back."""
        self._stderr_release = None
        self._held = False
        self._stderr_since, self._stderr_spent = self.clock.seconds(), 0
        if not self._paused and self._protocol is not None:
            self._protocol.transport.resumeProducing()

    def on_end_request(self, end: EndRequest) -> None:
        statuses = f"appStatus {end.app_status}, protocolStatus {_status_name(end.protocol_status)}"
        if self._tail:
            if end.app_status != 0 or end.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
                self._log_fault(Fault.FAILED, statuses, "; after its reply")
            self._end_tail()
        elif end.protocol_status == ProtocolStatus.OVERLOADED:
            self._fail(Fault.OVERLOADED, statuses)
        elif end.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
            self._fail(Fault.REFUSED, statuses)
        elif self._reader is not None:
            message = self._reader.end().message
            if end.app_status != 0:
                message = f"{message}; {statuses}"
            self._fail(Fault.BAD_REPLY, message)
        else:
            if end.app_status != 0:
                # The body is whole (END_REQUEST closed it), so it ends as
                # any other; the status is worth a line all the same.
                self._log_fault(Fault.FAILED, statuses)
            self._end()

    def protocol_error(self, message: str) -> None:
        self._fail(Fault.PROTOCOL, message)

    def backend_closed(self, cut_bytes: int, reset: bool = False) -> None:
        self._protocol = None
        if self.finished:
            return
        if self._tail:
            self._end_tail()  # without END_REQUEST: the client has its reply all the same
            return
        cut = f" ({cut_bytes} bytes of a record cut off)" if cut_bytes else ""
        if self._reader is not None:
            self._fail(Fault.BAD_REPLY, self._reader.end(reset).message + cut)
        else:
            how = "reset by the backend" if reset else "closed"
            self._fail(Fault.TRUNCATED, f"connection {how} after the header without END_REQUEST" + cut)

    # -- IPushProducer, driven by the Gemini transport ---------------------

    def stopProducing(self) -> None:
        """The client went away: tell the backend, close it, free everything."""
        if self.finished:
            return
        protocol = self._protocol
        if protocol is not None:
            protocol.transport.write(encode_abort(REQUEST_ID))
        self._close()

    # -- the ends -----------------------------------------------------------

    def _fail(self, fault: Fault, detail: str) -> None:
        """
        The one place a backend fault becomes a reply and a log line.

        Before the header the client gets one (``reply_for``). After it, the
        body is not whole: the connection is cut, without the close_notify
        that tells a Gemini client a response is complete.
        """
        if self.finished:
            return
        if self._tail:
            self._log_fault(fault, detail, "; after its reply")
            self._end_tail()
            return
        header_sent = self._reader is None
        self._log_fault(fault, detail, "; body cut short" if header_sent else "")
        if header_sent:
            self._close()
            self.client.cut()
            return
        code, meta = reply_for(fault)
        self.client.send_header(code, meta)
        self._end()

    def _log_fault(self, fault: Fault, detail: str, after: str = "") -> None:
        if fault in QUOTES_THE_REPLY and not self.client.record.enabled:
            detail = UNSHOWN_REPLY
        log.warn(
            "{client} {url}: FastCGI backend {backend} ({pending} pending): {fault}: {detail}"
            "{after}",
            client=self.client.record.client,
            url=self.client.record.url,
            backend=self.backend.name,
            pending=self.backend.pending,
            fault=fault.value,
            detail=detail,
            after=after,
        )

    def _end(self) -> None:
        """The reply is complete: close both sides cleanly."""
        if self.finished:
            return
        self._close()
        self.client.finish()

    def _close(self) -> None:
        self.finished = True
        self._disarm()
        release, self._stderr_release = self._stderr_release, None
        if release is not None and release.active():
            release.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            if not protocol.ended:
                self.backend.given_up(protocol)
            protocol.transport.loseConnection()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        unconnected, self._unconnected = self._unconnected, None
        if unconnected is not None:
            unconnected.relay = None
        self.backend.end(self)
