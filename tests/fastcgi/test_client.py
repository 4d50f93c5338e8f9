"""
The FastCGI relay without sockets: records in from a fake backend, bytes out
to a fake Gemini client, time from a clock.

Both sides are ``StringTransport``s; the backend connection is the one the
relay asked ``MemoryReactorClock`` for, so these tests run the real
handler, endpoint and protocol code from the request line to the last byte.
The last sections cover what surrounds the relay: the supervisor of spawned
applications (with a reactor that records instead of forking) and how
backends are opened and reconfigured.
"""

from __future__ import annotations

import gc
import os
import re
import stat
import weakref
from typing import Optional

import pytest
from twisted.internet import error
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from gemfcgi.config import model
from gemfcgi.deadlines import RESOLUTION, deadlines_for
from gemfcgi.fastcgi.client import TAIL_TIMEOUT, FastCGITimeouts
from gemfcgi.fastcgi.records import (
    BeginRequest,
    ProtocolStatus,
    Record,
    RecordDecoder,
    RecordType,
    decode_pairs,
    encode_end_request,
    encode_stream,
)
from gemfcgi.handlers.fastcgi import install_fastcgi, reconfigure_fastcgi
from gemfcgi.server import GeminiProtocol
from gemfcgi.service import build_site
from gemfcgi.textlog import LogLimiter
from tests.fakes import TLSStringTransport

SOCKET = "/run/app.sock"
TIMEOUTS = FastCGITimeouts(connect=5, reply=60, drain=10, kill=1)


class GeminiTransport(TLSStringTransport):
    """The client's side as the Gemini protocol sees it, after TLS."""

    def __init__(self) -> None:
        super().__init__(peer="192.0.2.7")


def stdout(data: bytes, request_id: int = 1) -> bytes:
    return encode_stream(RecordType.STDOUT, data, request_id)


def end(app_status: int = 0, protocol_status: int = ProtocolStatus.REQUEST_COMPLETE) -> bytes:
    return encode_end_request(1, app_status, protocol_status)


def raw_record(record_type: int, content: bytes, request_id: int = 1, version: int = 1) -> bytes:
    encoded = bytearray(Record(record_type, request_id, content).encode())
    encoded[0] = version
    return bytes(encoded)


class Exchange:
    """One request through a gemfcgi server whose FastCGI location is ``/``."""

    def __init__(self, location: Optional[model.LocationOptions] = None,
                 timeouts: FastCGITimeouts = TIMEOUTS) -> None:
        options = location or model.LocationOptions()
        options.fastcgi = model.FastCGI(address=model.FastCGISocket(SOCKET))
        config = model.Config(servers=[model.Server(name="localhost", options=options)])
        self.reactor = MemoryReactorClock()
        self.site = build_site(config)
        self.backends = install_fastcgi(self.site, config, self.reactor, timeouts)
        self.backend = self.backends.backend_for(model.FastCGISocket(SOCKET))
        self.gemini = GeminiProtocol(self.site, self.reactor)
        self.client = GeminiTransport()
        self.gemini.makeConnection(self.client)
        self.gemini.handshakeCompleted()
        self.fastcgi: Optional[StringTransport] = None
        self.protocol = None

    def request(self, url: str = "gemini://localhost/app") -> "Exchange":
        self.gemini.dataReceived(url.encode() + b"\r\n")
        return self

    @property
    def connector(self):
        address, factory, timeout, _ = self.reactor.unixClients[-1]
        assert address == SOCKET
        return factory

    def accept(self) -> "Exchange":
        """The backend accepts the connection."""
        self.protocol = self.connector.buildProtocol(None)
        self.fastcgi = StringTransport()
        self.protocol.makeConnection(self.fastcgi)
        return self

    def refuse(self, reason: Exception) -> "Exchange":
        self.connector.clientConnectionFailed(None, Failure(reason))
        return self

    def send(self, *chunks: bytes) -> "Exchange":
        for chunk in chunks:
            self.protocol.dataReceived(chunk)
        return self

    def backend_closes(self, reason: Exception = None) -> "Exchange":
        self.protocol.connectionLost(Failure(reason or error.ConnectionDone()))
        return self

    def client_goes_away(self) -> "Exchange":
        self.gemini.connectionLost(Failure(error.ConnectionLost()))
        return self

    @property
    def reply(self) -> bytes:
        return self.client.value()

    @property
    def records_sent(self) -> list[Record]:
        return RecordDecoder().feed(self.fastcgi.value())

    @property
    def client_closed(self) -> bool:
        return self.client.disconnecting

    def cut_off(self) -> bool:
        """
        Whether the reply was cut short (aborted, no close_notify): the cut
        ends the connection on a later reactor turn.
        """
        self.reactor.advance(1)
        return self.client.aborted

    @property
    def backend_closed(self) -> bool:
        return self.fastcgi.disconnecting or self.fastcgi.disconnected


@pytest.fixture
def exchange() -> Exchange:
    return Exchange()


def warnings(logs) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(event) for event in logs)


# -- the request ---------------------------------------------------------------


def test_request_is_begin_params_then_empty_stdin_with_id_1_and_no_keep_conn(exchange):
    exchange.request("gemini://localhost/app/page?q").accept()
    records = exchange.records_sent
    assert [r.type for r in records[:1]] == [RecordType.BEGIN_REQUEST]
    assert BeginRequest.decode(records[0].content) == BeginRequest(role=1, flags=0)
    assert {r.request_id for r in records} == {1}
    assert records[-2:] == [Record(RecordType.PARAMS, 1), Record(RecordType.STDIN, 1)]
    params = dict(decode_pairs(b"".join(r.content for r in records if r.type == RecordType.PARAMS)))
    assert params[b"QUERY_STRING"] == b"q"
    assert params[b"GEMINI_URL_PATH"] == b"app/page"
    assert params[b"REMOTE_ADDR"] == b"192.0.2.7"
    assert params[b"REMOTE_PORT"] == b"40000"
    assert params[b"SERVER_ADDR"] == b"127.0.0.1"
    assert params[b"TLS_VERSION"] == b"TLSv1.3"
    assert params[b"AUTH_TYPE"] == b""


def test_a_configured_param_no_record_can_hold_gets_42_and_nothing_is_sent():
    options = model.LocationOptions()
    exchange = Exchange(options)
    # A configuration's strings may be up to 64 KiB long.
    options.fastcgi.params.append(("HUGE", "v" * 65530))
    with capturedLogs() as logs:
        exchange.request()
    assert exchange.reply == b"42 CGI error\r\n" and exchange.client_closed
    assert exchange.reactor.unixClients == [] and exchange.backend.pending == 0
    assert warnings(logs) == (
        f"192.0.2.7:40000 gemini://localhost/app: FastCGI backend unix:{SOCKET}: request not sent: "
        "parameter 'HUGE' is 65539 bytes encoded, more than a record holds (65535)"
    )


def test_connect_uses_the_configured_socket_with_the_connect_timeout(exchange):
    exchange.request()
    address, _, timeout, _ = exchange.reactor.unixClients[0]
    assert (address, timeout) == (SOCKET, 5)


# -- the reply -----------------------------------------------------------------


def test_gemini_header_and_body_are_relayed_then_both_sides_close(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\n# Hi\n"), stdout(b"more\n"), end())
    assert exchange.reply == b"20 text/gemini\r\n# Hi\nmore\n"
    assert exchange.client_closed and exchange.backend_closed
    assert exchange.backend.pending == 0


def test_header_split_over_records_and_empty_records_is_relayed(exchange):
    exchange.request().accept()
    exchange.send(stdout(b"2"), Record(RecordType.STDOUT, 1).encode(), stdout(b"0 text/pl"))
    assert exchange.reply == b""
    exchange.send(stdout(b"ain\r\nbody"), end())
    assert exchange.reply == b"20 text/plain\r\nbody"


def test_records_split_at_any_byte_are_reassembled(exchange):
    wire = stdout(b"20 text/gemini\r\nabc") + end()
    exchange.request().accept()
    for i in range(len(wire)):
        exchange.send(wire[i : i + 1])
    assert exchange.reply == b"20 text/gemini\r\nabc"
    assert exchange.client_closed


@pytest.mark.parametrize(
    "cgi, header",
    [
        (b"Content-Type: text/gemini\r\n\r\n", b"20 text/gemini"),
        (b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n", b"51 Not Found"),
        (b"Status: 302 Found\nLocation: gemini://x/y\n\n", b"30 gemini://x/y"),
        (b"Status: 503\r\n\r\n", b"41 Service Unavailable"),
    ],
    ids=['content-type', '404', '302-location', '503'],
)
def test_cgi_header_block_is_translated(exchange, cgi, header):
    exchange.request().accept().send(stdout(cgi + b"body"), end())
    expected_body = b"body" if header.startswith(b"2") else b""
    assert exchange.reply == header + b"\r\n" + expected_body


def test_non_2x_reply_sends_the_header_alone_and_ends_at_once(exchange):
    exchange.request().accept().send(stdout(b"30 /elsewhere\r\nignored body"))
    assert exchange.reply == b"30 /elsewhere\r\n"
    assert exchange.client_closed and not exchange.client.aborted
    exchange.send(stdout(b"more"), end())
    assert exchange.reply == b"30 /elsewhere\r\n"
    assert exchange.backend_closed and exchange.backend.pending == 0


def test_after_a_non_2x_reply_the_backends_stderr_and_failing_status_are_logged(exchange):
    # flup sends what the application wrote to wsgi.errors after its reply:
    # the reason for a 51 comes after the 51.
    answered = []
    exchange.backend.answered = lambda: answered.append(True)  # a spawned program works
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"Status: 404 Not Found\r\n\r\nnope"))
        assert exchange.reply == b"51 Not Found\r\n" and exchange.client_closed
        assert not exchange.backend_closed
        exchange.send(
            stdout(b""),
            encode_stream(RecordType.STDERR, b"record 42 missing from db\n"),
            end(app_status=3),
        )
    assert exchange.reply == b"51 Not Found\r\n"
    assert exchange.backend_closed and exchange.backend.pending == 0 and answered == [True]
    text = warnings(logs)
    assert f"gemini://localhost/app: FastCGI backend unix:{SOCKET} stderr: record 42 missing from db" in text
    assert "request failed: appStatus 3, protocolStatus REQUEST_COMPLETE; after its reply" in text


def test_an_applications_own_42_is_logged_with_the_reason_its_body_gives(exchange):
    # fcgiwrap's own errors: a CGI 502 whose body says what went wrong.
    with capturedLogs() as logs:
        exchange.request().accept().send(
            stdout(b"Status: 502 Bad Gateway\r\nContent-type: text/plain\r\n\r\nAn error occurred"),
            stdout(b" while reading CGI reply (no response received)\n" + b"x" * 1000),
            stdout(b"never read"),
            end(),
        )
    assert exchange.reply == b"42 Bad Gateway\r\n"
    assert exchange.backend_closed and exchange.backend.pending == 0
    [line] = warnings(logs).splitlines()
    assert line.startswith(
        f"192.0.2.7:40000 gemini://localhost/app: FastCGI backend unix:{SOCKET} (1 pending):"
        " the application answered: 42 Bad Gateway: An error occurred while reading CGI reply"
        " (no response received) xxx"
    )
    assert len(line) < 500 and "never read" not in line


def test_after_a_non_2x_reply_a_clean_end_logs_nothing(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"51 gone\r\n"), end())
    assert exchange.backend_closed and exchange.backend.pending == 0
    assert warnings(logs) == ""


def test_after_a_non_2x_reply_the_backend_is_read_for_a_few_seconds_at_most(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"40 busy\r\n"))
        exchange.reactor.advance(TAIL_TIMEOUT - RESOLUTION)
        assert not exchange.backend_closed
        exchange.reactor.advance(2 * RESOLUTION)
    assert exchange.backend_closed and exchange.backend.pending == 0
    assert exchange.reply == b"40 busy\r\n"
    assert warnings(logs) == ""


def test_after_a_non_2x_reply_a_backend_that_closes_or_breaks_the_protocol_is_let_go(exchange):
    exchange.request().accept().send(stdout(b"30 /x\r\n")).backend_closes()
    assert exchange.backend.pending == 0
    other = Exchange()
    with capturedLogs() as logs:
        other.request().accept().send(stdout(b"30 /x\r\n"), raw_record(RecordType.STDOUT, b"", version=9))
    assert other.reply == b"30 /x\r\n" and not other.client.aborted
    assert other.backend_closed and other.backend.pending == 0
    assert "protocol error" in warnings(logs) and "after its reply" in warnings(logs)


def test_lang_is_not_appended_to_a_fastcgi_reply():
    exchange = Exchange(model.LocationOptions(lang="en"))
    exchange.request().accept().send(stdout(b"20 text/gemini\r\n"), end())
    assert exchange.reply == b"20 text/gemini\r\n"


@pytest.mark.parametrize("header", [b"20 \r\n", b"20\r\n"], ids=["space", "no-space"])
def test_empty_meta_on_20_is_sent_as_the_default_mime_type(exchange, header):
    # The specification's meaning of an empty META, spelt out: gemcall and
    # Agunua reject a success header without one.
    exchange.request().accept().send(stdout(header + b"# Hi\n"), end())
    assert exchange.reply == b"20 text/gemini; charset=utf-8\r\n# Hi\n"
    assert exchange.gemini.record.meta == "text/gemini; charset=utf-8"


def test_a_code_the_specification_does_not_name_is_relayed_as_written(exchange):
    exchange.request().accept().send(stdout(b"21 text/gemini\r\n# Hi\n"), end())
    assert exchange.reply == b"21 text/gemini\r\n# Hi\n"
    assert exchange.client_closed and not exchange.client.aborted


# -- backpressure ----------------------------------------------------------------


def test_full_client_transport_pauses_the_backend_and_draining_resumes_it(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\nfirst"))
    relay = exchange.client.producer
    assert exchange.client.streaming
    relay.pauseProducing()
    assert exchange.fastcgi.producerState == "paused"
    relay.resumeProducing()
    assert exchange.fastcgi.producerState == "producing"


def test_pause_before_the_backend_connects_is_applied_when_it_does(exchange):
    exchange.request()
    exchange.client.producer.pauseProducing()
    exchange.accept()
    assert exchange.fastcgi.producerState == "paused"
    exchange.client.producer.resumeProducing()
    assert exchange.fastcgi.producerState == "producing"


def test_a_slow_client_is_not_a_stalled_backend():
    exchange = Exchange(timeouts=FastCGITimeouts(connect=5, reply=3))
    exchange.request().accept().send(stdout(b"20 text/gemini\r\nfirst"))
    exchange.client.producer.pauseProducing()
    exchange.send(stdout(b" read before the pause"))
    exchange.reactor.advance(30)
    assert not exchange.client_closed
    exchange.client.producer.resumeProducing()
    exchange.send(stdout(b", second"), end())
    assert exchange.reply == b"20 text/gemini\r\nfirst read before the pause, second"


# -- failures before the header: the client gets 42 (or 41) and a log line -------


@pytest.mark.parametrize(
    "reason, logged",
    [
        (error.ConnectionRefusedError("111: Connection refused"), "Connection refused"),
        (error.ConnectError("2: No such file or directory"), "No such file or directory"),
        (error.DNSLookupError("no results for hostname lookup: nowhere.invalid"), "nowhere.invalid"),
        (error.TimeoutError(), "connect timeout: not connected after 0 s"),
    ],
    ids=['refused', 'socket-missing', 'name-does-not-resolve', 'endpoint-timeout'],
)
def test_connect_failure_gets_42_and_names_the_backend_and_the_error(exchange, reason, logged):
    with capturedLogs() as logs:
        exchange.request().refuse(reason)
    assert exchange.reply == b"42 CGI error\r\n"
    assert exchange.client_closed
    text = warnings(logs)
    assert f"FastCGI backend unix:{SOCKET}" in text and logged in text
    assert "192.0.2.7:40000 gemini://localhost/app" in text
    assert exchange.backend.pending == 0


def test_a_connect_whose_endpoint_never_times_out_gets_42_soon_after_the_connect_timeout(exchange):
    # Every endpoint has the connect timeout of its own, and says more (a
    # full backlog, a TCP connect); the relay's own is a backstop.
    with capturedLogs() as logs:
        exchange.request()
        exchange.reactor.advance(5.4)
        assert exchange.reply == b""
        # Timeouts are deadlines, looked at every RESOLUTION seconds: never
        # early, at most that late.
        exchange.reactor.advance(0.1 + RESOLUTION)
    assert exchange.reply == b"42 CGI error\r\n"
    assert re.search(r"connect timeout: not connected after 5\.[5-9] s", warnings(logs))
    assert exchange.backend.pending == 0


def test_no_header_within_the_reply_timeout_gets_42():
    exchange = Exchange(timeouts=FastCGITimeouts(connect=5, reply=2))
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gem"))
        exchange.reactor.advance(1.9)
        assert exchange.reply == b""
        exchange.reactor.advance(0.1 + RESOLUTION)
    assert exchange.reply == b"42 CGI error\r\n"
    assert exchange.backend_closed
    assert "reply timeout: no header after 2 s" in warnings(logs)


@pytest.mark.parametrize(
    "wire, logged",
    [
        (stdout(b"20 text/ge") + end(), "END or EOF before a complete header"),
        (stdout(b"20 text/gemini\n") + end(), "malformed header: it ends with a bare LF, not CRLF"),
        # No END_REQUEST: the bare LF is said at once, not at the reply timeout.
        (stdout(b"20 text/gemini\n# body\n"), "malformed header: it ends with a bare LF, not CRLF"),
        (stdout(b"20 " + b"a" * 1100), "header over 1029 bytes"),
        (stdout(b"99 nope\r\n"), "status 99 is not defined"),
        (stdout(b"20\ttext/gemini\r\n"), "malformed"),
        (end(app_status=3), "appStatus 3"),
    ],
    ids=['end-in-header', 'bare-lf-then-end', 'bare-lf-no-end', 'header-too-long', 'bad-code', 'tab-not-space', 'app-status-only'],
)
def test_bad_reply_before_the_header_gets_42_and_says_what_was_wrong(exchange, wire, logged):
    with capturedLogs() as logs:
        exchange.request().accept().send(wire)
    assert exchange.reply == b"42 CGI error\r\n"
    assert exchange.client_closed and exchange.backend_closed
    assert logged in warnings(logs)


def test_eof_before_a_complete_header_gets_42(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini")).backend_closes()
    assert exchange.reply == b"42 CGI error\r\n"
    assert "END or EOF before a complete header (14 bytes received)" in warnings(logs)


def test_a_backend_that_resets_the_connection_is_said_to(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().backend_closes(error.ConnectionLost())
    assert exchange.reply == b"42 CGI error\r\n"
    assert "connection reset by the backend before a complete header (0 bytes received)" in warnings(logs)


@pytest.mark.parametrize("sent", [stdout(b"20 text/plain\r\npartial"), stdout(b"20 text/")[:5], b""],
                         ids=["header", "part-of-a-record", "nothing"])
def test_a_program_that_replied_then_died_is_known_to_run_one_that_said_nothing_is_not(exchange, sent):
    # A spawned program that crashed on one request's input, after its
    # header, was taken for one that failed to start: every request then
    # got 42 at once, for up to 30 s, and the log blamed the start.
    answered = []
    exchange.backend.answered = lambda: answered.append(True)
    with capturedLogs():
        exchange.request().accept()
        if sent:
            exchange.send(sent)
        exchange.backend_closes(error.ConnectionLost())
    assert answered == ([True] if sent else [])


def test_a_program_that_read_the_request_then_died_silent_is_known_to_run(exchange):
    # It crashed on the request's input before a byte of reply: every
    # request waiting behind it got 42 "failed to start".
    answered = []
    exchange.backend.answered = lambda: answered.append(True)
    with capturedLogs():
        exchange.request().accept()
        exchange.protocol.transport.request_taken = True
        exchange.backend_closes(error.ConnectionLost())
    assert answered == [True]


def test_records_after_end_request_are_dropped_with_a_line(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(
            stdout(b"20 text/gemini\r\nwhole") + end() + stdout(b"more") + stdout(b"again"))
    assert exchange.reply == b"20 text/gemini\r\nwhole"
    assert exchange.client_closed
    assert ("FastCGI backend unix:/run/app.sock (0 pending): protocol error: 2 record(s) after "
            "END_REQUEST ignored; after its reply") in warnings(logs)


def test_eof_in_the_middle_of_a_record_says_so(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini\r\n")[:12]).backend_closes()
    assert exchange.reply == b"42 CGI error\r\n"
    assert "bytes of a record cut off" in warnings(logs)


@pytest.mark.parametrize(
    "wire, logged",
    [
        (stdout(b"20 text/gemini\r\n", request_id=2), "request id mismatch: expected 1, got 2"),
        (raw_record(RecordType.GET_VALUES_RESULT, b"", 0), "request id mismatch: expected 1, got 0"),
        (raw_record(RecordType.DATA, b"hello"), "unexpected record type DATA (length 5)"),
        (raw_record(42, b"abc"), "unexpected record type 42 (length 3)"),
        (raw_record(RecordType.STDOUT, b"20 x\r\n", version=2), "unsupported FastCGI version 2"),
        (raw_record(RecordType.END_REQUEST, b"\0\0\0\0"), "END_REQUEST body must be 8 bytes, got 4"),
    ],
    ids=['other-id', 'management-record', 'data-record', 'unknown-type', 'wrong-version', 'short-end-request'],
)
def test_bad_record_before_the_header_gets_42_and_names_it(exchange, wire, logged):
    with capturedLogs() as logs:
        exchange.request().accept().send(wire)
    assert exchange.reply == b"42 CGI error\r\n"
    assert exchange.backend_closed
    text = warnings(logs)
    assert "protocol error" in text and logged in text


@pytest.mark.parametrize(
    "protocol_status, header",
    [
        (ProtocolStatus.OVERLOADED, b"41 server unavailable\r\n"),
        (ProtocolStatus.CANT_MPX_CONN, b"42 CGI error\r\n"),
        (ProtocolStatus.UNKNOWN_ROLE, b"42 CGI error\r\n"),
    ],
)
def test_refusing_protocol_status_before_the_header_is_mapped(exchange, protocol_status, header):
    with capturedLogs() as logs:
        exchange.request().accept().send(end(protocol_status=protocol_status))
    assert exchange.reply == header
    assert f"protocolStatus {protocol_status.name}" in warnings(logs)


# -- failures after the header: the connection is cut, without close_notify ---------
#
# The Gemini client knows a body is whole by the close_notify that ends it;
# a body the backend broke off must not end with one. ``aborted`` is the
# close without it; ``finish`` closes with ``loseConnection``, which sends it.


@pytest.mark.parametrize(
    "wire, logged",
    [
        (stdout(b"tail", request_id=3), "request id mismatch: expected 1, got 3"),
        (raw_record(RecordType.UNKNOWN_TYPE, bytes(8)), "unexpected record type UNKNOWN_TYPE"),
        (end(protocol_status=ProtocolStatus.OVERLOADED), "protocolStatus OVERLOADED"),
        (end(protocol_status=ProtocolStatus.UNKNOWN_ROLE), "protocolStatus UNKNOWN_ROLE"),
    ],
    ids=['other-id', 'unknown-type-record', 'overloaded', 'unknown-role'],
)
def test_fault_after_the_header_cuts_the_connection_without_close_notify(exchange, wire, logged):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini\r\nstart"), wire, stdout(b"never"))
    assert exchange.reply == b"20 text/gemini\r\nstart"
    assert exchange.cut_off() and exchange.backend_closed
    text = warnings(logs)
    assert logged in text and "body cut short" in text
    assert exchange.backend.pending == 0


def test_a_whole_body_ends_with_close_notify_not_a_cut(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\nall"), end())
    assert exchange.client_closed and not exchange.client.aborted


def test_failing_app_status_after_a_whole_body_ends_it_normally_and_is_logged(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini\r\nall of it"), end(app_status=7))
    assert exchange.reply == b"20 text/gemini\r\nall of it"
    assert exchange.client_closed and not exchange.client.aborted
    text = warnings(logs)
    assert "request failed: appStatus 7, protocolStatus REQUEST_COMPLETE" in text
    assert "cut" not in text


def test_eof_after_the_header_without_end_request_cuts_the_connection(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini\r\nall")).backend_closes()
    assert exchange.reply == b"20 text/gemini\r\nall"
    assert exchange.cut_off()
    assert "closed after the header without END_REQUEST" in warnings(logs)
    assert exchange.backend.pending == 0


def test_backend_that_stalls_mid_body_is_cut_after_the_reply_timeout():
    exchange = Exchange(timeouts=FastCGITimeouts(connect=5, reply=3))
    with capturedLogs() as logs:
        exchange.request().accept().send(stdout(b"20 text/gemini\r\nstart"))
        exchange.reactor.advance(2)
        exchange.send(stdout(b" more"))
        exchange.reactor.advance(2.9)
        assert not exchange.client_closed
        exchange.reactor.advance(0.1 + RESOLUTION)
    assert exchange.reply == b"20 text/gemini\r\nstart more"
    assert exchange.cut_off() and exchange.backend_closed
    assert "no body data for 3 s" in warnings(logs)


# -- STDERR and the client going away ----------------------------------------------


def test_stderr_is_logged_with_backend_and_request_and_never_sent(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(
            encode_stream(RecordType.STDERR, b"PHP Warning: oops\n"),
            stdout(b"20 text/gemini\r\nok"),
            end(),
        )
    assert exchange.reply == b"20 text/gemini\r\nok"
    text = warnings(logs)
    assert f"gemini://localhost/app: FastCGI backend unix:{SOCKET} stderr: PHP Warning: oops" in text


def test_stderr_keeps_its_lines_and_escapes_other_controls(exchange):
    with capturedLogs() as logs:
        exchange.request().accept().send(
            encode_stream(RecordType.STDERR, b"PHP Warning: \x1b[2Jgone\nin /app.php\n"),
            stdout(b"20 text/gemini\r\nok"),
            end(),
        )
    text = warnings(logs)
    assert "stderr: PHP Warning: \\x1b[2Jgone\nin /app.php" in text
    assert "\x1b" not in text


def test_a_long_stderr_record_is_logged_with_its_start_and_its_end(exchange):
    # flup sends a whole traceback in one record; its last line says what failed.
    frames = b"".join(b'  File "/srv/app/module%d.py", line %d, in handler\n' % (i, i) for i in range(200))
    traceback = b"Traceback (most recent call last):\n" + frames + b"RuntimeError: database refused\n"
    with capturedLogs() as logs:
        exchange.request().accept().send(
            encode_stream(RecordType.STDERR, traceback), stdout(b"20 text/gemini\r\nok"), end())
    text = warnings(logs)
    assert "stderr: Traceback (most recent call last):" in text
    assert text.rstrip().endswith("RuntimeError: database refused")
    assert "characters left out ...]" in text and len(text) < 4200


def test_stderr_flood_is_rate_limited(exchange):
    with capturedLogs() as logs:
        exchange.request().accept()
        exchange.send(*[encode_stream(RecordType.STDERR, b"line %d" % i) for i in range(500)])
        exchange.send(stdout(b"20 text/gemini\r\n"), end())
    stderr_lines = [e for e in logs if "stderr" in e.get("log_format", "")]
    assert 1 <= len(stderr_lines) <= 20
    assert exchange.reply == b"20 text/gemini\r\n"


def test_empty_stderr_records_are_not_logged_and_leave_the_budget_alone(exchange):
    # flup ends the stream with an empty STDERR record on every request.
    with capturedLogs() as logs:
        exchange.request().accept()
        exchange.send(*[encode_stream(RecordType.STDERR, b"") for _ in range(30)])
        exchange.send(encode_stream(RecordType.STDERR, b"\n"))
        exchange.send(encode_stream(RecordType.STDERR, b"the one real line\n"))
        exchange.send(stdout(b"20 text/gemini\r\n"), end())
    stderr_lines = [line for line in warnings(logs).splitlines() if "stderr" in line]
    assert len(stderr_lines) == 1
    assert stderr_lines[0].endswith("stderr: the one real line")


def test_stderr_limiter_reports_what_it_dropped_in_the_next_window():
    clock = MemoryReactorClock()
    limiter = LogLimiter(clock, limit=2, window=10)
    assert [limiter.allow() for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    clock.advance(10)
    assert limiter.allow() == (True, 2)


def test_stderr_limiter_reports_a_burst_followed_by_silence_when_its_window_ends():
    clock = MemoryReactorClock()
    reported = []
    limiter = LogLimiter(clock, limit=2, window=10, on_dropped=reported.append)
    [limiter.allow() for _ in range(5)]
    clock.advance(9.9)
    assert reported == []
    clock.advance(0.1)
    assert reported == [3]
    # Said once: the next line it lets through does not say them again.
    assert limiter.allow() == (True, 0)
    assert not clock.getDelayedCalls()
    # A line of the next window that comes before the report has run (the
    # same reactor turn) has the count said first, once.
    [limiter.allow() for _ in range(2)]
    clock.rightNow += 10  # the time moves on, the report is not yet run
    assert limiter.allow() == (True, 0)
    assert reported == [3, 1] and not clock.getDelayedCalls()


def test_a_backend_says_how_many_stderr_records_it_did_not_log(exchange):
    with capturedLogs() as logs:
        exchange.request().accept()
        exchange.send(*[encode_stream(RecordType.STDERR, b"noise %d\n" % i) for i in range(25)])
        exchange.send(stdout(b"20 text/gemini\r\n"), end())
        exchange.reactor.advance(10)
    assert warnings(logs).splitlines()[-1] == (
        f"FastCGI backend {exchange.backend.name}: 5 stderr records not logged (over 20 in 10 s)"
    )


def test_client_going_away_mid_reply_sends_abort_and_closes_the_backend(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\npartial"))
    exchange.client_goes_away()
    assert exchange.records_sent[-1] == Record(RecordType.ABORT_REQUEST, 1)
    assert exchange.backend_closed
    assert exchange.backend.pending == 0
    exchange.send(stdout(b"late"), end())
    exchange.backend_closes()
    assert exchange.reply == b"20 text/gemini\r\npartial"


def test_client_going_away_while_connecting_cancels_the_connect(exchange):
    exchange.request().client_goes_away()
    assert exchange.backend.pending == 0
    assert_no_timer_left(exchange.reactor)


def test_connection_that_completes_after_the_client_left_is_dropped(exchange):
    # An endpoint that cannot cancel its attempt may still connect later.
    exchange.request().client_goes_away()
    protocol = exchange.connector._wrappedFactory.buildProtocol(None)
    late = StringTransport()
    protocol.makeConnection(late)
    assert late.value() == b""
    assert late.disconnecting or late.disconnected


def test_pending_requests_are_counted_and_named_in_fault_lines(exchange):
    exchange.request().accept()
    assert exchange.backend.pending == 1
    assert exchange.backends.pending == 1
    with capturedLogs() as logs:
        exchange.send(stdout(b"99 x\r\n"))
    assert "(1 pending)" in warnings(logs)
    assert exchange.backends.pending == 0


def test_drain_waits_for_requests_in_flight(exchange):
    exchange.request().accept()
    drained = exchange.backends.drain(timeout=30)
    assert not drained.called
    exchange.send(stdout(b"20 text/gemini\r\n"), end())
    assert drained.called


def test_drain_gives_up_after_its_timeout(exchange):
    exchange.request().accept()
    with capturedLogs() as logs:
        drained = exchange.backends.drain(timeout=3)
        exchange.reactor.advance(3.1)
    assert drained.called
    assert "drain timeout after 3 s, 1 request still pending" in warnings(logs)


def test_no_timer_survives_a_finished_request(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\n"), end())
    exchange.gemini.connectionLost(Failure(error.ConnectionDone()))
    assert_no_timer_left(exchange.reactor)


def assert_no_timer_left(reactor) -> None:
    """Nothing of the request is scheduled: no timer, no connection deadline."""
    deadlines = deadlines_for(reactor)
    assert len(deadlines) == 0
    # The deadlines' own periodic check may still be pending; it stops itself.
    assert not [
        call for call in reactor.getDelayedCalls() if call.active() and call.func != deadlines._fire_passed
    ]


@pytest.mark.parametrize(
    "reply",
    [
        [stdout(b"20 text/gemini\r\n# Hi\n"), end()],
        [stdout(b"20 text/ge"), end()],
        [stdout(b"Status: 404\r\n"), stdout(b"\r\n"), end()],
    ],
    ids=["gemini reply", "cut header", "CGI header"],
)
def test_a_finished_request_is_freed_without_the_garbage_collector(reply):
    """No reference cycle per request: one would cost a collection every few dozen."""
    gc.collect()
    gc.disable()
    try:
        exchange = Exchange().request().accept()
        fastcgi = exchange.protocol._wrappedProtocol  # under the endpoint's wrapper
        protocol, relay = weakref.ref(fastcgi), weakref.ref(fastcgi.relay)
        del fastcgi
        exchange.send(*reply).backend_closes()
        exchange.gemini.connectionLost(Failure(error.ConnectionDone()))
        assert exchange.client_closed
        exchange.protocol = None
        exchange.reactor.unixClients.clear()  # the memory reactor keeps its factories
        assert (protocol(), relay()) == (None, None)
    finally:
        gc.enable()


@pytest.mark.parametrize("ending", ["whole", "client leaves", "refused"])
def test_the_backend_connection_holds_neither_the_relay_nor_its_client_once_it_is_over(ending):
    # Twisted's TCP client connection is a reference cycle (connector,
    # transport, the endpoint's factory and Deferred) that waits for a full
    # collection; over TCP, the relay and the client's connection hung from it.
    from gemfcgi.fastcgi.client import Relay
    from gemfcgi.server import GeminiProtocol
    from tests.support import held_from

    exchange = Exchange().request()
    factory = exchange.connector  # what that cycle holds
    if ending == "refused":
        # Never connected: the protocol waiting for it held the relay.
        assert any(isinstance(held, Relay) for held in held_from(factory))
        exchange.refuse(error.ConnectionRefusedError())
        assert exchange.client.value().startswith(b"42 ")
        assert not [held for held in held_from(factory) if isinstance(held, (Relay, GeminiProtocol))]
        return
    protocol = exchange.accept().protocol
    assert any(isinstance(held, Relay) for held in held_from(factory, protocol))
    if ending == "whole":
        exchange.send(stdout(b"20 text/gemini\r\n# Hi\n"), end()).backend_closes()
        assert exchange.client_closed
    else:
        exchange.gemini.connectionLost(Failure(error.ConnectionLost()))
        exchange.backend_closes()
    assert not [held for held in held_from(factory, protocol) if isinstance(held, (Relay, GeminiProtocol))]


# -- the supervisor of spawned applications ----------------------------------------
#
# A reactor whose spawnProcess records instead of forking. Fake pids are
# above the kernel's pid_max, so signalling their process group can only
# fail, and the supervisor falls back to the process object, which records.

FAKE_PID_BASE = 2**30


class FakeProcess:
    def __init__(self, pid: int, protocol, argv, child_fds) -> None:
        self.pid = pid
        self.protocol = protocol
        self.argv = argv
        self.child_fds = child_fds
        self.signals: list[int] = []
        # Whether its output pipes are read (Twisted's process transport is a producer).
        self.reading = True

    def signalProcess(self, signum) -> None:
        self.signals.append(signum)

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def exit(self, code: int = 1) -> None:
        self.protocol.processExited(Failure(error.ProcessTerminated(code)))
        self.protocol.processEnded(Failure(error.ProcessTerminated(code)))

    def killed(self, signum: int) -> None:
        self.protocol.processExited(Failure(error.ProcessTerminated(signal=signum)))
        self.protocol.processEnded(Failure(error.ProcessTerminated(signal=signum)))


class SpawningReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None, **kwargs):
        process = FakeProcess(FAKE_PID_BASE + len(self.processes), protocol, args, childFDs)
        process.env = env
        # What a fork here would inherit.
        process.policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
        protocol.makeConnection(process)
        self.processes.append(process)
        return process


class InstantlyFailingReactor(SpawningReactor):
    """A program that fails so fast that Twisted reaps it inside spawnProcess."""

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None, **kwargs):
        process = super().spawnProcess(protocol, executable, args, env, childFDs, **kwargs)
        process.exit(1)
        return process


class ShortOfDescriptorsOnceReactor(SpawningReactor):
    """The first fork fails as it does when the server has no descriptor left."""

    failures = 1

    def spawnProcess(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise OSError(24, "Too many open files")
        return super().spawnProcess(*args, **kwargs)


def test_a_start_the_system_refuses_for_now_is_tried_again_and_refused_at_once_meanwhile():
    from gemfcgi.fastcgi.spawn import SpawnedApp

    reactor = ShortOfDescriptorsOnceReactor()
    app = SpawnedApp("spawn:sh app.sh", "sh app.sh", reactor, kill_timeout=2)
    with capturedLogs() as logs:
        app.startService()
        assert reactor.processes == []
        # Meanwhile requests are refused at once, not left in a backlog.
        assert app.failed_start == "cannot start: Too many open files; next start in 0.1 s"
        assert app._socket is None
        reactor.advance(0.1)
    assert "spawn:sh app.sh: cannot start: Too many open files" in warnings(logs)
    assert len(reactor.processes) == 1 and app.pid is not None
    assert app.failed_start is None and app._socket is not None
    app.stopService()
    reactor.processes[0].exit(0)


def test_a_program_that_ends_inside_spawn_process_is_known_by_its_pid_and_stops_at_once():
    from gemfcgi.fastcgi.spawn import SpawnedApp

    reactor = InstantlyFailingReactor()
    app = SpawnedApp("spawn:false", "false", reactor, kill_timeout=2)
    with capturedLogs() as logs:
        app.startService()
        reactor.advance(0.1)  # the restart, ending the same way
    assert f"pid {FAKE_PID_BASE} exited after 0.0 s" in warnings(logs)
    assert "pid None" not in warnings(logs) and "started pid" not in warnings(logs)
    assert "pid None" not in (app.failed_start or "")
    stopped = app.stopService()
    assert stopped.called


def test_a_program_is_not_told_of_the_sockets_systemd_passed_to_gemfcgi(monkeypatch):
    from gemfcgi.fastcgi.spawn import SpawnedApp

    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDNAMES", "gemini")
    monkeypatch.setenv("APP_SETTING", "kept")
    reactor = SpawningReactor()
    app = SpawnedApp("spawn:sh app.sh", "sh app.sh", reactor, kill_timeout=2)
    app.startService()
    [process] = reactor.processes
    assert process.env["APP_SETTING"] == "kept"
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(process.env)
    app.stopService()
    process.exit(0)


@pytest.fixture
def spawning():
    from gemfcgi.fastcgi.spawn import SpawnedApp

    reactor = SpawningReactor()
    app = SpawnedApp("spawn:sh app.sh", "sh app.sh --flag", reactor, kill_timeout=2)
    app.startService()
    yield reactor, app
    if app.running:
        app.stopService()
        for process in reactor.processes:
            process.exit()


def test_spawned_app_gets_the_listening_socket_as_fd_0_in_a_session_of_its_own(spawning):
    import os
    import stat
    import sys

    reactor, app = spawning
    (process,) = reactor.processes
    assert stat.S_ISSOCK(os.stat(app.socket_path).st_mode)
    assert process.child_fds[0] == app._socket.fileno()
    assert process.child_fds[1] == process.child_fds[2] == "r"
    if process.argv[0].endswith("/setpriv"):
        assert process.argv[1:4] == ["--pdeathsig", "TERM", "--"]
        assert process.argv[4].endswith("/setsid") and process.argv[5] == "--"
        assert process.argv[6].endswith("/sh") and process.argv[7:] == ["app.sh", "--flag"]
    else:
        assert process.argv[0] == sys.executable and "os.setsid()" in process.argv[2]
        assert "prctl(1, signal.SIGTERM)" in process.argv[2]
        assert process.argv[3].endswith("/sh") and process.argv[4:] == ["sh", "app.sh", "--flag"]


def test_a_setpriv_without_pdeathsig_is_passed_over_for_the_python_launcher(tmp_path, monkeypatch):
    import shutil
    import sys

    from gemfcgi.fastcgi import spawn

    # util-linux before 2.33 (Amazon Linux 2, Ubuntu 18.04) has setpriv but not the option.
    old = tmp_path / "setpriv"
    old.write_text("#!/bin/sh\necho 'Usage: setpriv [options] <program> [<argument>...]'\n"
                   "echo ' --nnp, --no-new-privs  disallow granting new privileges'\n")
    old.chmod(0o755)
    real_which = shutil.which
    monkeypatch.setattr(spawn.shutil, "which",
                        lambda name, path=None: str(old) if name == "setpriv" else real_which(name, path=path))
    assert spawn._knows_pdeathsig(str(old)) is False
    argv = spawn._launch_argv("/bin/sh", ["sh", "app.sh"])
    assert argv[0] == sys.executable and "prctl(1, signal.SIGTERM)" in argv[2]
    new = tmp_path / "new" / "setpriv"
    new.parent.mkdir()
    new.write_text("#!/bin/sh\necho ' --pdeathsig keep|clear|<signal>  set or clear parent death signal'\n")
    new.chmod(0o755)
    assert spawn._knows_pdeathsig(str(new)) is True


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no scheduling policies here")
def test_app_is_forked_under_the_batch_policy_and_the_server_keeps_its_own(spawning):
    reactor, app = spawning
    assert reactor.processes[0].policy == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no scheduling policies here")
def test_app_starts_under_the_default_policy_when_batch_is_refused(monkeypatch):
    from gemfcgi.fastcgi.spawn import SpawnedApp

    def refuse(*args):
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    reactor = SpawningReactor()
    app = SpawnedApp("spawn:sh app.sh", "sh app.sh", reactor, kill_timeout=2)
    app.startService()
    try:
        assert [p.policy for p in reactor.processes] == [os.SCHED_OTHER]
        assert app.pid == reactor.processes[0].pid
    finally:
        app.stopService()
        reactor.processes[0].exit()


def test_app_that_keeps_dying_at_start_is_restarted_with_a_doubling_delay(spawning):
    reactor, app = spawning
    delays = []
    for _ in range(12):
        reactor.processes[-1].exit()
        # (Beside the look whether the socket is still there.)
        (restart,) = [call for call in reactor.getDelayedCalls() if call.active() and call is not app._look.call]
        delays.append(round(restart.getTime() - reactor.seconds(), 3))
        reactor.advance(delays[-1])
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert delays[-3:] == [30.0, 30.0, 30.0]
    assert len(reactor.processes) == 13
    assert {p.child_fds[0] for p in reactor.processes} == {app._socket.fileno()}


def test_app_that_ran_a_while_is_restarted_after_the_minimum_delay(spawning):
    reactor, app = spawning
    for _ in range(3):
        reactor.processes[-1].exit()
        reactor.advance(5)
    reactor.advance(60)
    reactor.processes[-1].exit()
    reactor.advance(0.1)
    assert len(reactor.processes) == 5


def test_output_lines_are_logged_with_the_backend_name(spawning):
    reactor, app = spawning
    process = reactor.processes[0]
    with capturedLogs() as logs:
        process.protocol.childDataReceived(2, b"PHP Warning: one\nPHP War")
        process.protocol.childDataReceived(2, b"ning: two\n")
    assert warnings(logs).splitlines() == [
        "spawn:sh app.sh stderr: PHP Warning: one",
        "spawn:sh app.sh stderr: PHP Warning: two",
    ]
    assert {event["log_level"] for event in logs} == {LogLevel.warn}


def test_stdout_lines_are_logged_as_information_and_stderr_lines_as_warnings(spawning):
    reactor, app = spawning
    with capturedLogs() as logs:
        reactor.processes[0].protocol.childDataReceived(1, b"listening\n")
        reactor.processes[0].protocol.childDataReceived(2, b"cannot open db\n")
    assert [(event["log_level"], event["stream"]) for event in logs] == [
        (LogLevel.info, "stdout"), (LogLevel.warn, "stderr"),
    ]


def test_output_lines_are_logged_with_their_controls_escaped(spawning):
    reactor, app = spawning
    with capturedLogs() as logs:
        reactor.processes[0].protocol.childDataReceived(1, b"ready\x1b[8m\tport 9000\n")
    assert warnings(logs).splitlines()[-1] == "spawn:sh app.sh stdout: ready\\x1b[8m\tport 9000"


def test_stop_sends_term_then_kill_after_the_grace_period_and_removes_the_socket(spawning):
    import os
    import signal

    reactor, app = spawning
    process = reactor.processes[0]
    path = app.socket_path
    stopped = app.stopService()
    assert process.signals == [signal.SIGTERM]
    with capturedLogs() as logs:
        reactor.advance(2.1)
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]
    assert warnings(logs) == (
        f"spawn:sh app.sh: pid {process.pid} still running 2 s after SIGTERM; sending SIGKILL"
    )
    assert not stopped.called
    process.exit(-9)
    assert stopped.called
    assert not os.path.exists(path)
    reactor.advance(60)
    assert len(reactor.processes) == 1


def test_a_program_that_exits_as_it_starts_is_refused_requests_until_its_next_start(spawning):
    from gemfcgi.fastcgi.spawn import AppNotRunning

    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    reactor.advance(0.25)
    reactor.processes[0].exit(1)
    assert told == [app.failed_start]
    assert app.failed_start.startswith(f"pid {FAKE_PID_BASE} exited 0.2 s after starting (")
    assert app.failed_start.endswith("exit code 1.); next start in 0.1 s")
    refused = app.endpoint().connect(Factory.forProtocol(Protocol))
    assert isinstance(refused.result.value, AppNotRunning)
    refused.addErrback(lambda _: None)
    # Closed for those who know only its path (the workers of a prefork parent).
    assert app._socket is None and not os.path.exists(app.socket_path)
    reactor.advance(0.1)
    assert len(reactor.processes) == 2 and app.failed_start is None
    assert stat.S_ISSOCK(os.stat(app.socket_path).st_mode)
    assert reactor.processes[1].child_fds[0] == app._socket.fileno()


@pytest.mark.parametrize(
    "ran, end",
    [(0.25, lambda process: process.killed(9)), (5, lambda process: process.exit(1))],
    ids=["killed-by-a-signal-as-it-starts", "exited-after-a-while"],
)
def test_a_program_that_did_not_refuse_to_start_keeps_requests_waiting(spawning, ran, end):
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    reactor.advance(ran)
    end(reactor.processes[0])
    assert told == [] and app.failed_start is None
    assert app._socket is not None


@pytest.mark.parametrize("ran", [0.05, 0.25, 0.9])
def test_a_short_run_that_ends_with_status_0_keeps_requests_and_starts_a_second_apart(
    spawning, ran
):
    # php-cgi exits with status 0 after PHP_FCGI_MAX_REQUESTS requests, and
    # under load that comes within a second of its start; a command that
    # daemonises exits 0 at once, every time, and must not fork in a loop.
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    for run in range(1, 5):
        reactor.advance(ran)
        reactor.processes[-1].exit(0)
        assert told == [] and app.failed_start is None
        assert app._socket is not None
        wait = max(0.1, app.threshold - ran)
        reactor.advance(wait - 0.02)
        assert len(reactor.processes) == run
        reactor.advance(0.03)
        assert len(reactor.processes) == run + 1


def test_runs_that_end_with_status_0_at_once_taking_nothing_are_started_ever_later(spawning):
    # A CGI script given to spawn, with no request waiting: it was started
    # every second for ever, its output filling the log. Not a failed
    # start (no request is refused), but the delay grows.
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    app.untaken_requests = lambda since: 0
    waits = []
    for run in range(1, 8):
        reactor.advance(0.05)
        reactor.processes[-1].exit(0)
        assert told == [] and app.failed_start is None and app._socket is not None
        started = reactor.seconds()
        while len(reactor.processes) == run:
            reactor.advance(0.05)
        waits.append(round(reactor.seconds() - started, 1))
    assert waits[:4] == [1.0, 1.0, 1.0, 1.0] and waits[4:] == [1.6, 3.2, 6.4], waits


@pytest.mark.parametrize("ran, status", [(0.05, 0), (0.9, 0), (5, 0), (5, 1)])
def test_a_run_ending_by_itself_with_requests_it_never_took_failed_to_start(spawning, ran, status):
    # A CGI script, or a script that forgot to run its server, exits 0 at
    # once: it was started again every second for ever, and each request
    # waited in the backlog for the whole reply timeout.
    reactor, app = spawning
    told, asked = [], []
    app.on_failed_start = told.append
    app.untaken_requests = lambda since: asked.append(since) or 2
    started = reactor.seconds()
    reactor.advance(ran)
    reactor.processes[0].exit(status)
    assert asked == [started]
    assert told == [app.failed_start]
    assert app.failed_start.startswith(f"pid {FAKE_PID_BASE} exited {ran:.1f} s after starting (")
    assert f"exit code {status}.) without taking 2 requests waiting on its socket: a FastCGI program " \
        "takes connections on its standard input (file descriptor 0) and runs on; a CGI script runs " \
        "under fcgiwrap; next start in" in app.failed_start
    assert app._socket is None


@pytest.mark.parametrize("end", [
    # It took them (php-cgi at its quota, with requests behind those).
    lambda app, process: app.answered() or process.exit(0),
    # None was waiting for it unread.
    lambda app, process: setattr(app, "untaken_requests", lambda since: 0) or process.exit(0),
    # Killed from outside: its requests wait for the next run.
    lambda app, process: process.killed(15),
], ids=["answered", "none-untaken", "killed"])
def test_a_run_that_answered_or_left_nothing_untaken_or_was_killed_did_not_fail_to_start(spawning, end):
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    app.untaken_requests = lambda since: 1
    reactor.advance(0.2)
    end(app, reactor.processes[0])
    assert told == [] and app.failed_start is None
    assert app._socket is not None


def test_a_run_that_may_have_taken_requests_given_up_on_gets_the_benefit_of_the_doubt(spawning):
    # php-cgi at its quota, having answered only requests whose clients had
    # left (no one read those answers), was taken for a run that took
    # nothing, and every request behind it got 42.
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    app.untaken_requests = lambda since: 2
    app.given_up_queued()
    reactor.advance(0.2)
    reactor.processes[0].exit(0)
    assert told == [] and app.failed_start is None
    # Its backlog was seen empty as the run ended: the doubt is gone.
    reactor.advance(1)
    reactor.advance(0.2)
    reactor.processes[1].exit(0)
    assert told == [app.failed_start]


def test_a_short_run_that_answered_a_request_was_healthy(spawning):
    reactor, app = spawning
    told = []
    app.on_failed_start = told.append
    for run in range(1, 5):
        reactor.advance(0.2)
        app.answered()
        reactor.processes[-1].exit(255)
        assert told == [] and app.failed_start is None
        reactor.advance(0.1)
        assert len(reactor.processes) == run + 1
    # What a run answered does not vouch for the next one.
    reactor.advance(0.2)
    reactor.processes[-1].exit(255)
    assert told == [app.failed_start]


def spawned_site(reactor, command: str = "sh app.sh"):
    """A site whose one location relays to a spawned application, started."""
    address = model.FastCGISpawn(command)
    options = model.LocationOptions(fastcgi=model.FastCGI(address=address))
    config = model.Config(servers=[model.Server(name="localhost", options=options)])
    site = build_site(config)
    backends = install_fastcgi(site, config, reactor, TIMEOUTS)
    backends.startService()
    return site, backends, backends.backend_for(address)


def test_an_end_request_from_a_spawned_application_makes_its_run_healthy():
    reactor = SpawningReactor()
    site, backends, backend = spawned_site(reactor)
    gemini = GeminiProtocol(site, reactor)
    client = GeminiTransport()
    gemini.makeConnection(client)
    gemini.handshakeCompleted()
    gemini.dataReceived(b"gemini://localhost/app\r\n")
    _, factory, _, _ = reactor.unixClients[-1]
    fastcgi = factory.buildProtocol(None)
    fastcgi.makeConnection(StringTransport())
    fastcgi.dataReceived(stdout(b"20 text/gemini\r\nok") + end())
    assert client.value() == b"20 text/gemini\r\nok"
    reactor.advance(0.3)
    reactor.processes[0].exit(1)
    assert backend.app.failed_start is None
    reactor.advance(0.1)
    assert len(reactor.processes) == 2
    backends.stopService()
    reactor.processes[-1].exit(0)


def test_a_refused_request_is_told_the_time_left_until_the_next_start():
    from gemfcgi.fastcgi.spawn import SpawnedApp

    reactor = SpawningReactor()
    app = SpawnedApp("spawn:sh app.sh", "sh app.sh", reactor, min_delay=2)
    app.startService()
    reactor.advance(0.25)
    reactor.processes[0].exit(1)
    assert app.failed_start.endswith("; next start in 2.0 s")
    reactor.advance(1.23)
    refused = app.endpoint().connect(Factory.forProtocol(Protocol))
    assert refused.result.getErrorMessage().endswith("; next start in 0.8 s")
    refused.addErrback(lambda _: None)
    app.stopService()


def test_a_flood_of_output_lines_is_rate_limited_and_the_dropped_are_counted(spawning):
    # With fcgiwrap, every CGI script's stderr is the program's own.
    reactor, app = spawning
    protocol = reactor.processes[0].protocol
    with capturedLogs() as logs:
        protocol.childDataReceived(2, b"".join(b"line %d\n" % i for i in range(300)))
        protocol.childDataReceived(2, b"\n\n\n")
        reactor.advance(10)
        protocol.childDataReceived(2, b"later\n")
    lines = warnings(logs).splitlines()
    assert lines[:20] == [f"spawn:sh app.sh stderr: line {i}" for i in range(20)]
    # Counted as the window that dropped them ends, not left to the next line
    # (once the window is full, lines are counted as they come, blank ones too).
    assert lines[20:] == [
        "spawn:sh app.sh: 283 output lines not logged (over 20 in 10 s)",
        "spawn:sh app.sh stderr: later",
    ]


def test_a_program_that_writes_without_end_is_read_only_so_fast(spawning):
    # ``yes >&2`` kept the server busy reading and dropping lines; a chatty
    # CGI script (fcgiwrap passes its stderr on) must not be held up.
    reactor, app = spawning
    process = reactor.processes[0]
    with capturedLogs() as logs:
        for _ in range(100):  # fifty lines a request, a hundred requests
            process.protocol.childDataReceived(2, b"debug: a line of the script\n" * 50)
        assert process.reading
        flood = b"y\n" * 4096
        for _ in range(130):  # over a megabyte in the same second
            process.protocol.childDataReceived(2, flood)
        assert not process.reading
        reactor.advance(1.0)  # the next second: read on
        assert process.reading
        reactor.advance(9.0)  # the log's window ends and says what it dropped
    dropped = 100 * 50 - 20 + 130 * 4096
    assert warnings(logs).splitlines()[-1] == (
        f"spawn:sh app.sh: {dropped} output lines not logged (over 20 in 10 s)"
    )


def test_missing_program_is_logged_and_retried_with_backoff():
    from gemfcgi.fastcgi.spawn import SpawnedApp

    reactor = SpawningReactor()
    app = SpawnedApp("spawn:nope", "no-such-program-here", reactor)
    with capturedLogs() as logs:
        app.startService()
        reactor.pump([0.1] * 32)
    assert reactor.processes == []
    assert app.starts == 6
    # As --check says it: a program this user may not execute is not found too.
    assert "spawn:nope: program 'no-such-program-here' not found in PATH (or not executable)" in warnings(logs)
    app.stopService()


class InFlight:
    """A request in flight, as a backend counts it."""

    def backend_failed(self, why: str) -> None:
        raise AssertionError(f"not expected here: {why}")

    def untaken_since(self, when: float) -> bool:
        return False  # taken by the application, and still in its hands


def running_spawned_backend():
    """Started backends whose configuration spawns ``sh app.sh``, and that app's backend."""
    reactor = SpawningReactor()
    backends = install_fastcgi(build_site(model.Config()), spawn_config("sh app.sh"), reactor, TIMEOUTS)
    backends.startService()
    return reactor, backends, backends.backend_for(model.FastCGISpawn("sh app.sh"))


def test_spawned_app_is_stopped_only_after_its_last_request():
    import signal

    reactor, backends, backend = running_spawned_backend()
    (process,) = reactor.processes
    in_flight = InFlight()
    backend.begin(in_flight)
    stopped = backends.stopService()
    reactor.advance(5)
    assert process.signals == []
    backend.end(in_flight)
    assert process.signals == [signal.SIGTERM]
    process.exit(0)
    assert stopped.called


def spawn_config(*commands: str) -> model.Config:
    """A configuration with one location per ``fastcgi spawn`` command."""
    locations = [
        model.Location(f"/{n}/*", model.LocationOptions(fastcgi=model.FastCGI(address=model.FastCGISpawn(c))))
        for n, c in enumerate(commands)
    ]
    return model.Config(servers=[model.Server(name="localhost", locations=locations)])


def test_a_reload_that_names_a_retiring_app_again_takes_it_back_running():
    import signal

    reactor = SpawningReactor()
    site = build_site(model.Config())
    backends = install_fastcgi(site, spawn_config("sh app.sh"), reactor, TIMEOUTS)
    backends.startService()
    backend = backends.backend_for(model.FastCGISpawn("sh app.sh"))
    (process,) = reactor.processes
    in_flight = InFlight()
    backend.begin(in_flight)
    backends.configure(spawn_config())  # a reload without it: it drains
    backends.configure(spawn_config("sh app.sh"))  # and one with it again, before it is idle
    assert backends.backend_for(model.FastCGISpawn("sh app.sh")) is backend
    backend.end(in_flight)
    reactor.advance(5)
    assert (len(reactor.processes), process.signals) == (1, [])
    assert backend.app.running
    # Retired for good this time: it stops once idle.
    backends.configure(spawn_config())
    assert process.signals == [signal.SIGTERM]


def test_a_request_of_the_configuration_before_a_reload_does_not_call_its_retiring_app_back():
    # A connection accepted before the reload is served by the old
    # configuration: its request used to take the retiring program back
    # into the running configuration, which then kept it for good.
    import signal

    reactor, backends, backend = running_spawned_backend()
    (process,) = reactor.processes
    first, late = InFlight(), InFlight()
    backend.begin(first)
    backends.configure(spawn_config())  # retiring: one request in flight
    assert backends.backend_for(model.FastCGISpawn("sh app.sh")) is backend
    backend.begin(late)
    reactor.advance(1)
    backend.end(first)
    assert process.signals == []  # the late request is still in flight
    backend.end(late)
    assert process.signals == [signal.SIGTERM]
    assert len(reactor.processes) == 1


@pytest.mark.parametrize("now", [[], ["sh new.sh"]])
def test_a_program_started_for_a_request_of_the_configuration_before_a_reload_stops_after_it(now):
    # The old configuration's program was stopped by the reload (it was
    # idle): the late request gets one of its own, which stopped only at
    # the next reload.
    import signal

    reactor, backends, _ = running_spawned_backend()
    backends.configure(spawn_config(*now))
    old = reactor.processes[0]
    assert old.signals == [signal.SIGTERM]
    old.exit(0)
    # Each request of the old configuration names the same address object.
    address = model.FastCGISpawn("sh app.sh")
    with capturedLogs() as logs:
        backend = backends.backend_for(address)
    started = reactor.processes[-1]
    assert started is not old and started.signals == []
    assert ("FastCGI backend spawn:sh app.sh: started for a request of the configuration before the "
            "reload, and stopped once its requests end") in warnings(logs)
    late, with_it = InFlight(), InFlight()
    backend.begin(late)
    # Another in the same turn goes to the same program.
    assert backends.backend_for(address) is backend
    backend.begin(with_it)
    reactor.advance(5)
    assert started.signals == []
    backend.end(late)
    backend.end(with_it)
    assert started.signals == [signal.SIGTERM]
    started.exit(0)
    # One that comes later still gets a program (one of its own again).
    assert backends.backend_for(address) is not backend
    assert reactor.processes[-1] is not started and reactor.processes[-1].signals == []
    reactor.advance(1)
    assert reactor.processes[-1].signals == [signal.SIGTERM]  # its request never began
    assert [app.name for app in (b.app for b in backends.backends.values()) if app is not None] == [
        f"spawn:{command}" for command in now]


def test_an_app_retired_taken_back_and_retired_again_waits_for_its_requests_however_long():
    import signal

    reactor, backends, backend = running_spawned_backend()
    (process,) = reactor.processes
    in_flight = InFlight()
    backend.begin(in_flight)
    with capturedLogs() as logs:
        backends.configure(spawn_config())  # retired
        reactor.advance(1)
        backends.configure(spawn_config("sh app.sh"))  # taken back
        reactor.advance(4)
        backends.configure(spawn_config())  # retired again
        # A reload interrupts no request: far past the drain timeout (10 s
        # here), the request's own timers are what would end it.
        reactor.advance(3600)
    assert process.signals == []
    assert warnings(logs).count("drain timeout") == 0
    backend.end(in_flight)
    assert process.signals == [signal.SIGTERM]


def test_the_server_stop_waits_for_a_retired_app_still_ending():
    import signal

    reactor, backends, _ = running_spawned_backend()
    (process,) = reactor.processes
    backends.configure(spawn_config())  # idle: SIGTERM at once
    assert process.signals == [signal.SIGTERM]
    stopped = backends.stopService()
    assert not stopped.called
    process.exit(0)
    assert stopped.called


def test_a_retiring_app_is_drained_and_stopped_with_the_server():
    import signal

    reactor, backends, backend = running_spawned_backend()
    in_flight = InFlight()
    backend.begin(in_flight)
    backends.configure(spawn_config("sh other.sh"))
    assert backends.pending == 1
    stopped = backends.stopService()
    backend.end(in_flight)
    assert reactor.processes[0].signals == [signal.SIGTERM]
    for process in reactor.processes:
        process.exit(0)
    assert stopped.called


@pytest.mark.parametrize("end", [lambda p: p.killed(15), lambda p: p.exit(0)], ids=["sigterm", "exit-0"])
def test_an_app_that_ends_while_the_server_drains_is_not_restarted(end):
    reactor, backends, backend = running_spawned_backend()
    in_flight = InFlight()
    backend.begin(in_flight)
    reactor.advance(5)
    stopped = backends.stopService()
    path = backend.app.socket_path
    with capturedLogs() as logs:
        # systemd sends SIGTERM to the whole cgroup, the app with the server.
        end(reactor.processes[0])
        reactor.advance(5)
    assert len(reactor.processes) == 1
    assert "exited after 5.0 s" in warnings(logs)
    assert "not restarted, the server is stopping" in warnings(logs)
    assert "started pid" not in warnings(logs)
    # What waits in its backlog ends now, not at the drain timeout.
    assert not os.path.exists(path)
    backend.end(in_flight)
    assert stopped.called


def test_an_app_waiting_for_its_restart_when_the_stop_begins_stays_down():
    reactor, backends, backend = running_spawned_backend()
    in_flight = InFlight()
    backend.begin(in_flight)
    reactor.advance(5)
    reactor.processes[0].exit(0)  # restarts in 0.1 s, unless the server stops
    stopped = backends.stopService()
    reactor.advance(5)
    assert len(reactor.processes) == 1
    backend.end(in_flight)
    assert stopped.called


def test_spawned_app_is_stopped_after_the_drain_timeout_whatever_is_pending():
    import signal

    reactor, backends, backend = running_spawned_backend()
    backend.begin(InFlight())
    backends.stopService()
    reactor.advance(9.9)
    assert reactor.processes[0].signals == []
    reactor.advance(0.2)
    assert reactor.processes[0].signals == [signal.SIGTERM]
    reactor.processes[0].exit(0)


# -- opening backends ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, name",
    [
        (model.FastCGISocket("/run/app.sock"), "unix:/run/app.sock"),
        (model.FastCGITCP("127.0.0.1", 9000), "tcp:127.0.0.1:9000"),
        (model.FastCGITCP("::1", 9001), "tcp:[::1]:9001"),
        (model.FastCGITCP("app.example", 9002), "tcp:app.example:9002"),
        (model.FastCGISpawn("php-cgi"), "spawn:php-cgi"),
        (model.FastCGIEndpoint("unix:path=/run/other.sock"), "unix:path=/run/other.sock"),
    ],
    ids=["unix", "tcp", "tcp-ipv6", "tcp-name", "spawn", "endpoint"],
)
def test_every_backend_has_a_name_for_log_lines(address, name):
    from gemfcgi.fastcgi.backends import open_backend

    assert open_backend(address, MemoryReactorClock(), TIMEOUTS).name == name


def test_ip_literals_connect_directly_with_the_connect_timeout():
    from gemfcgi.fastcgi.backends import open_backend

    reactor = MemoryReactorClock()
    for host in ("::1", "127.0.0.1"):
        backend = open_backend(model.FastCGITCP(host, 9000), reactor, TIMEOUTS)
        backend.connect(Protocol())
    assert [(host, port, timeout) for host, port, _, timeout, _ in reactor.tcpClients] == [
        ("::1", 9000, 5),
        ("127.0.0.1", 9000, 5),
    ]


def test_host_names_are_resolved_without_blocking_the_reactor():
    from twisted.internet.endpoints import HostnameEndpoint

    from gemfcgi.fastcgi.backends import open_backend

    backend = open_backend(model.FastCGITCP("app.example", "9000"), MemoryReactorClock(), TIMEOUTS)
    assert isinstance(backend.endpoint, HostnameEndpoint)


def test_reload_keeps_backends_still_configured_and_retires_the_others():
    import signal

    def config(*addresses):
        locations = [
            model.Location(f"/{i}/*", model.LocationOptions(fastcgi=model.FastCGI(address=a)))
            for i, a in enumerate(addresses)
        ]
        return model.Config(servers=[model.Server(name="localhost", locations=locations)])

    reactor = SpawningReactor()
    old_app, kept = model.FastCGISpawn("sh old.sh"), model.FastCGISocket("/run/kept.sock")
    first = config(old_app, kept)
    backends = install_fastcgi(build_site(first), first, reactor, TIMEOUTS)
    backends.startService()
    kept_backend = backends.backend_for(kept)
    retired = backends.backend_for(old_app)
    in_flight = InFlight()
    retired.begin(in_flight)
    second = config(model.FastCGISocket("/run/kept.sock"), model.FastCGISpawn("sh new.sh"))
    site = build_site(second)
    reconfigure_fastcgi(site, second, backends)
    assert "fastcgi" in site.handlers
    assert backends.backend_for(model.FastCGISocket("/run/kept.sock")) is kept_backend
    old_process, new_process = reactor.processes
    assert new_process.argv[-1] == "new.sh" and new_process.argv[-2].endswith("sh")
    assert old_process.signals == []
    retired.end(in_flight)
    assert old_process.signals == [signal.SIGTERM]
    old_process.exit(0)
    backends.stopService()
    new_process.exit(0)


def test_a_bad_endpoint_string_in_a_reload_changes_nothing():
    reactor = SpawningReactor()
    good = model.Config(servers=[model.Server(name="localhost", options=model.LocationOptions(
        fastcgi=model.FastCGI(address=model.FastCGISocket("/run/a.sock"))))])
    backends = install_fastcgi(build_site(good), good, reactor, TIMEOUTS)
    bad = model.Config(servers=[model.Server(name="localhost", options=model.LocationOptions(
        fastcgi=model.FastCGI(address=model.FastCGIEndpoint("nonsense-kind:x"))))])
    with pytest.raises(ValueError):
        reconfigure_fastcgi(build_site(bad), bad, backends)
    assert [b.name for b in backends.backends.values()] == ["unix:/run/a.sock"]


# -- a backend's pace --------------------------------------------------------------


def test_stdout_of_one_read_reaches_the_client_in_one_write_whatever_its_records(exchange):
    # A byte per record made a TLS record of each for the client: 23 times
    # the reply on the wire, and a second of the server's CPU per 100 KB.
    writes = []
    write = exchange.client.write
    exchange.client.write = lambda data: (writes.append(data), write(data))
    reply = b"20 text/plain\r\n" + b"0123456789" * 1000
    exchange.request().accept().send(b"".join(stdout(reply[i:i + 1]) for i in range(len(reply))) + end())
    assert exchange.reply == reply
    assert len(writes) <= 2, [len(w) for w in writes]


def stderr_flood(count: int) -> bytes:
    return encode_stream(RecordType.STDERR, b"x") * count


def test_a_stderr_flood_holds_the_backend_until_the_second_is_over(exchange):
    # Tiny STDERR records as fast as a backend could send them kept the
    # server's one process busy for the whole reply timeout.
    exchange.request().accept().send(stderr_flood(1000))
    assert exchange.fastcgi.producerState == "producing"
    exchange.send(stderr_flood(60000))
    assert exchange.fastcgi.producerState == "paused"
    exchange.reactor.advance(1)
    assert exchange.fastcgi.producerState == "producing"
    exchange.send(stdout(b"20 text/gemini\r\nok"), end())
    assert exchange.reply == b"20 text/gemini\r\nok"


def test_a_client_that_holds_the_backend_back_keeps_it_held_after_a_stderr_pause(exchange):
    exchange.request().accept().send(stdout(b"20 text/gemini\r\nbody"), stderr_flood(60000))
    assert exchange.fastcgi.producerState == "paused"
    exchange.client.producer.pauseProducing()  # the client reads slowly
    exchange.reactor.advance(1)
    assert exchange.fastcgi.producerState == "paused"
    exchange.client.producer.resumeProducing()
    assert exchange.fastcgi.producerState == "producing"


def test_a_reload_starts_a_failing_program_now_rather_than_at_the_end_of_its_back_off():
    # An operator's "fix the script, then HUP" waited up to 30 s to be seen.
    reactor, backends, backend = running_spawned_backend()
    for _ in range(6):  # each run fails at once: the back-off doubles
        reactor.processes[-1].exit(1)
        reactor.advance(backend.app._restart.getTime() - reactor.seconds())
    reactor.processes[-1].exit(1)
    waiting = backend.app._restart.getTime() - reactor.seconds()
    assert waiting >= 6.4
    starts = len(reactor.processes)
    with capturedLogs() as logs:
        backends.configure(spawn_config("sh app.sh"))
    assert len(reactor.processes) == starts + 1
    assert "started again for the reload, before its back-off ends" in warnings(logs)
    # The back-off starts over: a failure now waits its first delay again.
    reactor.processes[-1].exit(1)
    assert backend.app._restart.getTime() - reactor.seconds() < 1
    backends.stopService()
    reactor.processes[-1].exit(0)


def test_an_application_that_logs_a_line_per_record_is_not_held_back(exchange):
    # A record per log line (flup's wsgi.errors) at 20,000 lines took 9 s
    # to relay under a pace that weighed each record as 512 bytes.
    lines = b"".join(encode_stream(RecordType.STDERR, b"log line %05d" % n) + stdout(b".")
                     for n in range(20000))
    exchange.request().accept().send(stdout(b"20 text/plain\r\n") + lines)
    assert exchange.fastcgi.producerState == "producing"
    exchange.send(end())
    assert exchange.reply == b"20 text/plain\r\n" + b"." * 20000


def test_a_reply_timeout_while_stderr_was_held_says_so():
    # The backend was blamed for a wait the server's own pace made.
    exchange = Exchange(timeouts=FastCGITimeouts(connect=5, reply=3, drain=10, kill=1))
    with capturedLogs() as logs:
        exchange.request().accept()
        for _ in range(4):
            exchange.send(stderr_flood(60000))
            exchange.reactor.advance(1)
    assert exchange.reply == b"42 CGI error\r\n"
    assert re.search(r"reply timeout: no header after 3 s \(its STDERR came faster than 1 MB/s, "
                     r"and was read no faster for \d+ s of it\)", warnings(logs))


@pytest.mark.parametrize("wire", [
    stdout(b"Status: 301\r\nLocation: /moved/draft-SECRET x\r\n\r\n") + end(),
    stdout(b"Status: 500 oops SECRET\r\n\r\nerror at /draft-SECRET") + end(),
    stdout(b"X-SECRET\r\n\r\n") + end(),
], ids=["redirect echoing the path", "error echoing the query", "malformed line"])
def test_under_log_off_what_the_application_sent_is_not_quoted(wire):
    # Its header or error text, quoted in the fault's line, may echo the
    # path and query that 'log off' keeps out of the log.
    exchange = Exchange(model.LocationOptions(log=False))
    with capturedLogs() as logs:
        exchange.request("gemini://localhost/draft-SECRET?SECRET").accept().send(wire)
    assert exchange.reply.startswith(b"42 ")
    [line] = [w for w in warnings(logs).splitlines() if "FastCGI backend" in w]
    assert "SECRET" not in line
    assert line.startswith("192.0.2.7:40000 gemini://localhost/... (log off): FastCGI backend ")
    assert line.endswith(": what it sent is not shown (log off)")


def test_under_log_off_a_path_not_sent_to_the_application_is_not_named(tmp_path):
    # Its reason ("/lnk/passwd leads outside the root") named the path.
    os.symlink("/etc", tmp_path / "lnk-SECRET")
    exchange = Exchange(model.LocationOptions(log=False, root=str(tmp_path)))
    with capturedLogs() as logs:
        exchange.request("gemini://localhost/lnk-SECRET/passwd/x?SECRET")
    assert exchange.reply == b"51 not found\r\n"
    assert warnings(logs) == ("192.0.2.7:40000 gemini://localhost/... (log off): not sent to FastCGI backend "
                              "unix:/run/app.sock: no script (log off)")


def test_a_socket_removed_from_outside_is_made_again_and_the_run_restarted_on_it(spawning):
    # rm -rf of the temporary directory: the program kept a socket no
    # connect could reach, and every request got 42 until a restart.
    import os
    import shutil
    import signal
    import stat

    reactor, app = spawning
    first = reactor.processes[0]
    path, directory = app.socket_path, os.path.dirname(app.socket_path)
    shutil.rmtree(directory)
    with capturedLogs() as logs:
        reactor.advance(1)  # the look
    assert stat.S_ISSOCK(os.lstat(path).st_mode) and app.socket_path == path
    assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700
    assert first.signals == [signal.SIGTERM]
    assert f"its socket {path} was removed; it is made again" in warnings(logs)
    # One that will not end is killed, and the next run gets the new socket.
    reactor.advance(2.1)
    assert first.signals == [signal.SIGTERM, signal.SIGKILL]
    first.killed(signal.SIGKILL)
    reactor.advance(1)
    assert reactor.processes[-1] is not first
    assert reactor.processes[-1].child_fds[0] == app._socket.fileno()
    assert os.fstat(app._socket.fileno()).st_ino != 0


def test_a_link_or_directory_planted_where_the_socket_directory_was_is_never_used(spawning, tmp_path):
    # Followed, it handed another user the socket: they bound their own
    # there, and answered every request.
    import os
    import shutil

    reactor, app = spawning
    directory = os.path.dirname(app.socket_path)
    shutil.rmtree(directory)
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir()
    os.symlink(elsewhere, directory)
    with capturedLogs() as logs:
        reactor.advance(1)
    assert list(elsewhere.iterdir()) == []
    assert os.path.dirname(app.socket_path) != directory and os.path.islink(directory)
    assert "something else is at the path of its socket directory" in warnings(logs)
    own = os.path.dirname(app.socket_path)
    app.stopService()
    for process in reactor.processes:
        process.exit()
    # What was planted is left as it is; the server's own directory is gone.
    assert os.path.islink(directory) and list(elsewhere.iterdir()) == [] and not os.path.exists(own)
    os.unlink(directory)


def test_a_socket_directory_removed_while_the_program_is_down_is_made_again_at_its_next_start(spawning):
    # Removed during the back-off after a failed start (its socket closed),
    # it was never made again: "cannot start: No such file or directory".
    import os
    import shutil
    import stat

    reactor, app = spawning
    path = app.socket_path
    reactor.processes[0].exit(3)  # at once: a failed start, its socket closed
    assert app._socket is None
    shutil.rmtree(os.path.dirname(path))
    reactor.advance(5)
    assert len(reactor.processes) == 2
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
