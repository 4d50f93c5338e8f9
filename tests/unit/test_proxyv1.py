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
