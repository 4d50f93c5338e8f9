"""Hostile and broken clients: the server answers everyone else and keeps nothing."""

from __future__ import annotations

import os
import select
import socket
import ssl
import time

import pytest

from tests.support import client_context, fetch, raw_exchange, read_to_end, start_server


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, certificate):
    root = tmp_path_factory.mktemp("hostile")
    (root / "index.gmi").write_text("# still here\n")
    (root / "sub").mkdir()
    (root / "sub" / "page.gmi").write_text("# page\n")
    (root / "big.bin").write_bytes(b"h" * (8 * 1024 * 1024))
    cert, key = certificate
    server = start_server(
        "--root", str(root), "--cert", cert, "--key", key,
        "--listen", "tcp:0:interface=127.0.0.1",
        "--request-timeout", "3", "--handshake-timeout", "3",
    )
    yield server
    server.stop()


def home(server):
    return fetch(server.port, f"gemini://localhost:{server.port}/")


SLOW_CLIENTS = 500


def answered(connection: ssl.SSLSocket) -> bool:
    """Whether the server has answered (or closed) without the client waiting."""
    connection.setblocking(False)
    try:
        connection.recv(100)
    except ssl.SSLWantReadError:
        return False
    finally:
        connection.setblocking(True)
    return True


def test_slowloris_does_not_delay_ordinary_requests(hostile_server):
    port = hostile_server.port
    slow = []
    for _ in range(SLOW_CLIENTS):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        slow.append(client_context().wrap_socket(raw, server_hostname="localhost"))
    request = f"gemini://localhost:{port}/sub/page.gmi\r\n".encode()
    try:
        for second in range(2):
            for connection in slow:
                connection.send(request[second:second + 1])
            assert home(hostile_server).status == 20
            # Served while the slow clients still hold their connections: the
            # last of them is not answered before its request timeout (3 s).
            assert not answered(slow[-1])
            time.sleep(1)
        answers = set()
        for connection in slow:
            connection.settimeout(10)
            answers.add(connection.recv(100))
    finally:
        for connection in slow:
            connection.close()
    assert answers == {b"59 request timeout\r\n"}


def test_plaintext_on_the_tls_port_is_closed(hostile_server):
    with socket.create_connection(("127.0.0.1", hostile_server.port), timeout=10) as raw:
        raw.sendall(b"gemini://localhost/\r\n")
        try:
            data = raw.recv(1024)
        except ConnectionResetError:
            data = b""
    assert b"20 " not in data
    assert home(hostile_server).status == 20


def test_random_bytes_are_closed(hostile_server):
    with socket.create_connection(("127.0.0.1", hostile_server.port), timeout=10) as raw:
        raw.sendall(os.urandom(4096))
        try:
            while raw.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert home(hostile_server).status == 20


def test_client_that_never_finishes_the_handshake_is_closed(hostile_server):
    with socket.create_connection(("127.0.0.1", hostile_server.port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        # The handshake timeout is 3 s; a server that kept the connection
        # would leave this read to the socket's own timeout, which raises.
        try:
            raw.recv(1024)
        except ConnectionResetError:
            pass


def test_client_that_resets_mid_response_leaves_nothing_behind(hostile_server):
    pid = hostile_server.process.pid
    home(hostile_server)
    before = open_fds(pid)
    for _ in range(20):
        raw = socket.create_connection(("127.0.0.1", hostile_server.port), timeout=10)
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(f"gemini://localhost:{hostile_server.port}/big.bin\r\n".encode())
        tls.recv(65536)
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        tls.close()
    assert home(hostile_server).status == 20
    deadline = time.monotonic() + 5
    while open_fds(pid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds(pid) <= before


HOSTILE_REQUESTS = [
    ("gemini://localhost:{port}/../../../../etc/passwd", 51),
    ("gemini://localhost:{port}/%2e%2e/%2e%2e/etc/passwd", 51),
    ("gemini://localhost:{port}/%2E%2E/%2E%2E/etc/passwd", 51),
    ("gemini://localhost:{port}/..%2f..%2f..%2fetc%2fpasswd", 51),
    ("gemini://localhost:{port}/..%5c..%5cetc%5cpasswd", 51),
    ("gemini://localhost:{port}/%c0%ae%c0%ae/etc/passwd", 59),
    ("gemini://localhost:{port}/%00", 59),
    ("gemini://localhost:{port}/a%0d%0a20%20text/gemini", 59),
    ("gemini://localhost:{port}/?q=%0d%0a", 20),
    ("gemini://localhost:{port}/\x01", 59),
    ("gemini://localhost:{port}/\x7f", 59),
    ("gemini://localhost:{port}/" + "a" * 1000, 59),
    ("gemini://user:pass@localhost:{port}/", 59),
    ("gemini://localhost:{port}/#fragment", 59),
    ("http://localhost:{port}/", 53),
    ("file:///etc/passwd", 53),
    ("gemini://[::1]:{port}/", 53),
    ("gemini://xn--lcalhost-5ya:{port}/", 53),
    ("gemini://lоcalhost:{port}/", 53),
    ("gemini://localhost.:{port}/", 20),
    ("GEMINI://LOCALHOST:{port}/", 20),
]


@pytest.mark.parametrize("line, expected", HOSTILE_REQUESTS)
def test_hostile_request_lines_get_the_expected_status(hostile_server, line, expected):
    port = hostile_server.port
    data, clean, _ = raw_exchange(port, line.format(port=port).encode("utf-8") + b"\r\n")
    assert int(data[:2]) == expected, data[:100]
    assert b"root:" not in data
    assert clean


def test_line_without_crlf_that_never_ends_gets_59(hostile_server):
    data, clean, _ = raw_exchange(hostile_server.port, b"gemini://localhost/" + b"x" * 2000)
    assert data.startswith(b"59 ")


def test_descriptor_exhaustion_is_survived_and_service_resumes(certificate, tmp_path):
    (tmp_path / "index.gmi").write_text("# ok\n")
    cert, key = certificate
    server = start_server(
        "--root", str(tmp_path), "--cert", cert, "--key", key,
        "--listen", "tcp:0:interface=127.0.0.1:backlog=2048", "--request-timeout", "5",
        max_files=256,
    )
    try:
        pid = server.process.pid
        flood = []
        for _ in range(1000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            flood.append(s)
        time.sleep(1.0)
        before = cpu_seconds(pid)
        time.sleep(2.0)
        busy = cpu_seconds(pid) - before
        busy_answers = 0
        for _ in range(5):
            try:
                reply = fetch(server.port, f"gemini://localhost:{server.port}/", timeout=5)
                busy_answers += reply.status in (20, 41, 44)
            except (OSError, ssl.SSLError):
                pass
        for s in flood:
            s.close()
        assert server.process.poll() is None, "the server died"
        assert busy < 1.0, f"server spent {busy:.2f} s of CPU in 2 s holding idle connections"
        deadline = time.monotonic() + 15
        while True:
            try:
                if fetch(server.port, f"gemini://localhost:{server.port}/", timeout=5).status == 20:
                    break
            except (OSError, ssl.SSLError):
                pass
            assert time.monotonic() < deadline, server.log[-3000:]
            time.sleep(0.2)
    finally:
        server.stop()


def test_a_request_cannot_write_escapes_or_lines_into_the_log(hostile_server):
    port = hostile_server.port
    since = len(hostile_server.log)
    refused, _, _ = raw_exchange(port, f"gemini://localhost:{port}/\x1b[2J\nforged 20\r\n".encode())
    served, _, _ = raw_exchange(port, f"gemini://localhost:{port}/?\u202egnp.exe\r\n".encode())
    assert refused == b"59 space or control character in request\r\n"
    assert served.startswith(b"20 text/gemini\r\n")
    hostile_server.wait_for_log(r"/\\x1b\[2J\\x0aforged\\x2020 59 space or control", since=since)
    hostile_server.wait_for_log(r"\?\\u202egnp\.exe 20 text/gemini ", since=since)
    logged = hostile_server.log[since:]
    assert "\x1b" not in logged and "\u202e" not in logged
    assert "\nforged" not in logged
    assert home(hostile_server).header == b"20 text/gemini"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_bytes_sent_after_the_request_line_do_not_spoil_a_large_reply(hostile_server, version):
    # More than one read takes (64 KiB) after the request: a record of them
    # is still half-read when the reply goes over to streaming.
    context = client_context()
    context.maximum_version = version
    port = hostile_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
            tls.sendall(f"gemini://localhost:{port}/big.bin\r\n".encode() + b"X" * 70_000)
            data, clean = read_to_end(tls)
    header, _, body = data.partition(b"\r\n")
    assert (header, len(body), clean) == (b"20 application/octet-stream", 8 * 1024 * 1024, True)


def _half_closing_client(
    port: int, version: int, end_its_side, request: bool = True
) -> tuple[bytes, bool]:
    """A request, then the client's side ended by ``end_its_side``; what came back, and whether whole."""
    from OpenSSL import SSL

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    raw = socket.create_connection(("127.0.0.1", port))
    tls = SSL.Connection(context, raw)
    tls.set_tlsext_host_name(b"localhost")
    tls.set_connect_state()
    tls.do_handshake()
    if request:
        tls.sendall(f"gemini://localhost:{port}/big.bin\r\n".encode())
    end_its_side(tls)
    data = b""
    try:
        while select.select([raw], [], [], 10)[0]:
            try:
                data += tls.recv(65536)
            except SSL.WantReadError:
                pass
        raise AssertionError("the server neither sent nor closed for 10 s")
    except SSL.ZeroReturnError:
        return data, True  # the server's close_notify
    except SSL.Error:
        return data, False
    finally:
        raw.close()


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize(
    "end_its_side",
    [lambda tls: tls.shutdown(), lambda tls: tls.sock_shutdown(socket.SHUT_WR)],
    ids=["close_notify", "tcp-fin"],
)
def test_a_client_that_ends_its_side_after_the_request_still_gets_the_whole_reply(
    hostile_server, version, end_its_side
):
    from OpenSSL import SSL

    number = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}[version]
    data, clean = _half_closing_client(hostile_server.port, number, end_its_side)
    header, _, body = data.partition(b"\r\n")
    assert (header, len(body), clean) == (b"20 application/octet-stream", 8 * 1024 * 1024, True)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_a_client_that_ends_its_side_before_any_request_gets_a_close_notify_not_a_reset(
    hostile_server, version
):
    # RFC 8446 6.1: each side sends close_notify before it closes; the
    # client did, and the server, with nothing to answer, does too.
    from OpenSSL import SSL

    number = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}[version]
    data, clean = _half_closing_client(
        hostile_server.port, number, lambda tls: tls.shutdown(), request=False)
    assert (data, clean) == (b"", True)


def test_clients_that_close_their_socket_before_a_request_give_their_slots_back(tmp_path, certificate):
    # A client that reads the session tickets, then closes its socket, ends
    # with a FIN; the server's close_notify then meets a reset, and the
    # kernel's send queue still counts it. The connection was held to the
    # request timeout: its slot (every other client got 41), its memory,
    # and a 59 logged for a client long gone.
    (tmp_path / "index.gmi").write_text("# here\n")
    cert, key = certificate
    server = start_server("--root", str(tmp_path), "--cert", cert, "--key", key,
                          "--listen", "tcp:0:interface=127.0.0.1",
                          "--max-connections", "5", "--request-timeout", "60")
    try:
        pid = server.process.pid
        assert home(server).status == 20
        before = open_fds(pid)
        gone = []
        for _ in range(5):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            gone.append(client_context().wrap_socket(raw, server_hostname="localhost"))
        for tls in gone:
            assert not answered(tls)  # the tickets are read; nothing else came
            tls.close()
        deadline = time.monotonic() + 10
        while open_fds(pid) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds(pid) <= before
        assert home(server).status == 20
    finally:
        server.stop()
