"""The PROXY v1 header as gemfcgi reads it before Twisted's reader does."""

from __future__ import annotations

import pytest

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from gemfcgi.proxyv1 import v1_header, v1_problem


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 1965",
    b"PROXY TCP6 2001:db8::7 ::1 40123 1965",
    b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535",
    b"PROXY UNKNOWN",
    b"PROXY UNKNOWN ffff::1 ffff::1 1 2",
])
def test_headers_the_specification_allows_pass(line):
    assert v1_problem(line) is None


@pytest.mark.parametrize("line, problem", [
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 5555 x", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 5555 ", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 5555 99999", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 -1 1965", "invalid port"),
    (b"PROXY TCP4 999.1.1.1 127.0.0.1 5555 1965", "invalid TCP4 address"),
    (b"PROXY TCP4 ::1 127.0.0.1 5555 1965", "invalid TCP4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 5555 1965", "invalid TCP6 address"),
    # Zones, which Python's parser takes: an interface of the balancer's.
    (b"PROXY TCP6 fe80::1%eth0 ::1 5555 1965", "invalid TCP6 address"),
    (b"PROXY TCP6 ::ffff:1.2.3.4%x ::1 5555 1965", "invalid TCP6 address"),
    (b"PROXY TCP4 x ' 5555 1965", "invalid TCP4 address"),
    (b"PROXY TCP5 1.2.3.4 127.0.0.1 5555 1965",
     "not PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT, nor PROXY UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 5555",
     "not PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT, nor PROXY UNKNOWN"),
])
def test_anything_else_is_named(line, problem):
    assert v1_problem(line) == problem


@pytest.mark.parametrize("source, destination, line", [
    (IPv4Address("TCP", "192.0.2.7", 40123), IPv4Address("TCP", "127.0.0.1", 1965),
     b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 1965\r\n"),
    (IPv6Address("TCP", "2001:db8::7", 40123), IPv6Address("TCP", "::1", 1965),
     b"PROXY TCP6 2001:db8::7 ::1 40123 1965\r\n"),
    # Where the families differ the IPv4 address is written IPv4-mapped: an
    # IPv6 client relayed over IPv4 was UNKNOWN, and the upstream took the
    # proxy for the client. A unix socket's client has no v1 form.
    (IPv4Address("TCP", "192.0.2.7", 40123), IPv6Address("TCP", "::1", 1965),
     b"PROXY TCP6 ::ffff:192.0.2.7 ::1 40123 1965\r\n"),
    (IPv6Address("TCP", "2001:db8::7", 40123), IPv4Address("TCP", "127.0.0.1", 1965),
     b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 40123 1965\r\n"),
    (UNIXAddress(None), IPv4Address("TCP", "127.0.0.1", 1965), b"PROXY UNKNOWN\r\n"),
])
def test_the_header_sent_upstream_names_the_client(source, destination, line):
    assert v1_header(source, destination) == line
    assert v1_problem(line[:-2]) is None  # what gemfcgi's own reader accepts


def test_refused_headers_are_said_ten_times_in_ten_seconds_then_counted_when_the_window_ends():
    # Anyone who reaches a PROXY listener could fill the log, a line per
    # connection; a burst followed by silence still gets its count said.
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi import proxyv1

    clock = Clock()
    factory = proxyv1._V1HeaderFactory(Factory.forProtocol(Protocol), clock)

    def refused() -> bool:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 4444))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"XXXX garbage\r\n")
        return transport.disconnecting

    with capturedLogs() as logs:
        assert all(refused() for _ in range(25))
        clock.advance(10)
    said = [formatEvent(event) for event in logs]
    assert said[:10] == 10 * [
        "192.0.2.1:4444: malformed PROXY header XXXX garbage\\x0d\\x0a: not a PROXY header; connection closed"]
    assert said[10:] == ["15 more malformed PROXY headers not logged (over 10 in 10 s)"]
    assert not clock.getDelayedCalls()
    # A listener that closes before its window ends says its count then.
    factory.doStart()
    with capturedLogs() as logs:
        assert all(refused() for _ in range(13))
        factory.doStop()
    assert [formatEvent(event) for event in logs if "not logged" in formatEvent(event)] == [
        "3 more malformed PROXY headers not logged (over 10 in 10 s)"]
    assert not clock.getDelayedCalls()
