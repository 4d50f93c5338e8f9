"""GeminiProtocol without sockets: bytes in, bytes out, time from a Clock."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pytest
from twisted.internet.task import Clock

from gemfcgi import accesslog
from gemfcgi.config import model
from gemfcgi.deadlines import RESOLUTION, deadlines_for
from gemfcgi.server import GeminiProtocol, Site, Timeouts
from gemfcgi.service import build_site
from tests.fakes import TLSStringTransport


@pytest.fixture
def site(tmp_path) -> Site:
    (tmp_path / "index.gmi").write_text("# home\n")
    config = model.Config(
        servers=[
            model.Server(name="localhost", options=model.LocationOptions(root=str(tmp_path))),
            model.Server(name="other.example", options=model.LocationOptions(root=str(tmp_path))),
        ]
    )
    return build_site(config, Timeouts(handshake=10, request=10, linger=2))


def connect(site, server_name=b"localhost", port=1965, handshake=True):
    clock = Clock()
    protocol = GeminiProtocol(site, clock)
    transport = TLSStringTransport(server_name, port)
    protocol.makeConnection(transport)
    if handshake:
        protocol.handshakeCompleted()
    return protocol, transport, clock


@contextmanager
def access_events() -> Iterator[list]:
    """The access events published inside the block."""
    seen: list = []
    observer = accesslog.log.observer
    accesslog.log.observer = seen.append
    try:
        yield seen
    finally:
        accesslog.log.observer = observer


def test_a_client_that_ends_its_side_gets_its_reply_after_a_request_and_nothing_before(site, tmp_path):
    (tmp_path / "big.bin").write_bytes(b"b" * (1024 * 1024))
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/big.bin\r\n")
    protocol.readConnectionLost()
    assert not transport.aborted and transport.value().startswith(b"20 application/octet-stream\r\n")
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/big")
    protocol.readConnectionLost()
    # Nothing to answer: closed as the client closed, not reset.
    assert transport.disconnecting and not transport.aborted and transport.value() == b""


def test_request_in_pieces_is_assembled(site):
    protocol, transport, _ = connect(site)
    for piece in (b"gemini://local", b"host/", b"\r", b"\n"):
        protocol.dataReceived(piece)
    assert transport.value() == b"20 text/gemini\r\n# home\n"
    assert transport.disconnecting


def test_bare_lf_gets_59_at_once(site):
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/\n")
    assert transport.value().startswith(b"59 ")


def test_line_longer_than_1026_bytes_without_crlf_gets_59(site):
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/" + b"a" * 1000)
    assert transport.value() == b""
    protocol.dataReceived(b"b" * 10)
    assert transport.value().startswith(b"59 ")


@pytest.mark.parametrize("length", [1025, 1026])
def test_a_line_that_can_no_longer_end_within_1024_bytes_gets_59_at_once(site, length):
    protocol, transport, _ = connect(site)
    url = b"gemini://localhost/"
    protocol.dataReceived(url + b"a" * (1024 - len(url)))
    assert transport.value() == b""
    protocol.dataReceived(b"a" * (length - 1024))
    assert transport.value() == b"59 request line longer than 1024 bytes\r\n"


def test_a_url_of_1024_bytes_may_arrive_with_its_cr_and_lf_apart(site):
    protocol, transport, _ = connect(site)
    url = b"gemini://localhost/"
    protocol.dataReceived(url + b"a" * (1024 - len(url)) + b"\r")
    assert transport.value() == b""
    protocol.dataReceived(b"\n")
    assert transport.value().startswith(b"51 ")


def test_bytes_after_the_request_line_are_ignored(site):
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/\r\ngemini://localhost/\r\n")
    assert transport.value().count(b"\r\n") == 1


def test_request_timeout_sends_59_and_closes(site):
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://loc")
    clock.advance(9.9)
    assert transport.value() == b""
    # Deadlines are looked at every RESOLUTION seconds: never early, at
    # most that late.
    clock.advance(0.1 + RESOLUTION)
    assert transport.value() == b"59 request timeout\r\n"
    assert transport.disconnecting


def test_handshake_timeout_aborts_without_a_response(site):
    _, transport, clock = connect(site, handshake=False)
    clock.advance(10.1)
    assert transport.aborted and transport.value() == b""


def test_peer_that_never_answers_close_notify_is_aborted_after_linger(site):
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/\r\n")
    assert transport.disconnecting and not transport.aborted
    clock.advance(2.1)
    assert transport.aborted


def test_the_logged_duration_ends_with_the_response_not_the_linger(site):
    # A client that keeps the connection open after the response (amfora
    # does) is cut when the linger runs out; its request took 0.25 s.
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        clock.advance(0.25)
        protocol.dataReceived(b"gemini://localhost/\r\n")
        clock.advance(2.1)
        assert transport.aborted
        protocol.connectionLost(None)
    [event] = seen
    assert event["duration_ms"] == pytest.approx(250.0)
    assert event["line"].endswith(" 20 text/gemini 23 250.0ms")


def test_bytes_that_are_not_utf8_are_logged_as_what_they_are(site):
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        protocol.dataReceived(b"gemini://localhost/\xff\xfe\r\n")
        protocol.connectionLost(None)
    [event] = seen
    assert transport.value() == b"59 request is not valid UTF-8\r\n"
    assert " GET gemini://localhost/\\xff\\xfe 59 " in event["line"]


@pytest.mark.parametrize("data, meta", [
    (b"gemini://localhost/a\nmore", "request line must end with CRLF"),
    (b"gemini://localhost/" + b"p" * 1100, "request line longer than 1024 bytes"),
])
def test_a_line_that_cannot_be_read_is_logged_with_what_came(site, data, meta):
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        protocol.dataReceived(data)
        protocol.connectionLost(None)
    [event] = seen
    assert transport.value().startswith(f"59 {meta}\r\n".encode())
    shown = data[:1024].split(b"\n")[0].decode()
    assert event["line"].split(" 59 ")[0].endswith(f" GET {shown}")


def test_a_connection_gone_before_any_header_is_logged_as_such(site):
    site.handlers["static"] = lambda client, request, settings: None  # an answer still coming
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        protocol.dataReceived(b"gemini://localhost/slow\r\n")
        protocol.connectionLost(None)
    [event] = seen
    assert " GET gemini://localhost/slow 0 connection closed before the reply 0 " in event["line"]


def paused_download(site, tmp_path):
    """An 8 MiB file asked for, and its reply paused by the transport: the client reads nothing."""
    (tmp_path / "big.bin").write_bytes(b"x" * (8 * 1024 * 1024))
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/big.bin\r\n")
    transport.producer.pauseProducing()
    return protocol, transport, clock


def test_a_response_cut_short_is_logged_with_the_time_until_the_cut(site, tmp_path):
    with access_events() as seen:
        # The client stops reading, the transport pauses the reply, and
        # 1.5 s later the client is gone.
        protocol, transport, clock = paused_download(site, tmp_path)
        clock.advance(1.5)
        assert not transport.disconnecting
        protocol.connectionLost(None)
    [event] = seen
    assert event["duration_ms"] == pytest.approx(1500.0)
    assert event["bytes_sent"] < 8 * 1024 * 1024


def test_bytes_still_in_the_process_when_a_reply_is_reset_are_not_logged_as_sent(site, tmp_path):
    with access_events() as seen:
        protocol, transport, _ = paused_download(site, tmp_path)
        written = len(transport.value())
        # What Twisted's TCP transport still holds when the client is reset:
        # 80 KB of the reply that never reached the kernel. (Its socket is
        # gone by then: Twisted drops it before telling the protocol.)
        transport.dataBuffer, transport.offset, transport._tempDataLen = b"x" * 90_000, 10_000, 0
        protocol.connectionLost(None)
    [event] = seen
    assert event["bytes_sent"] == written - 80_000


class _ResetAfter(TLSStringTransport):
    """A TLS transport whose send fails once ``room`` bytes went out: the peer reset."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.bytes_lost = 0
        self.writes_after = 0

    @property
    def send_failed(self) -> bool:
        return self.room <= 0

    def write(self, data: bytes) -> None:
        if self.send_failed:
            self.bytes_lost += len(data)
            self.writes_after += 1
            return
        super().write(data[:self.room])
        self.bytes_lost += max(0, len(data) - self.room)
        self.room -= len(data)


def test_a_reply_whose_send_failed_reads_no_more_of_its_file_and_logs_what_left(site, tmp_path):
    # After a reset met in a send, the file's producer went on for the
    # rest of its turn: up to 4 MiB read for nothing, all logged as sent.
    (tmp_path / "big.bin").write_bytes(b"x" * (8 * 1024 * 1024))
    with access_events() as seen:
        protocol = GeminiProtocol(site, Clock())
        transport = _ResetAfter(200_000)
        protocol.makeConnection(transport)
        protocol.handshakeCompleted()
        protocol.dataReceived(b"gemini://localhost/big.bin\r\n")
        assert transport.send_failed and transport.writes_after == 0
        protocol.connectionLost(None)
    [event] = seen
    assert event["bytes_sent"] == 200_000


@pytest.mark.parametrize("reads", [False, True], ids=["reads nothing", "reads slowly"])
def test_a_paused_reply_is_cut_once_its_client_has_read_nothing_for_the_idle_timeout(
    tmp_path, monkeypatch, reads
):
    from gemfcgi import server

    (tmp_path / "big.bin").write_bytes(b"x" * (8 * 1024 * 1024))
    site = build_site(model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path)))]),
        Timeouts(handshake=10, request=10, linger=2, idle=8))
    # What is unsent: right after the pause the kernel still moves some of
    # it into the client's receive buffer, whether the client reads or not.
    unsent = [4_000_000]
    monkeypatch.setattr(server, "unsent_bytes", lambda transport: unsent[0])
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/big.bin\r\n")
    transport.producer.pauseProducing()
    clock.advance(0.1)
    unsent[0] -= 200_000
    for _ in range(int(11 / RESOLUTION)):
        if reads and clock.seconds() % 5 < RESOLUTION:
            unsent[0] -= 65_536  # a window's worth every 5 s
        clock.advance(RESOLUTION)
        if transport.aborted:
            break
    if reads:
        assert not transport.aborted
    else:
        # At the idle timeout, not a look later for the kernel's moves.
        assert transport.aborted and 8 <= clock.seconds() <= 8 + 2 * RESOLUTION


def test_no_timer_survives_the_connection(site):
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/\r\n")
    protocol.connectionLost(None)
    assert len(deadlines_for(clock)) == 0
    # The one periodic check stops once no deadline is left.
    clock.advance(RESOLUTION)
    assert clock.getDelayedCalls() == []


def test_url_host_different_from_sni_gets_53(site):
    protocol, transport, _ = connect(site, server_name=b"other.example")
    protocol.dataReceived(b"gemini://localhost/\r\n")
    assert transport.value().startswith(b"53 ")


@pytest.mark.parametrize("server_name", [b"evil.example/x", b"evil example", b"evil@example", b"localhost\x1b[31m",
                                         b"\xfflocalhost"])
def test_a_sni_that_is_no_host_name_gets_59_not_the_url_hosts_server(site, server_name):
    protocol, transport, _ = connect(site, server_name=server_name)
    protocol.dataReceived(b"gemini://localhost/\r\n")
    assert transport.value() == b"59 malformed TLS server name\r\n"


def test_no_sni_lets_the_url_host_pick_the_server(site):
    protocol, transport, _ = connect(site, server_name=None)
    protocol.dataReceived(b"gemini://other.example/\r\n")
    assert transport.value().startswith(b"20 ")


def test_host_not_served_gets_53(site):
    protocol, transport, _ = connect(site, server_name=None)
    protocol.dataReceived(b"gemini://elsewhere.example/\r\n")
    assert transport.value().startswith(b"53 ")


def test_port_other_than_the_listeners_gets_53_and_is_named_in_the_log(site):
    protocol, transport, _ = connect(site, port=1965)
    with access_events() as seen:
        protocol.dataReceived(b"gemini://localhost:1966/\r\n")
        protocol.connectionLost(None)
    assert transport.value() == b"53 port not served here\r\n"
    assert [event["url"] for event in seen] == ["gemini://localhost:1966/"]


@pytest.mark.parametrize("line", [b"gemini://localhost:0/\r\n", b"gemini://localhost:00000/\r\n"])
def test_port_0_is_no_port_of_a_listener_and_gets_53(site, line):
    # Port 0 names no service; it was taken for an absent port (1965).
    protocol, transport, _ = connect(site, port=1965)
    protocol.dataReceived(line)
    assert transport.value() == b"53 port not served here\r\n"


def test_absent_port_means_1965(site):
    protocol, transport, _ = connect(site, port=1966)
    with access_events() as seen:
        protocol.dataReceived(b"gemini://localhost/\r\n")
        protocol.connectionLost(None)
    assert transport.value().startswith(b"53 ")
    assert [event["url"] for event in seen] == ["gemini://localhost:1965/"]


def test_sni_in_another_case_or_spelling_is_the_same_host(tmp_path):
    (tmp_path / "index.gmi").write_text("x")
    config = model.Config(
        servers=[model.Server(name="bücher.example", options=model.LocationOptions(root=str(tmp_path)))]
    )
    site = build_site(config)
    protocol, transport, _ = connect(site, server_name=b"XN--BCHER-KVA.example")
    protocol.dataReceived("gemini://Bücher.example/\r\n".encode())
    assert transport.value().startswith(b"20 ")


@pytest.mark.parametrize("url", ["gemini://♨/", "gemini://xn--j6h/", "gemini://%E2%99%A8/"])
def test_a_symbol_name_idna2008_refuses_is_served_by_its_punycode_as_in_gmid(tmp_path, url):
    (tmp_path / "index.gmi").write_text("x")
    config = model.Config(
        servers=[model.Server(name="♨", options=model.LocationOptions(root=str(tmp_path)))]
    )
    protocol, transport, _ = connect(build_site(config), server_name=b"xn--j6h")
    protocol.dataReceived(url.encode() + b"\r\n")
    assert transport.value().startswith(b"20 ")


def logged_lines(site, *chunks, advance=0.0):
    """The access lines of one connection that receives ``chunks``."""
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        clock.advance(advance)
        protocol.connectionLost(None)
    return transport.value(), [event["line"] for event in seen]


def test_a_refused_request_line_is_logged_on_one_line_with_its_controls_escaped(site):
    reply, [line] = logged_lines(site, b"gemini://localhost/a\x1b[2J\x1b[31mred\x0bx\x7f\r\n")
    assert reply == b"59 space or control character in request\r\n"
    assert " GET gemini://localhost/a\\x1b[2J\\x1b[31mred\\x0bx\\x7f 59 " in line
    assert line.isprintable()


def test_a_refused_request_line_cannot_add_fields_or_close_a_quoted_one(site):
    from gemfcgi.accesslog import format_line

    protocol, transport, _ = connect(site)
    with access_events() as seen:
        protocol.dataReceived(b'gemini://localhost/x" 20 99999 "-" "" 0.1ms\r\n')
        protocol.connectionLost(None)
    assert transport.value().startswith(b"59 ")
    [event] = seen
    assert event["url"] == (
        "gemini://localhost/x\\x22\\x2020\\x2099999\\x20\\x22-\\x22\\x20\\x22\\x22\\x200.1ms"
    )
    line = format_line("combined", event)
    assert line.count('"') == 6 and f'"{event["url"]}" 59 ' in line


def test_a_served_url_with_a_right_to_left_override_is_logged_escaped(site):
    reply, [line] = logged_lines(site, "gemini://localhost/?\u202egnp.exe\r\n".encode())
    assert reply.startswith(b"20 text/gemini\r\n")
    assert " GET gemini://localhost/?\\u202egnp.exe 20 text/gemini " in line


def test_a_request_timeout_before_any_byte_logs_a_dash_for_the_url(site):
    # An empty field would shift the fields of a line split on spaces.
    reply, [line] = logged_lines(site, advance=10.5)
    assert reply == b"59 request timeout\r\n"
    assert line.startswith("127.0.0.1:40000 GET - 59 request timeout ")


def test_a_request_cut_by_its_timeout_is_logged_with_its_controls_escaped(site):
    reply, [line] = logged_lines(site, b"gemini://localhost/\x1b]0;owned\x07", advance=10.5)
    assert reply == b"59 request timeout\r\n"
    assert " GET gemini://localhost/\\x1b]0;owned\\x07 59 request timeout " in line


def test_a_listing_leaves_out_the_names_a_request_cannot_reach_and_sorts_as_gmid(tmp_path):
    # Each of these was linked, and its link got 59 (not UTF-8, a control
    # character): a page of broken links.
    directory = tmp_path / "dir"
    directory.mkdir()
    for name in [b"ok.gmi", b"caf\xe9 \xff.gmi", b"cr\rx", b"nl\nx", b"c1\xc2\x85x", b"a-b", b"a.txt",
                 b"caf\xc3\xa9 ok.gmi"]:
        (directory / os.fsdecode(name)).write_text("x\n")
    (directory / "a").mkdir()
    config = model.Config(
        servers=[model.Server(name="localhost", options=model.LocationOptions(root=str(tmp_path), auto_index=True))]
    )
    protocol, transport, _ = connect(build_site(config, Timeouts(handshake=10, request=10, linger=2)))
    protocol.dataReceived(b"gemini://localhost/dir/\r\n")
    # gmid's alphasort: by the name's bytes, the directory's "/" not counted.
    assert transport.value().decode().splitlines() == [
        "20 text/gemini", "# Index of /dir/", "", "=> ./../", "=> ./a/", "=> ./a-b", "=> ./a.txt",
        "=> ./caf%C3%A9%20ok.gmi", "=> ./ok.gmi",
    ]


def test_the_parent_link_of_a_listing_is_sorted_among_the_names_as_gmid_sorts_it(tmp_path):
    from gemfcgi.handlers.static import directory_listing

    directory = tmp_path / "dir"
    directory.mkdir()
    for name in (" space", "!bang", "-dash", "a"):
        (directory / name).write_text("x\n")
    assert directory_listing(str(directory), "/dir/", str(tmp_path)).decode().splitlines()[2:] == [
        "=> ./%20space", "=> ./!bang", "=> ./-dash", "=> ./../", "=> ./a",
    ]


def test_an_index_that_cannot_be_opened_leaves_the_directory_to_auto_index(tmp_path, monkeypatch):
    from gemfcgi.handlers import static

    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "index.gmi").write_text("# locked\n")
    real_open = static.os.open

    def refusing_open(path, *args, **kwargs):
        if path.endswith("/index.gmi"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    # As for a worker whose user may not read the file (root may read anything).
    monkeypatch.setattr(static.os, "open", refusing_open)
    for auto_index, expected in ((True, ["20 text/gemini", "# Index of /dir/", "", "=> ./../",
                                          "=> ./index.gmi"]),
                                 (False, ["51 not found"])):
        config = model.Config(servers=[model.Server(
            name="localhost", options=model.LocationOptions(root=str(tmp_path), auto_index=auto_index)
        )])
        protocol, transport, _ = connect(build_site(config, Timeouts(handshake=10, request=10, linger=2)))
        protocol.dataReceived(b"gemini://localhost/dir/\r\n")
        assert transport.value().decode().splitlines() == expected


@pytest.mark.parametrize(
    "failure, expected",
    [
        (OSError(24, "Too many open files"), "41 server busy, try again later"),
        (OSError(5, "Input/output error"), "40 cannot read the file"),
    ],
    ids=["out of descriptors", "I/O error"],
)
def test_a_file_that_is_there_but_cannot_be_opened_now_is_not_a_51(tmp_path, monkeypatch, failure, expected):
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.handlers import static
    from gemfcgi.textlog import LogLimiter, MonotonicClock

    monkeypatch.setattr(static, "_failures", LogLimiter(MonotonicClock(), limit=5, window=10.0))
    (tmp_path / "page.gmi").write_text("# there\n")
    (tmp_path / "dir").mkdir()
    real_open, real_scandir = static.os.open, static.os.scandir

    def failing(real):
        def call(path, *args, **kwargs):
            if str(path).endswith(("/page.gmi", "/dir")):
                raise failure
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(static.os, "open", failing(real_open))
    monkeypatch.setattr(static.os, "scandir", failing(real_scandir))
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path), auto_index=True))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    with capturedLogs() as logs:
        for path in (b"/page.gmi", b"/dir/"):
            protocol, transport, _ = connect(site)
            protocol.dataReceived(b"gemini://localhost" + path + b"\r\n")
            assert transport.value().decode().splitlines() == [expected]
    lines = [formatEvent(e) for e in logs if e.get("log_namespace") == "gemfcgi.handlers.static"]
    assert lines == [
        f"cannot read {tmp_path / 'page.gmi'}: {failure.strerror}",
        f"cannot read {tmp_path / 'dir'}: {failure.strerror}",
    ]


def test_under_a_shortage_a_few_failures_are_logged_and_the_next_line_counts_the_rest(
    tmp_path, monkeypatch
):
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.handlers import static
    from gemfcgi.textlog import LogLimiter

    clock = Clock()
    monkeypatch.setattr(static, "_failures", LogLimiter(clock, limit=5, window=10.0))
    (tmp_path / "page.gmi").write_text("# there\n")
    real_open = static.os.open

    def out_of_descriptors(path, *args, **kwargs):
        if str(path).endswith("/page.gmi"):
            raise OSError(24, "Too many open files")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(static.os, "open", out_of_descriptors)
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path)))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    with capturedLogs() as logs:
        for second in range(8):
            if second == 7:
                clock.advance(10)
            protocol, transport, _ = connect(site)
            protocol.dataReceived(b"gemini://localhost/page.gmi\r\n")
            assert transport.value() == b"41 server busy, try again later\r\n"
    lines = [formatEvent(e) for e in logs if e.get("log_namespace") == "gemfcgi.handlers.static"]
    said = f"cannot read {tmp_path / 'page.gmi'}: Too many open files"
    assert lines == [said] * 5 + [said + " (2 more such failures not logged)"]


def test_a_read_error_gets_40_or_cuts_the_body_and_leaves_no_descriptor_open(tmp_path, monkeypatch):
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.handlers import static
    from gemfcgi.textlog import LogLimiter, MonotonicClock

    monkeypatch.setattr(static, "_failures", LogLimiter(MonotonicClock(), limit=5, window=10.0))
    (tmp_path / "small.gmi").write_text("# small\n")
    (tmp_path / "large.bin").write_bytes(b"x" * (static.CHUNK_SIZE * 3))

    def open_here() -> set:
        return {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}

    real_fdopen = static.os.fdopen

    def failing_read(fd, size):
        raise OSError(5, "Input/output error")

    class FailingSecondRead:
        def __init__(self, file):
            self.file, self.reads = file, 0

        def read(self, size):
            self.reads += 1
            if self.reads == 2:
                raise OSError(5, "Input/output error")
            return self.file.read(size)

        def close(self):
            self.file.close()

    monkeypatch.setattr(static.os, "read", failing_read)
    monkeypatch.setattr(static.os, "fdopen", lambda *a, **k: FailingSecondRead(real_fdopen(*a, **k)))
    site = build_site(model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path)))]),
        Timeouts(handshake=10, request=10, linger=2))
    with capturedLogs() as logs:
        protocol, small, _ = connect(site)
        protocol.dataReceived(b"gemini://localhost/small.gmi\r\n")
        protocol, large, clock = connect(site)
        protocol.dataReceived(b"gemini://localhost/large.bin\r\n")
        clock.advance(1)
    assert small.value() == b"40 cannot read the file\r\n"
    # Not a socket: nothing tells when the body has left, so it is aborted.
    assert large.value().startswith(b"20 application/octet-stream\r\n") and large.aborted
    assert str(tmp_path / "small.gmi") not in open_here() and str(tmp_path / "large.bin") not in open_here()
    lines = [formatEvent(e) for e in logs if e.get("log_namespace") == "gemfcgi.handlers.static"]
    assert lines[0] == f"cannot read {tmp_path / 'small.gmi'}: Input/output error"
    assert lines[1].startswith(f"cannot read {tmp_path / 'large.bin'} after {static.CHUNK_SIZE} bytes "
                               "(Input/output error): ")
    assert lines[1].endswith(" gemini://localhost/large.bin cut short")


def static_warnings(logs) -> list[str]:
    """What the static handler logged, as text."""
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in logs if e.get("log_namespace") == "gemfcgi.handlers.static"]


def test_a_root_gone_while_serving_is_said_in_the_log(tmp_path, monkeypatch):
    from twisted.logger import capturedLogs

    from gemfcgi.handlers import static
    from gemfcgi.textlog import LogLimiter, MonotonicClock

    monkeypatch.setattr(static, "_failures", LogLimiter(MonotonicClock(), limit=5, window=10.0))
    root = tmp_path / "capsule"
    root.mkdir()
    (root / "index.gmi").write_text("# home\n")
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(root)))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    with capturedLogs() as logs:
        for path in (b"/missing.gmi", b"/"):  # a page that is not there: nothing to say
            protocol, transport, _ = connect(site)
            protocol.dataReceived(b"gemini://localhost" + path + b"\r\n")
        root.rename(tmp_path / "moved")
        protocol, transport, _ = connect(site)
        protocol.dataReceived(b"gemini://localhost/\r\n")
    assert transport.value() == b"51 not found\r\n"
    assert static_warnings(logs) == [
        f"root {root} is not a directory any more: every request under it gets 51 "
        "until it is back (or a reload names another)"
    ]


@pytest.mark.parametrize("path", [b"/page.gmi", b"/"], ids=["page", "index"])
def test_a_root_this_process_may_not_read_is_said_in_the_log(tmp_path, monkeypatch, path):
    import os

    from twisted.logger import capturedLogs

    from gemfcgi.handlers import static
    from gemfcgi.textlog import LogLimiter, MonotonicClock

    monkeypatch.setattr(static, "_failures", LogLimiter(MonotonicClock(), limit=5, window=10.0))
    root = tmp_path / "capsule"
    root.mkdir()
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(root)))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    # As for workers whose user may not enter a root owned by root, mode 700
    # (the tests run as root, whom no mode keeps out).
    readable = os.access
    monkeypatch.setattr(static.os, "access", lambda path, mode: path != str(root) and readable(path, mode))
    with capturedLogs() as logs:
        protocol, transport, _ = connect(site)
        protocol.dataReceived(b"gemini://localhost" + path + b"\r\n")
    assert transport.value() == b"51 not found\r\n"
    assert static_warnings(logs) == [
        f"root {root} cannot be read by this process (uid {os.geteuid()}): every request under "
        "it gets 51"
    ]


def test_a_failing_handler_costs_its_request_a_40_not_a_silent_close(site):
    def broken(client, request, settings):
        raise RuntimeError("a bug")

    site.handlers["static"] = broken
    reply, [line] = logged_lines(site, b"gemini://localhost/\r\n")
    assert reply == b"40 internal error\r\n"
    assert " GET gemini://localhost/ 40 internal error " in line


def test_a_handler_failing_after_its_header_cuts_the_connection(site):
    def half(client, request, settings):
        client.send_header(20, "text/gemini", b"# half")
        raise RuntimeError("a bug")

    site.handlers["static"] = half
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/\r\n")
    clock.advance(1)
    assert transport.value() == b"20 text/gemini\r\n# half"
    assert transport.aborted


class Streamer:
    """A handler's producer, as the transport and the protocol drive it."""

    def __init__(self) -> None:
        self.stopped = False

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


def test_cut_ends_a_response_that_is_not_whole_without_close_notify(site):
    streamer = Streamer()

    def broken_off(client, request, settings):
        client.send_header(20, "text/gemini", b"# the start")
        client.stream(streamer)
        client.cut()

    site.handlers["static"] = broken_off
    with access_events() as seen:
        protocol, transport, clock = connect(site)
        protocol.dataReceived(b"gemini://localhost/\r\n")
        clock.advance(1)
        # Aborted: no close_notify, which would pass the start off as whole.
        assert transport.aborted
        assert streamer.stopped and transport.producer is None
        protocol.finish()  # too late: the response has ended
        clock.advance(5)
        protocol.connectionLost(None)
    assert transport.value() == b"20 text/gemini\r\n# the start"
    [event] = seen
    assert event["line"].endswith(" 20 text/gemini 27 0.0ms")


def test_an_ipv4_client_of_a_dual_stack_socket_is_known_by_its_ipv4_address(site):
    from twisted.internet.address import IPv6Address

    with access_events() as seen:
        protocol = GeminiProtocol(site, Clock())
        transport = TLSStringTransport()
        transport.peerAddr = IPv6Address("TCP", "::ffff:192.0.2.7", 40001)
        protocol.makeConnection(transport)
        protocol.handshakeCompleted()
        protocol.dataReceived(b"gemini://localhost/\r\n")
        protocol.connectionLost(None)
    assert (protocol.peer.host, protocol.peer.port) == ("192.0.2.7", 40001)
    assert seen[0]["line"].startswith("192.0.2.7:40001 GET gemini://localhost/ 20 ")


@pytest.mark.parametrize("name, logged", [
    (None, "unix"),
    (b"/run/client.sock", "unix:/run/client.sock"),
    # A name is the client's to choose: it cannot split the line's fields.
    (b'/tmp/u2 "FORGED" 51 9 - "', "unix:/tmp/u2\\x20\\x22FORGED\\x22\\x2051\\x209\\x20-\\x20\\x22"),
])
def test_a_client_of_a_unix_socket_is_logged_as_unix_and_its_name(site, name, logged):
    from twisted.internet.address import UNIXAddress

    with access_events() as seen:
        protocol = GeminiProtocol(site, Clock())
        transport = TLSStringTransport()
        transport.peerAddr = UNIXAddress(name)
        protocol.makeConnection(transport)
        protocol.handshakeCompleted()
        protocol.dataReceived(b"gemini://localhost/\r\n")
        protocol.connectionLost(None)
    assert seen[0]["line"].startswith(f"{logged} GET gemini://localhost/ 20 ")
    assert seen[0]["client_ip"] == logged


@pytest.mark.parametrize("header_first", [False, True], ids=["waiting", "in its body"])
def test_a_request_still_waiting_when_the_drain_ends_gets_41_and_its_backend_is_let_go(
    site, header_first
):
    backend = Streamer()  # a FastCGI application yet to answer

    def handler(client, request, settings):
        if header_first:
            client.send_header(20, "text/gemini", b"partial")
        client.stream(backend)

    site.handlers["static"] = handler
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/slow\r\n")
    answered = protocol.answer_the_stop()
    if header_first:
        # A body begun cannot be answered any more: the drain aborts it.
        assert (answered, backend.stopped) == (False, False)
        assert transport.value() == b"20 text/gemini\r\npartial"
    else:
        assert (answered, backend.stopped) == (True, True)
        assert transport.value() == b"41 server is stopping\r\n"
        assert transport.disconnecting


@pytest.mark.parametrize("host, name", [
    (b"localhost", "localhost"), (b"[::1]", "[::1]"), (b"xn--bcher-kva.example", "bücher.example"),
])
def test_a_block_redirect_without_sni_names_the_host_that_chose_the_server(tmp_path, host, name):
    # gmid puts its listener's address there, the address that chose its
    # server; here the URL's host did, and the redirect must reach it again.
    config = model.Config(servers=[model.Server(
        name=host.decode().strip("[]"), aliases=[],
        locations=[model.Location("/moved", model.LocationOptions(
            block=model.BlockReturn(31, "gemini://%N:%P/new")))],
        options=model.LocationOptions(root=str(tmp_path)))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    protocol, transport, _ = connect(site, server_name=None)
    protocol.dataReceived(b"gemini://" + host + b"/moved\r\n")
    assert transport.value() == f"31 gemini://{name}:1965/new\r\n".encode()


@pytest.mark.parametrize("sni, host, resumed, name", [
    # A TLS 1.2 session resumed from a.test's handshake still reports a.test.
    (b"a.test", b"b.test", True, "b.test"),
    (b"::1", b"[::1]", False, "[::1]"),
])
def test_a_block_redirect_names_the_host_served(tmp_path, sni, host, resumed, name):
    config = model.Config(servers=[
        model.Server(name=server, aliases=[], locations=[model.Location("/moved", model.LocationOptions(
            block=model.BlockReturn(31, "gemini://%N:%P/new")))],
            options=model.LocationOptions(root=str(tmp_path)))
        for server in ("a.test", "b.test", "::1")])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    protocol, transport, _ = connect(site, server_name=sni)
    protocol.tls.name_may_be_an_earlier_ones = resumed
    protocol.dataReceived(b"gemini://" + host + b"/moved\r\n")
    assert transport.value() == f"31 gemini://{name}:1965/new\r\n".encode()


def test_an_index_that_climbs_out_of_the_root_is_not_served(tmp_path):
    # Configurations are checked for it; the file handler does not rely on that.
    root = tmp_path / "capsule"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.gmi").write_text("outside\n")
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(root), index="../../secret.gmi"))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    protocol, transport, _ = connect(site)
    protocol.dataReceived(b"gemini://localhost/sub/\r\n")
    assert transport.value() == b"51 not found\r\n"


def test_a_stop_gives_a_client_that_has_sent_nothing_a_short_grace_then_41(site):
    # The request timeout (10 s) held the stop up for as long.
    protocol, transport, clock = connect(site)
    clock.advance(1)
    protocol.hurry_the_request(2.0)
    clock.advance(1.9)
    assert transport.value() == b""
    clock.advance(0.1 + RESOLUTION)
    assert transport.value() == b"41 server is stopping\r\n"
    assert transport.disconnecting


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_client_whose_request_line_has_begun_keeps_its_request_timeout_at_a_stop(site, when):
    protocol, transport, clock = connect(site)
    if when == "before":
        protocol.dataReceived(b"gemini://loc")
    protocol.hurry_the_request(2.0)
    clock.advance(1)
    if when == "during":
        protocol.dataReceived(b"gemini://loc")
    clock.advance(8.9)
    assert transport.value() == b""
    protocol.dataReceived(b"alhost/\r\n")
    assert transport.value().startswith(b"20 ")


def test_a_stop_hurries_no_client_whose_request_timeout_ends_first(site):
    protocol, transport, clock = connect(site)
    clock.advance(9)
    protocol.hurry_the_request(2.0)
    clock.advance(1 + RESOLUTION)
    assert transport.value() == b"59 request timeout\r\n"


def test_a_stop_gives_a_handshake_not_done_a_short_grace(site):
    protocol, transport, clock = connect(site, handshake=False)
    protocol.hurry_the_request(2.0)
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.1 + RESOLUTION)
    assert transport.disconnecting


def test_a_handshake_that_ends_while_the_server_stops_gets_the_short_grace(site):
    from gemfcgi.connections import ConnectionTracker
    from gemfcgi.server import GeminiFactory

    clock = Clock()
    connections = ConnectionTracker()
    factory = GeminiFactory(site, clock, connections)
    protocol = factory.buildProtocol(None)
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    connections.request_grace = 2.0
    protocol.handshakeCompleted()
    clock.advance(2 + RESOLUTION)
    assert transport.value() == b"41 server is stopping\r\n"


def test_a_connection_whose_access_line_fails_still_stops_counting(site):
    from gemfcgi.server import GeminiFactory

    factory = GeminiFactory(site)
    protocol = factory.buildProtocol(None)
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    assert len(factory.connections) == 1

    def broken() -> None:
        raise ValueError("a name nobody can read")

    protocol._log_access = broken
    protocol.dataReceived(b"gemini://localhost/\r\n")
    with pytest.raises(ValueError):
        protocol.connectionLost(None)
    assert len(factory.connections) == 0  # a leaked one would count against --max-connections


def test_under_log_off_an_invalid_header_built_from_the_request_is_not_shown():
    # A block return META made of %p and %q, too long once the request
    # filled them, was logged whole: the path and query of a 'log off' block.
    from twisted.logger import capturedLogs, formatEvent

    options = model.LocationOptions(log=False, block=model.BlockReturn(31, "/%p?%q&again=%q"))
    site = build_site(model.Config(servers=[model.Server(name="localhost", options=options)]))
    protocol, transport, _ = connect(site)
    with capturedLogs() as events, access_events() as lines:
        protocol.dataReceived(b"gemini://localhost/p-SECRET?" + b"SECRET" * 100 + b"\r\n")
    assert transport.value() == b"40 internal error\r\n"
    [warning] = [formatEvent(e) for e in events if "refusing invalid header" in formatEvent(e)]
    assert "SECRET" not in warning
    assert warning.startswith("127.0.0.1:40000 gemini://localhost/... (log off): refusing invalid header 31 ")
    assert lines == []


@pytest.mark.parametrize("line, sni, status", [
    (b"gemini://localhost/draft-SECRET#SECRET", b"localhost", b"59 "),
    (b"gemini://elsewhere.test/draft-SECRET?SECRET", b"localhost", b"53 "),
])
def test_a_request_refused_before_routing_on_a_server_under_log_off_is_kept_out_of_the_log(line, sni, status):
    # Its access line and URL came before any routing looked at 'log off':
    # the server the TLS name chose had said it.
    from twisted.logger import capturedLogs, formatEvent

    options = model.LocationOptions(root="/nonexistent", log=False)
    site = build_site(model.Config(servers=[model.Server(name="localhost", options=options)]))
    protocol, transport, _ = connect(site, server_name=sni)
    with capturedLogs() as events, access_events() as lines:
        protocol.dataReceived(line + b"\r\n")
        protocol.connectionLost(None)
    assert transport.value().startswith(status)
    assert lines == []
    assert not [e for e in events if "SECRET" in formatEvent(e)]


def test_a_cut_reply_the_kernel_holds_unread_is_reset_at_the_idle_timeout(site, tmp_path, monkeypatch):
    # Once Twisted's buffer was empty, the FIN went behind what the kernel
    # still held, and the socket kept it past the idle timeout of a client
    # that read none of it: the FIN now waits for the peer to take it all.
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi import server

    (tmp_path / "big.bin").write_bytes(b"b" * (4 * 1024 * 1024))
    monkeypatch.setattr(server, "unsent_bytes", lambda transport: 5000)  # never taken
    closed = []
    monkeypatch.setattr(server, "close_once_sent", lambda transport: closed.append(transport) or True)
    protocol, transport, clock = connect(site)
    protocol.dataReceived(b"gemini://localhost/big.bin\r\n")  # streamed over several turns
    with capturedLogs() as events:
        protocol.cut()  # as a file truncated while it is sent is
        for _ in range(int(site.timeouts.idle / server.CUT_CHECK_PERIOD) + 20):
            clock.advance(server.CUT_CHECK_PERIOD)
    assert closed == []
    assert transport.aborted
    assert [formatEvent(e) for e in events if "client read nothing" in formatEvent(e)]
