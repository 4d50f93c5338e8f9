"""PROXY protocol listeners: the client's real address, v1 and v2, or a closed door."""

from __future__ import annotations

import re
import socket
import struct

import pytest

from tests.support import client_context, start_server


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, certificate):
    root = tmp_path_factory.mktemp("proxied")
    (root / "index.gmi").write_text("# behind a balancer\n")
    cert, key = certificate
    config = root / "gmid.conf"
    config.write_text(
        f'server "localhost" {{\n  listen on 127.0.0.1 port 0 proxy-v2\n'
        f'  cert "{cert}"\n  key "{key}"\n  root "{root}"\n'
        '  location "/moved" { block return 31 "gemini://%N:%P/new" }\n}\n'
    )
    server = start_server("-c", str(config))
    yield server
    server.stop()


def v1_header(source: str, source_port: int, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {source_port} {port}\r\n".encode()


def v2_header(source: str, source_port: int, port: int) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
    addresses += struct.pack("!HH", source_port, port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def exchange(port: int, header: bytes, request: bytes) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(header)
    try:
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        tls.close()
        return data
    except (OSError, ConnectionError):
        raw.close()
        return b""


@pytest.mark.parametrize("make_header, source", [(v1_header, "192.0.2.10"), (v2_header, "198.51.100.20")])
def test_client_address_from_the_proxy_header_is_logged(proxied, make_header, source):
    port = proxied.port
    reply = exchange(port, make_header(source, 40123, port), f"gemini://localhost:{port}/\r\n".encode())
    assert reply.startswith(b"20 text/gemini\r\n# behind a balancer")
    proxied.wait_for_log(re.escape(f"{source}:40123 GET gemini://localhost/ 20"))


def v2_header_ipv6(source: str, source_port: int, port: int) -> bytes:
    addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1")
    addresses += struct.pack("!HH", source_port, port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + struct.pack("!H", len(addresses)) + addresses


@pytest.mark.parametrize("source, logged", [
    # Twisted reads a v2 header's IPv6 address spelt out in full.
    ("2001:db8::1", "2001:db8::1"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
])
def test_an_ipv6_client_from_a_v2_header_is_logged_in_its_usual_form(proxied, source, logged):
    port = proxied.port
    reply = exchange(port, v2_header_ipv6(source, 40124, port), f"gemini://localhost:{port}/\r\n".encode())
    assert reply.startswith(b"20 text/gemini\r\n")
    proxied.wait_for_log(re.escape(f"] {logged}:40124 GET gemini://localhost/ 20"))


def test_a_redirect_names_the_port_the_client_connected_to(proxied):
    # The balancer listens on 1965; this server's own port is another.
    reply = exchange(proxied.port, v1_header("192.0.2.10", 40123, 1965), b"gemini://localhost/moved\r\n")
    assert reply == b"31 gemini://localhost:1965/new\r\n"


@pytest.mark.parametrize("pieces", [[b"PROXY UNKNOWN\r\n"], [b"PROXY UNK", b"NOWN\r", b"\n"]])
def test_the_bare_unknown_header_is_served_as_the_connection_itself(proxied, pieces):
    # What a balancer sends for a connection it cannot describe: the
    # addresses are those of the connection, and the port the listener's.
    port = proxied.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    for piece in pieces:
        raw.sendall(piece)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/?unknown\r\n".encode())
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    tls.close()
    assert data.startswith(b"20 text/gemini\r\n# behind a balancer")
    proxied.wait_for_log(r"127\.0\.0\.1:\d+ GET gemini://localhost/\?unknown 20")


def test_connection_without_a_proxy_header_is_closed(proxied):
    port = proxied.port
    assert exchange(port, b"", f"gemini://localhost:{port}/\r\n".encode()) == b""


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 1.2.3.4 127.0.0.1 5555 x\r\n", b"PROXY TCP4 999.1.1.1 127.0.0.1 5555 1965\r\n",
])
def test_a_v1_header_with_a_bad_port_or_address_is_closed_with_one_log_line(proxied, header):
    port = proxied.port
    before = len(proxied.log)
    assert exchange(port, header, f"gemini://localhost:{port}/\r\n".encode()) == b""
    proxied.wait_for_log(r"127\.0\.0\.1:\d+: malformed PROXY header PROXY TCP4 .*: invalid (port|TCP4 address)"
                         r"; connection closed", since=before)
    assert "Traceback" not in proxied.log[before:] and "Unhandled" not in proxied.log[before:]


def test_a_v1_header_without_crlf_in_its_107_bytes_is_closed_with_one_log_line(proxied):
    port = proxied.port
    before = len(proxied.log)
    header = b"PROXY TCP4 " + b"1" * 120
    assert exchange(port, header, f"gemini://localhost:{port}/\r\n".encode()) == b""
    proxied.wait_for_log(r"malformed PROXY header PROXY TCP4 1+: no CRLF within 107 bytes", since=before)


def test_connection_with_a_garbage_proxy_header_is_closed(proxied):
    port = proxied.port
    assert exchange(port, b"PROXY BOGUS nonsense\r\n", f"gemini://localhost:{port}/\r\n".encode()) == b""


def test_quick_mode_takes_a_haproxy_endpoint(certificate, tmp_path):
    (tmp_path / "index.gmi").write_text("# quick\n")
    cert, key = certificate
    server = start_server("--root", str(tmp_path), "--cert", cert, "--key", key,
                          "--listen", "haproxy:tcp:0:interface=127.0.0.1")
    try:
        port = server.port
        reply = exchange(port, v1_header("203.0.113.5", 5555, port), f"gemini://localhost:{port}/\r\n".encode())
        assert reply.startswith(b"20 text/gemini")
        server.wait_for_log(r"203\.0\.113\.5:5555 GET")
    finally:
        server.stop()
